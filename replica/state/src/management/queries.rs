//! The management canister's methods that may run as queries, sent to the endpoint of the
//! canister they read (their effective canister id): `fetch_canister_logs` (a canister's log,
//! for those its `log_visibility` allows) and `canister_status` (for its controllers and those
//! its `status_visibility` allows). Both also run as calls.

use std::collections::BTreeMap;

use super::{
    CanisterIdRecord, CanisterLogFilter, CanisterLogRecord, FetchCanisterLogsArgs,
    FetchCanisterLogsResult, decode, encode, status_of,
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
        _ => Err(Reject::new(
            302,
            format!("The management canister has no query method '{method}'"),
        )),
    }
}

impl QueryView {
    /// A query to the management canister (see [`query_target`]).
    pub fn management_query(
        &self,
        caller: &Principal,
        method: &str,
        arg: &[u8],
    ) -> Result<Vec<u8>, Reject> {
        let id = query_target(method, arg)?;
        if method == "canister_status" {
            return status(&self.canisters, caller, &id);
        }
        fetch(&self.canisters, caller, arg)
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
        let list: Vec<String> = c.controllers.iter().map(Principal::to_text).collect();
        return Err(Reject::new(
            512,
            format!(
                "Only the controllers of the canister {id} can control it. \
                 Canister's controllers: {}. Sender's id: {caller}",
                list.join(" ")
            ),
        ));
    }
    encode(&status_of(c))
}
