//! One canister as the replicated state holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use candid::Principal;
use ic_management_canister_types::{Change, ChangeDetails, ChangeOrigin};
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Module {
    pub wasm: Arc<Vec<u8>>,
    pub hash: [u8; 32],
    /// Its metadata sections, read from the module when first asked for.
    #[serde(skip)]
    pub metadata: std::sync::OnceLock<Arc<Vec<Metadata>>>,
}

/// Modules are equal by their bytes (whether the metadata was read yet does not matter).
impl PartialEq for Module {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.wasm == other.wasm
    }
}

impl Eq for Module {}

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
    /// What was added since checkpoint format 3 (its log, more settings).
    #[serde(serialize_with = "extra_out", deserialize_with = "extra_in")]
    pub extra: Extra,
}

/// Who may see a canister's logs or status besides its controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Visibility {
    #[default]
    Controllers,
    Public,
    AllowedViewers(Vec<Principal>),
}

impl Visibility {
    /// Whether `who` may see what this guards of canister `c`.
    pub fn allows(&self, c: &Canister, who: &Principal) -> bool {
        c.controllers.contains(who)
            || match self {
                Visibility::Controllers => false,
                Visibility::Public => true,
                Visibility::AllowedViewers(list) => list.contains(who),
            }
    }
}

/// A canister's log: what its replicated executions printed (`debug_print`) and their traps,
/// oldest first, within [`Extra::log_memory_limit`] bytes of content (the oldest records
/// make room for new ones). Queries leave nothing here, as on the IC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanisterLog {
    pub records: std::collections::VecDeque<LogRecord>,
    pub next_idx: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub idx: u64,
    pub timestamp_nanos: u64,
    #[serde(with = "serde_bytes")]
    pub content: Vec<u8>,
}

impl Canister {
    /// Records in its log what a replicated execution at `time_ns` printed, and the trap
    /// that ended it if one did (the IC's `[TRAP]: ` records).
    pub(crate) fn log_execution(
        &mut self,
        time_ns: u64,
        printed: &[String],
        failed: Option<&thicket_canister::ExecError>,
    ) {
        let limit = self.extra.log_memory_limit;
        for line in printed {
            self.extra
                .log
                .push(time_ns, line.as_bytes().to_vec(), limit);
        }
        if let Some(e) = failed {
            let what = match e {
                thicket_canister::ExecError::CalledTrap(m) => m.clone(),
                other => other.to_string(),
            };
            self.extra
                .log
                .push(time_ns, format!("[TRAP]: {what}").into_bytes(), limit);
        }
    }
}

impl CanisterLog {
    /// Forgets the records (a reinstall or uninstall); indices keep counting up.
    pub fn purge(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// Adds a record of `content` at `time_ns`, cut to `limit` bytes, dropping the oldest
    /// records until the log fits.
    pub fn push(&mut self, time_ns: u64, mut content: Vec<u8>, limit: u64) {
        content.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        self.bytes += content.len() as u64;
        self.records.push_back(LogRecord {
            idx: self.next_idx,
            timestamp_nanos: time_ns,
            content,
        });
        self.next_idx += 1;
        self.fit(limit);
    }

    /// Drops the oldest records until the content fits in `limit` bytes.
    pub fn fit(&mut self, limit: u64) {
        while self.bytes > limit {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.content.len() as u64;
        }
    }
}

/// The IC's default `log_memory_limit`, and the largest this replica accepts.
pub const DEFAULT_LOG_MEMORY_LIMIT: u64 = 4096;
pub const MAX_LOG_MEMORY_LIMIT: u64 = 2 << 20;

/// What a canister keeps beyond its code, memory and calls, since checkpoint format 3. A
/// checkpoint carries it as CBOR, so fields added later take their defaults when absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Extra {
    pub log_visibility: Visibility,
    pub log_memory_limit: u64,
    pub status_visibility: Visibility,
    pub log: CanisterLog,
    /// Its Wasm chunk store (`upload_chunk`), by SHA-256: a module too large for one message
    /// is installed from it (`install_chunked_code`). Page maps, so a checkpoint writes a
    /// chunk once, not at every checkpoint.
    pub chunks: BTreeMap<serde_bytes::ByteBuf, thicket_canister::PageMap>,
    /// Its environment variables (`ic0.env_var_*`), by name.
    pub env_vars: BTreeMap<String, String>,
    /// Its history (`canister_info`): the most recent changes, and how many there were.
    pub history: History,
    /// Its snapshots, by local number; and the number the next one gets.
    pub snapshots: BTreeMap<u64, crate::snapshot::Snapshot>,
    pub next_snapshot: u64,
    /// Who may list and read its snapshots besides its controllers.
    pub snapshot_visibility: Visibility,
}

/// The changes a canister's history keeps (the IC keeps 20).
pub const MAX_HISTORY: usize = 20;

/// A canister's history: its creation, code deployments and uninstalls, controller changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// How many changes there were since the canister was created.
    pub total: u64,
    /// The most recent of them, oldest first.
    pub changes: std::collections::VecDeque<Change>,
}

impl Default for Extra {
    fn default() -> Self {
        Extra {
            log_visibility: Visibility::Controllers,
            log_memory_limit: DEFAULT_LOG_MEMORY_LIMIT,
            status_visibility: Visibility::Controllers,
            log: CanisterLog::default(),
            chunks: BTreeMap::new(),
            env_vars: BTreeMap::new(),
            history: History::default(),
            snapshots: BTreeMap::new(),
            next_snapshot: 0,
            snapshot_visibility: Visibility::Controllers,
        }
    }
}

thread_local! {
    /// Set while an encoding of checkpoint format 2 or older is read (or, in tests, written):
    /// canisters carry no [`Extra`] there.
    static BEFORE_EXTRA: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` reading (or writing) the encoding of checkpoint format 2 or older.
pub(crate) fn before_extra<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BEFORE_EXTRA.with(|a| a.set(self.0));
        }
    }
    let _reset = Reset(BEFORE_EXTRA.with(|a| a.replace(true)));
    f()
}

fn is_before_extra() -> bool {
    BEFORE_EXTRA.with(|a| a.get())
}

fn extra_out<S: serde::Serializer>(extra: &Extra, s: S) -> Result<S::Ok, S::Error> {
    if is_before_extra() {
        return s.serialize_unit();
    }
    let mut cbor = Vec::new();
    ciborium::into_writer(extra, &mut cbor).map_err(serde::ser::Error::custom)?;
    serde_bytes::Bytes::new(&cbor).serialize(s)
}

fn extra_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Extra, D::Error> {
    if is_before_extra() {
        return <()>::deserialize(d).map(|()| Extra::default());
    }
    let cbor = serde_bytes::ByteBuf::deserialize(d)?;
    ciborium::from_reader(cbor.as_slice()).map_err(serde::de::Error::custom)
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
            extra: Extra::default(),
        }
    }

    /// Records a change in its history, at its version after the change.
    pub fn record(&mut self, now_ns: u64, origin: ChangeOrigin, details: ChangeDetails) {
        let h = &mut self.extra.history;
        h.total += 1;
        h.changes.push_back(Change {
            timestamp_nanos: now_ns,
            canister_version: self.version,
            origin,
            details: Some(details),
        });
        while h.changes.len() > MAX_HISTORY {
            h.changes.pop_front();
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
        env_vars: c
            .extra
            .env_vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
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
