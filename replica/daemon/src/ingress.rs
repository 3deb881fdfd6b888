//! The local log of ingress: what this replica accepted and executed, and when, for the
//! local request-status endpoint and the load generator. Bounded; not certified.

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
        })
    }
}

impl IngressLog {
    pub fn accepted(&self, id: RequestId, now_ms: u64) {
        if let Ok(mut l) = self.inner.lock() {
            l.entry(id).accepted_at_ms = Some(now_ms);
        }
    }

    pub fn executed(&self, done: &[(RequestId, IngressStatus)], now_ms: u64) {
        let Ok(mut l) = self.inner.lock() else { return };
        for (id, status) in done {
            let e = l.entry(*id);
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

    pub fn get(&self, id: &RequestId) -> Option<LocalStatus> {
        self.inner.lock().ok()?.entries.get(id).cloned()
    }
}
