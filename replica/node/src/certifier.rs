//! State certification: after executing a height, each replica signs the root hash of its
//! certified state tree with its share of the subnet's threshold key and sends the share to
//! its peers; once a threshold of shares on the same root is here, they combine into the
//! subnet's signature, which any client verifies with the subnet's public key (the root key
//! of `/api/v2/status`). The newest certified state is published for the HTTP interface:
//! certificates for `read_state` and sync calls, and the state queries run against.
//!
//! Shares are checked against the signer's public share of the epoch's key when they arrive
//! and dropped if they do not verify: a peer can only ever contribute its own share, at most
//! one per height, for heights near this replica's execution.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use candid::Principal;
use thicket_crypto::threshold;
use thicket_state::QueryView;
use thicket_state::machine::SubnetInfo;
use thicket_state::tree::HashedTree;
use thicket_types::artifacts::{Certification, CertificationContent, CertificationShare};
use thicket_types::block::Epoch;
use thicket_types::{CryptoHash, Height, NodeId};

/// Heights executed but not yet certified that are kept (older ones are given up: a newer
/// certification supersedes them).
const MAX_PENDING: usize = 16;
/// How far ahead of this replica's execution peers' shares are kept.
const MAX_AHEAD: u64 = 32;

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
        let tree = self.tree.witness(&all);
        #[derive(serde::Serialize)]
        struct Certificate<'a> {
            tree: ic_certification::hash_tree::HashTree<Vec<u8>>,
            #[serde(with = "serde_bytes")]
            signature: &'a [u8],
        }
        let mut out = Vec::new();
        let _ = ciborium::into_writer(
            &ciborium::tag::Required::<_, 55799>(Certificate {
                tree,
                signature: &self.signature,
            }),
            &mut out,
        );
        out
    }

    pub fn subnet_id(&self) -> Principal {
        self.subnet.subnet_id
    }
}

/// Where the newest certified state is published.
pub type Published = Arc<RwLock<Option<Arc<CertifiedState>>>>;

struct Pending {
    tree: HashedTree,
    view: QueryView,
    time_ns: u64,
    subnet: Arc<SubnetInfo>,
    content: CertificationContent,
}

#[derive(Default)]
pub struct Certifier {
    pending: BTreeMap<Height, Pending>,
    shares: BTreeMap<Height, BTreeMap<NodeId, CertificationShare>>,
    certified: Height,
    pub published: Published,
}

impl Certifier {
    /// A certifier publishing to `published`.
    pub fn new(published: Published) -> Self {
        Certifier {
            published,
            ..Certifier::default()
        }
    }

    pub fn certified_height(&self) -> Height {
        self.certified
    }

    /// Records an executed height's tree and returns the content to sign.
    pub fn executed(
        &mut self,
        height: Height,
        tree: HashedTree,
        view: QueryView,
        time_ns: u64,
        subnet: Arc<SubnetInfo>,
    ) -> CertificationContent {
        let content = CertificationContent {
            height,
            root: CryptoHash(tree.digest()),
        };
        self.pending.insert(
            height,
            Pending {
                tree,
                view,
                time_ns,
                subnet,
                content,
            },
        );
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_first();
        }
        // Shares of heights given up on are of no use any more.
        if let Some(oldest) = self.pending.keys().next().copied() {
            self.shares.retain(|k, _| *k >= oldest);
        }
        content
    }

    /// Keeps a share (own or a peer's) for a height not yet certified and at most
    /// `MAX_AHEAD` above `executed`, if its signer is a member of `epoch` (the epoch of that
    /// height) and the signature verifies against the signer's public share. A signer
    /// contributes one share per height. Returns whether it was kept.
    pub fn add_share(
        &mut self,
        share: CertificationShare,
        executed: Height,
        epoch: &Epoch,
    ) -> bool {
        let h = share.content.height;
        if h <= self.certified || h.0 > executed.0 + MAX_AHEAD {
            return false;
        }
        if self
            .shares
            .get(&h)
            .is_some_and(|m| m.contains_key(&share.signer))
        {
            return false;
        }
        let valid = epoch.registry.index_of(share.signer).is_some_and(|i| {
            epoch.high.share_key(i).is_some_and(|k| {
                threshold::verify_share_with_key(&share.signature, &share.content.message(), &k)
                    .is_ok()
            })
        });
        if !valid {
            return false;
        }
        self.shares
            .entry(h)
            .or_default()
            .insert(share.signer, share);
        true
    }

    /// This replica's own shares of heights not yet certified (to send again to peers).
    pub fn own_shares(&self, me: NodeId) -> Vec<CertificationShare> {
        self.shares
            .values()
            .filter_map(|m| m.get(&me).cloned())
            .collect()
    }

    /// Combines the shares of the newest pending height that has enough valid ones on this
    /// replica's root, and publishes it. `epoch_of` gives the epoch governing a height.
    pub fn aggregate<'e>(
        &mut self,
        epoch_of: impl Fn(Height) -> Option<&'e Epoch>,
    ) -> Option<Certification> {
        let heights: Vec<Height> = self.pending.keys().rev().copied().collect();
        for h in heights {
            let (Some(p), Some(epoch)) = (self.pending.get(&h), epoch_of(h)) else {
                continue;
            };
            let Some(shares) = self.shares.get(&h) else {
                continue;
            };
            let need = epoch.high.threshold();
            let msg = p.content.message();
            // Shares were verified when they arrived; those on another root do not count.
            let valid: Vec<(u32, threshold::SigShare)> = shares
                .iter()
                .filter(|(_, s)| s.content == p.content)
                .filter_map(|(signer, s)| Some((epoch.registry.index_of(*signer)?, s.signature)))
                .collect();
            if valid.len() < need {
                continue;
            }
            let Ok(signature) = threshold::combine(&valid, need) else {
                continue;
            };
            let public = epoch.high.coefficients().public_key();
            if threshold::verify_combined(&signature, &msg, &public).is_err() {
                continue;
            }
            let certification = Certification {
                content: p.content,
                signature,
            };
            self.install(&certification);
            return Some(certification);
        }
        None
    }

    /// Accepts a certification (combined by this replica or received) whose root matches this
    /// replica's tree at that height, after checking it against the subnet key.
    pub fn accept(&mut self, c: &Certification, epoch: &Epoch) -> bool {
        let Some(p) = self.pending.get(&c.content.height) else {
            return false;
        };
        if p.content != c.content || c.content.height <= self.certified {
            return false;
        }
        let public = epoch.high.coefficients().public_key();
        if threshold::verify_combined(&c.signature, &c.content.message(), &public).is_err() {
            return false;
        }
        self.install(c);
        true
    }

    fn install(&mut self, c: &Certification) {
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
        self.certified = h;
        self.pending.retain(|k, _| *k > h);
        self.shares.retain(|k, _| *k > h);
    }
}
