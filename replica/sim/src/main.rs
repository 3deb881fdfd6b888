//! `thicket-sim`: runs simulated subnets over many seeds and prints one JSON summary line last.
//! Exits non-zero on any safety violation or liveness failure.

use anyhow::Context;
use clap::Parser;
use thicket_sim::config::{Behaviour, Crash, parse_changes, parse_partitions};
use thicket_sim::{SimConfig, Summary, run};

#[derive(Parser, Debug)]
#[command(about = "Deterministic simulator of a Thicket subnet (real crypto, virtual time)")]
struct Args {
    /// Replicas at genesis (`--nodes` is the older name).
    #[arg(long, alias = "nodes", default_value_t = 4)]
    replicas: usize,
    /// How many of them are faulty.
    #[arg(long, default_value_t = 0)]
    faulty: usize,
    /// honest, silent, equivocate, invalid-sig, bad-dealing, multi-notarize or mixed.
    #[arg(long, default_value = "silent")]
    behaviour: Behaviour,
    /// Number of seeds to run (seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Finalized height every honest replica must reach.
    #[arg(long, default_value_t = 50)]
    heights: u64,
    /// Partitions: START_MS+DURATION_MS[/GROUPS], comma-separated.
    #[arg(long, default_value = "")]
    partition: String,
    /// Membership changes: add@HEIGHT / remove@HEIGHT, comma-separated.
    #[arg(long, default_value = "")]
    membership_changes: String,
    /// Crash a replica: NODE@START_MS+DOWN_MS[:wipe], comma-separated.
    #[arg(long, default_value = "")]
    crash: String,
    /// Heights per DKG interval.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// Message loss probability.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// The fault campaign: each seed gets a Byzantine behaviour in turn, a partition and a
    /// crash-restart (disk kept or wiped) at seeded times, with f = ⌊(n−1)/3⌋ faulty replicas,
    /// the wiped one counting as one of them; --faulty, --behaviour, --partition and --crash
    /// are ignored.
    #[arg(long)]
    campaign: bool,
    /// Print one JSON line per run as well.
    #[arg(long)]
    verbose: bool,
}

fn parse_crashes(spec: &str) -> anyhow::Result<Vec<Crash>> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|c| {
            let (c, wipe) = match c.strip_suffix(":wipe") {
                Some(c) => (c, true),
                None => (c, false),
            };
            let (node, window) = c.split_once('@').context(format!(
                "bad crash {c:?}: expected NODE@START_MS+DOWN_MS[:wipe]"
            ))?;
            let (at, down) = window
                .split_once('+')
                .context(format!("bad crash window {window:?}"))?;
            Ok(Crash {
                node: node.parse()?,
                at_ms: at.parse()?,
                down_ms: down.parse()?,
                wipe,
            })
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(
        args.faulty <= args.replicas,
        "--faulty {} exceeds --replicas {}",
        args.faulty,
        args.replicas
    );
    let mut cfg = SimConfig::new(args.replicas, args.heights, args.seed);
    cfg.faulty = args.faulty;
    cfg.behaviour = if args.faulty == 0 {
        Behaviour::Honest
    } else {
        args.behaviour
    };
    cfg.partitions = parse_partitions(&args.partition).map_err(anyhow::Error::msg)?;
    cfg.changes = parse_changes(&args.membership_changes).map_err(anyhow::Error::msg)?;
    cfg.crashes = parse_crashes(&args.crash)?;
    anyhow::ensure!(
        cfg.crashes.iter().all(|c| c.node < args.replicas),
        "--crash names a replica that does not exist"
    );
    let min = thicket_consensus::membership::MIN_DKG_INTERVAL_LENGTH;
    anyhow::ensure!(args.interval >= min, "--interval must be at least {min}");
    cfg.params.dkg_interval_length = args.interval;
    cfg.drop_rate = args.drop_rate;
    let mut runs = Vec::new();
    for seed in args.seed..args.seed + args.seeds.max(1) {
        let mut c = if args.campaign {
            let mut c = SimConfig::campaign(args.replicas, args.heights, seed);
            c.params = cfg.params.clone();
            c.drop_rate = cfg.drop_rate;
            c.changes = cfg.changes.clone();
            c
        } else {
            cfg.clone()
        };
        c.seed = seed;
        let r = run(c)?;
        if args.verbose {
            println!("{}", serde_json::to_string(&r)?);
        }
        runs.push(r);
    }
    if args.campaign {
        cfg.faulty = (args.replicas - 1) / 3;
        cfg.behaviour = Behaviour::Mixed;
    }
    let summary = Summary::of(&cfg, &runs);
    println!("{}", serde_json::to_string(&summary)?);
    if !summary.ok() {
        std::process::exit(1);
    }
    Ok(())
}
