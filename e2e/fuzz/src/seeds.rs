//! Valid inputs for each target, to start from: a fuzzer mutates them into the inputs a
//! decoder would not see from a well-behaved client or peer.

use candid::{Encode, Principal};
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::ingress::{IngressMessage, SignedIngress};
use thicket_types::state::{ChunkInfo, Manifest};
use thicket_types::{CryptoHash, Height, canonical_bytes};

use crate::{CMC_METHODS, LEDGER_METHODS, MANAGEMENT_METHODS, NOW_NS};

/// A module with what the decoders look at: an exported mutable global, a data segment, a
/// metadata section, a start function and a table.
pub fn small_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") 1)
  (global $g (export "g") (mut i32) (i32.const 7))
  (table 1 funcref)
  (elem (i32.const 0) $start)
  (data (i32.const 16) "hello")
  (func $start (global.set $g (i32.const 8)))
  (start $start)
  (func (export "canister_update go") (call $reply))
  (func (export "canister_query get") (call $reply))
  (@custom "icp:public candid:service" "service : { go : () -> () }"))"#,
    )
    .expect("the seed module's WAT")
}

/// `install_code`'s argument installing `wasm` on `id`.
pub fn install_args(id: Principal, wasm: &[u8]) -> Vec<u8> {
    use thicket_state::management::{InstallCodeArgs, InstallMode};
    Encode!(&InstallCodeArgs {
        mode: InstallMode::Install,
        canister_id: id,
        wasm_module: wasm.to_vec().into(),
        arg: b"DIDL\x00\x00".to_vec().into(),
        sender_canister_version: None,
    })
    .expect("encodes")
}

fn call() -> IngressMessage {
    IngressMessage {
        sender: vec![4],
        canister_id: vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        method_name: "go".into(),
        arg: b"DIDL\x00\x00".to_vec(),
        ingress_expiry: NOW_NS + 60_000_000_000,
        nonce: Some(vec![1, 2, 3]),
    }
}

fn method_index(methods: &[&str], name: &str) -> u8 {
    methods.iter().position(|m| *m == name).unwrap_or(0) as u8
}

/// Seeds for target `name`.
pub fn for_target(name: &str) -> Vec<Vec<u8>> {
    let canister = thicket_state::ids::canister_id(thicket_state::ids::USER_RANGE.0);
    let record = Encode!(&thicket_state::management::CanisterIdRecord {
        canister_id: canister
    })
    .expect("encodes");
    match name {
        "call_envelope" => vec![thicket_replica::http::envelope::unsigned_envelope(&call())],
        "query_envelope" => {
            let call = thicket_replica::http::envelope::unsigned_envelope(&call());
            // The same fields with request_type "query".
            let at = call
                .windows(4)
                .position(|w| w == b"call")
                .expect("the request type");
            let mut query = call[..at].to_vec();
            query[at - 1] = 0x65; // a 5-byte text
            query.extend_from_slice(b"query");
            query.extend_from_slice(&call[at + 4..]);
            vec![query]
        }
        "artifact" => {
            let ingress = SignedIngress::anonymous(call()).to_bytes();
            let msg = ConsensusMessage::Ingress(ingress);
            let a = thicket_replica::wire::encode(&msg);
            vec![[a.id, a.body].concat()]
        }
        "manifest" => vec![canonical_bytes(&Manifest {
            height: Height(100),
            chunks: vec![
                ChunkInfo {
                    hash: CryptoHash([7; 32]),
                    size: 1 << 20,
                },
                ChunkInfo {
                    hash: CryptoHash([9; 32]),
                    size: 12,
                },
            ],
        })],
        "system_call" => vec![
            [
                &[0, method_index(MANAGEMENT_METHODS, "canister_status")][..],
                &record,
            ]
            .concat(),
            [
                &[
                    0,
                    method_index(MANAGEMENT_METHODS, "take_canister_snapshot"),
                ][..],
                &Encode!(&ic_snapshot_args(canister)).expect("encodes"),
            ]
            .concat(),
            [
                &[0, method_index(MANAGEMENT_METHODS, "update_settings")][..],
                &Encode!(&thicket_state::management::UpdateSettingsArgs {
                    canister_id: canister,
                    settings: thicket_state::management::CanisterSettings {
                        freezing_threshold: Some(1000u64.into()),
                        ..Default::default()
                    },
                    sender_canister_version: None,
                })
                .expect("encodes"),
            ]
            .concat(),
            [
                &[1, method_index(LEDGER_METHODS, "icrc1_balance_of")][..],
                &Encode!(&Account {
                    owner: Principal::anonymous(),
                    subaccount: None,
                })
                .expect("encodes"),
            ]
            .concat(),
            [
                &[2, method_index(CMC_METHODS, "get_subnet_for_canister")][..],
                &Encode!(&SubnetForCanister {
                    principal: Some(canister),
                })
                .expect("encodes"),
            ]
            .concat(),
        ],
        "wasm_module" => vec![small_module()],
        _ => vec![],
    }
}

#[derive(candid::CandidType)]
struct Account {
    owner: Principal,
    subaccount: Option<Vec<u8>>,
}

#[derive(candid::CandidType)]
struct SubnetForCanister {
    principal: Option<Principal>,
}

#[derive(candid::CandidType)]
struct SnapshotArgs {
    canister_id: Principal,
    replace_snapshot: Option<Vec<u8>>,
    uninstall_code: Option<bool>,
    sender_canister_version: Option<u64>,
}

fn ic_snapshot_args(canister_id: Principal) -> SnapshotArgs {
    SnapshotArgs {
        canister_id,
        replace_snapshot: None,
        uninstall_code: None,
        sender_canister_version: None,
    }
}
