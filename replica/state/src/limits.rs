//! The limits of execution, each with the reason for its value: instructions per message,
//! install and query; module and queue sizes; calls per canister and per batch; fees.

/// Instructions one update message, timer or callback may use. The IC allows 40 B with
/// deterministic time slicing spread over rounds; this replica executes a message within one
/// round, so it uses the IC's per-slice figure.
pub const MESSAGE_INSTRUCTION_LIMIT: u64 = 2_000_000_000;
/// Instructions an `install_code` may use (init, or pre- plus post-upgrade).
pub const INSTALL_INSTRUCTION_LIMIT: u64 = 20_000_000_000;
/// Instructions a (non-replicated) query may use.
pub const QUERY_INSTRUCTION_LIMIT: u64 = 5_000_000_000;
/// Largest Wasm module accepted, after decompression.
pub const MAX_WASM_BYTES: usize = 100 << 20;
/// Most controllers a canister may have.
pub const MAX_CONTROLLERS: usize = 10;
/// Cycles a provisionally created canister gets when the call names no amount.
pub const DEFAULT_PROVISIONAL_CYCLES: u128 = 100_000_000_000_000;
/// Most canisters one subnet holds.
pub const MAX_CANISTERS: usize = 100_000;
/// Most calls one canister may have outstanding; `ic0.call_perform` fails beyond that.
pub const MAX_OUTSTANDING_CALLS: usize = 500;
/// Queue messages (requests and responses) handled per batch; the rest wait.
pub const MAX_MESSAGES_PER_BATCH: usize = 1_000;
/// Instructions a batch may spend on queued messages before the rest wait for the next (the
/// IC's per-round limit of one execution thread). Timers and ingress run regardless.
pub const MAX_INSTRUCTIONS_PER_BATCH: u64 = 7_000_000_000;
/// Argument bytes the calls of one execution may carry in all.
pub const MAX_CALL_BYTES_PER_EXECUTION: u64 = 50 << 20;
/// Bytes of requests and responses the subnet's queue holds at most; beyond, `call_perform`
/// fails (responses always find room).
pub const MAX_QUEUE_BYTES: u64 = 512 << 20;
/// Cycles `create_canister` takes from those attached (the IC's fee on a 13-node subnet; what
/// `ic0.cost_create_canister` tells canisters).
pub const CREATE_CANISTER_FEE: u128 = thicket_canister::system_api::CREATE_CANISTER_FEE;
/// Most stop requests waiting on one canister.
pub const MAX_STOP_WAITERS: usize = 100;

/// Environment variables a canister may have, and the bytes of each name and value (the IC's
/// bounds).
pub const MAX_ENV_VARS: usize = 20;
pub const MAX_ENV_VAR_BYTES: usize = 128;

/// Work quotas for decoding the Candid argument of a method the replica answers itself (the
/// management and system canisters; the IC's own values).
const MAX_DECODING_WORK: usize = 10_000_000;
const MAX_SKIPPING_WORK: usize = 10_000;

/// Decodes the argument of a method the replica answers itself, with bounded work for any
/// argument (replicas decode it outside the instruction limit).
pub(crate) fn decode_argument<'a, T: candid::CandidType + serde::Deserialize<'a>>(
    arg: &'a [u8],
) -> Result<T, candid::Error> {
    let mut config = candid::de::DecoderConfig::new();
    config
        .set_decoding_quota(MAX_DECODING_WORK)
        .set_skipping_quota(MAX_SKIPPING_WORK);
    candid::utils::decode_one_with_config(arg, &config)
}
