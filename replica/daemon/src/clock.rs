//! The wall clock, in the units the IC uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch: the IC's block time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
