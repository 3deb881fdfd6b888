//! Canister snapshots as the state keeps them: a canister's module, heap, stable memory,
//! globals, certified data, timer and chunk store at one moment, taken by
//! `take_canister_snapshot` or uploaded piece by piece (`upload_canister_snapshot_*`), and
//! loaded back by `load_canister_snapshot` (the management canister's `snapshots.rs`).
//!
//! Module, memories and chunks are page maps: a checkpoint writes a snapshot's pages once
//! (the store keeps chunks by hash) and a snapshot shares the pages of the heap it was taken
//! from.

use candid::Principal;
use serde::{Deserialize, Serialize};
use thicket_canister::{GlobalValue, PageMap};

/// Snapshots a canister keeps at most (the IC's limit).
pub const MAX_SNAPSHOTS: usize = 10;

/// Bytes one `read_canister_snapshot_data` answers at most (the IC's slice limit).
pub const MAX_SLICE_BYTES: u64 = 2_000_000;

/// How a snapshot came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// `take_canister_snapshot`: complete when taken, never written to.
    Taken,
    /// `upload_canister_snapshot_metadata`, then its data piece by piece.
    Uploaded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_ns: u64,
    pub source: Source,
    /// The canister's version when it was taken (or uploaded).
    pub canister_version: u64,
    /// The Wasm module.
    pub wasm: PageMap,
    pub heap: PageMap,
    pub stable: PageMap,
    /// Values of the module's exported mutable globals, in the order of its exports (`None`
    /// where the canister had none kept).
    pub globals: Vec<Option<GlobalValue>>,
    #[serde(with = "serde_bytes")]
    pub certified_data: Vec<u8>,
    /// When the global timer was due (0: inactive); `None`: not given with an upload, left as
    /// it is by a load.
    pub global_timer: Option<u64>,
    /// The Wasm chunk store, by SHA-256.
    pub chunks: std::collections::BTreeMap<serde_bytes::ByteBuf, PageMap>,
}

impl Snapshot {
    /// Bytes it takes: module, memories, globals, certified data and chunks.
    pub fn size(&self) -> u64 {
        let chunks: usize = self.chunks.values().map(PageMap::len).sum();
        (self.wasm.len()
            + self.heap.len()
            + self.stable.len()
            + 8 * self.globals.len()
            + self.certified_data.len()
            + chunks) as u64
    }
}

/// A snapshot's id as the interface gives it: the canister's local number of it (8 bytes,
/// big-endian) and the id of the canister it belongs to.
pub fn snapshot_id(canister: &Principal, local: u64) -> Vec<u8> {
    let mut id = local.to_be_bytes().to_vec();
    id.extend_from_slice(canister.as_slice());
    id
}

/// The canister and local number a snapshot id names, if it is one.
pub fn parse_snapshot_id(id: &[u8]) -> Option<(Principal, u64)> {
    if id.len() <= 8 || id.len() > 8 + 29 {
        return None;
    }
    let (local, canister) = id.split_at(8);
    let local = u64::from_be_bytes(local.try_into().ok()?);
    Some((Principal::try_from_slice(canister).ok()?, local))
}
