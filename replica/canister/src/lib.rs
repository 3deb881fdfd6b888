//! Canister execution on wasmtime.
//!
//! The engine is configured for determinism: NaNs are canonicalized, threads, relaxed SIMD and
//! every other source of nondeterminism are off, and the only clock and inputs a canister sees
//! come through the System API from the batch being executed. Execution is metered with
//! wasmtime fuel (one unit per instruction, roughly the IC's instruction count): a message that
//! exceeds its limit ends in a clear error, and nothing it did is kept. Modules are compiled
//! once per content hash and cached.
//!
//! # Layout
//! - [`Runtime`]: the engine, the module cache, and [`Runtime::execute`]; [`instance`]: one
//!   execution on one instance;
//! - [`system_api`]: the `ic0` imports, for 32- and 64-bit memories;
//! - [`memory`]: what persists between messages ([`CanisterMemory`]: heap, exported mutable
//!   globals, stable memory), in and out of an instance;
//! - [`page_map`]: the heap as pages ([`PageMap`]: a base in a memory file and an overlay),
//!   [`mapped`]: memories mapping that base copy-on-write, [`kernel`]: the pages a memory
//!   wrote (these two alone use `unsafe`), [`kept`]: memories kept between messages,
//!   [`deferred`]: heaps scanned only when someone reads them;
//! - [`module_info`]: what a module declares; [`motoko`]: the Motoko compiler from npm.

pub mod deferred;
pub mod detached;
mod instance;
mod kept;
mod kernel;
mod mapped;
pub mod memory;
pub mod module_info;
pub mod motoko;
pub mod page_map;
pub mod system_api;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Linker, Module};

pub use memory::{CanisterMemory, GlobalValue};
pub use module_info::ModuleInfo;
pub use page_map::PageMap;
pub use system_api::{CallContext, Closure, Outcome, OutgoingCall};

/// Largest heap a canister may have: the IC's 4 GiB for wasm32, and 6 GiB for wasm64.
pub const MAX_HEAP_BYTES_32: u64 = 4 << 30;
pub const MAX_HEAP_BYTES_64: u64 = 6 << 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("invalid canister module: {0}")]
    InvalidModule(String),
    #[error("canister has no method {0:?}")]
    MissingMethod(String),
    /// A Wasm trap (unreachable, out-of-bounds access, ...).
    #[error("canister trapped: {0}")]
    Trap(String),
    /// The canister called `ic0.trap`.
    #[error("canister called ic0.trap: {0}")]
    CalledTrap(String),
    /// The canister used the System API where or how the specification does not allow.
    #[error("canister violated the System API contract: {0}")]
    ContractViolation(String),
    #[error("canister exceeded the instruction limit of {0} for one message")]
    OutOfInstructions(u64),
}

/// A compiled module and what execution needs to know about it.
pub struct Compiled {
    module: Module,
    memory64: bool,
    memory_export: Option<String>,
    /// The module's `(start)` function, detached (see [`module_info::prepare`]).
    has_start: bool,
    /// The export of the table through which callbacks are called.
    table_export: Option<String>,
    /// The heap pages the module's active data segments write at instantiation (`None`: not
    /// known from the module alone; the kernel's page map tells).
    data_pages: Option<Vec<usize>>,
    /// The module with its imports resolved once (`None` if they do not resolve: each
    /// instantiation then reports why).
    pre: Option<wasmtime::InstancePre<system_api::Env>>,
}

impl Compiled {
    pub fn is_wasm64(&self) -> bool {
        self.memory64
    }

    pub fn has_export(&self, name: &str) -> bool {
        self.module.get_export(name).is_some()
    }

    pub fn export_names(&self) -> Vec<String> {
        self.module
            .exports()
            .map(|e| e.name().to_string())
            .collect()
    }
}

/// The result of one message execution.
#[derive(Debug)]
pub struct Executed {
    pub result: Result<Outcome, ExecError>,
    /// Instructions (fuel) used, also when the message failed.
    pub instructions: u64,
    /// The memory after a successful execution; on failure the old memory stands.
    pub memory: Option<CanisterMemory>,
    /// The global timer after the message (the old one stands if it failed).
    pub global_timer: u64,
    /// New certified data, if the message set it and succeeded.
    pub certified_data: Option<Vec<u8>>,
    /// Calls the message performed (none if it failed).
    pub calls: Vec<OutgoingCall>,
    /// The cycle balance after the message (accepted cycles in, attached cycles out); the
    /// old balance stands if it failed.
    pub cycles_balance: u128,
    /// Attached cycles still not accepted after the message.
    pub cycles_available: u128,
    pub debug_output: Vec<String>,
}

/// How an execution treats the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// A message: the memory it leaves is returned.
    Keep,
    /// Installing code: the `(start)` function runs first; the memory is returned.
    Install,
    /// A query: nothing is returned.
    Discard,
}

/// What an execution runs: an exported entry point, or a closure from the table.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    Export(&'a str),
    Closure(Closure),
}

pub struct Runtime {
    engine: Engine,
    linker32: Linker<system_api::Env>,
    linker64: Linker<system_api::Env>,
    cache: Mutex<BTreeMap<[u8; 32], Arc<Compiled>>>,
    /// Held while compiling: concurrent misses on the same module compile it once.
    compiling: Mutex<()>,
    /// Free instance slots, if the number of instances alive at once is bounded.
    slots: Option<(Mutex<u32>, Condvar)>,
    /// Memories messages left, for the next message on the heap they hold.
    kept: Arc<kept::Kept>,
}

/// An instance slot, given back when dropped.
struct Slot<'a>(Option<&'a (Mutex<u32>, Condvar)>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some((free, cv)) = self.0 {
            *free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            cv.notify_one();
        }
    }
}

/// How long an execution waits for a free instance slot before the replica gives up (a
/// panic: it must not report an outcome the other replicas would not).
const POOL_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// What each instance's memory reserves (virtual address space only): room for the largest
/// heap, so that a memory never moves and 32-bit accesses need no bounds checks.
const MEMORY_RESERVATION: u64 = MAX_HEAP_BYTES_64.next_power_of_two();

impl Runtime {
    /// A runtime with no bound on the instances alive at once.
    pub fn new() -> Result<Self, ExecError> {
        Self::build(None)
    }

    /// A runtime with at most `slots` instances alive at once: one more waits for a slot.
    pub fn pooled(slots: u32) -> Result<Self, ExecError> {
        Self::build(Some(slots))
    }

    fn build(slots: Option<u32>) -> Result<Self, ExecError> {
        let mut cfg = Config::new();
        // Instance memories map the canister's heap (see `mapped`); the module's data
        // segments are written by instantiation, not mapped from an image.
        cfg.with_host_memory(Arc::new(mapped::Creator))
            .memory_reservation(MEMORY_RESERVATION)
            .memory_may_move(false)
            .memory_init_cow(false);
        // Threads are not even compiled in (wasmtime's `threads` feature is off).
        cfg.consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            .wasm_memory64(true)
            .wasm_multi_memory(false);
        let engine = Engine::new(&cfg).map_err(|e| ExecError::InvalidModule(e.to_string()))?;
        let linker32 = system_api::linker::<u32>(&engine)
            .map_err(|e| ExecError::InvalidModule(e.to_string()))?;
        let linker64 = system_api::linker::<u64>(&engine)
            .map_err(|e| ExecError::InvalidModule(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker32,
            linker64,
            cache: Mutex::new(BTreeMap::new()),
            compiling: Mutex::new(()),
            slots: slots.map(|n| (Mutex::new(n), Condvar::new())),
            kept: Arc::default(),
        })
    }

    /// Compiles a module (or returns the cached compilation of the same bytes).
    pub fn compile(&self, wasm: &[u8]) -> Result<Arc<Compiled>, ExecError> {
        self.compile_hashed(Sha256::digest(wasm).into(), wasm)
    }

    /// [`Runtime::compile`] for a module whose SHA-256 the caller already knows (an installed
    /// module's hash), so that a cached module is found without hashing it again.
    pub fn compile_hashed(&self, hash: [u8; 32], wasm: &[u8]) -> Result<Arc<Compiled>, ExecError> {
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(&hash).cloned()) {
            return Ok(c);
        }
        let _compiling = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(&hash).cloned()) {
            return Ok(c);
        }
        // The module as given must be valid before it is rewritten.
        Module::validate(&self.engine, wasm)
            .map_err(|e| ExecError::InvalidModule(format!("{e:#}")))?;
        let prepared = module_info::prepare(wasm)?;
        let module = Module::new(&self.engine, &prepared.wasm)
            .map_err(|e| ExecError::InvalidModule(e.to_string()))?;
        let mut memories = module
            .exports()
            .filter_map(|e| Some((e.name().to_string(), e.ty().memory()?.is_64())))
            .collect::<Vec<_>>();
        let imported_memory = module.imports().any(|i| i.ty().memory().is_some());
        if imported_memory || memories.len() > 1 {
            return Err(ExecError::InvalidModule(
                "a canister has at most one memory, defined in the module".into(),
            ));
        }
        let (memory_export, memory64) = match memories.pop() {
            Some((name, is64)) => (Some(name), is64),
            None => (None, false),
        };
        let data_pages = ModuleInfo::parse(wasm).ok().map(|info| info.data_pages());
        let linker = if memory64 {
            &self.linker64
        } else {
            &self.linker32
        };
        let pre = linker.instantiate_pre(&module).ok();
        let compiled = Arc::new(Compiled {
            pre,
            module,
            memory64,
            memory_export,
            has_start: prepared.has_start,
            table_export: prepared.table_export,
            data_pages,
        });
        if let Ok(mut c) = self.cache.lock() {
            c.insert(hash, compiled.clone());
        }
        Ok(compiled)
    }

    /// Runs one entry point (an export such as `canister_update inc`) against `memory`.
    pub fn execute(
        &self,
        compiled: &Arc<Compiled>,
        memory: &CanisterMemory,
        entry: &str,
        ctx: CallContext,
        instruction_limit: u64,
    ) -> Executed {
        self.run(
            compiled,
            memory,
            Some(Entry::Export(entry)),
            Run::Keep,
            ctx,
            instruction_limit,
        )
    }

    /// Runs an entry point whose changes are discarded (a query): like [`Runtime::execute`],
    /// but the memory is not taken out again (`Executed::memory` is `None`).
    pub fn query(
        &self,
        compiled: &Arc<Compiled>,
        memory: &CanisterMemory,
        entry: &str,
        ctx: CallContext,
        instruction_limit: u64,
    ) -> Executed {
        self.run(
            compiled,
            memory,
            Some(Entry::Export(entry)),
            Run::Discard,
            ctx,
            instruction_limit,
        )
    }

    /// Runs a closure (a reply, reject or cleanup callback) against `memory`.
    pub fn execute_closure(
        &self,
        compiled: &Arc<Compiled>,
        memory: &CanisterMemory,
        closure: Closure,
        ctx: CallContext,
        instruction_limit: u64,
    ) -> Executed {
        self.run(
            compiled,
            memory,
            Some(Entry::Closure(closure)),
            Run::Keep,
            ctx,
            instruction_limit,
        )
    }

    /// What installing or upgrading code runs: the module's `(start)` function on `memory`,
    /// then `entry` (`canister_init` or `canister_post_upgrade`) if the module exports it.
    pub fn initialize(
        &self,
        compiled: &Arc<Compiled>,
        memory: &CanisterMemory,
        entry: &str,
        ctx: CallContext,
        instruction_limit: u64,
    ) -> Executed {
        let entry = compiled.has_export(entry).then_some(Entry::Export(entry));
        self.run(
            compiled,
            memory,
            entry,
            Run::Install,
            ctx,
            instruction_limit,
        )
    }

    /// Runs `entry`. A message's memory is kept afterwards ([`kept`]), named by the heap it
    /// holds: the next message on that heap, as replicated execution runs a canister's
    /// messages one after another, starts from it with nothing copied in, and the heap a
    /// message leaves is scanned only when someone needs its pages ([`deferred`]). A query's
    /// memory is kept too, once the pages it wrote are put back. Installs map their memory
    /// afresh; a failed message's memory is dropped.
    fn run(
        &self,
        compiled: &Arc<Compiled>,
        memory: &CanisterMemory,
        entry: Option<Entry<'_>>,
        how: Run,
        ctx: CallContext,
        instruction_limit: u64,
    ) -> Executed {
        let keep = how != Run::Install && compiled.data_pages.is_some();
        let heap = &memory.heap;
        // A heap not scanned yet is run on as it is only by the message that follows it, and
        // only while nobody else holds it; everyone else needs its pages.
        let mut next = (how == Run::Keep && keep && !heap.is_shared())
            .then(|| {
                deferred::Next::new(compiled, memory, entry, &ctx, instruction_limit, &self.kept)
            })
            .flatten();
        if next.as_ref().is_none_or(|n| n.starts()) {
            heap.resolve();
        }
        let mut hot = keep.then(|| self.kept.take(heap)).flatten();
        if keep && hot.is_none() && heap.pending().is_some() {
            // Its memory is gone (evicted, or the message after it trapped): found again.
            heap.resolve();
            hot = self.kept.take(heap);
            next = next.and_then(|_| {
                deferred::Next::new(compiled, memory, entry, &ctx, instruction_limit, &self.kept)
            });
        }
        let home = keep.then(mapped::Home::default);
        let mut saved = None;
        let source = match hot {
            Some(mut region) => {
                if heap.pending().is_some() {
                    // Instantiation writes the data segments over the heap, which only the
                    // memory holds: its pages are put back from a copy.
                    let pages = compiled.data_pages.as_deref().unwrap_or_default();
                    saved = Some(memory::save(region.bytes_mut(), pages));
                }
                mapped::Source::Hot(region)
            }
            None => mapped::Source::Fresh(heap.base().cloned()),
        };
        let linker = if compiled.memory64 {
            &self.linker64
        } else {
            &self.linker32
        };
        // A full pool is the host's state, not the canister's: wait for a slot rather than
        // fail the message (replicas must agree on every outcome).
        let _slot = self.slot();
        let out = instance::run_in(
            &self.engine,
            Some(linker),
            compiled,
            memory,
            entry,
            how,
            ctx,
            instruction_limit,
            instance::Memory {
                source,
                home: home.clone(),
                saved,
                defer: next.map(|n| Box::new(move |len, used| n.done(len, used)) as _),
            },
        );
        let region = home.and_then(|h| h.lock().unwrap_or_else(|e| e.into_inner()).take());
        match (region, &out.memory, how) {
            (Some(region), Some(m), Run::Keep) => self.kept.keep(&m.heap, region),
            (Some(region), _, Run::Discard) => self.kept.keep_unchanged(heap, region),
            _ => {}
        }
        out
    }

    /// Memories kept for the next message on the heap they hold.
    pub fn kept_memories(&self) -> usize {
        self.kept.len()
    }
}

impl Runtime {
    fn slot(&self) -> Slot<'_> {
        if let Some((free, cv)) = &self.slots {
            let mut n = free.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = std::time::Instant::now() + POOL_WAIT_LIMIT;
            while *n == 0 {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                assert!(
                    !left.is_zero(),
                    "no instance slot free for {POOL_WAIT_LIMIT:?}: the replica cannot execute"
                );
                n = cv
                    .wait_timeout(n, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *n -= 1;
        }
        Slot(self.slots.as_ref())
    }
}

/// The process's runtime for replicated execution (one message at a time): one engine and one
/// module cache for every canister of the replica, at most 16 instances at once (tests run
/// several replicas in one process).
pub fn shared() -> Result<&'static Runtime, ExecError> {
    static SHARED: OnceLock<Result<Runtime, ExecError>> = OnceLock::new();
    SHARED
        .get_or_init(|| Runtime::pooled(16))
        .as_ref()
        .map_err(Clone::clone)
}

/// The process's runtime for queries, which run concurrently: its own engine, cache and
/// slots (64; a query beyond that waits), so that queries never take the slots replicated
/// execution needs.
pub fn shared_for_queries() -> Result<&'static Runtime, ExecError> {
    static QUERIES: OnceLock<Result<Runtime, ExecError>> = OnceLock::new();
    QUERIES
        .get_or_init(|| Runtime::pooled(64))
        .as_ref()
        .map_err(Clone::clone)
}
