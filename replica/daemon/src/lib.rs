//! The replica daemon: the async shell that runs the replica core ([`thicket_core`]) against
//! the wall clock, a durable [`thicket_store`], gRPC peers ([`thicket_proto::p2p`]), execution
//! on wasmtime ([`thicket_execution`], [`thicket_state`]) and the IC HTTP interface.
//!
//! # Layout
//! - [`driver`]: carries out the core's commands (persist, send, execute, sync, publish);
//!   `driver/observe.rs` reports metrics and the admin status from what the core holds;
//! - [`transport`]: the gRPC service peers call, and the client side that pushes to them;
//!   [`wire`]: artifact ↔ protobuf envelope, with a size limit and an id check;
//! - [`sync`]: state sync from peers, checked against a catch-up package;
//! - [`certifier`]: the certified state trees the HTTP interface serves;
//! - [`http`]: the IC HTTP interface by endpoint, metrics and health; [`ingress`]: the local
//!   log of ingress;
//! - [`metrics`]: Prometheus metrics and the status the [`admin`] gRPC API serves;
//! - [`tls`]: mutual TLS between replicas, certificates pinned to registry node keys;
//! - [`telemetry`]: logs, and spans over OTLP when a collector is configured; [`clock`]: time;
//! - [`node`]: one replica assembled from all of the above;
//! - [`pod`]: a replica as the operator runs it, waiting for genesis over its admin API;
//!   [`process`]: a replica as `thicket replica run` runs it, from a genesis file.
//!
//! ```text
//!  peers ──Push/Fetch──► transport ──inbox──► driver ──Event──► Core::step ──Ready──┐
//!  clients ──HTTP──► http ──inbox──┘            │ persist (sled) ◄────────────────────┤
//!  peers ◄──Push────────────────── transport ◄──┤ send ◄──────────────────────────────┤
//!                                               │ execute ─► Event::Executed ◄────────┘
//!  clients ◄── certificates, queries ── http ◄──┴ certified trees (certifier)
//! ```

pub mod admin;
pub mod audit;
pub mod certifier;
pub mod clock;
pub mod driver;
pub mod http;
pub mod ingress;
pub mod metrics;
pub mod node;
pub mod pod;
pub mod process;
pub mod sync;
pub use thicket_telemetry as telemetry;
pub mod tls;
pub mod transport;
pub mod wire;
