//! The replica's HTTP endpoint: Prometheus metrics, health, and the IC ingress path
//! (`POST /api/v2/canister/<canister id>/call`), plus the local status of a request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ic_principal::Principal;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_types::ingress::RequestId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::certifier::Published;
use crate::driver::now_ms;
use crate::ic_http;
use crate::ingress::{IngressError, IngressLog, MAX_REQUEST_BYTES, check_call};
use crate::metrics::{EndpointLabels, Metrics, ReasonLabel};
use crate::transport::Inbound;

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub inbox: mpsc::Sender<Inbound>,
    pub log: Arc<IngressLog>,
    /// The newest certified state.
    pub certified: Published,
    /// This node's key, which signs query responses, and its node id (principal bytes).
    pub node_key: NodeSigningKey,
    pub node_principal: Vec<u8>,
}

pub fn router(state: Arc<HttpState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/v2/status", get(ic_http::status))
        .route("/api/v2/canister/{canister}/call", post(call))
        .route("/api/v3/canister/{canister}/call", post(sync_call))
        .route("/api/v4/canister/{canister}/call", post(sync_call))
        .route("/api/v2/canister/{canister}/query", post(ic_http::query))
        .route("/api/v3/canister/{canister}/query", post(ic_http::query))
        .route(
            "/api/v2/canister/{canister}/read_state",
            post(ic_http::canister_read_state),
        )
        .route(
            "/api/v3/canister/{canister}/read_state",
            post(ic_http::canister_read_state),
        )
        .route(
            "/api/v2/subnet/{subnet}/read_state",
            post(ic_http::subnet_read_state),
        )
        .route(
            "/api/v3/subnet/{subnet}/read_state",
            post(ic_http::subnet_read_state),
        )
        .route("/api/thicket/v1/request_status/{id}", get(request_status))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// The IC interface endpoint a route serves (its metrics label), if it is one.
fn endpoint(route: &str) -> Option<&'static str> {
    let last = route.rsplit('/').next()?;
    match (route, last) {
        (_, "read_state") => Some("read_state"),
        (_, "query") => Some("query"),
        (r, "call") if r.starts_with("/api/v2/") => Some("call"),
        (_, "call") => Some("call_sync"),
        ("/api/v2/status", _) => Some("status"),
        _ => None,
    }
}

/// Times the requests of the IC interface's endpoints, by endpoint and status class.
async fn timed(
    State(s): State<Arc<HttpState>>,
    route: axum::extract::MatchedPath,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(endpoint) = endpoint(route.as_str()) else {
        return next.run(req).await;
    };
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && endpoint.starts_with("call") {
        // The body limit answers before the handler sees the call.
        s.metrics
            .ingress_refused
            .get_or_create(&ReasonLabel {
                reason: "too_large",
            })
            .inc();
    }
    let status = match response.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    s.metrics
        .http_duration
        .get_or_create(&EndpointLabels { endpoint, status })
        .observe(started.elapsed().as_secs_f64());
    response
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

async fn ready(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    let certified = s.certified.read().is_ok_and(|c| c.is_some());
    let finalized = u64::try_from(s.metrics.finalized_height.get()).unwrap_or(0);
    match readiness(finalized, certified) {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn bad(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

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
            s.log.accepted(id, now);
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
async fn call(
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
async fn sync_call(
    State(s): State<Arc<HttpState>>,
    Path(canister): Path<String>,
    body: Bytes,
) -> Response {
    match submit(&s, &canister, &body).await {
        Ok(id) => ic_http::await_certified(&s, id).await,
        Err((code, msg)) => bad(code, msg),
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
