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
//! One of the two modules of the workspace with `unsafe` (with [`crate::kernel`]): mapping
//! memory and implementing wasmtime's memory traits cannot be done without it. Each block
//! says why it is sound.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

pub use crate::kernel::PAGE_SIZE;
use crate::kernel::{protect, round_up, track};

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
        if self.tracker.is_none()
            && crate::kernel::TRACKING.load(std::sync::atomic::Ordering::Relaxed)
        {
            self.tracker = track(self.ptr, self.capacity).filter(|_| protect(self.ptr, self.size));
        }
        self.tracker.is_some()
    }

    /// Whether the kernel tracks this region's writes.
    pub(crate) fn is_tracked(&self) -> bool {
        self.tracker.is_some()
    }

    /// Its bytes.
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
