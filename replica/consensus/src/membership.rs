//! Who does what at a height: the epoch (registry and threshold keys) in force for a round,
//! the block-maker ranking, and the thresholds.
//!
//! Rounds s+1 ..= s+L use the epoch that the summary at s−L announced as `next` (and that the
//! summary at s repeats as `current`). The summary at s−L is finalized long before: a replica
//! never needs an unfinalized summary to act, so two notarized summary blocks cannot stall the
//! protocol.

use thicket_types::block::{Epoch, Summary};
use thicket_types::registry::{faults_tolerated, high_threshold};
use thicket_types::{CryptoHash, Height, NodeId, Rank, hash_of};

use crate::pool::Pool;

/// Shortest DKG interval: dealings go into the first half of the interval's data blocks and
/// complaints about them need at least one block after that, before the summary.
pub const MIN_DKG_INTERVAL_LENGTH: u64 = 4;

/// Interval length of the subnet (genesis rejects anything below the minimum).
pub fn interval_length(pool: &Pool) -> u64 {
    pool.root_summary()
        .current
        .registry
        .params
        .dkg_interval_length
        .max(MIN_DKG_INTERVAL_LENGTH)
}

/// Height of the summary block that opens the interval round `h` belongs to: rounds
/// s+1 ..= s+L belong to the summary at s.
pub fn summary_height_for_round(pool: &Pool, h: Height) -> Height {
    let l = interval_length(pool);
    Height((h.0.saturating_sub(1) / l) * l)
}

pub fn is_summary_height(pool: &Pool, h: Height) -> bool {
    h.0 % interval_length(pool) == 0
}

/// The finalized summary at `h` (the root's, at the root height).
pub fn finalized_summary(pool: &Pool, h: Height) -> Option<&Summary> {
    if h == pool.root_height() {
        return Some(pool.root_summary());
    }
    pool.finalized_block(h)?.summary()
}

/// The epoch of round `h`, if a summary that names it is finalized here: the summary at s
/// (rounds s+1 ..= s+L) carries it as `current`, and the one at s−L announced it as `next`;
/// validation makes the two equal, and whichever is still in the pool will do.
pub fn epoch_for_round(pool: &Pool, h: Height) -> Option<&Epoch> {
    let s = summary_height_for_round(pool, h);
    if s < pool.root_height() {
        return None;
    }
    if let Some(summary) = finalized_summary(pool, s) {
        return Some(&summary.current);
    }
    let prev = Height(s.0.checked_sub(interval_length(pool))?);
    if prev < pool.root_height() {
        return None;
    }
    finalized_summary(pool, prev).map(|summary| &summary.next)
}

/// Ranking of round `h`: members ordered by hash(previous beacon, node); ranks 0..=f make blocks.
pub fn ranking(epoch: &Epoch, previous_beacon: &CryptoHash) -> Vec<NodeId> {
    let mut nodes: Vec<(CryptoHash, NodeId)> = epoch
        .registry
        .members
        .keys()
        .map(|n| {
            (
                hash_of("thicket-block-maker-ranking", &(previous_beacon, n)),
                *n,
            )
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, n)| n).collect()
}

pub fn rank_of(epoch: &Epoch, previous_beacon: &CryptoHash, node: NodeId) -> Option<Rank> {
    let r = ranking(epoch, previous_beacon)
        .iter()
        .position(|n| *n == node)?;
    (r <= faults_tolerated(epoch.registry.members.len())).then_some(Rank(r as u64))
}

/// Shares needed for a notarization or finalization: n − f of the members.
pub fn notary_threshold(epoch: &Epoch) -> usize {
    high_threshold(epoch.registry.members.len())
}

/// The notary delay of the IC: initial + unit × rank × 1.5^(notarized − finalized), in ms.
pub fn notary_delay(epoch: &Epoch, rank: Rank, notarized: Height, finalized: Height) -> u64 {
    let p = &epoch.registry.params;
    let gap = notarized.0.saturating_sub(finalized.0).min(64) as i32;
    let backoff = (p.unit_delay_ms as f64) * (rank.0 as f64) * 1.5f64.powi(gap);
    p.initial_notary_delay_ms + backoff.min(u64::MAX as f64 / 2.0) as u64
}

/// The block maker delay of the IC: unit × rank.
pub fn block_maker_delay(epoch: &Epoch, rank: Rank) -> u64 {
    epoch.registry.params.unit_delay_ms * rank.0
}
