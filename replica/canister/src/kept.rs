//! Memories messages left, kept for the next message on the heap they hold: replicated
//! execution runs a canister's messages one after another, each on the heap the last one
//! left, so the next one starts from a memory that already holds it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::mapped::Region;
use crate::page_map::{PageMap, TRACKED_FROM};

/// Memories kept at most: one per canister a replica is executing, the oldest dropped first.
const KEPT: usize = 64;

/// Regions by the id of the heap (page map version) they hold.
#[derive(Default)]
pub(crate) struct Kept(Mutex<BTreeMap<u64, Region>>);

impl Kept {
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map_or(0, |k| k.len())
    }

    /// The memory holding `heap`, if one was kept (it is no longer kept: one user at a time).
    pub(crate) fn take(&self, heap: &PageMap) -> Option<Region> {
        if heap.id() == 0 {
            return None;
        }
        let region = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&heap.id())?;
        (heap.has_base(region.base()) && region.size() == heap.len()).then_some(region)
    }

    /// Keeps `region`, which holds `heap` (unless the heap was folded onto another base, or
    /// the region does not match it: then it is dropped). A region holding an overlay of at
    /// least [`TRACKED_FROM`] pages asks the kernel to track its writes from now on, so the
    /// next message on it reports only the pages it writes (and compares none of the
    /// overlay's again).
    pub(crate) fn keep(&self, heap: &PageMap, mut region: Region) {
        if heap.id() == 0 || !heap.has_base(region.base()) || region.size() != heap.len() {
            return;
        }
        if heap.delta_pages() >= TRACKED_FROM {
            region.track();
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(heap.id(), region);
        while kept.len() > KEPT {
            kept.pop_first();
        }
    }
}
