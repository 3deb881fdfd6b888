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

/// Runs `f` with the thread's `key` holding `value`, and gives back what `key` holds after
/// it (the thread's previous value restored, also if `f` panics).
fn with_mode<T: 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> (R, Option<T>) {
    let outer = key.with(|k| k.replace(Some(value)));
    let mut restore = Restore {
        key,
        outer: Some(outer),
    };
    let r = f();
    let outer = restore.outer.take().unwrap_or_default();
    (r, key.with(|k| k.replace(outer)))
}

/// Runs `encode` with page maps set aside: returns its result and the page maps it met, in
/// the order it serialized them.
pub fn detaching<R>(encode: impl FnOnce() -> R) -> (R, Vec<PageMap>) {
    let (r, maps) = with_mode(&DETACHED, Vec::new(), encode);
    (r, maps.unwrap_or_default())
}

/// Runs `decode` with `maps` given back in order to the page maps it decodes; every one must
/// be taken, each with the length the encoding recorded.
pub fn attaching<R, E: From<AttachError>>(
    maps: Vec<PageMap>,
    decode: impl FnOnce() -> Result<R, E>,
) -> Result<R, E> {
    let (r, rest) = with_mode(&ATTACHING, maps.into(), decode);
    let r = r?;
    match rest.map_or(0, |rest| rest.len()) {
        0 => Ok(r),
        left => Err(AttachError::Unused(left).into()),
    }
}
