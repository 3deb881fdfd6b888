//! Status: the IC's `/api/v2/status` (CBOR, with the subnet's root key), the readiness the
//! Service and the replica's metrics share, and the local status of a request.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ciborium::Value;
use thicket_types::ingress::RequestId;

use super::{HttpState, bad, cbor_response, certified, text};

/// Ready once the replica finalizes (it has its keys and its peers) and can answer queries
/// and read_state from a certified state: a Service sends agents only to such replicas.
pub fn readiness(finalized: u64, certified: bool) -> Result<(), &'static str> {
    if finalized == 0 {
        Err("not finalizing yet")
    } else if !certified {
        Err("no certified state yet")
    } else {
        Ok(())
    }
}

pub async fn ready(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    let certified = s.certified.read().is_ok_and(|c| c.is_some());
    let finalized = u64::try_from(s.metrics.finalized_height.get()).unwrap_or(0);
    match readiness(finalized, certified) {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
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

pub async fn request_status(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let Some(id) = hex::decode(&id)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return bad(
            StatusCode::BAD_REQUEST,
            "request id must be 64 hexadecimal digits",
        );
    };
    match s.log.get(&RequestId(id)) {
        Some(status) => axum::Json(status).into_response(),
        None => axum::Json(serde_json::json!({
            "status": "unknown",
            "note": "this endpoint shows the requests of the anonymous principal; the \
                     status of any other request is for its sender, through a read_state \
                     request the sender signs"
        }))
        .into_response(),
    }
}
