//! Canister ids: the principals this subnet assigns, and the range it certifies.

use candid::Principal;

/// The canister ids this subnet assigns: indices 0 ..= 0xFFFFF (the range of the IC's first
/// application subnet), i.e. `rwlgt-iiaaa-aaaaa-aaaaa-cai` to `7tjcv-pp777-77776-qaaaa-cai`.
pub const CANISTER_RANGE: (u64, u64) = (0, 0xFFFFF);

/// A canister id: the 8-byte big-endian index followed by 0x01 0x01.
pub fn canister_id(index: u64) -> Principal {
    let mut b = index.to_be_bytes().to_vec();
    b.extend_from_slice(&[1, 1]);
    Principal::from_slice(&b)
}

/// The index of a canister id of this form, if it is one.
pub fn canister_index(id: &Principal) -> Option<u64> {
    let b = id.as_slice();
    if b.len() != 10 || b[8..] != [1, 1] {
        return None;
    }
    let mut idx = [0u8; 8];
    idx.copy_from_slice(&b[..8]);
    Some(u64::from_be_bytes(idx))
}

pub fn in_range(id: &Principal) -> bool {
    canister_index(id).is_some_and(|i| (CANISTER_RANGE.0..=CANISTER_RANGE.1).contains(&i))
}
