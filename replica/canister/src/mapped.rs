//! Instance memories that map a canister's [`PageMap`] base copy-on-write instead of copying
//! it: wasmtime asks [`Creator`] for each instance's memory; the base it maps is the one
//! [`with_base`] named for the instantiation on this thread.
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
use std::sync::Arc;

use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

use crate::page_map::{Base, PAGE_SIZE};

thread_local! {
    static NEXT_BASE: RefCell<Option<Arc<Base>>> = const { RefCell::new(None) };
}

/// Runs `f` (an instantiation) with `base` as what the memory it creates maps.
pub(crate) fn with_base<R>(base: Option<Arc<Base>>, f: impl FnOnce() -> R) -> R {
    NEXT_BASE.with(|n| *n.borrow_mut() = base);
    let r = f();
    NEXT_BASE.with(|n| n.borrow_mut().take());
    r
}

pub(crate) struct Creator;

// SAFETY: every memory is a fresh reservation owned by the instance it is made for, zero
// filled except for the canister's own bytes, with the guard wasmtime asks for left unmapped.
unsafe impl MemoryCreator for Creator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let base = NEXT_BASE.with(|n| n.borrow_mut().take());
        let capacity = reserved
            .or(maximum)
            .unwrap_or(crate::MAX_HEAP_BYTES_64 as usize);
        Mapped::new(base, minimum, capacity, guard)
            .map(|m| Box::new(m) as Box<dyn LinearMemory>)
            .map_err(|e| format!("mapping canister memory: {e}"))
    }
}

struct Mapped {
    /// Start of the reservation (an address: the memory is `Send + Sync`).
    ptr: usize,
    /// Reserved bytes the memory may grow into, and the unmapped guard after them.
    capacity: usize,
    guard: usize,
    /// The wasm memory's current size in bytes.
    size: usize,
    /// Kept while mapped.
    _base: Option<Arc<Base>>,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

impl Mapped {
    fn new(
        base: Option<Arc<Base>>,
        minimum: usize,
        capacity: usize,
        guard: usize,
    ) -> rustix::io::Result<Mapped> {
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
        let mut mapped = Mapped {
            ptr: ptr as usize,
            capacity,
            guard,
            size: 0,
            _base: None,
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
        mapped._base = base;
        mapped.grow(minimum)?;
        Ok(mapped)
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
}

// SAFETY: the base pointer never moves, `byte_size` bytes from it are readable and writable,
// and everything after them up to the capacity and its guard is inaccessible.
unsafe impl LinearMemory for Mapped {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size > self.capacity {
            wasmtime::bail!("memory of {new_size} bytes exceeds the reservation");
        }
        self.grow(new_size)
            .map_err(|e| wasmtime::format_err!("growing canister memory: {e}"))
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr as *mut u8
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the whole reservation, mapped in `new`; the instance using it is gone.
        let _ = unsafe { rustix::mm::munmap(self.ptr as *mut _, self.capacity + self.guard) };
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
