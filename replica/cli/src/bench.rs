//! `thicket bench`: deploys the Motoko counter (`e2e/canisters/Counter.mo`) on fresh local
//! subnets and measures it through the IC HTTP interface:
//! - sync update calls, one after another, through ic-agent (`call_and_wait`: v4 call,
//!   answered with a certificate): client-side latency p50/p99;
//! - queries through ic-agent (node signatures checked) from concurrent clients: throughput
//!   and latency p50/p99;
//! - `inc` calls posted at increasing offered rates (v2 async calls, round-robin over the
//!   replicas): what was accepted and executed, latency (accepted over HTTP → replied in a
//!   finalized block, on the accepting replica's clock) and the finalization rate;
//!   throughput over the offering window (steady state) apart from the drain after it, and
//!   the CPU the replicas and this process (the load generator and agents) used in it.
//!
//! A benchmark, not a test: it prints Markdown tables and asserts nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candid::Encode;
use clap::Args;
use thicket_replica::clock::now_ms;
use thicket_replica::http::envelope::unsigned_envelope;
use thicket_types::ingress::{ANONYMOUS, IngressMessage};

use crate::up::{SubnetJson, signal};

#[derive(Args)]
pub struct BenchArgs {
    /// Subnet sizes to measure, one fresh subnet each.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    replicas: Vec<usize>,
    /// Sequential sync calls for the latency figure.
    #[arg(long, default_value_t = 50)]
    sync_calls: usize,
    /// Concurrent query clients, and seconds of queries.
    #[arg(long, default_value_t = 16)]
    query_clients: usize,
    #[arg(long, default_value_t = 5)]
    query_seconds: u64,
    /// Offered ingress rates (messages per second), in order.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,2000")]
    rates: Vec<u64>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 7600)]
    base_port: u16,
    /// Consensus parameters of the subnets measured (as `thicket up` takes them).
    #[command(flatten)]
    timing: crate::up::Timing,
    /// Measure a running CometBFT network instead, through these RPC endpoints: the same
    /// offered rates, duration and round-robin, with transactions the size of the counter's
    /// call (`e2e/cometbft/compare` starts a network and runs both).
    #[arg(long, value_delimiter = ',')]
    pub(crate) cometbft: Vec<String>,
    /// The CometBFT node processes (for the cores they use).
    #[arg(long, value_delimiter = ',')]
    pub(crate) cometbft_pids: Vec<u32>,
}

impl BenchArgs {
    pub(crate) fn rates(&self) -> &[u64] {
        &self.rates
    }

    pub(crate) fn duration(&self) -> u64 {
        self.duration
    }
}

pub(crate) struct Row {
    pub(crate) replicas: usize,
    pub(crate) offered: u64,
    pub(crate) accepted: usize,
    pub(crate) refused: usize,
    pub(crate) executed: usize,
    pub(crate) throughput: f64,
    /// Replied within the offering window, per second of it.
    pub(crate) steady: f64,
    /// From the end of the offering window to the last reply.
    pub(crate) drain_s: f64,
    pub(crate) p50_ms: u64,
    pub(crate) p99_ms: u64,
    pub(crate) blocks_per_s: f64,
    /// Cores used during the offering window: all replicas, and this process.
    pub(crate) replica_cores: f64,
    pub(crate) client_cores: f64,
}

pub(crate) const ROW_HEADER: &str = "| replicas | offered msg/s | accepted | refused | replied | steady msg/s | drain s | throughput msg/s | p50 ms | p99 ms | blocks/s | replica cores | client cores |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// What a phase offered and measured, besides the replies' times.
pub(crate) struct Load {
    pub(crate) replicas: usize,
    pub(crate) offered: u64,
    pub(crate) accepted: usize,
    pub(crate) refused: usize,
    /// The offering window (wall clock, ms).
    pub(crate) window_ms: (u64, u64),
    pub(crate) blocks_per_s: f64,
    pub(crate) replica_cores: f64,
    pub(crate) client_cores: f64,
}

impl Row {
    /// The row of a phase whose replied calls were accepted and answered at `done` (ms).
    pub(crate) fn of(load: Load, done: &[(u64, u64)]) -> Row {
        let (start_ms, end_ms) = load.window_ms;
        let mut latencies: Vec<u64> = done.iter().map(|(a, e)| e.saturating_sub(*a)).collect();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let span_ms = match (
            done.iter().map(|d| d.0).min(),
            done.iter().map(|d| d.1).max(),
        ) {
            (Some(a), Some(e)) if e > a => (e - a) as f64,
            _ => 0.0,
        };
        Row {
            replicas: load.replicas,
            offered: load.offered,
            accepted: load.accepted,
            refused: load.refused,
            executed: done.len(),
            throughput: if span_ms > 0.0 {
                done.len() as f64 * 1000.0 / span_ms
            } else {
                0.0
            },
            steady: done.iter().filter(|d| d.1 <= end_ms).count() as f64 * 1000.0
                / end_ms.saturating_sub(start_ms).max(1) as f64,
            drain_s: done
                .iter()
                .map(|d| d.1)
                .max()
                .map_or(0.0, |last| last.saturating_sub(end_ms) as f64 / 1000.0),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            blocks_per_s: load.blocks_per_s,
            replica_cores: load.replica_cores,
            client_cores: load.client_cores,
        }
    }

    pub(crate) fn print(&self) {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} |",
            self.replicas,
            self.offered,
            self.accepted,
            self.refused,
            self.executed,
            self.steady,
            self.drain_s,
            self.throughput,
            self.p50_ms,
            self.p99_ms,
            self.blocks_per_s,
            self.replica_cores,
            self.client_cores,
        );
    }
}

/// CPU time (user + system) a process has used, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// The replica processes `thicket up` (pid `up`) started.
fn replica_pids(up: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{up}/task/{up}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("runtime")?;
    let exe = std::env::current_exe().context("locating the thicket binary")?;
    let wasm = thicket_canister::motoko::compile_sample("Counter").map_err(anyhow::Error::msg)?;
    for &n in &args.replicas {
        let dir = std::env::temp_dir().join(format!("thicket-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = &args.timing;
        let up = Command::new(&exe)
            .args(["up", "--replicas", &n.to_string(), "--data-dir"])
            .arg(&dir)
            .args(["--base-port", &args.base_port.to_string()])
            .args(["--dkg-interval", &t.dkg_interval.to_string()])
            .args(["--notary-delay-ms", &t.notary_delay_ms.to_string()])
            .args(["--unit-delay-ms", &t.unit_delay_ms.to_string()])
            .args([
                "--max-ingress-per-block",
                &t.max_ingress_per_block.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `thicket up`")?;
        let up_pid = up.id();
        let subnet = Subnet { up, dir };
        let result = rt.block_on(measure(&subnet.dir, up_pid, n, &args, wasm.clone()));
        drop(subnet);
        result?;
    }
    Ok(())
}

/// A local subnet started by the benchmark: stopped and removed when dropped, also when the
/// benchmark fails or panics (say, because its output pipe was closed).
struct Subnet {
    up: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Subnet {
    fn drop(&mut self) {
        signal(self.up.id(), "TERM");
        let _ = self.up.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

async fn measure(
    dir: &Path,
    up: u32,
    n: usize,
    args: &BenchArgs,
    wasm: Vec<u8>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let info = wait_ready(dir, &http).await?;
    let pids = replica_pids(up);
    let urls: Vec<String> = info.active().map(|r| r.http_url.clone()).collect();
    let agent = crate::canister_cmd::agent(&urls[0]).await?;
    let counter = crate::canister_cmd::deploy(&agent, wasm, None).await?;
    let no_args = Encode!()?;

    // Sync update calls, one at a time.
    let mut sync_ms = Vec::new();
    for _ in 0..args.sync_calls {
        let t = Instant::now();
        agent
            .update(&counter, "inc")
            .with_arg(no_args.clone())
            .call_and_wait()
            .await
            .context("inc")?;
        sync_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    sync_ms.sort_by(f64::total_cmp);

    // Queries from concurrent clients, each with its own agent, round-robin over replicas.
    let replica_cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let (replica_cpu0, client_cpu0) = (replica_cpu(), cpu_seconds(std::process::id()));
    let t_queries = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..args.query_clients {
        let url = urls[c % urls.len()].clone();
        let (secs, arg) = (args.query_seconds, no_args.clone());
        clients.spawn(async move {
            let agent = crate::canister_cmd::agent(&url).await?;
            let mut times = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(secs) {
                let t = Instant::now();
                agent
                    .query(&counter, "get")
                    .with_arg(arg.clone())
                    .call()
                    .await
                    .context("get")?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(times)
        });
    }
    let mut query_ms = Vec::new();
    for times in clients.join_all().await {
        query_ms.extend(times?);
    }
    let query_secs = t_queries.elapsed().as_secs_f64();
    let query_replica_cores = (replica_cpu() - replica_cpu0) / query_secs;
    let query_client_cores = (cpu_seconds(std::process::id()) - client_cpu0) / query_secs;
    query_ms.sort_by(f64::total_cmp);
    println!(
        "| replicas | sync inc calls | p50 ms | p99 ms | query clients | queries/s | p50 ms | p99 ms | replica cores | client cores |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {} | {:.0} | {:.0} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} |",
        sync_ms.len(),
        percentile(&sync_ms, 0.5),
        percentile(&sync_ms, 0.99),
        args.query_clients,
        query_ms.len() as f64 / args.query_seconds as f64,
        percentile(&query_ms, 0.5),
        percentile(&query_ms, 0.99),
        query_replica_cores,
        query_client_cores,
    );
    println!();
    println!("{ROW_HEADER}");
    for (k, &rate) in [0].iter().chain(&args.rates).enumerate() {
        let row = phase(
            &http,
            &urls,
            &pids,
            &counter,
            n,
            rate,
            args.duration,
            k as u64,
        )
        .await?;
        row.print();
    }
    Ok(())
}

async fn wait_ready(dir: &Path, http: &reqwest::Client) -> anyhow::Result<SubnetJson> {
    let start = Instant::now();
    loop {
        if start.elapsed() > Duration::from_secs(180) {
            bail!("the subnet in {} did not become ready", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(info) = SubnetJson::read(dir) else {
            continue;
        };
        let mut ready = true;
        for r in info.active() {
            let ok = http
                .get(format!("{}/readyz", r.http_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ready &= ok;
        }
        if ready {
            return Ok(info);
        }
    }
}

async fn finalized(http: &reqwest::Client, url: &str) -> u64 {
    let Ok(r) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("thicket_consensus_finalized_height ")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The open-loop load every system measured gets: every 10 ms, the calls due at `rate` per
/// second since the start are started (call `n` as `post(n)`), for `duration` seconds.
/// Returns the calls (still running) and the window's length in seconds.
pub(crate) async fn offer<T, F, Fut>(
    rate: u64,
    duration: u64,
    mut post: F,
) -> (tokio::task::JoinSet<T>, f64)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    let mut posts = tokio::task::JoinSet::new();
    while t0.elapsed() < Duration::from_secs(duration) {
        tick.tick().await;
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(rate * duration);
        while sent < due {
            posts.spawn(post(sent));
            sent += 1;
        }
    }
    (posts, t0.elapsed().as_secs_f64())
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    http: &reqwest::Client,
    urls: &[String],
    pids: &[u32],
    counter: &candid::Principal,
    n: usize,
    rate: u64,
    duration: u64,
    phase: u64,
) -> anyhow::Result<Row> {
    let canister = counter.to_text();
    let h0 = finalized(http, &urls[0]).await;
    let replica_cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let (replica_cpu0, client_cpu0) = (replica_cpu(), cpu_seconds(std::process::id()));
    let start_ms = now_ms();
    let (posts, elapsed) = offer(rate, duration, |sent| {
        let nonce = (phase << 48) | sent;
        let msg = IngressMessage {
            sender: ANONYMOUS.to_vec(),
            canister_id: counter.as_slice().to_vec(),
            method_name: "inc".into(),
            arg: b"DIDL\x00\x00".to_vec(),
            ingress_expiry: (now_ms() + 240_000) * 1_000_000,
            nonce: Some(nonce.to_be_bytes().to_vec()),
        };
        let url = urls[(sent % urls.len() as u64) as usize].clone();
        let req = http
            .post(format!("{url}/api/v2/canister/{canister}/call"))
            .header("content-type", "application/cbor")
            .body(unsigned_envelope(&msg));
        let id = msg.request_id().to_string();
        async move {
            let ok = req
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::ACCEPTED);
            (ok, url, id)
        }
    })
    .await;
    let end_ms = now_ms();
    let replica_cores = (replica_cpu() - replica_cpu0) / elapsed;
    let client_cores = (cpu_seconds(std::process::id()) - client_cpu0) / elapsed;
    let h1 = finalized(http, &urls[0]).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (ok, url, id) in posts.join_all().await {
        if ok {
            accepted.push((url, id));
        } else {
            refused += 1;
        }
    }

    // Collect each accepted message's status from the replica that accepted it.
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done: Vec<(u64, u64)> = Vec::new();
    let mut pending = accepted.clone();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut checks = tokio::task::JoinSet::new();
        for (url, id) in pending.drain(..) {
            let (http, limit) = (http.clone(), limit.clone());
            checks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let s: Option<serde_json::Value> = async {
                    let r = http
                        .get(format!("{url}/api/thicket/v1/request_status/{id}"))
                        .send()
                        .await
                        .ok()?;
                    serde_json::from_slice(&r.bytes().await.ok()?).ok()
                }
                .await;
                (url, id, s)
            });
        }
        for (url, id, s) in checks.join_all().await {
            let times = s
                .as_ref()
                .and_then(|s| Some((s["accepted_at_ms"].as_u64()?, s["executed_at_ms"].as_u64()?)));
            match times {
                Some(t) => done.push(t),
                None => pending.push((url, id)),
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(Row::of(
        Load {
            replicas: n,
            offered: rate,
            accepted: accepted.len(),
            refused,
            window_ms: (start_ms, end_ms),
            blocks_per_s: h1.saturating_sub(h0) as f64 / elapsed,
            replica_cores,
            client_cores,
        },
        &done,
    ))
}
