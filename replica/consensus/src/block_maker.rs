//! Block maker: the node of rank r in round h proposes a block `unit_delay × r` after the round
//! started, on a notarized parent at h−1, unless it already saw a valid block of lower rank.
//!
//! Liveness: ranks 0..=f make blocks, so at least one honest maker proposes each round; the
//! growing delays give the leader time to be heard before the others compete.

use thicket_types::artifacts::ConsensusMessage;
use thicket_types::block::{Block, BlockProposal};
use thicket_types::{CryptoHash, Height, Rank};

use crate::Output;
use crate::keys::NodeSecrets;
use crate::membership::{block_maker_delay, epoch_for_round, rank_of};
use crate::payload;
use crate::pool::{Mutation, Pool};

/// The notarized block at `h` to build on: the one extending the finalized chain, lowest rank
/// and hash first among several.
pub fn choose_parent(pool: &Pool, h: Height) -> Option<(CryptoHash, &Block)> {
    let mut candidates: Vec<(CryptoHash, &Block)> = pool
        .notarized_blocks(h)
        .into_iter()
        .filter(|(hash, _)| extends_finalized(pool, h, hash))
        .collect();
    candidates.sort_by_key(|(hash, b)| (b.rank, *hash));
    candidates.into_iter().next()
}

/// Whether the block `hash` at `height` descends from (or is) the finalized block at the
/// finalized height. Walks parent links: a child names its parent's hash, so nothing is hashed.
pub fn extends_finalized(pool: &Pool, height: Height, hash: &CryptoHash) -> bool {
    let fh = pool.finalized_height();
    let (mut h, mut cur) = (height, *hash);
    while h > fh {
        match pool.block(h, &cur) {
            Some(b) => cur = b.parent,
            None => return false,
        }
        h = h.prev();
    }
    pool.finalized_hash(h) == Some(&cur)
}

pub fn make_block<R: rand_core::RngCore + rand_core::CryptoRng>(
    pool: &Pool,
    me: &NodeSecrets,
    now: u64,
    _rng: &mut R,
) -> Output {
    let h = pool.notarized_height().next();
    let (Some(epoch), Some(beacon)) = (epoch_for_round(pool, h), pool.beacon(h.prev())) else {
        return Output::default();
    };
    let Some(rank) = rank_of(epoch, &beacon.hash(), me.node_id) else {
        return Output::default();
    };
    let mine = pool
        .proposals_at(h)
        .any(|(_, p)| p.block.maker == me.node_id);
    let disqualified = crate::notary::disqualified_ranks(pool, h);
    let lower = pool
        .proposals_at(h)
        .any(|(_, p)| p.block.rank < rank && !disqualified.contains(&p.block.rank));
    let Some(start) = pool.round_start(h) else {
        return Output::default();
    };
    if mine || lower {
        return Output::default();
    }
    let due = start + block_maker_delay(epoch, rank);
    if now < due {
        return Output::wake(due);
    }
    let Some((parent_hash, parent)) = choose_parent(pool, h.prev()) else {
        return Output::default();
    };
    let block = Block {
        parent: parent_hash,
        height: h,
        rank: Rank(rank.0),
        maker: me.node_id,
        time_ms: now.max(parent.time_ms),
        payload: payload::build(pool, parent_hash, parent, h),
    };
    let signature = me
        .signing
        .sign(&BlockProposal::signed_content(&block.hash()));
    Output::from(vec![Mutation::AddToValidated(
        ConsensusMessage::BlockProposal(Box::new(BlockProposal { block, signature })),
    )])
}
