//! `thicket`: the command for local subnets (`up`, `status`, `replica add/remove`), canisters
//! (`canister deploy/call`, with the IC's Rust agent), benchmarks (`bench`), and the replica
//! process itself (`replica ...`, which `up` and the operator start). The daemon is the
//! `thicket-replica` library; this crate adds the agent, Candid parsing and the local tooling.
//!
//! # Layout
//! - [`up`]: a local subnet of replica processes, and `DATA_DIR/subnet.json` ([`up::SubnetJson`]:
//!   each replica's node id, ports and data directory, the subnet's id and root key), which
//!   every other local command reads;
//! - [`replica`]: the replica entry points, which are also the genesis contract any
//!   orchestrator drives with public data only: `keygen` (the node's keys stay in its data
//!   directory; its public record is printed), `deal` (its dealings for a registry), `complain`
//!   (its complaints about everyone's dealings), then the orchestrator combines them
//!   (`thicket_consensus::genesis::root`, deterministic) and every replica `run`s from that
//!   genesis; `pod` does the same steps through the admin API for the operator;
//! - [`node_cmd`]: `status` and `replica add/remove` (administrator-signed registry changes);
//! - [`canister_cmd`]: `canister deploy/call`; [`bench`]: throughput and latency figures.
//!
//! Nothing of the source tree is compiled in: `.mo` files are compiled with the Motoko npm
//! package found at run time (`thicket_canister::motoko::canisters_dir`).

mod bench;
mod bench_cometbft;
mod canister_cmd;
mod node_cmd;
mod replica;
mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Thicket: IC-style subnets, locally or on Kubernetes")]
struct Args {
    /// Export spans to this OpenTelemetry collector (OTLP/HTTP base URL, e.g.
    /// http://127.0.0.1:4318); `up` passes it to its replicas. Defaults to
    /// $OTEL_EXPORTER_OTLP_ENDPOINT when set.
    #[arg(long, global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts a local subnet of replica processes on loopback (genesis DKG first, or resumes
    /// the subnet in DATA_DIR), writes DATA_DIR/subnet.json, and runs until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        #[arg(long, default_value = ".thicket")]
        data_dir: PathBuf,
        /// Replica i listens on BASE_PORT + 2i (gRPC) and BASE_PORT + 2i + 1 (HTTP).
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// The address the replicas' HTTP interfaces (IC API, /metrics, /healthz) listen on:
        /// 0.0.0.0 serves other machines, or the network of a container running the subnet.
        /// Replicas reach each other on loopback either way.
        #[arg(long, default_value = "127.0.0.1")]
        http_host: std::net::IpAddr,
        #[command(flatten)]
        timing: up::Timing,
    },
    /// Genesis for replicas started separately (by a script, or on other addresses): runs
    /// the DKG among new replicas, node i reachable at the i-th --p2p-url, with their keys in
    /// DATA_DIR/replica-i; writes DATA_DIR/genesis.bin and prints the subnet's id and root
    /// key. Each replica then runs with `thicket replica run --data-dir DATA_DIR/replica-i
    /// --genesis DATA_DIR/genesis.bin`.
    Genesis {
        #[arg(long)]
        data_dir: PathBuf,
        /// Where node i's peers reach its transport, e.g. http://10.0.0.1:7000 (repeat, in
        /// node order).
        #[arg(long = "p2p-url", required = true)]
        p2p_urls: Vec<String>,
        #[command(flatten)]
        timing: up::Timing,
    },
    /// Heights, members and DKG epoch of each replica of the local subnet.
    Status {
        #[arg(long, default_value = ".thicket")]
        data_dir: PathBuf,
    },
    /// The same as `replica add` and `replica remove` (the name of earlier versions).
    #[command(subcommand, hide = true)]
    Node(node_cmd::Cmd),
    /// Measures fresh local subnets under increasing ingress load (throughput, latency p50/p99,
    /// finalization rate) and prints a Markdown table.
    Bench(bench::BenchArgs),
    /// Deploys canisters to the local subnet and calls them (with the IC's Rust agent).
    #[command(subcommand)]
    Canister(canister_cmd::Cmd),
    /// Replicas: add one to the local subnet or remove one (registry changes through
    /// consensus), and the entry points of one replica process (started by `up` or the
    /// operator).
    #[command(subcommand)]
    Replica(ReplicaCmd),
}

/// `thicket replica ...`: one word, "replica", for a member of a subnet everywhere; "node"
/// only names its identity (node id, node keys), as on the IC.
#[derive(Subcommand)]
enum ReplicaCmd {
    #[command(flatten)]
    Membership(node_cmd::Cmd),
    #[command(flatten)]
    Process(replica::Cmd),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let otlp = args
        .otlp_endpoint
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    let (service, instance) = match &args.cmd {
        Cmd::Replica(ReplicaCmd::Process(
            replica::Cmd::Run { data_dir, .. } | replica::Cmd::Pod { data_dir, .. },
        )) => ("thicket-replica", data_dir.display().to_string()),
        _ => ("thicket", std::process::id().to_string()),
    };
    // Only replicas export spans; the CLI's own work is short-lived.
    let exported = (service == "thicket-replica")
        .then_some(())
        .and(otlp.as_deref());
    let _telemetry = thicket_replica::telemetry::init(service, &instance, exported)?;
    match args.cmd {
        Cmd::Up {
            replicas,
            data_dir,
            base_port,
            http_host,
            timing,
        } => up::up(
            replicas,
            &data_dir,
            base_port,
            http_host,
            &timing,
            otlp.as_deref(),
        ),
        Cmd::Node(cmd) | Cmd::Replica(ReplicaCmd::Membership(cmd)) => {
            node_cmd::main(cmd, otlp.as_deref())
        }
        Cmd::Bench(args) if !args.cometbft.is_empty() => bench_cometbft::main(args),
        Cmd::Bench(args) => bench::main(args),
        Cmd::Canister(cmd) => canister_cmd::main(cmd),
        Cmd::Genesis {
            data_dir,
            p2p_urls,
            timing,
        } => up::genesis(&data_dir, &p2p_urls, &timing),
        Cmd::Status { data_dir } => node_cmd::subnet_status(&data_dir),
        Cmd::Replica(ReplicaCmd::Process(cmd)) => replica::main(cmd),
    }
}
