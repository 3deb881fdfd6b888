//! The driver loop of one replica. Everything the core decides is written to the store before
//! the pool changes and before anything is sent, so a replica killed at any instant restarts
//! with all it signed (no double signing) and all it finalized.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use thicket_consensus::Consensus;
use thicket_consensus::delivery::{HashChainState, deliverable, ordered_ids};
use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::membership::{epoch_for_round, finalized_summary, summary_height_for_round};
use thicket_consensus::pool::{Mutation, Pool, relayed};
use thicket_store::{ArtifactStore, StoreError, batch_for, restore};
use thicket_types::artifacts::{CatchUpContent, ConsensusMessage};
use thicket_types::{CryptoHash, Height};
use tokio::sync::{mpsc, watch};

use crate::metrics::{KindLabel, Metrics};
use crate::transport::{Inbound, MAX_FETCH, Peers};

/// How often a replica compares notes with its peers: fetches the chain from one that is ahead
/// and, when it made no progress since last time, re-sends its own open artifacts.
pub const RETRANSMIT_INTERVAL: Duration = Duration::from_millis(1000);

/// Longest sleep without looking at the pool: bounds the delay of a wake-up a role asked for
/// while an inbound artifact was being processed.
const MAX_IDLE: Duration = Duration::from_millis(100);

/// Most unvalidated artifacts kept: far more than honest peers send between two validations
/// (a few per peer and height), so only a flooding peer hits it; beyond it arrivals are dropped
/// and counted, and honest ones come back through retransmission.
pub const MAX_UNVALIDATED: usize = 50_000;

/// Enough rounds for one arrival to ripple through every role; a bound, not a tuning knob.
const MAX_ITERATIONS: usize = 64;

/// Milliseconds since the UNIX epoch: the IC's block time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Driver<S> {
    consensus: Consensus,
    pool: Pool,
    store: S,
    state: HashChainState,
    rng: ChaCha20Rng,
    peers: Peers,
    inbox: mpsc::Receiver<Inbound>,
    /// Shared with the transport, which reports it to peers.
    finalized: Arc<AtomicU64>,
    wake: Option<u64>,
    last_retransmit: Height,
    metrics: Arc<Metrics>,
}

impl<S: ArtifactStore> Driver<S> {
    /// A driver whose pool is restored from `store` (or starts at `genesis`).
    pub fn new(
        secrets: NodeSecrets,
        genesis: &CatchUpContent,
        mut store: S,
        peers: Peers,
        inbox: mpsc::Receiver<Inbound>,
        finalized: Arc<AtomicU64>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let pool = restore(&mut store, genesis)?;
        let mut state = HashChainState::default();
        state.sync_to(pool.root());
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        Ok(Driver {
            consensus: Consensus::new(secrets),
            pool,
            store,
            state,
            rng: ChaCha20Rng::from_seed(seed),
            peers,
            inbox,
            finalized,
            wake: None,
            last_retransmit: Height(0),
            metrics,
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs until `shutdown` flips or the transport goes away. A storage error stops the
    /// replica: it must not go on without what it signed being on disk.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<Self, StoreError> {
        let mut retransmit = tokio::time::interval(RETRANSMIT_INTERVAL);
        loop {
            let now = now_ms();
            let idle = self
                .wake
                .map_or(MAX_IDLE, |w| Duration::from_millis(w.saturating_sub(now)))
                .min(MAX_IDLE);
            tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = tokio::time::sleep(idle) => {}
                _ = retransmit.tick() => self.retransmit().await,
                _ = shutdown.changed() => break,
            }
            self.step(now_ms())?;
        }
        Ok(self)
    }

    fn handle(&mut self, msg: Inbound) {
        match msg {
            Inbound::Artifacts(list) => {
                for (id, m) in list {
                    let kind = KindLabel {
                        kind: format!("{:?}", m.kind()),
                    };
                    self.metrics.artifacts_received.get_or_create(&kind).inc();
                    self.pool.insert_unvalidated_with_id(id, m);
                }
            }
            Inbound::Fetch { from, limit, reply } => {
                let _ = reply.send(self.pool.catch_up_for(from.prev(), limit));
            }
        }
    }

    /// Runs the roles until nothing changes.
    pub fn step(&mut self, now: u64) -> Result<(), StoreError> {
        for _ in 0..MAX_ITERATIONS {
            let out = self
                .consensus
                .on_state_change(&self.pool, now, &mut self.rng, &self.state);
            self.wake = out.wake_at;
            if out.mutations.is_empty() {
                break;
            }
            self.store.write(&batch_for(&self.pool, &out.mutations))?;
            let applied = self.pool.apply(out.mutations, now);
            for (kind, reason) in &applied.invalid {
                tracing::debug!(?kind, %reason, "invalid artifact");
                self.metrics
                    .artifacts_invalid
                    .get_or_create(&KindLabel {
                        kind: format!("{kind:?}"),
                    })
                    .inc();
            }
            let mut outgoing = applied.to_gossip;
            outgoing.extend(applied.to_relay.into_iter().filter(relayed));
            self.peers.push(&outgoing, self.pool.finalized_height().0);
            self.deliver()?;
        }
        self.finalized
            .store(self.pool.finalized_height().0, Ordering::Relaxed);
        self.learn_peers();
        self.report();
        Ok(())
    }

    /// Peers come from the registry: the members in force and those about to join.
    fn learn_peers(&mut self) {
        let round = self.pool.finalized_height().next();
        let summary = finalized_summary(&self.pool, summary_height_for_round(&self.pool, round));
        let me = self.consensus.node_id();
        let named: Vec<_> = summary
            .into_iter()
            .flat_map(|s| [&s.current.registry, &s.pending])
            .flat_map(|r| r.members.values())
            .filter(|r| r.node_id != me)
            .map(|r| (r.node_id, r.p2p_url.clone()))
            .collect();
        self.peers.learn(&named);
    }

    fn report(&self) {
        let m = &self.metrics;
        let gauge = |h: Height| i64::try_from(h.0).unwrap_or(i64::MAX);
        m.finalized_height.set(gauge(self.pool.finalized_height()));
        m.notarized_height.set(gauge(self.pool.notarized_height()));
        m.executed_height.set(gauge(self.state.executed));
        let round = self.pool.finalized_height().next();
        m.dkg_epoch
            .set(gauge(summary_height_for_round(&self.pool, round)));
        if let Ok(peers) = self.peers.finalized.lock() {
            m.peers_connected.set(peers.len() as i64);
        }
        if let (Ok(mut status), Some(epoch)) = (m.status.lock(), epoch_for_round(&self.pool, round))
        {
            status.root_height = self.pool.root_height().0;
            status.registry_version = epoch.registry.version;
            status.members = epoch.registry.members.keys().map(|n| n.0).collect();
            status.subnet_public_key = epoch.high.coefficients().public_key().to_der();
            status.subnet_id = epoch.registry.subnet_id.to_string();
        }
    }

    fn deliver(&mut self) -> Result<(), StoreError> {
        if self.pool.root_height() > self.state.executed {
            self.state.sync_to(self.pool.root());
        }
        let mut ordered: Vec<CryptoHash> = Vec::new();
        let blocks: Vec<_> = deliverable(&self.pool, self.state.executed)
            .into_iter()
            .map(|(h, b)| (h, b.clone()))
            .collect();
        for (hash, block) in blocks {
            self.state.execute(&hash, &block);
            self.metrics.blocks_finalized.inc();
            ordered.extend(ordered_ids(&block));
            tracing::debug!(height = block.height.0, block.hash = %hash, "delivered");
        }
        if !ordered.is_empty() {
            let mutations: Vec<_> = ordered.into_iter().map(Mutation::RemoveOrdered).collect();
            self.store.write(&batch_for(&self.pool, &mutations))?;
            self.pool.apply(mutations, 0);
        }
        Ok(())
    }

    async fn retransmit(&mut self) {
        let me = self.pool.finalized_height();
        let ahead = self.peers.finalized.lock().ok().and_then(|h| {
            h.iter()
                .filter(|(_, f)| **f > me.0)
                .max_by_key(|(_, f)| **f)
                .map(|(id, _)| *id)
        });
        if let Some(peer) = ahead {
            for (id, m) in self.peers.fetch(peer, me.next()).await {
                self.pool.insert_unvalidated_with_id(id, m);
            }
        }
        if me == self.last_retransmit {
            let own: Vec<ConsensusMessage> = self.pool.open_artifacts(self.consensus.node_id());
            for chunk in own.chunks(MAX_FETCH) {
                self.peers.push(chunk, me.0);
            }
        }
        self.last_retransmit = me;
    }
}
