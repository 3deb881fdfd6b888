//! What a replica sends peers that may lack something: the finalized chain for a peer behind
//! it, and its own artifacts of the open heights while it makes no progress.

use thicket_types::artifacts::ConsensusMessage;
use thicket_types::{Height, NodeId};

use super::Pool;

impl Pool {
    /// Every validated artifact at heights in `from..` (for retransmission to a lagging peer):
    /// blocks, beacons, notarizations and finalizations, oldest first.
    pub fn artifacts_from(&self, from: Height, limit: usize) -> Vec<ConsensusMessage> {
        let mut out = Vec::new();
        for (h, m) in self.blocks.range(from..) {
            if out.len() >= limit {
                break;
            }
            for (hash, p) in m {
                if self.is_notarized(*h, hash) {
                    out.push(ConsensusMessage::BlockProposal(Box::new(p.clone())));
                }
            }
            if let Some(b) = self.beacon(*h) {
                out.push(ConsensusMessage::RandomBeacon(b.clone()));
            }
            for (n, _) in self
                .notarizations
                .get(h)
                .into_iter()
                .flat_map(|m| m.values())
            {
                out.push(ConsensusMessage::Notarization(n.clone()));
            }
            for f in self.finalizations_at(*h) {
                out.push(ConsensusMessage::Finalization(f.clone()));
            }
        }
        out
    }

    /// What a peer at finalized height `peer_finalized` lacks: our CUP if it is below our
    /// root, then the finalized chain's artifacts from its next height (at most `limit` heights).
    pub fn catch_up_for(&self, peer_finalized: Height, limit: usize) -> Vec<ConsensusMessage> {
        let mut out = Vec::new();
        if peer_finalized < self.root_height() {
            if let Some(cup) = self.latest_cup() {
                out.push(ConsensusMessage::CatchUpPackage(Box::new(cup.clone())));
            }
        }
        if peer_finalized < self.finalized_height() {
            out.extend(self.artifacts_from(peer_finalized.next().max(self.root_height()), limit));
        }
        out
    }

    /// This replica's own artifacts of the open heights, the blocks and aggregates there and its
    /// DKG artifacts: what it re-sends while it makes no progress, in case peers lost them.
    /// Ingress waiting to be ordered is not re-sent: the replica that holds a message includes
    /// it in its own blocks, and under overload (when progress stalls) re-sending the whole
    /// waiting pool to every peer every second is what kept the subnet from recovering.
    /// Every block proposal of an open height goes, not only its own: a replica that lost its
    /// store cannot resend the block it proposed before, and without it peers' shares for that
    /// block cannot be validated.
    pub fn open_artifacts(&self, me: NodeId) -> Vec<ConsensusMessage> {
        let mut out = Vec::new();
        let mut h = self.finalized_height();
        while h <= self.notarized_height().next() {
            out.extend(
                self.proposals_at(h)
                    .map(|(_, x)| ConsensusMessage::BlockProposal(Box::new(x.clone()))),
            );
            out.extend(
                self.beacon_shares(h)
                    .filter(|s| s.signer == me)
                    .cloned()
                    .map(ConsensusMessage::RandomBeaconShare),
            );
            out.extend(
                self.notarization_shares(h)
                    .filter(|s| s.signer == me)
                    .cloned()
                    .map(ConsensusMessage::NotarizationShare),
            );
            out.extend(
                self.finalization_shares(h)
                    .filter(|s| s.signer == me)
                    .cloned()
                    .map(ConsensusMessage::FinalizationShare),
            );
            out.extend(
                self.cup_shares(h)
                    .filter(|s| s.signer == me)
                    .cloned()
                    .map(ConsensusMessage::CatchUpShare),
            );
            if let Some(b) = self.beacon(h) {
                out.push(ConsensusMessage::RandomBeacon(b.clone()));
            }
            for (hash, _) in self.notarized_blocks(h) {
                if let Some(n) = self.notarization(h, &hash) {
                    out.push(ConsensusMessage::Notarization(n.clone()));
                }
            }
            h = h.next();
        }
        out.extend(
            self.dealings()
                .filter(|d| d.dealer == me)
                .cloned()
                .map(|d| ConsensusMessage::Dealing(Box::new(d))),
        );
        out.extend(
            self.complaints()
                .cloned()
                .map(|c| ConsensusMessage::Complaint(Box::new(c))),
        );
        out
    }
}
