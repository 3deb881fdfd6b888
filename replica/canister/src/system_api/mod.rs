//! The `ic0` System API: the imports a canister calls, for 32-bit (`I = i32`) and 64-bit
//! (`I = i64`) memories. Each import checks its bounds and traps with a message on misuse.
//!
//! Implemented here: message data, caller, reply and reject (also from callbacks, with the
//! reject code and message of a rejected call), canister id and status, debug print, trap,
//! time, stable64 memory, the performance counter, the global timer, `is_controller`,
//! certified data, cycles (balance, attaching cycles to calls, accepting and refunds), and
//! inter-canister calls: `call_new` … `call_perform` record the call with its reply, reject
//! and cleanup closures; the subnet delivers it once the message commits (a trap drops it).
//! Functions used where the spec does not allow them trap with a message saying so.

use wasmtime::{Caller, Engine, Extern, Linker, Memory};

mod costs;
mod env;

pub use costs::CREATE_CANISTER_FEE;
pub use env::*;

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
    if !c.data().ctx.can_respond {
        return trap(
            "this entry point cannot reply or reject: it answers no call, or its call was already answered",
        );
    }
    if c.data().outcome.is_some() {
        return trap("the message was already replied to or rejected");
    }
    c.data_mut().outcome = Some(outcome);
    Ok(())
}

/// Traps unless the entry point is a callback; returns the reject code and message.
fn reject_info(c: &Caller<'_, Env>, what: &str) -> wasmtime::Result<(u32, String)> {
    match &c.data().ctx.reject {
        Some(r) => Ok(r.clone()),
        None => trap(format!(
            "ic0.{what} is only available in a reply or reject callback"
        )),
    }
}

fn cycles(hi: i64, lo: i64) -> u128 {
    (u128::from(hi as u64) << 64) | u128::from(lo as u64)
}

/// The call under construction; traps when there is none.
fn pending<'a>(c: &'a mut Caller<'_, Env>, what: &str) -> wasmtime::Result<&'a mut OutgoingCall> {
    match c.data_mut().pending.as_mut() {
        Some(p) => Ok(p),
        None => trap(format!(
            "ic0.{what}: no call is under construction (call ic0.call_new first)"
        )),
    }
}

/// The `ic0` imports for memories addressed by `I`.
pub fn linker<I: Ptr>(engine: &Engine) -> wasmtime::Result<Linker<Env>> {
    let mut l = Linker::new(engine);
    costs::link::<I>(&mut l)?;
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
            if c.data().outcome.is_some() || !c.data().ctx.can_respond {
                return trap("reply data appended where the message cannot be answered");
            }
            let bytes = read(&mut c, src.get(), size.get())?;
            let reply = &mut c.data_mut().reply;
            if reply.len() + bytes.len() > MAX_REPLY_BYTES {
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
        |c: Caller<'_, Env>| -> wasmtime::Result<i32> {
            Ok(reject_info(&c, "msg_reject_code")?.0 as i32)
        },
    )?;
    l.func_wrap(
        "ic0",
        "msg_reject_msg_size",
        |c: Caller<'_, Env>| -> wasmtime::Result<I> {
            let (code, msg) = reject_info(&c, "msg_reject_msg_size")?;
            if code == 0 {
                return trap("ic0.msg_reject_msg_size is only available in a reject callback");
            }
            Ok(I::of(msg.len() as u64))
        },
    )?;
    l.func_wrap(
        "ic0",
        "msg_reject_msg_copy",
        |mut c: Caller<'_, Env>, dst: I, off: I, size: I| {
            let (code, msg) = reject_info(&c, "msg_reject_msg_copy")?;
            if code == 0 {
                return trap("ic0.msg_reject_msg_copy is only available in a reject callback");
            }
            copy_out(&mut c, msg.as_bytes(), dst.get(), off.get(), size.get())
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
    let balance = |mut c: Caller<'_, Env>, dst: I| {
        let b = c.data().balance.to_le_bytes();
        write(&mut c, dst.get(), &b)
    };
    l.func_wrap("ic0", "canister_cycle_balance128", balance)?;
    // Nothing is reserved and no freezing reserve is charged here: all of the balance can be
    // spent.
    l.func_wrap("ic0", "canister_liquid_cycle_balance128", balance)?;
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
        let msg = String::from_utf8_lossy(&bytes).into_owned();
        Err::<(), _>(wasmtime::Error::new(CalledTrap(msg)))
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
    // Cycles: this replica does not charge for execution; cycles move with calls.
    l.func_wrap(
        "ic0",
        "msg_cycles_refunded128",
        |mut c: Caller<'_, Env>, dst: I| {
            reject_info(&c, "msg_cycles_refunded128")?;
            let b = c.data().ctx.cycles_refunded.to_le_bytes();
            write(&mut c, dst.get(), &b)
        },
    )?;
    l.func_wrap(
        "ic0",
        "msg_cycles_available128",
        |mut c: Caller<'_, Env>, dst: I| {
            let b = c.data().available.to_le_bytes();
            write(&mut c, dst.get(), &b)
        },
    )?;
    l.func_wrap(
        "ic0",
        "msg_cycles_accept128",
        |mut c: Caller<'_, Env>, hi: i64, lo: i64, dst: I| {
            let env = c.data_mut();
            let take = cycles(hi, lo).min(env.available);
            env.available -= take;
            env.balance = env.balance.saturating_add(take);
            write(&mut c, dst.get(), &take.to_le_bytes())
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_new",
        |mut c: Caller<'_, Env>,
         callee_src: I,
         callee_size: I,
         name_src: I,
         name_size: I,
         reply_fun: I,
         reply_env: I,
         reject_fun: I,
         reject_env: I|
         -> wasmtime::Result<()> {
            if !c.data().ctx.can_call {
                return trap("ic0.call_new: this entry point cannot make calls");
            }
            if name_size.get() > MAX_METHOD_NAME_BYTES {
                return trap("ic0.call_new: the method name is too long");
            }
            if callee_size.get() > 29 {
                return trap("ic0.call_new: the callee is not a principal (more than 29 bytes)");
            }
            let callee = read(&mut c, callee_src.get(), callee_size.get())?;
            let name = read(&mut c, name_src.get(), name_size.get())?;
            let Ok(method) = String::from_utf8(name) else {
                return trap("ic0.call_new: the method name is not UTF-8");
            };
            let env = c.data_mut();
            // A call left under construction is abandoned: its cycles return to the balance.
            if let Some(old) = env.pending.take() {
                env.balance = env.balance.saturating_add(old.cycles);
            }
            env.pending = Some(OutgoingCall {
                callee,
                method,
                arg: Vec::new(),
                cycles: 0,
                reply: Closure {
                    fun: reply_fun.get(),
                    env: reply_env.get(),
                },
                reject: Closure {
                    fun: reject_fun.get(),
                    env: reject_env.get(),
                },
                cleanup: None,
            });
            Ok(())
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_on_cleanup",
        |mut c: Caller<'_, Env>, fun: I, env: I| -> wasmtime::Result<()> {
            let p = pending(&mut c, "call_on_cleanup")?;
            if p.cleanup.is_some() {
                return trap("ic0.call_on_cleanup: the call already has a cleanup callback");
            }
            p.cleanup = Some(Closure {
                fun: fun.get(),
                env: env.get(),
            });
            Ok(())
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_data_append",
        |mut c: Caller<'_, Env>, src: I, size: I| -> wasmtime::Result<()> {
            pending(&mut c, "call_data_append")?;
            let bytes = read(&mut c, src.get(), size.get())?;
            let p = pending(&mut c, "call_data_append")?;
            if p.arg.len() + bytes.len() > MAX_CALL_ARG_BYTES {
                return trap("ic0.call_data_append: the argument exceeds 2 MiB");
            }
            p.arg.extend_from_slice(&bytes);
            Ok(())
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_cycles_add128",
        |mut c: Caller<'_, Env>, hi: i64, lo: i64| -> wasmtime::Result<()> {
            pending(&mut c, "call_cycles_add128")?;
            let amount = cycles(hi, lo);
            let env = c.data_mut();
            if amount > env.balance {
                return trap(format!(
                    "ic0.call_cycles_add128: {amount} cycles requested, the balance is {}",
                    env.balance
                ));
            }
            env.balance -= amount;
            if let Some(p) = env.pending.as_mut() {
                p.cycles = p.cycles.saturating_add(amount);
            }
            Ok(())
        },
    )?;
    // Every call on this subnet gets a response, so a best-effort call is a guaranteed one.
    l.func_wrap(
        "ic0",
        "call_with_best_effort_response",
        |mut c: Caller<'_, Env>, _timeout_seconds: i32| -> wasmtime::Result<()> {
            pending(&mut c, "call_with_best_effort_response").map(|_| ())
        },
    )?;
    l.func_wrap(
        "ic0",
        "call_perform",
        |mut c: Caller<'_, Env>| -> wasmtime::Result<i32> {
            pending(&mut c, "call_perform")?;
            let env = c.data_mut();
            let Some(call) = env.pending.take() else {
                return trap("ic0.call_perform: no call is under construction");
            };
            let bytes: u64 = env.calls.iter().map(|c| c.arg.len() as u64).sum();
            let too_big = bytes + call.arg.len() as u64 > env.ctx.call_bytes;
            if env.calls.len() >= env.ctx.call_slots as usize || too_big {
                // SYS_TRANSIENT: too many outstanding calls, or the subnet's queue is full;
                // the cycles stay with the caller.
                env.balance = env.balance.saturating_add(call.cycles);
                return Ok(2);
            }
            env.calls.push(call);
            Ok(0)
        },
    )?;
    Ok(l)
}
