//! The artifact pool: validated artifacts by kind and height, plus an unvalidated section.
//! Roles only read it ([`PoolReader`] is `&Pool`); the driver changes it by applying
//! [`Mutation`]s, atomically, in order.

use std::collections::{BTreeMap, BTreeSet};

use thicket_types::artifacts::{
    CatchUpContent, CatchUpPackage, CatchUpShare, ConsensusMessage, Finalization,
    FinalizationShare, Notarization, NotarizationShare, RandomBeacon, RandomBeaconShare,
};
use thicket_types::block::{Block, BlockProposal, DkgComplaint, DkgId, SignedDealing, Summary};
use thicket_types::registry::SignedRegistryChange;
use thicket_types::{CryptoHash, Height, NodeId};

mod retransmit;

/// What a role asks the driver to do with the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// A new artifact made by this replica: validated by construction, to be gossiped.
    AddToValidated(ConsensusMessage),
    /// An unvalidated artifact passed validation.
    MoveToValidated(CryptoHash),
    /// An unvalidated artifact is useless (duplicate, too old): drop quietly.
    RemoveFromUnvalidated(CryptoHash),
    /// An unvalidated artifact is invalid: drop and count.
    HandleInvalid(CryptoHash, String),
    /// Everything below this height is no longer needed.
    PurgeBelow(Height),
    /// Adopt a verified catch-up package as the new root of the pool.
    AdoptCatchUpPackage(Box<CatchUpPackage>),
    /// An ingress message or registry change was finalized: drop it from the waiting set.
    RemoveOrdered(CryptoHash),
}

/// The validated and unvalidated artifacts of one replica.
pub struct Pool {
    /// Genesis or the latest adopted catch-up package: trusted, below it nothing is kept.
    root: CatchUpContent,
    root_hash: CryptoHash,
    latest_cup: Option<CatchUpPackage>,
    pub(crate) blocks: BTreeMap<Height, BTreeMap<CryptoHash, BlockProposal>>,
    pub(crate) beacons: BTreeMap<Height, (RandomBeacon, u64)>,
    pub(crate) beacon_shares: BTreeMap<Height, BTreeMap<NodeId, RandomBeaconShare>>,
    pub(crate) notarizations: BTreeMap<Height, BTreeMap<CryptoHash, (Notarization, u64)>>,
    pub(crate) notarization_shares:
        BTreeMap<Height, BTreeMap<(CryptoHash, NodeId), NotarizationShare>>,
    pub(crate) finalizations: BTreeMap<Height, BTreeMap<CryptoHash, Finalization>>,
    pub(crate) finalization_shares:
        BTreeMap<Height, BTreeMap<(CryptoHash, NodeId), FinalizationShare>>,
    pub(crate) cup_shares: BTreeMap<Height, BTreeMap<NodeId, CatchUpShare>>,
    pub(crate) dealings: BTreeMap<(DkgId, NodeId), SignedDealing>,
    pub(crate) complaints: BTreeMap<(DkgId, NodeId, u32), DkgComplaint>,
    pub(crate) waiting: BTreeMap<CryptoHash, ConsensusMessage>,
    /// Encoded size of the ingress in `waiting`.
    waiting_ingress_bytes: usize,
    unvalidated: BTreeMap<CryptoHash, ConsensusMessage>,
    /// Finalized chain, height → block hash, from the root up.
    finalized: BTreeMap<Height, CryptoHash>,
    /// Ids of artifacts already validated, with their heights (for purging), so that copies
    /// arriving later are ignored without work.
    seen: BTreeMap<CryptoHash, Height>,
}

/// Roles read the pool through a shared reference.
pub type PoolReader<'a> = &'a Pool;

impl Pool {
    /// A pool rooted at genesis or a verified catch-up package.
    pub fn new(root: CatchUpContent, cup: Option<CatchUpPackage>) -> Self {
        let root_hash = root.block.hash();
        let mut finalized = BTreeMap::new();
        finalized.insert(root.block.height, root_hash);
        Pool {
            root,
            root_hash,
            latest_cup: cup,
            blocks: BTreeMap::new(),
            beacons: BTreeMap::new(),
            beacon_shares: BTreeMap::new(),
            notarizations: BTreeMap::new(),
            notarization_shares: BTreeMap::new(),
            finalizations: BTreeMap::new(),
            finalization_shares: BTreeMap::new(),
            cup_shares: BTreeMap::new(),
            dealings: BTreeMap::new(),
            complaints: BTreeMap::new(),
            waiting: BTreeMap::new(),
            waiting_ingress_bytes: 0,
            unvalidated: BTreeMap::new(),
            finalized,
            seen: BTreeMap::new(),
        }
    }

    // ----- reading -------------------------------------------------------------------------

    pub fn root(&self) -> &CatchUpContent {
        &self.root
    }

    pub fn root_height(&self) -> Height {
        self.root.block.height
    }

    pub fn latest_cup(&self) -> Option<&CatchUpPackage> {
        self.latest_cup.as_ref()
    }

    /// The summary every honest replica agrees on at the root.
    pub fn root_summary(&self) -> &Summary {
        // The root block is a summary block by construction (genesis or a CUP).
        self.root
            .block
            .summary()
            .unwrap_or_else(|| unreachable!("root is a summary block"))
    }

    pub fn unvalidated(&self) -> impl Iterator<Item = (&CryptoHash, &ConsensusMessage)> {
        self.unvalidated.iter()
    }

    pub fn unvalidated_get(&self, id: &CryptoHash) -> Option<&ConsensusMessage> {
        self.unvalidated.get(id)
    }

    pub fn unvalidated_len(&self) -> usize {
        self.unvalidated.len()
    }

    /// A validated block by height and hash (the root block included).
    pub fn block(&self, height: Height, hash: &CryptoHash) -> Option<&Block> {
        if height == self.root_height() && *hash == self.root_hash {
            return Some(&self.root.block);
        }
        self.blocks.get(&height)?.get(hash).map(|p| &p.block)
    }

    /// Validated proposals at `height` with their block hashes.
    pub fn proposals_at(
        &self,
        height: Height,
    ) -> impl Iterator<Item = (&CryptoHash, &BlockProposal)> {
        self.blocks.get(&height).into_iter().flat_map(|m| m.iter())
    }

    pub fn beacon(&self, height: Height) -> Option<&RandomBeacon> {
        if height == self.root_height() {
            return Some(&self.root.beacon);
        }
        self.beacons.get(&height).map(|(b, _)| b)
    }

    pub fn beacon_height(&self) -> Height {
        self.beacons
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.root_height())
            .max(self.root_height())
    }

    /// Notarized blocks at `height` with their hashes: a notarization and the block itself are
    /// in the pool, or the block is finalized.
    pub fn notarized_blocks(&self, height: Height) -> Vec<(CryptoHash, &Block)> {
        if height == self.root_height() {
            return vec![(self.root_hash, &self.root.block)];
        }
        let finalized = self.finalized.get(&height);
        let notarized = self
            .notarizations
            .get(&height)
            .into_iter()
            .flat_map(|m| m.keys());
        let mut hashes: Vec<&CryptoHash> = finalized.into_iter().chain(notarized).collect();
        hashes.sort();
        hashes.dedup();
        hashes
            .into_iter()
            .filter_map(|h| Some((*h, self.block(height, h)?)))
            .collect()
    }

    pub fn is_notarized(&self, height: Height, hash: &CryptoHash) -> bool {
        (height == self.root_height() && *hash == self.root_hash)
            || self.finalized.get(&height) == Some(hash)
            || self
                .notarizations
                .get(&height)
                .is_some_and(|m| m.contains_key(hash))
    }

    pub fn notarization(&self, height: Height, hash: &CryptoHash) -> Option<&Notarization> {
        self.notarizations.get(&height)?.get(hash).map(|(n, _)| n)
    }

    /// Highest height with a notarized block (counting up from the finalized height, whose
    /// block is notarized by implication; heights below may have been purged).
    pub fn notarized_height(&self) -> Height {
        let mut h = self.finalized_height();
        for (height, m) in self.notarizations.range(h.next()..) {
            if *height != h.next() {
                break;
            }
            if !m.keys().any(|b| self.block(*height, b).is_some()) {
                break;
            }
            h = *height;
        }
        h
    }

    /// When round `height` could start here: once height − 1 had a notarized block and a
    /// beacon (the later of the two arrivals). The root counts as time 0.
    pub fn round_start(&self, height: Height) -> Option<u64> {
        let prev = height.prev();
        if prev == self.root_height() {
            return Some(0);
        }
        if self.finalized.contains_key(&prev) && !self.notarizations.contains_key(&prev) {
            // Finalized before its notarization arrived: this replica is catching up, and the
            // round's delays have long passed.
            return Some(0);
        }
        let notarized = self
            .notarizations
            .get(&prev)?
            .iter()
            .filter(|(b, _)| self.block(prev, b).is_some())
            .map(|(_, (_, t))| *t)
            .min()?;
        let beacon = self.beacons.get(&prev)?.1;
        Some(notarized.max(beacon))
    }

    pub fn finalized_height(&self) -> Height {
        self.finalized
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.root_height())
    }

    pub fn finalized_hash(&self, height: Height) -> Option<&CryptoHash> {
        self.finalized.get(&height)
    }

    pub fn finalized_block(&self, height: Height) -> Option<&Block> {
        let hash = self.finalized.get(&height)?;
        self.block(height, hash)
    }

    pub fn finalization(&self, height: Height) -> Option<&Finalization> {
        self.finalizations.get(&height)?.values().next()
    }

    pub fn finalizations_at(&self, height: Height) -> impl Iterator<Item = &Finalization> {
        self.finalizations
            .get(&height)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn beacon_shares(&self, height: Height) -> impl Iterator<Item = &RandomBeaconShare> {
        self.beacon_shares
            .get(&height)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn notarization_shares(&self, height: Height) -> impl Iterator<Item = &NotarizationShare> {
        self.notarization_shares
            .get(&height)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn finalization_shares(&self, height: Height) -> impl Iterator<Item = &FinalizationShare> {
        self.finalization_shares
            .get(&height)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn cup_shares(&self, height: Height) -> impl Iterator<Item = &CatchUpShare> {
        self.cup_shares
            .get(&height)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn dealing(&self, dkg: &DkgId, dealer: NodeId) -> Option<&SignedDealing> {
        self.dealings.get(&(*dkg, dealer))
    }

    pub fn dealings(&self) -> impl Iterator<Item = &SignedDealing> {
        self.dealings.values()
    }

    pub fn complaints(&self) -> impl Iterator<Item = &DkgComplaint> {
        self.complaints.values()
    }

    /// Ingress messages and registry changes waiting to be ordered.
    pub fn waiting(&self) -> impl Iterator<Item = (&CryptoHash, &ConsensusMessage)> {
        self.waiting.iter()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes of ingress waiting to be ordered (what admission control bounds).
    pub fn waiting_ingress_bytes(&self) -> usize {
        self.waiting_ingress_bytes
    }

    pub fn waiting_get(&self, id: &CryptoHash) -> Option<&ConsensusMessage> {
        self.waiting.get(id)
    }

    pub fn waiting_registry_changes(&self) -> impl Iterator<Item = &SignedRegistryChange> {
        self.waiting.values().filter_map(|m| match m {
            ConsensusMessage::RegistryChange(c) => Some(c.as_ref()),
            _ => None,
        })
    }

    /// Ancestors of `block` (exclusive) down to height `down_to` (inclusive), newest first.
    /// `None` if a link is missing from the pool.
    pub fn ancestors(&self, block: &Block, down_to: Height) -> Option<Vec<&Block>> {
        let mut out = Vec::new();
        let mut cur = block;
        while cur.height > down_to {
            let parent = self.block(cur.height.prev(), &cur.parent)?;
            out.push(parent);
            cur = parent;
        }
        Some(out)
    }

    /// Whether a validated artifact with this id exists (to drop duplicates early).
    pub fn contains(&self, msg: &ConsensusMessage) -> bool {
        match msg {
            ConsensusMessage::BlockProposal(p) => {
                self.block(p.block.height, &p.block.hash()).is_some()
            }
            ConsensusMessage::RandomBeacon(b) => self.beacon(b.content.height).is_some(),
            ConsensusMessage::RandomBeaconShare(s) => self
                .beacon_shares
                .get(&s.content.height)
                .is_some_and(|m| m.contains_key(&s.signer)),
            ConsensusMessage::Notarization(n) => self
                .notarization(n.content.height, &n.content.block)
                .is_some(),
            ConsensusMessage::NotarizationShare(s) => self
                .notarization_shares
                .get(&s.content.height)
                .is_some_and(|m| m.contains_key(&(s.content.block, s.signer))),
            ConsensusMessage::Finalization(f) => self
                .finalizations
                .get(&f.content.height)
                .is_some_and(|m| m.contains_key(&f.content.block)),
            ConsensusMessage::FinalizationShare(s) => self
                .finalization_shares
                .get(&s.content.height)
                .is_some_and(|m| m.contains_key(&(s.content.block, s.signer))),
            ConsensusMessage::CatchUpPackage(c) => {
                c.content.block.height <= self.root_height()
                    || self
                        .latest_cup
                        .as_ref()
                        .is_some_and(|l| l.content.block.height >= c.content.block.height)
            }
            ConsensusMessage::CatchUpShare(s) => self
                .cup_shares
                .get(&s.content.height)
                .is_some_and(|m| m.contains_key(&s.signer)),
            ConsensusMessage::Dealing(d) => self.dealings.contains_key(&(d.dkg, d.dealer)),
            ConsensusMessage::Complaint(c) => {
                self.complaints
                    .contains_key(&(c.dkg, c.dealer, c.complaint.receiver))
            }
            ConsensusMessage::RegistryChange(_) | ConsensusMessage::Ingress(_) => {
                self.waiting.contains_key(&msg.id())
            }
            // The replica's certifier keeps these; the pool never holds them.
            ConsensusMessage::CertificationShare(_) | ConsensusMessage::Certification(_) => false,
        }
    }

    // ----- changing ------------------------------------------------------------------------

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
                        self.seen.insert(id, msg.height());
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
                if let ConsensusMessage::Ingress(b) = &msg {
                    self.waiting_ingress_bytes += b.len();
                }
                if let Some(ConsensusMessage::Ingress(b)) = self.waiting.insert(msg.id(), msg) {
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
