//! Calls: `POST /api/v2/canister/<id>/call` answers 202 once the pool took the message;
//! `/api/v3` and `/api/v4` (synchronous) wait for its certified status and answer with a
//! certificate, or 202 after [`SYNC_CALL_TIMEOUT`] (the agent then polls `read_state`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ciborium::Value;
use ic_principal::Principal;
use thicket_types::ingress::RequestId;
use tokio::sync::oneshot;

use super::envelope::{IngressError, check_call};
use super::{HttpState, bad, cbor_response, certified, text};
use crate::clock::now_ms;
use crate::metrics::ReasonLabel;
use crate::transport::Inbound;

/// How long a synchronous call waits for its certified status before answering 202 (the
/// agent then polls `read_state`).
pub const SYNC_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a call envelope and hands it to the driver; the request id, or the error answer.
async fn submit(
    s: &HttpState,
    canister: &str,
    body: &[u8],
) -> Result<RequestId, (StatusCode, String)> {
    let refused = |reason: &'static str| {
        s.metrics
            .ingress_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };
    let Ok(canister) = Principal::from_text(canister) else {
        refused("malformed");
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{canister:?} is not a textual principal"),
        ));
    };
    let now = now_ms();
    let msg =
        check_call(body, canister.as_slice(), now.saturating_mul(1_000_000)).map_err(|e| {
            refused(match e {
                IngressError::Expiry { .. } => "expired",
                IngressError::Signature(_) => "signature",
                IngressError::TooLarge(_) => "too_large",
                IngressError::Malformed(_)
                | IngressError::WrongType(_)
                | IngressError::CanisterMismatch { .. } => "malformed",
            });
            (StatusCode::BAD_REQUEST, e.to_string())
        })?;
    let id = msg.content.request_id();
    let anonymous = msg.content.sender == Principal::anonymous().as_slice();
    let (tx, rx) = oneshot::channel();
    if s.inbox
        .send(Inbound::Ingress { msg, reply: tx })
        .await
        .is_err()
    {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "replica shutting down".into(),
        ));
    }
    match rx.await {
        Ok(Ok(())) => {
            s.log.accepted(id, now, anonymous);
            s.metrics.ingress_accepted.inc();
            Ok(id)
        }
        Ok(Err(e)) => {
            refused("pool_full");
            Err((StatusCode::SERVICE_UNAVAILABLE, e))
        }
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "replica shutting down".into(),
        )),
    }
}

/// `POST /api/v2/canister/<id>/call`: accepted (202) once checked and handed to consensus.
#[tracing::instrument(name = "ingress_call", skip_all, fields(canister = %canister))]
pub async fn call(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    match submit(&s, &canister, &body).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err((code, msg)) => bad(code, msg),
    }
}

/// `POST /api/v3|v4/canister/<id>/call`: answers with a certificate of the outcome.
#[tracing::instrument(name = "ingress_sync_call", skip_all, fields(canister = %canister))]
pub async fn sync_call(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    match submit(&s, &canister, &body).await {
        Ok(id) => await_certified(&s, id).await,
        Err((code, msg)) => bad(code, msg),
    }
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
