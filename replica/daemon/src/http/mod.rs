//! The replica's HTTP endpoint: the IC HTTP interface (`/api/v2/status`, calls, queries,
//! `read_state`), Prometheus metrics, health, the local status of a request, and the HTTP
//! gateway to canisters' websites.
//!
//! # Layout
//! - this file: the shared state, the router, timing of the IC endpoints, and the answers
//!   every endpoint uses;
//! - [`envelope`]: CBOR request envelopes and the checks a call passes before the pool;
//! - [`call`]: asynchronous and synchronous calls; [`query`]: queries signed by this node;
//! - [`read_state`]: certificates for canisters' and the subnet's paths;
//! - [`gateway`]: websites served by canisters (`<canister id>.localhost`), their response
//!   certification verified;
//! - [`status`]: `/api/v2/status` with the root key, readiness, the local request status.
//!
//! Everything certified comes from the newest certified state (see [`crate::certifier`]):
//! certificates reveal the requested paths and `/time` and prune the rest; queries run on that
//! state's snapshot. Malformed requests get a 400 with the reason.

pub mod call;
pub mod certificate_header;
pub mod envelope;
pub mod gateway;
pub mod query;
pub mod read_state;
pub mod server;
pub mod status;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ciborium::Value;
use thicket_crypto::node_key::NodeSigningKey;
use tokio::sync::mpsc;

use crate::certifier::{CertifiedState, Published};
use crate::ingress::IngressLog;
use crate::metrics::{EndpointLabels, Metrics, ReasonLabel};
use crate::transport::Inbound;
use envelope::MAX_REQUEST_BYTES;

pub use status::readiness;

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub inbox: mpsc::Sender<Inbound>,
    pub log: Arc<IngressLog>,
    /// The newest certified state.
    pub certified: Published,
    /// This node's key, which signs query responses, and its node id (principal bytes).
    pub node_key: NodeSigningKey,
    pub node_principal: Vec<u8>,
    /// Queries at once, and waiting.
    pub queries: query::QueryLimit,
}

pub fn router(state: Arc<HttpState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(status::ready))
        .route("/api/v2/status", get(status::status))
        .route("/api/v2/canister/{canister}/call", post(call::call))
        .route("/api/v3/canister/{canister}/call", post(call::sync_call))
        .route("/api/v4/canister/{canister}/call", post(call::sync_call))
        .route("/api/v2/canister/{canister}/query", post(query::query))
        .route("/api/v3/canister/{canister}/query", post(query::query))
        .route(
            "/api/v2/canister/{canister}/read_state",
            post(read_state::canister_read_state),
        )
        .route(
            "/api/v3/canister/{canister}/read_state",
            post(read_state::canister_read_state),
        )
        .route(
            "/api/v2/subnet/{subnet}/read_state",
            post(read_state::subnet_read_state),
        )
        .route(
            "/api/v3/subnet/{subnet}/read_state",
            post(read_state::subnet_read_state),
        )
        .route(
            "/api/thicket/v1/request_status/{id}",
            get(status::request_status),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), timed))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// What a path this port does not serve gets.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "{} is not served here: this is the IC HTTP interface (/api/v2/status, \
             /api/v{{2,3,4}}/canister/<id>/..., /api/v{{2,3}}/subnet/<id>/read_state, /metrics)\n",
            uri.path()
        ),
    )
        .into_response()
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

async fn metrics(State(s): State<Arc<HttpState>>) -> String {
    s.metrics.encode()
}

pub(crate) fn bad(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

pub(crate) fn cbor_response(status: StatusCode, value: Value) -> Response {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(&Value::Tag(55799, Box::new(value)), &mut out);
    (status, [(header::CONTENT_TYPE, "application/cbor")], out).into_response()
}

pub(crate) fn text(k: &str) -> Value {
    Value::Text(k.to_string())
}

pub(crate) fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, msg.into()).into_response()
}

pub(crate) fn certified(s: &HttpState) -> Option<Arc<CertifiedState>> {
    s.certified.read().ok().and_then(|c| c.clone())
}

pub(crate) fn not_yet() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this replica has no certified state yet; retry shortly",
    )
        .into_response()
}
