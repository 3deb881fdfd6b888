//! Canister history: who changed a canister how (its creation, code deployments and
//! uninstalls, controller changes), and `canister_info`, which tells any canister a canister's
//! recent changes, module hash and controllers.

use candid::Principal;

use super::{
    CanisterInfoArgs, CanisterInfoResult, ChangeOrigin, FromCanisterRecord, FromUserRecord, decode,
    encode,
};
use crate::messages::Origin;
use crate::reject::Reject;
use crate::state::SubnetState;

impl SubnetState {
    /// Who a management call that changes a canister comes from: a user, or a canister (with
    /// its version).
    pub(super) fn change_origin(&self, origin: &Origin, caller: &Principal) -> ChangeOrigin {
        match origin {
            Origin::Canister { .. } => ChangeOrigin::FromCanister(FromCanisterRecord {
                canister_id: *caller,
                canister_version: self.canisters.get(caller).map(|c| c.version),
            }),
            _ => ChangeOrigin::FromUser(FromUserRecord { user_id: *caller }),
        }
    }

    /// `canister_info` (for canisters only): the requested number of most recent changes.
    pub(super) fn canister_info(&self, arg: &[u8]) -> Result<Vec<u8>, Reject> {
        let a: CanisterInfoArgs = decode("canister_info", arg)?;
        let id = a.canister_id;
        let c = self
            .canisters
            .get(&id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        let h = &c.extra.history;
        let wanted = a
            .num_requested_changes
            .unwrap_or(0)
            .min(h.changes.len() as u64) as usize;
        encode(&CanisterInfoResult {
            total_num_changes: h.total,
            recent_changes: h
                .changes
                .iter()
                .skip(h.changes.len() - wanted)
                .cloned()
                .collect(),
            module_hash: c.module.as_ref().map(|m| m.hash.to_vec()),
            controllers: c.controllers.iter().copied().collect(),
        })
    }
}
