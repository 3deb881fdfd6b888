//! The replicated state of a subnet, and the state machine that runs it.
//!
//! [`machine::SubnetState`] implements [`thicket_execution::StateMachine`]: finalized batches
//! of ingress run against canisters on the wasmtime runtime of `thicket-canister`; the
//! management canister (`aaaaa-aa`) creates, installs, upgrades, starts, stops and deletes
//! them for their controllers. The whole state encodes canonically, so checkpoints and state
//! sync carry canisters (modules, memories, settings) like any other state.
//!
//! # Layout
//! - [`canister`]: one canister's state (controllers, status, module, memory, timer, …);
//! - [`management`]: the management canister's Candid types;
//! - [`machine`]: execution of batches and queries, and the rejects with the IC's codes;
//! - [`calls`]: calls between canisters, call contexts, callbacks and the message queue.

pub mod calls;
pub mod canister;
pub mod machine;
pub mod management;
pub mod tree;

pub use machine::{QueryView, Reject, SubnetState};
