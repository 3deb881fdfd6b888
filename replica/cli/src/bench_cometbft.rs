//! `thicket bench --cometbft URL,...`: the offered-load phases of `thicket bench`, against a
//! running CometBFT network (its `kvstore` application) for a side-by-side comparison. The
//! same open-loop shape: every 10 ms the transactions due at the offered rate are posted,
//! round-robin over the nodes, each one as large as the Motoko counter's `inc` call envelope
//! (`broadcast_tx_sync`: acknowledged once the mempool took it). A poller reads every new
//! block from the first node; a transaction's latency runs from its post to the block that
//! holds it being seen (at most 20 ms late), and one acknowledged but in no block when the
//! benchmark stops collecting counts as acknowledged and never committed.
//!
//! A benchmark, not a test: it prints the Markdown table `thicket bench` prints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use thicket_replica::clock::now_ms;
use thicket_replica::http::envelope::unsigned_envelope;
use thicket_types::ingress::{ANONYMOUS, IngressMessage};

use crate::bench::{BenchArgs, Load, ROW_HEADER, Row, cpu_seconds, offer};

/// Runs the phases against `args.cometbft` and prints their rows.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()?;
        let size = envelope_size();
        println!(
            "CometBFT at {} ({} nodes), transactions of {size} bytes",
            args.cometbft.join(", "),
            args.cometbft.len()
        );
        println!();
        println!("{ROW_HEADER}");
        for (k, &rate) in [0].iter().chain(args.rates()).enumerate() {
            phase(&http, &args, size, rate, k as u64).await?.print();
        }
        anyhow::Ok(())
    })
}

/// The size of the counter's `inc` call as `thicket bench` posts it.
fn envelope_size() -> usize {
    let msg = IngressMessage {
        sender: ANONYMOUS.to_vec(),
        canister_id: vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        method_name: "inc".into(),
        arg: b"DIDL\x00\x00".to_vec(),
        ingress_expiry: (now_ms() + 240_000) * 1_000_000,
        nonce: Some(0u64.to_be_bytes().to_vec()),
    };
    unsigned_envelope(&msg).len()
}

/// A unique `kvstore` transaction (`key=value`) of `size` bytes.
fn transaction(phase: u64, n: u64, size: usize) -> Vec<u8> {
    let mut tx = format!("bench-{}-{phase}-{n}=", std::process::id()).into_bytes();
    tx.resize(size.max(tx.len() + 1), b'x');
    tx
}

async fn json(http: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    let r = http.get(url).send().await.ok()?;
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

async fn latest_height(http: &reqwest::Client, rpc: &str) -> Option<u64> {
    let s = json(http, format!("{rpc}/status")).await?;
    s["result"]["sync_info"]["latest_block_height"]
        .as_str()?
        .parse()
        .ok()
}

/// Commit times by transaction (base64, as blocks list them), and the heights seen.
#[derive(Default)]
struct Seen {
    committed: HashMap<String, u64>,
    height: u64,
}

/// Reads every block after `from` from `rpc` until `stop` says so.
async fn poll_blocks(
    http: reqwest::Client,
    rpc: String,
    from: u64,
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut next = from + 1;
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(latest) = latest_height(&http, &rpc).await else {
            continue;
        };
        while next <= latest {
            let Some(b) = json(&http, format!("{rpc}/block?height={next}")).await else {
                break;
            };
            let at = now_ms();
            let txs = b["result"]["block"]["data"]["txs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for tx in txs.iter().filter_map(|t| t.as_str()) {
                seen.committed.entry(tx.to_string()).or_insert(at);
            }
            seen.height = next;
            next += 1;
        }
    }
}

async fn phase(
    http: &reqwest::Client,
    args: &BenchArgs,
    size: usize,
    rate: u64,
    phase: u64,
) -> anyhow::Result<Row> {
    let rpcs = &args.cometbft;
    let duration = args.duration();
    let h0 = latest_height(http, &rpcs[0])
        .await
        .ok_or_else(|| anyhow::anyhow!("no status from {}", rpcs[0]))?;
    let seen = Arc::new(Mutex::new(Seen {
        height: h0,
        ..Seen::default()
    }));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(poll_blocks(
        http.clone(),
        rpcs[0].clone(),
        h0,
        seen.clone(),
        stop_rx,
    ));
    let server_cpu = || {
        args.cometbft_pids
            .iter()
            .map(|&p| cpu_seconds(p))
            .sum::<f64>()
    };
    let (server_cpu0, client_cpu0) = (server_cpu(), cpu_seconds(std::process::id()));
    let start_ms = now_ms();
    let (posts, elapsed) = offer(rate, duration, |sent| {
        let tx = B64.encode(transaction(phase, sent, size));
        let rpc = &rpcs[(sent % rpcs.len() as u64) as usize];
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": sent,
            "method": "broadcast_tx_sync",
            "params": { "tx": tx },
        });
        let req = http
            .post(rpc.as_str())
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let at = now_ms();
            let reply: Option<serde_json::Value> = async {
                let r = req.send().await.ok()?;
                serde_json::from_slice(&r.bytes().await.ok()?).ok()
            }
            .await;
            let ok = reply.is_some_and(|v| v["result"]["code"].as_u64() == Some(0));
            (ok, tx, at)
        }
    })
    .await;
    let end_ms = now_ms();
    let server_cores = (server_cpu() - server_cpu0) / elapsed;
    let client_cores = (cpu_seconds(std::process::id()) - client_cpu0) / elapsed;
    let h1 = seen.lock().unwrap_or_else(|e| e.into_inner()).height;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (ok, tx, at) in posts.join_all().await {
        if ok {
            accepted.push((tx, at));
        } else {
            refused += 1;
        }
    }
    // Wait for the acknowledged transactions to be committed, 60 s at most.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let left = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            accepted
                .iter()
                .filter(|(tx, _)| !seen.committed.contains_key(tx))
                .count()
        };
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_tx.send(true);
    let _ = poller.await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let done: Vec<(u64, u64)> = accepted
        .iter()
        .filter_map(|(tx, at)| Some((*at, *seen.committed.get(tx)?)))
        .collect();
    Ok(Row::of(
        Load {
            replicas: rpcs.len(),
            offered: rate,
            accepted: accepted.len(),
            refused,
            window_ms: (start_ms, end_ms),
            blocks_per_s: h1.saturating_sub(h0) as f64 / elapsed,
            replica_cores: server_cores,
            client_cores,
        },
        &done,
    ))
}
