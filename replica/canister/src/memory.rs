//! What a canister keeps between messages (heap, exported mutable globals, stable memory),
//! and how it goes into a fresh instance and comes back out of it: the heap is a [`PageMap`]
//! whose base the instance maps (see [`crate::mapped`]), so only its overlay is copied in and
//! only the pages a message wrote come back out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmtime::{Instance, Store, Val};

use crate::page_map::{PAGE_SIZE, PageMap, written_pages};
use crate::{Compiled, ExecError, mapped, system_api};

/// A mutable global's value, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

/// What a canister keeps between messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanisterMemory {
    pub heap: PageMap,
    /// Exported mutable globals by export name.
    pub globals: BTreeMap<String, GlobalValue>,
    pub stable: Vec<u8>,
}

/// Pages of a kept memory saved before instantiation wrote the module's data segments over
/// them, to be put back after it: (page, bytes).
pub(crate) type Saved = Vec<(usize, Vec<u8>)>;

/// Puts the persisted heap and globals into a fresh instance whose memory maps the heap's
/// base: the pages of the module's data segments, which instantiation wrote, give way to the
/// canister's bytes, and the heap's overlay is copied in. A `hot` memory (one an earlier
/// message left) already holds the heap: only the data segments' pages are put back, from
/// `saved` (the memory's own bytes of them, copied out before instantiation) where given.
pub(crate) fn restore(
    store: &mut Store<system_api::Env>,
    instance: &Instance,
    compiled: &Compiled,
    memory: &CanisterMemory,
    hot: bool,
    saved: Option<Saved>,
) -> Result<(), ExecError> {
    let failed = |e: &dyn std::fmt::Display| ExecError::Trap(format!("restoring the heap: {e}"));
    if let Some(name) = &compiled.memory_export
        && let Some(mem) = instance.get_memory(&mut *store, name)
    {
        let have = mem.data_size(&*store) as u64;
        let want = memory.heap.len() as u64;
        if want > have {
            let pages = (want - have).div_ceil(65536);
            mem.grow(&mut *store, pages).map_err(|e| failed(&e))?;
        }
        let data_pages = |pages: &[usize]| -> Vec<usize> {
            let within = want.div_ceil(PAGE_SIZE as u64) as usize;
            pages.iter().copied().take_while(|&p| p < within).collect()
        };
        if want > 0
            && hot
            && let Some(pages) = &compiled.data_pages
        {
            // The memory already holds the heap: only the data segments' pages changed.
            let bytes = &mut mem.data_mut(&mut *store)[..want as usize];
            match saved {
                Some(saved) => {
                    for (p, page) in saved {
                        let at = p * PAGE_SIZE;
                        bytes[at..at + page.len()].copy_from_slice(&page);
                    }
                }
                None => memory
                    .heap
                    .reset(bytes, &data_pages(pages))
                    .map_err(|e| failed(&e))?,
            }
        } else if want > 0 {
            let bytes = &mut mem.data_mut(&mut *store)[..want as usize];
            let written = match &compiled.data_pages {
                Some(pages) => Some(data_pages(pages)),
                None => written_pages(bytes, false).map(|(pages, _)| pages),
            };
            match written {
                Some(pages) => mapped::reset_pages(bytes, &pages).map_err(|e| failed(&e))?,
                // Without the kernel's page map: all of it, copied.
                None => bytes.copy_from_slice(&memory.heap.to_vec()),
            }
            memory.heap.overlay(bytes);
        }
    }
    for (name, v) in &memory.globals {
        if let Some(g) = instance.get_global(&mut *store, name) {
            let val = match v {
                GlobalValue::I32(x) => Val::I32(*x),
                GlobalValue::I64(x) => Val::I64(*x),
                GlobalValue::F32(x) => Val::F32(*x),
                GlobalValue::F64(x) => Val::F64(*x),
            };
            g.set(&mut *store, val)
                .map_err(|e| ExecError::Trap(format!("restoring global {name}: {e}")))?;
        }
    }
    Ok(())
}

/// The heap an instance leaves: `before` plus the pages the message wrote (`hot`: the memory
/// was kept from the message before).
pub(crate) fn heap_after(
    store: &mut Store<system_api::Env>,
    instance: &Instance,
    compiled: &Compiled,
    before: &PageMap,
    hot: bool,
) -> PageMap {
    compiled
        .memory_export
        .as_ref()
        .and_then(|n| instance.get_memory(&mut *store, n))
        .map(|m| {
            let bytes = m.data(&*store);
            // A kept memory may be tracked (see `Kept::keep`): if not, the kernel says so.
            match written_pages(bytes, hot) {
                Some((pages, exact)) => before.updated(bytes, &pages, !hot, exact),
                None => PageMap::from_bytes(bytes),
            }
        })
        .unwrap_or_default()
}

/// An instance's exported mutable globals.
pub(crate) fn globals_of(
    store: &mut Store<system_api::Env>,
    instance: &Instance,
    compiled: &Compiled,
) -> BTreeMap<String, GlobalValue> {
    let names: Vec<String> = compiled
        .module
        .exports()
        .filter(|e| {
            e.ty()
                .global()
                .is_some_and(|g| g.mutability() == wasmtime::Mutability::Var)
        })
        .map(|e| e.name().to_string())
        .collect();
    let mut globals = BTreeMap::new();
    for name in names {
        if let Some(g) = instance.get_global(&mut *store, &name) {
            let v = match g.get(&mut *store) {
                Val::I32(x) => GlobalValue::I32(x),
                Val::I64(x) => GlobalValue::I64(x),
                Val::F32(x) => GlobalValue::F32(x),
                Val::F64(x) => GlobalValue::F64(x),
                _ => continue,
            };
            globals.insert(name, v);
        }
    }
    globals
}

/// The pages `pages` of `mem` (those within it), copied out.
pub(crate) fn save(mem: &[u8], pages: &[usize]) -> Saved {
    pages
        .iter()
        .filter(|&&p| p * PAGE_SIZE < mem.len())
        .map(|&p| {
            let at = p * PAGE_SIZE;
            (p, mem[at..(at + PAGE_SIZE).min(mem.len())].to_vec())
        })
        .collect()
}
