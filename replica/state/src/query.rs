//! Queries: a replica-local snapshot of the canisters, against which a query runs and keeps
//! nothing it changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use candid::Principal;
use thicket_canister::{Outcome, Runtime};
use thicket_types::Height;

use crate::canister::{Canister, Status, context};
use crate::ledger::SystemState;
use crate::limits::QUERY_INSTRUCTION_LIMIT;
use crate::reject::{Reject, exec_reject};

/// A replica-local snapshot for queries: cheap to take (modules and memories are shared).
#[derive(Clone, Debug)]
pub struct QueryView {
    pub height: Height,
    pub time_ns: u64,
    pub canisters: BTreeMap<Principal, Canister>,
    /// The system canisters' state.
    pub system: Arc<SystemState>,
    /// The subnet's id, when the replica knows it.
    pub subnet_id: Option<Principal>,
}

impl QueryView {
    /// Whether `sender` may read the metadata section `name` of canister `id`: a public one
    /// anyone, a private one its controllers only (a section that does not exist is simply
    /// absent from the certificate).
    pub fn may_read_metadata(&self, id: &Principal, name: &[u8], sender: &[u8]) -> bool {
        let Some(c) = self.canisters.get(id) else {
            return true;
        };
        let private = c.module.as_ref().is_some_and(|m| {
            m.metadata()
                .iter()
                .any(|md| !md.public && md.name.as_bytes() == name)
        });
        !private || c.controllers.iter().any(|p| p.as_slice() == sender)
    }

    /// Runs a query (`canister_query <method>`) against this snapshot; nothing it changes is
    /// kept.
    pub fn query(
        &self,
        rt: &Runtime,
        caller: &[u8],
        id: &Principal,
        method: &str,
        arg: &[u8],
        data_certificate: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Reject> {
        let c = self
            .canisters
            .get(id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        if c.status != Status::Running {
            return Err(Reject::new(508, format!("Canister {id} is not running")));
        }
        let Some(module) = &c.module else {
            return Err(Reject::new(
                537,
                format!("Canister {id} is empty: it contains no Wasm module"),
            ));
        };
        let compiled = module.compiled(rt).map_err(|e| exec_reject(id, e))?;
        let entry = format!("canister_query {method}");
        if !compiled.has_export(&entry) {
            return Err(Reject::new(
                536,
                format!("Canister {id} has no query method '{method}'"),
            ));
        }
        let mut ctx = context(id, c, caller, method, arg, self.time_ns);
        ctx.replicated = false;
        ctx.can_respond = true;
        ctx.data_certificate = data_certificate;
        let out = rt.query(&compiled, &c.memory, &entry, ctx, QUERY_INSTRUCTION_LIMIT);
        match out.result.map_err(|e| exec_reject(id, e))? {
            Outcome::Reply(bytes) => Ok(bytes),
            Outcome::Reject(m) => Err(Reject::by_canister(m)),
            Outcome::NoResponse => Err(Reject::new(
                506,
                format!("Canister {id} did not reply to the query"),
            )),
        }
    }
}
