//! Queries: run on the newest certified state's snapshot, answered as CBOR and signed with
//! this node's key (the agents check the signature against the subnet's node keys).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use candid::Principal;
use ciborium::Value;
use thicket_types::ingress::{Value as Field, hash_of_map};

use super::envelope::now_ns;
use super::read_state::principal;
use super::{HttpState, bad_request, cbor_response, certified, not_yet, text};
use crate::certifier::CertifiedState;
use crate::clock::now_ms;
use thicket_state::Reject;

pub async fn query(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    let ecid = match principal(&canister) {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let (msg, id) = match super::envelope::check_query(&body, now_ns()) {
        Ok(m) => m,
        Err(e) => return bad_request(e),
    };
    // A query to the management canister goes to the canister it reads (the effective
    // canister id), as agents send it.
    let management = msg.canister_id.is_empty();
    if management {
        match thicket_state::management::query_target(&msg.method_name, &msg.arg) {
            Ok(target) if target == ecid => {}
            Ok(target) => {
                return bad_request(format!(
                    "the management canister's {} reads canister {target}: send it to that \
                     canister's endpoint, not {ecid}'s",
                    msg.method_name
                ));
            }
            Err(r) => return bad_request(r.message),
        }
    } else if msg.canister_id.as_slice() != ecid.as_slice() {
        return bad_request(format!(
            "the URL names canister {ecid} but the query is for {}",
            Principal::try_from_slice(&msg.canister_id)
                .map(|p| p.to_text())
                .unwrap_or_else(|_| hex::encode(&msg.canister_id))
        ));
    }
    let Some(cert) = certified(&s) else {
        return not_yet();
    };
    let target = if management { None } else { Some(ecid) };
    let result = execute(
        &s.queries,
        cert,
        msg.sender.clone(),
        target,
        msg.method_name.clone(),
        msg.arg.clone(),
    )
    .await;
    let timestamp = now_ms().saturating_mul(1_000_000);
    let query = crate::metrics::MessageKind { kind: "query" };
    s.metrics.execution_messages.get_or_create(&query).inc();
    if let Err(r) = &result {
        s.metrics
            .execution_rejects
            .get_or_create(&crate::metrics::RejectLabels {
                kind: "query",
                reject_code: crate::metrics::reject_code_name(r.code),
            })
            .inc();
    }
    let (body, signed) = match result {
        Ok(reply) => {
            let reply_hash = hash_of_map(&[("arg", Field::Bytes(&reply))]);
            let signed = hash_of_map(&[
                ("status", Field::Bytes(b"replied")),
                ("reply", Field::Map(reply_hash)),
                ("timestamp", Field::Nat(timestamp)),
                ("request_id", Field::Bytes(&id.0)),
            ]);
            (
                vec![
                    (text("status"), text("replied")),
                    (
                        text("reply"),
                        Value::Map(vec![(text("arg"), Value::Bytes(reply))]),
                    ),
                ],
                signed,
            )
        }
        Err(r) => {
            let mut signed_fields = vec![
                ("status", Field::Bytes(b"rejected")),
                ("reject_code", Field::Nat(u64::from(r.code))),
                ("reject_message", Field::Bytes(r.message.as_bytes())),
                ("timestamp", Field::Nat(timestamp)),
                ("request_id", Field::Bytes(&id.0)),
            ];
            if !r.error_code.is_empty() {
                signed_fields.push(("error_code", Field::Bytes(r.error_code.as_bytes())));
            }
            let signed = hash_of_map(&signed_fields);
            let mut body = vec![
                (text("status"), text("rejected")),
                (text("reject_code"), Value::Integer(r.code.into())),
                (text("reject_message"), text(&r.message)),
            ];
            if !r.error_code.is_empty() {
                body.push((text("error_code"), text(&r.error_code)));
            }
            (body, signed)
        }
    };
    let signature = s
        .node_key
        .sign(&[b"\x0Bic-response".as_slice(), &signed].concat());
    let mut body = body;
    body.push((
        text("signatures"),
        Value::Array(vec![Value::Map(vec![
            (text("timestamp"), Value::Integer(timestamp.into())),
            (text("signature"), Value::Bytes(signature.0.to_vec())),
            (text("identity"), Value::Bytes(s.node_principal.clone())),
        ])]),
    ));
    cbor_response(StatusCode::OK, Value::Map(body))
}

/// How many queries run at once on a replica, and how many may wait for a turn. Each runs on
/// a thread of its own with a Wasm instance: without a bound, a burst of queries started
/// hundreds of threads, and the memory they took was not given back.
pub struct QueryLimit {
    running: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    /// Queries refused because too many were waiting.
    refused: prometheus_client::metrics::counter::Counter,
}

impl QueryLimit {
    pub fn new(
        max_running: usize,
        max_waiting: usize,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        QueryLimit {
            running: Arc::new(tokio::sync::Semaphore::new(max_running.max(1))),
            waiting: Default::default(),
            max_waiting,
            refused,
        }
    }

    /// A turn to run a query: at once, after the queries before it, or refused (a transient
    /// reject the client retries) when too many wait already.
    async fn turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Reject> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.running.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.refused.inc();
            return Err(Reject::new(
                201,
                format!(
                    "this replica has {} queries waiting to run: retry in a moment",
                    self.max_waiting
                ),
            ));
        }
        // Counted out when the wait ends, also when the request is dropped while it waits
        // (a client gone, a timeout).
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&self.waiting);
        let permit = self.running.clone().acquire_owned().await;
        permit.map_err(|_| Reject::new(101, "the replica is stopping"))
    }
}

/// Runs a query on the certified state's snapshot, off the async threads, when `limit` gives
/// it a turn: for canister `target` (with its data certificate), or for the management
/// canister (`None`; its argument names the canister it reads).
pub(super) async fn execute(
    limit: &QueryLimit,
    cert: Arc<CertifiedState>,
    sender: Vec<u8>,
    target: Option<Principal>,
    method: String,
    arg: Vec<u8>,
) -> Result<Vec<u8>, Reject> {
    let run = move || {
        let Some(id) = target else {
            let caller = Principal::try_from_slice(&sender)
                .map_err(|_| Reject::new(401, "malformed sender"))?;
            return cert.view.management_query(&caller, &method, &arg);
        };
        if let Some(which) = thicket_state::system::SystemCanister::of(&id) {
            return cert.view.system_query(which, &method, &arg);
        }
        let data_certificate = cert.certificate(&[vec![
            b"canister".to_vec(),
            id.as_slice().to_vec(),
            b"certified_data".to_vec(),
        ]]);
        let rt = thicket_canister::shared_for_queries()
            .map_err(|e| Reject::new(101, format!("no Wasm engine on this replica: {e}")))?;
        cert.view
            .query(rt, &sender, &id, &method, &arg, Some(data_certificate))
    };
    let turn = limit.turn().await?;
    // The turn goes with the thread: a request dropped meanwhile does not free it while the
    // query still runs.
    let result = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        run()
    })
    .await;
    match result {
        Ok(r) => r,
        Err(_) => Err(Reject::new(101, "the query's execution thread failed")),
    }
}
