//! `fetch_canister_logs`: a canister's log for those its `log_visibility` allows, as a query
//! on the management canister (its effective canister id is the canister whose log it reads)
//! or as a call.

use std::collections::BTreeMap;

use super::{
    CanisterLogFilter, CanisterLogRecord, FetchCanisterLogsArgs, FetchCanisterLogsResult, decode,
    encode,
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
        query_target(method, arg)?;
        fetch(&self.canisters, caller, arg)
    }
}
