//! One execution on one instance: the memory it starts from put into a fresh instance, the
//! entry point called with fuel as the instruction meter, and what it leaves taken out.

use wasmtime::{Engine, Instance, Linker, Store, Val};

use crate::memory::{Saved, globals_of, heap_after, restore};
use crate::{
    CallContext, CanisterMemory, Closure, Compiled, Entry, ExecError, Executed, Outcome, Run,
    mapped, module_info, system_api,
};

/// How the heap a message leaves is found: by scanning the memory (the pages it wrote), or
/// given without a scan by `defer` (its length and the instructions the message used in, the
/// version out).
pub(crate) type Defer = Box<dyn FnOnce(usize, u64) -> crate::PageMap>;

/// Where an execution's memory comes from and goes, and what it keeps of a kept memory.
pub(crate) struct Memory {
    pub source: mapped::Source,
    pub home: Option<mapped::Home>,
    pub saved: Option<Saved>,
    pub defer: Option<Defer>,
}

/// Runs `entry` (after the module's start function when installing) on an instance of
/// `compiled` made on `engine` (from its pre-resolved imports, or through `linker`), starting
/// from `memory`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_in(
    engine: &Engine,
    linker: Option<&Linker<system_api::Env>>,
    compiled: &Compiled,
    memory: &CanisterMemory,
    entry: Option<Entry<'_>>,
    how: Run,
    ctx: CallContext,
    instruction_limit: u64,
    mem: Memory,
) -> Executed {
    let mut store = Store::new(engine, system_api::Env::new(ctx, memory.stable.clone()));
    store.data_mut().memory_export = compiled.memory_export.clone();
    store.data_mut().instruction_limit = instruction_limit;
    let fail = |result: ExecError, store: &Store<system_api::Env>| Executed {
        result: Err(result),
        instructions: instruction_limit.saturating_sub(store.get_fuel().unwrap_or(0)),
        memory: None,
        global_timer: store.data().ctx.global_timer,
        certified_data: None,
        calls: Vec::new(),
        cycles_balance: store.data().ctx.cycles,
        cycles_available: store.data().ctx.cycles_available,
        debug_output: store.data().debug_output.clone(),
    };
    if store.set_fuel(instruction_limit).is_err() {
        return fail(ExecError::Trap("fuel unavailable".into()), &store);
    }
    let (instantiated, hot) =
        mapped::with_source(mem.source, mem.home, || match (&compiled.pre, linker) {
            (Some(pre), _) => pre.instantiate(&mut store),
            (None, Some(linker)) => linker.instantiate(&mut store, &compiled.module),
            (None, None) => Err(wasmtime::Error::msg("the module's imports do not resolve")),
        });
    let instance = match instantiated {
        Ok(i) => i,
        Err(e) => return fail(classify(e, instruction_limit), &store),
    };
    if let Err(e) = restore(&mut store, &instance, compiled, memory, hot, mem.saved) {
        return fail(e, &store);
    }
    let start = (how == Run::Install && compiled.has_start)
        .then_some(Entry::Export(module_info::START_EXPORT));
    for entry in start.into_iter().chain(entry) {
        let called = match entry {
            Entry::Export(name) => {
                let Some(func) = instance
                    .get_func(&mut store, name)
                    .and_then(|f| f.typed::<(), ()>(&store).ok())
                else {
                    return fail(ExecError::MissingMethod(name.to_string()), &store);
                };
                func.call(&mut store, ())
            }
            Entry::Closure(closure) => {
                match closure_func(&mut store, &instance, compiled, closure) {
                    Ok((func, arg)) => func.call(&mut store, &[arg], &mut []),
                    Err(e) => return fail(e, &store),
                }
            }
        };
        if let Err(e) = called {
            return fail(classify(e, instruction_limit), &store);
        }
    }
    if store.data().pending.is_some() {
        return fail(
            ExecError::ContractViolation(
                "the message ended with a call under construction (ic0.call_new without ic0.call_perform)".into(),
            ),
            &store,
        );
    }
    let used = instruction_limit.saturating_sub(store.get_fuel().unwrap_or(0));
    // Taking the memory out again: not for a query.
    let left = (how != Run::Discard).then(|| {
        let heap = match mem.defer {
            Some(defer) => defer(heap_len(&mut store, &instance, compiled), used),
            None => heap_after(&mut store, &instance, compiled, &memory.heap, hot),
        };
        (heap, globals_of(&mut store, &instance, compiled))
    });
    let env = store.into_data();
    Executed {
        result: Ok(env.outcome.unwrap_or(Outcome::NoResponse)),
        instructions: used,
        memory: left.map(|(heap, globals)| CanisterMemory {
            heap,
            globals,
            stable: env.stable,
        }),
        global_timer: env.global_timer,
        certified_data: env.certified_data,
        calls: env.calls,
        cycles_balance: env.balance,
        cycles_available: env.available,
        debug_output: env.debug_output,
    }
}

/// The instance's memory size in bytes (0 without one).
fn heap_len(store: &mut Store<system_api::Env>, instance: &Instance, compiled: &Compiled) -> usize {
    compiled
        .memory_export
        .as_ref()
        .and_then(|n| instance.get_memory(&mut *store, n))
        .map_or(0, |m| m.data_size(&*store))
}

/// The table function a closure names, and its argument: a callback has type `(env: I) -> ()`
/// with `I` the width of the canister's memory.
fn closure_func(
    store: &mut Store<system_api::Env>,
    instance: &Instance,
    compiled: &Compiled,
    closure: Closure,
) -> Result<(wasmtime::Func, Val), ExecError> {
    let violation = |m: String| ExecError::ContractViolation(m);
    let table = compiled
        .table_export
        .as_ref()
        .and_then(|name| instance.get_table(&mut *store, name))
        .ok_or_else(|| {
            violation("a callback needs a function table, and the module has none".into())
        })?;
    let func = match table.get(&mut *store, closure.fun) {
        Some(wasmtime::Ref::Func(Some(f))) => f,
        _ => {
            return Err(violation(format!(
                "callback {} is not a function of the table",
                closure.fun
            )));
        }
    };
    let ty = func.ty(&*store);
    let params: Vec<wasmtime::ValType> = ty.params().collect();
    let (want, arg) = if compiled.memory64 {
        (wasmtime::ValType::I64, Val::I64(closure.env as i64))
    } else {
        (wasmtime::ValType::I32, Val::I32(closure.env as u32 as i32))
    };
    let fits = params.len() == 1 && params[0].matches(&want) && ty.results().len() == 0;
    if !fits {
        return Err(violation(format!(
            "callback {} does not have the type (env: {want}) -> ()",
            closure.fun
        )));
    }
    Ok((func, arg))
}

fn classify(e: wasmtime::Error, limit: u64) -> ExecError {
    if let Some(t) = e.downcast_ref::<system_api::CanisterTrap>() {
        return ExecError::ContractViolation(t.0.clone());
    }
    if let Some(t) = e.downcast_ref::<system_api::CalledTrap>() {
        return ExecError::CalledTrap(t.0.clone());
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => ExecError::OutOfInstructions(limit),
        Some(t) => ExecError::Trap(t.to_string()),
        None => ExecError::Trap(e.to_string()),
    }
}
