//! The local log of ingress: what this replica accepted and executed, and when, for the
//! local request-status endpoint and the load generator. Bounded; not certified.
//!
//! The endpoint shows no more than the certified `read_state` would to someone who proves no
//! identity: the status of requests sent by the anonymous principal. Others' requests are for
//! their senders (a `read_state` they sign), and look here as unknown requests do.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use thicket_execution::IngressStatus;
use thicket_types::ingress::RequestId;

/// What this replica knows about a request: when it accepted it (if it did), and whether and
/// at which height it was executed, with the local time of execution. Replies are not shown
/// here: the certified `read_state` gives them to the request's sender only.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LocalStatus {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executed_at_ms: Option<u64>,
    /// Whether the anonymous principal sent it (only those are shown).
    #[serde(skip)]
    pub anonymous: bool,
}

/// Entries kept: a bounded window, oldest first out.
pub const MAX_LOGGED: usize = 500_000;

#[derive(Default)]
pub struct IngressLog {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    entries: BTreeMap<RequestId, LocalStatus>,
    order: VecDeque<RequestId>,
}

impl LogInner {
    fn entry(&mut self, id: RequestId) -> &mut LocalStatus {
        if !self.entries.contains_key(&id) {
            self.order.push_back(id);
            while self.order.len() > MAX_LOGGED {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
        self.entries.entry(id).or_insert(LocalStatus {
            status: "received",
            height: None,
            accepted_at_ms: None,
            executed_at_ms: None,
            anonymous: false,
        })
    }
}

impl IngressLog {
    /// This replica accepted request `id`, from the anonymous principal or not.
    pub fn accepted(&self, id: RequestId, now_ms: u64, anonymous: bool) {
        if let Ok(mut l) = self.inner.lock() {
            let e = l.entry(id);
            e.accepted_at_ms = Some(now_ms);
            e.anonymous = anonymous;
        }
    }

    /// Requests executed at `now_ms`; `anonymous` tells which the anonymous principal sent
    /// (the state's history knows every request's sender, whichever replica accepted it).
    pub fn executed(
        &self,
        done: &[(RequestId, IngressStatus)],
        anonymous: impl Fn(&RequestId) -> bool,
        now_ms: u64,
    ) {
        let Ok(mut l) = self.inner.lock() else { return };
        for (id, status) in done {
            let e = l.entry(*id);
            e.anonymous |= anonymous(id);
            e.height = Some(status.height().0);
            if !matches!(status, IngressStatus::Processing { .. }) {
                e.executed_at_ms = Some(now_ms);
            }
            e.status = match status {
                IngressStatus::Processing { .. } => "processing",
                IngressStatus::Replied { .. } => "replied",
                IngressStatus::Rejected { .. } => "rejected",
            };
        }
    }

    /// What anyone may know of request `id`: its status if the anonymous principal sent it;
    /// otherwise nothing, as for a request never seen.
    pub fn get(&self, id: &RequestId) -> Option<LocalStatus> {
        let l = self.inner.lock().ok()?;
        l.entries.get(id).filter(|e| e.anonymous).cloned()
    }
}
