//! The certified state tree: what replicas sign after each height (`/time`, request
//! statuses, canisters' module hashes, controllers and certified data, the subnet's key,
//! canister ranges and node keys), as the IC interface specification lays it out.

use candid::Principal;
use thicket_execution::IngressStatus;

use crate::ids::{CANISTER_RANGE, canister_id};
use crate::state::{HistoryEntry, SubnetState};

/// What the certified state tree says about the subnet, from the registry in force at the
/// certified height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    /// The subnet's id: the self-authenticating principal of its public key (what agents
    /// derive from the root key when a certificate has no delegation).
    pub subnet_id: Principal,
    /// The subnet's threshold public key, DER-encoded (the root key agents fetch).
    pub public_key_der: Vec<u8>,
    /// Each member's node id and DER-encoded Ed25519 key (which signs query responses).
    pub nodes: Vec<(Principal, Vec<u8>)>,
}

impl SubnetInfo {
    pub fn new(public_key_der: Vec<u8>, node_keys: &[[u8; 32]]) -> Self {
        let nodes = node_keys
            .iter()
            .map(|k| {
                let der = [&thicket_types::ingress::ED25519_DER_PREFIX[..], k].concat();
                let id = Principal::from_slice(&thicket_types::ingress::self_authenticating(&der));
                (id, der)
            })
            .collect();
        SubnetInfo {
            subnet_id: Principal::self_authenticating(&public_key_der),
            public_key_der,
            nodes,
        }
    }
}

/// CBOR with the self-describing tag, as the IC encodes structured leaves.
fn cbor(value: ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    let tagged = ciborium::Value::Tag(55799, Box::new(value));
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(&tagged, &mut out);
    out
}

fn principals_cbor<'a>(list: impl Iterator<Item = &'a Principal>) -> Vec<u8> {
    cbor(ciborium::Value::Array(
        list.map(|p| ciborium::Value::Bytes(p.as_slice().to_vec()))
            .collect(),
    ))
}

impl SubnetState {
    /// The state tree replicas certify after this state's height: `/time`, the request
    /// statuses, each canister's module hash, controllers and certified data, and the
    /// subnet's key, canister ranges and node keys.
    pub fn certified_tree(&self, subnet: &SubnetInfo) -> crate::tree::LabeledTree {
        use crate::tree::{LabeledTree, leb128};
        let mut t = LabeledTree::subtree();
        t.insert(&[b"time"], leb128(self.time_ns));
        for (id, HistoryEntry { status, .. }) in &self.history {
            let at = |leaf: &'static [u8]| [&b"request_status"[..], &id.0[..], leaf];
            match status {
                IngressStatus::Processing { .. } => {
                    t.insert(&at(b"status"), b"processing".to_vec());
                }
                IngressStatus::Replied { reply, .. } => {
                    t.insert(&at(b"status"), b"replied".to_vec());
                    t.insert(&at(b"reply"), reply.clone());
                }
                IngressStatus::Rejected {
                    code,
                    message,
                    error_code,
                    ..
                } => {
                    t.insert(&at(b"status"), b"rejected".to_vec());
                    t.insert(&at(b"reject_code"), leb128(u64::from(*code)));
                    t.insert(&at(b"reject_message"), message.as_bytes().to_vec());
                    if let Some(e) = error_code {
                        t.insert(&at(b"error_code"), e.as_bytes().to_vec());
                    }
                }
            }
        }
        for (id, c) in &self.canisters {
            let at = |leaf: &'static [u8]| [&b"canister"[..], id.as_slice(), leaf];
            t.insert(&at(b"certified_data"), c.certified_data.clone());
            t.insert(&at(b"controllers"), principals_cbor(c.controllers.iter()));
            if let Some(m) = &c.module {
                t.insert(&at(b"module_hash"), m.hash.to_vec());
            }
        }
        let (lo, hi) = (canister_id(CANISTER_RANGE.0), canister_id(CANISTER_RANGE.1));
        let ranges = cbor(ciborium::Value::Array(vec![ciborium::Value::Array(vec![
            ciborium::Value::Bytes(lo.as_slice().to_vec()),
            ciborium::Value::Bytes(hi.as_slice().to_vec()),
        ])]));
        let sid = subnet.subnet_id.as_slice();
        t.insert(&[b"canister_ranges", sid, lo.as_slice()], ranges.clone());
        t.insert(
            &[b"subnet", sid, b"public_key"],
            subnet.public_key_der.clone(),
        );
        t.insert(&[b"subnet", sid, b"canister_ranges"], ranges);
        t.insert(&[b"subnet", sid, b"type"], b"application".to_vec());
        for (node, der) in &subnet.nodes {
            t.insert(
                &[b"subnet", sid, b"node", node.as_slice(), b"public_key"],
                der.clone(),
            );
        }
        t
    }
}
