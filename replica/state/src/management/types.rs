//! The management canister's Candid interface (`aaaaa-aa`), as far as this replica implements
//! it: the argument and result types of the IC's `ic.did`, decoded and encoded with the
//! `candid` crate. Optional fields a client may send that this replica does not know are
//! ignored, as Candid's subtyping rules allow. Install arguments keep their module as bytes
//! (`serde_bytes`), not a vector decoded byte by byte.

use candid::{CandidType, Deserialize, Nat, Principal};
use serde_bytes::ByteBuf;

/// The settings, status and their parts, as the interface's current `ic.did` has them (the
/// field's own crate): a client decoding `canister_status` needs every field.
pub use ic_management_canister_types::{
    CanisterInfoArgs, CanisterInfoResult, CanisterLogFilter, CanisterLogRecord, CanisterSettings,
    CanisterStatusResult, CanisterStatusType, Change, ChangeDetails, ChangeOrigin, ChunkHash,
    CodeDeploymentMode, CodeDeploymentRecord, ControllersChangeRecord, CreationRecord,
    DefiniteCanisterSettings, EnvironmentVariable, FetchCanisterLogsArgs, FetchCanisterLogsResult,
    FromCanisterRecord, FromUserRecord, LogVisibility, MemoryMetrics, QueryStats,
    SnapshotVisibility, StatusVisibility, UploadChunkArgs,
};

/// The Candid encoding of `()`: the management canister's empty reply.
pub const EMPTY_REPLY: &[u8] = b"DIDL\x00\x00";

#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CanisterIdRecord {
    pub canister_id: Principal,
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

/// A `nat` argument as a `u128` (the IC's cycle amounts and settings fit).
pub fn nat_u128(n: &Nat) -> Option<u128> {
    u128::try_from(&n.0).ok()
}

pub fn nat_u64(n: &Nat) -> Option<u64> {
    u64::try_from(&n.0).ok()
}
