//! The subnet's replicated state machine: canisters executed on wasmtime, the management
//! canister, and the ingress history.
//!
//! A batch runs due global timers first, then its ingress messages in block order. Each
//! message executes at most once (its request id is remembered until it expires); expired
//! messages, and those whose expiry is too far ahead, are not executed. A message to
//! `aaaaa-aa` goes to the management canister; any other runs the canister's
//! `canister_update <method>` export (or its query export, whose changes are discarded).
//! Failures become IC rejects with the IC's reject and error codes; a failed message changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use candid::{CandidType, Principal};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thicket_canister::{
    CallContext, CanisterMemory, Compiled, ExecError, ModuleInfo, Outcome, Runtime,
};
use thicket_execution::{Batch, IngressStatus, StateMachine};
use thicket_types::Height;
use thicket_types::ingress::{MAX_INGRESS_TTL_NS, PERMITTED_DRIFT_NS, RequestId, SignedIngress};

use crate::calls::{IntoCommitted, Message, Origin};
use crate::canister::{Canister, Module, Settings, Status};
use crate::management::*;

/// Instructions one update message, timer or callback may use. The IC allows 40 B with
/// deterministic time slicing spread over rounds; this replica executes a message within one
/// round, so it uses the IC's per-slice figure.
pub const MESSAGE_INSTRUCTION_LIMIT: u64 = 2_000_000_000;
/// Instructions an `install_code` may use (init, or pre- plus post-upgrade).
pub const INSTALL_INSTRUCTION_LIMIT: u64 = 20_000_000_000;
/// Instructions a (non-replicated) query may use.
pub const QUERY_INSTRUCTION_LIMIT: u64 = 5_000_000_000;
/// Largest Wasm module accepted, after decompression.
pub const MAX_WASM_BYTES: usize = 100 << 20;
/// Most controllers a canister may have.
pub const MAX_CONTROLLERS: usize = 10;
/// Work quotas for decoding a management canister argument (the IC's own values).
const MAX_DECODING_WORK: usize = 10_000_000;
const MAX_SKIPPING_WORK: usize = 10_000;
/// The Candid encoding of `()`: the management canister's empty reply.
pub const EMPTY_REPLY: &[u8] = b"DIDL\x00\x00";
/// Cycles a provisionally created canister gets when the call names no amount.
pub const DEFAULT_PROVISIONAL_CYCLES: u128 = 100_000_000_000_000;

/// The canister ids this subnet assigns: indices 0 ..= 0xFFFFF (the range of the IC's first
/// application subnet), i.e. `rwlgt-iiaaa-aaaaa-aaaaa-cai` to `7tjcv-pp777-77776-qaaaa-cai`.
pub const CANISTER_RANGE: (u64, u64) = (0, 0xFFFFF);
/// Most canisters one subnet holds.
pub const MAX_CANISTERS: usize = 100_000;

/// A canister id: the 8-byte big-endian index followed by 0x01 0x01.
pub fn canister_id(index: u64) -> Principal {
    let mut b = index.to_be_bytes().to_vec();
    b.extend_from_slice(&[1, 1]);
    Principal::from_slice(&b)
}

/// The index of a canister id of this form, if it is one.
pub fn canister_index(id: &Principal) -> Option<u64> {
    let b = id.as_slice();
    if b.len() != 10 || b[8..] != [1, 1] {
        return None;
    }
    let mut idx = [0u8; 8];
    idx.copy_from_slice(&b[..8]);
    Some(u64::from_be_bytes(idx))
}

pub fn in_range(id: &Principal) -> bool {
    canister_index(id).is_some_and(|i| (CANISTER_RANGE.0..=CANISTER_RANGE.1).contains(&i))
}

/// An IC reject: the reject code (1 system fatal … 5 canister error), a readable message, and
/// the IC's error code (`IC0503` …), whose first digit is the reject code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub code: u8,
    pub message: String,
    pub error_code: String,
}

impl Reject {
    /// A reject with IC error code `code` (e.g. 503 for `IC0503`).
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Reject {
            code: (code / 100) as u8,
            message: message.into(),
            error_code: format!("IC{code:04}"),
        }
    }

    /// A reject by the canister itself (`ic0.msg_reject`): code 4, no error code of the IC's.
    pub fn by_canister(message: String) -> Self {
        Reject {
            code: 4,
            message,
            error_code: String::new(),
        }
    }

    pub(crate) fn status(self, height: Height) -> IngressStatus {
        IngressStatus::Rejected {
            height,
            code: self.code,
            message: self.message,
            error_code: (!self.error_code.is_empty()).then_some(self.error_code),
        }
    }
}

pub(crate) fn exec_reject(id: &Principal, e: ExecError) -> Reject {
    match e {
        ExecError::InvalidModule(m) => Reject::new(
            505,
            format!("Canister {id}'s Wasm module is not valid: {m}"),
        ),
        ExecError::MissingMethod(m) => {
            Reject::new(536, format!("Canister {id} has no entry point {m:?}"))
        }
        ExecError::Trap(m) => Reject::new(502, format!("Canister {id} trapped: {m}")),
        ExecError::CalledTrap(m) => {
            Reject::new(503, format!("Canister {id} trapped explicitly: {m}"))
        }
        ExecError::ContractViolation(m) => {
            Reject::new(504, format!("Canister {id} violated contract: {m}"))
        }
        ExecError::OutOfInstructions(limit) => Reject::new(
            522,
            format!(
                "Canister {id} exceeded the instruction limit for single message execution ({limit} instructions)"
            ),
        ),
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

fn encode<T: CandidType>(v: &T) -> Result<Vec<u8>, Reject> {
    candid::encode_one(v).map_err(|e| Reject::new(503, format!("encoding the reply: {e}")))
}

fn decode<'a, T: CandidType + Deserialize<'a>>(method: &str, arg: &'a [u8]) -> Result<T, Reject> {
    // Bounded work for any argument: replicas decode it outside the instruction limit.
    let mut config = candid::de::DecoderConfig::new();
    config
        .set_decoding_quota(MAX_DECODING_WORK)
        .set_skipping_quota(MAX_SKIPPING_WORK);
    candid::utils::decode_one_with_config(arg, &config).map_err(|e| {
        Reject::new(
            408,
            format!("Error decoding the argument of {method} for the management canister: {e}"),
        )
    })
}

/// What the state remembers of an executed request until it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub expiry: u64,
    /// Who sent it: only they may read its status.
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
    next_index: u64,
    /// Request id → (expiry, status); pruned once the batch time passes the expiry, after
    /// which no copy of the message can be executed anyway.
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
}

/// A replica-local snapshot for queries: cheap to take (modules and memories are shared).
#[derive(Clone, Debug)]
pub struct QueryView {
    pub height: Height,
    pub time_ns: u64,
    pub canisters: BTreeMap<Principal, Canister>,
}

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

    /// Instructions spent executing the last batch (replica-local bookkeeping, not state).
    pub fn batch_instructions(&self) -> u64 {
        self.batch_instructions
    }

    pub fn query_view(&self) -> QueryView {
        QueryView {
            height: self.height,
            time_ns: self.time_ns,
            canisters: self.canisters.clone(),
        }
    }

    /// Runs the global timers that are due, in canister order. A timer runs in a call
    /// context of its own, which may make calls and answers nobody.
    fn run_timers(&mut self, rt: &Runtime) {
        let now = self.time_ns;
        let due: Vec<Principal> = self
            .canisters
            .iter()
            .filter(|(_, c)| {
                c.global_timer != 0 && c.global_timer <= now && c.status == Status::Running
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let call_bytes = self.call_bytes_budget();
            let Some(c) = self.canisters.get_mut(&id) else {
                continue;
            };
            // A timer fires once; the canister sets it again if it wants another.
            c.global_timer = 0;
            let Some(module) = c.module.clone() else {
                continue;
            };
            let Ok(compiled) = module.compiled(rt) else {
                continue;
            };
            if !compiled.has_export("canister_global_timer") {
                continue;
            }
            let mut ctx = context(&id, c, id.as_slice(), "", &[], now);
            ctx.can_call = true;
            ctx.can_respond = false;
            ctx.call_slots =
                crate::calls::MAX_OUTSTANDING_CALLS.saturating_sub(c.callbacks.len()) as u32;
            ctx.call_bytes = call_bytes;
            let out = rt.execute(
                &compiled,
                &c.memory,
                "canister_global_timer",
                ctx,
                MESSAGE_INSTRUCTION_LIMIT,
            );
            self.batch_instructions += out.instructions;
            if let Err(e) = &out.result {
                tracing::debug!(canister = %id, error = %e, "global timer failed");
                continue;
            }
            let context_id = self.next_call_id;
            self.next_call_id += 1;
            c.call_contexts.insert(
                context_id,
                crate::calls::CallContextState {
                    origin: Origin::System,
                    caller: id.as_slice().to_vec(),
                    responded: false,
                    outstanding: 0,
                    available: 0,
                },
            );
            self.commit(&id, context_id, out.calls_and_state());
            self.conclude(&id, context_id, None);
        }
    }

    /// A call to the management canister from `caller`, answered to `origin`. Stopping a
    /// canister with open call contexts answers once they have closed; cycles attached to a
    /// call are refunded, except those `create_canister` gives the new canister.
    pub(crate) fn manage(
        &mut self,
        rt: &Runtime,
        origin: Origin,
        caller: &Principal,
        method: &str,
        arg: &[u8],
        cycles: u128,
    ) {
        let result = match method {
            "stop_canister" => {
                let stopped = decode::<CanisterIdRecord>(method, arg).and_then(|a| {
                    let own = *caller == a.canister_id;
                    let c = self.controlled(&a.canister_id, caller)?;
                    if c.call_contexts.is_empty() {
                        c.status = Status::Stopped;
                        Ok(true)
                    } else if own {
                        // Its own call context would wait for itself forever.
                        Err(Reject::new(
                            510,
                            format!(
                                "Canister {} cannot stop itself while it has open calls",
                                a.canister_id
                            ),
                        ))
                    } else if c.stop_waiters.len() >= crate::calls::MAX_STOP_WAITERS {
                        Err(Reject::new(
                            509,
                            format!("Canister {} is stopping", a.canister_id),
                        ))
                    } else {
                        c.status = Status::Stopping;
                        c.stop_waiters.push((origin.clone(), cycles));
                        Ok(false)
                    }
                });
                match stopped {
                    Ok(false) => return,
                    Ok(true) => Ok(EMPTY_REPLY.to_vec()),
                    Err(r) => Err(r),
                }
            }
            "start_canister" => {
                let waiters = decode::<CanisterIdRecord>(method, arg).and_then(|a| {
                    let c = self.controlled(&a.canister_id, caller)?;
                    c.status = Status::Running;
                    Ok((a.canister_id, std::mem::take(&mut c.stop_waiters)))
                });
                match waiters {
                    Ok((id, waiters)) => {
                        for (w, refund) in waiters {
                            let r = Reject::new(
                                511,
                                format!("Canister {id} was started before it stopped"),
                            );
                            self.respond(w, Err(r), refund);
                        }
                        Ok(EMPTY_REPLY.to_vec())
                    }
                    Err(r) => Err(r),
                }
            }
            "create_canister" if matches!(origin, Origin::Canister { .. }) => {
                let a: Result<CreateCanisterArgs, _> = decode(method, arg);
                let fee = crate::calls::CREATE_CANISTER_FEE;
                let created = a.and_then(|a| {
                    if cycles < fee {
                        return Err(Reject::new(
                            520,
                            format!(
                                "create_canister needs at least {fee} cycles attached, got {cycles}"
                            ),
                        ));
                    }
                    self.create(
                        caller,
                        ProvisionalCreateCanisterArgs {
                            amount: Some((cycles - fee).into()),
                            settings: a.settings,
                            specified_id: None,
                        },
                    )
                });
                match created {
                    Ok(id) => {
                        let reply = encode(&CanisterIdRecord { canister_id: id });
                        self.respond(origin, reply, 0);
                        return;
                    }
                    Err(r) => Err(r),
                }
            }
            _ => self.management(rt, caller, method, arg),
        };
        self.respond(origin, result, cycles);
    }

    /// A call to the management canister.
    fn management(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        method: &str,
        arg: &[u8],
    ) -> Result<Vec<u8>, Reject> {
        match method {
            "provisional_create_canister_with_cycles" => {
                let a: ProvisionalCreateCanisterArgs = decode(method, arg)?;
                let id = self.create(caller, a)?;
                encode(&CanisterIdRecord { canister_id: id })
            }
            "provisional_top_up_canister" => {
                let a: ProvisionalTopUpArgs = decode(method, arg)?;
                let amount = nat_u128(&a.amount)
                    .ok_or_else(|| Reject::new(408, "amount does not fit in 128 bits"))?;
                let c = self.canisters.get_mut(&a.canister_id).ok_or_else(|| {
                    Reject::new(301, format!("Canister {} not found", a.canister_id))
                })?;
                c.cycles = c.cycles.saturating_add(amount);
                encode(&())
            }
            "create_canister" => Err(Reject::new(
                407,
                "create_canister can only be called by canisters (it needs attached cycles); \
                 use provisional_create_canister_with_cycles",
            )),
            "install_code" => {
                let a: InstallCodeArgs = decode(method, arg)?;
                self.install_code(rt, caller, a)?;
                encode(&())
            }
            "uninstall_code" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                c.module = None;
                c.memory = Arc::default();
                c.certified_data.clear();
                c.global_timer = 0;
                c.version += 1;
                self.reset_calls(&a.canister_id);
                encode(&())
            }
            "delete_canister" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                if c.status != Status::Stopped {
                    return Err(Reject::new(
                        510,
                        format!(
                            "Canister {} must be stopped before it is deleted",
                            a.canister_id
                        ),
                    ));
                }
                self.canisters.remove(&a.canister_id);
                encode(&())
            }
            "update_settings" => {
                let a: UpdateSettingsArgs = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                let mut next = c.clone();
                apply_settings(&mut next, &a.settings)?;
                next.version += 1;
                *c = next;
                encode(&())
            }
            "canister_status" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                encode(&status_of(c))
            }
            _ => Err(Reject::new(
                407,
                format!("The management canister has no method '{method}' on this replica"),
            )),
        }
    }

    /// The canister `id`, if `caller` controls it.
    fn controlled(&mut self, id: &Principal, caller: &Principal) -> Result<&mut Canister, Reject> {
        let c = self
            .canisters
            .get_mut(id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        if !c.controllers.contains(caller) {
            let list: Vec<String> = c.controllers.iter().map(Principal::to_text).collect();
            return Err(Reject::new(
                512,
                format!(
                    "Only the controllers of the canister {id} can control it. \
                     Canister's controllers: {}. Sender's id: {caller}",
                    list.join(" ")
                ),
            ));
        }
        Ok(c)
    }

    fn create(
        &mut self,
        caller: &Principal,
        a: ProvisionalCreateCanisterArgs,
    ) -> Result<Principal, Reject> {
        if self.canisters.len() >= MAX_CANISTERS {
            return Err(Reject::new(
                102,
                format!("The subnet holds its maximum of {MAX_CANISTERS} canisters"),
            ));
        }
        let id = match a.specified_id {
            Some(id) => {
                if !in_range(&id) {
                    return Err(Reject::new(
                        405,
                        format!("Canister id {id} is not in this subnet's canister range"),
                    ));
                }
                if self.canisters.contains_key(&id) {
                    return Err(Reject::new(205, format!("Canister {id} already exists")));
                }
                id
            }
            None => loop {
                if self.next_index > CANISTER_RANGE.1 {
                    return Err(Reject::new(102, "The subnet's canister range is exhausted"));
                }
                let id = canister_id(self.next_index);
                self.next_index += 1;
                if !self.canisters.contains_key(&id) {
                    break id;
                }
            },
        };
        let cycles = match &a.amount {
            Some(n) => {
                nat_u128(n).ok_or_else(|| Reject::new(408, "amount does not fit in 128 bits"))?
            }
            None => DEFAULT_PROVISIONAL_CYCLES,
        };
        let mut c = Canister::new(BTreeSet::from([*caller]), cycles, self.time_ns);
        if let Some(s) = &a.settings {
            apply_settings(&mut c, s)?;
        }
        self.canisters.insert(id, c);
        Ok(id)
    }

    fn install_code(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        a: InstallCodeArgs,
    ) -> Result<(), Reject> {
        let mut spent = 0;
        let result = self.install_code_inner(rt, caller, a, &mut spent);
        self.batch_instructions += spent;
        result
    }

    fn install_code_inner(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        a: InstallCodeArgs,
        spent: &mut u64,
    ) -> Result<(), Reject> {
        let id = a.canister_id;
        let now = self.time_ns;
        let c = self.controlled(&id, caller)?;
        let wasm = decompress(&a.wasm_module)?;
        let compiled = rt.compile(&wasm).map_err(|e| exec_reject(&id, e))?;
        let info = ModuleInfo::parse(&wasm).map_err(|e| exec_reject(&id, e))?;
        check_exports(&compiled, &id)?;
        let mut next = c.clone();
        next.module = Some(Module {
            hash: Sha256::digest(&wasm).into(),
            wasm: Arc::new(wasm),
        });
        next.version += 1;
        next.installed_ns = now;
        next.global_timer = 0;
        let (memory, entry) = match &a.mode {
            InstallMode::Install | InstallMode::Reinstall => {
                if a.mode == InstallMode::Install && c.module.is_some() {
                    return Err(Reject::new(
                        538,
                        format!("Canister {id} already has a module; use reinstall or upgrade"),
                    ));
                }
                next.certified_data.clear();
                (CanisterMemory::default(), "canister_init")
            }
            InstallMode::Upgrade(opts) => {
                let opts = opts.clone().unwrap_or_default();
                let Some(old) = &c.module else {
                    return Err(Reject::new(
                        537,
                        format!("Canister {id} is empty: there is no module to upgrade"),
                    ));
                };
                let keep = opts.wasm_memory_persistence == Some(WasmMemoryPersistence::Keep);
                let old_info = ModuleInfo::parse(&old.wasm).map_err(|e| exec_reject(&id, e))?;
                if old_info.keeps_main_memory() && !keep {
                    return Err(Reject::new(
                        504,
                        "Missing upgrade option: enhanced orthogonal persistence requires the \
                         `wasm_memory_persistence = opt variant { keep }` upgrade option",
                    ));
                }
                if keep && !info.keeps_main_memory() {
                    return Err(Reject::new(
                        504,
                        "Invalid upgrade option: `wasm_memory_persistence = keep` requires a new \
                         module with enhanced orthogonal persistence",
                    ));
                }
                let mut memory = (*c.memory).clone();
                let old_compiled = old.compiled(rt).map_err(|e| exec_reject(&id, e))?;
                if opts.skip_pre_upgrade != Some(true)
                    && old_compiled.has_export("canister_pre_upgrade")
                {
                    let ctx = context(&id, c, caller.as_slice(), "", &[], now);
                    let out = rt.execute(
                        &old_compiled,
                        &memory,
                        "canister_pre_upgrade",
                        ctx,
                        INSTALL_INSTRUCTION_LIMIT,
                    );
                    *spent += out.instructions;
                    out.result.map_err(|e| {
                        let r = exec_reject(&id, e);
                        Reject {
                            message: format!(
                                "Upgrading {id} failed in canister_pre_upgrade: {}",
                                r.message
                            ),
                            ..r
                        }
                    })?;
                    if let Some(m) = out.memory {
                        memory = m;
                    }
                }
                // The stable memory survives every upgrade; the main memory only with `keep`,
                // which loads the new module's data segments into it and resets the globals.
                let heap = if keep {
                    let mut heap = memory.heap;
                    info.apply_data_segments(&mut heap)
                        .map_err(|e| exec_reject(&id, e))?;
                    heap
                } else {
                    Vec::new()
                };
                (
                    CanisterMemory {
                        heap,
                        globals: BTreeMap::new(),
                        stable: memory.stable,
                    },
                    "canister_post_upgrade",
                )
            }
        };
        // The module's (start) function, then init or post_upgrade, on the new memory.
        let ctx = context(&id, &next, caller.as_slice(), "", &a.arg, now);
        let out = rt.initialize(&compiled, &memory, entry, ctx, INSTALL_INSTRUCTION_LIMIT);
        *spent += out.instructions;
        let printed = out.debug_output.clone();
        out.result.map_err(|e| {
            let r = exec_reject(&id, e);
            tracing::debug!(canister = %id, output = ?printed, "install failed");
            Reject {
                message: format!("Installing code on {id} failed in {entry}: {}", r.message),
                ..r
            }
        })?;
        next.memory = Arc::new(out.memory.unwrap_or(memory));
        next.global_timer = out.global_timer;
        if let Some(d) = out.certified_data {
            next.certified_data = d;
        }
        *self
            .canisters
            .get_mut(&id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))? = next;
        if !matches!(a.mode, InstallMode::Upgrade(_)) {
            // New code cannot run the old code's callbacks.
            self.reset_calls(&id);
        }
        Ok(())
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

fn apply_settings(c: &mut Canister, s: &CanisterSettings) -> Result<(), Reject> {
    if let Some(list) = &s.controllers {
        if list.len() > MAX_CONTROLLERS {
            return Err(Reject::new(
                408,
                format!(
                    "A canister has at most {MAX_CONTROLLERS} controllers, not {}",
                    list.len()
                ),
            ));
        }
        c.controllers = list.iter().copied().collect();
    }
    let big = |what: &str| Reject::new(408, format!("{what} is out of range"));
    let mut next: Settings = c.settings.clone();
    if let Some(n) = &s.compute_allocation {
        next.compute_allocation = nat_u64(n)
            .filter(|v| *v <= 100)
            .ok_or_else(|| big("compute_allocation"))?;
    }
    if let Some(n) = &s.memory_allocation {
        next.memory_allocation = nat_u64(n).ok_or_else(|| big("memory_allocation"))?;
    }
    if let Some(n) = &s.freezing_threshold {
        next.freezing_threshold = nat_u64(n).ok_or_else(|| big("freezing_threshold"))?;
    }
    if let Some(n) = &s.reserved_cycles_limit {
        next.reserved_cycles_limit = nat_u128(n).ok_or_else(|| big("reserved_cycles_limit"))?;
    }
    if let Some(n) = &s.wasm_memory_limit {
        next.wasm_memory_limit = nat_u64(n).ok_or_else(|| big("wasm_memory_limit"))?;
    }
    if let Some(n) = &s.wasm_memory_threshold {
        next.wasm_memory_threshold = nat_u64(n).ok_or_else(|| big("wasm_memory_threshold"))?;
    }
    c.settings = next;
    Ok(())
}

fn status_of(c: &Canister) -> CanisterStatusResult {
    let s = &c.settings;
    CanisterStatusResult {
        status: match c.status {
            Status::Running => CanisterStatusType::Running,
            Status::Stopping => CanisterStatusType::Stopping,
            Status::Stopped => CanisterStatusType::Stopped,
        },
        settings: DefiniteCanisterSettings {
            controllers: c.controllers.iter().copied().collect(),
            compute_allocation: s.compute_allocation.into(),
            memory_allocation: s.memory_allocation.into(),
            freezing_threshold: s.freezing_threshold.into(),
            reserved_cycles_limit: s.reserved_cycles_limit.into(),
            log_visibility: LogVisibility::Controllers,
            wasm_memory_limit: s.wasm_memory_limit.into(),
            wasm_memory_threshold: s.wasm_memory_threshold.into(),
        },
        module_hash: c
            .module
            .as_ref()
            .map(|m| serde_bytes::ByteBuf::from(m.hash.to_vec())),
        memory_size: c.memory_size().into(),
        cycles: c.cycles.into(),
        reserved_cycles: 0u64.into(),
        idle_cycles_burned_per_day: 0u64.into(),
        query_stats: QueryStats {
            num_calls_total: 0u64.into(),
            num_instructions_total: 0u64.into(),
            request_payload_bytes_total: 0u64.into(),
            response_payload_bytes_total: 0u64.into(),
        },
    }
}

/// The module as given, or inflated if it is gzip-compressed (as dfx and icp-cli send it).
fn decompress(bytes: &[u8]) -> Result<Vec<u8>, Reject> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b, 0x08]) {
        if bytes.len() > MAX_WASM_BYTES {
            return Err(Reject::new(
                505,
                format!("The Wasm module is larger than {MAX_WASM_BYTES} bytes"),
            ));
        }
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(bytes).take(MAX_WASM_BYTES as u64 + 1);
    reader.read_to_end(&mut out).map_err(|e| {
        Reject::new(
            505,
            format!("The gzip-compressed Wasm module does not inflate: {e}"),
        )
    })?;
    if out.len() > MAX_WASM_BYTES {
        return Err(Reject::new(
            505,
            format!("The Wasm module inflates to more than {MAX_WASM_BYTES} bytes"),
        ));
    }
    Ok(out)
}

/// The IC's rule for exports: `canister_`-prefixed names are entry points the system knows.
fn check_exports(compiled: &Compiled, id: &Principal) -> Result<(), Reject> {
    const SYSTEM: [&str; 7] = [
        "canister_init",
        "canister_pre_upgrade",
        "canister_post_upgrade",
        "canister_inspect_message",
        "canister_heartbeat",
        "canister_global_timer",
        "canister_on_low_wasm_memory",
    ];
    for name in compiled.export_names() {
        let known = SYSTEM.contains(&name.as_str())
            || [
                "canister_update ",
                "canister_query ",
                "canister_composite_query ",
            ]
            .iter()
            .any(|p| name.starts_with(p));
        if name.starts_with("canister_") && !known {
            return Err(Reject::new(
                505,
                format!(
                    "Canister {id}'s Wasm module exports {name:?}, which is not an IC entry point"
                ),
            ));
        }
    }
    Ok(())
}

impl StateMachine for SubnetState {
    fn genesis() -> Self {
        SubnetState::default()
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Vec<(RequestId, IngressStatus)> {
        // Without an engine this replica cannot execute anything: it stops before changing
        // the state (a state that skipped the batch would differ from the other replicas').
        // A restart with a working engine replays the batch.
        let rt = match thicket_canister::shared() {
            Ok(rt) => rt,
            Err(e) => panic!("no Wasm engine, the replica cannot execute: {e}"),
        };
        // Time never goes backwards in the state, whatever a block claims.
        self.time_ns = self.time_ns.max(batch.time_ns);
        self.height = batch.height;
        let now = self.time_ns;
        self.batch_instructions = 0;
        // A request still being answered stays; the others go once they expire.
        self.history
            .retain(|_, e| e.expiry >= now || matches!(e.status, IngressStatus::Processing { .. }));
        self.run_timers(rt);
        let mut inducted = Vec::new();
        for bytes in &batch.ingress {
            // Blocks carry only authenticated messages (consensus checks each one).
            let Some(signed) = SignedIngress::from_bytes(bytes) else {
                continue;
            };
            // A delegation that expired before the batch makes the message invalid, as an
            // expired message is.
            let delegation_expired = signed.delegation_expiration().is_some_and(|e| e < now);
            let msg = signed.content;
            let id = msg.request_id();
            let expired = msg.ingress_expiry < now || delegation_expired;
            let too_far = msg.ingress_expiry > now + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS;
            if expired || too_far || self.history.contains_key(&id) {
                continue;
            }
            self.history.insert(
                id,
                HistoryEntry {
                    expiry: msg.ingress_expiry,
                    sender: msg.sender.clone(),
                    status: IngressStatus::Processing {
                        height: batch.height,
                    },
                },
            );
            inducted.push(id);
            let origin = Origin::Ingress {
                id,
                sender: msg.sender.clone(),
                expiry: msg.ingress_expiry,
            };
            match Principal::try_from_slice(&msg.canister_id) {
                Err(_) => self.respond(
                    origin,
                    Err(Reject::new(301, "The canister id is not a principal")),
                    0,
                ),
                Ok(target) => self.call(
                    rt,
                    origin,
                    &msg.sender,
                    &target,
                    &msg.method_name,
                    &msg.arg,
                    0,
                ),
            }
        }
        self.drain_queue(rt);
        // Messages of this batch still waiting for their calls report that they are.
        for id in inducted {
            if let Some(e) = self.history.get(&id)
                && matches!(e.status, IngressStatus::Processing { .. })
            {
                self.finished.push((id, e.status.clone()));
            }
        }
        std::mem::take(&mut self.finished)
    }

    fn height(&self) -> Height {
        self.height
    }

    fn encode(&self) -> Vec<u8> {
        thicket_types::canonical_bytes(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::deserialize(bytes).map_err(|e| format!("undecodable state: {e}"))
    }

    fn ingress_status(&self, id: &RequestId) -> Option<&IngressStatus> {
        self.history.get(id).map(|e| &e.status)
    }
}

impl QueryView {
    /// Runs a query (`canister_query <method>`) against this snapshot; nothing it changes is
    /// kept.
    pub fn query(
        &self,
        rt: &Runtime,
        caller: &[u8],
        id: &Principal,
        method: &str,
        arg: &[u8],
        data_certificate: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Reject> {
        let c = self
            .canisters
            .get(id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        if c.status != Status::Running {
            return Err(Reject::new(508, format!("Canister {id} is not running")));
        }
        let Some(module) = &c.module else {
            return Err(Reject::new(
                537,
                format!("Canister {id} is empty: it contains no Wasm module"),
            ));
        };
        let compiled = module.compiled(rt).map_err(|e| exec_reject(id, e))?;
        let entry = format!("canister_query {method}");
        if !compiled.has_export(&entry) {
            return Err(Reject::new(
                536,
                format!("Canister {id} has no query method '{method}'"),
            ));
        }
        let mut ctx = context(id, c, caller, method, arg, self.time_ns);
        ctx.replicated = false;
        ctx.can_respond = true;
        ctx.data_certificate = data_certificate;
        let out = rt.query(&compiled, &c.memory, &entry, ctx, QUERY_INSTRUCTION_LIMIT);
        match out.result.map_err(|e| exec_reject(id, e))? {
            Outcome::Reply(bytes) => Ok(bytes),
            Outcome::Reject(m) => Err(Reject::by_canister(m)),
            Outcome::NoResponse => Err(Reject::new(
                506,
                format!("Canister {id} did not reply to the query"),
            )),
        }
    }
}

/// What the certified state tree says about the subnet, from the registry in force at the
/// certified height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    /// The subnet's id: the self-authenticating principal of its public key (what agents
    /// derive from the root key when a certificate has no delegation).
    pub subnet_id: Principal,
    /// The subnet's threshold public key, DER-encoded (the root key agents fetch).
    pub public_key_der: Vec<u8>,
    /// Each member's node id and DER-encoded Ed25519 key (which signs query responses).
    pub nodes: Vec<(Principal, Vec<u8>)>,
}

impl SubnetInfo {
    pub fn new(public_key_der: Vec<u8>, node_keys: &[[u8; 32]]) -> Self {
        let nodes = node_keys
            .iter()
            .map(|k| {
                let der = [&thicket_types::ingress::ED25519_DER_PREFIX[..], k].concat();
                let id = Principal::from_slice(&thicket_types::ingress::self_authenticating(&der));
                (id, der)
            })
            .collect();
        SubnetInfo {
            subnet_id: Principal::self_authenticating(&public_key_der),
            public_key_der,
            nodes,
        }
    }
}

/// CBOR with the self-describing tag, as the IC encodes structured leaves.
fn cbor(value: ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    let tagged = ciborium::Value::Tag(55799, Box::new(value));
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(&tagged, &mut out);
    out
}

fn principals_cbor<'a>(list: impl Iterator<Item = &'a Principal>) -> Vec<u8> {
    cbor(ciborium::Value::Array(
        list.map(|p| ciborium::Value::Bytes(p.as_slice().to_vec()))
            .collect(),
    ))
}

impl SubnetState {
    /// The state tree replicas certify after this state's height: `/time`, the request
    /// statuses, each canister's module hash, controllers and certified data, and the
    /// subnet's key, canister ranges and node keys.
    pub fn certified_tree(&self, subnet: &SubnetInfo) -> crate::tree::LabeledTree {
        use crate::tree::{LabeledTree, leb128};
        let mut t = LabeledTree::subtree();
        t.insert(&[b"time"], leb128(self.time_ns));
        for (id, HistoryEntry { status, .. }) in &self.history {
            let at = |leaf: &'static [u8]| [&b"request_status"[..], &id.0[..], leaf];
            match status {
                IngressStatus::Processing { .. } => {
                    t.insert(&at(b"status"), b"processing".to_vec());
                }
                IngressStatus::Replied { reply, .. } => {
                    t.insert(&at(b"status"), b"replied".to_vec());
                    t.insert(&at(b"reply"), reply.clone());
                }
                IngressStatus::Rejected {
                    code,
                    message,
                    error_code,
                    ..
                } => {
                    t.insert(&at(b"status"), b"rejected".to_vec());
                    t.insert(&at(b"reject_code"), leb128(u64::from(*code)));
                    t.insert(&at(b"reject_message"), message.as_bytes().to_vec());
                    if let Some(e) = error_code {
                        t.insert(&at(b"error_code"), e.as_bytes().to_vec());
                    }
                }
            }
        }
        for (id, c) in &self.canisters {
            let at = |leaf: &'static [u8]| [&b"canister"[..], id.as_slice(), leaf];
            t.insert(&at(b"certified_data"), c.certified_data.clone());
            t.insert(&at(b"controllers"), principals_cbor(c.controllers.iter()));
            if let Some(m) = &c.module {
                t.insert(&at(b"module_hash"), m.hash.to_vec());
            }
        }
        let (lo, hi) = (canister_id(CANISTER_RANGE.0), canister_id(CANISTER_RANGE.1));
        let ranges = cbor(ciborium::Value::Array(vec![ciborium::Value::Array(vec![
            ciborium::Value::Bytes(lo.as_slice().to_vec()),
            ciborium::Value::Bytes(hi.as_slice().to_vec()),
        ])]));
        let sid = subnet.subnet_id.as_slice();
        t.insert(&[b"canister_ranges", sid, lo.as_slice()], ranges.clone());
        t.insert(
            &[b"subnet", sid, b"public_key"],
            subnet.public_key_der.clone(),
        );
        t.insert(&[b"subnet", sid, b"canister_ranges"], ranges);
        t.insert(&[b"subnet", sid, b"type"], b"application".to_vec());
        for (node, der) in &subnet.nodes {
            t.insert(
                &[b"subnet", sid, b"node", node.as_slice(), b"public_key"],
                der.clone(),
            );
        }
        t
    }
}
