//! Catch-up packages: once a summary block is finalized and executed, members sign (high
//! threshold, the subnet key) its block, the beacon at its height and the resulting state hash.
//! The combined CUP becomes the pool's new root: everything below is purged, and a replica that
//! is behind (or new) starts from it and fetches the state instead of replaying blocks.

use thicket_crypto::threshold;
use thicket_types::artifacts::{CatchUpContent, Certified, ConsensusMessage, Share, SignedContent};
use thicket_types::{CryptoHash, Height};

use crate::keys::{KeyStore, NodeSecrets};
use crate::membership::{epoch_for_round, finalized_summary, interval_length};
use crate::pool::{Mutation, Pool};

/// What consensus needs from execution.
pub trait StateReader {
    /// The certified state hash after `height` was executed (needed at summary heights only).
    fn state_hash(&self, height: Height) -> Option<CryptoHash>;
    /// The last height whose state is present; below the pool's root while a state sync runs.
    fn executed_height(&self) -> Height;
}

/// The latest finalized summary height above the root, if any.
fn latest_summary(pool: &Pool) -> Option<Height> {
    let l = interval_length(pool);
    let s = Height(pool.finalized_height().0 / l * l);
    (s > pool.root_height() && finalized_summary(pool, s).is_some()).then_some(s)
}

fn content(pool: &Pool, s: Height, state: &dyn StateReader) -> Option<CatchUpContent> {
    Some(CatchUpContent {
        block: pool.finalized_block(s)?.clone(),
        beacon: pool.beacon(s)?.clone(),
        state_hash: state.state_hash(s)?,
    })
}

pub fn make_share(
    pool: &Pool,
    me: &NodeSecrets,
    keys: &KeyStore,
    state: &dyn StateReader,
) -> Vec<Mutation> {
    let Some(s) = latest_summary(pool) else {
        return vec![];
    };
    if pool.cup_shares(s).any(|x| x.signer == me.node_id) {
        return vec![];
    }
    let (Some(epoch), Some(content)) = (epoch_for_round(pool, s), content(pool, s, state)) else {
        return vec![];
    };
    let Some(share) = keys.share(&epoch.high) else {
        return vec![];
    };
    let c = content.share_content();
    vec![Mutation::AddToValidated(ConsensusMessage::CatchUpShare(
        Share {
            signature: threshold::sign_share(share, &c.signing_bytes()),
            content: c,
            signer: me.node_id,
        },
    ))]
}

pub fn aggregate(pool: &Pool, state: &dyn StateReader) -> Vec<Mutation> {
    let Some(s) = latest_summary(pool) else {
        return vec![];
    };
    if pool
        .latest_cup()
        .is_some_and(|c| c.content.block.height >= s)
    {
        return vec![];
    }
    let Some(epoch) = epoch_for_round(pool, s) else {
        return vec![];
    };
    // Building the content hashes the whole summary block: only once enough shares are here.
    if pool.cup_shares(s).count() < epoch.high.threshold() {
        return vec![];
    }
    let Some(content) = content(pool, s, state) else {
        return vec![];
    };
    let expected = content.share_content();
    let shares: Vec<_> = pool
        .cup_shares(s)
        .filter(|x| x.content == expected)
        .filter_map(|x| Some((epoch.registry.index_of(x.signer)?, x.signature)))
        .collect();
    match threshold::combine(&shares, epoch.high.threshold()) {
        Ok(signature) => vec![Mutation::AddToValidated(ConsensusMessage::CatchUpPackage(
            Box::new(Certified { content, signature }),
        ))],
        Err(_) => vec![],
    }
}

/// Adopts the latest validated CUP as root once this replica executed its height, or at once if
/// the replica is behind it (the driver then syncs the state the CUP names). A replica still
/// syncing the state of its root moves on to a newer CUP: the blocks between the two may be
/// purged before the older sync completes, while the newer state is all it needs.
pub fn adopt(pool: &Pool, state: &dyn StateReader) -> Vec<Mutation> {
    let Some(cup) = pool.latest_cup() else {
        return vec![];
    };
    let h = cup.content.block.height;
    if h <= pool.root_height() {
        return vec![];
    }
    let syncing = state.executed_height() < pool.root_height();
    if state.state_hash(h).is_some() || pool.finalized_height() < h || syncing {
        return vec![Mutation::AdoptCatchUpPackage(Box::new(cup.clone()))];
    }
    vec![]
}
