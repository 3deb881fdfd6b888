//! Page maps encoded apart from the value that holds them, for checkpoints: while
//! [`detaching`] runs on a thread, a [`PageMap`] serializes as its length only and is set
//! aside (a cheap clone), so the caller can store its bytes chunk by chunk and hash only the
//! chunks that changed ([`PageMap::chunk_hashes`]); [`attaching`] hands page maps back, in
//! the same order, while the value is decoded. Outside of both a page map serializes as its
//! plain bytes.

use std::cell::RefCell;

pub use crate::page_map::AttachError;
use crate::page_map::{ATTACHING, DETACHED, PageMap};

/// Restores the thread's previous mode when dropped, also if encoding panics.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    outer: Option<Option<T>>,
}

impl<T> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(outer) = self.outer.take() {
            self.key.with(|d| d.replace(outer));
        }
    }
}

/// Runs `encode` with page maps set aside: returns its result and the page maps it met, in
/// the order it serialized them.
pub fn detaching<R>(encode: impl FnOnce() -> R) -> (R, Vec<PageMap>) {
    let outer = DETACHED.with(|d| d.replace(Some(Vec::new())));
    let mut restore = Restore {
        key: &DETACHED,
        outer: Some(outer),
    };
    let r = encode();
    let outer = restore.outer.take().unwrap_or_default();
    let maps = DETACHED.with(|d| d.replace(outer)).unwrap_or_default();
    (r, maps)
}

/// Runs `decode` with `maps` given back in order to the page maps it decodes; every one must
/// be taken, each with the length the encoding recorded.
pub fn attaching<R, E: From<AttachError>>(
    maps: Vec<PageMap>,
    decode: impl FnOnce() -> Result<R, E>,
) -> Result<R, E> {
    let outer = ATTACHING.with(|a| a.replace(Some(maps.into())));
    let mut restore = Restore {
        key: &ATTACHING,
        outer: Some(outer),
    };
    let r = decode();
    let outer = restore.outer.take().unwrap_or_default();
    let left = ATTACHING
        .with(|a| a.replace(outer))
        .map_or(0, |rest| rest.len());
    let r = r?;
    if left > 0 {
        return Err(AttachError::Unused(left).into());
    }
    Ok(r)
}
