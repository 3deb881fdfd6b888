//! `thicket replica ...`: one replica process.
//!
//! Genesis happens in steps an orchestrator (`thicket up`, the operator) drives, relaying only
//! public data: `keygen` creates the node's keys in its data directory and prints its public
//! record; `deal` writes its genesis dealings for a registry; `complain` checks everyone's
//! dealings; the orchestrator then combines them (`genesis::root`, deterministic) and every
//! replica `run`s from that genesis.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use rand_core::OsRng;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_replica::{node, pod, process};
use thicket_types::registry::Registry;
use thicket_types::{NodeId, canonical_bytes};

#[derive(Subcommand)]
pub enum Cmd {
    /// Creates the node's keys in DATA_DIR (once) and writes its public record.
    Keygen {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        node_id: u64,
        /// Where peers will reach this replica's transport (goes into its registry record).
        #[arg(long, default_value = "")]
        p2p_url: String,
    },
    /// Writes this node's genesis dealings for REGISTRY to DATA_DIR/dealings.bin.
    Deal {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        registry: PathBuf,
    },
    /// Checks every member's genesis dealings (a file of all of them) and writes this node's
    /// complaints to DATA_DIR/complaints.bin.
    Complain {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        registry: PathBuf,
        #[arg(long)]
        dealings: PathBuf,
    },
    /// Moves the store of the replica in DATA_DIR aside (when it is corrupt), keeping its
    /// keys: started again, the replica rejoins the subnet from its peers.
    ResetStore {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Runs a replica in a pod: creates its keys on first start, waits for genesis through
    /// its admin API (the operator drives it), then runs; restarted, it runs at once.
    Pod {
        #[arg(long)]
        data_dir: PathBuf,
        /// Where peers reach this replica's transport (its registry record), e.g.
        /// http://subnet-0.subnet-peers.ns.svc.cluster.local:7000.
        #[arg(long)]
        p2p_url: String,
        /// Transport address for peers.
        #[arg(long, default_value = "0.0.0.0:7000")]
        listen: SocketAddr,
        /// The admin gRPC API (the operator's), on a port of its own.
        #[arg(long, default_value = "0.0.0.0:7001")]
        admin_listen: SocketAddr,
        /// The IC HTTP interface, /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        http_listen: SocketAddr,
    },
    /// Runs the replica.
    Run {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        genesis: PathBuf,
        /// gRPC address for peers and the admin API.
        #[arg(long)]
        listen: SocketAddr,
        /// HTTP address for /metrics, /healthz and /readyz.
        #[arg(long)]
        http_listen: SocketAddr,
        /// Bootstrap peers as NODE_ID=URL, e.g. 1=http://127.0.0.1:7001; the registry's
        /// records name the rest.
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
}

pub use thicket_replica::pod::SECRETS;
pub const RECORD: &str = "node.record";
pub const DEALINGS: &str = "dealings.bin";
pub const COMPLAINTS: &str = "complaints.bin";

pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn read_bincode<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    bincode::deserialize(&read(path)?)
        .with_context(|| format!("{} is not a valid {what}", path.display()))
}

/// Writes a file of the subnet's data directory: keys, records, dealings, genesis. None of it
/// is for other local users, so all of it is created for the owner only.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(thicket_replica::pod::write_private(path, bytes)?)
}

/// Creates a directory of the subnet's data for the owner only.
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    Ok(thicket_replica::pod::create_private_dir(dir)?)
}

fn secrets(dir: &Path) -> anyhow::Result<NodeSecrets> {
    Ok(process::secrets(dir)?)
}

pub fn main(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Keygen {
            data_dir,
            node_id,
            p2p_url,
        } => keygen(&data_dir, NodeId(node_id), &p2p_url),
        Cmd::Deal { data_dir, registry } => {
            let me = secrets(&data_dir)?;
            let registry: Registry = read_bincode(&registry, "registry")?;
            let dealings = genesis::deal(&mut OsRng, &me, &registry)?;
            write(&data_dir.join(DEALINGS), &canonical_bytes(&dealings))
        }
        Cmd::Complain {
            data_dir,
            registry,
            dealings,
        } => {
            let me = secrets(&data_dir)?;
            let registry: Registry = read_bincode(&registry, "registry")?;
            let all: BTreeMap<NodeId, [thicket_crypto::dkg::Dealing; 2]> =
                read_bincode(&dealings, "dealing set")?;
            let complaints = genesis::complaints(&mut OsRng, &me, &registry, &all);
            write(&data_dir.join(COMPLAINTS), &canonical_bytes(&complaints))
        }
        Cmd::ResetStore { data_dir } => {
            let aside = thicket_replica::node::reset_store(&data_dir)
                .with_context(|| format!("moving the store in {} aside", data_dir.display()))?;
            eprintln!(
                "the store is now {}; the keys stay. Started again, the replica rejoins the \
                 subnet from its peers (catch-up package, then state sync).",
                aside.display()
            );
            Ok(())
        }
        Cmd::Pod {
            data_dir,
            p2p_url,
            listen,
            admin_listen,
            http_listen,
        } => {
            let cfg = pod::PodConfig {
                data_dir,
                p2p_url,
                listen,
                http_listen,
                admin_listen,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async { Ok(pod::run(cfg, process::stop_on_signal()).await?) })
        }
        Cmd::Run {
            data_dir,
            genesis,
            listen,
            http_listen,
            peers,
        } => {
            let spec = process::RunSpec {
                data_dir,
                genesis,
                listen,
                http_listen,
                peers,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let options = node::Options::default();
                Ok(process::run(spec, options, process::stop_on_signal()).await?)
            })
        }
    }
}

fn keygen(dir: &Path, id: NodeId, p2p_url: &str) -> anyhow::Result<()> {
    create_dir(dir)?;
    let path = dir.join(SECRETS);
    let me = if path.exists() {
        let me = secrets(dir)?;
        if me.node_id != id {
            bail!(
                "{} holds the keys of {}, not {id}",
                path.display(),
                me.node_id
            );
        }
        me
    } else {
        let me = NodeSecrets::generate(&mut OsRng, id);
        write(&path, &me.to_bytes())?;
        me
    };
    write(&dir.join(RECORD), &canonical_bytes(&me.record_at(p2p_url)))
}
