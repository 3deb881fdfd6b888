//! Notary: signs notarization shares for the lowest-ranked valid block(s) of the current round
//! once the rank's notary delay has elapsed.
//!
//! Safety support: a notary never signs a block of a higher rank than one it already signed in
//! the round, and skips ranks whose maker equivocated (two blocks of one rank). Liveness: the
//! delay grows with rank and with the notarized–finalized gap (×1.5 per height), so in a synchronous
//! period the lowest honest rank ends up the only one notarized, and finalization follows.

use std::collections::{BTreeMap, BTreeSet};

use thicket_types::artifacts::{ConsensusMessage, NotarizationContent, Share, SignedContent};
use thicket_types::{CryptoHash, Height, Rank};

use crate::Output;
use crate::keys::NodeSecrets;
use crate::membership::{epoch_for_round, notary_delay};
use crate::pool::{Mutation, Pool};

/// Ranks whose maker proposed more than one block at `h`: the IC disqualifies them.
pub fn disqualified_ranks(pool: &Pool, h: Height) -> BTreeSet<Rank> {
    let mut seen: BTreeMap<Rank, CryptoHash> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (hash, p) in pool.proposals_at(h) {
        let hash = *hash;
        if seen
            .insert(p.block.rank, hash)
            .is_some_and(|prev| prev != hash)
        {
            out.insert(p.block.rank);
        }
    }
    out
}

pub fn notarize(pool: &Pool, me: &NodeSecrets, now: u64) -> Output {
    let h = pool.notarized_height().next();
    let Some(epoch) = epoch_for_round(pool, h) else {
        return Output::default();
    };
    if !epoch.registry.members.contains_key(&me.node_id) {
        return Output::default();
    }
    let Some(start) = pool.round_start(h) else {
        return Output::default();
    };
    let mut by_rank: BTreeMap<Rank, Vec<CryptoHash>> = BTreeMap::new();
    for (hash, p) in pool.proposals_at(h) {
        by_rank.entry(p.block.rank).or_default().push(*hash);
    }
    let disqualified = disqualified_ranks(pool, h);
    let signed: Vec<CryptoHash> = pool
        .notarization_shares(h)
        .filter(|s| s.signer == me.node_id)
        .map(|s| s.content.block)
        .collect();
    // Shares for an equivocating maker's blocks do not bind the notary to that rank.
    let signed_rank = pool
        .proposals_at(h)
        .filter(|(hash, p)| signed.contains(hash) && !disqualified.contains(&p.block.rank))
        .map(|(_, p)| p.block.rank)
        .min();
    let Some((rank, hashes)) = by_rank.into_iter().find(|(r, _)| !disqualified.contains(r)) else {
        return Output::default();
    };
    if signed_rank.is_some_and(|r| r <= rank) || signed.contains(&hashes[0]) {
        return Output::default();
    }
    let due = start
        + notary_delay(
            epoch,
            rank,
            pool.notarized_height(),
            pool.finalized_height(),
        );
    if now < due {
        return Output::wake(due);
    }
    let content = NotarizationContent {
        height: h,
        block: hashes[0],
    };
    let signature = me.committee.sign(&content.signing_bytes());
    Output::from(vec![Mutation::AddToValidated(
        ConsensusMessage::NotarizationShare(Share {
            content,
            signer: me.node_id,
            signature,
        }),
    )])
}
