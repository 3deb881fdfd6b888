//! Instance memories that map a canister's [`crate::PageMap`] base copy-on-write instead of
//! copying it: wasmtime asks [`Creator`] for each instance's memory; what it maps is what
//! [`with_source`] named for the instantiation on this thread: a fresh [`Region`] over a base,
//! or a region an earlier message left (it already holds the heap the next message starts
//! from, so nothing is copied in).
//!
//! A memory is one reservation (the engine's, plus its guard), inaccessible except for the
//! wasm memory's current size. The base is mapped privately over its start, so reading it
//! faults pages in from the memory file and writing makes private copies, which
//! [`crate::page_map::written_pages`] finds afterwards. Dropping the memory unmaps it all.
//!
//! The one module of the workspace with `unsafe`: mapping memory and implementing wasmtime's
//! memory traits cannot be done without it. Each block says why it is sound.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// The unit of change: the operating system's page.
pub const PAGE_SIZE: usize = 4096;

/// The immutable bytes a page map starts from: a memory file, never written once built.
pub(crate) struct Base {
    pub(crate) file: File,
    pub(crate) len: usize,
    /// Hashes of chunks of the file, by (offset, length, hash function): see
    /// [`crate::PageMap::chunk_hashes`].
    pub(crate) hashes: Mutex<HashMap<ChunkKey, [u8; 32]>>,
}

pub(crate) type ChunkKey = (usize, usize, usize);

impl Base {
    /// An empty memory file of `len` bytes (reading as zeros).
    pub(crate) fn new(len: usize) -> Base {
        let fd = rustix::fs::memfd_create("thicket-heap", rustix::fs::MemfdFlags::CLOEXEC)
            .unwrap_or_else(|e| {
                panic!("creating a memory file for canister memory failed ({e}): the replica cannot execute")
            });
        let file = File::from(fd);
        file.set_len(len as u64)
            .unwrap_or_else(|e| panic!("sizing a memory file of {len} bytes failed: {e}"));
        Base {
            file,
            len,
            hashes: Mutex::default(),
        }
    }

    pub(crate) fn write(&self, at: usize, bytes: &[u8]) {
        self.file
            .write_all_at(bytes, at as u64)
            .unwrap_or_else(|e| panic!("writing canister memory failed: {e}"));
    }
}

/// What the next instance memory made on this thread is.
pub(crate) enum Source {
    /// A new region mapping this base (or zeros).
    Fresh(Option<Arc<Base>>),
    /// A region kept from an earlier message, holding the heap the message starts from.
    Hot(Region),
}

/// Where a memory's region goes when its instance is dropped (instead of being unmapped).
pub(crate) type Home = Arc<Mutex<Option<Region>>>;

thread_local! {
    static NEXT: RefCell<Option<(Source, Option<Home>)>> = const { RefCell::new(None) };
    /// Whether the last memory made on this thread is a hot region.
    static MADE_HOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (an instantiation) with `source` as the memory it creates, which goes to `home`
/// when the instance is dropped; also says whether that memory is the hot region given (it
/// already holds the heap) rather than a fresh one.
pub(crate) fn with_source<R>(
    source: Source,
    home: Option<Home>,
    f: impl FnOnce() -> R,
) -> (R, bool) {
    MADE_HOT.with(|h| h.set(false));
    NEXT.with(|n| *n.borrow_mut() = Some((source, home)));
    let r = f();
    NEXT.with(|n| n.borrow_mut().take());
    (r, MADE_HOT.with(|h| h.get()))
}

pub(crate) struct Creator;

// SAFETY: every memory is a reservation owned by the instance it is made for (a hot region is
// handed to one instance at a time), holding the canister's bytes and zeros, with the guard
// wasmtime asks for left unmapped.
unsafe impl MemoryCreator for Creator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let (source, home) = NEXT
            .with(|n| n.borrow_mut().take())
            .unwrap_or((Source::Fresh(None), None));
        let region = match source {
            Source::Hot(region) if region.size >= minimum => {
                MADE_HOT.with(|h| h.set(true));
                region
            }
            Source::Hot(region) => {
                let base = region.base.clone();
                drop(region);
                fresh(base, minimum, maximum, reserved, guard)?
            }
            Source::Fresh(base) => fresh(base, minimum, maximum, reserved, guard)?,
        };
        Ok(Box::new(Mapped {
            region: Some(region),
            home,
        }))
    }
}

/// A new region over `base`.
fn fresh(
    base: Option<Arc<Base>>,
    minimum: usize,
    maximum: Option<usize>,
    reserved: Option<usize>,
    guard: usize,
) -> Result<Region, String> {
    let capacity = reserved
        .or(maximum)
        .unwrap_or(crate::MAX_HEAP_BYTES_64 as usize);
    Region::new(base, minimum, capacity, guard).map_err(|e| format!("mapping canister memory: {e}"))
}

/// A memory's reservation, with the base mapped over its start: it outlives the instance it
/// was made for when it has a [`Home`].
pub(crate) struct Region {
    /// Start of the reservation (an address: the memory is `Send + Sync`).
    ptr: usize,
    /// Reserved bytes the memory may grow into, and the unmapped guard after them.
    capacity: usize,
    guard: usize,
    /// The wasm memory's current size in bytes.
    size: usize,
    /// The base mapped (kept while mapped).
    base: Option<Arc<Base>>,
    /// The kernel's write tracking of the reservation, if it has it (see [`track`]); closed
    /// after the unmapping.
    tracker: Option<std::os::fd::OwnedFd>,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

impl Region {
    fn new(
        base: Option<Arc<Base>>,
        minimum: usize,
        capacity: usize,
        guard: usize,
    ) -> rustix::io::Result<Region> {
        let capacity = round_up(
            capacity
                .max(minimum)
                .max(base.as_ref().map_or(0, |b| b.len)),
        );
        let total = capacity + guard;
        // SAFETY: a fresh reservation nobody else uses; every later call stays inside it.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )?
        };
        let mut region = Region {
            ptr: ptr as usize,
            capacity,
            guard,
            size: 0,
            base: None,
            tracker: None,
        };
        // Transparent huge pages would zero 2 MiB on a first touch and make 512 pages look
        // written: small pages only.
        // SAFETY: inside the reservation.
        let _ = unsafe { rustix::mm::madvise(ptr, capacity, Advice::LinuxNoHugepage) };
        if let Some(b) = &base
            && b.len > 0
        {
            // SAFETY: replaces the start of the reservation with a private mapping of the file.
            unsafe {
                rustix::mm::mmap(
                    ptr,
                    round_up(b.len),
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::FIXED,
                    &b.file,
                    0,
                )?;
            }
        }
        region.base = base;
        region.grow(minimum)?;
        Ok(region)
    }

    fn grow(&mut self, new_size: usize) -> rustix::io::Result<()> {
        let (from, to) = (round_up(self.size), round_up(new_size));
        if to > from {
            // SAFETY: inside the reservation (callers check the capacity).
            unsafe {
                rustix::mm::mprotect(
                    (self.ptr + from) as *mut _,
                    to - from,
                    MprotectFlags::READ | MprotectFlags::WRITE,
                )?;
            }
        }
        self.size = new_size;
        Ok(())
    }

    /// A region of `size` bytes over `base`, for tests (and to learn whether the kernel
    /// tracks writes).
    pub(crate) fn for_tests(
        base: Option<Arc<Base>>,
        size: usize,
        tracked: bool,
    ) -> rustix::io::Result<Region> {
        let mut region = Region::new(base, size, size, 0)?;
        if tracked {
            region.track();
        }
        Ok(region)
    }

    /// Asks the kernel to track this region's writes from now on, where it can and unless
    /// turned off ([`TRACKING`]): whether it does.
    ///
    /// Tracking costs: a region the kernel tracks maps one page per read fault where it
    /// would map sixteen, and a message writing a page an earlier one wrote takes a fault to
    /// unprotect it. It spares comparing the overlay at each message, and is asked for only
    /// of memories kept with a large overlay (see `Kept::keep`).
    pub(crate) fn track(&mut self) -> bool {
        if self.tracker.is_none() && TRACKING.load(std::sync::atomic::Ordering::Relaxed) {
            self.tracker = track(self.ptr, self.capacity).filter(|_| protect(self.ptr, self.size));
        }
        self.tracker.is_some()
    }

    /// Whether the kernel tracks this region's writes.
    pub(crate) fn is_tracked(&self) -> bool {
        self.tracker.is_some()
    }

    /// Its bytes, for tests.
    #[cfg(test)]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `size` bytes from `ptr` are mapped readable and writable, and the borrow of
        // `self` keeps the region alive and unshared.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.size) }
    }

    /// The wasm memory's current size.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The base this region maps.
    pub(crate) fn base(&self) -> Option<&Arc<Base>> {
        self.base.as_ref()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the whole reservation, mapped in `new`; no instance uses it any more (an
        // instance's memory owns its region, and gives it up only when dropped).
        let _ = unsafe { rustix::mm::munmap(self.ptr as *mut _, self.capacity + self.guard) };
    }
}

/// An instance's memory: a region, which goes to its home (if any) when the instance drops.
struct Mapped {
    region: Option<Region>,
    home: Option<Home>,
}

impl Mapped {
    fn region(&self) -> &Region {
        self.region
            .as_ref()
            .expect("a memory has its region until dropped")
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let (Some(region), Some(home)) = (self.region.take(), &self.home) {
            *home.lock().unwrap_or_else(|e| e.into_inner()) = Some(region);
        }
    }
}

// SAFETY: the base pointer never moves, `byte_size` bytes from it are readable and writable,
// and everything after them up to the capacity and its guard is inaccessible.
unsafe impl LinearMemory for Mapped {
    fn byte_size(&self) -> usize {
        self.region().size
    }

    fn byte_capacity(&self) -> usize {
        self.region().capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let region = self
            .region
            .as_mut()
            .expect("a memory has its region until dropped");
        if new_size > region.capacity {
            wasmtime::bail!("memory of {new_size} bytes exceeds the reservation");
        }
        region
            .grow(new_size)
            .map_err(|e| wasmtime::format_err!("growing canister memory: {e}"))
    }

    fn as_ptr(&self) -> *mut u8 {
        self.region().ptr as *mut u8
    }
}

/// Makes the pages `pages` of the memory at `mem` read again from the base (or as zeros past
/// it): their private copies are dropped.
pub(crate) fn reset_pages(mem: &mut [u8], pages: &[usize]) -> rustix::io::Result<()> {
    let mut i = 0;
    while i < pages.len() {
        let mut j = i + 1;
        while j < pages.len() && pages[j] == pages[j - 1] + 1 {
            j += 1;
        }
        let at = pages[i] * PAGE_SIZE;
        let len = ((pages[j - 1] + 1) * PAGE_SIZE).min(round_up(mem.len())) - at;
        // SAFETY: inside `mem`'s (page-aligned) mapping; `mem` is borrowed mutably, so no
        // other reference sees the bytes change.
        unsafe {
            rustix::mm::madvise(mem.as_mut_ptr().add(at).cast(), len, Advice::LinuxDontNeed)?;
        }
        i = j;
    }
    Ok(())
}

/// Linux's `struct pm_scan_arg` (`PAGEMAP_SCAN`, Linux 6.7).
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Linux's `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = (3 << 30) | ((size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// The pages of `mem` (page-aligned) that are this process's own (present or swapped, and not
/// file pages), asked of the kernel's page map with `PAGEMAP_SCAN` on `pagemap` (an open
/// `/proc/self/pagemap`), which skips untouched ranges whole: `None` where the kernel has no
/// `PAGEMAP_SCAN`.
pub(crate) fn scan_written(pagemap: &std::fs::File, mem: &[u8]) -> Option<Vec<usize>> {
    scan(
        pagemap,
        mem,
        0,
        [
            PAGE_IS_FILE,
            PAGE_IS_FILE,
            PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        ],
    )
}

/// `PAGEMAP_SCAN` over `mem` with `flags` and the categories (inverted, mask, any of,
/// returned): the pages that match.
fn scan(
    pagemap: &std::fs::File,
    mem: &[u8],
    flags: u64,
    categories: [u64; 4],
) -> Option<Vec<usize>> {
    use std::os::fd::AsRawFd;
    let start = mem.as_ptr() as u64;
    let end = start + round_up(mem.len()) as u64;
    let mut regions = [PageRegion::default(); 64];
    let mut written = Vec::new();
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            flags,
            start: from,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: categories[0],
            category_mask: categories[1],
            category_anyof_mask: categories[2],
            return_mask: categories[3],
        };
        // SAFETY: `arg` and `regions` live across the call, `vec_len` is `regions`' length, and
        // the kernel only writes into them; `[start, end)` is `mem`'s own mapping (which
        // `PM_SCAN_WP_MATCHING` write-protects again: protections change, no byte does).
        let n = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN as libc::c_ulong,
                &mut arg as *mut PmScanArg,
            )
        };
        if n < 0 {
            return None;
        }
        for r in &regions[..n as usize] {
            let first = (r.start - start) as usize / PAGE_SIZE;
            let last = (r.end - start) as usize / PAGE_SIZE;
            written.extend(first..last);
        }
        if arg.walk_end <= from {
            return None;
        }
        from = arg.walk_end;
    }
    Some(written)
}

/// Whether new regions ask for the kernel's write tracking (on unless turned off).
pub(crate) static TRACKING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// Linux's `struct uffdio_api`, `uffdio_range`, `uffdio_register`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// `_IOWR(0xAA, nr, size)`: the userfaultfd ioctls.
const fn uffdio(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}

const UFFDIO_API: u64 = uffdio(0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffdio(0x00, size_of::<UffdioRegister>());
const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_long = 1;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const PM_SCAN_WP_MATCHING: u64 = 1;
const PM_SCAN_CHECK_WPASYNC: u64 = 2;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// Asks the kernel to track writes to `[start, start + len)` (userfaultfd write protection in
/// its asynchronous mode, Linux 6.7): a write to a protected page unprotects it without any
/// fault reaching us, and [`scan_tracked`] lists the pages written since the last scan, and
/// protects them again. Nothing is protected at first ([`protect`] does it). `None` where the kernel, its configuration or a seccomp filter refuses any
/// step: the region is then found out by [`scan_written`].
fn track(start: usize, len: usize) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let flags = libc::c_long::from(libc::O_CLOEXEC | libc::O_NONBLOCK) | UFFD_USER_MODE_ONLY;
    // SAFETY: the system call takes flags only and returns a new descriptor or an error.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: a descriptor the call above just created, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC
            | UFFD_FEATURE_WP_UNPOPULATED
            | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
        ioctls: 0,
    };
    let mut register = UffdioRegister {
        range: UffdioRange {
            start: start as u64,
            len: len as u64,
        },
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: each argument is the structure its ioctl reads and writes, alive across the
    // call; the range is this region's own reservation, which only this region maps.
    let ok = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            UFFDIO_API as libc::c_ulong,
            &mut api as *mut UffdioApi,
        ) == 0
            && libc::ioctl(
                fd.as_raw_fd(),
                UFFDIO_REGISTER as libc::c_ulong,
                &mut register as *mut UffdioRegister,
            ) == 0
    };
    ok.then_some(fd)
}

/// The pages of `mem` its region owns and wrote since it was made or last scanned,
/// protecting them again: `None` if `mem` is not tracked (the kernel refuses the whole scan
/// then, before it changes anything) or the scan fails.
pub(crate) fn scan_tracked(pagemap: &std::fs::File, mem: &[u8]) -> Option<Vec<usize>> {
    // Written pages only, asked as the kernel's fast path takes it (no other category looked
    // at for each page): pages the region maps from the file or the zero page were protected
    // when tracking began (see [`protect`]), so they are reported once written.
    scan(
        pagemap,
        mem,
        PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        [0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN],
    )
}

/// Write-protects every page of `[start, start + len)`, a tracked range, reporting none
/// (the kernel's fast path for it): pages written later are the ones [`scan_tracked`]
/// reports. Whether the kernel did.
fn protect(start: usize, len: usize) -> bool {
    use std::os::fd::AsRawFd;
    let Some(pagemap) = pagemap() else {
        return false;
    };
    let mut arg = PmScanArg {
        size: size_of::<PmScanArg>() as u64,
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        start: start as u64,
        end: (start + round_up(len)) as u64,
        walk_end: 0,
        vec: 0,
        vec_len: 0,
        max_pages: 0,
        category_inverted: 0,
        category_mask: PAGE_IS_WRITTEN,
        category_anyof_mask: 0,
        return_mask: PAGE_IS_WRITTEN,
    };
    // SAFETY: `arg` lives across the call and asks for no output; the range is a tracked
    // region's own mapping, whose protections change and no byte does.
    let n = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN as libc::c_ulong,
            &mut arg as *mut PmScanArg,
        )
    };
    n >= 0 && arg.walk_end >= arg.end
}

/// This process's page map (`/proc/self/pagemap`), opened once: `None` if it cannot be read.
pub(crate) fn pagemap() -> Option<&'static std::fs::File> {
    static PAGEMAP: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    PAGEMAP
        .get_or_init(|| std::fs::File::open("/proc/self/pagemap").ok())
        .as_ref()
}
