//! `thicket-faults`: fault-injection runs against real replica processes (see the library).
//!
//! ```sh
//! cargo run --release -p thicket-faults -- run --scenario kill --seed 7
//! cargo run --release -p thicket-faults -- campaign --runs 50 --out faults.jsonl
//! cargo run --release -p thicket-faults -- summary faults.jsonl
//! cargo run --release -p thicket-faults -- run --scenario none --byzantine flood
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use thicket_faults::byzantine;
use thicket_faults::scenario::Scenario;
use thicket_faults::{Attacker, RunConfig, RunReport};
use thicket_replica::process::RunSpec;
use thicket_sim::config::Behaviour;

#[derive(Parser)]
#[command(about = "Fault injection between real Thicket replica processes")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Seconds of calls before the faults.
    #[arg(long, default_value_t = 15)]
    warmup: u64,
    /// Seconds of faults.
    #[arg(long, default_value_t = 120)]
    fault_secs: u64,
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// The cargo profile to build `thicket` with (release measures what users run).
    #[arg(long, default_value = "release")]
    profile: String,
    /// Use this `thicket` binary instead of building one.
    #[arg(long)]
    thicket: Option<PathBuf>,
    /// Where runs keep their files.
    #[arg(long, default_value = "/tmp/thicket-faults")]
    work: PathBuf,
    /// The last replica is a Byzantine member with this behaviour all through the run:
    /// equivocate, invalid-sig, bad-dealing, multi-notarize, withhold or flood (a campaign
    /// takes several, comma-separated, in turn).
    #[arg(long, value_delimiter = ',')]
    byzantine: Vec<Behaviour>,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run; prints its report as JSON.
    Run {
        #[arg(long, value_enum)]
        scenario: Scenario,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        common: Common,
    },
    /// RUNS runs, the scenarios in turn with seeds from SEED on; appends each report to OUT
    /// (JSON lines) as it ends, then prints the summary table.
    Campaign {
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only these scenarios (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        scenarios: Vec<Scenario>,
        #[arg(long, default_value = "faults.jsonl")]
        out: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// The summary table of the reports in FILE (JSON lines).
    Summary { file: PathBuf },
    /// A Byzantine replica (what runs with --byzantine start): `thicket replica run` with the
    /// simulator's Byzantine conduct.
    Replica {
        #[arg(long)]
        behaviour: Behaviour,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        genesis: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        http_listen: SocketAddr,
        #[arg(long = "peer")]
        peers: Vec<String>,
    },
}

fn attacker(c: &Common, k: usize) -> anyhow::Result<Option<Attacker>> {
    if c.byzantine.is_empty() {
        return Ok(None);
    }
    Ok(Some(Attacker {
        behaviour: c.byzantine[k % c.byzantine.len()],
        program: std::env::current_exe().context("finding this binary")?,
    }))
}

fn config(c: &Common, scenario: Scenario, seed: u64) -> anyhow::Result<RunConfig> {
    let thicket = match &c.thicket {
        Some(t) => t.clone(),
        None => thicket_faults::build_thicket(&c.profile)?,
    };
    std::fs::create_dir_all(&c.work)?;
    let wasm = c.work.join("Log.wasm");
    if !wasm.exists() {
        thicket_faults::compile_log(&wasm)?;
    }
    Ok(RunConfig {
        scenario,
        seed,
        replicas: c.replicas,
        warmup: Duration::from_secs(c.warmup),
        faults: Duration::from_secs(c.fault_secs),
        clients: c.clients,
        thicket,
        wasm,
        work: c.work.clone(),
        byzantine: attacker(c, 0)?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match args.cmd {
        Cmd::Run {
            scenario,
            seed,
            common,
        } => {
            let cfg = config(&common, scenario, seed)?;
            let report = rt.block_on(thicket_faults::run(&cfg))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Campaign {
            runs,
            seed,
            scenarios,
            out,
            common,
        } => {
            let scenarios = if scenarios.is_empty() {
                Scenario::all()
            } else {
                scenarios
            };
            let mut cfg = config(&common, scenarios[0], seed)?;
            // Later runs reuse the binary built for the first.
            let mut reports = Vec::new();
            for k in 0..runs {
                cfg.scenario = scenarios[k % scenarios.len()];
                cfg.seed = seed + k as u64;
                cfg.byzantine = attacker(&common, k)?;
                eprintln!("run {}/{runs}: {} seed {}", k + 1, cfg.name(), cfg.seed);
                let report = rt.block_on(thicket_faults::run(&cfg))?;
                eprintln!(
                    "  answered {} unanswered {} lost {} violations {} recovery {:?} s ({:.0} s)",
                    report.answered,
                    report.unanswered,
                    report.lost,
                    report.violations.len(),
                    report.recovery_secs,
                    report.secs
                );
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&out)
                    .with_context(|| format!("opening {}", out.display()))?;
                writeln!(file, "{}", serde_json::to_string(&report)?)?;
                reports.push(report);
            }
            print!("{}", thicket_faults::summary(&reports));
            Ok(())
        }
        Cmd::Summary { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let reports: Vec<RunReport> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .with_context(|| format!("{} is not JSON lines of reports", file.display()))?;
            print!("{}", thicket_faults::summary(&reports));
            Ok(())
        }
        Cmd::Replica {
            behaviour,
            data_dir,
            genesis,
            listen,
            http_listen,
            peers,
        } => {
            drop(rt);
            let instance = data_dir.display().to_string();
            let _telemetry = thicket_replica::telemetry::init("thicket-replica", &instance, None)?;
            let spec = RunSpec {
                data_dir,
                genesis,
                listen,
                http_listen,
                peers,
            };
            byzantine::run_replica(behaviour, spec)
        }
    }
}
