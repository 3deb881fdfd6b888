//! The cycles-minting canister's methods IC tools call to find where canisters go
//! (`rkp4c-7iaaa-aaaaa-aaaca-cai`): `get_default_subnets`, `get_subnet_for_canister`,
//! `get_subnet_types_to_subnets` and
//! `get_principals_authorized_to_create_canisters_to_subnets`. A Thicket subnet is its own
//! world: the default subnet is this one, it has no type, and no principal is authorized
//! elsewhere. It holds no ICP ledger, so the methods converting ICP (`notify_*`) and its
//! ICP/XDR rates refuse with a message pointing at the cycles ledger.

use candid::{CandidType, Deserialize, Principal};

use super::{SystemView, cycles_ledger, cycles_minting_canister, decode, encode};
use crate::ids::in_range;
use crate::reject::Reject;

#[derive(CandidType, Deserialize)]
struct SubnetTypesToSubnetsResponse {
    data: Vec<(String, Vec<Principal>)>,
}

#[derive(CandidType, Deserialize)]
struct AuthorizedSubnetsResponse {
    data: Vec<(Principal, Vec<Principal>)>,
}

#[derive(CandidType, Deserialize)]
struct GetSubnetForCanisterRequest {
    principal: Option<Principal>,
}

#[derive(CandidType, Deserialize)]
struct SubnetForCanister {
    subnet_id: Option<Principal>,
}

impl SystemView<'_> {
    /// The cycles-minting canister's query methods (also answered as calls).
    pub(super) fn cmc_read(&self, method: &str, arg: &[u8]) -> Option<Result<Vec<u8>, Reject>> {
        let id = cycles_minting_canister();
        let reply = match method {
            "get_default_subnets" => self.subnet().and_then(|s| encode(&vec![s])),
            "get_subnet_types_to_subnets" => encode(&SubnetTypesToSubnetsResponse { data: vec![] }),
            "get_principals_authorized_to_create_canisters_to_subnets" => {
                encode(&AuthorizedSubnetsResponse { data: vec![] })
            }
            "get_subnet_for_canister" => decode::<GetSubnetForCanisterRequest>(&id, method, arg)
                .and_then(|a| {
                    let here = a.principal.is_some_and(|p| in_range(&p));
                    let subnet_id = if here { Some(self.subnet()?) } else { None };
                    encode(&Ok::<_, String>(SubnetForCanister { subnet_id }))
                }),
            // There is no ICP here, so no rate of it: a made-up one would send tools on to
            // an ICP ledger that does not exist.
            "get_icp_xdr_conversion_rate" | "get_average_icp_xdr_conversion_rate" => {
                Err(not_converting(method))
            }
            _ => return None,
        };
        Some(reply)
    }

    fn subnet(&self) -> Result<Principal, Reject> {
        self.subnet_id.ok_or_else(|| {
            Reject::by_canister(
                "this replica does not know its subnet's id yet: try again in a moment".into(),
            )
        })
    }
}

/// The answer to any other method: this subnet converts no ICP.
pub(super) fn not_converting(method: &str) -> Reject {
    let id = cycles_minting_canister();
    if method.starts_with("notify_") || method.contains("icp_xdr_conversion_rate") {
        return Reject::by_canister(format!(
            "{method}: the cycles-minting canister of a Thicket subnet converts no ICP (the \
             subnet has no ICP ledger). Pay for canisters with cycles from the cycles ledger \
             {}: `icp canister create`, `icp canister top-up`, `icp cycles transfer`",
            cycles_ledger()
        ));
    }
    super::no_method(&id, "update", method)
}
