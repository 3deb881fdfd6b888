//! The management canister's methods that may run as queries, sent to the endpoint of the
//! canister they read (their effective canister id): `fetch_canister_logs` (a canister's log,
//! for those its `log_visibility` allows) and `canister_status` (for its controllers and those
//! its `status_visibility` allows). Both also run as calls.

use std::collections::BTreeMap;

use super::{
    CanisterIdRecord, CanisterLogFilter, CanisterLogRecord, FetchCanisterLogsArgs,
    FetchCanisterLogsResult, decode, encode, not_controller, status_of,
};
use crate::canister::Canister;
use crate::query::QueryView;
use crate::reject::Reject;
use candid::Principal;

/// The reply to `fetch_canister_logs` with argument `arg` from `caller`.
pub(crate) fn fetch(
    canisters: &BTreeMap<Principal, Canister>,
    caller: &Principal,
    arg: &[u8],
) -> Result<Vec<u8>, Reject> {
    let a: FetchCanisterLogsArgs = decode("fetch_canister_logs", arg)?;
    let id = a.canister_id;
    let c = canisters
        .get(&id)
        .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
    if !c.extra.log_visibility.allows(c, caller) {
        return Err(Reject::new(
            512,
            format!(
                "Caller {caller} is not allowed to query ic00 method fetch_canister_logs \
                 for canister {id}"
            ),
        ));
    }
    let keep = |r: &&crate::canister::LogRecord| match &a.filter {
        None => true,
        Some(CanisterLogFilter::ByIdx { start, end }) => (*start..*end).contains(&r.idx),
        Some(CanisterLogFilter::ByTimestampNanos { start, end }) => {
            (*start..*end).contains(&r.timestamp_nanos)
        }
    };
    encode(&FetchCanisterLogsResult {
        canister_log_records: c
            .extra
            .log
            .records
            .iter()
            .filter(keep)
            .map(|r| CanisterLogRecord {
                idx: r.idx,
                timestamp_nanos: r.timestamp_nanos,
                content: r.content.clone(),
            })
            .collect(),
    })
}

/// The management canister's methods a query may call, with the canister each reads from
/// its argument (the effective canister id the query must be sent to).
pub fn query_target(method: &str, arg: &[u8]) -> Result<Principal, Reject> {
    match method {
        "fetch_canister_logs" => {
            decode::<FetchCanisterLogsArgs>(method, arg).map(|a| a.canister_id)
        }
        "canister_status" => decode::<CanisterIdRecord>(method, arg).map(|a| a.canister_id),
        _ => Err(no_query_method(method)),
    }
}

fn no_query_method(method: &str) -> Reject {
    Reject::new(
        302,
        format!("The management canister has no query method '{method}'"),
    )
}

impl QueryView {
    /// A query to the management canister (see [`query_target`]).
    pub fn management_query(
        &self,
        caller: &Principal,
        method: &str,
        arg: &[u8],
    ) -> Result<Vec<u8>, Reject> {
        match method {
            "canister_status" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                status(&self.canisters, caller, &a.canister_id)
            }
            "fetch_canister_logs" => fetch(&self.canisters, caller, arg),
            _ => Err(no_query_method(method)),
        }
    }
}

/// `canister_status` of canister `id` for `caller`: its controllers, and those its status
/// visibility allows.
pub(crate) fn status(
    canisters: &BTreeMap<Principal, Canister>,
    caller: &Principal,
    id: &Principal,
) -> Result<Vec<u8>, Reject> {
    let c = canisters
        .get(id)
        .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
    if !c.extra.status_visibility.allows(c, caller) {
        return Err(not_controller(id, c, caller));
    }
    encode(&status_of(c))
}
