//! The IC consensus protocol as a pure, synchronous state machine.
//!
//! Each role reads the artifact [`pool::Pool`] and returns [`pool::Mutation`]s; it applies
//! nothing itself. The replica core (`thicket-core`, which the daemon and the simulator both
//! run) feeds in artifacts from peers, calls [`Consensus::on_state_change`] with the current time, applies the mutations,
//! gossips what they produced, delivers finalized blocks in order and wakes the roles again at
//! the time they ask for. No I/O, no clock, no threads: time and randomness are inputs, and
//! iteration order is deterministic, so the same inputs give the same outputs.
//!
//! # Layout
//! - [`pool`]: validated/unvalidated artifacts and the mutations that change them;
//! - [`membership`]: epochs, ranking, thresholds, the IC delay functions;
//! - roles: [`validator`], [`beacon`], [`block_maker`], [`notary`], [`finalizer`],
//!   [`aggregator`], [`dkg`], [`catch_up`]; [`payload`] builds and checks block payloads and
//!   DKG summaries; [`keys`] holds a node's secrets and derived threshold shares.
//!
//! ```text
//!  peers ─► pool.unvalidated ─► validator ─► pool.validated ─┬─► beacon / block maker / notary
//!                                                             ├─► finalizer / aggregator
//!                                                             ├─► dkg dealer + complainer
//!                                                             └─► catch-up maker ─► new root
//!  mutations ─► driver applies ─► gossip new artifacts; deliver finalized blocks
//! ```
//!
//! # Properties
//! Safety (≤ f Byzantine of n ≥ 3f+1): at most one block is finalized per height (see
//! [`finalizer`]), and all honest replicas deliver the same finalized chain. Liveness (partial
//! synchrony): after the network stabilizes, some honest block maker's block is notarized and
//! finalized in every round (see [`notary`] and [`block_maker`]).

pub mod aggregator;
pub mod beacon;
pub mod block_maker;
pub mod catch_up;
pub mod delivery;
pub mod dkg;
pub mod finalizer;
pub mod genesis;
pub mod keys;
pub mod membership;
pub mod notary;
pub mod payload;
pub mod pool;
pub mod purger;
pub mod validator;

use std::collections::BTreeSet;

use thicket_types::block::DkgId;
use thicket_types::{Height, NodeId};

pub use catch_up::StateReader;
pub use delivery::deliverable;
use keys::{KeyStore, NodeSecrets};
use membership::{finalized_summary, interval_length};
use pool::{Mutation, Pool};

/// What one call of the roles produced.
#[derive(Debug, Default)]
pub struct Output {
    pub mutations: Vec<Mutation>,
    /// The earliest time a role wants to be called again even if nothing arrives.
    pub wake_at: Option<u64>,
}

impl Output {
    pub fn wake(at: u64) -> Self {
        Output {
            mutations: vec![],
            wake_at: Some(at),
        }
    }

    fn merge(&mut self, other: Output) {
        self.mutations.extend(other.mutations);
        self.wake_at = match (self.wake_at, other.wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl From<Vec<Mutation>> for Output {
    fn from(mutations: Vec<Mutation>) -> Self {
        Output {
            mutations,
            wake_at: None,
        }
    }
}

/// One replica's consensus: its secrets and the roles.
pub struct Consensus {
    me: NodeSecrets,
    keys: KeyStore,
    checked_dealings: BTreeSet<(DkgId, NodeId)>,
    purged_below: Height,
    /// (root height, finalized height) when keys were last refreshed.
    keys_at: Option<(Height, Height)>,
}

impl Consensus {
    pub fn new(me: NodeSecrets) -> Self {
        Consensus {
            me,
            keys: KeyStore::default(),
            checked_dealings: BTreeSet::new(),
            purged_below: Height(0),
            keys_at: None,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.me.node_id
    }

    pub fn secrets(&self) -> &NodeSecrets {
        &self.me
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Runs every role once over the pool.
    pub fn on_state_change<R: rand_core::RngCore + rand_core::CryptoRng>(
        &mut self,
        pool: &Pool,
        now: u64,
        rng: &mut R,
        state: &dyn StateReader,
    ) -> Output {
        self.refresh_keys(pool);
        let me = &self.me;
        let mut out = Output::from(validator::validate(pool, now));
        out.mutations.extend(finalizer::finalize(pool, me));
        out.mutations.extend(aggregator::aggregate(pool));
        out.mutations.extend(beacon::aggregate(pool));
        out.mutations
            .extend(beacon::make_share(pool, me, &self.keys));
        out.merge(notary::notarize(pool, me, now));
        out.merge(block_maker::make_block(pool, me, now, rng));
        out.mutations
            .extend(dkg::make_dealings(pool, me, &self.keys, rng));
        out.mutations.extend(dkg::make_complaints(
            pool,
            me,
            &mut self.checked_dealings,
            rng,
        ));
        out.mutations
            .extend(catch_up::make_share(pool, me, &self.keys, state));
        out.mutations.extend(catch_up::aggregate(pool, state));
        out.mutations.extend(catch_up::adopt(pool, state));
        out.mutations
            .extend(purger::purge(pool, &mut self.purged_below));
        out
    }

    /// Derives threshold shares for the epochs in force or announced.
    fn refresh_keys(&mut self, pool: &Pool) {
        let at = (pool.root_height(), pool.finalized_height());
        if self.keys_at == Some(at) {
            return;
        }
        self.keys_at = Some(at);
        let root = pool.root_summary();
        let mut epochs = vec![&root.current, &root.next];
        let l = interval_length(pool);
        let mut s = Height(pool.root_height().0 + l);
        while s <= pool.finalized_height() {
            if let Some(summary) = finalized_summary(pool, s) {
                epochs.push(&summary.current);
                epochs.push(&summary.next);
            }
            s = Height(s.0 + l);
        }
        for e in &epochs {
            self.keys.load_epoch(e, &self.me);
        }
        self.keys.retain(&epochs);
    }
}

#[cfg(test)]
mod tests;
