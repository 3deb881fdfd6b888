//! The replicated state of a subnet, and the state machine that runs it.
//!
//! [`SubnetState`] implements [`thicket_execution::StateMachine`]: finalized batches of
//! ingress run against canisters on the wasmtime runtime of `thicket-canister`; the management
//! canister (`aaaaa-aa`) creates, installs, upgrades, starts, stops and deletes them for their
//! controllers. The whole state encodes canonically, so checkpoints and state sync carry
//! canisters (modules, memories, settings) like any other state.
//!
//! # Layout
//! - [`state`]: the subnet's state (canisters, ingress history, message queue);
//! - [`canister`]: one canister's state (controllers, status, module, memory, timer, …);
//! - [`execute`]: execution of a batch (timers, then ingress in block order, then the queue);
//! - [`calls`]: calls between canisters, call contexts and callbacks; [`messages`] their types;
//! - [`management`]: the management canister (its Candid [`management::types`], its handler,
//!   and code installation);
//! - [`system`]: the system canisters IC tools expect (the cycles ledger, the cycles-minting
//!   canister), native like the management canister; [`ledger`] their state (the cycles
//!   ledger's book);
//! - [`snapshot`]: canister snapshots as the state keeps them;
//! - [`query`]: queries against a replica-local snapshot;
//! - [`certified`]: the certified state tree; [`tree`]: labeled and hashed trees, witnesses;
//! - [`reject`] and [`limits`]: the IC's reject codes, and the limits of execution;
//!   [`ids`]: canister ids and this subnet's range.
//!
//! ```text
//!  Batch ─► execute: timers ─► ingress ─► calls (queue) ─► management / canister entry points
//!                                                   │
//!  state ─► certified tree ─► root the replicas sign;  state ─► QueryView ─► query
//! ```
//!
//! Modules depend downwards only: ids, limits, reject, tree, ledger, snapshot ← messages ← canister ←
//! state ← calls, query, management, certified ← system ← execute.

pub mod calls;
pub mod canister;
pub mod certified;
mod checkpoint;
pub mod execute;
pub mod ids;
pub mod ledger;
pub mod limits;
pub mod management;
pub mod messages;
pub mod query;
pub mod reject;
pub mod snapshot;
pub mod state;
pub mod system;
pub mod tree;

pub use certified::{CertifiedTrees, SubnetInfo};
pub use query::QueryView;
pub use reject::Reject;
pub use state::{HistoryEntry, SubnetState};
