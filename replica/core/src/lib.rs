//! The replica core: everything a replica decides, as one synchronous state machine that the
//! replica daemon (`thicket-replica`) and the simulator (`thicket-sim`) both run. Events go in,
//! commands come out, in the shape of raft-rs's `Ready`: [`Core::step`] takes an [`Event`] and
//! the current time and returns a [`Ready`] saying what to persist, send, execute, sync and
//! publish, and when to wake it up. The core performs no I/O and reads no clock: time and
//! randomness are inputs, so the same inputs give the same outputs, and the simulator's seeds
//! test the very code the daemon runs.
//!
//! # Layout
//! - this file: [`Core`], its events and commands, and the step loop (the consensus roles run
//!   until nothing changes; each round's mutations become store operations before the pool
//!   changes; finalized blocks are handed out in height order);
//! - [`admission`]: what enters the pool from peers and clients (bounds, expiry);
//! - [`certification`]: state certification as a pure role (sign, collect, combine, accept);
//! - [`membership`]: the peers the registry names, and whether this node was removed;
//! - [`conduct`]: the hook through which the simulator's Byzantine replicas rewrite what they
//!   do and send (the daemon runs [`conduct::Honest`]);
//! - `tests.rs`: exact-output tests of each event.
//!
//! ```text
//!  peers, clients, timers, the shell's execution results
//!        │ Event
//!        ▼
//!  Core::step ─► roles (thicket-consensus) ─► mutations ─► store batch ─► pool.apply
//!        │                                                                    │
//!        ▼ Ready                                                              ▼
//!  persist (before anything is sent) · send · deliver (execute in order, then Event::Executed)
//!  sync (state from peers, then Event::Synced) · certified · fetch · peers · wake_at
//! ```
//!
//! # The shell's contract
//! Write [`Ready::persist`] durably before sending anything of [`Ready::send`] (a replica
//! killed at any instant then restarts with all it signed, so it never signs twice); execute
//! [`Ready::deliver`] in order and report it with [`Event::Executed`]; halt if the store fails.

pub mod admission;
pub mod certification;
pub mod conduct;
pub mod membership;

use std::collections::BTreeSet;

use rand_chacha::ChaCha20Rng;
use thicket_consensus::delivery::{deliverable, ordered_ids};
use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::pool::{Mutation, Pool, relayed};
use thicket_consensus::{Consensus, StateReader};
use thicket_store::{Batch, batch_for};
use thicket_types::artifacts::{ArtifactKind, CatchUpContent, Certification, ConsensusMessage};
use thicket_types::block::Block;
use thicket_types::registry::NodeRecord;
use thicket_types::{CryptoHash, Height, NodeId};

use certification::Certifier;
use conduct::{Conduct, Context, Honest};

/// Enough rounds for one arrival to ripple through every role; a bound, not a tuning knob.
const MAX_ITERATIONS: usize = 64;

/// Heights within this distance of the finalized tip are certified as they execute; below it
/// a replica is catching up, and a newer certification will supersede them anyway.
pub const CERTIFY_WITHIN: u64 = 8;

/// Most artifacts answered per fetch: a few heights' worth, so that one answer fits a
/// message and a peer far behind comes back for more.
pub const MAX_FETCH: usize = 200;

/// Pause after a failed state sync before the next attempt (peers may not have the checkpoint
/// of a brand-new catch-up package yet).
pub const SYNC_RETRY_MS: u64 = 2_000;

/// How long a replica recovering from a lost store waits before proposing at a height where
/// it may have proposed before: three of its peers' retransmission rounds (one second each in
/// the daemon and the simulator), which bring back the block it proposed, if any.
pub const RECOVERY_PROPOSAL_DELAY_MS: u64 = 3_000;

/// What happens to a replica.
#[derive(Debug)]
pub enum Event {
    /// Time passed: a wake-up the core asked for, or the shell's idle timer.
    Tick,
    /// Artifacts from peers, with the ids the transport already computed.
    Artifacts(Vec<(CryptoHash, ConsensusMessage)>),
    /// The shell executed delivered blocks, in height order.
    Executed(Vec<Executed>),
    /// The periodic comparison with peers, with the finalized heights they last reported.
    Retransmit { peers: Vec<(NodeId, Height)> },
    /// The state sync [`Ready::sync`] asked for ended: installed (`ok`) or given up.
    Synced { height: Height, ok: bool },
}

/// One executed block, as the shell reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub height: Height,
    /// The root hash of the certified state after this height, if the delivery asked for it.
    pub certify: Option<CryptoHash>,
}

/// A finalized block to execute.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub hash: CryptoHash,
    pub block: Block,
    /// Whether to certify the state after it (report its root in [`Executed::certify`]).
    pub certify: bool,
}

/// Who gets a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum To {
    All,
    Nodes(BTreeSet<NodeId>),
}

/// What the shell does after a step, in this order: persist, send, deliver, the rest.
#[derive(Debug, Default)]
pub struct Ready {
    /// Store operations to write atomically and durably before anything is sent.
    pub persist: Batch,
    pub send: Vec<(To, ConsensusMessage)>,
    /// Finalized blocks to execute, in height order.
    pub deliver: Vec<Delivery>,
    /// Fetch the state this catch-up package certifies from peers, then send
    /// [`Event::Synced`].
    pub sync: Option<CatchUpContent>,
    /// Heights whose state the subnet certified (combined here or received), oldest first.
    pub certified: Vec<Certification>,
    /// Ask this peer for what it has from this height on ([`Core::serve_fetch`] answers).
    pub fetch: Option<(NodeId, Height)>,
    /// The registry's members (in force, announced, or added by an ordered change), when the
    /// finalized height moved: whom to connect to, and whose node keys to accept.
    pub peers: Option<Vec<NodeRecord>>,
    /// This node was removed from the subnet and the epoch without it is in force: stop.
    pub removed: bool,
    /// Artifacts found invalid (dropped), by kind and reason.
    pub invalid: Vec<(ArtifactKind, String)>,
    /// Artifacts refused on arrival because a bound was reached.
    pub dropped: u64,
    /// The earliest time the core wants a [`Event::Tick`] even if nothing arrives.
    pub wake_at: Option<u64>,
}

impl Ready {
    fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// One replica: its consensus roles, pool, certification and bookkeeping.
pub struct Core<C: Conduct = Honest> {
    consensus: Consensus,
    pool: Pool,
    rng: ChaCha20Rng,
    conduct: C,
    certifier: Certifier,
    membership: membership::Tracker,
    /// The last height handed out for execution.
    delivered: Height,
    /// The state sync under way (its target height), and when the last one failed.
    syncing: Option<Height>,
    sync_failed_at: Option<u64>,
    /// The finalized height at the last retransmission (unchanged: this replica is stuck).
    last_retransmit: Height,
    /// Messages queued outside a step (ingress accepted from clients), sent with the next.
    outbox: Vec<(To, ConsensusMessage)>,
    /// After losing its store: the highest height peers had notarized (see [`Core::recovering`]),
    /// and when this core first ran.
    recovered_at: Option<Height>,
    started_at: Option<u64>,
}

impl Core<Honest> {
    /// An honest replica over `pool` (restored from its store, or fresh at genesis), whose
    /// state has executed up to `executed`.
    pub fn new(secrets: NodeSecrets, pool: Pool, rng: ChaCha20Rng, executed: Height) -> Self {
        Core::with_conduct(secrets, pool, rng, executed, Honest)
    }
}

impl<C: Conduct> Core<C> {
    pub fn with_conduct(
        secrets: NodeSecrets,
        pool: Pool,
        rng: ChaCha20Rng,
        executed: Height,
        conduct: C,
    ) -> Self {
        let finalized = pool.finalized_height();
        Core {
            consensus: Consensus::new(secrets),
            pool,
            rng,
            conduct,
            certifier: Certifier::default(),
            membership: membership::Tracker::default(),
            delivered: executed,
            syncing: None,
            sync_failed_at: None,
            last_retransmit: finalized,
            outbox: Vec::new(),
            recovered_at: None,
            started_at: None,
        }
    }

    /// A replica that lost its store (but kept its keys) and restarts from a catch-up package
    /// no longer knows what it signed. `peers_notarized` is the highest height its peers had
    /// notarized when it came back: a replica signs at most one height beyond what it saw
    /// notarized, so if every notarization it saw reached a peer, it signed nothing above that
    /// height plus one. It then signs no notarization share up to that height (all notarized
    /// already: nothing waits for it) and no finalization share up to one beyond (a later
    /// finalization finalizes those heights too), and the finalizer's rule (never finalization
    /// and notarization shares for different blocks at one height) holds across the loss. What
    /// only it saw (a notarization it combined and lost before sending) it cannot account for:
    /// a replica that lost its store counts as one of the f faulty ones, and the simulator's
    /// campaign counts the rule broken that way apart. It may also have proposed a block at the
    /// height after, which peers re-send while they wait on it; so it proposes there only after
    /// [`RECOVERY_PROPOSAL_DELAY_MS`] (a second block from one maker disqualifies its rank,
    /// which costs liveness, never safety).
    pub fn recovering(mut self, peers_notarized: Height) -> Self {
        self.recovered_at = Some(peers_notarized);
        self
    }

    /// Whether a share this replica made may leave it (see [`Core::recovering`]); if not yet,
    /// when to look again.
    fn may_sign(&self, m: &Mutation, now: u64, ready: &mut Ready) -> bool {
        let Some(floor) = self.recovered_at else {
            return true;
        };
        match m {
            Mutation::AddToValidated(ConsensusMessage::BlockProposal(p))
                if p.block.height <= floor.next() =>
            {
                let at = self.started_at.unwrap_or(now) + RECOVERY_PROPOSAL_DELAY_MS;
                ready.wake(at);
                now >= at
            }
            Mutation::AddToValidated(ConsensusMessage::NotarizationShare(s)) => {
                s.content.height > floor
            }
            Mutation::AddToValidated(ConsensusMessage::FinalizationShare(s)) => {
                s.content.height > floor.next()
            }
            _ => true,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.consensus.node_id()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    pub fn certified_height(&self) -> Height {
        self.certifier.certified_height()
    }

    pub fn syncing(&self) -> Option<Height> {
        self.syncing
    }

    pub fn removed(&self) -> bool {
        self.membership.removed()
    }

    /// Handles one event at time `now` (milliseconds) and runs the roles until nothing
    /// changes. `state` is the shell's executed state (consensus reads state hashes from it
    /// for catch-up packages).
    pub fn step(&mut self, event: Event, now: u64, state: &dyn StateReader) -> Ready {
        let mut ready = Ready {
            send: std::mem::take(&mut self.outbox),
            ..Ready::default()
        };
        self.started_at.get_or_insert(now);
        match event {
            Event::Tick => {}
            Event::Artifacts(list) => self.receive(list, state, &mut ready),
            Event::Executed(done) => self.certify(&done, state, &mut ready),
            Event::Retransmit { peers } => self.retransmit(&peers, now, &mut ready),
            Event::Synced { height, ok } => {
                if self.syncing == Some(height) {
                    self.syncing = None;
                }
                self.sync_failed_at = (!ok).then_some(now);
            }
        }
        self.run_roles(now, state, &mut ready);
        // Also when no role changed anything: a state sync that just finished, or blocks
        // executed, may let finalized blocks above them go out now.
        self.deliver(state, &mut ready);
        self.aggregate_certification(&mut ready);
        self.start_sync(now, state, &mut ready);
        self.membership
            .track(&self.pool, self.node_id(), &mut ready);
        ready
    }

    /// The roles, round after round, until a round changes nothing.
    fn run_roles(&mut self, now: u64, state: &dyn StateReader, ready: &mut Ready) {
        for _ in 0..MAX_ITERATIONS {
            let out = self
                .consensus
                .on_state_change(&self.pool, now, &mut self.rng, state);
            if let Some(w) = out.wake_at {
                ready.wake(w);
            }
            let mut mutations = out.mutations;
            mutations.retain(|m| self.may_sign(m, now, ready));
            if mutations.is_empty() {
                break;
            }
            let cx = Context {
                pool: &self.pool,
                secrets: self.consensus.secrets(),
            };
            let (mutations, extra) = self.conduct.rewrite(&cx, mutations);
            // On disk before the pool changes and before anything is sent.
            ready.persist.extend(batch_for(&self.pool, &mutations));
            let applied = self.pool.apply(mutations, now);
            ready.invalid.extend(applied.invalid);
            let cx = Context {
                pool: &self.pool,
                secrets: self.consensus.secrets(),
            };
            for msg in applied.to_gossip {
                ready.send.extend(self.conduct.send(&cx, msg));
            }
            ready.send.extend(extra);
            if self.conduct.relays() {
                let relay = applied.to_relay.into_iter().filter(relayed);
                ready.send.extend(relay.map(|m| (To::All, m)));
            }
            self.deliver(state, ready);
        }
    }

    /// Hands out the finalized blocks above the last delivered one, once the state has
    /// reached the pool's root (below it, the state must be synced first). What they ordered
    /// leaves the waiting set at once, so no block maker proposes it again.
    fn deliver(&mut self, state: &dyn StateReader, ready: &mut Ready) {
        self.delivered = self.delivered.max(state.executed_height());
        if self.pool.root_height() > self.delivered {
            return;
        }
        let tip = self.pool.finalized_height();
        let blocks: Vec<Delivery> = deliverable(&self.pool, self.delivered)
            .into_iter()
            .map(|(hash, b)| Delivery {
                hash,
                block: b.clone(),
                certify: b.height.0 + CERTIFY_WITHIN >= tip.0,
            })
            .collect();
        let Some(last) = blocks.last() else { return };
        self.delivered = last.block.height;
        let ordered: Vec<Mutation> = blocks
            .iter()
            .flat_map(|d| ordered_ids(&d.block))
            .map(Mutation::RemoveOrdered)
            .collect();
        if !ordered.is_empty() {
            ready.persist.extend(batch_for(&self.pool, &ordered));
            self.pool.apply(ordered, 0);
        }
        ready.deliver.extend(blocks);
    }

    /// Asks for a state sync when execution is below the pool's root.
    fn start_sync(&mut self, now: u64, state: &dyn StateReader, ready: &mut Ready) {
        let root = self.pool.root();
        let target = root.block.height;
        if state.executed_height() >= target || self.syncing == Some(target) {
            return;
        }
        if let Some(failed) = self.sync_failed_at {
            if now < failed + SYNC_RETRY_MS {
                ready.wake(failed + SYNC_RETRY_MS);
                return;
            }
        }
        self.syncing = Some(target);
        ready.sync = Some(root.clone());
    }

    /// Fetches from a random peer that says it is ahead (one lying about its height cannot
    /// monopolize this); sends this replica's uncertified shares again; and when the finalized
    /// height has not moved since last time, its own artifacts of the open heights (peers may
    /// have lost them). Expired ingress leaves the pool.
    fn retransmit(&mut self, peers: &[(NodeId, Height)], now: u64, ready: &mut Ready) {
        use rand_core::RngCore;
        let me = self.pool.finalized_height();
        let ahead: Vec<NodeId> = peers
            .iter()
            .filter(|(_, h)| *h > me)
            .map(|(id, _)| *id)
            .collect();
        if !ahead.is_empty() {
            let peer = ahead[(self.rng.next_u32() as usize) % ahead.len()];
            ready.fetch = Some((peer, me.next()));
        }
        let cx = Context {
            pool: &self.pool,
            secrets: self.consensus.secrets(),
        };
        let shares = self.certifier.own_shares(self.consensus.node_id());
        ready.send.extend(
            shares
                .into_iter()
                .map(|s| (To::All, ConsensusMessage::CertificationShare(s))),
        );
        if me == self.last_retransmit {
            let own = self.pool.open_artifacts(self.consensus.node_id());
            ready.send.extend(
                own.into_iter()
                    .map(|m| (To::All, self.conduct.disguise(&cx, m))),
            );
        }
        self.last_retransmit = me;
        let expired = admission::expired_ingress(&self.pool, now);
        if !expired.is_empty() {
            ready.persist.extend(batch_for(&self.pool, &expired));
            self.pool.apply(expired, now);
        }
    }

    /// What a peer that asked from `from` on lacks: a catch-up package if it is below our
    /// root, then the finalized chain (at most [`MAX_FETCH`] artifacts).
    pub fn serve_fetch(&self, from: Height, limit: usize) -> Vec<ConsensusMessage> {
        let cx = Context {
            pool: &self.pool,
            secrets: self.consensus.secrets(),
        };
        self.pool
            .catch_up_for(from.prev(), limit.clamp(1, MAX_FETCH))
            .into_iter()
            .map(|m| self.conduct.disguise(&cx, m))
            .collect()
    }
}

#[cfg(test)]
mod tests;
