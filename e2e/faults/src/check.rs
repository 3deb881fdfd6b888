//! The checker: what every replica signed, finalized and certified (polled from its admin
//! API's `Audit` all through the run, restarts included), and every answered call against
//! every replica's state afterwards.
//!
//! Safety violations, each named in the report:
//! - two blocks finalized at one height, or two state roots certified at one height (across
//!   all replicas and restarts);
//! - a replica that signed two different finalization, certification, beacon or catch-up
//!   shares at one height, two proposals at one height, two notarization shares for one rank,
//!   or a finalization share next to a notarization share of another block at that height;
//! - a certification share whose root is not the root the subnet certified at that height (a
//!   replica whose state diverged);
//! - an answered call whose token is not at its index in some replica's log (a lost call), and
//!   a token stored twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thicket_proto::admin::AuditRequest;
use thicket_proto::admin::admin_client::AdminClient;

use crate::workload::{Call, Outcome};

/// One record: (replica, boot, kind, height, hash, rank).
#[derive(Clone, Debug)]
pub struct Seen {
    pub replica: usize,
    pub boot: u64,
    pub kind: String,
    pub height: u64,
    pub hash: Vec<u8>,
    pub rank: u64,
}

/// Polls every replica's audit record once a second until dropped.
pub struct Auditor {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Records a poller missed (the replica dropped them before it was asked): should be 0.
    pub missed: Arc<std::sync::atomic::AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Auditor {
    pub fn start(urls: Vec<String>) -> Auditor {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let missed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for (replica, url) in urls.into_iter().enumerate() {
            let (seen, missed) = (seen.clone(), missed.clone());
            tasks.spawn(async move {
                let mut at: (u64, u64) = (0, 0); // (boot, last seq)
                loop {
                    // A replica paused, killed or restarting fails a round: the next one
                    // takes up where this one stopped.
                    let _ = poll(replica, &url, &mut at, &seen, &missed).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        Auditor {
            seen,
            missed,
            tasks,
        }
    }

    /// The records, after one more round of polls.
    pub async fn finish(mut self) -> Vec<Seen> {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn poll(
    replica: usize,
    url: &str,
    at: &mut (u64, u64),
    seen: &Mutex<Vec<Seen>>,
    missed: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let mut client = AdminClient::new(endpoint.connect().await?);
    loop {
        let reply = client
            .audit(AuditRequest {
                after: at.1,
                limit: 0,
            })
            .await?
            .into_inner();
        if reply.boot != at.0 {
            // A new process: its record starts over.
            *at = (reply.boot, 0);
            continue;
        }
        if reply.oldest > at.1 + 1 {
            missed.fetch_add(
                reply.oldest - at.1 - 1,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let Some(last) = reply.records.last().map(|r| r.seq) else {
            return Ok(());
        };
        if let Ok(mut all) = seen.lock() {
            all.extend(reply.records.iter().map(|r| Seen {
                replica,
                boot: reply.boot,
                kind: r.kind.clone(),
                height: r.height,
                hash: r.hash.clone(),
                rank: r.rank,
            }));
        }
        at.1 = last;
    }
}

/// Safety violations in the audit records.
pub fn audit_violations(seen: &[Seen]) -> Vec<String> {
    let mut out = Vec::new();
    let short = |h: &[u8]| hex::encode(&h[..h.len().min(6)]);
    // Subnet-wide: one finalized block and one certified root per height.
    for kind in ["finalized", "certified"] {
        let mut at: BTreeMap<u64, BTreeSet<&[u8]>> = BTreeMap::new();
        for s in seen.iter().filter(|s| s.kind == kind) {
            at.entry(s.height).or_default().insert(&s.hash);
        }
        for (h, hashes) in at.iter().filter(|(_, v)| v.len() > 1) {
            let list: Vec<String> = hashes.iter().map(|x| short(x)).collect();
            out.push(format!(
                "{kind} differs at height {h}: {}",
                list.join(" vs ")
            ));
        }
    }
    // Per replica, across its restarts: one share of each kind per height (per rank for
    // notarization shares).
    let mut signed: BTreeMap<(usize, &str, u64, u64), BTreeSet<&[u8]>> = BTreeMap::new();
    for s in seen {
        let rank = if s.kind == "notarization_share" {
            s.rank
        } else {
            0
        };
        if s.kind != "finalized" && s.kind != "certified" {
            signed
                .entry((s.replica, &s.kind, s.height, rank))
                .or_default()
                .insert(&s.hash);
        }
    }
    for ((r, kind, h, rank), hashes) in signed.iter().filter(|(_, v)| v.len() > 1) {
        out.push(format!(
            "replica {r} signed {} different {kind}s at height {h} (rank {rank})",
            hashes.len()
        ));
    }
    // A finalization share only for the one block it notarized at that height.
    for ((r, kind, h, _), hashes) in &signed {
        if *kind != "finalization_share" {
            continue;
        }
        for ((r2, k2, h2, _), notarized) in signed.range((*r, "notarization_share", *h, 0)..) {
            if (r2, *k2, h2) != (r, "notarization_share", h) {
                break;
            }
            if notarized.iter().any(|b| !hashes.contains(b)) {
                out.push(format!(
                    "replica {r} finalization-signed height {h} after notarizing another block"
                ));
            }
        }
    }
    // Certification shares against what the subnet certified.
    let certified: BTreeMap<u64, &[u8]> = seen
        .iter()
        .filter(|s| s.kind == "certified")
        .map(|s| (s.height, s.hash.as_slice()))
        .collect();
    for s in seen.iter().filter(|s| s.kind == "certification_share") {
        if let Some(root) = certified.get(&s.height)
            && *root != s.hash.as_slice()
        {
            out.push(format!(
                "replica {} certified root {} at height {}, the subnet {} (diverged state)",
                s.replica,
                short(&s.hash),
                s.height,
                short(root)
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Answered calls missing from some replica's log, and tokens stored twice.
pub fn state_violations(calls: &[Call], logs: &[Vec<u64>]) -> (u64, Vec<String>) {
    let mut lost = 0;
    let mut out = Vec::new();
    for c in calls {
        let Outcome::Answered { index } = c.outcome else {
            continue;
        };
        let missing: Vec<usize> = logs
            .iter()
            .enumerate()
            .filter(|(_, log)| log.get(index as usize) != Some(&c.token))
            .map(|(r, _)| r)
            .collect();
        if !missing.is_empty() {
            lost += 1;
            if out.len() < 20 {
                out.push(format!(
                    "answered call {:#x} (index {index}, via replica {}) is not at its index on replicas {missing:?}",
                    c.token, c.replica
                ));
            }
        }
    }
    for (r, log) in logs.iter().enumerate() {
        let mut tokens = BTreeSet::new();
        let twice = log.iter().filter(|t| !tokens.insert(**t)).count();
        if twice > 0 {
            out.push(format!("replica {r} stored {twice} tokens twice"));
        }
        if log.len() != logs[0].len() || log != &logs[0] {
            out.push(format!(
                "replica {r}'s log ({} entries) differs from replica 0's ({})",
                log.len(),
                logs[0].len()
            ));
        }
    }
    (lost, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(replica: usize, kind: &str, height: u64, hash: u8) -> Seen {
        Seen {
            replica,
            boot: 1,
            kind: kind.into(),
            height,
            hash: vec![hash; 32],
            rank: 0,
        }
    }

    #[test]
    fn the_checker_finds_each_kind_of_violation() {
        let honest = vec![
            seen(0, "finalized", 5, 1),
            seen(1, "finalized", 5, 1),
            seen(0, "notarization_share", 5, 1),
            seen(0, "finalization_share", 5, 1),
            seen(0, "certified", 5, 9),
            seen(0, "certification_share", 5, 9),
            seen(1, "certification_share", 5, 9),
        ];
        assert!(audit_violations(&honest).is_empty());
        let mut bad = honest.clone();
        bad.push(seen(2, "finalized", 5, 2));
        bad.push(seen(1, "finalization_share", 6, 3));
        bad.push(seen(1, "finalization_share", 6, 4));
        bad.push(seen(0, "notarization_share", 5, 7));
        bad.push(seen(2, "certification_share", 5, 8));
        let v = audit_violations(&bad);
        assert!(
            v.iter()
                .any(|m| m.starts_with("finalized differs at height 5")),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|m| m.contains("replica 1 signed 2 different finalization_shares"))
        );
        assert!(
            v.iter()
                .any(|m| m.contains("after notarizing another block"))
        );
        assert!(v.iter().any(|m| m.contains("diverged state")));

        let call = |token, index| Call {
            token,
            replica: 0,
            sent_ms: 0,
            done_ms: 0,
            outcome: Outcome::Answered { index },
        };
        let calls = vec![call(10, 0), call(11, 1)];
        assert_eq!(state_violations(&calls, &[vec![10, 11], vec![10, 11]]).0, 0);
        let (lost, v) = state_violations(&calls, &[vec![10, 11], vec![10, 12, 10]]);
        assert_eq!(lost, 1);
        assert!(v.iter().any(|m| m.contains("twice")));
        assert!(v.iter().any(|m| m.contains("differs")));
    }
}
