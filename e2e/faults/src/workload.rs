//! The clients of a run: update calls to the log canister (`e2e/canisters/Log.mo`) through
//! ic-agent, each with a token of its own, round-robin over the replicas, and a record of what
//! became of each. An answered call carries the index its token got: the checker then looks for
//! the token at that index in every replica's state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use candid::{Decode, Encode, Nat, Principal};
use ic_agent::Agent;
use serde::Serialize;

/// Longest wait for one call's answer (the agent polls the replica it sent the call to).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Serialize)]
pub enum Outcome {
    /// Replied, with a certificate checked against the subnet's key: the token's index.
    Answered { index: u64 },
    /// The canister or the replica rejected it (a reject is an answer too, but no token was
    /// stored).
    Rejected(String),
    /// No answer within [`CALL_TIMEOUT`], or the replica could not be reached: the call may
    /// or may not have run, so it proves nothing either way.
    Unanswered(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Call {
    pub token: u64,
    pub replica: usize,
    /// Milliseconds since the run started, when the call was sent and when it ended.
    pub sent_ms: u64,
    pub done_ms: u64,
    pub outcome: Outcome,
}

/// An agent for replica `url` that trusts `root_key` (the subnet's, from genesis).
pub async fn agent(url: &str, root_key: &[u8]) -> anyhow::Result<Agent> {
    let agent = Agent::builder()
        .with_url(url)
        .with_ingress_expiry(Duration::from_secs(240))
        .build()
        .context("building the agent")?;
    agent.set_root_key(root_key.to_vec());
    Ok(agent)
}

/// One `put` through `agent`, within [`CALL_TIMEOUT`].
pub async fn put(agent: &Agent, canister: &Principal, token: u64) -> Outcome {
    let arg = match Encode!(&token) {
        Ok(a) => a,
        Err(e) => return Outcome::Rejected(e.to_string()),
    };
    let call = agent.update(canister, "put").with_arg(arg).call_and_wait();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => Outcome::Unanswered("timed out".into()),
        Ok(Ok(reply)) => match Decode!(&reply, Nat) {
            Ok(n) => match u64::try_from(n.0) {
                Ok(index) => Outcome::Answered { index },
                Err(_) => Outcome::Rejected("index beyond u64".into()),
            },
            Err(e) => Outcome::Rejected(format!("reply does not decode: {e}")),
        },
        Ok(Err(ic_agent::AgentError::CertifiedReject { reject, .. }))
        | Ok(Err(ic_agent::AgentError::UncertifiedReject { reject, .. })) => Outcome::Rejected(
            format!("{:?}: {}", reject.reject_code, reject.reject_message),
        ),
        Ok(Err(e)) => Outcome::Unanswered(e.to_string()),
    }
}

/// Clients calling until `stop` flips; returns every call made.
pub struct Workload {
    calls: Arc<Mutex<Vec<Call>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Workload {
    /// `clients` concurrent clients, client c starting at replica c mod n; tokens are `seed`'s
    /// high 32 bits and a counter, so no two calls of a campaign share one.
    pub fn start(
        agents: Vec<Arc<Agent>>,
        canister: Principal,
        clients: usize,
        seed: u64,
        start: Instant,
    ) -> Workload {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let next = Arc::new(std::sync::atomic::AtomicU64::new(seed << 32));
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let (agents, calls, rx, next) =
                (agents.clone(), calls.clone(), rx.clone(), next.clone());
            tasks.spawn(async move {
                let mut replica = c % agents.len();
                while !*rx.borrow() {
                    let token = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let sent_ms = start.elapsed().as_millis() as u64;
                    let outcome = put(&agents[replica], &canister, token).await;
                    let unanswered = matches!(outcome, Outcome::Unanswered(_));
                    if let Ok(mut all) = calls.lock() {
                        all.push(Call {
                            token,
                            replica,
                            sent_ms,
                            done_ms: start.elapsed().as_millis() as u64,
                            outcome,
                        });
                    }
                    replica = (replica + 1) % agents.len();
                    if unanswered {
                        // A replica that cannot be reached fails at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            });
        }
        Workload { calls, stop, tasks }
    }

    /// Stops sending and waits for the calls under way (each ends within [`CALL_TIMEOUT`]).
    pub async fn finish(mut self) -> Vec<Call> {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Replica `agent`'s log: its size, then the entries in pages (queries run on the replica's
/// certified state; the agent checks the replica's signature on each answer).
pub async fn read_log(agent: &Agent, canister: &Principal) -> anyhow::Result<Vec<u64>> {
    let size = agent
        .query(canister, "size")
        .with_arg(Encode!()?)
        .call()
        .await
        .context("size")?;
    let size: u64 = u64::try_from(Decode!(&size, Nat)?.0).context("size beyond u64")?;
    let mut out = Vec::with_capacity(size as usize);
    const PAGE: u64 = 4000;
    while (out.len() as u64) < size {
        let from = Nat::from(out.len() as u64);
        let reply = agent
            .query(canister, "range")
            .with_arg(Encode!(&from, &Nat::from(PAGE))?)
            .call()
            .await
            .context("range")?;
        let page = Decode!(&reply, Vec<u64>)?;
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    Ok(out)
}
