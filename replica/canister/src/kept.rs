//! Memories messages left, kept for the next message on the heap they hold: replicated
//! execution runs a canister's messages one after another, each on the heap the last one
//! left, so the next one starts from a memory that already holds it. Queries leave the heap
//! as they found it: the pages a query wrote are put back, and its memory is kept for the
//! next query or message on the same heap.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::mapped::Region;
use crate::page_map::{PageMap, TRACKED_FROM, written_pages};

/// Heaps whose memories are kept at most (about one per canister a replica is executing),
/// the oldest dropped first: at most `KEPT * PER_HEAP` memories.
const KEPT: usize = 64;

/// Memories kept at most for one heap (concurrent queries each take one).
const PER_HEAP: usize = 4;

/// Regions by the id of the heap (page map version) they hold.
#[derive(Default)]
pub(crate) struct Kept(Mutex<BTreeMap<u64, Vec<Region>>>);

impl Kept {
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map_or(0, |k| k.values().map(Vec::len).sum())
    }

    /// A memory holding `heap`, if one was kept (it is no longer kept: one user at a time).
    pub(crate) fn take(&self, heap: &PageMap) -> Option<Region> {
        if heap.id() == 0 {
            return None;
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let regions = kept.get_mut(&heap.id())?;
        let region = regions.pop();
        if regions.is_empty() {
            kept.remove(&heap.id());
        }
        region.filter(|r| heap.has_base(r.base()) && r.size() == heap.len())
    }

    /// Keeps `region`, which holds `heap` (unless the heap was folded onto another base, or
    /// the region does not match it: then it is dropped). A region holding an overlay of at
    /// least [`TRACKED_FROM`] pages asks the kernel to track its writes from now on, so the
    /// next message on it reports only the pages it writes (and compares none of the
    /// overlay's again). Tracking starts only on a heap whose pages are known: the first scan
    /// of a heap not scanned yet must report what was written since its anchor.
    pub(crate) fn keep(&self, heap: &PageMap, mut region: Region) {
        if heap.id() == 0 || !heap.has_base(region.base()) || region.size() != heap.len() {
            return;
        }
        if heap.pending().is_none() && heap.delta_pages() >= TRACKED_FROM {
            region.track();
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let regions = kept.entry(heap.id()).or_default();
        if regions.len() < PER_HEAP {
            regions.push(region);
        }
        while kept.len() > KEPT {
            kept.pop_first();
        }
    }

    /// Keeps `region`, which a query ran on starting from `heap`, once the pages the query
    /// wrote hold `heap`'s bytes again: the ones the kernel reports (where it tracks the
    /// region's writes, exactly those; otherwise every private page, the overlay's among
    /// them, which are copied again). Dropped if that fails or the query grew the memory.
    pub(crate) fn keep_unchanged(&self, heap: &PageMap, mut region: Region) {
        if heap.id() == 0 || !heap.has_base(region.base()) || region.size() != heap.len() {
            return;
        }
        let tracked = region.is_tracked();
        let mem = region.bytes_mut();
        let Some((written, _)) = written_pages(mem, tracked) else {
            return;
        };
        if heap.reset(mem, &written).is_err() {
            return;
        }
        // The pages just put back count as written: protect them again (where tracked), so
        // the next user of the region is told only of its own writes.
        if tracked && written_pages(mem, true).is_none() {
            return;
        }
        self.keep(heap, region);
    }
}
