//! The `ic0` System API: the imports a canister calls, for 32-bit (`I = i32`) and 64-bit
//! (`I = i64`) memories. Each import checks its bounds and traps with a message on misuse.
//!
//! Implemented here: message data, caller, reply and reject, canister id and status, debug
//! print, trap, time, stable64 memory, the performance counter, the global timer and
//! `is_controller`. Inter-canister calls (`call_new` … `call_perform`) and cycles are declared
//! so that modules using them instantiate, and trap with a message saying they are not
//! available yet.

use wasmtime::{Caller, Engine, Extern, Linker, Memory, WasmTy};

/// An explicit trap (`ic0.trap` or a System API misuse), with its message.
#[derive(Debug)]
pub struct CanisterTrap(pub String);

impl std::fmt::Display for CanisterTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CanisterTrap {}

fn trap<T>(msg: impl Into<String>) -> wasmtime::Result<T> {
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
}

impl Env {
    pub fn new(ctx: CallContext, stable: Vec<u8>) -> Self {
        Env {
            global_timer: ctx.global_timer,
            ctx,
            reply: Vec::new(),
            outcome: None,
            debug_output: Vec::new(),
            stable,
            memory_export: None,
            instruction_limit: 0,
            certified_data: None,
        }
    }
}

/// Stable memory pages are 64 KiB; this replica bounds stable memory at 4 GiB for now.
const PAGE: u64 = 65536;
const MAX_STABLE_PAGES: u64 = (4 << 30) / PAGE;
/// Most bytes a canister may certify.
pub const MAX_CERTIFIED_DATA: u64 = 32;
/// The IC's limit on debug_print output per call.
const MAX_DEBUG_BYTES: usize = 32 * 1024;

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

fn memory(c: &mut Caller<'_, Env>) -> wasmtime::Result<Memory> {
    let Some(name) = c.data().memory_export.clone() else {
        return trap("the canister has no exported memory");
    };
    match c.get_export(&name) {
        Some(Extern::Memory(m)) => Ok(m),
        _ => trap("the canister has no exported memory"),
    }
}

fn read(c: &mut Caller<'_, Env>, ptr: u64, len: u64) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(c)?;
    let data = mem.data(&*c);
    let end = ptr.checked_add(len).filter(|e| *e <= data.len() as u64);
    match end {
        Some(end) => Ok(data[ptr as usize..end as usize].to_vec()),
        None => trap(format!("read of {len} bytes at {ptr} is outside the heap")),
    }
}

fn write(c: &mut Caller<'_, Env>, ptr: u64, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = memory(c)?;
    if mem.write(&mut *c, ptr as usize, bytes).is_err() {
        return trap(format!(
            "write of {} bytes at {ptr} is outside the heap",
            bytes.len()
        ));
    }
    Ok(())
}

/// `*_copy(dst, offset, size)`: copies `src[offset..offset+size]` to the heap at `dst`.
fn copy_out(
    c: &mut Caller<'_, Env>,
    src: &[u8],
    dst: u64,
    off: u64,
    size: u64,
) -> wasmtime::Result<()> {
    let end = off.checked_add(size).filter(|e| *e <= src.len() as u64);
    let Some(end) = end else {
        return trap(format!(
            "copy of {size} bytes at offset {off} from a {}-byte source",
            src.len()
        ));
    };
    let bytes = src[off as usize..end as usize].to_vec();
    write(c, dst, &bytes)
}

fn respond(c: &mut Caller<'_, Env>, outcome: Outcome) -> wasmtime::Result<()> {
    if c.data().outcome.is_some() {
        return trap("the message was already replied to or rejected");
    }
    c.data_mut().outcome = Some(outcome);
    Ok(())
}

fn not_yet<T>(what: &str) -> wasmtime::Result<T> {
    trap(format!("ic0.{what}: not available on this replica yet"))
}

/// The `ic0` imports for memories addressed by `I`.
pub fn linker<I: Ptr>(engine: &Engine) -> wasmtime::Result<Linker<Env>> {
    let mut l = Linker::new(engine);
    l.func_wrap("ic0", "msg_arg_data_size", |c: Caller<'_, Env>| -> I {
        I::of(c.data().ctx.arg.len() as u64)
    })?;
    l.func_wrap(
        "ic0",
        "msg_arg_data_copy",
        |mut c: Caller<'_, Env>, dst: I, off: I, size: I| {
            let src = c.data().ctx.arg.clone();
            copy_out(&mut c, &src, dst.get(), off.get(), size.get())
        },
    )?;
    l.func_wrap("ic0", "msg_caller_size", |c: Caller<'_, Env>| -> I {
        I::of(c.data().ctx.caller.len() as u64)
    })?;
    l.func_wrap(
        "ic0",
        "msg_caller_copy",
        |mut c: Caller<'_, Env>, dst: I, off: I, size: I| {
            let src = c.data().ctx.caller.clone();
            copy_out(&mut c, &src, dst.get(), off.get(), size.get())
        },
    )?;
    l.func_wrap("ic0", "msg_method_name_size", |c: Caller<'_, Env>| -> I {
        I::of(c.data().ctx.method_name.len() as u64)
    })?;
    l.func_wrap(
        "ic0",
        "msg_method_name_copy",
        |mut c: Caller<'_, Env>, dst: I, off: I, size: I| {
            let src = c.data().ctx.method_name.clone().into_bytes();
            copy_out(&mut c, &src, dst.get(), off.get(), size.get())
        },
    )?;
    l.func_wrap(
        "ic0",
        "msg_reply_data_append",
        |mut c: Caller<'_, Env>, src: I, size: I| {
            if c.data().outcome.is_some() {
                return trap("reply data appended after the message was answered");
            }
            let bytes = read(&mut c, src.get(), size.get())?;
            let reply = &mut c.data_mut().reply;
            if reply.len() + bytes.len() > 2 * 1024 * 1024 {
                return trap("reply larger than 2 MiB");
            }
            reply.extend_from_slice(&bytes);
            Ok(())
        },
    )?;
    l.func_wrap("ic0", "msg_reply", |mut c: Caller<'_, Env>| {
        let data = std::mem::take(&mut c.data_mut().reply);
        respond(&mut c, Outcome::Reply(data))
    })?;
    l.func_wrap(
        "ic0",
        "msg_reject",
        |mut c: Caller<'_, Env>, src: I, size: I| {
            let bytes = read(&mut c, src.get(), size.get())?;
            let msg = String::from_utf8_lossy(&bytes).into_owned();
            respond(&mut c, Outcome::Reject(msg))
        },
    )?;
    l.func_wrap(
        "ic0",
        "msg_reject_code",
        |_: Caller<'_, Env>| -> wasmtime::Result<i32> { not_yet("msg_reject_code (callbacks)") },
    )?;
    l.func_wrap(
        "ic0",
        "msg_reject_msg_size",
        |_: Caller<'_, Env>| -> wasmtime::Result<I> { not_yet("msg_reject_msg_size (callbacks)") },
    )?;
    l.func_wrap(
        "ic0",
        "msg_reject_msg_copy",
        |_: Caller<'_, Env>, _: I, _: I, _: I| -> wasmtime::Result<()> {
            not_yet("msg_reject_msg_copy (callbacks)")
        },
    )?;
    l.func_wrap("ic0", "accept_message", |_: Caller<'_, Env>| {})?;
    l.func_wrap("ic0", "canister_self_size", |c: Caller<'_, Env>| -> I {
        I::of(c.data().ctx.canister_id.len() as u64)
    })?;
    l.func_wrap(
        "ic0",
        "canister_self_copy",
        |mut c: Caller<'_, Env>, dst: I, off: I, size: I| {
            let src = c.data().ctx.canister_id.clone();
            copy_out(&mut c, &src, dst.get(), off.get(), size.get())
        },
    )?;
    l.func_wrap("ic0", "canister_status", |c: Caller<'_, Env>| -> i32 {
        c.data().ctx.status as i32
    })?;
    l.func_wrap("ic0", "canister_version", |c: Caller<'_, Env>| -> i64 {
        c.data().ctx.version as i64
    })?;
    l.func_wrap(
        "ic0",
        "canister_cycle_balance128",
        |mut c: Caller<'_, Env>, dst: I| {
            let b = c.data().ctx.cycles.to_le_bytes();
            write(&mut c, dst.get(), &b)
        },
    )?;
    l.func_wrap(
        "ic0",
        "in_replicated_execution",
        |c: Caller<'_, Env>| -> i32 { i32::from(c.data().ctx.replicated) },
    )?;
    // Guaranteed-response messages have no deadline.
    l.func_wrap("ic0", "msg_deadline", |_: Caller<'_, Env>| -> i64 { 0 })?;
    l.func_wrap(
        "ic0",
        "certified_data_set",
        |mut c: Caller<'_, Env>, src: I, size: I| {
            if !c.data().ctx.replicated {
                return trap("certified_data_set is only available in replicated execution");
            }
            if size.get() > MAX_CERTIFIED_DATA {
                return trap(format!(
                    "certified_data_set: {} bytes, at most {MAX_CERTIFIED_DATA} may be certified",
                    size.get()
                ));
            }
            let bytes = read(&mut c, src.get(), size.get())?;
            c.data_mut().certified_data = Some(bytes);
            Ok(())
        },
    )?;
    l.func_wrap(
        "ic0",
        "data_certificate_present",
        |c: Caller<'_, Env>| -> i32 { i32::from(c.data().ctx.data_certificate.is_some()) },
    )?;
    l.func_wrap(
        "ic0",
        "data_certificate_size",
        |c: Caller<'_, Env>| -> wasmtime::Result<I> {
            match &c.data().ctx.data_certificate {
                Some(cert) => Ok(I::of(cert.len() as u64)),
                None => trap("data_certificate_size: no certificate in this execution"),
            }
        },
    )?;
    l.func_wrap(
        "ic0",
        "data_certificate_copy",
        |mut c: Caller<'_, Env>, dst: I, off: I, size: I| {
            let Some(src) = c.data().ctx.data_certificate.clone() else {
                return trap("data_certificate_copy: no certificate in this execution");
            };
            copy_out(&mut c, &src, dst.get(), off.get(), size.get())
        },
    )?;
    l.func_wrap(
        "ic0",
        "debug_print",
        |mut c: Caller<'_, Env>, src: I, size: I| {
            let size = size.get().min(MAX_DEBUG_BYTES as u64);
            let bytes = read(&mut c, src.get(), size)?;
            let line = String::from_utf8_lossy(&bytes).into_owned();
            tracing::debug!(canister.output = %line, "debug_print");
            c.data_mut().debug_output.push(line);
            Ok(())
        },
    )?;
    l.func_wrap("ic0", "trap", |mut c: Caller<'_, Env>, src: I, size: I| {
        let size = size.get().min(MAX_DEBUG_BYTES as u64);
        let bytes = read(&mut c, src.get(), size)?;
        trap::<()>(String::from_utf8_lossy(&bytes).into_owned())
    })?;
    l.func_wrap("ic0", "time", |c: Caller<'_, Env>| -> i64 {
        c.data().ctx.time_ns as i64
    })?;
    l.func_wrap(
        "ic0",
        "global_timer_set",
        |mut c: Caller<'_, Env>, t: i64| -> i64 {
            std::mem::replace(&mut c.data_mut().global_timer, t as u64) as i64
        },
    )?;
    l.func_wrap(
        "ic0",
        "performance_counter",
        |c: Caller<'_, Env>, _kind: i32| -> i64 {
            let left = c.get_fuel().unwrap_or(0);
            c.data().instruction_limit.saturating_sub(left) as i64
        },
    )?;
    l.func_wrap(
        "ic0",
        "is_controller",
        |mut c: Caller<'_, Env>, src: I, size: I| {
            let p = read(&mut c, src.get(), size.get())?;
            if p.len() > 29 {
                return trap("is_controller: not a principal (more than 29 bytes)");
            }
            Ok(i32::from(c.data().ctx.controllers.contains(&p)))
        },
    )?;
    l.func_wrap("ic0", "stable64_size", |c: Caller<'_, Env>| -> i64 {
        (c.data().stable.len() as u64 / PAGE) as i64
    })?;
    l.func_wrap(
        "ic0",
        "stable64_grow",
        |mut c: Caller<'_, Env>, pages: i64| -> i64 {
            let old = c.data().stable.len() as u64 / PAGE;
            match old.checked_add(pages as u64) {
                Some(new) if pages >= 0 && new <= MAX_STABLE_PAGES => {
                    c.data_mut().stable.resize((new * PAGE) as usize, 0);
                    old as i64
                }
                _ => -1,
            }
        },
    )?;
    l.func_wrap(
        "ic0",
        "stable64_write",
        |mut c: Caller<'_, Env>, off: i64, src: i64, size: i64| {
            let bytes = read(&mut c, src as u64, size as u64)?;
            let stable = &mut c.data_mut().stable;
            let end = (off as u64).checked_add(size as u64);
            match end {
                Some(end) if end <= stable.len() as u64 => {
                    stable[off as usize..end as usize].copy_from_slice(&bytes);
                    Ok(())
                }
                _ => trap("stable64_write outside stable memory"),
            }
        },
    )?;
    l.func_wrap(
        "ic0",
        "stable64_read",
        |mut c: Caller<'_, Env>, dst: i64, off: i64, size: i64| {
            let stable = &c.data().stable;
            let end = (off as u64).checked_add(size as u64);
            let bytes = match end {
                Some(end) if end <= stable.len() as u64 => {
                    stable[off as usize..end as usize].to_vec()
                }
                _ => return trap("stable64_read outside stable memory"),
            };
            write(&mut c, dst as u64, &bytes)
        },
    )?;
    // Cycles: this replica does not charge cycles yet; canisters see none attached.
    l.func_wrap(
        "ic0",
        "msg_cycles_refunded128",
        |mut c: Caller<'_, Env>, dst: I| write(&mut c, dst.get(), &[0u8; 16]),
    )?;
    l.func_wrap(
        "ic0",
        "msg_cycles_available128",
        |mut c: Caller<'_, Env>, dst: I| write(&mut c, dst.get(), &[0u8; 16]),
    )?;
    l.func_wrap(
        "ic0",
        "msg_cycles_accept128",
        |mut c: Caller<'_, Env>, _hi: i64, _lo: i64, dst: I| write(&mut c, dst.get(), &[0u8; 16]),
    )?;
    l.func_wrap(
        "ic0",
        "call_new",
        |_: Caller<'_, Env>,
         _: I,
         _: I,
         _: I,
         _: I,
         _: I,
         _: I,
         _: I,
         _: I|
         -> wasmtime::Result<()> { not_yet("call_new (inter-canister calls)") },
    )?;
    l.func_wrap(
        "ic0",
        "call_on_cleanup",
        |_: Caller<'_, Env>, _: I, _: I| -> wasmtime::Result<()> { not_yet("call_on_cleanup") },
    )?;
    l.func_wrap(
        "ic0",
        "call_data_append",
        |_: Caller<'_, Env>, _: I, _: I| -> wasmtime::Result<()> { not_yet("call_data_append") },
    )?;
    l.func_wrap(
        "ic0",
        "call_cycles_add128",
        |_: Caller<'_, Env>, _: i64, _: i64| -> wasmtime::Result<()> {
            not_yet("call_cycles_add128")
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_with_best_effort_response",
        |_: Caller<'_, Env>, _: i32| -> wasmtime::Result<()> {
            not_yet("call_with_best_effort_response")
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_perform",
        |_: Caller<'_, Env>| -> wasmtime::Result<i32> { not_yet("call_perform") },
    )?;
    Ok(l)
}
