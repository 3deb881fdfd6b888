//! What leaves consensus: finalized blocks, in height order, as batches for execution; and a
//! stand-in for execution that the simulator and the core's tests use, a hash chain over the
//! delivered blocks (the replica daemon executes with `thicket-execution`).

use std::collections::BTreeMap;

use thicket_types::artifacts::{CatchUpContent, ConsensusMessage};
use thicket_types::block::Block;
use thicket_types::{CryptoHash, Height, hash_of};

use crate::StateReader;
use crate::pool::Pool;

/// Finalized blocks after `delivered` with their hashes, in height order, as far as the chain
/// is contiguous.
pub fn deliverable(pool: &Pool, delivered: Height) -> Vec<(CryptoHash, &Block)> {
    let mut out = Vec::new();
    let mut h = delivered.next();
    while let (Some(hash), Some(b)) = (pool.finalized_hash(h), pool.finalized_block(h)) {
        out.push((*hash, b));
        h = h.next();
    }
    out
}

/// Ids of the waiting artifacts (ingress, registry changes) a delivered block ordered: they
/// leave the pool's waiting set.
pub fn ordered_ids(block: &Block) -> Vec<CryptoHash> {
    let Some(d) = block.data() else { return vec![] };
    let ingress = d
        .ingress
        .iter()
        .map(|i| ConsensusMessage::Ingress(i.clone()).id());
    let changes = d
        .registry_changes
        .iter()
        .map(|c| ConsensusMessage::RegistryChange(Box::new(c.clone())).id());
    ingress.chain(changes).collect()
}

/// The state after height h is hash(state after h−1, h, block hash): deterministic, so replicas
/// that execute the same chain agree, and small enough to "sync" from a catch-up package.
#[derive(Default, Clone)]
pub struct HashChainState {
    pub executed: Height,
    pub state: CryptoHash,
    recent: BTreeMap<Height, CryptoHash>,
}

/// State hashes kept for catch-up package signing: more than an interval's worth.
const RECENT_STATES: usize = 256;

impl StateReader for HashChainState {
    fn state_hash(&self, height: Height) -> Option<CryptoHash> {
        self.recent.get(&height).copied()
    }
    fn executed_height(&self) -> Height {
        self.executed
    }
}

impl HashChainState {
    pub fn execute(&mut self, hash: &CryptoHash, block: &Block) {
        self.state = hash_of(
            "thicket-hash-chain-state",
            &(self.state, block.height, hash),
        );
        self.executed = block.height;
        self.recent.insert(block.height, self.state);
        while self.recent.len() > RECENT_STATES {
            self.recent.pop_first();
        }
    }

    /// State sync: take the state a verified catch-up package certifies.
    pub fn sync_to(&mut self, root: &CatchUpContent) {
        self.state = root.state_hash;
        self.executed = root.block.height;
        self.recent.insert(self.executed, self.state);
    }
}
