//! The certified states the HTTP interface serves. The replica core signs, collects and
//! combines certification shares ([`thicket_core::certification`]); this module keeps, for the
//! heights it certifies, the state tree whose root the core signs and the view queries run
//! against, and publishes a height's tree with the subnet's signature once the core reports it
//! certified: certificates for `read_state` and sync calls, and the state queries see.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use candid::Principal;
use thicket_state::tree::HashedTree;
use thicket_state::{CertifiedTrees, QueryView, SubnetInfo};
use thicket_types::artifacts::Certification;
use thicket_types::{CryptoHash, Height};

/// Trees kept for heights not yet certified: as many as the core keeps pending.
const MAX_PENDING: usize = thicket_core::certification::MAX_PENDING;

/// A certified state, as the HTTP interface serves it.
pub struct CertifiedState {
    pub height: Height,
    pub time_ns: u64,
    pub tree: HashedTree,
    /// The subnet's BLS signature on the tree's root (48 bytes, compressed G1).
    pub signature: Vec<u8>,
    pub view: QueryView,
    pub subnet: Arc<SubnetInfo>,
}

impl CertifiedState {
    /// An IC certificate revealing `paths` (and `/time`): CBOR `{tree, signature}`.
    pub fn certificate(&self, paths: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut all = paths.to_vec();
        all.push(vec![b"time".to_vec()]);
        encode_certificate(self.tree.witness(&all), &self.signature)
    }

    pub fn subnet_id(&self) -> Principal {
        self.subnet.subnet_id
    }
}

/// An IC certificate (self-describing CBOR `{tree, signature}`, no delegation): `tree` and the
/// subnet's signature on its root.
pub fn encode_certificate(
    tree: ic_certification::hash_tree::HashTree<Vec<u8>>,
    signature: &[u8],
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Certificate<'a> {
        tree: ic_certification::hash_tree::HashTree<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        signature: &'a [u8],
    }
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(
        &ciborium::tag::Required::<_, 55799>(Certificate { tree, signature }),
        &mut out,
    );
    out
}

/// Where the newest certified state is published.
pub type Published = Arc<RwLock<Option<Arc<CertifiedState>>>>;

struct Pending {
    tree: HashedTree,
    view: QueryView,
    time_ns: u64,
    subnet: Arc<SubnetInfo>,
}

/// Trees of executed heights, until the core certifies them.
#[derive(Default)]
pub struct Trees {
    pending: BTreeMap<Height, Pending>,
    pub published: Published,
    /// The tree kept between heights, changed by each executed height.
    pub kept: CertifiedTrees,
}

impl Trees {
    /// Trees publishing to `published`.
    pub fn new(published: Published) -> Self {
        Trees {
            published,
            ..Trees::default()
        }
    }

    /// Keeps an executed height's tree; returns the root the core signs.
    pub fn executed(
        &mut self,
        height: Height,
        tree: HashedTree,
        view: QueryView,
        time_ns: u64,
        subnet: Arc<SubnetInfo>,
    ) -> CryptoHash {
        let root = CryptoHash(tree.digest());
        self.pending.insert(
            height,
            Pending {
                tree,
                view,
                time_ns,
                subnet,
            },
        );
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_first();
        }
        root
    }

    /// Publishes the tree of a height the subnet certified, with its signature.
    pub fn publish(&mut self, c: &Certification) {
        let h = c.content.height;
        let Some(p) = self.pending.remove(&h) else {
            return;
        };
        let state = CertifiedState {
            height: h,
            time_ns: p.time_ns,
            tree: p.tree,
            signature: c.signature.to_bytes().to_vec(),
            view: p.view,
            subnet: p.subnet,
        };
        if let Ok(mut slot) = self.published.write() {
            *slot = Some(Arc::new(state));
        }
        self.pending.retain(|k, _| *k > h);
    }
}
