//! Canister snapshots: `take_canister_snapshot`, `load_canister_snapshot`,
//! `list_canister_snapshots`, `delete_canister_snapshot`, and their download and upload
//! (`read_canister_snapshot_metadata` / `_data`, `upload_canister_snapshot_metadata` /
//! `_data`), as the interface specifies them.
//!
//! Only controllers take, load, delete and upload; `snapshot_visibility` says who else may
//! list and read. Stopping the canister first is left to its controllers, as on the IC. A
//! canister keeps [`MAX_SNAPSHOTS`]; its snapshots count in its memory and go with it when it
//! is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use candid::{CandidType, Deserialize, Principal};
use ic_management_canister_types::{
    CanisterTimer, DeleteCanisterSnapshotArgs, LoadCanisterSnapshotArgs, LoadSnapshotRecord,
    ReadCanisterSnapshotDataArgs, ReadCanisterSnapshotDataResult, ReadCanisterSnapshotMetadataArgs,
    ReadCanisterSnapshotMetadataResult, Snapshot as Listed, SnapshotDataKind, SnapshotDataOffset,
    SnapshotMetadataGlobal, SnapshotSource, TakeCanisterSnapshotArgs,
    UploadCanisterSnapshotMetadataArgs, UploadCanisterSnapshotMetadataResult,
};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use thicket_canister::module_info::exported_mutable_globals;
use thicket_canister::{CanisterMemory, GlobalValue, MAX_HEAP_BYTES_64, PageMap, Runtime};

use super::{
    CanisterIdRecord, ChangeDetails, ChangeOrigin, ChunkHash, MAX_CHUNK_BYTES, MAX_STORED_CHUNKS,
};
use crate::canister::Canister;
use crate::limits::MAX_WASM_BYTES;
use crate::reject::Reject;
use crate::snapshot::{
    MAX_SLICE_BYTES, MAX_SNAPSHOTS, Snapshot, Source, parse_snapshot_id, snapshot_id,
};
use crate::state::SubnetState;

/// The largest stable memory (as `ic0.stable64_grow` allows).
const MAX_STABLE_BYTES: u64 = 4 << 30;
/// Wasm memories and stable memories grow by 64 KiB pages.
const WASM_PAGE: u64 = 65536;

/// `upload_canister_snapshot_data`'s argument, its chunk kept as bytes.
#[derive(CandidType, Deserialize, Clone, Debug)]
pub struct UploadCanisterSnapshotDataArgs {
    pub canister_id: Principal,
    pub snapshot_id: ByteBuf,
    pub kind: SnapshotDataOffset,
    pub chunk: ByteBuf,
}

fn not_found(id: &[u8], canister: &Principal) -> Reject {
    Reject::new(
        305,
        format!(
            "Could not find the snapshot ID {} for canister {canister}",
            hex::encode(id)
        ),
    )
}

fn listed(canister: &Principal, local: u64, s: &Snapshot) -> Listed {
    Listed {
        id: snapshot_id(canister, local),
        taken_at_timestamp: s.taken_ns,
        total_size: s.size(),
    }
}

fn source(s: &Snapshot) -> SnapshotSource {
    match s.source {
        Source::Taken => SnapshotSource::TakenFromCanister(candid::Reserved),
        Source::Uploaded => SnapshotSource::MetadataUpload(candid::Reserved),
    }
}

fn global_out(v: &GlobalValue) -> SnapshotMetadataGlobal {
    match v {
        GlobalValue::I32(x) => SnapshotMetadataGlobal::I32(*x),
        GlobalValue::I64(x) => SnapshotMetadataGlobal::I64(*x),
        GlobalValue::F32(x) => SnapshotMetadataGlobal::F32(f32::from_bits(*x)),
        GlobalValue::F64(x) => SnapshotMetadataGlobal::F64(f64::from_bits(*x)),
    }
}

fn global_in(v: &SnapshotMetadataGlobal) -> Result<GlobalValue, Reject> {
    Ok(match v {
        SnapshotMetadataGlobal::I32(x) => GlobalValue::I32(*x),
        SnapshotMetadataGlobal::I64(x) => GlobalValue::I64(*x),
        SnapshotMetadataGlobal::F32(x) => GlobalValue::F32(x.to_bits()),
        SnapshotMetadataGlobal::F64(x) => GlobalValue::F64(x.to_bits()),
        SnapshotMetadataGlobal::V128(_) => {
            return Err(Reject::new(
                408,
                "v128 globals are not supported on this replica",
            ));
        }
    })
}

/// A region `offset..offset + len` of a snapshot part of `size` bytes, or why not.
fn region(what: &str, offset: u64, len: u64, size: usize) -> Result<usize, Reject> {
    match offset.checked_add(len) {
        Some(end) if end <= size as u64 => Ok(offset as usize),
        _ => Err(Reject::new(
            408,
            format!("{what}: offset {offset} plus {len} bytes lies past its size of {size} bytes"),
        )),
    }
}

/// A snapshot's globals for the module `wasm`, by name: one value per exported mutable global,
/// each of the global's type.
fn fitting_globals(
    id: &Principal,
    wasm: &[u8],
    values: &[Option<GlobalValue>],
) -> Result<BTreeMap<String, GlobalValue>, Reject> {
    use thicket_canister::module_info::GlobalKind;
    let globals = exported_mutable_globals(wasm).map_err(|e| crate::reject::exec_reject(id, e))?;
    let bad =
        |why: String| Reject::new(408, format!("The snapshot does not fit its module: {why}"));
    if globals.len() != values.len() {
        return Err(bad(format!(
            "it holds {} globals, the module exports {} mutable globals",
            values.len(),
            globals.len()
        )));
    }
    let mut out = BTreeMap::new();
    for ((name, kind), value) in globals.into_iter().zip(values) {
        let Some(v) = value else { continue };
        let fits = matches!(
            (kind, v),
            (GlobalKind::I32, GlobalValue::I32(_))
                | (GlobalKind::I64, GlobalValue::I64(_))
                | (GlobalKind::F32, GlobalValue::F32(_))
                | (GlobalKind::F64, GlobalValue::F64(_))
        );
        if !fits {
            return Err(bad(format!(
                "global {name:?} is {kind:?}, the snapshot holds {v:?}"
            )));
        }
        out.insert(name, v.clone());
    }
    Ok(out)
}

impl SubnetState {
    /// The snapshot `id` names, with the canister it belongs to and its local number, if
    /// that canister is `expected` (when given) and holds it.
    fn snapshot_of(
        &self,
        id: &[u8],
        expected: Option<&Principal>,
    ) -> Result<(Principal, u64, &Snapshot), Reject> {
        let (owner, local) = parse_snapshot_id(id)
            .ok_or_else(|| Reject::new(408, format!("{} is not a snapshot id", hex::encode(id))))?;
        let canister = expected.unwrap_or(&owner);
        if expected.is_some_and(|e| *e != owner) {
            return Err(not_found(id, canister));
        }
        self.canisters
            .get(&owner)
            .and_then(|c| c.extra.snapshots.get(&local))
            .map(|s| (owner, local, s))
            .ok_or_else(|| not_found(id, canister))
    }

    /// Canister `id`, if `caller` may list and read its snapshots.
    fn snapshots_visible(&self, id: &Principal, caller: &Principal) -> Result<&Canister, Reject> {
        let c = self
            .canisters
            .get(id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        if !c.extra.snapshot_visibility.allows(c, caller) {
            return Err(super::not_controller(id, c, caller));
        }
        Ok(c)
    }

    /// A new snapshot's local number, after making room for it (`replace`: the snapshot it
    /// replaces, which must be the canister's; deleted here).
    fn make_room(
        &mut self,
        id: &Principal,
        caller: &Principal,
        replace: Option<&[u8]>,
    ) -> Result<u64, Reject> {
        let replaced = match replace {
            Some(r) => Some(self.snapshot_of(r, Some(id))?.1),
            None => None,
        };
        let c = self.controlled(id, caller)?;
        if replaced.is_none() && c.extra.snapshots.len() >= MAX_SNAPSHOTS {
            return Err(Reject::new(
                406,
                format!(
                    "Canister {id} has reached its maximum of {MAX_SNAPSHOTS} snapshots: delete \
                     or replace one"
                ),
            ));
        }
        if let Some(local) = replaced {
            c.extra.snapshots.remove(&local);
        }
        let local = c.extra.next_snapshot;
        c.extra.next_snapshot += 1;
        Ok(local)
    }

    pub(super) fn take_snapshot(
        &mut self,
        caller: &Principal,
        by: &ChangeOrigin,
        a: TakeCanisterSnapshotArgs,
    ) -> Result<Listed, Reject> {
        let id = a.canister_id;
        let now = self.time_ns;
        let c = self.controlled(&id, caller)?;
        let Some(module) = &c.module else {
            return Err(Reject::new(
                406,
                format!("Canister {id} is empty: there is no module to take a snapshot of"),
            ));
        };
        let names: Vec<String> = exported_mutable_globals(&module.wasm)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let snapshot = Snapshot {
            taken_ns: now,
            source: Source::Taken,
            canister_version: c.version,
            wasm: PageMap::from_bytes(&module.wasm),
            heap: c.memory.heap.clone(),
            stable: PageMap::from_bytes(&c.memory.stable),
            globals: names
                .iter()
                .map(|n| c.memory.globals.get(n).cloned())
                .collect(),
            certified_data: c.certified_data.clone(),
            global_timer: Some(c.global_timer),
            chunks: c.extra.chunks.clone(),
        };
        let local = self.make_room(&id, caller, a.replace_snapshot.as_deref())?;
        let c = self.controlled(&id, caller)?;
        let out = listed(&id, local, &snapshot);
        c.extra.snapshots.insert(local, snapshot);
        if a.uninstall_code == Some(true) {
            self.uninstall(&id, now, by);
        }
        Ok(out)
    }

    pub(super) fn load_snapshot(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        by: &ChangeOrigin,
        a: LoadCanisterSnapshotArgs,
    ) -> Result<(), Reject> {
        let id = a.canister_id;
        let now = self.time_ns;
        self.controlled(&id, caller)?;
        let (owner, _, snapshot) = self.snapshot_of(&a.snapshot_id, None)?;
        let snapshot = snapshot.clone();
        if owner != id {
            // The caller must control the canister the snapshot was taken from as well.
            self.controlled(&owner, caller)?;
        }
        let module = super::install::validated_module(rt, &id, &snapshot.wasm.to_vec())?;
        let globals = fitting_globals(&id, &module.wasm, &snapshot.globals)?;
        // The heap must fit the module's memory, or every message would trap.
        let info = thicket_canister::ModuleInfo::parse(&module.wasm)
            .map_err(|e| crate::reject::exec_reject(&id, e))?;
        if snapshot.heap.len() as u64 > info.maximum_memory_bytes {
            return Err(Reject::new(
                408,
                format!(
                    "The snapshot's Wasm memory of {} bytes exceeds its module's memory, which \
                     grows to {} bytes at most",
                    snapshot.heap.len(),
                    info.maximum_memory_bytes
                ),
            ));
        }
        let c = self.controlled(&id, caller)?;
        c.module = Some(module);
        c.memory = Arc::new(CanisterMemory {
            heap: snapshot.heap.clone(),
            globals,
            stable: snapshot.stable.to_vec(),
        });
        c.certified_data = snapshot.certified_data.clone();
        if let Some(t) = snapshot.global_timer {
            c.global_timer = t;
        }
        c.extra.chunks = snapshot.chunks.clone();
        c.version += 1;
        let record = LoadSnapshotRecord {
            from_canister_id: (owner != id).then_some(owner),
            snapshot_id: a.snapshot_id,
            canister_version: snapshot.canister_version,
            taken_at_timestamp: snapshot.taken_ns,
            source: source(&snapshot),
        };
        c.record(now, by.clone(), ChangeDetails::LoadSnapshot(record));
        // The loaded code cannot make sense of the callbacks of the calls open before (the
        // interface asks controllers to stop the canister first): they are rejected, as after
        // a reinstall.
        self.reset_calls(&id);
        Ok(())
    }

    pub(super) fn list_snapshots(
        &self,
        caller: &Principal,
        a: CanisterIdRecord,
    ) -> Result<Vec<Listed>, Reject> {
        let id = a.canister_id;
        let c = self.snapshots_visible(&id, caller)?;
        Ok(c.extra
            .snapshots
            .iter()
            .map(|(local, s)| listed(&id, *local, s))
            .collect())
    }

    pub(super) fn delete_snapshot(
        &mut self,
        caller: &Principal,
        a: DeleteCanisterSnapshotArgs,
    ) -> Result<(), Reject> {
        let id = a.canister_id;
        self.controlled(&id, caller)?;
        let (_, local, _) = self.snapshot_of(&a.snapshot_id, Some(&id))?;
        self.controlled(&id, caller)?.extra.snapshots.remove(&local);
        Ok(())
    }

    pub(super) fn read_snapshot_metadata(
        &self,
        caller: &Principal,
        a: ReadCanisterSnapshotMetadataArgs,
    ) -> Result<ReadCanisterSnapshotMetadataResult, Reject> {
        self.snapshots_visible(&a.canister_id, caller)?;
        let (_, _, s) = self.snapshot_of(&a.snapshot_id, Some(&a.canister_id))?;
        Ok(ReadCanisterSnapshotMetadataResult {
            source: Some(source(s)),
            taken_at_timestamp: s.taken_ns,
            wasm_module_size: s.wasm.len() as u64,
            globals: s
                .globals
                .iter()
                .map(|g| g.as_ref().map(global_out))
                .collect(),
            wasm_memory_size: s.heap.len() as u64,
            stable_memory_size: s.stable.len() as u64,
            wasm_chunk_store: s
                .chunks
                .keys()
                .map(|h| ChunkHash { hash: h.to_vec() })
                .collect(),
            canister_version: s.canister_version,
            certified_data: s.certified_data.clone(),
            global_timer: s.global_timer.map(|t| match t {
                0 => CanisterTimer::Inactive,
                t => CanisterTimer::Active(t),
            }),
            on_low_wasm_memory_hook_status: None,
        })
    }

    pub(super) fn read_snapshot_data(
        &self,
        caller: &Principal,
        a: ReadCanisterSnapshotDataArgs,
    ) -> Result<ReadCanisterSnapshotDataResult, Reject> {
        self.snapshots_visible(&a.canister_id, caller)?;
        let (_, _, s) = self.snapshot_of(&a.snapshot_id, Some(&a.canister_id))?;
        let slice = |what: &str, map: &PageMap, offset: u64, size: u64| {
            if size > MAX_SLICE_BYTES {
                return Err(Reject::new(
                    408,
                    format!("{what}: at most {MAX_SLICE_BYTES} bytes are read at once, not {size}"),
                ));
            }
            let at = region(what, offset, size, map.len())?;
            Ok(map.read(at, size as usize))
        };
        let chunk = match &a.kind {
            SnapshotDataKind::WasmModule { offset, size } => {
                slice("wasm_module", &s.wasm, *offset, *size)?
            }
            SnapshotDataKind::WasmMemory { offset, size } => {
                slice("wasm_memory", &s.heap, *offset, *size)?
            }
            SnapshotDataKind::StableMemory { offset, size } => {
                slice("stable_memory", &s.stable, *offset, *size)?
            }
            SnapshotDataKind::WasmChunk { hash } => s
                .chunks
                .get(&ByteBuf::from(hash.clone()))
                .map(PageMap::to_vec)
                .ok_or_else(|| {
                    Reject::new(
                        408,
                        format!("The snapshot has no chunk with hash {}", hex::encode(hash)),
                    )
                })?,
        };
        Ok(ReadCanisterSnapshotDataResult { chunk })
    }

    pub(super) fn upload_snapshot_metadata(
        &mut self,
        caller: &Principal,
        a: UploadCanisterSnapshotMetadataArgs,
    ) -> Result<UploadCanisterSnapshotMetadataResult, Reject> {
        let id = a.canister_id;
        self.controlled(&id, caller)?;
        let bad = |why: String| Reject::new(408, format!("Invalid snapshot metadata: {why}"));
        if a.wasm_module_size == 0 || a.wasm_module_size > MAX_WASM_BYTES as u64 {
            return Err(bad(format!(
                "wasm_module_size is {}, not within 1..={MAX_WASM_BYTES}",
                a.wasm_module_size
            )));
        }
        for (what, size, max) in [
            ("wasm_memory_size", a.wasm_memory_size, MAX_HEAP_BYTES_64),
            ("stable_memory_size", a.stable_memory_size, MAX_STABLE_BYTES),
        ] {
            if size > max || size % WASM_PAGE != 0 {
                return Err(bad(format!(
                    "{what} is {size}: it must be a multiple of {WASM_PAGE} bytes, at most {max}"
                )));
            }
        }
        if a.certified_data.len() > 32 {
            return Err(bad(format!(
                "certified_data has {} bytes, at most 32",
                a.certified_data.len()
            )));
        }
        let globals = a
            .globals
            .iter()
            .map(|g| global_in(g).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = Snapshot {
            taken_ns: self.time_ns,
            source: Source::Uploaded,
            canister_version: self.canisters.get(&id).map_or(0, |c| c.version),
            wasm: PageMap::zeroed(a.wasm_module_size as usize),
            heap: PageMap::zeroed(a.wasm_memory_size as usize),
            stable: PageMap::zeroed(a.stable_memory_size as usize),
            globals,
            certified_data: a.certified_data,
            global_timer: a.global_timer.map(|t| match t {
                CanisterTimer::Inactive => 0,
                CanisterTimer::Active(t) => t,
            }),
            chunks: BTreeMap::new(),
        };
        let local = self.make_room(&id, caller, a.replace_snapshot.as_deref())?;
        self.controlled(&id, caller)?
            .extra
            .snapshots
            .insert(local, snapshot);
        Ok(UploadCanisterSnapshotMetadataResult {
            snapshot_id: snapshot_id(&id, local),
        })
    }

    pub(super) fn upload_snapshot_data(
        &mut self,
        caller: &Principal,
        a: UploadCanisterSnapshotDataArgs,
    ) -> Result<(), Reject> {
        let id = a.canister_id;
        self.controlled(&id, caller)?;
        let (_, local, s) = self.snapshot_of(&a.snapshot_id, Some(&id))?;
        if s.source != Source::Uploaded {
            return Err(Reject::new(
                409,
                format!(
                    "Snapshot {} of canister {id} was taken from the canister: only uploaded \
                     snapshots take data",
                    hex::encode(&a.snapshot_id)
                ),
            ));
        }
        let mut s = s.clone();
        let len = a.chunk.len() as u64;
        match a.kind {
            SnapshotDataOffset::WasmModule { offset } => {
                let at = region("wasm_module", offset, len, s.wasm.len())?;
                s.wasm = s.wasm.write(at, &a.chunk);
            }
            SnapshotDataOffset::WasmMemory { offset } => {
                let at = region("wasm_memory", offset, len, s.heap.len())?;
                s.heap = s.heap.write(at, &a.chunk);
            }
            SnapshotDataOffset::StableMemory { offset } => {
                let at = region("stable_memory", offset, len, s.stable.len())?;
                s.stable = s.stable.write(at, &a.chunk);
            }
            SnapshotDataOffset::WasmChunk => {
                if a.chunk.len() > MAX_CHUNK_BYTES {
                    return Err(Reject::new(
                        408,
                        format!("A chunk has at most {MAX_CHUNK_BYTES} bytes, not {len}"),
                    ));
                }
                let hash = ByteBuf::from(Sha256::digest(&a.chunk).to_vec());
                if !s.chunks.contains_key(&hash) && s.chunks.len() >= MAX_STORED_CHUNKS {
                    return Err(Reject::new(
                        408,
                        format!("The snapshot's chunk store is full ({MAX_STORED_CHUNKS} chunks)"),
                    ));
                }
                s.chunks.insert(hash, PageMap::from_bytes(&a.chunk));
            }
        }
        self.controlled(&id, caller)?
            .extra
            .snapshots
            .insert(local, s);
        Ok(())
    }
}
