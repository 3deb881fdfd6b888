//! The IC HTTP interface beyond the asynchronous call: `GET /api/v2/status` (with the subnet's
//! root key), synchronous calls (`/api/v3` and `/api/v4`) answered with a certificate,
//! `read_state` on canisters and on the subnet, and queries signed by this node's key.
//!
//! Everything certified comes from the newest certified state (see [`crate::certifier`]):
//! certificates reveal the requested paths and `/time` and prune the rest; queries run on that
//! state's snapshot. Malformed requests get a 400 with the reason.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use candid::Principal;
use ciborium::Value;
use serde::Deserialize;
use serde_bytes::ByteBuf;
use thicket_types::ingress::{
    IngressMessage, MAX_INGRESS_TTL_NS, PERMITTED_DRIFT_NS, RequestId, Value as Field, hash_of_map,
};

use crate::certifier::CertifiedState;
use crate::driver::now_ms;
use crate::http::HttpState;
use crate::ingress::{Content, Envelope};

/// How long a synchronous call waits for its certified status before answering 202 (the
/// agent then polls `read_state`).
pub const SYNC_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most paths in one `read_state`, and labels in one path (the specification's limits).
const MAX_PATHS: usize = 1000;
const MAX_LABELS: usize = 127;

fn cbor_response(status: StatusCode, value: Value) -> Response {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(&Value::Tag(55799, Box::new(value)), &mut out);
    (status, [(header::CONTENT_TYPE, "application/cbor")], out).into_response()
}

fn text(k: &str) -> Value {
    Value::Text(k.to_string())
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, msg.into()).into_response()
}

fn certified(s: &HttpState) -> Option<Arc<CertifiedState>> {
    s.certified.read().ok().and_then(|c| c.clone())
}

fn not_yet() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this replica has no certified state yet; retry shortly",
    )
        .into_response()
}

pub async fn status(State(s): State<Arc<HttpState>>) -> Response {
    let cert = certified(&s);
    let mut fields = vec![
        (text("impl_version"), text(env!("CARGO_PKG_VERSION"))),
        (
            text("replica_health_status"),
            text(if cert.is_some() {
                "healthy"
            } else {
                "starting"
            }),
        ),
    ];
    // The root key is known from the registry before anything is certified.
    let root_key = match &cert {
        Some(c) => Some(c.subnet.public_key_der.clone()),
        None => s
            .metrics
            .status
            .lock()
            .ok()
            .map(|st| st.subnet_public_key.clone())
            .filter(|k| !k.is_empty()),
    };
    if let Some(k) = root_key {
        fields.push((text("root_key"), Value::Bytes(k)));
    }
    if let Some(c) = &cert {
        fields.push((text("certified_height"), Value::Integer(c.height.0.into())));
    }
    cbor_response(StatusCode::OK, Value::Map(fields))
}

fn now_ns() -> u64 {
    now_ms().saturating_mul(1_000_000)
}

/// Expiry rule for requests that are not ordered (queries, read_state), for every sender: an
/// expiry inside the ingress window.
fn check_expiry(expiry: u64) -> Result<(), String> {
    let now = now_ns();
    let (min, max) = (
        now.saturating_sub(PERMITTED_DRIFT_NS),
        now.saturating_add(MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS),
    );
    if expiry < min || expiry > max {
        return Err(format!(
            "Invalid request expiry: {expiry} is outside [{min}, {max}] (nanoseconds since the epoch)"
        ));
    }
    Ok(())
}

fn decode<C: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<Envelope<C>, String> {
    ciborium::from_reader(body)
        .map_err(|e| format!("request body is not a CBOR {what} envelope: {e}"))
}

#[derive(Deserialize)]
struct ReadStateContent {
    request_type: String,
    sender: ByteBuf,
    paths: Vec<Vec<ByteBuf>>,
    ingress_expiry: u64,
    nonce: Option<ByteBuf>,
}

/// Which paths a `read_state` may ask for: on a canister's endpoint, that canister's own data,
/// request statuses (of one request) and the subnet's public data; on a subnet's endpoint, the
/// subnet's data and time.
fn check_paths(paths: &[Vec<Vec<u8>>], canister: Option<&[u8]>) -> Result<(), String> {
    if paths.len() > MAX_PATHS {
        return Err(format!("at most {MAX_PATHS} paths may be read at once"));
    }
    let mut request: Option<&[u8]> = None;
    for p in paths {
        if p.len() > MAX_LABELS {
            return Err(format!("a path has at most {MAX_LABELS} labels"));
        }
        let first = p.first().map(Vec::as_slice).unwrap_or_default();
        match (first, canister) {
            (b"time" | b"subnet" | b"canister_ranges", _) => {}
            (b"api_boundary_nodes", Some(_)) => {}
            (b"request_status", Some(_)) => {
                // A request's own subtree, never the whole list of requests.
                let Some(id) = p.get(1) else {
                    return Err("a request_status path must name a request id".into());
                };
                match request {
                    Some(r) if r != id.as_slice() => {
                        return Err("all request_status paths must name the same request".into());
                    }
                    _ => request = Some(id),
                }
            }
            (b"canister", Some(ecid)) => {
                if p.get(1).is_none_or(|c| c.as_slice() != ecid) {
                    return Err(format!(
                        "this endpoint reads canister {} only",
                        Principal::from_slice(ecid)
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "path /{} cannot be read on this endpoint",
                    String::from_utf8_lossy(first)
                ));
            }
        }
    }
    Ok(())
}

async fn read_state(s: &HttpState, body: &[u8], canister: Option<&[u8]>) -> Response {
    let env: Envelope<ReadStateContent> = match decode(body, "read_state") {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let c = &env.content;
    if c.request_type != "read_state" {
        return bad(format!(
            "request_type must be \"read_state\" on this endpoint, got {:?}",
            c.request_type
        ));
    }
    let paths: Vec<Vec<Vec<u8>>> = c
        .paths
        .iter()
        .map(|p| p.iter().map(|l| l.to_vec()).collect())
        .collect();
    let mut fields = vec![
        ("request_type", Field::Bytes(b"read_state")),
        ("sender", Field::Bytes(&c.sender)),
        ("paths", Field::Paths(&paths)),
        ("ingress_expiry", Field::Nat(c.ingress_expiry)),
    ];
    if let Some(n) = &c.nonce {
        fields.push(("nonce", Field::Bytes(n)));
    }
    let id = RequestId(hash_of_map(&fields));
    if let Err(e) = env
        .authenticate(&id, &c.sender, canister, now_ns())
        .and_then(|()| check_expiry(c.ingress_expiry))
        .and_then(|()| check_paths(&paths, canister))
    {
        return bad(e);
    }
    // A request's status is for its sender's eyes only.
    let asked = paths
        .iter()
        .find(|p| p.first().is_some_and(|l| l == b"request_status") && p.len() > 1)
        .and_then(|p| <[u8; 32]>::try_from(p[1].as_slice()).ok());
    if let Some(request) = asked {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = crate::transport::Inbound::RequestSender {
            id: RequestId(request),
            reply: tx,
        };
        if s.inbox.send(asked).await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "replica shutting down").into_response();
        }
        if let Ok(Some(sender)) = rx.await {
            if sender != c.sender.as_slice() {
                return (
                    StatusCode::FORBIDDEN,
                    format!(
                        "the status of request {} may only be read by its sender",
                        hex::encode(request)
                    ),
                )
                    .into_response();
            }
        }
    }
    let Some(cert) = certified(s) else {
        return not_yet();
    };
    cbor_response(
        StatusCode::OK,
        Value::Map(vec![(
            text("certificate"),
            Value::Bytes(cert.certificate(&paths)),
        )]),
    )
}

fn principal(text: &str) -> Result<Principal, String> {
    Principal::from_text(text).map_err(|_| format!("{text:?} is not a textual principal"))
}

pub async fn canister_read_state(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    match principal(&canister) {
        Ok(c) => read_state(&s, &body, Some(c.as_slice())).await,
        Err(e) => bad(e),
    }
}

pub async fn subnet_read_state(
    State(s): State<Arc<HttpState>>,
    Path(subnet): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = principal(&subnet) {
        return bad(e);
    }
    read_state(&s, &body, None).await
}

pub async fn query(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    let ecid = match principal(&canister) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let env: Envelope<Content> = match decode(&body, "query") {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let c = &env.content;
    if c.request_type != "query" {
        return bad(format!(
            "request_type must be \"query\" on this endpoint, got {:?}",
            c.request_type
        ));
    }
    if c.canister_id.as_slice() != ecid.as_slice() {
        return bad(format!(
            "the URL names canister {ecid} but the query is for {}",
            Principal::try_from_slice(&c.canister_id)
                .map(|p| p.to_text())
                .unwrap_or_else(|_| hex::encode(&c.canister_id))
        ));
    }
    let msg = IngressMessage {
        sender: c.sender.to_vec(),
        canister_id: c.canister_id.to_vec(),
        method_name: c.method_name.clone(),
        arg: c.arg.to_vec(),
        ingress_expiry: c.ingress_expiry,
        nonce: c.nonce.as_ref().map(|n| n.to_vec()),
    };
    let id = msg.request_id_as("query");
    if let Err(e) = env
        .authenticate(&id, &c.sender, Some(&c.canister_id), now_ns())
        .and_then(|()| check_expiry(c.ingress_expiry))
    {
        return bad(e);
    }
    let Some(cert) = certified(&s) else {
        return not_yet();
    };
    let data_certificate = cert.certificate(&[vec![
        b"canister".to_vec(),
        msg.canister_id.clone(),
        b"certified_data".to_vec(),
    ]]);
    let run = {
        let cert = cert.clone();
        let msg = msg.clone();
        move || {
            let rt = thicket_canister::shared_for_queries().map_err(|e| {
                thicket_state::Reject::new(101, format!("no Wasm engine on this replica: {e}"))
            })?;
            cert.view.query(
                rt,
                &msg.sender,
                &ecid,
                &msg.method_name,
                &msg.arg,
                Some(data_certificate),
            )
        }
    };
    let result = match tokio::task::spawn_blocking(run).await {
        Ok(r) => r,
        Err(_) => Err(thicket_state::Reject::new(
            101,
            "the query's execution thread failed",
        )),
    };
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

/// Waits until the certified state shows the request's status; answers with a certificate
/// for it, or 202 if that takes longer than [`SYNC_CALL_TIMEOUT`].
pub async fn await_certified(s: &HttpState, id: RequestId) -> Response {
    let path = vec![b"request_status".to_vec(), id.0.to_vec()];
    let deadline = tokio::time::Instant::now() + SYNC_CALL_TIMEOUT;
    loop {
        if let Some(cert) = certified(s) {
            // A request whose calls are still open is "processing": not an answer yet.
            let status = cert.tree.lookup(&[b"request_status", &id.0, b"status"]);
            if status.is_some_and(|s| s != b"processing") {
                return cbor_response(
                    StatusCode::OK,
                    Value::Map(vec![
                        (text("status"), text("replied")),
                        (text("certificate"), Value::Bytes(cert.certificate(&[path]))),
                    ]),
                );
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return StatusCode::ACCEPTED.into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
