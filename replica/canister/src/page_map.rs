//! Canister memory as pages (the IC's page-map idea): an immutable base, held in an anonymous
//! in-memory file (`memfd`), and a small persistent overlay of 4 KiB pages changed since.
//!
//! A message maps the base copy-on-write into its instance ([`crate::mapped`]), copies the
//! overlay in, and afterwards keeps only the pages it wrote: the kernel's page map
//! (`/proc/self/pagemap`) tells which pages of a private file mapping became private copies.
//! So a message costs the pages it touches and the overlay, not the heap; snapshots share the
//! base and every unchanged page; a trapped message drops its mapping and nothing of it stays.
//! Once the overlay pages copied into instances since the base was built add up to the
//! heap's size, the overlay is folded into a new base, copied inside the kernel: copying in
//! never costs more than folding would have (the ski-rental rule), whatever the rate at
//! which messages write pages.
//!
//! A message that starts from the memory the one before left copies nothing in. Where the
//! kernel tracks that memory's writes (userfaultfd write protection, asynchronous mode), it
//! costs only the pages it wrote, however large the overlay; otherwise its private pages
//! include the overlay's, which are compared again (counted at an eighth in the fold's
//! bill). Where the page map cannot be read, a message copies the whole heap (the result is
//! the same, only slower).
//!
//! A message that follows another on its kept memory leaves a version whose pages are not
//! known yet (`crate::deferred`): the memory is scanned once, for all the messages since the
//! last scan, when someone reads the pages.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::mapped::Base;
pub use crate::mapped::PAGE_SIZE;

type Page = Arc<[u8; PAGE_SIZE]>;
/// The overlay: a persistent map, so a version shares every page and most of the tree with
/// the one it came from, and a message that writes a few pages of a large overlay costs
/// those pages, not a copy of the overlay.
type Delta = imbl::OrdMap<usize, Page>;

/// A byte array of fixed length, shared between versions page by page. Cloning is cheap.
#[derive(Clone, Default)]
pub struct PageMap {
    base: Option<Arc<Base>>,
    delta: Delta,
    len: usize,
    /// Overlay pages copied into instances since the base was built (not part of the value).
    copied: usize,
    /// Names this version (clones share it; 0: empty): an execution that kept the memory a
    /// message left finds it again by it.
    id: u64,
    /// A version whose pages are not known yet (see `crate::deferred`): the fields above
    /// but `len` and `id` are then empty, and every read finds the pages first.
    unscanned: Option<Arc<Unscanned>>,
}

/// What a version whose pages are not known yet knows of itself (`crate::deferred`).
pub(crate) trait Resolve: Send + Sync + std::any::Any {
    /// The version's pages (`heap` is the unscanned page map itself).
    fn resolve(&self, heap: &PageMap) -> PageMap;
    /// The last version with known pages it comes from.
    fn anchor(&self) -> &PageMap;
}

pub(crate) struct Unscanned {
    pages: OnceLock<PageMap>,
    from: Box<dyn Resolve>,
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl PageMap {
    pub fn from_bytes(bytes: &[u8]) -> PageMap {
        if bytes.is_empty() {
            return PageMap::default();
        }
        let base = Base::new(bytes.len());
        base.write(0, bytes);
        PageMap {
            base: Some(Arc::new(base)),
            delta: Delta::default(),
            len: bytes.len(),
            copied: 0,
            id: next_id(),
            unscanned: None,
        }
    }

    /// `len` bytes of zeros, holding no page until written.
    pub fn zeroed(len: usize) -> PageMap {
        PageMap {
            len,
            id: if len == 0 { 0 } else { next_id() },
            ..PageMap::default()
        }
    }

    /// This page map with `bytes` written at `at` (within its length): a new version that
    /// shares every page it does not write.
    pub fn write(&self, at: usize, bytes: &[u8]) -> PageMap {
        let me = self.known();
        assert!(
            at.checked_add(bytes.len()).is_some_and(|end| end <= me.len),
            "writing past a page map's end"
        );
        let mut delta = me.delta.clone();
        let end = at + bytes.len();
        for p in at / PAGE_SIZE..end.div_ceil(PAGE_SIZE) {
            let start = p * PAGE_SIZE;
            let mut page = [0u8; PAGE_SIZE];
            let n = PAGE_SIZE.min(me.len - start);
            page[..n].copy_from_slice(&me.read(start, n));
            let (from, to) = (at.max(start), end.min(start + PAGE_SIZE));
            page[from - start..to - start].copy_from_slice(&bytes[from - at..to - at]);
            delta.insert(p, Arc::new(page));
        }
        PageMap {
            base: me.base.clone(),
            delta,
            len: me.len,
            copied: me.copied,
            id: next_id(),
            unscanned: None,
        }
    }

    /// A version of `len` bytes whose pages are not known yet: `from` finds them when they
    /// are first read.
    pub(crate) fn unscanned(len: usize, from: Box<dyn Resolve>) -> PageMap {
        PageMap {
            len,
            id: next_id(),
            unscanned: Some(Arc::new(Unscanned {
                pages: OnceLock::new(),
                from,
            })),
            ..PageMap::default()
        }
    }

    /// What finds this version's pages, if they are not known yet.
    pub(crate) fn pending(&self) -> Option<&dyn Resolve> {
        let u = self.unscanned.as_ref()?;
        u.pages.get().is_none().then_some(&*u.from)
    }

    /// Whether a version whose pages are not known yet has other holders than this one.
    pub(crate) fn is_shared(&self) -> bool {
        self.unscanned
            .as_ref()
            .is_some_and(|u| Arc::strong_count(u) > 1)
    }

    /// Finds the pages now if they are not known yet.
    pub(crate) fn resolve(&self) {
        self.known();
    }

    /// This version with its pages known: itself, or the pages found.
    fn known(&self) -> &PageMap {
        match &self.unscanned {
            None => self,
            Some(u) => u.pages.get_or_init(|| u.from.resolve(self)),
        }
    }

    /// The same pages under another name (the version found for an unscanned one keeps its
    /// name, by which a kept memory is found).
    pub(crate) fn named(mut self, id: u64) -> PageMap {
        self.id = id;
        self
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pages held apart from the base (changed since it was built).
    pub fn delta_pages(&self) -> usize {
        self.known().delta.len()
    }

    /// The whole contents, copied out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.read(0, self.len)
    }

    /// Bytes `at..at + len` (within the page map), copied out.
    pub fn read(&self, at: usize, len: usize) -> Vec<u8> {
        let me = self.known();
        if !std::ptr::eq(me, self) {
            return me.read(at, len);
        }
        assert!(at + len <= self.len, "reading past a page map's end");
        let mut out = vec![0; len];
        if let Some(base) = &self.base {
            let end = base.len.min(self.len).min(at + len);
            if end > at {
                base.file
                    .read_exact_at(&mut out[..end - at], at as u64)
                    .unwrap_or_else(|e| panic!("reading canister memory failed: {e}"));
            }
        }
        for (&p, page) in self
            .delta
            .range(at / PAGE_SIZE..(at + len).div_ceil(PAGE_SIZE))
        {
            let (from, to) = ((p * PAGE_SIZE).max(at), ((p + 1) * PAGE_SIZE).min(at + len));
            out[from - at..to - at]
                .copy_from_slice(&page[from - p * PAGE_SIZE..to - p * PAGE_SIZE]);
        }
        out
    }

    /// The hashes of the page map's `size`-byte chunks (the last one shorter if the length
    /// is not a multiple), by `hash`. A chunk the overlay leaves as the base has it is hashed
    /// once per base and remembered there (a fold passes on what it did not change), as is
    /// a chunk of zeros past the base, so a checkpoint hashes only the chunks written since.
    pub fn chunk_hashes(&self, size: usize, hash: fn(&[u8]) -> [u8; 32]) -> Vec<[u8; 32]> {
        let me = self.known();
        if !std::ptr::eq(me, self) {
            return me.chunk_hashes(size, hash);
        }
        assert!(size > 0 && size % PAGE_SIZE == 0, "chunks of whole pages");
        (0..self.len.div_ceil(size))
            .map(|i| {
                let (at, n) = (i * size, size.min(self.len - i * size));
                let base_len = self.base.as_ref().map_or(0, |b| b.len);
                let (cache, key) = match &self.base {
                    _ if !self.unwritten(at, n) => return hash(&self.read(at, n)),
                    Some(base) if at + n <= base_len => (&base.hashes, (at, n, hash as usize)),
                    // Past the base and the overlay: zeros, whose hash is the same anywhere.
                    _ if at >= base_len => (&*ZEROS, (0, n, hash as usize)),
                    _ => return hash(&self.read(at, n)),
                };
                if let Some(h) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
                    return h;
                }
                let h = hash(&self.read(at, n));
                if let Ok(mut c) = cache.lock() {
                    c.insert(key, h);
                }
                h
            })
            .collect()
    }

    /// Whether bytes `at..at + n` hold no overlay page.
    fn unwritten(&self, at: usize, n: usize) -> bool {
        self.delta
            .range(at / PAGE_SIZE..(at + n).div_ceil(PAGE_SIZE))
            .next()
            .is_none()
    }

    /// Whether bytes `at..at + n` are the base's, with no overlay page among them.
    fn clean(&self, at: usize, n: usize) -> bool {
        self.base.as_ref().is_some_and(|b| at + n <= b.len) && self.unwritten(at, n)
    }

    pub(crate) fn base(&self) -> Option<&Arc<Base>> {
        self.known().base.as_ref()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether `base` is this page map's base.
    pub(crate) fn has_base(&self, base: Option<&Arc<Base>>) -> bool {
        // Not known yet: a memory holding it maps its anchor's base.
        if let Some(u) = &self.unscanned {
            return match u.pages.get() {
                Some(known) => known.has_base(base),
                None => u.from.anchor().has_base(base),
            };
        }
        match (&self.base, base) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Makes `pages` of `mem` (a mapping of this page map's base holding its bytes elsewhere)
    /// hold this page map's bytes again: from the overlay, or from the base.
    pub(crate) fn reset(&self, mem: &mut [u8], pages: &[usize]) -> rustix::io::Result<()> {
        let me = self.known();
        if !std::ptr::eq(me, self) {
            return me.reset(mem, pages);
        }
        let (overlaid, based): (Vec<usize>, Vec<usize>) =
            pages.iter().partition(|p| self.delta.contains_key(p));
        crate::mapped::reset_pages(mem, &based)?;
        for p in overlaid {
            let at = p * PAGE_SIZE;
            let n = PAGE_SIZE.min(self.len - at);
            mem[at..at + n].copy_from_slice(&self.delta[&p][..n]);
        }
        Ok(())
    }

    /// Copies the overlay into `mem`, a mapping of the base of at least `len` bytes.
    pub(crate) fn overlay(&self, mem: &mut [u8]) {
        let me = self.known();
        if !std::ptr::eq(me, self) {
            return me.overlay(mem);
        }
        for (&p, page) in self.delta.iter() {
            let at = p * PAGE_SIZE;
            let n = PAGE_SIZE.min(self.len - at);
            mem[at..at + n].copy_from_slice(&page[..n]);
        }
    }

    /// The page map `mem` holds after a message ran on a mapping of this one: `written` are
    /// the pages the process wrote in the mapping; unless `exact` (the kernel tracked the
    /// mapping's writes since it held this page map), the overlay's pages may be among them
    /// or not, and are compared too.
    ///
    /// `copied_in` says whether the overlay was copied into `mem` (a fresh mapping) or was
    /// there already (a memory kept from the message before): the fold's bill counts a copied
    /// page in full, a page only compared at an eighth, and nothing when writes were tracked.
    pub(crate) fn updated(
        &self,
        mem: &[u8],
        written: &[usize],
        copied_in: bool,
        exact: bool,
    ) -> PageMap {
        let me = self.known();
        if !std::ptr::eq(me, self) {
            return me.updated(mem, written, copied_in, exact);
        }
        let base_len = self.base.as_ref().map_or(0, |b| b.len);
        let pages = mem.len().div_ceil(PAGE_SIZE);
        let mut candidates: Vec<usize> = written.iter().copied().filter(|&p| p < pages).collect();
        if !exact {
            candidates.extend(self.delta.keys().copied().filter(|&p| p < pages));
            candidates.sort_unstable();
            candidates.dedup();
        }
        // Overlay pages that are no candidate, or unchanged, stay as they are (the memory
        // never shrinks: none lies past its end).
        let mut delta = self.delta.clone();
        for p in candidates {
            let at = p * PAGE_SIZE;
            let bytes = &mem[at..(at + PAGE_SIZE).min(mem.len())];
            if let Some(old) = self.delta.get(&p) {
                if old[..bytes.len()] == *bytes {
                    continue;
                }
            } else if at >= base_len && bytes.iter().all(|&b| b == 0) {
                // Beyond the base, an absent page reads as zeros.
                continue;
            }
            let mut page = [0u8; PAGE_SIZE];
            page[..bytes.len()].copy_from_slice(bytes);
            delta.insert(p, Arc::new(page));
        }
        let billed = match (copied_in, exact) {
            (true, _) => self.delta.len(),
            (false, true) => 0,
            (false, false) => self.delta.len().div_ceil(8),
        };
        let next = PageMap {
            base: self.base.clone(),
            delta,
            len: mem.len(),
            copied: self.copied + billed,
            id: next_id(),
            unscanned: None,
        };
        if next.copied + next.delta.len() >= pages.max(MIN_FOLD_PAGES) {
            next.merged()
        } else {
            next
        }
    }

    /// The same bytes with the overlay folded into a new base: the old base is copied in the
    /// kernel (no page of it is touched here), then the overlay written over it.
    fn merged(&self) -> PageMap {
        let base = Base::new(self.len);
        if let Some(old) = &self.base {
            copy_file(&old.file, &base.file, old.len.min(self.len));
        }
        for (&p, page) in self.delta.iter() {
            let at = p * PAGE_SIZE;
            base.write(at, &page[..PAGE_SIZE.min(self.len - at)]);
        }
        if let Some(old) = &self.base
            && let (Ok(known), Ok(mut kept)) = (old.hashes.lock(), base.hashes.lock())
        {
            kept.extend(
                known
                    .iter()
                    .filter(|((at, n, _), _)| at + n <= self.len && self.clean(*at, *n)),
            );
        }
        PageMap {
            base: Some(Arc::new(base)),
            delta: Delta::default(),
            len: self.len,
            copied: 0,
            id: next_id(),
            unscanned: None,
        }
    }
}

/// Hashes of all-zero chunks, by (0, length, hash function).
static ZEROS: std::sync::LazyLock<Mutex<HashMap<crate::mapped::ChunkKey, [u8; 32]>>> =
    std::sync::LazyLock::new(Mutex::default);

/// The overlay from which a memory kept for the next message asks the kernel to track its
/// writes rather than have each message compare the overlay again (see `Kept::keep`).
pub(crate) const TRACKED_FROM: usize = 64;

/// A fold costs calls besides its copy: a tiny heap folds only after this many pages copied.
const MIN_FOLD_PAGES: usize = 16;

/// Copies `len` bytes from the start of `from` to the start of `to`, inside the kernel when it
/// can (`copy_file_range`), through a buffer otherwise.
fn copy_file(from: &File, to: &File, len: usize) {
    let (mut off_in, mut off_out) = (0u64, 0u64);
    while (off_in as usize) < len {
        let left = len - off_in as usize;
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), left) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    while (off_in as usize) < len {
        let n = buf.len().min(len - off_in as usize);
        from.read_exact_at(&mut buf[..n], off_in)
            .and_then(|()| to.write_all_at(&buf[..n], off_in))
            .unwrap_or_else(|e| panic!("copying canister memory failed: {e}"));
        off_in += n as u64;
    }
}

/// The pages of `mem` (page-aligned) that are this process's own, written since they were
/// mapped from their file or never file-backed (anonymous): present and not file pages, or
/// swapped out. Asked with `PAGEMAP_SCAN` where the kernel has it, read entry by entry
/// otherwise; `None` if the kernel's page map cannot be read.
///
/// Where the kernel tracks the region's writes, the pages are exactly those written since
/// the region was made or last asked (`true`): a memory kept from an earlier message then
/// reports only this message's pages, not the overlay's that earlier ones wrote.
///
/// `tracked`: `mem` may be tracked (a kept memory, see `Kept::keep`); the kernel refuses the
/// tracked scan of a memory it does not track, which is then scanned as any other. The first
/// scan after tracking starts reports every page written since the memory was made (more
/// pages than this message wrote, never fewer).
pub(crate) fn written_pages(mem: &[u8], tracked: bool) -> Option<(Vec<usize>, bool)> {
    let pagemap = crate::kernel::pagemap()?;
    if tracked && let Some(written) = crate::kernel::scan_tracked(pagemap, mem) {
        TRACKED_SCANS.fetch_add(1, Ordering::Relaxed);
        return Some((written, true));
    }
    if let Some(written) = crate::kernel::scan_written(pagemap, mem) {
        return Some((written, false));
    }
    read_written(pagemap, mem).map(|w| (w, false))
}

/// Messages whose written pages the kernel's write tracking reported (this process).
static TRACKED_SCANS: AtomicU64 = AtomicU64::new(0);

/// How many messages the kernel's write tracking reported the written pages of, in this
/// process (for tests and figures).
pub fn tracked_scans() -> u64 {
    TRACKED_SCANS.load(Ordering::Relaxed)
}

/// Whether this kernel tracks writes as kept memories ask it to (userfaultfd write
/// protection in asynchronous mode, with `PAGEMAP_SCAN`: Linux 6.7 and later, unless a
/// seccomp filter or `vm.unprivileged_userfaultfd` refuses it).
pub fn kernel_tracks_writes() -> bool {
    crate::mapped::Region::for_tests(None, PAGE_SIZE, true).is_ok_and(|r| r.is_tracked())
}

/// Whether memories kept for later messages ask the kernel to track their writes (where it
/// can): on by default; off, every message compares the whole overlay (tests compare both).
pub fn set_write_tracking(on: bool) {
    crate::kernel::TRACKING.store(on, Ordering::Relaxed);
}

/// [`written_pages`] from the page map's entries, one by one.
fn read_written(pagemap: &File, mem: &[u8]) -> Option<Vec<usize>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE: u64 = 1 << 61;
    let start = mem.as_ptr() as usize;
    debug_assert_eq!(start % PAGE_SIZE, 0);
    let pages = mem.len().div_ceil(PAGE_SIZE);
    let mut written = Vec::new();
    let mut buf = vec![0u8; 8 * pages.min(8192)];
    let mut p = 0;
    while p < pages {
        let n = (pages - p).min(8192);
        let entries = &mut buf[..8 * n];
        let offset = ((start / PAGE_SIZE + p) * 8) as u64;
        pagemap.read_exact_at(entries, offset).ok()?;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let e = u64::from_ne_bytes(e.try_into().expect("8 bytes"));
            if (e & PRESENT != 0 && e & FILE == 0) || e & SWAPPED != 0 {
                written.push(p + i);
            }
        }
        p += n;
    }
    Some(written)
}

impl PartialEq for PageMap {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.to_vec() == other.to_vec()
    }
}

impl Eq for PageMap {}

impl std::fmt::Debug for PageMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let me = match &self.unscanned {
            Some(u) => match u.pages.get() {
                Some(known) => known,
                None => {
                    return f
                        .debug_struct("PageMap")
                        .field("len", &self.len)
                        .field("pages", &"not scanned yet")
                        .finish();
                }
            },
            None => self,
        };
        f.debug_struct("PageMap")
            .field("len", &me.len)
            .field("base", &me.base.as_ref().map_or(0, |b| b.len))
            .field("delta_pages", &me.delta.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_and_the_entries_agree_on_written_pages() {
        let bytes: Vec<u8> = (0..64 * PAGE_SIZE).map(|i| (i / PAGE_SIZE) as u8).collect();
        let map = PageMap::from_bytes(&bytes);
        let mut region =
            crate::mapped::Region::for_tests(map.base().cloned(), 128 * PAGE_SIZE, false)
                .expect("maps");
        let mem = region.bytes_mut();
        // Read some pages (file pages), write others (private copies), and write past the base.
        let read: u32 = [1usize, 2, 40]
            .iter()
            .map(|&p| u32::from(mem[p * PAGE_SIZE]))
            .sum();
        assert_eq!(read, 43);
        for p in [3usize, 4, 5, 50, 70, 127] {
            mem[p * PAGE_SIZE + 7] = 9;
        }
        let pagemap = File::open("/proc/self/pagemap").expect("pagemap");
        let entries = read_written(&pagemap, mem).expect("entries");
        assert_eq!(entries, vec![3, 4, 5, 50, 70, 127]);
        if let Some(scanned) = crate::kernel::scan_written(&pagemap, mem) {
            assert_eq!(scanned, entries);
        }
        assert_eq!(written_pages(mem, true), Some((entries, false)));
    }

    #[test]
    fn a_tracked_region_reports_each_write_once() {
        let bytes: Vec<u8> = (0..64 * PAGE_SIZE).map(|i| (i / PAGE_SIZE) as u8).collect();
        let map = PageMap::from_bytes(&bytes);
        let mut region =
            crate::mapped::Region::for_tests(map.base().cloned(), 128 * PAGE_SIZE, true)
                .expect("maps");
        let tracked = region.is_tracked();
        let mem = region.bytes_mut();
        let pagemap = File::open("/proc/self/pagemap").expect("pagemap");
        let read: u32 = [1usize, 2, 90]
            .iter()
            .map(|&p| u32::from(mem[p * PAGE_SIZE]))
            .sum();
        assert_eq!(read, 3);
        for p in [3usize, 4, 50, 70, 127] {
            mem[p * PAGE_SIZE + 7] = 9;
        }
        let scanned = crate::kernel::scan_tracked(&pagemap, mem);
        if !tracked {
            // A kernel without asynchronous write protection (before Linux 6.7, or refused by
            // a seccomp filter): the region is not tracked, and the scan says so.
            assert_eq!(scanned, None);
            return;
        }
        assert_eq!(scanned, Some(vec![3, 4, 50, 70, 127]));
        // Asked again: nothing new. Pages written since (old ones among them) come once.
        assert_eq!(crate::kernel::scan_tracked(&pagemap, mem), Some(vec![]));
        mem[4 * PAGE_SIZE] = 1;
        mem[5 * PAGE_SIZE] = 1;
        mem[100 * PAGE_SIZE] = 1;
        assert_eq!(
            crate::kernel::scan_tracked(&pagemap, mem),
            Some(vec![4, 5, 100])
        );
        // Pages made to read from the base again and rewritten come again.
        crate::mapped::reset_pages(mem, &[5]).expect("resets");
        assert_eq!(mem[5 * PAGE_SIZE], 5);
        mem[5 * PAGE_SIZE] = 2;
        assert_eq!(written_pages(mem, true), Some((vec![5], true)));
        // An untracked region is refused by the tracked scan.
        let mut plain = crate::mapped::Region::for_tests(None, 4 * PAGE_SIZE, false).expect("maps");
        let plain = plain.bytes_mut();
        plain[0] = 1;
        assert_eq!(crate::kernel::scan_tracked(&pagemap, plain), None);
    }
}
