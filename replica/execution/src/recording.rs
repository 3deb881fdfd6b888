//! A minimal deterministic state machine: every accepted call is recorded against its canister
//! id (a call count and a running digest of method names and arguments), and the reply is the
//! canister's new call count. The canister runtime replaces it; it shares the ingress rules
//! that any IC state machine applies:
//! - a message is executed at most once (its request id is remembered until it expires);
//! - an expired message, or one whose expiry is too far ahead, is not executed;
//! - an undecodable message is skipped (it has no request id to report against).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thicket_types::ingress::{MAX_INGRESS_TTL_NS, PERMITTED_DRIFT_NS, RequestId, SignedIngress};
use thicket_types::{CryptoHash, Height, canonical_bytes, hash_of};

use crate::{Batch, IngressStatus, StateMachine};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanisterRecord {
    pub calls: u64,
    pub digest: CryptoHash,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMachine {
    height: Height,
    time_ns: u64,
    canisters: BTreeMap<Vec<u8>, CanisterRecord>,
    /// Request id → (expiry, status); pruned once the batch time passes the expiry, after
    /// which no copy of the message can be executed anyway.
    history: BTreeMap<RequestId, (u64, IngressStatus)>,
}

impl RecordingMachine {
    pub fn canister(&self, id: &[u8]) -> Option<&CanisterRecord> {
        self.canisters.get(id)
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }
}

impl StateMachine for RecordingMachine {
    fn genesis() -> Self {
        RecordingMachine::default()
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Vec<(RequestId, IngressStatus)> {
        // Time never goes backwards in the state, whatever a block claims.
        self.time_ns = self.time_ns.max(batch.time_ns);
        self.height = batch.height;
        let now = self.time_ns;
        self.history.retain(|_, (expiry, _)| *expiry >= now);
        let mut out = Vec::new();
        for bytes in &batch.ingress {
            // Blocks carry only authenticated messages (consensus checks each one).
            let Some(SignedIngress { content: msg, .. }) = SignedIngress::from_bytes(bytes) else {
                continue;
            };
            let id = msg.request_id();
            let expired = msg.ingress_expiry < now;
            let too_far = msg.ingress_expiry > now + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS;
            if expired || too_far || self.history.contains_key(&id) {
                continue;
            }
            let record = self.canisters.entry(msg.canister_id.clone()).or_default();
            record.calls += 1;
            record.digest = hash_of(
                "thicket-recording-call",
                &(record.digest, &msg.method_name, &msg.arg),
            );
            let status = IngressStatus::Replied {
                height: batch.height,
                reply: canonical_bytes(&record.calls),
            };
            self.history
                .insert(id, (msg.ingress_expiry, status.clone()));
            out.push((id, status));
        }
        out
    }

    fn height(&self) -> Height {
        self.height
    }

    fn encode(&self) -> Vec<u8> {
        canonical_bytes(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::deserialize(bytes).map_err(|e| format!("undecodable state: {e}"))
    }

    fn ingress_status(&self, id: &RequestId) -> Option<&IngressStatus> {
        self.history.get(id).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thicket_types::ingress::{ANONYMOUS, IngressMessage};

    const T0: u64 = 1_700_000_000_000_000_000;

    fn call(nonce: u8, expiry: u64) -> Vec<u8> {
        let content = IngressMessage {
            sender: ANONYMOUS.to_vec(),
            canister_id: vec![1, 2],
            method_name: "inc".into(),
            arg: vec![nonce],
            ingress_expiry: expiry,
            nonce: Some(vec![nonce]),
        };
        SignedIngress::anonymous(content).to_bytes()
    }

    fn batch(height: u64, time_ns: u64, msgs: &[Vec<u8>]) -> Batch<'_> {
        Batch {
            height: Height(height),
            time_ns,
            ingress: msgs.iter().map(Vec::as_slice).collect(),
        }
    }

    #[test]
    fn executes_once_rejects_expired_and_skips_garbage() {
        let mut m = RecordingMachine::genesis();
        let a = call(1, T0 + 60_000_000_000);
        let msgs = vec![a.clone(), a.clone(), b"garbage".to_vec(), call(2, T0 - 1)];
        let out = m.execute(&batch(1, T0, &msgs));
        assert_eq!(out.len(), 1, "one execution of a, none of the rest");
        assert_eq!(m.canister(&[1, 2]).map(|c| c.calls), Some(1));
        // The same message in a later block is not executed again.
        assert!(m.execute(&batch(2, T0 + 1, &[a])).is_empty());
        // Too far in the future.
        let far = call(3, T0 + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS + 10);
        assert!(m.execute(&batch(3, T0 + 2, &[far])).is_empty());
        assert_eq!(m.height(), Height(3));
    }

    #[test]
    fn history_is_pruned_after_expiry_and_the_encoding_round_trips() {
        let mut m = RecordingMachine::genesis();
        m.execute(&batch(1, T0, &[call(1, T0 + 10)]));
        assert_eq!(m.history_len(), 1);
        m.execute(&batch(2, T0 + 11, &[]));
        assert_eq!(m.history_len(), 0);
        let again = RecordingMachine::decode(&m.encode()).expect("decodes");
        assert_eq!(again, m);
        assert!(RecordingMachine::decode(b"\xff").is_err());
    }

    #[test]
    fn same_batches_same_state() {
        let run = || {
            let mut m = RecordingMachine::genesis();
            for h in 1..20u8 {
                let msgs: Vec<_> = (0..h)
                    .map(|n| call(n.wrapping_mul(h), T0 + 1_000))
                    .collect();
                m.execute(&batch(u64::from(h), T0 + u64::from(h), &msgs));
            }
            m.encode()
        };
        assert_eq!(run(), run());
    }
}
