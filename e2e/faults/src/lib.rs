//! Fault injection between real replica processes, and a checker of what they did.
//!
//! A run starts a subnet of `thicket replica run` processes, each in its own network namespace
//! on a bridge (`ip netns exec`), deploys the log canister (`e2e/canisters/Log.mo`), and runs
//! clients that send update calls through every replica while a scenario injects faults: iptables
//! partitions (symmetric, one-way, the block maker, halves), packet loss, delay with jitter
//! (a relay: this kernel has no netem), kill -9, SIGSTOP, clock skew (libfaketime) and a full
//! disk (each replica's data directory is a small tmpfs). Then everything heals, and the run
//! measures how long until every replica answers calls again, reads every replica's log, and
//! checks:
//! - every answered call's token is at its index in every replica's log (calls lost: 0);
//! - what every replica signed, finalized and certified, polled all through the run (see
//!   [`check`]), holds no conflict (safety violations: 0).
//!
//! Needs root (namespaces, iptables, tmpfs mounts); installs iptables and faketime from
//! Debian if they are missing.
//!
//! # Layout
//! - [`net`]: namespaces, bridge and iptables faults; [`relay`]: delay between replicas;
//! - [`subnet`]: genesis, the replica processes and their faults (kill, pause, skew, disk),
//!   and the supervisor that restarts them;
//! - [`workload`]: the clients; [`check`]: the audit poller and the checks;
//! - [`byzantine`]: a member that attacks the others over gRPC (`thicket-faults replica`,
//!   the daemon's process with the simulator's Byzantine conduct);
//! - [`scenario`]: each scenario's faults; this file: one run from start to report, and the
//!   campaign's summary; `src/main.rs`: the `thicket-faults` command; `tests/faults.rs`: the
//!   short runs `cargo test` makes.

pub mod byzantine;
pub mod check;
pub mod net;
pub mod relay;
pub mod scenario;
pub mod subnet;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candid::Principal;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use thicket_proto::admin::StatusRequest;
use thicket_proto::admin::admin_client::AdminClient;

use crate::check::{Auditor, Seen};
use crate::net::Net;
use crate::relay::Relay;
use crate::scenario::Scenario;
use crate::subnet::{Subnet, http_url};
use crate::workload::{Outcome, Workload};

/// What a run is.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub seed: u64,
    pub replicas: usize,
    /// Calls before the faults begin.
    pub warmup: Duration,
    /// How long faults are injected.
    pub faults: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// The `thicket` binary the replicas run.
    pub thicket: PathBuf,
    /// The compiled log canister.
    pub wasm: PathBuf,
    /// Where the run keeps its files (removed after a run that found nothing wrong).
    pub work: PathBuf,
    /// A member that attacks the others all through the run (the last replica).
    pub byzantine: Option<Attacker>,
}

/// A Byzantine member: the behaviour, and the `thicket-faults` binary that runs it.
#[derive(Clone, Debug)]
pub struct Attacker {
    pub behaviour: thicket_sim::config::Behaviour,
    pub program: PathBuf,
}

impl RunConfig {
    /// The run's name in reports: its scenario, and its attacker's behaviour if it has one.
    pub fn name(&self) -> String {
        match (&self.byzantine, self.scenario) {
            (None, s) => s.name(),
            (Some(a), Scenario::None) => format!("byzantine {}", a.behaviour.name()),
            (Some(a), s) => format!("{} + byzantine {}", s.name(), a.behaviour.name()),
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub fault_secs: u64,
    pub answered: u64,
    pub rejected: u64,
    pub unanswered: u64,
    /// Answered calls missing from some replica's state.
    pub lost: u64,
    pub violations: Vec<String>,
    /// Seconds from the heal until every replica answered a call; None if one never did.
    pub recovery_secs: Option<f64>,
    pub finalized_height: u64,
    pub restarts: u32,
    pub audit_records: u64,
    pub audit_missed: u64,
    pub faults: Vec<String>,
    pub secs: f64,
    /// What the Byzantine member (if any) did that the honest roles would not have
    /// (equivocations, forged or junk artifacts, dealings withheld), from its log.
    #[serde(default)]
    pub byzantine_acts: u64,
    /// Invalid artifacts the honest replicas received and dropped (their metrics).
    #[serde(default)]
    pub invalid_artifacts: u64,
    /// The honest replicas' largest peak resident memory, MiB.
    #[serde(default)]
    pub peak_rss_mib: u64,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.violations.is_empty() && self.recovery_secs.is_some()
    }
}

/// What a scenario acts on.
pub struct Faults<'a> {
    pub net: &'a Net,
    pub relay: &'a Relay,
    pub subnet: &'a mut Subnet,
    seen: &'a std::sync::Mutex<Vec<Seen>>,
}

impl Faults<'_> {
    pub fn n(&self) -> usize {
        self.subnet.n()
    }

    /// Sleeps `d`, restarting replicas that exited meanwhile (the supervisor's rounds).
    pub async fn wait(&mut self, d: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + d;
        loop {
            self.subnet.supervise()?;
            let now = tokio::time::Instant::now();
            if now >= end {
                return Ok(());
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(250))).await;
        }
    }

    /// Removes every fault: the network's, the relay's, paused processes, skewed clocks and
    /// full disks (exited replicas restart through [`Faults::wait`]).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.net.heal()?;
        self.relay.clear();
        for i in 0..self.n() {
            if self.subnet.replicas[i].paused {
                self.subnet.resume(i)?;
            }
            self.subnet.skew(i, 0)?;
            self.subnet.free_disk(i)?;
        }
        Ok(())
    }

    /// The replica that proposed the newest rank-0 block any replica recorded.
    pub fn newest_rank0_maker(&self) -> Option<usize> {
        let seen = self.seen.lock().ok()?;
        seen.iter()
            .filter(|s| s.kind == "proposal" && s.rank == 0)
            .max_by_key(|s| s.height)
            .map(|s| s.replica)
    }
}

/// The DKG interval of a run's subnet, in heights.
pub const DKG_INTERVAL: u64 = 30;

/// What the `cargo test` runs share: a work directory, the log canister and a `thicket`
/// binary of the test profile.
pub struct TestBed {
    pub work: PathBuf,
    pub wasm: PathBuf,
    pub thicket: PathBuf,
}

impl TestBed {
    /// Prepares `what`'s runs; None (with a loud message) where they cannot run because this
    /// process is not root, which fails them under CI=true.
    pub fn prepare(what: &str) -> anyhow::Result<Option<TestBed>> {
        let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
        });
        if !root {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("{what} need root (network namespaces, iptables, tmpfs mounts)");
            }
            eprintln!("SKIPPED: {what} need root (network namespaces, iptables, tmpfs)");
            return Ok(None);
        }
        let slug = what.replace(' ', "-");
        let work = std::env::temp_dir().join(format!("thicket-{slug}-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        let wasm = work.join("Log.wasm");
        compile_log(&wasm)?;
        Ok(Some(TestBed {
            thicket: build_thicket("test")?,
            work,
            wasm,
        }))
    }

    /// The configuration of a run on this bed, without an attacker.
    pub fn config(&self, scenario: Scenario, seed: u64, warmup: u64, faults: u64) -> RunConfig {
        RunConfig {
            scenario,
            seed,
            replicas: 4,
            warmup: Duration::from_secs(warmup),
            faults: Duration::from_secs(faults),
            clients: 8,
            thicket: self.thicket.clone(),
            wasm: self.wasm.clone(),
            work: self.work.clone(),
            byzantine: None,
        }
    }
}

impl TestBed {
    /// Removes the work directory (left in place when a test fails, with its runs' files).
    pub fn finish(self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Compiles `e2e/canisters/Log.mo` (installing the Motoko compiler with npm if needed).
pub fn compile_log(out: &Path) -> anyhow::Result<()> {
    let canisters = Path::new(env!("CARGO_MANIFEST_DIR")).join("../canisters");
    if !canisters.join("node_modules/motoko").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&canisters)
            .status()
            .context("running npm")?
            .success();
        if !ok {
            bail!("npm ci in {} failed", canisters.display());
        }
    }
    let ok = Command::new("node")
        .arg(canisters.join("compile.js"))
        .arg(canisters.join("Log.mo"))
        .arg(out)
        .status()
        .context("running node")?
        .success();
    if !ok {
        bail!("compiling Log.mo failed");
    }
    Ok(())
}

/// Builds the `thicket` binary with cargo's `profile` and returns its path. For campaigns,
/// `release`; for the tests, `test`, which `cargo test --workspace` (the README's test command)
/// has built already: asking for exactly that build reuses every unit it compiled, where a
/// `cargo build -p thicket-cli` would resolve other features and compile most dependencies
/// again (4.5 minutes of a cold CI run).
pub fn build_thicket(profile: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let args: &[&str] = match profile {
        "test" => &["test", "--workspace", "--locked", "--no-run"],
        p => &["build", "--locked", "--profile", p, "-p", "thicket-cli"],
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = thicket_e2e::without_test_env(&mut Command::new(cargo))
        .args(args)
        .current_dir(&root)
        .status()
        .context("running cargo")?
        .success();
    if !ok {
        bail!("cargo {} failed", args.join(" "));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let dir = match profile {
        "dev" | "test" => "debug",
        p => p,
    };
    Ok(target.join(dir).join("thicket"))
}

async fn finalized_height(url: &str) -> anyhow::Result<u64> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3));
    let mut client = AdminClient::new(endpoint.connect().await?);
    Ok(client
        .status(StatusRequest {})
        .await?
        .into_inner()
        .finalized_height)
}

/// The invalid artifacts a replica dropped, from its metrics.
async fn invalid_artifacts_of(url: &str) -> anyhow::Result<u64> {
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("thicket_p2p_artifacts_invalid_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// One run, from genesis to report. Errors are the harness's own (a run that could not be
/// made); what the replicas did wrong is in the report.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    let began = Instant::now();
    subnet::install_tools()?;
    let n = cfg.replicas;
    let net = Net::create(n)?;
    let relay = Relay::start(n).await?;
    let dir = cfg.work.join(format!(
        "{}-{}",
        cfg.name().replace(" + ", "-").replace(' ', "-"),
        cfg.seed
    ));
    if dir.exists() {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umount {0}/replica-* 2>/dev/null; rm -rf {0}",
                dir.display()
            ))
            .status();
    }
    let timing = vec!["--dkg-interval".to_string(), DKG_INTERVAL.to_string()];
    let mut subnet = Subnet::genesis(&dir, &cfg.thicket, n, &timing, cfg.scenario.skews_clocks())?;
    // The attacker is the last replica; the checks hold the others to the protocol.
    let attacker = cfg.byzantine.as_ref().map(|a| {
        subnet.replicas[n - 1].program = Some(vec![
            a.program.clone().into(),
            "replica".into(),
            "--behaviour".into(),
            a.behaviour.name().into(),
        ]);
        n - 1
    });
    let honest = |i: &usize| Some(*i) != attacker;
    for i in 0..n {
        subnet.start(i)?;
    }
    let urls: Vec<String> = (0..n).map(http_url).collect();
    // Ready: every replica finalizes.
    let ready_by = Instant::now() + Duration::from_secs(120);
    for url in &urls {
        while finalized_height(url).await.unwrap_or(0) < 2 {
            if Instant::now() > ready_by {
                bail!(
                    "{url} did not finalize within 2 minutes:\n{}",
                    subnet.log_tail(0, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let deployed = Command::new(&cfg.thicket)
        .args(["canister", "deploy"])
        .arg(&cfg.wasm)
        .args(["--url", &urls[0]])
        .output()
        .context("running thicket canister deploy")?;
    if !deployed.status.success() {
        bail!(
            "deploying the log canister failed: {}",
            String::from_utf8_lossy(&deployed.stderr)
        );
    }
    let canister = Principal::from_text(String::from_utf8_lossy(&deployed.stdout).trim())
        .context("thicket canister deploy printed no canister id")?;

    let mut agents = Vec::new();
    for url in &urls {
        agents.push(Arc::new(workload::agent(url, &subnet.root_key).await?));
    }
    let auditor = Auditor::start(urls.clone());
    let start = Instant::now();
    let load = Workload::start(agents.clone(), canister, cfg.clients, cfg.seed, start);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let seen = auditor.seen.clone();
    let mut f = Faults {
        net: &net,
        relay: &relay,
        subnet: &mut subnet,
        seen: &seen,
    };
    f.wait(cfg.warmup).await?;
    let faults = scenario::inject(cfg.scenario, &mut f, &mut rng, cfg.faults).await;
    f.heal()?;
    let healed = Instant::now();
    let faults = faults?;

    // Recovery: every replica answers a call again. The clients stop meanwhile (their calls
    // under way end within the call timeout).
    let finishing = tokio::spawn(load.finish());
    // Probes go to every replica at once; each replica's first answer ends its wait.
    // (The attacker's answers are not waited for.)
    let mut answered_at: Vec<Option<f64>> = (0..n).map(|i| (!honest(&i)).then_some(0.0)).collect();
    let mut probe = (cfg.seed << 32) | 0xFFFF_0000;
    let recovery_secs = loop {
        let mut probes = tokio::task::JoinSet::new();
        for (i, _) in answered_at.iter().enumerate().filter(|(_, a)| a.is_none()) {
            probe += 1;
            let (agent, token) = (agents[i].clone(), probe);
            probes.spawn(async move { (i, workload::put(&agent, &canister, token).await) });
        }
        // Supervise while the probes wait (a replica may still be restarting).
        while !probes.is_empty() {
            while let Some(Ok((i, outcome))) = probes.try_join_next() {
                if matches!(outcome, Outcome::Answered { .. }) {
                    answered_at[i] = Some(healed.elapsed().as_secs_f64());
                }
            }
            f.wait(Duration::from_millis(100)).await?;
        }
        if answered_at.iter().all(Option::is_some) {
            break answered_at.iter().flatten().copied().reduce(f64::max);
        }
        if healed.elapsed() > Duration::from_secs(240) {
            break None;
        }
        f.wait(Duration::from_millis(500)).await?;
    };

    let calls = finishing.await.context("the clients' task failed")?;

    // Every replica's log, once they agree on its length (they execute the same blocks).
    let mut logs: Vec<Vec<u64>> = Vec::new();
    let settle_by = Instant::now() + Duration::from_secs(60);
    while Instant::now() < settle_by {
        logs.clear();
        for (_, agent) in agents.iter().enumerate().filter(|(i, _)| honest(i)) {
            // The agent retries a replica it cannot reach: bound the wait.
            let read = workload::read_log(agent, &canister);
            let log = tokio::time::timeout(Duration::from_secs(20), read).await;
            logs.push(log.ok().and_then(Result::ok).unwrap_or_default());
        }
        if logs.iter().all(|l| l.len() == logs[0].len()) {
            break;
        }
        f.wait(Duration::from_secs(1)).await?;
    }
    let mut height = 0;
    for url in &urls {
        height = height.max(finalized_height(url).await.unwrap_or(0));
    }
    let missed = auditor.missed.load(std::sync::atomic::Ordering::Relaxed);
    let mut seen = auditor.finish().await;
    seen.retain(|s| honest(&s.replica));
    let mut violations = check::audit_violations(&seen);
    let mut invalid_artifacts = 0;
    let mut peak_rss_mib = 0;
    for i in (0..n).filter(honest) {
        invalid_artifacts += invalid_artifacts_of(&urls[i]).await.unwrap_or(0);
        peak_rss_mib = peak_rss_mib.max(subnet.peak_rss_mib(i).unwrap_or(0));
    }
    let (lost, state) = check::state_violations(&calls, &logs);
    violations.extend(state);
    let count = |p: fn(&Outcome) -> bool| calls.iter().filter(|c| p(&c.outcome)).count() as u64;
    let byzantine_acts = attacker
        .map(|b| {
            byzantine::acts_in_log(
                &std::fs::read_to_string(&subnet.replicas[b].log).unwrap_or_default(),
            )
        })
        .unwrap_or(0);
    let report = RunReport {
        scenario: cfg.name(),
        seed: cfg.seed,
        fault_secs: cfg.faults.as_secs(),
        answered: count(|o| matches!(o, Outcome::Answered { .. })),
        rejected: count(|o| matches!(o, Outcome::Rejected(_))),
        unanswered: count(|o| matches!(o, Outcome::Unanswered(_))),
        lost,
        violations,
        recovery_secs,
        finalized_height: height,
        restarts: subnet.replicas.iter().map(|r| r.starts - 1).sum(),
        audit_records: seen.len() as u64,
        audit_missed: missed,
        faults,
        secs: began.elapsed().as_secs_f64(),
        byzantine_acts,
        invalid_artifacts,
        peak_rss_mib,
    };
    subnet.stop();
    drop(subnet);
    if report.passed() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("the run's files are kept in {}", dir.display());
    }
    Ok(report)
}

/// The campaign's table: per scenario, runs, calls answered, lost, violations, recovery.
pub fn summary(reports: &[RunReport]) -> String {
    let mut out = String::from(
        "| scenario | runs | fault s | answered | unanswered | lost | safety violations | recovery p50 s | recovery max s | not recovered |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut names: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let rs: Vec<&RunReport> = reports.iter().filter(|r| r.scenario == name).collect();
        let mut rec: Vec<f64> = rs.iter().filter_map(|r| r.recovery_secs).collect();
        rec.sort_by(f64::total_cmp);
        let p50 = rec.get(rec.len() / 2).copied().unwrap_or(f64::NAN);
        let max = rec.last().copied().unwrap_or(f64::NAN);
        let sum = |f: fn(&RunReport) -> u64| rs.iter().map(|r| f(r)).sum::<u64>();
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {p50:.1} | {max:.1} | {} |\n",
            rs.len(),
            sum(|r| r.fault_secs),
            sum(|r| r.answered),
            sum(|r| r.unanswered),
            sum(|r| r.lost),
            sum(|r| r.violations.len() as u64),
            rs.len() - rec.len(),
        ));
    }
    out
}
