//! The system canisters IC tools expect at their well-known ids, native in the replica like
//! the management canister: the cycles ledger (`um5iw-rqaaa-aaaaq-qaaba-cai`, see `cycles.rs`
//! and `ledger.rs`) and the cycles-minting canister (`rkp4c-7iaaa-aaaaa-aaaca-cai`, see
//! `cmc.rs`). Their calls run in the batch like any other message and answer at once; their
//! query methods also answer queries, from the replica's query snapshot. Their state
//! ([`crate::ledger::SystemState`]) is part of the subnet's, so checkpoints and state sync
//! carry it. Queries reach them through [`QueryView::system_query`] (the replica sends a query
//! for a system canister there).

mod cmc;
mod cycles;
mod cycles_types;

pub use cycles_types::{RejectionCode, SubnetFilter, SubnetSelection};

use candid::{CandidType, Deserialize, Principal};

use crate::ids::canister_id;
use crate::ledger::SystemState;
use crate::limits::decode_argument;
use crate::messages::Origin;
use crate::query::QueryView;
use crate::reject::Reject;
use crate::state::SubnetState;

/// The cycles-minting canister's index: `rkp4c-7iaaa-aaaaa-aaaca-cai`.
pub const CYCLES_MINTING_INDEX: u64 = 4;
/// The cycles ledger's index: `um5iw-rqaaa-aaaaq-qaaba-cai`.
pub const CYCLES_LEDGER_INDEX: u64 = 0x210_0002;

pub fn cycles_ledger() -> Principal {
    canister_id(CYCLES_LEDGER_INDEX)
}

pub fn cycles_minting_canister() -> Principal {
    canister_id(CYCLES_MINTING_INDEX)
}

/// A system canister the replica runs natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemCanister {
    CyclesLedger,
    CyclesMinting,
}

impl SystemCanister {
    pub fn of(id: &Principal) -> Option<Self> {
        if *id == cycles_ledger() {
            Some(SystemCanister::CyclesLedger)
        } else if *id == cycles_minting_canister() {
            Some(SystemCanister::CyclesMinting)
        } else {
            None
        }
    }

    pub fn id(self) -> Principal {
        match self {
            SystemCanister::CyclesLedger => cycles_ledger(),
            SystemCanister::CyclesMinting => cycles_minting_canister(),
        }
    }
}

/// What the system canisters' read-only methods see.
pub(crate) struct SystemView<'a> {
    pub system: &'a SystemState,
    pub time_ns: u64,
    pub subnet_id: Option<Principal>,
}

fn encode<T: CandidType>(v: &T) -> Result<Vec<u8>, Reject> {
    candid::encode_one(v).map_err(|e| Reject::new(503, format!("encoding the reply: {e}")))
}

/// The argument of `method` of system canister `id`; an undecodable one fails as a canister's
/// Candid decoding traps.
fn decode<'a, T: CandidType + Deserialize<'a>>(
    id: &Principal,
    method: &str,
    arg: &'a [u8],
) -> Result<T, Reject> {
    decode_argument(arg).map_err(|e| {
        Reject::new(
            503,
            format!(
                "Canister {id} trapped explicitly: failed to decode the argument of {method}: {e}"
            ),
        )
    })
}

fn no_method(id: &Principal, kind: &str, method: &str) -> Reject {
    Reject::new(
        536,
        format!("Canister {id} has no {kind} method '{method}'"),
    )
}

impl SubnetState {
    /// Tells the state its subnet's id (the replica does, from the registry, before it
    /// executes a batch).
    pub fn set_subnet_id(&mut self, id: Principal) {
        self.subnet_id.0 = Some(id);
    }

    /// The subnet's id, once the replica told it.
    pub fn subnet_id(&self) -> Option<Principal> {
        self.subnet_id.0
    }

    /// Gives the developer faucet its cycles, the first time the state executes.
    pub(crate) fn fund_faucet(&mut self) {
        if !self.system.ledger.faucet_funded {
            std::sync::Arc::make_mut(&mut self.system)
                .ledger
                .fund_faucet();
        }
    }

    pub fn system(&self) -> &SystemState {
        &self.system
    }

    pub(crate) fn system_view(&self) -> SystemView<'_> {
        SystemView {
            system: &self.system,
            time_ns: self.time_ns,
            subnet_id: self.subnet_id.0,
        }
    }

    /// A call to system canister `which` from `caller`, with `cycles` attached, answered to
    /// `origin` at once.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn system_call(
        &mut self,
        origin: Origin,
        which: SystemCanister,
        caller: &[u8],
        method: &str,
        arg: &[u8],
        cycles: u128,
    ) {
        let Ok(caller) = Principal::try_from_slice(caller) else {
            self.respond(
                origin,
                Err(Reject::new(301, "The sender is not a principal")),
                cycles,
            );
            return;
        };
        let (result, refund) = match which {
            SystemCanister::CyclesLedger => self.cycles_ledger_call(&caller, method, arg, cycles),
            SystemCanister::CyclesMinting => {
                let view = self.system_view();
                let r = view
                    .cmc_read(method, arg)
                    .unwrap_or_else(|| Err(cmc::not_converting(method)));
                (r, cycles)
            }
        };
        self.respond(origin, result, refund);
    }
}

impl QueryView {
    /// A query to system canister `which`.
    pub fn system_query(
        &self,
        which: SystemCanister,
        method: &str,
        arg: &[u8],
    ) -> Result<Vec<u8>, Reject> {
        let view = SystemView {
            system: &self.system,
            time_ns: self.time_ns,
            subnet_id: self.subnet_id,
        };
        let answer = match which {
            SystemCanister::CyclesLedger => view.cycles_ledger_read(method, arg),
            SystemCanister::CyclesMinting => view.cmc_read(method, arg),
        };
        answer.unwrap_or_else(|| Err(no_method(&which.id(), "query", method)))
    }
}
