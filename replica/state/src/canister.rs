//! One canister as the replicated state holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use candid::Principal;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use thicket_canister::module_info::Metadata;
use thicket_canister::{CallContext, CanisterMemory};

use crate::messages::{CallContextState, Callback, Origin};

/// A canister's run status (`ic0.canister_status` reports 1, 2, 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Running,
    Stopping,
    Stopped,
}

impl Status {
    pub fn code(self) -> u32 {
        match self {
            Status::Running => 1,
            Status::Stopping => 2,
            Status::Stopped => 3,
        }
    }
}

/// An installed module: the (decompressed) Wasm and its SHA-256, which the state tree
/// certifies as `module_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Module {
    pub wasm: Arc<Vec<u8>>,
    pub hash: [u8; 32],
    /// Its metadata sections, read from the module when first asked for.
    #[serde(skip)]
    pub metadata: std::sync::OnceLock<Arc<Vec<Metadata>>>,
}

impl Module {
    pub fn new(wasm: Vec<u8>) -> Module {
        Module {
            hash: sha2::Sha256::digest(&wasm).into(),
            wasm: Arc::new(wasm),
            metadata: Default::default(),
        }
    }

    /// The module's metadata sections, by name (none if they cannot be read: install refuses
    /// such modules).
    pub fn metadata(&self) -> &[Metadata] {
        self.metadata.get_or_init(|| {
            Arc::new(thicket_canister::module_info::metadata(&self.wasm).unwrap_or_default())
        })
    }

    /// The compiled module, from the runtime's cache when it has it (found by the hash).
    pub fn compiled(
        &self,
        rt: &thicket_canister::Runtime,
    ) -> Result<Arc<thicket_canister::Compiled>, thicket_canister::ExecError> {
        rt.compile_hashed(self.hash, &self.wasm)
    }
}

/// Settings besides the controllers, as `update_settings` sets them. This replica records them
/// and reports them in `canister_status`; it does not charge for allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub compute_allocation: u64,
    pub memory_allocation: u64,
    pub freezing_threshold: u64,
    pub reserved_cycles_limit: u128,
    pub wasm_memory_limit: u64,
    pub wasm_memory_threshold: u64,
}

impl Default for Settings {
    fn default() -> Self {
        // The IC's defaults for a new canister.
        Settings {
            compute_allocation: 0,
            memory_allocation: 0,
            freezing_threshold: 2_592_000,
            reserved_cycles_limit: 5_000_000_000_000,
            wasm_memory_limit: 3 << 30,
            wasm_memory_threshold: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canister {
    pub controllers: BTreeSet<Principal>,
    pub status: Status,
    pub module: Option<Module>,
    /// Shared with query snapshots; replaced (never changed in place) by each message.
    pub memory: Arc<CanisterMemory>,
    pub certified_data: Vec<u8>,
    /// When `canister_global_timer` runs next (0: never).
    pub global_timer: u64,
    pub cycles: u128,
    /// Bumped by every install, upgrade, uninstall and settings change.
    pub version: u64,
    pub settings: Settings,
    pub created_ns: u64,
    pub installed_ns: u64,
    /// Calls the canister is answering, by id.
    pub call_contexts: BTreeMap<u64, CallContextState>,
    /// The callbacks of its outstanding calls, by id.
    pub callbacks: BTreeMap<u64, Callback>,
    /// Who asked to stop it while calls were open (with the cycles they attached).
    pub stop_waiters: Vec<(Origin, u128)>,
}

impl Canister {
    pub fn new(controllers: BTreeSet<Principal>, cycles: u128, now_ns: u64) -> Self {
        Canister {
            controllers,
            status: Status::Running,
            module: None,
            memory: Arc::default(),
            certified_data: Vec::new(),
            global_timer: 0,
            cycles,
            version: 0,
            settings: Settings::default(),
            created_ns: now_ns,
            installed_ns: 0,
            call_contexts: BTreeMap::new(),
            callbacks: BTreeMap::new(),
            stop_waiters: Vec::new(),
        }
    }

    /// Bytes the canister occupies: heap, stable memory and module.
    pub fn memory_size(&self) -> u64 {
        let module = self.module.as_ref().map_or(0, |m| m.wasm.len());
        (self.memory.heap.len() + self.memory.stable.len() + module) as u64
    }
}

/// What a canister's entry point sees of the state, and the time: a call that may answer
/// but not make calls (callers widen it).
pub(crate) fn context(
    id: &Principal,
    c: &Canister,
    caller: &[u8],
    method: &str,
    arg: &[u8],
    time_ns: u64,
) -> CallContext {
    CallContext {
        arg: arg.to_vec(),
        caller: caller.to_vec(),
        canister_id: id.as_slice().to_vec(),
        method_name: method.to_string(),
        time_ns,
        controllers: c
            .controllers
            .iter()
            .map(|p| p.as_slice().to_vec())
            .collect(),
        global_timer: c.global_timer,
        status: c.status.code(),
        version: c.version,
        cycles: c.cycles,
        replicated: true,
        data_certificate: None,
        can_call: false,
        can_respond: true,
        reject: None,
        cycles_available: 0,
        cycles_refunded: 0,
        call_slots: 0,
        call_bytes: 0,
    }
}

/// Keeps what a successful message changed.
pub(crate) fn apply(
    c: &mut Canister,
    memory: Option<CanisterMemory>,
    timer: u64,
    certified: Option<Vec<u8>>,
) {
    if let Some(m) = memory {
        c.memory = Arc::new(m);
    }
    c.global_timer = timer;
    if let Some(d) = certified {
        c.certified_data = d;
    }
}
