//! The state of a subnet: its canisters, the ingress history, the queue of messages between
//! canisters, and the replica-local bookkeeping of the batch being executed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use candid::Principal;
use serde::{Deserialize, Serialize};
use thicket_execution::IngressStatus;
use thicket_types::Height;
use thicket_types::ingress::RequestId;

use std::sync::Arc;

use crate::canister::Canister;
use crate::ledger::{KnownSubnet, SystemState, system_in, system_out};
use crate::messages::Message;
use crate::query::QueryView;

/// What the state remembers of an executed request until it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub expiry: u64,
    /// Who sent it: only they may read its status.
    #[serde(with = "serde_bytes")]
    pub sender: Vec<u8>,
    pub status: IngressStatus,
}

/// The state of the subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetState {
    pub(crate) height: Height,
    pub(crate) time_ns: u64,
    pub(crate) canisters: BTreeMap<Principal, Canister>,
    /// The next canister index to try when creating one.
    pub(crate) next_index: u64,
    /// Request id → (expiry, status); pruned once the batch time passes the expiry, after
    /// which no copy of the message can be executed anyway. A checkpoint carries it apart
    /// (see `crate::checkpoint`).
    #[serde(serialize_with = "history_out", deserialize_with = "history_in")]
    pub(crate) history: BTreeMap<RequestId, HistoryEntry>,
    /// Requests and responses between canisters, in order.
    pub(crate) queue: VecDeque<Message>,
    /// What the queue's messages weigh ([`Message::bytes`]).
    pub(crate) queue_bytes: u64,
    /// The next call context or callback id (unique in the subnet, never reused).
    pub(crate) next_call_id: u64,
    /// Instructions spent in the batch being executed.
    #[serde(skip)]
    pub(crate) batch_instructions: u64,
    /// Ingress answered during the batch being executed (empty between batches).
    #[serde(skip)]
    pub(crate) finished: Vec<(RequestId, IngressStatus)>,
    /// The history by expiry (replica-local, rebuilt from the history when missing).
    #[serde(skip)]
    pub(crate) expiring: ExpiryIndex,
    /// The system canisters' state (since checkpoint format 4).
    #[serde(serialize_with = "system_out", deserialize_with = "system_in")]
    pub(crate) system: Arc<SystemState>,
    /// The subnet's id, as the replica knows it from the registry (replica-local).
    #[serde(skip)]
    pub(crate) subnet_id: KnownSubnet,
}

type History = BTreeMap<RequestId, HistoryEntry>;

thread_local! {
    /// Set while a checkpoint encodes the state: the history is left out (as an empty map),
    /// the checkpoint carries it apart.
    static HISTORY_APART: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The history a checkpoint carried apart, for the state being decoded on this thread.
    static HISTORY_BACK: std::cell::RefCell<Option<History>> = const { std::cell::RefCell::new(None) };
}

/// Puts a thread-local back as it was when dropped, also if encoding or decoding panics.
struct Reset(fn());

impl Drop for Reset {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Runs `encode` with the history left out of the state's encoding.
pub(crate) fn without_history<R>(encode: impl FnOnce() -> R) -> R {
    HISTORY_APART.with(|a| a.set(true));
    let _reset = Reset(|| HISTORY_APART.with(|a| a.set(false)));
    encode()
}

/// Runs `decode` with `history` given to the state it decodes (whose encoding has none).
pub(crate) fn with_history<R>(history: History, decode: impl FnOnce() -> R) -> R {
    HISTORY_BACK.with(|b| *b.borrow_mut() = Some(history));
    let _reset = Reset(|| HISTORY_BACK.with(|b| *b.borrow_mut() = None));
    decode()
}

fn history_out<S: serde::Serializer>(h: &History, s: S) -> Result<S::Ok, S::Error> {
    if HISTORY_APART.with(|a| a.get()) {
        return History::new().serialize(s);
    }
    h.serialize(s)
}

fn history_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<History, D::Error> {
    let inline = History::deserialize(d)?;
    match HISTORY_BACK.with(|b| b.borrow_mut().take()) {
        Some(_) if !inline.is_empty() => Err(serde::de::Error::custom(
            "a history both in the state and carried apart",
        )),
        Some(apart) => Ok(apart),
        None => Ok(inline),
    }
}

/// Request ids by expiry, so a height prunes the expired part of the history without a pass
/// over all of it. Not part of the state: equal whatever it holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExpiryIndex(pub(crate) BTreeSet<(u64, RequestId)>);

impl PartialEq for ExpiryIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ExpiryIndex {}

impl SubnetState {
    pub fn time_ns(&self) -> u64 {
        self.time_ns
    }

    pub fn canister(&self, id: &Principal) -> Option<&Canister> {
        self.canisters.get(id)
    }

    pub fn canisters(&self) -> &BTreeMap<Principal, Canister> {
        &self.canisters
    }

    pub fn history(&self) -> &BTreeMap<RequestId, HistoryEntry> {
        &self.history
    }

    /// Remembers a request in the history (and by its expiry).
    pub(crate) fn remember(&mut self, id: RequestId, entry: HistoryEntry) {
        self.expiring.0.insert((entry.expiry, id));
        self.history.insert(id, entry);
    }

    /// Forgets the requests that expired before `now`, except those still being answered
    /// (looked at again at each height until answered): O(expired · log n), not a pass over
    /// the history.
    pub(crate) fn prune_history(&mut self, now: u64) {
        if self.expiring.0.len() != self.history.len() {
            // A decoded state: the index is rebuilt once.
            self.expiring.0 = self.history.iter().map(|(id, e)| (e.expiry, *id)).collect();
        }
        let mut held = Vec::new();
        while let Some(&(expiry, id)) = self.expiring.0.first() {
            if expiry >= now {
                break;
            }
            self.expiring.0.pop_first();
            match self.history.get(&id) {
                Some(e) if matches!(e.status, IngressStatus::Processing { .. }) => {
                    held.push((expiry, id))
                }
                Some(_) => {
                    self.history.remove(&id);
                }
                None => {}
            }
        }
        self.expiring.0.extend(held);
    }

    /// Instructions spent executing the last batch (replica-local bookkeeping, not state).
    pub fn batch_instructions(&self) -> u64 {
        self.batch_instructions
    }

    pub fn query_view(&self) -> QueryView {
        QueryView {
            height: self.height,
            time_ns: self.time_ns,
            canisters: self.canisters.clone(),
            system: self.system.clone(),
            subnet_id: self.subnet_id.0,
        }
    }
}
