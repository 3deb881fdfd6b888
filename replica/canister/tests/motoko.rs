//! A real Motoko canister (compiled in this test run by the `motoko` npm package, enhanced
//! orthogonal persistence: a wasm64 module) through its lifecycle: init, update calls whose
//! state persists, a Candid argument and reply, a trap that rolls back, an endless loop cut by
//! the instruction limit.

use thicket_canister::{CallContext, CanisterMemory, ExecError, Outcome, Runtime};

fn compile(name: &str) -> Vec<u8> {
    thicket_canister::motoko::compile_sample(name).expect("the Motoko sample compiles")
}

fn ctx(arg: &[u8]) -> CallContext {
    CallContext {
        arg: arg.to_vec(),
        caller: vec![4],
        canister_id: vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        controllers: vec![vec![4]],
        time_ns: 1_700_000_000_000_000_000,
        status: 1,
        can_respond: true,
        ..CallContext::default()
    }
}

/// Candid: no arguments, and a single `nat` / `text` reply.
const NO_ARGS: &[u8] = b"DIDL\x00\x00";
fn nat(n: u8) -> Vec<u8> {
    [b"DIDL\x00\x01\x7d".as_slice(), &[n]].concat()
}

const LIMIT: u64 = 5_000_000_000;

#[test]
fn a_motoko_counter_keeps_its_state_rolls_back_traps_and_is_metered() {
    let rt = Runtime::new().expect("runtime");
    let m = rt
        .compile(&compile("Counter"))
        .expect("Motoko's module compiles");
    assert!(
        m.is_wasm64(),
        "enhanced orthogonal persistence uses a 64-bit memory"
    );

    let out = rt.initialize(
        &m,
        &CanisterMemory::default(),
        "canister_init",
        ctx(NO_ARGS),
        LIMIT,
    );
    assert_eq!(out.result, Ok(Outcome::NoResponse));
    let mut mem = out.memory.expect("initialized");

    for n in 1..=3 {
        let out = rt.execute(&m, &mem, "canister_update inc", ctx(NO_ARGS), LIMIT);
        assert_eq!(out.result, Ok(Outcome::Reply(nat(n))));
        assert_eq!(out.debug_output, vec![format!("count is {n}")]);
        mem = out.memory.expect("kept");
    }

    let out = rt.execute(
        &m,
        &mem,
        "canister_update greet",
        ctx(b"DIDL\x00\x01\x71\x05world"),
        LIMIT,
    );
    assert_eq!(
        out.result,
        Ok(Outcome::Reply(
            b"DIDL\x00\x01\x71\x0dHello, world!".to_vec()
        ))
    );

    let out = rt.execute(
        &m,
        &mem,
        "canister_update inc_then_trap",
        ctx(NO_ARGS),
        LIMIT,
    );
    assert!(
        matches!(&out.result, Err(ExecError::CalledTrap(msg)) if msg.contains("refusing on purpose")),
        "{:?}",
        out.result
    );
    assert!(out.memory.is_none());

    let out = rt.execute(&m, &mem, "canister_update spin", ctx(NO_ARGS), 50_000_000);
    assert_eq!(out.result, Err(ExecError::OutOfInstructions(50_000_000)));

    // The trap and the loop changed nothing.
    let out = rt.execute(&m, &mem, "canister_query get", ctx(NO_ARGS), LIMIT);
    assert_eq!(out.result, Ok(Outcome::Reply(nat(3))));
}
