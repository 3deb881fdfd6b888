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
