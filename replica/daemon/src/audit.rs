//! What this replica signed, and what it saw finalized and certified, height by height: the
//! evidence an auditor compares across replicas (`Audit` in the admin API). Two honest
//! replicas never finalize or certify different things at one height, and one replica never
//! signs two finalization shares (or certification, beacon or catch-up shares, or proposals) at
//! one height, nor a finalization share next to a notarization share of another block. The
//! fault harness (`e2e/faults`) polls every replica's record while it injects faults and checks
//! exactly that.
//!
//! Records live in memory, the newest [`CAPACITY`] of them (about an hour at three blocks a
//! second). A restarted replica starts a new record (a new `boot`), seeded with the shares it
//! signed before and restored from its store, so a share signed again after a crash is
//! compared with the one signed before it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

use thicket_consensus::pool::Pool;
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::{CryptoHash, Height, NodeId};

/// Records kept; older ones are dropped (a poller that falls behind sees the gap).
pub const CAPACITY: usize = 100_000;

/// Most records one `Audit` call returns.
pub const MAX_PAGE: usize = 10_000;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// This node proposed the block (`hash`) at its rank.
    Proposal,
    NotarizationShare,
    FinalizationShare,
    /// This node's random beacon share; `hash` is the parent beacon it extends.
    BeaconShare,
    /// This node's catch-up package share; `hash` is the catch-up content's hash.
    CatchUpShare,
    /// This node's certification share; `hash` is the state tree's root.
    CertificationShare,
    /// The block finalized at the height, as this node executed it.
    Finalized,
    /// The state root the subnet certified at the height, as this node combined or received it.
    Certified,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Proposal => "proposal",
            Kind::NotarizationShare => "notarization_share",
            Kind::FinalizationShare => "finalization_share",
            Kind::BeaconShare => "beacon_share",
            Kind::CatchUpShare => "catch_up_share",
            Kind::CertificationShare => "certification_share",
            Kind::Finalized => "finalized",
            Kind::Certified => "certified",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in this boot's record, from 1.
    pub seq: u64,
    pub height: Height,
    pub kind: Kind,
    pub hash: CryptoHash,
    /// The block maker's rank, for proposals and notarization shares (whose one-per-rank rule
    /// needs it); 0 otherwise.
    pub rank: u64,
}

struct Inner {
    records: VecDeque<Record>,
    next: u64,
    /// What was recorded at recent heights: a share re-sent, or a block delivered again after
    /// a restart, is recorded once (a different hash at the same height is recorded: that is
    /// what an auditor looks for).
    seen: BTreeSet<(Height, Kind, CryptoHash)>,
}

/// Heights below the newest recorded one whose records are still deduplicated.
const DEDUP_HEIGHTS: u64 = 4096;

/// One replica's record (shared between its driver, which writes, and the admin API).
pub struct Audit {
    me: NodeId,
    /// Random per process start: a poller that sees it change starts over at seq 0.
    pub boot: u64,
    inner: Mutex<Inner>,
}

impl Audit {
    pub fn new(me: NodeId) -> Self {
        let mut boot = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut boot);
        Audit {
            me,
            boot: u64::from_le_bytes(boot),
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                next: 1,
                seen: BTreeSet::new(),
            }),
        }
    }

    fn push(&self, height: Height, kind: Kind, hash: CryptoHash, rank: u64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if !inner.seen.insert((height, kind, hash)) {
            return;
        }
        if let Some(&(top, _, _)) = inner.seen.last() {
            let below = Height(top.0.saturating_sub(DEDUP_HEIGHTS));
            while inner.seen.first().is_some_and(|(h, _, _)| *h < below) {
                inner.seen.pop_first();
            }
        }
        let seq = inner.next;
        inner.next += 1;
        if inner.records.len() == CAPACITY {
            inner.records.pop_front();
        }
        inner.records.push_back(Record {
            seq,
            height,
            kind,
            hash,
            rank,
        });
    }

    /// Records what `msg` says if this node signed it (others' artifacts are theirs to record).
    pub fn signed(&self, msg: &ConsensusMessage, pool: &Pool) {
        let me = self.me;
        match msg {
            ConsensusMessage::BlockProposal(p) if p.block.maker == me => {
                let b = &p.block;
                self.push(b.height, Kind::Proposal, b.hash(), b.rank.0);
            }
            ConsensusMessage::NotarizationShare(s) if s.signer == me => {
                let c = &s.content;
                let rank = pool
                    .block(c.height, &c.block)
                    .map_or(u64::MAX, |b| b.rank.0);
                self.push(c.height, Kind::NotarizationShare, c.block, rank);
            }
            ConsensusMessage::FinalizationShare(s) if s.signer == me => {
                let c = &s.content;
                self.push(c.height, Kind::FinalizationShare, c.block, 0);
            }
            ConsensusMessage::RandomBeaconShare(s) if s.signer == me => {
                let c = &s.content;
                self.push(c.height, Kind::BeaconShare, c.parent, 0);
            }
            ConsensusMessage::CatchUpShare(s) if s.signer == me => {
                let c = &s.content;
                self.push(c.height, Kind::CatchUpShare, c.content_hash, 0);
            }
            ConsensusMessage::CertificationShare(s) if s.signer == me => {
                let c = &s.content;
                self.push(c.height, Kind::CertificationShare, c.root, 0);
            }
            _ => {}
        }
    }

    pub fn finalized(&self, height: Height, block: CryptoHash) {
        self.push(height, Kind::Finalized, block, 0);
    }

    pub fn certified(&self, height: Height, root: CryptoHash) {
        self.push(height, Kind::Certified, root, 0);
    }

    /// At start: the shares this node signed before and its store kept (everything above the
    /// pool's root).
    pub fn restored(&self, pool: &Pool) {
        let top = pool.notarized_height().max(pool.beacon_height()).0 + 1;
        for h in pool.root_height().0..=top {
            let h = Height(h);
            let mut mine: Vec<ConsensusMessage> = Vec::new();
            mine.extend(
                pool.proposals_at(h)
                    .map(|(_, p)| ConsensusMessage::BlockProposal(Box::new(p.clone()))),
            );
            mine.extend(
                pool.notarization_shares(h)
                    .cloned()
                    .map(ConsensusMessage::NotarizationShare),
            );
            mine.extend(
                pool.finalization_shares(h)
                    .cloned()
                    .map(ConsensusMessage::FinalizationShare),
            );
            mine.extend(
                pool.beacon_shares(h)
                    .cloned()
                    .map(ConsensusMessage::RandomBeaconShare),
            );
            mine.extend(
                pool.cup_shares(h)
                    .cloned()
                    .map(ConsensusMessage::CatchUpShare),
            );
            for m in &mine {
                self.signed(m, pool);
            }
        }
    }

    /// Records after `after` (at most `limit`), and the oldest seq still kept.
    pub fn since(&self, after: u64, limit: usize) -> (Vec<Record>, u64) {
        let Ok(inner) = self.inner.lock() else {
            return (Vec::new(), 0);
        };
        let oldest = inner.records.front().map_or(inner.next, |r| r.seq);
        let skip = after.saturating_add(1).saturating_sub(oldest) as usize;
        let out = inner
            .records
            .iter()
            .skip(skip)
            .take(limit.min(MAX_PAGE))
            .cloned()
            .collect();
        (out, oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_sequence_and_drop_the_oldest() {
        let a = Audit::new(NodeId(1));
        for h in 0..(CAPACITY as u64 + 5) {
            a.finalized(Height(h), CryptoHash([1; 32]));
            // Delivered again (a restart replays blocks): recorded once.
            a.finalized(Height(h), CryptoHash([1; 32]));
        }
        let (page, oldest) = a.since(0, 3);
        assert_eq!(oldest, 6, "the first five records were dropped");
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        let (page, _) = a.since(8, usize::MAX);
        assert_eq!(page.len(), MAX_PAGE);
        assert_eq!(page[0].seq, 9);
        let last = CAPACITY as u64 + 5;
        assert!(a.since(last, 10).0.is_empty());
        assert_eq!(a.since(last - 1, 10).0[0].height, Height(last - 1));
        // Another block at a recorded height is recorded: that is what an auditor looks for.
        a.finalized(Height(last - 3), CryptoHash([2; 32]));
        assert_eq!(a.since(last, 10).0[0].height, Height(last - 3));
    }
}
