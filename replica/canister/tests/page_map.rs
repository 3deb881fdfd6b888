//! The heap as pages: a message keeps only the pages it wrote, every older version of the heap
//! stays readable as it was, traps leave nothing, the module's data segments never overwrite
//! the canister's bytes after install, and folding the overlay into a new base changes no
//! byte. Each test checks the heap against a plain byte vector given the same writes.

use thicket_canister::{CallContext, CanisterMemory, Compiled, Outcome, PageMap, Runtime};

/// 64 wasm pages (4 MiB) with a data segment at 0. `fill` takes (offset: u32 LE, len: u32 LE,
/// byte) and fills that range (the query `fill_query` too, for nothing); `fill_then_trap` does the same, then traps; `grow` grows the
/// memory by its argument (u32 LE) wasm pages; the query `read` replies with (offset, len).
const FILLER: &str = r#"
(module
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i32 i32 i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (memory (export "memory") 64)
  (data (i32.const 0) "init")
  (func $args (param $n i32) (call $arg_copy (i32.const 16) (i32.const 0) (local.get $n)))
  (func $fill
    (call $args (i32.const 9))
    (memory.fill (i32.load (i32.const 16)) (i32.load8_u (i32.const 24)) (i32.load (i32.const 20))))
  (func (export "canister_update fill") (call $fill) (call $reply))
  (func (export "canister_query fill_query") (call $fill) (call $reply))
  (func (export "canister_update fill_then_trap") (call $fill) (call $trap (i32.const 0) (i32.const 4)))
  (func (export "canister_update grow")
    (call $args (i32.const 4))
    (drop (memory.grow (i32.load (i32.const 16))))
    (call $reply))
  (func (export "canister_query read")
    (call $args (i32.const 8))
    (call $append (i32.load (i32.const 16)) (i32.load (i32.const 20)))
    (call $reply))
)
"#;

const LIMIT: u64 = 100_000_000;

fn ctx(arg: Vec<u8>) -> CallContext {
    CallContext {
        arg,
        status: 1,
        can_respond: true,
        ..CallContext::default()
    }
}

fn fill_arg(offset: u32, len: u32, byte: u8) -> Vec<u8> {
    let mut a = offset.to_le_bytes().to_vec();
    a.extend(len.to_le_bytes());
    a.push(byte);
    a
}

struct Canister {
    rt: Runtime,
    module: std::sync::Arc<Compiled>,
    memory: CanisterMemory,
    /// The bytes the heap must hold.
    model: Vec<u8>,
}

impl Canister {
    fn install() -> Canister {
        let rt = Runtime::new().expect("runtime");
        let module = rt
            .compile(&wat::parse_str(FILLER).expect("wat"))
            .expect("compiles");
        let out = rt.initialize(&module, &CanisterMemory::default(), "", ctx(vec![]), LIMIT);
        let memory = out.memory.expect("installed");
        let mut model = vec![0u8; 64 << 16];
        model[..4].copy_from_slice(b"init");
        let c = Canister {
            rt,
            module,
            memory,
            model,
        };
        c.check();
        c
    }

    fn update(&self, method: &str, arg: Vec<u8>) -> Option<CanisterMemory> {
        let entry = format!("canister_update {method}");
        self.rt
            .execute(&self.module, &self.memory, &entry, ctx(arg), LIMIT)
            .memory
    }

    fn fill(&mut self, offset: u32, len: u32, byte: u8) {
        let arg = fill_arg(offset, len, byte);
        self.memory = self.update("fill", arg.clone()).expect("fill succeeds");
        // The module keeps its arguments at 16.
        self.model[16..16 + arg.len()].copy_from_slice(&arg);
        let at = offset as usize;
        self.model[at..at + len as usize].fill(byte);
    }

    /// Grows the memory by `pages` wasm pages (zeros).
    fn grow(&mut self, pages: u32) {
        self.memory = self
            .update("grow", pages.to_le_bytes().to_vec())
            .expect("grows");
        self.model
            .resize(self.model.len() + ((pages as usize) << 16), 0);
        // The module keeps its arguments at 16.
        self.model[16..20].copy_from_slice(&pages.to_le_bytes());
    }

    fn read(&self, memory: &CanisterMemory, offset: u32, len: u32) -> Vec<u8> {
        let mut arg = offset.to_le_bytes().to_vec();
        arg.extend(len.to_le_bytes());
        let out = self
            .rt
            .query(&self.module, memory, "canister_query read", ctx(arg), LIMIT);
        match out.result {
            Ok(Outcome::Reply(bytes)) => bytes,
            other => panic!("read failed: {other:?}"),
        }
    }

    fn check(&self) {
        assert_eq!(self.memory.heap.len(), self.model.len());
        let heap = self.memory.heap.to_vec();
        let first = heap.iter().zip(&self.model).position(|(a, b)| a != b);
        assert!(
            first.is_none(),
            "heap differs first at {first:?}: {:?}",
            &heap[first.unwrap_or(0)..][..8]
        );
    }
}

#[test]
fn a_message_keeps_only_the_pages_it_wrote() {
    let mut c = Canister::install();
    let before = c.memory.heap.delta_pages();
    // Three pages and a bit, straddling page boundaries.
    c.fill(1 << 20, 3 * 4096 + 10, 7);
    c.check();
    let after = c.memory.heap.delta_pages();
    assert!(
        after - before <= 5,
        "a message writing 4 pages added {} to the overlay",
        after - before
    );
    assert_eq!(c.read(&c.memory, (1 << 20) - 1, 3), vec![0, 7, 7]);
    assert_eq!(c.read(&c.memory, 0, 4), b"init");
    // The message's memory is kept for the next one, which starts from it.
    assert_eq!(c.rt.kept_memories(), 1);
    c.fill(0, 2, 8);
    c.check();
    assert_eq!(c.rt.kept_memories(), 1);
    assert!(c.update("fill_then_trap", fill_arg(0, 4, 9)).is_none());
    assert_eq!(
        c.rt.kept_memories(),
        0,
        "a failed message's memory is dropped"
    );
    c.fill(2, 1, 5);
    c.check();
}

#[test]
fn a_trap_leaves_nothing_and_old_versions_stay_as_they_were() {
    let mut c = Canister::install();
    c.fill(8192, 100, 1);
    let v1 = c.memory.clone();
    let model_v1 = c.model.clone();
    assert!(
        c.update("fill_then_trap", fill_arg(0, 1 << 16, 9))
            .is_none()
    );
    c.check();
    // Enough later messages to fold the overlay into new bases several times: every tenth
    // one traps, so the next starts from a fresh memory and copies the overlay in (what the
    // fold's bill counts; messages on a kept, tracked memory cost only their own pages).
    for i in 0..400u32 {
        if i % 10 == 0 {
            assert!(c.update("fill_then_trap", fill_arg(0, 4, 1)).is_none());
        }
        c.fill((i * 9000) % (60 << 16), 5000, (i % 250) as u8 + 2);
    }
    c.check();
    assert!(
        c.memory.heap.delta_pages() < 256,
        "the overlay was not folded"
    );
    assert!(v1.heap.to_vec() == model_v1, "an older version changed");
    assert_eq!(c.read(&v1, 8190, 4), vec![0, 0, 1, 1]);
}

#[test]
fn data_segments_do_not_overwrite_the_heap_after_install() {
    let mut c = Canister::install();
    c.fill(0, 4, b'x');
    assert_eq!(c.read(&c.memory, 0, 4), b"xxxx");
    c.fill(2, 1, b'y');
    assert_eq!(c.read(&c.memory, 0, 4), b"xxyx");
    c.check();
}

#[test]
fn growing_adds_zero_pages_that_persist_once_written() {
    let mut c = Canister::install();
    c.grow(2);
    c.check();
    c.fill((65 << 16) + 100, 10, 3);
    c.check();
    assert_eq!(c.read(&c.memory, (65 << 16) + 99, 2), vec![0, 3]);
}

#[test]
fn bytes_round_trip() {
    let bytes: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 251) as u8).collect();
    let map = PageMap::from_bytes(&bytes);
    assert_eq!(map.len(), bytes.len());
    assert_eq!(map.to_vec(), bytes);
    assert_eq!(map, PageMap::from_bytes(&bytes));
    assert_ne!(map, PageMap::from_bytes(&bytes[1..]));
    assert!(PageMap::from_bytes(&[]).is_empty());
}

#[test]
fn messages_on_different_versions_of_a_heap_stay_apart() {
    // A message leaves its memory for the next one on the heap it produced; a message on
    // any other version (an older one, or the same one again) must not see it.
    let mut c = Canister::install();
    c.fill(4096, 10, 1);
    let (v1, model_v1) = (c.memory.clone(), c.model.clone());
    c.fill(8192, 10, 2);
    let (v2, model_v2) = (c.memory.clone(), c.model.clone());
    // Back to v1: another branch.
    c.memory = v1.clone();
    c.model = model_v1.clone();
    c.fill(4096, 5, 3);
    c.check();
    assert_eq!(
        c.read(&c.memory, 8192, 1),
        vec![0],
        "v2's write is not in this branch"
    );
    // On v2 (whose memory the first branch left), twice.
    for _ in 0..2 {
        c.memory = v2.clone();
        c.model = model_v2.clone();
        c.fill(12288, 10, 4);
        c.check();
        assert_eq!(c.read(&c.memory, 4096, 6), vec![1, 1, 1, 1, 1, 1]);
    }
    assert!(v1.heap.to_vec() == model_v1 && v2.heap.to_vec() == model_v2);
}

static HASHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A chunk hash that counts its calls.
fn counted(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    HASHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sha2::Sha256::digest(bytes).into()
}

fn plain_hashes(map: &PageMap, size: usize) -> Vec<[u8; 32]> {
    use sha2::Digest;
    map.to_vec()
        .chunks(size)
        .map(|c| sha2::Sha256::digest(c).into())
        .collect()
}

#[test]
fn checkpoint_chunks_are_hashed_once_per_base_unless_written() {
    const CHUNK: usize = 16 * 4096;
    let hashed = || HASHED.load(std::sync::atomic::Ordering::Relaxed);
    let mut c = Canister::install();
    // A message writing the whole heap folds the overlay into a base.
    c.fill(4096, (4 << 20) - 4096, 9);
    assert_eq!(c.memory.heap.delta_pages(), 0, "folded");
    let first = c.memory.heap.chunk_hashes(CHUNK, counted);
    assert_eq!(first, plain_hashes(&c.memory.heap, CHUNK));
    assert_eq!(first.len(), 64, "4 MiB in 64 KiB chunks");

    // Again on the same version, and after a message writing three pages at 1 MiB (and its
    // argument at 16): only the chunks holding overlay pages are hashed again.
    let before = hashed();
    assert_eq!(c.memory.heap.chunk_hashes(CHUNK, counted), first);
    assert_eq!(hashed() - before, 0, "nothing hashed again");
    c.fill(1 << 20, 3 * 4096, 7);
    let before = hashed();
    let second = c.memory.heap.chunk_hashes(CHUNK, counted);
    assert_eq!(second, plain_hashes(&c.memory.heap, CHUNK));
    assert_eq!(hashed() - before, 2, "chunks 0 and 16 hashed");
    let changed: Vec<usize> = (0..64).filter(|&i| first[i] != second[i]).collect();
    assert_eq!(
        changed,
        vec![0, 16],
        "the argument's chunk and the written one"
    );

    // Messages on an overlay of 300 pages (chunks 16 to 34), each from a fresh memory (the
    // one before traps, so nothing is kept), until the overlay copied in is folded into a
    // new base: the hashes of the chunks it did not touch carry over.
    c.fill(1 << 20, 300 * 4096, 3);
    let mut messages = 0;
    while c.memory.heap.delta_pages() >= 300 {
        assert!(c.update("fill_then_trap", fill_arg(0, 4, 1)).is_none());
        c.fill(1 << 20, 10, 4);
        messages += 1;
        assert!(messages < 100, "no fold after {messages} messages");
    }
    let before = hashed();
    let third = c.memory.heap.chunk_hashes(CHUNK, counted);
    assert_eq!(third, plain_hashes(&c.memory.heap, CHUNK));
    assert!(
        hashed() - before <= 21,
        "{} chunks hashed after a fold that wrote 20",
        hashed() - before
    );
    c.check();

    // Reads at any offset agree with the whole.
    let all = c.memory.heap.to_vec();
    for (at, len) in [(0, 10), ((1 << 20) - 5, 4096 * 2 + 10), ((4 << 20) - 7, 7)] {
        assert_eq!(c.memory.heap.read(at, len), all[at..at + len]);
    }
}

#[test]
fn kept_memories_report_the_pages_each_message_wrote_with_or_without_write_tracking() {
    use thicket_canister::page_map::{kernel_tracks_writes, set_write_tracking, tracked_scans};
    // One test, as the switch is the process's: first without the kernel's tracking (every
    // message compares the overlay), then with it (an overlay above the threshold makes the
    // kept memory tracked: each message reports only the pages it wrote).
    for tracking in [false, true] {
        set_write_tracking(tracking);
        let mut c = Canister::install();
        // 64 MiB, and an overlay of 3,000 pages.
        c.grow(960);
        c.fill(1 << 20, 3000 * 4096, 3);
        c.check();
        let scans = tracked_scans();
        for i in 0..40u32 {
            match i % 5 {
                // Overlay pages written again (and a page of the base).
                0 => c.fill((1 << 20) + i * 4096 * 11, 5000, i as u8),
                1 => c.fill(100 + i, 10, i as u8),
                // Pages no message wrote before.
                2 => c.fill((40 << 20) + i * 4096 * 3, 9000, i as u8),
                // A trap (twice: the fresh memory after one copies the overlay in, and so
                // many would fold it): nothing changes, and its memory is not kept.
                3 if i % 20 == 13 => {
                    let arg = fill_arg((1 << 20) + i * 4096, 8192, 0xEE);
                    assert!(c.update("fill_then_trap", arg).is_none());
                }
                3 => c.fill((50 << 20) + i * 4096, 4, i as u8),
                // Growing while tracked, and writing the new page.
                _ => {
                    let len = c.model.len();
                    c.grow(1);
                    c.fill(len as u32 + 7, 5, i as u8);
                }
            }
            c.check();
        }
        let tracked = tracked_scans() - scans;
        if !tracking || !kernel_tracks_writes() {
            assert_eq!(tracked, 0);
        } else {
            // One scan at each check, for the messages since the last one (a message leaves
            // its heap unscanned until someone reads it), but the two right after a trap
            // (whose memory is fresh, and tracked only once kept).
            assert_eq!(tracked, 40 - 2 - 2, "scans tracked");
        }
    }
}

#[test]
fn queries_leave_the_memory_they_keep_as_they_found_it() {
    // A small overlay (the kept memory untracked: every private page is put back) and a
    // large one (tracked: only the pages the query wrote).
    for overlay in [10u32, 300] {
        let mut c = Canister::install();
        c.fill(1 << 20, overlay * 4096, 3);
        for i in 0..6u32 {
            let memory = c.memory.clone();
            for q in 0..3u32 {
                // Writes over the overlay, the base and zeros past what was written.
                let at = [(1 << 20) + q * 8192, 200 + q, (3 << 20) + i * 4096][q as usize];
                let arg = fill_arg(at, 5000, 0xEE);
                let out = c.rt.query(
                    &c.module,
                    &memory,
                    "canister_query fill_query",
                    ctx(arg),
                    LIMIT,
                );
                assert!(
                    matches!(out.result, Ok(Outcome::Reply(_))),
                    "{:?}",
                    out.result
                );
                assert!(out.memory.is_none());
                assert!(c.rt.kept_memories() >= 1, "the query's memory is kept");
            }
            // The next message starts from the memory the queries left: it holds the heap.
            c.fill((2 << 20) + i * 4096, 10, i as u8);
            c.check();
            assert_eq!(c.read(&c.memory, 200, 4), c.model[200..204]);
        }
    }
}

#[test]
fn messages_run_on_heaps_not_scanned_yet_leave_the_same_bytes() {
    use thicket_canister::deferred::unscanned_messages;
    let mut c = Canister::install();
    c.fill(0, 100, 1);
    c.check();
    // A chain of messages with no read between them: none of them scans its memory.
    let (unscanned, _) = unscanned_messages();
    for i in 0..30u32 {
        c.fill(i * 5000, 3000, i as u8 + 2);
    }
    assert!(
        unscanned_messages().0 - unscanned >= 30,
        "messages left unscanned"
    );
    c.check();
    // An older version held while later messages run over its memory keeps its bytes (it is
    // scanned before the next message runs).
    c.fill(4096, 10, 7);
    let held = c.memory.clone();
    let held_model = c.model.clone();
    for i in 0..5u32 {
        c.fill(4096 + i, 1, 8);
    }
    assert!(held.heap.to_vec() == held_model, "a held version changed");
    c.check();
    // A trap amid a chain: the memory is dropped, and the heap before it is found again by
    // running the chain's messages once more.
    for i in 0..10u32 {
        c.fill(20_000 + i * 4096, 100, 9);
    }
    let (_, replayed) = unscanned_messages();
    assert!(
        c.update("fill_then_trap", fill_arg(0, 1 << 16, 0xEE))
            .is_none()
    );
    c.fill(3, 2, 10);
    assert!(
        unscanned_messages().1 - replayed >= 10,
        "the chain was run again"
    );
    c.check();
    // Longer chains than one scan covers, with traps and growth among them.
    for i in 0..600u32 {
        match i % 97 {
            13 => assert!(c.update("fill_then_trap", fill_arg(0, 8, 0xEE)).is_none()),
            50 => c.grow(1),
            _ => c.fill((i * 7919) % (c.model.len() as u32 - 5000), 5000, i as u8),
        }
    }
    c.check();
    assert_eq!(c.read(&held, 4096, 2), vec![7, 7]);
}
