//! `thicket.dev/v1alpha1`.

pub mod canister;
pub mod conditions;
pub mod subnet;

pub use canister::{Canister, CanisterPhase, CanisterSpec, CanisterStatus, WasmSource};
pub use subnet::{
    ConsensusSpec, MemberStatus, OperationStatus, Subnet, SubnetPhase, SubnetSpec, SubnetStatus,
};
