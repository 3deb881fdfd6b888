//! Messages of one canister run one after another on its kept memory without a scan between
//! them: the heap a message leaves is a version whose pages are not known yet ([`PageMap`]
//! unscanned), known as its anchor (the last version whose pages are known) and the messages
//! run since. The memory is scanned once, when someone needs the pages: a checkpoint, a query,
//! a message that does not follow on it, or anyone else holding the version when the next
//! message would run over it. The page-table walk of a scan is O(heap pages); one per message
//! was the largest cost of a large heap.
//!
//! Execution is deterministic, so a version whose memory is gone (the message after it
//! trapped, and its memory was dropped with what it wrote) is found again by running its
//! messages once more from the anchor, each with the inputs it had; a message that does not
//! run as before (another outcome or instruction count) stops the replica rather than give
//! a heap the other replicas would not have.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use crate::instance::{Memory, run_in};
use crate::kept::Kept;
use crate::page_map::{PageMap, Resolve, written_pages};
use crate::{CallContext, CanisterMemory, Closure, Compiled, Entry, GlobalValue, Run, mapped};

/// Messages run at most on a version not scanned yet: bounds the work of running them again
/// (after a trap) and what they hold.
pub(crate) const MAX_UNSCANNED: usize = 256;

/// Bytes of inputs (arguments, stable memory) the messages of one unscanned version hold at
/// most.
const MAX_INPUT_BYTES: usize = 8 << 20;

/// An entry point, owned.
enum Owned {
    Export(String),
    Closure(Closure),
}

/// A message as run on an unscanned version, with what running it again needs.
struct Step {
    compiled: Arc<Compiled>,
    entry: Owned,
    ctx: CallContext,
    limit: u64,
    globals: BTreeMap<String, GlobalValue>,
    stable: Vec<u8>,
    instructions: u64,
}

/// The messages since the anchor, the last one first.
struct Steps {
    step: Step,
    before: Option<Arc<Steps>>,
    count: usize,
    bytes: usize,
}

/// An unscanned version: its anchor and the messages run on it since.
struct Chain {
    anchor: PageMap,
    steps: Arc<Steps>,
    kept: Weak<Kept>,
}

/// Runs a message on `memory`'s heap without a scan afterwards, if it may: `None` if its
/// heap is to be scanned (a query or install, the chain of unscanned messages is full, or the
/// heap is held elsewhere, which the caller then resolves first).
pub(crate) struct Next {
    anchor: PageMap,
    before: Option<Arc<Steps>>,
    step: Step,
    /// The chain's messages and input bytes with this one.
    count: usize,
    bytes: usize,
    kept: Weak<Kept>,
}

impl Next {
    /// What running `entry` on `memory` adds to its heap's chain (a new chain if its pages
    /// are known): `None` if the message must be scanned after.
    pub(crate) fn new(
        compiled: &Arc<Compiled>,
        memory: &CanisterMemory,
        entry: Option<Entry<'_>>,
        ctx: &CallContext,
        limit: u64,
        kept: &Arc<Kept>,
    ) -> Option<Next> {
        let entry = match entry? {
            Entry::Export(name) => Owned::Export(name.to_string()),
            Entry::Closure(c) => Owned::Closure(c),
        };
        let (anchor, before) = match memory.heap.pending() {
            Some(from) => {
                let chain = (from as &dyn std::any::Any).downcast_ref::<Chain>()?;
                (chain.anchor.clone(), Some(chain.steps.clone()))
            }
            None => (memory.heap.clone(), None),
        };
        let (count, bytes) = before.as_ref().map_or((0, 0), |s| (s.count, s.bytes));
        let bytes = bytes + memory.stable.len() + ctx.arg.len();
        if count >= MAX_UNSCANNED || bytes > MAX_INPUT_BYTES {
            return None;
        }
        Some(Next {
            anchor,
            before,
            step: Step {
                compiled: compiled.clone(),
                entry,
                ctx: ctx.clone(),
                limit,
                globals: memory.globals.clone(),
                stable: memory.stable.clone(),
                instructions: 0,
            },
            count: count + 1,
            bytes,
            kept: Arc::downgrade(kept),
        })
    }

    /// Whether the message starts a chain (its heap's pages are known).
    pub(crate) fn starts(&self) -> bool {
        self.before.is_none()
    }

    /// The version the message left, `len` bytes, after `instructions`.
    pub(crate) fn done(self, len: usize, instructions: u64) -> PageMap {
        let steps = Arc::new(Steps {
            step: Step {
                instructions,
                ..self.step
            },
            before: self.before,
            count: self.count,
            bytes: self.bytes,
        });
        UNSCANNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PageMap::unscanned(
            len,
            Box::new(Chain {
                anchor: self.anchor,
                steps,
                kept: self.kept,
            }),
        )
    }
}

impl Resolve for Chain {
    fn anchor(&self) -> &PageMap {
        &self.anchor
    }

    /// The memory that holds `heap`, scanned: the pages written since the anchor (exactly
    /// those where the kernel tracks its writes: tracking starts only on known versions), or
    /// the messages run again from the anchor.
    fn resolve(&self, heap: &PageMap) -> PageMap {
        let kept = self.kept.upgrade();
        if let Some(kept) = &kept
            && let Some(mut region) = kept.take(heap)
        {
            let tracked = region.is_tracked();
            let mem = region.bytes_mut();
            if let Some((pages, exact)) = written_pages(mem, tracked) {
                let known = self
                    .anchor
                    .updated(mem, &pages, false, exact)
                    .named(heap.id());
                kept.keep(&known, region);
                return known;
            }
        }
        self.replay(heap, kept.as_deref())
    }
}

impl Chain {
    /// `heap` found by running its messages again from the anchor (its memory is gone).
    fn replay(&self, heap: &PageMap, kept: Option<&Kept>) -> PageMap {
        let mut steps = Vec::with_capacity(self.steps.count);
        let mut at = Some(&self.steps);
        while let Some(s) = at {
            steps.push(&s.step);
            at = s.before.as_ref();
        }
        REPLAYED.fetch_add(steps.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut known = self.anchor.clone();
        let mut region = None;
        for step in steps.into_iter().rev() {
            let memory = CanisterMemory {
                heap: known.clone(),
                globals: step.globals.clone(),
                stable: step.stable.clone(),
            };
            let home = mapped::Home::default();
            // A memory goes on to the next message only while it maps the heap's base (a
            // fold gives the heap a new one).
            let hot = region
                .take()
                .filter(|r: &mapped::Region| known.has_base(r.base()) && r.size() == known.len());
            let source = match hot {
                Some(r) => mapped::Source::Hot(r),
                None => mapped::Source::Fresh(known.base().cloned()),
            };
            let entry = match &step.entry {
                Owned::Export(name) => Entry::Export(name),
                Owned::Closure(c) => Entry::Closure(*c),
            };
            let out = run_in(
                step.compiled.module.engine(),
                None,
                &step.compiled,
                &memory,
                Some(entry),
                Run::Keep,
                step.ctx.clone(),
                step.limit,
                Memory {
                    source,
                    home: Some(home.clone()),
                    saved: None,
                    defer: None,
                },
            );
            match out {
                crate::Executed {
                    result: Ok(_),
                    memory: Some(m),
                    instructions,
                    ..
                } if instructions == step.instructions => known = m.heap,
                other => panic!(
                    "a message run again to find the heap it left ran otherwise ({:?} after {} instructions, {} before): execution is not deterministic here",
                    other.result, other.instructions, step.instructions
                ),
            }
            region = home.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        let known = known.named(heap.id());
        if let (Some(kept), Some(region)) = (kept, region) {
            kept.keep(&known, region);
        }
        known
    }
}

static UNSCANNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static REPLAYED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Messages whose heap was left unscanned, and messages run again to find a heap whose memory
/// was gone, in this process (for tests and figures).
pub fn unscanned_messages() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (UNSCANNED.load(Relaxed), REPLAYED.load(Relaxed))
}
