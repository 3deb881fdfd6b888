//! State certification as a pure role. After executing a height, each replica signs the root
//! hash of its certified state with its share of the subnet's threshold key (the high-threshold
//! key of the height's epoch) and sends the share to its peers; once a threshold of shares on
//! the same root is here, they combine into the subnet's signature, which any client verifies
//! with the subnet's public key. The shell keeps the state trees and publishes a height when
//! [`crate::Ready::certified`] names it.
//!
//! Safety: an honest replica signs one root per height (the one its own execution produced),
//! so with at most f faulty signers and a threshold above f, no two roots are certified at one
//! height. Shares are checked against the signer's public share when they arrive: a peer can
//! only contribute its own share, one per height, for heights near this replica's execution.

use std::collections::BTreeMap;

use thicket_consensus::StateReader;
use thicket_consensus::membership::epoch_for_round;
use thicket_crypto::threshold;
use thicket_types::artifacts::{
    Certification, CertificationContent, CertificationShare, ConsensusMessage, Share,
};
use thicket_types::block::Epoch;
use thicket_types::{Height, NodeId};

use crate::conduct::Conduct;
use crate::{Core, Executed, Ready, To};

/// Heights executed but not yet certified that are kept (older ones are given up: a newer
/// certification supersedes them).
pub const MAX_PENDING: usize = 16;

/// How far ahead of this replica's execution peers' shares are kept.
const MAX_AHEAD: u64 = 32;

#[derive(Default)]
pub struct Certifier {
    pending: BTreeMap<Height, CertificationContent>,
    shares: BTreeMap<Height, BTreeMap<NodeId, CertificationShare>>,
    certified: Height,
}

impl Certifier {
    pub fn certified_height(&self) -> Height {
        self.certified
    }

    /// Records the content this replica's execution produced at a height.
    fn executed(&mut self, content: CertificationContent) {
        self.pending.insert(content.height, content);
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_first();
        }
        // Shares of heights given up on are of no use any more.
        if let Some(oldest) = self.pending.keys().next().copied() {
            self.shares.retain(|k, _| *k >= oldest);
        }
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

    /// Combines the shares of the newest pending height that has enough on this replica's
    /// root. `epoch_of` gives the epoch governing a height.
    pub fn aggregate<'e>(
        &mut self,
        epoch_of: impl Fn(Height) -> Option<&'e Epoch>,
    ) -> Option<Certification> {
        let heights: Vec<Height> = self.pending.keys().rev().copied().collect();
        for h in heights {
            let (Some(content), Some(epoch)) = (self.pending.get(&h), epoch_of(h)) else {
                continue;
            };
            let Some(shares) = self.shares.get(&h) else {
                continue;
            };
            let need = epoch.high.threshold();
            // Shares were verified when they arrived; those on another root do not count.
            let valid: Vec<(u32, threshold::SigShare)> = shares
                .iter()
                .filter(|(_, s)| s.content == *content)
                .filter_map(|(signer, s)| Some((epoch.registry.index_of(*signer)?, s.signature)))
                .collect();
            if valid.len() < need {
                continue;
            }
            let Ok(signature) = threshold::combine(&valid, need) else {
                continue;
            };
            let public = epoch.high.coefficients().public_key();
            if threshold::verify_combined(&signature, &content.message(), &public).is_err() {
                continue;
            }
            let certification = Certification {
                content: *content,
                signature,
            };
            self.install(h);
            return Some(certification);
        }
        None
    }

    /// Accepts a certification (received from a peer) whose root matches this replica's at
    /// that height, after checking it against the subnet key.
    pub fn accept(&mut self, c: &Certification, epoch: &Epoch) -> bool {
        let h = c.content.height;
        if self.pending.get(&h) != Some(&c.content) || h <= self.certified {
            return false;
        }
        let public = epoch.high.coefficients().public_key();
        if threshold::verify_combined(&c.signature, &c.content.message(), &public).is_err() {
            return false;
        }
        self.install(h);
        true
    }

    fn install(&mut self, h: Height) {
        self.certified = h;
        self.pending.retain(|k, _| *k > h);
        self.shares.retain(|k, _| *k > h);
    }
}

impl<C: Conduct> Core<C> {
    /// Signs the roots of the heights the shell executed and certified, with this replica's
    /// share of the subnet key, and sends the shares.
    pub(crate) fn certify(
        &mut self,
        done: &[Executed],
        state: &dyn StateReader,
        ready: &mut Ready,
    ) {
        for e in done {
            let Some(root) = e.certify else { continue };
            let Some(epoch) = epoch_for_round(&self.pool, e.height) else {
                continue;
            };
            let content = CertificationContent {
                height: e.height,
                root,
            };
            self.certifier.executed(content);
            let Some(key) = self.consensus.keys().share(&epoch.high) else {
                continue;
            };
            let share = Share {
                signature: threshold::sign_share(key, &content.message()),
                content,
                signer: self.consensus.node_id(),
            };
            self.certifier
                .add_share(share.clone(), state.executed_height(), epoch);
            ready
                .send
                .push((To::All, ConsensusMessage::CertificationShare(share)));
        }
    }

    /// Combines shares into a certification when enough are here; sends it to peers too.
    pub(crate) fn aggregate_certification(&mut self, ready: &mut Ready) {
        let pool = &self.pool;
        if let Some(c) = self.certifier.aggregate(|h| epoch_for_round(pool, h)) {
            ready.send.push((
                To::All,
                ConsensusMessage::Certification(Box::new(c.clone())),
            ));
            ready.certified.push(c);
        }
    }
}
