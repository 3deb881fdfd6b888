//! What the System API works with: the context an entry point runs in, the closures and
//! outgoing calls it records, its outcome, the traps it raises, and the store's state (`Env`).

use serde::{Deserialize, Serialize};
use wasmtime::WasmTy;

/// A misuse of the System API, with its message.
#[derive(Debug)]
pub struct CanisterTrap(pub String);

impl std::fmt::Display for CanisterTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CanisterTrap {}

/// A trap the canister asked for (`ic0.trap`), with its message.
#[derive(Debug)]
pub struct CalledTrap(pub String);

impl std::fmt::Display for CalledTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CalledTrap {}

pub(crate) fn trap<T>(msg: impl Into<String>) -> wasmtime::Result<T> {
    Err(wasmtime::Error::new(CanisterTrap(msg.into())))
}

/// What a message execution may read.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    pub arg: Vec<u8>,
    pub caller: Vec<u8>,
    pub canister_id: Vec<u8>,
    pub method_name: String,
    /// The batch time (nanoseconds since the epoch): the only clock a canister sees.
    pub time_ns: u64,
    pub controllers: Vec<Vec<u8>>,
    /// The canister's global timer before this message (0: none).
    pub global_timer: u64,
    /// 1 running, 2 stopping, 3 stopped.
    pub status: u32,
    /// The canister version (bumped by every install, upgrade and settings change).
    pub version: u64,
    pub cycles: u128,
    /// Whether this execution is replicated (updates, system tasks) or not (queries).
    pub replicated: bool,
    /// In a non-replicated query: the certificate over the canister's certified data.
    pub data_certificate: Option<Vec<u8>>,
    /// Whether the entry point may make calls (updates, callbacks, timers).
    pub can_call: bool,
    /// Whether it may reply or reject: a call whose call context has not responded yet.
    pub can_respond: bool,
    /// In a callback: `Some((0, ""))` for a reply, the reject code and message for a reject.
    pub reject: Option<(u32, String)>,
    /// Cycles the caller attached that the canister has not accepted yet.
    pub cycles_available: u128,
    /// In a callback: the cycles the callee did not accept, now back in the balance.
    pub cycles_refunded: u128,
    /// How many more calls may be outstanding (`call_perform` fails beyond that).
    pub call_slots: u32,
    /// How many argument bytes the calls of this execution may carry in all.
    pub call_bytes: u64,
    /// The canister's environment variables, by name (the order `env_var_name_*` index).
    pub env_vars: Vec<(String, String)>,
}

/// A function of the canister's table and the argument it is called with: the closures a
/// call runs when its response arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    pub fun: u64,
    pub env: u64,
}

/// A call a message made (`call_new` … `call_perform`), delivered if the message commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingCall {
    pub callee: Vec<u8>,
    pub method: String,
    pub arg: Vec<u8>,
    pub cycles: u128,
    pub reply: Closure,
    pub reject: Closure,
    pub cleanup: Option<Closure>,
}

/// How a message ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply(Vec<u8>),
    Reject(String),
    /// The entry point returned without replying (init, upgrade hooks, timers, or a message
    /// that will reply from a callback).
    NoResponse,
}

/// Host state of one execution.
pub struct Env {
    pub ctx: CallContext,
    pub reply: Vec<u8>,
    pub outcome: Option<Outcome>,
    pub debug_output: Vec<String>,
    pub stable: Vec<u8>,
    pub memory_export: Option<String>,
    pub global_timer: u64,
    pub instruction_limit: u64,
    /// Set by `certified_data_set` (kept only if the message succeeds).
    pub certified_data: Option<Vec<u8>>,
    /// The call being built between `call_new` and `call_perform`.
    pub pending: Option<OutgoingCall>,
    /// Calls performed, in order.
    pub calls: Vec<OutgoingCall>,
    /// The canister's cycle balance as this execution changes it.
    pub balance: u128,
    /// Attached cycles not accepted yet.
    pub available: u128,
}

impl Env {
    pub fn new(ctx: CallContext, stable: Vec<u8>) -> Self {
        Env {
            global_timer: ctx.global_timer,
            balance: ctx.cycles,
            available: ctx.cycles_available,
            ctx,
            reply: Vec::new(),
            outcome: None,
            debug_output: Vec::new(),
            stable,
            memory_export: None,
            instruction_limit: 0,
            certified_data: None,
            pending: None,
            calls: Vec::new(),
        }
    }
}

/// Stable memory pages are 64 KiB; this replica bounds stable memory at 4 GiB for now.
pub(crate) const PAGE: u64 = 65536;
pub(crate) const MAX_STABLE_PAGES: u64 = (4 << 30) / PAGE;
/// Most bytes a canister may certify.
pub const MAX_CERTIFIED_DATA: u64 = 32;
/// The IC's limit on debug_print output per call.
pub(crate) const MAX_DEBUG_BYTES: usize = 32 * 1024;
/// Largest reply (the IC's limit on a replicated response).
pub const MAX_REPLY_BYTES: usize = 2 * 1024 * 1024;
/// Largest argument of a call to another canister (the IC's limit between subnets).
pub const MAX_CALL_ARG_BYTES: usize = 2 * 1024 * 1024;
/// Longest method name a call may name.
pub(crate) const MAX_METHOD_NAME_BYTES: u64 = 20_000;

/// A pointer or size of the canister's memory width.
pub trait Ptr: WasmTy + Copy + Send + Sync + 'static {
    fn get(self) -> u64;
    fn of(v: u64) -> Self;
}

impl Ptr for u32 {
    fn get(self) -> u64 {
        u64::from(self)
    }
    fn of(v: u64) -> Self {
        v as u32
    }
}

impl Ptr for u64 {
    fn get(self) -> u64 {
        self
    }
    fn of(v: u64) -> Self {
        v
    }
}
