//! Execution semantics on hand-written modules: replies, persistence between messages, traps
//! that roll back, the instruction limit, wasm64, NaN canonicalization and the module cache.

use std::sync::Arc;

use thicket_canister::{
    CallContext, CanisterMemory, Compiled, ExecError, Executed, Outcome, Runtime,
};

/// A counter in memory word 0: `inc` adds one and replies with the new value (4 bytes LE);
/// `inc_then_trap` adds one and traps; `spin` loops forever; `echo` replies with its argument;
/// `nan` replies with the bits of 0/0 computed in f32.
const COUNTER32: &str = r#"
(module
  (import "ic0" "msg_arg_data_size" (func $arg_size (result i32)))
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i32 i32 i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (import "ic0" "debug_print" (func $print (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "boom")
  (func $bump (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))))
  (func (export "canister_update inc")
    (call $bump)
    (call $print (i32.const 100) (i32.const 4))
    (call $append (i32.const 0) (i32.const 4))
    (call $reply))
  (func (export "canister_update inc_then_trap")
    (call $bump)
    (call $trap (i32.const 100) (i32.const 4)))
  (func (export "canister_update spin") (loop $l (br $l)))
  (func (export "canister_update echo")
    (call $arg_copy (i32.const 200) (i32.const 0) (call $arg_size))
    (call $append (i32.const 200) (call $arg_size))
    (call $reply))
  (func (export "canister_query nan")
    (i32.store (i32.const 300) (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
    (call $append (i32.const 300) (i32.const 4))
    (call $reply))
)
"#;

const ECHO64: &str = r#"
(module
  (import "ic0" "msg_arg_data_size" (func $arg_size (result i64)))
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i64 i64 i64)))
  (import "ic0" "msg_reply_data_append" (func $append (param i64 i64)))
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") i64 2)
  (func (export "canister_update echo")
    (call $arg_copy (i64.const 70000) (i64.const 0) (call $arg_size))
    (call $append (i64.const 70000) (call $arg_size))
    (call $reply))
)
"#;

const LIMIT: u64 = 10_000_000;

fn ctx(arg: &[u8]) -> CallContext {
    CallContext {
        arg: arg.to_vec(),
        status: 1,
        can_respond: true,
        ..CallContext::default()
    }
}

/// Runs `entry` on an empty heap with no argument.
fn on_empty_heap(rt: &Runtime, m: &std::sync::Arc<Compiled>, entry: &str) -> Executed {
    rt.execute(m, &CanisterMemory::default(), entry, ctx(b""), LIMIT)
}

fn wasm(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

#[test]
fn state_persists_between_messages_and_a_trap_rolls_back() {
    let rt = Runtime::new().expect("runtime");
    let m = rt.compile(&wasm(COUNTER32)).expect("compiles");
    let mut mem = CanisterMemory::default();
    for expect in 1u32..=3 {
        let out = rt.execute(&m, &mem, "canister_update inc", ctx(b""), LIMIT);
        assert_eq!(
            out.result,
            Ok(Outcome::Reply(expect.to_le_bytes().to_vec()))
        );
        assert_eq!(out.debug_output, vec!["boom".to_string()]);
        assert!(out.instructions > 0);
        mem = out.memory.expect("kept");
    }
    let out = rt.execute(&m, &mem, "canister_update inc_then_trap", ctx(b""), LIMIT);
    assert_eq!(out.result, Err(ExecError::CalledTrap("boom".into())));
    assert!(out.memory.is_none(), "nothing of a trapped message is kept");
    let out = rt.execute(&m, &mem, "canister_update inc", ctx(b""), LIMIT);
    assert_eq!(out.result, Ok(Outcome::Reply(4u32.to_le_bytes().to_vec())));
}

#[test]
fn an_endless_loop_is_cut_at_the_instruction_limit() {
    let rt = Runtime::new().expect("runtime");
    let m = rt.compile(&wasm(COUNTER32)).expect("compiles");
    let out = on_empty_heap(&rt, &m, "canister_update spin");
    assert_eq!(out.result, Err(ExecError::OutOfInstructions(LIMIT)));
    assert_eq!(out.instructions, LIMIT);
    assert!(out.memory.is_none());
}

#[test]
fn arguments_replies_and_missing_methods() {
    let rt = Runtime::new().expect("runtime");
    let m = rt.compile(&wasm(COUNTER32)).expect("compiles");
    let mem = CanisterMemory::default();
    let out = rt.execute(&m, &mem, "canister_update echo", ctx(b"DIDL\0\0"), LIMIT);
    assert_eq!(out.result, Ok(Outcome::Reply(b"DIDL\0\0".to_vec())));
    let out = rt.execute(&m, &mem, "canister_update nope", ctx(b""), LIMIT);
    assert_eq!(
        out.result,
        Err(ExecError::MissingMethod("canister_update nope".into()))
    );
}

#[test]
fn wasm64_modules_run_with_64_bit_pointers() {
    let rt = Runtime::new().expect("runtime");
    let m = rt.compile(&wasm(ECHO64)).expect("compiles");
    assert!(m.is_wasm64());
    let out = rt.execute(
        &m,
        &CanisterMemory::default(),
        "canister_update echo",
        ctx(b"sixty-four"),
        LIMIT,
    );
    assert_eq!(out.result, Ok(Outcome::Reply(b"sixty-four".to_vec())));
}

#[test]
fn nans_are_canonical_and_modules_are_compiled_once() {
    let rt = Runtime::new().expect("runtime");
    let bytes = wasm(COUNTER32);
    let a = rt.compile(&bytes).expect("compiles");
    let b = rt.compile(&bytes).expect("compiles");
    assert!(
        Arc::ptr_eq(&a, &b),
        "the second compile comes from the cache"
    );
    let out = on_empty_heap(&rt, &a, "canister_query nan");
    assert_eq!(
        out.result,
        Ok(Outcome::Reply(0x7fc0_0000u32.to_le_bytes().to_vec()))
    );
}

#[test]
fn invalid_modules_are_refused_with_a_reason() {
    let rt = Runtime::new().expect("runtime");
    assert!(matches!(
        rt.compile(b"\0asm garbage"),
        Err(ExecError::InvalidModule(_))
    ));
    let two_memories =
        wasm(r#"(module (import "env" "m" (memory 1)) (memory (export "memory") 1))"#);
    assert!(matches!(
        rt.compile(&two_memories),
        Err(ExecError::InvalidModule(_))
    ));
    // A module importing what the System API does not have compiles, and each message on it
    // fails with the import named (imports are resolved once per module, when they can be).
    let unknown = wasm(
        r#"(module (import "ic0" "no_such_call" (func))
             (memory (export "memory") 1)
             (func (export "canister_update go")))"#,
    );
    let compiled = rt.compile(&unknown).expect("compiles");
    let out = on_empty_heap(&rt, &compiled, "canister_update go");
    let err = format!("{:?}", out.result.expect_err("fails"));
    assert!(err.contains("no_such_call"), "{err}");
}
