//! The Thicket operator: reconciles `Subnet` and `Canister` resources (`thicket.dev/v1alpha1`)
//! into running, self-reconfiguring subnets of replica pods.
//!
//! # Layout
//! - [`subnet`]: the Subnet pipeline — dereference → validate → plan (one membership step) →
//!   build (pure builders) → apply (server-side apply, the step) → status;
//! - [`canister`]: the Canister pipeline — the module (ConfigMap or URL, sha256-pinned), the
//!   canister's certified state, one management call (create, install, upgrade, controllers)
//!   through the subnet's IC HTTP interface with the IC's agent, status;
//! - [`identity`]: the operator's own IC identity, kept in a Secret;
//! - [`replica`]: the client of the replicas' admin gRPC API, the only way the operator talks
//!   to replicas (it holds no replica secret; genesis dealings pass through it encrypted);
//! - [`leader`]: leader election on a Lease, so one operator acts at a time;
//! - [`context`], [`events`], [`metrics`], [`server`]: shared state, Events and failure
//!   backoff, Prometheus metrics, `/metrics`,
//!   `/healthz` and `/readyz`.
//!
//! ```text
//!  kube watch (Subnet, owned StatefulSets/pods) ─► Controller ─► subnet::reconcile
//!      ─► replicas' admin API (status, genesis, registry changes)
//!      ─► server-side apply of children ─► Subnet status
//! ```

pub mod canister;
pub mod context;
pub mod events;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod replica;
pub mod run;
pub mod server;
pub mod subnet;
