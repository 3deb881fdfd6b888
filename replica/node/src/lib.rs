//! The replica's driver: runs the pure consensus core ([`thicket_consensus`]) against the wall
//! clock, a durable [`thicket_store`] and gRPC peers ([`thicket_proto::p2p`]).
//!
//! # Layout
//! - [`wire`]: artifact ↔ protobuf envelope, with a size limit and an id check;
//! - [`transport`]: the gRPC service peers call, and the client side that pushes to them;
//! - [`driver`]: the loop — inbox → pool, roles → store → pool → peers, deliver, retransmit;
//! - [`metrics`]: Prometheus metrics and the status the [`admin`] gRPC API serves;
//! - [`http`]: metrics, health and the IC ingress endpoint; [`ingress`] checks call envelopes;
//! - [`sync`]: state sync from peers, checked against a catch-up package;
//! - [`tls`]: mutual TLS between replicas, certificates pinned to registry node keys;
//! - [`telemetry`]: logs, and spans over OTLP when a collector is configured;
//! - [`node`]: one replica assembled from all of the above;
//! - [`pod`]: a replica as the operator runs it, waiting for genesis over its admin API.
//!
//! ```text
//!  peers ──Push/Fetch──► transport ──inbox──► driver ──► Consensus::on_state_change
//!                                               │            │ mutations
//!                                               │      store.write (durable) ─► pool.apply
//!  peers ◄──Push─────── transport ◄──outbox─────┘◄─── new artifacts; deliver finalized blocks
//! ```

pub mod admin;
pub mod certifier;
pub mod driver;
pub mod http;
pub mod ic_http;
pub mod ingress;
pub mod metrics;
pub mod node;
pub mod pod;
pub mod sync;
pub use thicket_telemetry as telemetry;
pub mod tls;
pub mod transport;
pub mod wire;
