//! Canister ids: the principals this subnet assigns, and the ranges it certifies.
//!
//! A Thicket subnet answers for the canister ids IC tools expect to find system canisters at,
//! so no user canister may take one: the NNS range (indices 0 ..= 0xFFFFF: the registry,
//! governance, the ICP ledger, the cycles-minting canister, ...) and the range holding the
//! cycles ledger (`um5iw-rqaaa-aaaaq-qaaba-cai`, index 0x2100002). Canisters users create get
//! ids from [`USER_RANGE`], above the first and below the second.

use candid::Principal;

/// The ids new canisters get: indices 0x1000000 ..= 0x10FFFFF, i.e.
/// `i3flu-baaaa-aaaai-aaaaa-cai` to `uqdr7-siaaa-aaaai-p777q-cai`.
pub const USER_RANGE: (u64, u64) = (0x100_0000, 0x10F_FFFF);

/// Every range of the subnet, ascending: the system ranges around the users' one. What
/// `/subnet/<id>/canister_ranges` certifies.
pub const CANISTER_RANGES: [(u64, u64); 3] = [(0, 0xF_FFFF), USER_RANGE, (0x210_0000, 0x21F_FFFF)];

/// A canister id: the 8-byte big-endian index followed by 0x01 0x01.
pub fn canister_id(index: u64) -> Principal {
    let mut b = index.to_be_bytes().to_vec();
    b.extend_from_slice(&[1, 1]);
    Principal::from_slice(&b)
}

/// The first id users get, which also serves as the effective canister id of calls that
/// create canisters.
pub fn first_user_canister() -> Principal {
    canister_id(USER_RANGE.0)
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

/// Whether the subnet answers for `id` (in any of its ranges).
pub fn in_range(id: &Principal) -> bool {
    canister_index(id).is_some_and(|i| {
        CANISTER_RANGES
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&i))
    })
}
