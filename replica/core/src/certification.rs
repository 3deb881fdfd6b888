//! State certification as a pure role. After executing a height, each replica signs the root
//! hash of its certified state with its share of the subnet's threshold key (the high-threshold
//! key of the height's epoch) and sends the share to its peers; once a threshold of shares on
//! the same root is here, they combine into the subnet's signature, which any client verifies
//! with the subnet's public key. The shell keeps the state trees and publishes a height when
//! [`crate::Ready::certified`] names it.
//!
//! Safety: an honest replica signs one root per height (the one its own execution produced),
//! so with at most f faulty signers and a threshold above f, no two roots are certified at one
//! height. A peer contributes one share per height, for heights near this replica's
//! execution, and only as a member with a public share. Shares are combined first and the
//! combination checked once against the subnet key (one pairing check per height instead of
//! one per share); only when it fails is each share checked against its signer's public
//! share, the invalid ones set aside for good, and the valid ones combined again. Nothing is
//! certified that the subnet key does not verify.

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
    /// Per height, per signer: the share, and whether it was checked on its own (`None`: not
    /// yet, its combination verified or not tried).
    shares: BTreeMap<Height, BTreeMap<NodeId, (CertificationShare, Option<bool>)>>,
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
    /// height) with a public share; its signature is checked when shares are combined. A
    /// signer contributes one share per height. Returns whether it was kept.
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
        let member = epoch
            .registry
            .index_of(share.signer)
            .is_some_and(|i| epoch.high.share_key(i).is_some());
        if !member {
            return false;
        }
        self.shares
            .entry(h)
            .or_default()
            .insert(share.signer, (share, None));
        true
    }

    /// This replica's own shares of heights not yet certified (to send again to peers).
    pub fn own_shares(&self, me: NodeId) -> Vec<CertificationShare> {
        self.shares
            .values()
            .filter_map(|m| m.get(&me).map(|(s, _)| s.clone()))
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
            let Some(shares) = self.shares.get_mut(&h) else {
                continue;
            };
            let Some(signature) = combined(shares, content, epoch) else {
                continue;
            };
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

/// The subnet's signature on `content` from `shares`, if enough of them on it are valid: their
/// combination is checked once; if it fails, each share not checked yet is checked on its
/// own (and marked), and the valid ones are combined again.
fn combined(
    shares: &mut BTreeMap<NodeId, (CertificationShare, Option<bool>)>,
    content: &CertificationContent,
    epoch: &Epoch,
) -> Option<threshold::CombinedSig> {
    let need = epoch.high.threshold();
    let public = epoch.high.coefficients().public_key();
    let message = content.message();
    // Those on another root, or found invalid, do not count.
    let on_root = |shares: &BTreeMap<NodeId, (CertificationShare, Option<bool>)>| {
        shares
            .iter()
            .filter(|(_, (s, checked))| s.content == *content && *checked != Some(false))
            .filter_map(|(signer, (s, _))| Some((epoch.registry.index_of(*signer)?, s.signature)))
            .collect::<Vec<(u32, threshold::SigShare)>>()
    };
    let verified = |list: &[(u32, threshold::SigShare)]| {
        let signature = threshold::combine(list, need).ok()?;
        threshold::verify_combined(&signature, &message, &public)
            .is_ok()
            .then_some(signature)
    };
    let first = on_root(shares);
    if first.len() < need {
        return None;
    }
    if let Some(signature) = verified(&first) {
        return Some(signature);
    }
    let mut found_invalid = false;
    for (signer, (share, checked)) in shares.iter_mut() {
        if checked.is_some() || share.content != *content {
            continue;
        }
        let valid = epoch.registry.index_of(*signer).is_some_and(|i| {
            epoch.high.share_key(i).is_some_and(|k| {
                threshold::verify_share_with_key(&share.signature, &message, &k).is_ok()
            })
        });
        found_invalid |= !valid;
        *checked = Some(valid);
    }
    let valid = on_root(shares);
    if found_invalid && valid.len() >= need {
        verified(&valid)
    } else {
        None
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

#[cfg(test)]
mod tests {
    use thicket_crypto::threshold::SigShare;
    use thicket_types::CryptoHash;

    use super::*;

    /// Runs `check` on the certifier after `shares` of `content` were added to it.
    fn with_shares(
        epoch: &Epoch,
        content: CertificationContent,
        shares: Vec<CertificationShare>,
        check: impl FnOnce(&mut Certifier),
    ) {
        let mut c = Certifier::default();
        c.executed(content);
        for s in shares {
            assert!(c.add_share(s, content.height, epoch));
        }
        check(&mut c);
    }

    #[test]
    fn shares_are_combined_first_and_checked_one_by_one_only_when_that_fails() {
        let f = crate::tests::fixture();
        let epoch = epoch_for_round(&f.core(0).pool, Height(0))
            .expect("genesis epoch")
            .clone();
        let keys: Vec<_> = f
            .secrets
            .iter()
            .map(|s| {
                let mut k = thicket_consensus::keys::KeyStore::default();
                k.load_epoch(&epoch, s);
                k
            })
            .collect();
        let content = CertificationContent {
            height: Height(1),
            root: CryptoHash([7; 32]),
        };
        let share = |i: usize, forged: bool| Share {
            content,
            signer: NodeId(i as u64),
            signature: if forged {
                SigShare(thicket_crypto::bls::hash_to_g1(b"forged", b"THICKET_TEST"))
            } else {
                let key = keys[i].share(&epoch.high).expect("a share");
                threshold::sign_share(key, &content.message())
            },
        };
        let public = epoch.high.coefficients().public_key();
        // Certifies what the subnet key verifies.
        let certifies = |c: &mut Certifier| {
            let cert = c.aggregate(|_| Some(&epoch)).expect("certified");
            assert!(
                threshold::verify_combined(&cert.signature, &content.message(), &public).is_ok()
            );
        };
        // Valid shares.
        with_shares(
            &epoch,
            content,
            (1..4).map(|i| share(i, false)).collect(),
            certifies,
        );
        // Too few: nothing is combined or checked.
        with_shares(
            &epoch,
            content,
            vec![share(0, true), share(1, false)],
            |c| {
                assert!(c.aggregate(|_| Some(&epoch)).is_none());
                assert!(
                    c.shares[&Height(1)]
                        .values()
                        .all(|(_, checked)| checked.is_none())
                );
            },
        );
        // A forged share among them: the combination fails, each is checked, the forged one is
        // set aside and the others combined.
        with_shares(
            &epoch,
            content,
            (0..4).map(|i| share(i, i == 0)).collect(),
            certifies,
        );
        // Only the forged share and two valid ones: set aside, and not enough left.
        with_shares(
            &epoch,
            content,
            (0..3).map(|i| share(i, i == 0)).collect(),
            |c| {
                assert!(c.aggregate(|_| Some(&epoch)).is_none());
                let checked: Vec<_> = c.shares[&Height(1)].values().map(|(_, v)| *v).collect();
                assert_eq!(checked, vec![Some(false), Some(true), Some(true)]);
            },
        );
    }
}
