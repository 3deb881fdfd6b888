//! The tests' subnet: a state machine fed ingress batches as consensus delivers them.

#![allow(dead_code)]

use candid::{Decode, Encode, Principal};
use serde_bytes::ByteBuf;
use thicket_execution::{Batch, IngressStatus, StateMachine};
use thicket_state::SubnetState;
use thicket_state::management::*;
use thicket_types::Height;
use thicket_types::ingress::{IngressMessage, RequestId, SignedIngress};

pub const T0: u64 = 1_700_000_000_000_000_000;
pub const ANON: &[u8] = &[4];
pub const OTHER: &[u8] = &[0xab, 0xcd, 0x01];

pub struct Subnet {
    pub state: SubnetState,
    pub height: u64,
    pub nonce: u64,
}

impl Subnet {
    pub fn new() -> Self {
        Subnet {
            state: SubnetState::genesis(),
            height: 0,
            nonce: 0,
        }
    }

    /// One block with these messages (sender, canister, method, argument); returns the
    /// statuses of the requests answered in it, and the ids of the messages.
    pub fn batch(
        &mut self,
        msgs: Vec<(&[u8], Principal, &str, Vec<u8>)>,
    ) -> (Vec<(RequestId, IngressStatus)>, Vec<RequestId>) {
        self.height += 1;
        let now = T0 + self.height * 1_000_000_000;
        let mut ids = Vec::new();
        let mut encoded = Vec::new();
        for (sender, canister, method, arg) in msgs {
            self.nonce += 1;
            let msg = IngressMessage {
                sender: sender.to_vec(),
                canister_id: canister.as_slice().to_vec(),
                method_name: method.into(),
                arg,
                ingress_expiry: now + 60_000_000_000,
                nonce: Some(self.nonce.to_be_bytes().to_vec()),
            };
            ids.push(msg.request_id());
            encoded.push(SignedIngress::anonymous(msg).to_bytes());
        }
        let out = self.state.execute(&Batch {
            height: Height(self.height),
            time_ns: now,
            ingress: encoded.iter().map(Vec::as_slice).collect(),
        });
        (out, ids)
    }

    /// One block with one message; returns its status.
    pub fn call(
        &mut self,
        sender: &[u8],
        canister: &Principal,
        method: &str,
        arg: Vec<u8>,
    ) -> IngressStatus {
        let (out, _) = self.batch(vec![(sender, *canister, method, arg)]);
        assert_eq!(out.len(), 1, "the message executed");
        out.into_iter().next().map(|(_, s)| s).expect("one status")
    }

    pub fn ok(
        &mut self,
        sender: &[u8],
        canister: &Principal,
        method: &str,
        arg: Vec<u8>,
    ) -> Vec<u8> {
        match self.call(sender, canister, method, arg) {
            IngressStatus::Replied { reply, .. } => reply,
            other => panic!("{method}: {other:?}"),
        }
    }

    pub fn rejected(
        &mut self,
        sender: &[u8],
        canister: &Principal,
        method: &str,
        arg: Vec<u8>,
    ) -> (u8, String, String) {
        match self.call(sender, canister, method, arg) {
            IngressStatus::Rejected {
                code,
                message,
                error_code,
                ..
            } => (code, message, error_code.unwrap_or_default()),
            other => panic!("{method} should be rejected: {other:?}"),
        }
    }

    pub fn install(
        &mut self,
        sender: &[u8],
        id: Principal,
        mode: InstallMode,
        wasm: &[u8],
    ) -> IngressStatus {
        let arg = Encode!(&InstallCodeArgs {
            mode,
            canister_id: id,
            wasm_module: ByteBuf::from(wasm.to_vec()),
            arg: ByteBuf::from(b"DIDL\x00\x00".to_vec()),
            sender_canister_version: None,
        })
        .expect("encodes");
        self.call(
            sender,
            &Principal::management_canister(),
            "install_code",
            arg,
        )
    }

    /// Creates a canister controlled by `sender`, with the default cycles.
    pub fn create(&mut self, sender: &[u8]) -> Principal {
        let reply = self.ok(
            sender,
            &Principal::management_canister(),
            "provisional_create_canister_with_cycles",
            Encode!(&ProvisionalCreateCanisterArgs::default()).expect("encodes"),
        );
        Decode!(&reply, CanisterIdRecord)
            .expect("a canister id")
            .canister_id
    }

    /// Runs query `method` (no arguments) on the current state.
    pub fn query(&self, id: &Principal, method: &str) -> Vec<u8> {
        let rt = thicket_canister::shared().expect("runtime");
        self.state
            .query_view()
            .query(rt, ANON, id, method, b"DIDL\x00\x00", None)
            .unwrap_or_else(|r| panic!("{method}: {r:?}"))
    }

    pub fn count(&self, id: &Principal) -> u64 {
        let rt = thicket_canister::shared().expect("runtime");
        let reply = self
            .state
            .query_view()
            .query(rt, ANON, id, "get", b"DIDL\x00\x00", None)
            .expect("get replies");
        Decode!(&reply, candid::Nat)
            .expect("a nat")
            .0
            .try_into()
            .expect("small")
    }
}

/// A canister whose `relay` forwards its argument to `method` of `callee` (with `cycles`
/// attached) and answers what the callee answered: the reply, or the reject's message.
pub fn relay(callee: &Principal, method: &str, cycles: u64) -> Vec<u8> {
    let callee_bytes: String = callee
        .as_slice()
        .iter()
        .map(|b| format!("\\{b:02x}"))
        .collect();
    let wat = format!(
        r#"(module
  (import "ic0" "msg_arg_data_size" (func $arg_size (result i32)))
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i32 i32 i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "msg_reject" (func $reject (param i32 i32)))
  (import "ic0" "msg_reject_msg_size" (func $reject_size (result i32)))
  (import "ic0" "msg_reject_msg_copy" (func $reject_copy (param i32 i32 i32)))
  (import "ic0" "call_new" (func $call_new (param i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "ic0" "call_data_append" (func $call_data (param i32 i32)))
  (import "ic0" "call_cycles_add128" (func $cycles_add (param i64 i64)))
  (import "ic0" "call_perform" (func $perform (result i32)))
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) $pass_reply $pass_reject)
  (data (i32.const 0) "{callee_bytes}")
  (data (i32.const 64) "{method}")
  (func (export "canister_update relay")
    (call $arg_copy (i32.const 1024) (i32.const 0) (call $arg_size))
    (call $call_new (i32.const 0) (i32.const {callee_len}) (i32.const 64) (i32.const {method_len})
      (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 0))
    (call $call_data (i32.const 1024) (call $arg_size))
    (call $cycles_add (i64.const 0) (i64.const {cycles}))
    (drop (call $perform)))
  (func $pass_reply (param i32)
    (call $arg_copy (i32.const 1024) (i32.const 0) (call $arg_size))
    (call $append (i32.const 1024) (call $arg_size))
    (call $reply))
  (func $pass_reject (param i32)
    (call $reject_copy (i32.const 1024) (i32.const 0) (call $reject_size))
    (call $reject (i32.const 1024) (call $reject_size))))"#,
        callee_len = callee.as_slice().len(),
        method_len = method.len(),
    );
    wat::parse_str(wat).expect("the relay's WAT")
}
