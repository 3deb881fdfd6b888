//! A canister called through a Subnet's IC HTTP Service by the IC's Rust agent, which checks
//! every certificate against the Subnet's `status.publicKey`; and a steady stream of update
//! calls in the background, counting those answered, to audit afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use candid::{Decode, Encode, Nat, Principal};
use ic_agent::Agent;

/// An agent for `url` that trusts only `root_key_hex`.
pub fn agent(url: &str, root_key_hex: &str) -> Agent {
    let agent = Agent::builder()
        .with_url(url)
        .with_ingress_expiry(Duration::from_secs(120))
        .build()
        .expect("an agent");
    agent.set_root_key(hex(root_key_hex));
    agent
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The counter's `inc` (an update call answered with a certificate).
pub async fn inc(agent: &Agent, canister: Principal) -> Result<u64, String> {
    let reply = agent
        .update(&canister, "inc")
        .with_arg(Encode!().map_err(|e| e.to_string())?)
        .call_and_wait()
        .await
        .map_err(|e| e.to_string())?;
    let n = Decode!(&reply, Nat).map_err(|e| e.to_string())?;
    u64::try_from(n.0).map_err(|e| e.to_string())
}

/// The counter's `get`, as a certified-by-replica query.
pub fn get(agent: &Agent, canister: Principal) -> Result<u64, String> {
    runtime().block_on(async {
        let reply = agent
            .query(&canister, "get")
            .with_arg(Encode!().map_err(|e| e.to_string())?)
            .call()
            .await
            .map_err(|e| e.to_string())?;
        let n = Decode!(&reply, Nat).map_err(|e| e.to_string())?;
        u64::try_from(n.0).map_err(|e| e.to_string())
    })
}

/// `get`, retried for a while: a replica that just restarted answers 503 until it has a
/// certified state, as agents expect.
pub fn get_retrying(agent: &Agent, canister: Principal) -> u64 {
    let mut last = String::new();
    for _ in 0..30 {
        match get(agent, canister) {
            Ok(n) => return n,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("the counter's get failed for 30 s: {last}")
}

pub fn inc_once(agent: &Agent, canister: Principal) -> Result<u64, String> {
    runtime().block_on(inc(agent, canister))
}

/// Update calls one after another until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: JoinHandle<Vec<String>>,
}

impl Load {
    pub fn start(agent: Agent, canister: Principal) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, a, f) = (stop.clone(), answered.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            runtime().block_on(async {
                while !s.load(Ordering::Relaxed) {
                    match inc(&agent, canister).await {
                        Ok(_) => {
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            f.fetch_add(1, Ordering::Relaxed);
                            if errors.len() < 20 {
                                errors.push(e);
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            });
            errors
        });
        Load {
            stop,
            answered,
            failed,
            thread,
        }
    }

    /// Stops; returns (answered, failed, the first errors).
    pub fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.thread.join().expect("the load thread");
        (
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Runs one future to completion.
pub fn runtime_block<T>(f: impl std::future::Future<Output = T>) -> T {
    runtime().block_on(f)
}
