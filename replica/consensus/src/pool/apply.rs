//! Changing the pool: artifacts from peers into the unvalidated section, and the roles'
//! mutations applied in order (validated artifacts, the finalized chain, purging, adopting a
//! catch-up package).

use std::collections::BTreeSet;

use thicket_types::artifacts::{CatchUpPackage, ConsensusMessage};
use thicket_types::ingress::SignedIngress;
use thicket_types::{CryptoHash, Height};

use super::{Mutation, Pool};

impl Pool {
    /// Adds an artifact received from a peer to the unvalidated section.
    pub fn insert_unvalidated(&mut self, msg: ConsensusMessage) {
        self.insert_unvalidated_with_id(msg.id(), msg);
    }

    /// As [`Pool::insert_unvalidated`], with the id the transport already knows (adverts carry
    /// it), so that duplicates cost no hashing.
    pub fn insert_unvalidated_with_id(&mut self, id: CryptoHash, msg: ConsensusMessage) {
        if !self.seen.contains_key(&id) && !self.unvalidated.contains_key(&id) {
            self.unvalidated.insert(id, msg);
        }
    }

    fn forget_expiry(&mut self, id: &CryptoHash) {
        if let Some(expiry) = self.waiting_expiry.remove(id) {
            self.by_expiry.remove(&(expiry, *id));
        }
    }

    /// Adds an artifact checked outside the pool (ingress the HTTP interface authenticated)
    /// at time `now`, remembered as seen like any validated one: whether it is new.
    pub fn insert_checked(&mut self, msg: ConsensusMessage, now: u64) -> bool {
        self.remember_seen(msg.id(), msg.height(), now);
        self.insert_validated(msg, now)
    }

    /// Remembers `id` as validated at `now`, and forgets the ingress and registry changes
    /// validated more than [`crate::pool::SEEN_UNORDERED_MS`] before.
    fn remember_seen(&mut self, id: CryptoHash, height: Height, now: u64) {
        if self.seen.insert(id, height).is_none() && height == Height(u64::MAX) {
            self.seen_unordered.push_back((now, id));
        }
        while let Some(&(at, old)) = self.seen_unordered.front() {
            if at.saturating_add(crate::pool::SEEN_UNORDERED_MS) >= now {
                break;
            }
            self.seen_unordered.pop_front();
            self.seen.remove(&old);
        }
    }

    /// Applies mutations in order at time `now`. Returns the artifacts this replica should
    /// gossip and the reasons of invalid artifacts.
    pub fn apply(&mut self, mutations: Vec<Mutation>, now: u64) -> Applied {
        let mut applied = Applied::default();
        for m in mutations {
            match m {
                Mutation::AddToValidated(msg) => {
                    if self.insert_validated(msg.clone(), now) {
                        applied.to_gossip.push(msg);
                    }
                }
                Mutation::MoveToValidated(id) => {
                    if let Some(msg) = self.unvalidated.remove(&id) {
                        self.remember_seen(id, msg.height(), now);
                        if self.insert_validated(msg.clone(), now) {
                            applied.to_relay.push(msg);
                        }
                    }
                }
                Mutation::RemoveFromUnvalidated(id) => {
                    // Not remembered as seen: an artifact dropped for being too far ahead
                    // must be accepted when it arrives again in time.
                    self.unvalidated.remove(&id);
                }
                Mutation::HandleInvalid(id, reason) => {
                    if let Some(msg) = self.unvalidated.remove(&id) {
                        applied.invalid.push((msg.kind(), reason));
                    }
                }
                Mutation::PurgeBelow(h) => self.purge_below(h),
                Mutation::AdoptCatchUpPackage(cup) => self.adopt(*cup),
                Mutation::RemoveOrdered(id) => {
                    if let Some(ConsensusMessage::Ingress(b)) = self.waiting.remove(&id) {
                        self.waiting_ingress_bytes -= b.len();
                        self.forget_expiry(&id);
                    }
                }
            }
        }
        applied
    }

    fn insert_validated(&mut self, msg: ConsensusMessage, now: u64) -> bool {
        if self.contains(&msg) {
            return false;
        }
        match msg {
            ConsensusMessage::BlockProposal(p) => {
                let (h, hash) = (p.block.height, p.block.hash());
                self.blocks.entry(h).or_default().insert(hash, *p);
                self.extend_finalized_chain();
            }
            ConsensusMessage::RandomBeacon(b) => {
                self.beacons.insert(b.content.height, (b, now));
            }
            ConsensusMessage::RandomBeaconShare(s) => {
                self.beacon_shares
                    .entry(s.content.height)
                    .or_default()
                    .insert(s.signer, s);
            }
            ConsensusMessage::Notarization(n) => {
                let c = n.content;
                self.notarizations
                    .entry(c.height)
                    .or_default()
                    .insert(c.block, (n, now));
            }
            ConsensusMessage::NotarizationShare(s) => {
                let c = s.content;
                self.notarization_shares
                    .entry(c.height)
                    .or_default()
                    .insert((c.block, s.signer), s);
            }
            ConsensusMessage::Finalization(f) => {
                let c = f.content;
                self.finalizations
                    .entry(c.height)
                    .or_default()
                    .insert(c.block, f);
                self.extend_finalized_chain();
            }
            ConsensusMessage::FinalizationShare(s) => {
                let c = s.content;
                self.finalization_shares
                    .entry(c.height)
                    .or_default()
                    .insert((c.block, s.signer), s);
            }
            ConsensusMessage::CatchUpPackage(c) => self.latest_cup = Some(*c),
            ConsensusMessage::CatchUpShare(s) => {
                self.cup_shares
                    .entry(s.content.height)
                    .or_default()
                    .insert(s.signer, s);
            }
            ConsensusMessage::Dealing(d) => {
                self.dealings.insert((d.dkg, d.dealer), *d);
            }
            ConsensusMessage::Complaint(c) => {
                self.complaints
                    .insert((c.dkg, c.dealer, c.complaint.receiver), *c);
            }
            msg @ (ConsensusMessage::RegistryChange(_) | ConsensusMessage::Ingress(_)) => {
                let id = msg.id();
                if let ConsensusMessage::Ingress(b) = &msg {
                    self.waiting_ingress_bytes += b.len();
                    let expiry =
                        SignedIngress::from_bytes(b).map_or(0, |i| i.content.ingress_expiry);
                    self.forget_expiry(&id);
                    self.waiting_expiry.insert(id, expiry);
                    self.by_expiry.insert((expiry, id));
                }
                if let Some(ConsensusMessage::Ingress(b)) = self.waiting.insert(id, msg) {
                    self.waiting_ingress_bytes -= b.len();
                }
            }
            ConsensusMessage::CertificationShare(_) | ConsensusMessage::Certification(_) => {
                return false;
            }
        }
        true
    }

    /// Walks down from the highest finalization whose block is present, recording the chain
    /// until it meets the part already known.
    fn extend_finalized_chain(&mut self) {
        let top = self.finalized_height();
        let candidate = self
            .finalizations
            .range(top.next()..)
            .rev()
            .flat_map(|(h, m)| m.keys().map(move |b| (*h, *b)))
            .find(|(h, b)| self.block(*h, b).is_some());
        let Some((mut h, mut hash)) = candidate else {
            return;
        };
        let mut newly = Vec::new();
        while h > top {
            let Some(block) = self.block(h, &hash) else {
                return;
            };
            newly.push((h, hash));
            hash = block.parent;
            h = h.prev();
        }
        if self.finalized.get(&top) != Some(&hash) {
            // The chain does not extend ours: a safety violation if the signatures are valid;
            // keep our chain (the simulator's checker reports it).
            return;
        }
        self.finalized.extend(newly);
    }

    fn purge_below(&mut self, h: Height) {
        let h = h.min(self.finalized_height());
        self.blocks = self.blocks.split_off(&h);
        self.beacons = self.beacons.split_off(&h);
        self.beacon_shares = self.beacon_shares.split_off(&h);
        self.notarizations = self.notarizations.split_off(&h);
        self.notarization_shares = self.notarization_shares.split_off(&h);
        self.finalizations = self.finalizations.split_off(&h);
        self.finalization_shares = self.finalization_shares.split_off(&h);
        self.cup_shares = self.cup_shares.split_off(&h);
        let keep = self.finalized.split_off(&h);
        self.finalized = keep;
        if self.finalized.is_empty() {
            self.finalized.insert(self.root_height(), self.root_hash);
        }
        self.dealings.retain(|(d, _), _| d.summary_height >= h);
        self.complaints.retain(|(d, _, _), _| d.summary_height >= h);
        self.unvalidated.retain(|_, m| m.height() >= h);
        self.seen.retain(|_, height| *height >= h);
    }

    fn adopt(&mut self, cup: CatchUpPackage) {
        let h = cup.content.block.height;
        if h <= self.root_height() {
            return;
        }
        let dkg_keep: BTreeSet<_> = self
            .dealings
            .keys()
            .filter(|(d, _)| d.summary_height >= h)
            .copied()
            .collect();
        self.dealings.retain(|k, _| dkg_keep.contains(k));
        self.complaints.retain(|(d, _, _), _| d.summary_height >= h);
        self.root = cup.content.clone();
        self.root_hash = self.root.block.hash();
        self.latest_cup = Some(cup);
        if self.finalized.get(&h) != Some(&self.root_hash) {
            self.finalized.clear();
        }
        self.finalized.insert(h, self.root_hash);
        // Keep this interval's DKG artifacts (their height is the summary height h).
        self.purge_below(h);
        self.finalized.insert(h, self.root_hash);
        self.extend_finalized_chain();
    }
}

/// Valid artifacts worth relaying to peers: blocks and aggregates (shares go out only from
/// their signer, which keeps gossip linear in n).
pub fn relayed(msg: &ConsensusMessage) -> bool {
    matches!(
        msg,
        ConsensusMessage::BlockProposal(_)
            | ConsensusMessage::RandomBeacon(_)
            | ConsensusMessage::Notarization(_)
            | ConsensusMessage::Finalization(_)
            | ConsensusMessage::CatchUpPackage(_)
    )
}

/// What applying mutations produced.
#[derive(Default, Debug)]
pub struct Applied {
    /// Artifacts this replica made: gossip to every peer.
    pub to_gossip: Vec<ConsensusMessage>,
    /// Artifacts received and found valid (a gossip layer may relay them).
    pub to_relay: Vec<ConsensusMessage>,
    /// Kinds and reasons of the invalid artifacts dropped.
    pub invalid: Vec<(thicket_types::artifacts::ArtifactKind, String)>,
}
