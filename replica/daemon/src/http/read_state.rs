//! `read_state`: certificates revealing the requested paths (and `/time`) of the newest
//! certified state, for canisters and for the subnet, within the specification's limits.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use candid::Principal;
use ciborium::Value;
use serde::Deserialize;
use serde_bytes::ByteBuf;
use thicket_types::ingress::{RequestId, Value as Field, hash_of_map};

use super::envelope::{Envelope, MAX_REQUEST_BYTES, check_expiry_at, decode, now_ns};
use super::{HttpState, bad_request, cbor_response, certified, not_yet, text};

/// Most paths in one `read_state`, and labels in one path (the specification's limits).
const MAX_PATHS: usize = 1000;
const MAX_LABELS: usize = 127;

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

/// A `read_state` request, checked: its sender, the paths it reads and its request id.
pub struct ReadState {
    pub sender: Vec<u8>,
    pub paths: Vec<Vec<Vec<u8>>>,
    pub id: RequestId,
}

/// Parses a `read_state` envelope and checks it as the endpoint does before it reads the
/// state: its type, its request id (over its paths), its sender's proof (live at `now_ns`, and
/// covering `canister` on a canister's endpoint), its expiry, and that this endpoint may read
/// its paths (`canister` is `None` on a subnet's endpoint).
pub fn check_read_state(
    body: &[u8],
    canister: Option<&[u8]>,
    now_ns: u64,
) -> Result<ReadState, String> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request of {} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit",
            body.len()
        ));
    }
    let env: Envelope<ReadStateContent> = decode(body, "read_state")?;
    let c = &env.content;
    if c.request_type != "read_state" {
        return Err(format!(
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
    env.authenticate(&id, &c.sender, canister, now_ns)?;
    check_expiry_at(c.ingress_expiry, now_ns)?;
    check_paths(&paths, canister)?;
    Ok(ReadState {
        sender: c.sender.to_vec(),
        paths,
        id,
    })
}

async fn read_state(s: &HttpState, body: &[u8], canister: Option<&[u8]>) -> Response {
    let ReadState { sender, paths, .. } = match check_read_state(body, canister, now_ns()) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
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
        if let Ok(Some(sender_of)) = rx.await {
            if sender_of != sender {
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
    for p in &paths {
        if let [top, id, m, name, ..] = p.as_slice() {
            let Ok(id) = Principal::try_from_slice(id) else {
                continue;
            };
            if top == b"canister"
                && m == b"metadata"
                && !cert.view.may_read_metadata(&id, name, &sender)
            {
                return (
                    StatusCode::FORBIDDEN,
                    format!(
                        "Custom section {} can only be requested by the controllers of the canister.",
                        String::from_utf8_lossy(name)
                    ),
                )
                    .into_response();
            }
        }
    }
    cbor_response(
        StatusCode::OK,
        Value::Map(vec![(
            text("certificate"),
            Value::Bytes(cert.certificate(&paths)),
        )]),
    )
}

pub(crate) fn principal(text: &str) -> Result<Principal, String> {
    Principal::from_text(text).map_err(|_| format!("{text:?} is not a textual principal"))
}

pub async fn canister_read_state(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    match principal(&canister) {
        Ok(c) => read_state(&s, &body, Some(c.as_slice())).await,
        Err(e) => bad_request(e),
    }
}

pub async fn subnet_read_state(
    State(s): State<Arc<HttpState>>,
    Path(subnet): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = principal(&subnet) {
        return bad_request(e);
    }
    read_state(&s, &body, None).await
}
