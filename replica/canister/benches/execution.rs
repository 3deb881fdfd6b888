//! Execution figures for BENCHMARKS.md: `cargo bench -p thicket-canister`.
//!
//! What one message costs the replica besides the canister's own instructions: a fresh
//! wasmtime instance, the persisted heap and globals put in and taken out again, and the
//! System API. Measured for a minimal WAT canister, the same with a 64 MiB heap, and the
//! Motoko counter of `e2e/canisters` (compiled with the `motoko` npm package), plus
//! compiling that module without the cache.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use thicket_canister::{CallContext, CanisterMemory, Outcome, PageMap, Runtime};

const LIMIT: u64 = 2_000_000_000;

const TINY: &str = r#"(module
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") 1)
  (func (export "canister_update inc")
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (call $append (i32.const 0) (i32.const 4))
    (call $reply)))"#;

/// Writes three pages further into its 64 MiB heap at each message (wrapping at its end), as
/// an allocator marching through the heap does (the Motoko counter's incremental GC): the
/// overlay grows at every message until it is folded.
const MARCHING: &str = r#"(module
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") 1024)
  (func (export "canister_update inc")
    (local $p i32)
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (local.set $p (i32.add (i32.const 65536)
      (i32.and (i32.rem_u (i32.load (i32.const 4)) (i32.const 67035136)) (i32.const -4096))))
    (i32.store (local.get $p) (i32.load (i32.const 0)))
    (i32.store (i32.add (local.get $p) (i32.const 4096)) (i32.load (i32.const 0)))
    (i32.store (i32.add (local.get $p) (i32.const 8192)) (i32.load (i32.const 0)))
    (i32.store (i32.const 4)
      (i32.rem_u (i32.add (i32.load (i32.const 4)) (i32.const 12288)) (i32.const 67035136)))
    (call $append (i32.const 0) (i32.const 4))
    (call $reply)))"#;

fn ctx() -> CallContext {
    CallContext {
        arg: b"DIDL\x00\x00".to_vec(),
        caller: vec![4],
        canister_id: vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        controllers: vec![vec![4]],
        time_ns: 1_700_000_000_000_000_000,
        status: 1,
        can_respond: true,
        ..CallContext::default()
    }
}

fn bench_execution(c: &mut Criterion) {
    // As replicas run messages (see `thicket_canister::shared`): heaps as page maps.
    let rt = Runtime::pooled(4).expect("runtime");
    let mut g = c.benchmark_group("execute");

    let tiny = rt
        .compile(&wat::parse_str(TINY).expect("wat"))
        .expect("compiles");
    let empty = CanisterMemory::default();
    g.bench_function("wat_update_64KiB_heap", |b| {
        b.iter(|| {
            let out = rt.execute(&tiny, &empty, "canister_update inc", ctx(), LIMIT);
            assert!(matches!(out.result, Ok(Outcome::Reply(_))));
        })
    });
    let big = CanisterMemory {
        heap: PageMap::from_bytes(&vec![1; 64 << 20]),
        ..CanisterMemory::default()
    };
    g.bench_function("wat_update_64MiB_heap", |b| {
        b.iter(|| {
            let out = rt.execute(&tiny, &big, "canister_update inc", ctx(), LIMIT);
            assert!(matches!(out.result, Ok(Outcome::Reply(_))));
        })
    });

    // As replicated execution runs a canister's messages: each on the heap the last one left.
    let mut current = big.clone();
    g.bench_function("wat_update_64MiB_heap_chained", |b| {
        b.iter(|| {
            let out = rt.execute(&tiny, &current, "canister_update inc", ctx(), LIMIT);
            current = out.memory.expect("succeeds");
        })
    });

    let marching = rt
        .compile(&wat::parse_str(MARCHING).expect("wat"))
        .expect("compiles");
    for (name, tracking) in [
        ("wat_update_64MiB_heap_marching_chained", true),
        ("wat_update_64MiB_heap_marching_chained_untracked", false),
    ] {
        thicket_canister::page_map::set_write_tracking(tracking);
        let mut current = big.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = rt.execute(&marching, &current, "canister_update inc", ctx(), LIMIT);
                current = out.memory.expect("succeeds");
            })
        });
    }
    thicket_canister::page_map::set_write_tracking(true);

    let wasm = thicket_canister::motoko::compile_sample("Counter").expect("Counter compiles");
    let counter = rt.compile(&wasm).expect("compiles");
    let installed = rt.initialize(&counter, &empty, "canister_init", ctx(), LIMIT);
    let memory = installed.memory.expect("installed");
    g.bench_function("motoko_counter_inc", |b| {
        b.iter(|| {
            let out = rt.execute(&counter, &memory, "canister_update inc", ctx(), LIMIT);
            assert!(matches!(out.result, Ok(Outcome::Reply(_))));
        })
    });
    let mut current = memory.clone();
    g.bench_function("motoko_counter_inc_chained", |b| {
        b.iter(|| {
            let out = rt.execute(&counter, &current, "canister_update inc", ctx(), LIMIT);
            current = out.memory.expect("succeeds");
        })
    });
    let mut query = ctx();
    query.replicated = false;
    g.bench_function("motoko_counter_query_get", |b| {
        b.iter(|| {
            let out = rt.query(
                &counter,
                &memory,
                "canister_query get",
                query.clone(),
                LIMIT,
            );
            assert!(matches!(out.result, Ok(Outcome::Reply(_))));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("motoko_counter_uncached", |b| {
        b.iter(|| {
            Runtime::new()
                .expect("runtime")
                .compile(&wasm)
                .expect("compiles")
        })
    });
    g.finish();
    println!(
        "motoko counter: module {} bytes, heap {} bytes after install",
        wasm.len(),
        memory.heap.len()
    );
}

criterion_group!(benches, bench_execution);
criterion_main!(benches);
