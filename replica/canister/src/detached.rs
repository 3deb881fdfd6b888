//! Page maps encoded apart from the value that holds them, for checkpoints: while
//! [`detaching`] runs on a thread, a [`PageMap`] serializes as its length only and is set
//! aside (a cheap clone), so the caller can store its bytes chunk by chunk and hash only the
//! chunks that changed ([`PageMap::chunk_hashes`]); [`attaching`] hands page maps back, in
//! the same order, while the value is decoded. Outside of both a page map serializes as its
//! plain bytes.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::page_map::PageMap;

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

thread_local! {
    /// Page maps set aside by a [`crate::detached::detaching`] encoding on this thread.
    pub(crate) static DETACHED: RefCell<Option<Vec<PageMap>>> = const { RefCell::new(None) };
    /// Page maps an [`crate::detached::attaching`] decoding on this thread gives back.
    pub(crate) static ATTACHING: RefCell<Option<VecDeque<PageMap>>> = const { RefCell::new(None) };
}

/// Why page maps could not be put back into a decoded value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("the encoding refers to more page maps than it carries")]
    Missing,
    #[error("a page map of {found} bytes where the encoding says {expected}")]
    Length { found: usize, expected: u64 },
    #[error("{0} page maps carried that the encoding does not refer to")]
    Unused(usize),
}

/// Sets `map` aside if a detaching encoding runs on this thread.
fn set_aside(map: &PageMap) -> bool {
    DETACHED.with(|d| match d.borrow_mut().as_mut() {
        Some(maps) => {
            maps.push(map.clone());
            true
        }
        None => false,
    })
}

/// The next page map an attaching decoding gives back, if one runs on this thread.
fn take(expected: u64) -> Option<Result<PageMap, AttachError>> {
    ATTACHING.with(|a| {
        let mut a = a.borrow_mut();
        let maps = a.as_mut()?;
        Some(match maps.pop_front() {
            None => Err(AttachError::Missing),
            Some(m) if m.len() as u64 != expected => Err(AttachError::Length {
                found: m.len(),
                expected,
            }),
            Some(m) => Ok(m),
        })
    })
}

/// Encoded as the plain bytes (as a `Vec<u8>` would be), so the encoding shows the memory and
/// not how it is held; within [`crate::detached`] as its length, the bytes travelling apart.
impl Serialize for PageMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if set_aside(self) {
            return s.serialize_u64(self.len() as u64);
        }
        s.serialize_bytes(&self.to_vec())
    }
}

impl<'de> Deserialize<'de> for PageMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if ATTACHING.with(|a| a.borrow().is_some()) {
            let len = u64::deserialize(d)?;
            return match take(len) {
                Some(Ok(map)) => Ok(map),
                Some(Err(e)) => Err(serde::de::Error::custom(e)),
                None => Err(serde::de::Error::custom("no page maps to attach")),
            };
        }
        Vec::<u8>::deserialize(d).map(|v| PageMap::from_bytes(&v))
    }
}
