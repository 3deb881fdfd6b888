//! The replica's HTTP endpoint: Prometheus metrics, health, and the IC ingress path
//! (`POST /api/v2/canister/<canister id>/call`), plus the local status of a request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ic_principal::Principal;
use thicket_types::ingress::RequestId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::now_ms;
use crate::ingress::{IngressLog, MAX_REQUEST_BYTES, check_call};
use crate::metrics::Metrics;
use crate::transport::Inbound;

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub inbox: mpsc::Sender<Inbound>,
    pub log: Arc<IngressLog>,
}

pub fn router(state: Arc<HttpState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/v2/canister/{canister}/call", post(call))
        .route("/api/thicket/v1/request_status/{id}", get(request_status))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Binds `addr` and returns the server future (it stops when `shutdown` flips).
pub async fn serve(
    addr: std::net::SocketAddr,
    state: Arc<HttpState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .into_future())
}

async fn metrics(State(s): State<Arc<HttpState>>) -> String {
    s.metrics.encode()
}

async fn ready(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    // Ready once the replica finalizes: it has its keys and its peers.
    if s.metrics.finalized_height.get() > 0 {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not finalizing yet")
    }
}

fn bad(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

#[tracing::instrument(name = "ingress_call", skip_all, fields(canister = %canister))]
async fn call(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(canister) = Principal::from_text(&canister) else {
        return bad(
            StatusCode::BAD_REQUEST,
            format!("{canister:?} is not a textual principal"),
        );
    };
    let now = now_ms();
    let msg = match check_call(&body, canister.as_slice(), now.saturating_mul(1_000_000)) {
        Ok(m) => m,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let id = msg.content.request_id();
    let (tx, rx) = oneshot::channel();
    if s.inbox
        .send(Inbound::Ingress { msg, reply: tx })
        .await
        .is_err()
    {
        return bad(StatusCode::SERVICE_UNAVAILABLE, "replica shutting down");
    }
    match rx.await {
        Ok(Ok(())) => {
            s.log.accepted(id, now);
            s.metrics.ingress_accepted.inc();
            StatusCode::ACCEPTED.into_response()
        }
        Ok(Err(e)) => bad(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => bad(StatusCode::SERVICE_UNAVAILABLE, "replica shutting down"),
    }
}

async fn request_status(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
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
        None => axum::Json(serde_json::json!({"status": "unknown"})).into_response(),
    }
}
