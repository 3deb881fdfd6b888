//! The artifact pool: validated artifacts by kind and height, plus an unvalidated section.
//! Roles only read it ([`PoolReader`] is `&Pool`); the driver changes it by applying
//! [`Mutation`]s, atomically, in order.

use std::collections::BTreeMap;

use thicket_types::artifacts::{
    CatchUpContent, CatchUpPackage, CatchUpShare, ConsensusMessage, Finalization,
    FinalizationShare, Notarization, NotarizationShare, RandomBeacon, RandomBeaconShare,
};
use thicket_types::block::{Block, BlockProposal, DkgComplaint, DkgId, SignedDealing, Summary};
use thicket_types::registry::SignedRegistryChange;
use thicket_types::{CryptoHash, Height, NodeId};

mod apply;
mod retransmit;

pub use apply::{Applied, relayed};

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
    /// The expiry (ns) of each waiting ingress message, and the same ordered by expiry: the
    /// expired ones are found without decoding the waiting set.
    waiting_expiry: BTreeMap<CryptoHash, u64>,
    by_expiry: std::collections::BTreeSet<(u64, CryptoHash)>,
    unvalidated: BTreeMap<CryptoHash, ConsensusMessage>,
    /// Finalized chain, height → block hash, from the root up.
    finalized: BTreeMap<Height, CryptoHash>,
    /// Ids of artifacts already validated, with their heights (for purging), so that copies
    /// arriving later are ignored without work.
    seen: BTreeMap<CryptoHash, Height>,
    /// The artifacts of `seen` without a height (ingress, registry changes), by the time they
    /// were validated: forgotten once no copy could still be executed (see
    /// [`SEEN_UNORDERED_MS`]).
    seen_unordered: std::collections::VecDeque<(u64, CryptoHash)>,
}

/// How long a replica remembers having validated an ingress message or registry change: an
/// ingress message expires at most this long after it can first arrive (its time to live plus
/// the permitted drift), and a copy arriving later is checked again and then dropped as
/// expired (execution never runs a message twice: its request id stays in the history until
/// it expires). Without it, the ids of all ingress ever received would stay in memory.
pub const SEEN_UNORDERED_MS: u64 = (thicket_types::ingress::MAX_INGRESS_TTL_NS
    + thicket_types::ingress::PERMITTED_DRIFT_NS)
    / 1_000_000;

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
            waiting_expiry: BTreeMap::new(),
            by_expiry: std::collections::BTreeSet::new(),
            unvalidated: BTreeMap::new(),
            finalized,
            seen: BTreeMap::new(),
            seen_unordered: std::collections::VecDeque::new(),
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

    /// Ids remembered as validated (to ignore copies without work).
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes of ingress waiting to be ordered (what admission control bounds).
    pub fn waiting_ingress_bytes(&self) -> usize {
        self.waiting_ingress_bytes
    }

    /// The waiting ingress messages whose expiry is before `before_ns` (an undecodable one
    /// counts as expired at 0).
    pub fn waiting_expired_before(&self, before_ns: u64) -> impl Iterator<Item = &CryptoHash> {
        self.by_expiry
            .range(..(before_ns, CryptoHash([0; 32])))
            .map(|(_, id)| id)
    }

    pub fn waiting_get(&self, id: &CryptoHash) -> Option<&ConsensusMessage> {
        self.waiting.get(id)
    }

    /// The waiting ingress message with these bytes, if any (checked when it entered the
    /// pool).
    pub fn waiting_ingress(&self, bytes: &[u8]) -> Option<&ConsensusMessage> {
        self.waiting_get(&ConsensusMessage::Ingress(bytes.to_vec()).id())
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
}
