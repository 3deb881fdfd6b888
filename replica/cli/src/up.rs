//! `thicket up`: a local subnet of replica processes on loopback; `thicket genesis`: genesis
//! for replicas started elsewhere.
//!
//! Genesis runs the dealer-less DKG among the fresh replica processes: each creates its keys in
//! its own data directory and deals from there; `up` only relays public records, dealings and
//! complaints, and combines them with the same deterministic function every replica uses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use thicket_consensus::genesis;
use thicket_crypto::dkg::{Complaint, Dealing};
use thicket_crypto::node_key::NodeSigningKey;
use thicket_types::artifacts::CatchUpContent;
use thicket_types::block::DkgTag;
use thicket_types::registry::{NodeRecord, Registry, SubnetParams};
use thicket_types::{CryptoHash, NodeId, canonical_bytes};

use crate::replica::{COMPLAINTS, DEALINGS, RECORD, create_dir, read_bincode, write};

/// `DATA_DIR/subnet.json`, written by `thicket up` once genesis is done and read by every
/// other local command (and by scripts: it is the local subnet's public description). Fields
/// added later have defaults, so an older file still reads.
#[derive(Serialize, Deserialize, Debug)]
pub struct SubnetJson {
    /// The subnet's id as IC tools name subnets: the textual principal of its public key.
    pub subnet_id: String,
    /// The id of its registry (hex, chosen at genesis), which registry changes are bound to.
    #[serde(default)]
    pub registry_id: String,
    /// Hex of the DER-encoded subnet public key: the root key for agents.
    pub public_key: String,
    /// Replica n listens on base_port + 2n (gRPC) and base_port + 2n + 1 (HTTP).
    #[serde(default)]
    pub base_port: u16,
    /// An id inside the subnet's canister range, for agents creating canisters
    /// (`provisional_create_canister_with_cycles` needs an effective canister id).
    #[serde(default)]
    pub effective_canister_id: String,
    /// The address the replicas' HTTP interfaces listen on (`up --http-host`).
    #[serde(default = "loopback")]
    pub http_host: IpAddr,
    pub replicas: Vec<ReplicaJson>,
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ReplicaJson {
    pub node_id: u64,
    pub grpc_url: String,
    pub http_url: String,
    pub metrics_url: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    /// Set by `thicket replica remove` once the node left the subnet; kept so its id is not
    /// reused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

impl SubnetJson {
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("subnet.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is a subnet up in {}?)",
                path.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a subnet.json", path.display()))
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write(
            &dir.join("subnet.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// Replicas that are members (not removed).
    pub fn active(&self) -> impl Iterator<Item = &ReplicaJson> {
        self.replicas.iter().filter(|r| !r.removed)
    }
}

/// Consensus parameters of a new local subnet. The defaults are the IC's application-subnet
/// timing (notary delay 300 ms, so about 3 blocks/s, and a sync call answered in about 0.6 s),
/// with a DKG interval short enough to see resharing within a minute. A small subnet whose
/// replicas share a machine or a LAN can notarize sooner: 100 ms answers sync calls in about
/// 0.3 s (see docs/performance.md); the notary delay must stay above the time a block takes
/// to reach the other replicas, or lower-ranked blocks compete with it.
#[derive(clap::Args, Clone, Debug)]
pub struct Timing {
    /// Heights per DKG interval (a new subnet only): membership changes and key resharing
    /// take effect at interval boundaries.
    #[arg(long, default_value_t = 50)]
    pub dkg_interval: u64,
    /// Milliseconds replicas wait before notarizing the lowest-ranked block (a new subnet
    /// only; the IC's initial notary delay).
    #[arg(long, default_value_t = 300)]
    pub notary_delay_ms: u64,
    /// Milliseconds added per block-maker rank (a new subnet only; the IC's unit delay).
    #[arg(long, default_value_t = 1000)]
    pub unit_delay_ms: u64,
    /// Most ingress messages a block may carry (a new subnet only).
    #[arg(long, default_value_t = 1000)]
    pub max_ingress_per_block: usize,
}

impl Timing {
    fn params(&self) -> anyhow::Result<SubnetParams> {
        if self.dkg_interval < thicket_consensus::membership::MIN_DKG_INTERVAL_LENGTH {
            bail!(
                "--dkg-interval must be at least {}",
                thicket_consensus::membership::MIN_DKG_INTERVAL_LENGTH
            );
        }
        if self.notary_delay_ms == 0 || self.unit_delay_ms == 0 {
            bail!("--notary-delay-ms and --unit-delay-ms must be at least 1");
        }
        if !(1..=10_000).contains(&self.max_ingress_per_block) {
            bail!("--max-ingress-per-block must be between 1 and 10000");
        }
        Ok(SubnetParams {
            unit_delay_ms: self.unit_delay_ms,
            initial_notary_delay_ms: self.notary_delay_ms,
            dkg_interval_length: self.dkg_interval,
            dkg_dealings_per_block: 16,
            max_ingress_per_block: self.max_ingress_per_block,
        })
    }
}

/// Node n's gRPC port (its HTTP port is the next one).
pub fn grpc_port(base_port: u16, n: u64) -> anyhow::Result<u16> {
    u16::try_from(u64::from(base_port) + 2 * n + 1)
        .map(|p| p - 1)
        .map_err(|_| anyhow::anyhow!("--base-port {base_port} leaves no room for node {n}"))
}

pub fn replica_dir(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("replica-{n}"))
}

/// What `subnet.json` says about node n of a subnet on `base_port`.
pub fn replica_json(
    dir: &Path,
    base_port: u16,
    http_host: IpAddr,
    n: u64,
    pid: u32,
) -> anyhow::Result<ReplicaJson> {
    let grpc = grpc_port(base_port, n)?;
    // Clients on this machine reach a replica listening on all addresses through loopback.
    let host = if http_host.is_unspecified() {
        loopback()
    } else {
        http_host
    };
    let http = SocketAddr::new(host, grpc + 1);
    Ok(ReplicaJson {
        node_id: n,
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        http_url: format!("http://{http}"),
        metrics_url: format!("http://{http}/metrics"),
        pid,
        data_dir: replica_dir(dir, n),
        removed: false,
    })
}

/// Starts `thicket replica run` for node n, logging to its replica.log, with the other
/// members as bootstrap peers.
pub fn spawn_replica(
    exe: &Path,
    dir: &Path,
    base_port: u16,
    http_host: IpAddr,
    n: u64,
    peers: &[u64],
    otlp: Option<&str>,
) -> anyhow::Result<Child> {
    let d = replica_dir(dir, n);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("replica.log"))
        .with_context(|| format!("opening the log in {}", d.display()))?;
    let grpc = grpc_port(base_port, n)?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "replica",
        "run",
        "--data-dir",
        path_str(&d)?,
        "--genesis",
        path_str(&dir.join("genesis.bin"))?,
    ])
    .args(["--listen", &format!("127.0.0.1:{grpc}")])
    .args([
        "--http-listen",
        &SocketAddr::new(http_host, grpc + 1).to_string(),
    ]);
    for peer in peers.iter().filter(|p| **p != n) {
        cmd.arg("--peer").arg(format!(
            "{peer}=http://127.0.0.1:{}",
            grpc_port(base_port, *peer)?
        ));
    }
    if let Some(endpoint) = otlp {
        cmd.args(["--otlp-endpoint", endpoint]);
    }
    // Its own process group: a Ctrl-C meant for the command that started it does not reach
    // it; `up` stops every replica itself.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("log handle")?)
        .stderr(log)
        .spawn()
        .context("starting a replica")
}

/// Runs `thicket replica ARGS` to completion.
fn replica_step(exe: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(exe)
        .arg("replica")
        .args(args)
        .output()
        .context("starting a replica step")?;
    if !out.status.success() {
        bail!(
            "`thicket replica {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// The genesis DKG among fresh replicas whose transports are at `urls` (node i at `urls[i]`,
/// keys in DIR/replica-i); writes DIR/genesis.bin, DIR/registry.bin and DIR/admin.key.
fn run_genesis(
    urls: &[String],
    dir: &Path,
    exe: &Path,
    params: SubnetParams,
) -> anyhow::Result<CatchUpContent> {
    let dirs: Vec<PathBuf> = (0..urls.len() as u64)
        .map(|i| replica_dir(dir, i))
        .collect();
    let mut members = BTreeMap::new();
    for (i, (d, url)) in dirs.iter().zip(urls).enumerate() {
        replica_step(
            exe,
            &[
                "keygen",
                "--data-dir",
                path_str(d)?,
                "--node-id",
                &i.to_string(),
                "--p2p-url",
                url,
            ],
        )?;
        let rec: NodeRecord = read_bincode(&d.join(RECORD), "node record")?;
        members.insert(rec.node_id, rec);
    }
    let admin = NodeSigningKey::generate(&mut OsRng);
    write(&dir.join("admin.key"), &admin.to_bytes())?;
    let mut subnet_id = [0u8; 32];
    OsRng.fill_bytes(&mut subnet_id);
    let registry = Registry {
        subnet_id: CryptoHash(subnet_id),
        version: 0,
        members,
        params,
        admin_key: admin.public_key(),
    };
    let registry_path = dir.join("registry.bin");
    write(&registry_path, &canonical_bytes(&registry))?;

    let mut dealings: BTreeMap<NodeId, [Dealing; 2]> = BTreeMap::new();
    for (i, d) in dirs.iter().enumerate() {
        replica_step(
            exe,
            &[
                "deal",
                "--data-dir",
                path_str(d)?,
                "--registry",
                path_str(&registry_path)?,
            ],
        )?;
        dealings.insert(
            NodeId(i as u64),
            read_bincode(&d.join(DEALINGS), "dealings")?,
        );
    }
    let dealings_path = dir.join("dealings.bin");
    write(&dealings_path, &canonical_bytes(&dealings))?;
    let mut complaints: Vec<(NodeId, DkgTag, Complaint)> = Vec::new();
    for d in &dirs {
        replica_step(
            exe,
            &[
                "complain",
                "--data-dir",
                path_str(d)?,
                "--registry",
                path_str(&registry_path)?,
                "--dealings",
                path_str(&dealings_path)?,
            ],
        )?;
        let mine: Vec<(NodeId, DkgTag, Complaint)> =
            read_bincode(&d.join(COMPLAINTS), "complaints")?;
        complaints.extend(mine);
    }
    let root = genesis::root(registry, &dealings, &complaints)?;
    write(&dir.join("genesis.bin"), &canonical_bytes(&root))?;
    Ok(root)
}

/// `thicket genesis`: genesis for replicas this command does not start, each at its own
/// transport URL (other addresses of this machine, such as network namespaces).
pub fn genesis(dir: &Path, urls: &[String], timing: &Timing) -> anyhow::Result<()> {
    if urls.is_empty() {
        bail!("give each replica's transport URL with --p2p-url");
    }
    for url in urls {
        reqwest::Url::parse(url).with_context(|| format!("--p2p-url {url:?} is not a URL"))?;
    }
    let exe = std::env::current_exe().context("locating the thicket binary")?;
    create_dir(dir)?;
    if dir.join("genesis.bin").exists() {
        bail!(
            "{} already holds a subnet's genesis; a new subnet needs a new directory",
            dir.display()
        );
    }
    let root = run_genesis(urls, dir, &exe, timing.params()?)?;
    let summary = root
        .block
        .summary()
        .context("genesis has no summary block")?;
    let root_key = summary.current.high.coefficients().public_key().to_der();
    println!(
        "{}",
        serde_json::json!({
            "subnet_id": candid::Principal::self_authenticating(&root_key).to_text(),
            "public_key": hex::encode(&root_key),
            "genesis": dir.join("genesis.bin"),
            "replicas": (0..urls.len() as u64).map(|i| replica_dir(dir, i)).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

pub fn up(
    n: usize,
    dir: &Path,
    base_port: u16,
    http_host: IpAddr,
    timing: &Timing,
    otlp: Option<&str>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the thicket binary")?;
    create_dir(dir)?;
    let genesis_path = dir.join("genesis.bin");
    let previous = dir
        .join("subnet.json")
        .exists()
        .then(|| SubnetJson::read(dir))
        .transpose()?;
    let root: CatchUpContent = if genesis_path.exists() {
        eprintln!("resuming the subnet in {}", dir.display());
        read_bincode(&genesis_path, "genesis")?
    } else {
        if n == 0 {
            bail!("--replicas must be at least 1");
        }
        let urls = (0..n as u64)
            .map(|i| Ok(format!("http://127.0.0.1:{}", grpc_port(base_port, i)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let params = timing.params()?;
        eprintln!("genesis: DKG among {n} new replicas in {}", dir.display());
        run_genesis(&urls, dir, &exe, params)?
    };
    let summary = root
        .block
        .summary()
        .context("genesis has no summary block")?;
    let registry = &summary.current.registry;
    // Members: those of genesis, or, when resuming, those subnet.json lists (nodes added and
    // removed since genesis included), on the ports they had.
    let (base_port, mut entries) = match previous {
        Some(p) if p.base_port != 0 => {
            // The HTTP addresses follow this run's --http-host.
            let mut entries = p.replicas;
            for e in entries.iter_mut() {
                let now = replica_json(dir, p.base_port, http_host, e.node_id, e.pid)?;
                e.http_url = now.http_url;
                e.metrics_url = now.metrics_url;
            }
            (p.base_port, entries)
        }
        _ => {
            let entries = registry
                .members
                .keys()
                .map(|id| replica_json(dir, base_port, http_host, id.0, 0))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (base_port, entries)
        }
    };
    let ids: Vec<u64> = entries
        .iter()
        .filter(|r| !r.removed)
        .map(|r| r.node_id)
        .collect();
    let mut children: Vec<(u64, Child)> = Vec::new();
    for e in entries.iter_mut().filter(|r| !r.removed) {
        match spawn_replica(&exe, dir, base_port, http_host, e.node_id, &ids, otlp) {
            Ok(child) => {
                e.pid = child.id();
                children.push((e.node_id, child));
            }
            Err(err) => {
                // Those already started run in their own process groups: stop them.
                stop(children, dir);
                return Err(err);
            }
        }
    }
    let root_key = summary.current.high.coefficients().public_key().to_der();
    let info = SubnetJson {
        subnet_id: candid::Principal::self_authenticating(&root_key).to_text(),
        registry_id: registry.subnet_id.to_string(),
        public_key: hex::encode(&root_key),
        base_port,
        effective_canister_id: thicket_state::ids::first_user_canister().to_text(),
        http_host,
        replicas: entries,
    };
    if let Err(err) = info.write(dir) {
        stop(children, dir);
        return Err(err);
    }
    eprintln!(
        "subnet {} is up with {} replicas",
        info.subnet_id,
        children.len()
    );
    for r in info.active() {
        eprintln!(
            "  node {}: gRPC {}  HTTP {}  metrics {}  (pid {})",
            r.node_id, r.grpc_url, r.http_url, r.metrics_url, r.pid
        );
    }
    eprintln!(
        "details: {}; logs: {}/replica-*/replica.log",
        dir.join("subnet.json").display(),
        dir.display()
    );
    eprintln!(
        "`thicket status --data-dir {0}` shows progress; `thicket replica add|remove --data-dir {0}` \
         changes membership; Ctrl-C stops the subnet",
        dir.display()
    );

    wait_for_signal(&mut children)?;
    stop(children, dir);
    Ok(())
}

/// Blocks until Ctrl-C or SIGTERM; reports replicas that exit on their own meanwhile.
fn wait_for_signal(children: &mut [(u64, Child)]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut reported = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = tick.tick() => {
                    for (id, c) in children.iter_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            if reported.insert(*id) {
                                eprintln!("replica {id} exited ({status}); see its replica.log");
                            }
                        }
                    }
                }
            }
        }
    })
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Whether a replica process we did not start (one `replica add` started) still runs: the pid
/// must still be a `thicket replica run` (a pid reused by something else is left alone).
pub fn running(pid: u32) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    alive
        && args
            .windows(2)
            .any(|w| w == [b"replica".as_slice(), b"run".as_slice()])
}

/// SIGTERM to every replica (those `up` started and those `replica add` started since), then
/// SIGKILL to those still running after 10 s.
fn stop(mut children: Vec<(u64, Child)>, dir: &Path) {
    eprintln!("stopping the subnet");
    let mine: Vec<u32> = children.iter().map(|(_, c)| c.id()).collect();
    let others: Vec<u32> = SubnetJson::read(dir)
        .map(|s| {
            s.active()
                .map(|r| r.pid)
                .filter(|p| *p != 0 && !mine.contains(p))
                .collect()
        })
        .unwrap_or_default();
    let others: Vec<u32> = others.into_iter().filter(|p| running(*p)).collect();
    for pid in mine.iter().chain(&others) {
        signal(*pid, "TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && (children
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
            || others.iter().any(|p| running(*p)))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, c) in &mut children {
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    for p in others.iter().filter(|p| running(**p)) {
        signal(*p, "KILL");
    }
}
