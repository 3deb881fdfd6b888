//! The certified state tree: what replicas sign after each height (`/time`, request
//! statuses, canisters' module hashes, controllers and certified data, the subnet's key,
//! canister ranges and node keys), as the IC interface specification lays it out; built at
//! once ([`SubnetState::certified_tree`]) or kept between heights and changed by what each
//! height changed ([`CertifiedTrees`]).

use std::collections::BTreeSet;

use candid::Principal;
use thicket_execution::IngressStatus;
use thicket_types::Height;
use thicket_types::ingress::RequestId;

use crate::ids::{CANISTER_RANGES, canister_id};
use crate::state::{HistoryEntry, SubnetState};
use crate::tree::{HashedTree, LabeledTree, leb128};

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

/// Where a request's status is: `/request_status/<id>`.
fn request_path(id: &RequestId) -> [&[u8]; 2] {
    [b"request_status", &id.0]
}

/// A request's leaves under `/request_status/<id>`.
fn status_tree(status: &IngressStatus) -> LabeledTree {
    let mut t = LabeledTree::subtree();
    match status {
        IngressStatus::Processing { .. } => t.insert(&[b"status"], b"processing".to_vec()),
        IngressStatus::Replied { reply, .. } => {
            t.insert(&[b"status"], b"replied".to_vec());
            t.insert(&[b"reply"], reply.clone());
        }
        IngressStatus::Rejected {
            code,
            message,
            error_code,
            ..
        } => {
            t.insert(&[b"status"], b"rejected".to_vec());
            t.insert(&[b"reject_code"], leb128(u64::from(*code)));
            t.insert(&[b"reject_message"], message.as_bytes().to_vec());
            if let Some(e) = error_code {
                t.insert(&[b"error_code"], e.as_bytes().to_vec());
            }
        }
    }
    t
}

impl SubnetState {
    /// The state tree replicas certify after this state's height: `/time`, the request
    /// statuses, each canister's module hash, controllers, certified data and metadata, and the
    /// subnet's key, canister ranges and node keys.
    pub fn certified_tree(&self, subnet: &SubnetInfo) -> LabeledTree {
        let mut t = self.tree_without_requests(subnet);
        for (id, HistoryEntry { status, .. }) in &self.history {
            if let LabeledTree::SubTree(top) = &mut t {
                let LabeledTree::SubTree(requests) = top
                    .entry(b"request_status".to_vec())
                    .or_insert_with(LabeledTree::subtree)
                else {
                    continue;
                };
                requests.insert(id.0.to_vec(), status_tree(status));
            }
        }
        t
    }

    /// Everything of the certified tree but `/request_status`: small, rebuilt at each height.
    fn tree_without_requests(&self, subnet: &SubnetInfo) -> LabeledTree {
        let mut t = LabeledTree::subtree();
        t.insert(&[b"time"], leb128(self.time_ns));
        for (id, c) in &self.canisters {
            let at = |leaf: &'static [u8]| [&b"canister"[..], id.as_slice(), leaf];
            t.insert(&at(b"certified_data"), c.certified_data.clone());
            t.insert(&at(b"controllers"), principals_cbor(c.controllers.iter()));
            if let Some(m) = &c.module {
                t.insert(&at(b"module_hash"), m.hash.to_vec());
                // Every metadata section, public or private: read_state serves the private
                // ones to controllers only.
                for md in m.metadata() {
                    t.insert(
                        &[b"canister", id.as_slice(), b"metadata", md.name.as_bytes()],
                        md.content.clone(),
                    );
                }
            }
        }
        let ranges = cbor(ciborium::Value::Array(
            CANISTER_RANGES
                .iter()
                .map(|(lo, hi)| {
                    ciborium::Value::Array(vec![
                        ciborium::Value::Bytes(canister_id(*lo).as_slice().to_vec()),
                        ciborium::Value::Bytes(canister_id(*hi).as_slice().to_vec()),
                    ])
                })
                .collect(),
        ));
        // One shard of `/canister_ranges/<subnet>`, keyed by its first id, holds them all.
        let lo = canister_id(CANISTER_RANGES[0].0);
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

/// The certified tree kept between heights: each height changes the requests it answered or
/// pruned (found through an index by expiry), in O(log n) digests each, and rebuilds the small
/// rest; the request history as a whole is never walked again. The tree is the one
/// [`SubnetState::certified_tree`] gives (debug builds check every tree against it).
#[derive(Default)]
pub struct CertifiedTrees {
    tree: Option<HashedTree>,
    /// The height the tree and the changes below bring it up to.
    height: Option<Height>,
    /// Requests whose status changed since the tree was last brought up to date.
    changed: BTreeSet<RequestId>,
    /// The requests in the tree by expiry: the state prunes a request once it expired.
    expiries: BTreeSet<(u64, RequestId)>,
}

impl CertifiedTrees {
    /// Takes note of what executing `height` changed (its answered and still processing
    /// requests, as the state machine reports them). A height that does not follow the last
    /// one noted makes the next tree a full build.
    pub fn executed(&mut self, height: Height, changed: &[(RequestId, IngressStatus)]) {
        if self.height.is_some_and(|h| h.next() == height) {
            self.changed.extend(changed.iter().map(|(id, _)| *id));
            self.height = Some(height);
        } else {
            *self = CertifiedTrees::default();
        }
    }

    /// The certified tree of `state`.
    pub fn tree(&mut self, state: &SubnetState, subnet: &SubnetInfo) -> HashedTree {
        let mut t = match self.tree.take() {
            Some(t) if self.height == Some(state.height) => t,
            _ => return self.rebuild(state, subnet),
        };
        let mut answered = Vec::new();
        for id in std::mem::take(&mut self.changed) {
            match state.history.get(&id) {
                Some(e) => {
                    answered.push((id.0.to_vec(), status_tree(&e.status).hashed()));
                    self.expiries.insert((e.expiry, id));
                }
                None => t.remove(&request_path(&id)),
            }
        }
        t.set_children(&[b"request_status"], answered);
        let expired: Vec<(u64, RequestId)> = self
            .expiries
            .range(..(state.time_ns, RequestId([0; 32])))
            .copied()
            .collect();
        for (expiry, id) in expired {
            // Still there: being answered, or answered after it expired (pruned next height).
            if !state.history.contains_key(&id) {
                self.expiries.remove(&(expiry, id));
                t.remove(&request_path(&id));
            }
        }
        let rest = state.tree_without_requests(subnet);
        if let LabeledTree::SubTree(top) = rest {
            if !top.contains_key(&b"canister"[..]) {
                t.remove(&[b"canister"]);
            }
            for (label, sub) in top {
                t.set(&[&label], sub.hashed());
            }
        }
        debug_assert_eq!(
            t.digest(),
            state.certified_tree(subnet).hashed().digest(),
            "the certified tree kept between heights differs from the state's"
        );
        self.tree = Some(t.clone());
        t
    }

    fn rebuild(&mut self, state: &SubnetState, subnet: &SubnetInfo) -> HashedTree {
        let t = state.certified_tree(subnet).hashed();
        *self = CertifiedTrees {
            tree: Some(t.clone()),
            height: Some(state.height),
            changed: BTreeSet::new(),
            expiries: state
                .history
                .iter()
                .map(|(id, e)| (e.expiry, *id))
                .collect(),
        };
        t
    }
}
