//! The management canister's Candid interface (`aaaaa-aa`), as far as this replica implements
//! it: the argument and result types of the IC's `ic.did`, decoded and encoded with the
//! `candid` crate. Optional fields a client may send that this replica does not know are
//! ignored, as Candid's subtyping rules allow.

use candid::{CandidType, Deserialize, Nat, Principal};
use serde_bytes::ByteBuf;

/// The Candid encoding of `()`: the management canister's empty reply.
pub const EMPTY_REPLY: &[u8] = b"DIDL\x00\x00";

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CanisterIdRecord {
    pub canister_id: Principal,
}

#[derive(CandidType, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CanisterSettings {
    pub controllers: Option<Vec<Principal>>,
    pub compute_allocation: Option<Nat>,
    pub memory_allocation: Option<Nat>,
    pub freezing_threshold: Option<Nat>,
    pub reserved_cycles_limit: Option<Nat>,
    pub wasm_memory_limit: Option<Nat>,
    pub wasm_memory_threshold: Option<Nat>,
}

#[derive(CandidType, Deserialize, Clone, Debug, Default)]
pub struct ProvisionalCreateCanisterArgs {
    pub amount: Option<Nat>,
    pub settings: Option<CanisterSettings>,
    pub specified_id: Option<Principal>,
}

/// `create_canister`'s argument (a canister calls it, with cycles attached).
#[derive(CandidType, Deserialize, Clone, Debug, Default)]
pub struct CreateCanisterArgs {
    pub settings: Option<CanisterSettings>,
    pub sender_canister_version: Option<u64>,
}

#[derive(CandidType, Deserialize, Clone, Debug)]
pub struct ProvisionalTopUpArgs {
    pub canister_id: Principal,
    pub amount: Nat,
}

#[derive(CandidType, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmMemoryPersistence {
    #[serde(rename = "keep")]
    Keep,
    #[serde(rename = "replace")]
    Replace,
}

#[derive(CandidType, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeOptions {
    pub skip_pre_upgrade: Option<bool>,
    pub wasm_memory_persistence: Option<WasmMemoryPersistence>,
}

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum InstallMode {
    #[serde(rename = "install")]
    Install,
    #[serde(rename = "reinstall")]
    Reinstall,
    #[serde(rename = "upgrade")]
    Upgrade(Option<UpgradeOptions>),
}

#[derive(CandidType, Deserialize, Clone, Debug)]
pub struct InstallCodeArgs {
    pub mode: InstallMode,
    pub canister_id: Principal,
    pub wasm_module: ByteBuf,
    pub arg: ByteBuf,
    pub sender_canister_version: Option<u64>,
}

#[derive(CandidType, Deserialize, Clone, Debug)]
pub struct UpdateSettingsArgs {
    pub canister_id: Principal,
    pub settings: CanisterSettings,
    pub sender_canister_version: Option<u64>,
}

#[derive(CandidType, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanisterStatusType {
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "stopping")]
    Stopping,
    #[serde(rename = "stopped")]
    Stopped,
}

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum LogVisibility {
    #[serde(rename = "controllers")]
    Controllers,
    #[serde(rename = "public")]
    Public,
}

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DefiniteCanisterSettings {
    pub controllers: Vec<Principal>,
    pub compute_allocation: Nat,
    pub memory_allocation: Nat,
    pub freezing_threshold: Nat,
    pub reserved_cycles_limit: Nat,
    pub log_visibility: LogVisibility,
    pub wasm_memory_limit: Nat,
    pub wasm_memory_threshold: Nat,
}

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QueryStats {
    pub num_calls_total: Nat,
    pub num_instructions_total: Nat,
    pub request_payload_bytes_total: Nat,
    pub response_payload_bytes_total: Nat,
}

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CanisterStatusResult {
    pub status: CanisterStatusType,
    pub settings: DefiniteCanisterSettings,
    pub module_hash: Option<ByteBuf>,
    pub memory_size: Nat,
    pub cycles: Nat,
    pub reserved_cycles: Nat,
    pub idle_cycles_burned_per_day: Nat,
    pub query_stats: QueryStats,
}

/// A `nat` argument as a `u128` (the IC's cycle amounts and settings fit).
pub fn nat_u128(n: &Nat) -> Option<u128> {
    u128::try_from(&n.0).ok()
}

pub fn nat_u64(n: &Nat) -> Option<u64> {
    u64::try_from(&n.0).ok()
}
