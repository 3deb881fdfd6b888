//! The driver loop of one replica. Everything the core decides is written to the store before
//! the pool changes and before anything is sent, so a replica killed at any instant restarts
//! with all it signed (no double signing) and all it finalized.
//!
//! Finalized blocks go to the [`StateManager`] in height order. When the pool's root is a
//! catch-up package above the executed height (a new replica, or one far behind), the driver
//! syncs the state that CUP certifies from its peers in the background, installs it, and
//! executes on from there; consensus meanwhile goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use thicket_consensus::Consensus;
use thicket_consensus::StateReader;
use thicket_consensus::delivery::{deliverable, ordered_ids};
use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::membership::{
    epoch_for_round, finalized_summary, interval_length, summary_height_for_round,
};
use thicket_consensus::payload::IntervalChain;
use thicket_consensus::pool::{Mutation, Pool, relayed};
use thicket_crypto::threshold;
use thicket_execution::checkpoints::{CheckpointError, CheckpointStore};
use thicket_execution::manager::StateManager;
use thicket_state::SubnetState;
use thicket_state::machine::SubnetInfo;
use thicket_store::{ArtifactStore, StoreError, batch_for, restore};
use thicket_types::artifacts::{CatchUpContent, ConsensusMessage, Share};
use thicket_types::ingress::{PERMITTED_DRIFT_NS, SignedIngress};
use thicket_types::{CryptoHash, Height, NodeId};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::certifier::{Certifier, Published};
use crate::ingress::IngressLog;
use crate::metrics::{KindLabel, Metrics, PeerLabel};
use crate::sync::{Synced, fetch_state};
use crate::transport::{Inbound, MAX_FETCH, Peers};

/// Why a replica stops: it must not run on without what it signed, or its state, on disk.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Ingress messages waiting to be ordered beyond which new ones are refused (HTTP 503): about
/// a minute of blocks at the largest payloads.
pub const MAX_WAITING_INGRESS: usize = 100_000;

/// The same bound in bytes (messages may be up to 2 MiB each).
pub const MAX_WAITING_INGRESS_BYTES: usize = 256 * 1024 * 1024;

/// State shared between the driver and the servers in front of it.
#[derive(Clone, Default)]
pub struct Shared {
    /// The finalized height, which the transport reports to peers.
    pub finalized: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<IngressLog>,
    /// The newest certified state (for read_state, sync calls and queries).
    pub certified: Published,
}

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
    state: StateManager<SubnetState>,
    certifier: Certifier,
    /// Certification shares made since the last push.
    certification_out: Vec<ConsensusMessage>,
    rng: ChaCha20Rng,
    peers: Peers,
    inbox: mpsc::Receiver<Inbound>,
    shared: Shared,
    wake: Option<u64>,
    last_retransmit: Height,
    /// The state sync under way (its target height), and where its result arrives.
    syncing: Option<Height>,
    synced_tx: mpsc::Sender<(Height, Option<Synced>)>,
    synced_rx: mpsc::Receiver<(Height, Option<Synced>)>,
    /// When the finalized height last rose.
    last_finalized: (Height, std::time::Instant),
    /// Membership as last seen: whether this node was ever in the registry (in force or
    /// pending), and whether it has since been removed from both.
    was_member: bool,
    removed: bool,
    /// The finalized height at which peers were last learned from the registry.
    learned_at: Option<Height>,
    /// Ingress accepted over HTTP, to send to peers in one push.
    ingress_out: Vec<ConsensusMessage>,
    /// Background fetches from peers: their results, and whether one is under way.
    fetched_tx: mpsc::Sender<Inbound>,
    fetched_rx: mpsc::Receiver<Inbound>,
    fetching: Arc<std::sync::atomic::AtomicBool>,
    /// When the last state sync failed (the next waits a little).
    sync_failed_at: Option<std::time::Instant>,
    /// The notarized height last seen, and when each round since began (the height before it
    /// notarized): round duration and finalization latency are measured from there.
    last_notarized: Height,
    round_started: BTreeMap<Height, std::time::Instant>,
    /// The newest summary block whose DKG outcome the metrics counted.
    counted_summary: Height,
    /// Whether a finalization was seen since the start (the first one's block time would
    /// include the start-up).
    finalized_since_start: bool,
    /// Peers with a rate-limit counter.
    rate_labelled: BTreeSet<u64>,
}

/// Heights finalized at once beyond which a step is catching up, not timing blocks.
const MAX_TIMED_ROUNDS: u64 = 8;

/// Rounds whose start is remembered, at most (notarization runs only a little ahead of
/// finalization; a stall must not grow the map).
const MAX_OPEN_ROUNDS: usize = 1024;

/// Pause after a failed state sync before the next attempt.
const SYNC_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Heights within this distance of the finalized tip are certified as they execute.
const CERTIFY_WITHIN: u64 = 8;

/// Inbox messages handled before the roles run again.
const MAX_DRAIN: usize = 1024;

impl<S: ArtifactStore> Driver<S> {
    /// A driver whose pool is restored from `store` (or starts at `genesis`), and whose state
    /// is the checkpoint its root certifies (or is synced from peers).
    pub fn new(
        secrets: NodeSecrets,
        genesis: &CatchUpContent,
        mut store: S,
        checkpoints: CheckpointStore,
        peers: Peers,
        inbox: mpsc::Receiver<Inbound>,
        shared: Shared,
    ) -> Result<Self, DriverError> {
        let pool = restore(&mut store, genesis)?;
        let state = StateManager::open(checkpoints, pool.root())?;
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        let (synced_tx, synced_rx) = mpsc::channel(1);
        let (fetched_tx, fetched_rx) = mpsc::channel(4);
        let finalized = pool.finalized_height();
        let certifier = Certifier::new(shared.certified.clone());
        let mut driver = Driver {
            consensus: Consensus::new(secrets),
            pool,
            store,
            state,
            certifier,
            certification_out: Vec::new(),
            rng: ChaCha20Rng::from_seed(seed),
            peers,
            inbox,
            shared,
            wake: None,
            last_retransmit: Height(0),
            syncing: None,
            synced_tx,
            synced_rx,
            last_finalized: (finalized, std::time::Instant::now()),
            was_member: false,
            removed: false,
            learned_at: None,
            ingress_out: Vec::new(),
            fetched_tx,
            fetched_rx,
            fetching: Arc::default(),
            sync_failed_at: None,
            last_notarized: finalized,
            round_started: BTreeMap::new(),
            counted_summary: Height(0),
            finalized_since_start: false,
            rate_labelled: BTreeSet::new(),
        };
        driver.recount_summaries();
        Ok(driver)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn state(&self) -> &StateManager<SubnetState> {
        &self.state
    }

    /// True once a registry change removed this node and the epoch without it is in force:
    /// the driver then stops (the replica has nothing left to do in this subnet).
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// Runs until `shutdown` flips or the transport goes away. A storage error stops the
    /// replica: it must not go on without what it signed being on disk.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<Self, DriverError> {
        let mut retransmit = tokio::time::interval(RETRANSMIT_INTERVAL);
        loop {
            let now = now_ms();
            let idle = self
                .wake
                .map_or(MAX_IDLE, |w| Duration::from_millis(w.saturating_sub(now)))
                .min(MAX_IDLE);
            tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(m) => {
                        // Take what else is waiting too: one step (and one disk flush) for
                        // the lot.
                        self.handle(m);
                        for _ in 0..MAX_DRAIN {
                            match self.inbox.try_recv() {
                                Ok(m) => self.handle(m),
                                Err(_) => break,
                            }
                        }
                        self.gossip_ingress();
                    }
                    None => break,
                },
                _ = tokio::time::sleep(idle) => {}
                _ = retransmit.tick() => {
                    self.retransmit();
                    self.drop_expired_ingress(now)?;
                }
                Some((height, synced)) = self.synced_rx.recv() => self.install(height, synced)?,
                Some(m) = self.fetched_rx.recv() => self.handle(m),
                _ = shutdown.changed() => break,
            }
            self.step(now_ms())?;
            if self.removed {
                tracing::info!("this node was removed from the subnet's registry; stopping");
                break;
            }
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
                    let metrics = &self.shared.metrics;
                    metrics.artifacts_received.get_or_create(&kind).inc();
                    match m {
                        ConsensusMessage::CertificationShare(share) => {
                            // Shares of heights whose epoch is not known here yet are dropped;
                            // peers send them again.
                            if let Some(epoch) = epoch_for_round(&self.pool, share.content.height) {
                                self.certifier.add_share(
                                    share,
                                    self.state.executed_height(),
                                    epoch,
                                );
                            }
                            continue;
                        }
                        ConsensusMessage::Certification(c) => {
                            if let Some(epoch) = epoch_for_round(&self.pool, c.content.height) {
                                self.certifier.accept(&c, epoch);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    if matches!(m, ConsensusMessage::Ingress(_)) && self.ingress_full() {
                        metrics.artifacts_dropped.inc();
                        continue;
                    }
                    self.pool.insert_unvalidated_with_id(id, m);
                }
            }
            Inbound::Fetch { from, limit, reply } => {
                let _ = reply.send(self.pool.catch_up_for(from.prev(), limit));
            }
            Inbound::RequestSender { id, reply } => {
                let sender = self.state.machine().history().get(&id);
                let _ = reply.send(sender.map(|e| e.sender.clone()));
            }
            Inbound::Ingress { msg, reply } => {
                if self.ingress_full() {
                    let _ = reply.send(Err(format!(
                        "the ingress pool is full ({} messages, {} bytes waiting); retry later",
                        self.pool.waiting_len(),
                        self.pool.waiting_ingress_bytes()
                    )));
                    return;
                }
                // Every replica's block maker may include it: it goes to all peers with the
                // next batch.
                let m = ConsensusMessage::Ingress(msg.to_bytes());
                self.ingress_out.push(m.clone());
                self.pool.insert_unvalidated(m);
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Admission control for ingress, whatever its source.
    fn ingress_full(&self) -> bool {
        self.pool.waiting_len() >= MAX_WAITING_INGRESS
            || self.pool.waiting_ingress_bytes() >= MAX_WAITING_INGRESS_BYTES
    }

    fn gossip_ingress(&mut self) {
        if !self.ingress_out.is_empty() {
            let out = std::mem::take(&mut self.ingress_out);
            for chunk in out.chunks(MAX_FETCH) {
                self.peers.push(chunk, self.pool.finalized_height().0);
            }
        }
    }

    /// Runs the roles until nothing changes.
    pub fn step(&mut self, now: u64) -> Result<(), DriverError> {
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
                self.shared
                    .metrics
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
        let finalized = self.pool.finalized_height();
        self.shared.finalized.store(finalized.0, Ordering::Relaxed);
        self.time_rounds(finalized);
        if finalized > self.last_finalized.0 {
            self.last_finalized = (finalized, std::time::Instant::now());
            self.check_membership();
            self.count_summaries(finalized);
        }
        self.start_sync();
        let moved = self.learned_at != Some(finalized);
        if moved {
            self.learned_at = Some(finalized);
            self.learn_peers();
        }
        self.report(moved);
        Ok(())
    }

    /// Block time, round duration and finalization latency: a round starts when the height
    /// before it is notarized here, and ends when its own is notarized, then finalized.
    fn time_rounds(&mut self, finalized: Height) {
        let m = &self.shared.metrics;
        let now = std::time::Instant::now();
        let notarized = self.pool.notarized_height();
        if notarized > self.last_notarized {
            for (_, started) in self
                .round_started
                .range(self.last_notarized.next()..=notarized)
            {
                m.round_duration
                    .observe(now.duration_since(*started).as_secs_f64());
            }
            self.round_started.entry(notarized.next()).or_insert(now);
            self.last_notarized = notarized;
        }
        if finalized > self.last_finalized.0 {
            // Heights finalized together share the time since the last one; a replica
            // catching up (many at once) or just started says nothing about the pace.
            let rounds = finalized.0 - self.last_finalized.0.0;
            let elapsed = now.duration_since(self.last_finalized.1).as_secs_f64();
            if self.finalized_since_start && rounds <= MAX_TIMED_ROUNDS {
                for _ in 0..rounds {
                    m.block_time.observe(elapsed / rounds as f64);
                }
            }
            self.finalized_since_start = true;
            let open = self.round_started.split_off(&finalized.next());
            for (_, started) in std::mem::replace(&mut self.round_started, open)
                .range(self.last_finalized.0.next()..)
            {
                m.finalization_latency
                    .observe(now.duration_since(*started).as_secs_f64());
            }
        }
        while self.round_started.len() > MAX_OPEN_ROUNDS {
            self.round_started.pop_first();
        }
    }

    /// The DKG outcome of each summary block finalized since the last count: a new epoch; a
    /// reshare when its next epoch has another membership; a failure when that epoch's keys
    /// are the current ones again (too few dealings); a registry change still waiting.
    fn count_summaries(&mut self, finalized: Height) {
        let l = interval_length(&self.pool);
        let newest = summary_height_for_round(&self.pool, finalized.next());
        let mut s = Height(self.counted_summary.0 + l);
        while s <= newest {
            if let Some(summary) = finalized_summary(&self.pool, s) {
                let m = &self.shared.metrics;
                m.dkg_epochs.inc();
                if summary.next.registry.version != summary.current.registry.version {
                    m.dkg_reshares.inc();
                }
                if dkg_failed(summary) {
                    m.dkg_failures.inc();
                }
                self.counted_summary = s;
            }
            s = Height(s.0 + l);
        }
        self.recount_streaks();
    }

    /// At start: the summaries already finalized are not counted again (their counters began
    /// before the restart), but the streaks are rebuilt from them.
    fn recount_summaries(&mut self) {
        self.counted_summary =
            summary_height_for_round(&self.pool, self.pool.finalized_height().next());
        self.recount_streaks();
    }

    /// Consecutive failed DKGs, and summaries an ordered registry change has waited, from the
    /// newest finalized summary back (as far as the pool holds them).
    fn recount_streaks(&self) {
        let l = interval_length(&self.pool);
        let (mut failed, mut waiting) = (0i64, 0i64);
        let (mut failing, mut pending) = (true, true);
        let mut s = self.counted_summary;
        while let Some(summary) = finalized_summary(&self.pool, s).filter(|_| s.0 > 0) {
            failing &= dkg_failed(summary);
            pending &= summary.pending.version != summary.next.registry.version;
            failed += i64::from(failing);
            waiting += i64::from(pending);
            if !(failing || pending) || s.0 < l {
                break;
            }
            s = Height(s.0 - l);
        }
        let m = &self.shared.metrics;
        m.dkg_failed_intervals.set(failed);
        m.dkg_pending_change_epochs.set(waiting);
    }

    /// Starts syncing the root's state when execution is below the root.
    fn start_sync(&mut self) {
        let root = self.pool.root();
        let target = root.block.height;
        if self.state.executed_height() >= target || self.syncing == Some(target) {
            return;
        }
        // After a failed attempt, give peers a moment (they may not have the checkpoint yet).
        if self
            .sync_failed_at
            .is_some_and(|t| t.elapsed() < SYNC_RETRY_DELAY)
        {
            return;
        }
        self.syncing = Some(target);
        let (peers, local, tx, hash) = (
            self.peers.clone(),
            self.state.store().clone(),
            self.synced_tx.clone(),
            root.state_hash,
        );
        tracing::info!(height = target.0, "syncing state from peers");
        let span = tracing::info_span!("state_sync", height = target.0);
        tokio::spawn(
            async move {
                let synced = fetch_state(&peers, &local, target, hash).await;
                let _ = tx.send((target, synced)).await;
            }
            .instrument(span),
        );
    }

    /// Installs a synced state if it is still the one the root needs; otherwise (or when the
    /// sync failed) the next step starts over, from the root in force then.
    fn install(&mut self, height: Height, synced: Option<Synced>) -> Result<(), DriverError> {
        // A result for an older target leaves the sync under way alone.
        if self.syncing == Some(height) {
            self.syncing = None;
        }
        let Some(s) = synced else {
            tracing::debug!(height = height.0, "state sync incomplete; retrying");
            self.sync_failed_at = Some(std::time::Instant::now());
            return Ok(());
        };
        self.sync_failed_at = None;
        if height != self.pool.root_height() || self.state.executed_height() >= height {
            return Ok(());
        }
        match self.state.install(&s.manifest, s.chunks) {
            Ok(()) => {
                let m = &self.shared.metrics;
                m.state_syncs.inc();
                m.state_sync_chunks.inc_by(s.fetched as u64);
                tracing::info!(
                    height = height.0,
                    bytes = s.manifest.total_size(),
                    fetched = s.fetched,
                    "state synced"
                );
                self.deliver()
            }
            Err(thicket_execution::manager::InstallError::Store(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(height = height.0, error = %e, "synced state refused");
                Ok(())
            }
        }
    }

    /// Waiting ingress messages whose expiry passed can never execute: drop them.
    fn drop_expired_ingress(&mut self, now_ms: u64) -> Result<(), DriverError> {
        let now_ns = now_ms.saturating_mul(1_000_000);
        let expired: Vec<Mutation> = self
            .pool
            .waiting()
            .filter_map(|(id, m)| match m {
                ConsensusMessage::Ingress(bytes) => {
                    let live = SignedIngress::from_bytes(bytes).is_some_and(|i| {
                        i.content.ingress_expiry.saturating_add(PERMITTED_DRIFT_NS) >= now_ns
                    });
                    (!live).then_some(Mutation::RemoveOrdered(*id))
                }
                _ => None,
            })
            .collect();
        if !expired.is_empty() {
            self.store.write(&batch_for(&self.pool, &expired))?;
            self.pool.apply(expired, 0);
        }
        Ok(())
    }

    /// Notes whether this node is in the registry in force or in the one being prepared (with
    /// the changes ordered in the open interval); once it was, and is in neither, it is removed.
    fn check_membership(&mut self) {
        let me = self.consensus.node_id();
        let round = self.pool.finalized_height().next();
        let Some(epoch) = epoch_for_round(&self.pool, round) else {
            return;
        };
        let in_force = epoch.registry.members.contains_key(&me);
        let next = IntervalChain::finalized(&self.pool).map(|c| c.pending_registry());
        let pending = next.as_ref().is_some_and(|r| r.members.contains_key(&me));
        if let (Ok(mut status), Some(next)) = (self.shared.metrics.status.lock(), &next) {
            status.pending_registry_version = next.version;
            status.pending_members = next.members.keys().map(|n| n.0).collect();
        }
        if in_force || pending {
            self.was_member = true;
        } else if self.was_member && next.is_some() {
            self.removed = true;
        }
    }

    /// Peers come from the registry: the members in force, those announced for the next epoch,
    /// and those added by changes ordered in the open interval (so a joining node can connect
    /// as soon as its change is finalized). Their node keys are what TLS accepts.
    fn learn_peers(&mut self) {
        let round = self.pool.finalized_height().next();
        let summary = finalized_summary(&self.pool, summary_height_for_round(&self.pool, round));
        let next = IntervalChain::finalized(&self.pool).map(|c| c.pending_registry());
        let registries = summary
            .into_iter()
            .flat_map(|s| [&s.current.registry, &s.pending])
            .chain(next.as_ref());
        let mut records = BTreeMap::new();
        for r in registries.flat_map(|r| r.members.values()) {
            records.insert(r.node_id, r);
        }
        let me = self.consensus.node_id();
        let keys = records
            .values()
            .map(|r| (r.node_id, r.signing_key.0))
            .collect();
        let named: Vec<_> = records
            .values()
            .filter(|r| r.node_id != me)
            .map(|r| (r.node_id, r.p2p_url.clone()))
            .collect();
        // A zero for each peer from the start; none for peers gone.
        let labelled: BTreeSet<u64> = named.iter().map(|(id, _)| id.0).collect();
        let m = &self.shared.metrics;
        for peer in self.rate_labelled.difference(&labelled) {
            m.artifacts_rate_limited.remove(&PeerLabel { peer: *peer });
        }
        for peer in &labelled {
            let _ = m
                .artifacts_rate_limited
                .get_or_create(&PeerLabel { peer: *peer });
        }
        self.rate_labelled = labelled;
        self.peers.learn(&named, keys);
    }

    /// Metrics on every step; the admin status (which hashes and encodes keys) only when the
    /// finalized height moved.
    fn report(&self, status_too: bool) {
        let m = &self.shared.metrics;
        let gauge = |h: Height| i64::try_from(h.0).unwrap_or(i64::MAX);
        m.finalized_height.set(gauge(self.pool.finalized_height()));
        m.notarized_height.set(gauge(self.pool.notarized_height()));
        m.executed_height.set(gauge(self.state.executed_height()));
        let round = self.pool.finalized_height().next();
        m.dkg_epoch
            .set(gauge(summary_height_for_round(&self.pool, round)));
        let certified = self.certifier.certified_height();
        m.certification_height.set(gauge(certified));
        m.catch_up_height.set(gauge(self.pool.root_height()));
        m.state_sync_in_progress
            .set(i64::from(self.syncing.is_some()));
        let published = self.shared.certified.read().is_ok_and(|c| c.is_some());
        m.ready.set(i64::from(
            crate::http::readiness(self.pool.finalized_height().0, published).is_ok(),
        ));
        if let Ok(peers) = self.peers.finalized.lock() {
            m.peers_connected.set(peers.len() as i64);
        }
        if !status_too {
            return;
        }
        let machine = self.state.machine();
        let canisters = machine.canisters();
        let (heap, stable) = canisters.values().fold((0usize, 0usize), |(h, s), c| {
            (h + c.memory.heap.len(), s + c.memory.stable.len())
        });
        m.canisters.set(canisters.len() as i64);
        m.canister_memory.set(heap as i64);
        m.canister_stable_memory.set(stable as i64);
        if let Some(epoch) = epoch_for_round(&self.pool, round) {
            let count = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            m.registry_version.set(count(epoch.registry.version));
            m.subnet_members.set(epoch.registry.members.len() as i64);
            m.dkg_interval_length
                .set(count(epoch.registry.params.dkg_interval_length));
            let pending = IntervalChain::finalized(&self.pool)
                .map_or(epoch.registry.version, |c| c.pending_registry().version);
            m.registry_pending_version.set(count(pending));
        }
        if let (Ok(mut status), Some(epoch)) = (m.status.lock(), epoch_for_round(&self.pool, round))
        {
            status.root_height = self.pool.root_height().0;
            status.registry_version = epoch.registry.version;
            status.members = epoch.registry.members.keys().map(|n| n.0).collect();
            status.subnet_public_key = epoch.high.coefficients().public_key().to_der();
            status.subnet_id = epoch.registry.subnet_id.to_string();
            let keys = self.consensus.keys();
            let holds = |e: &thicket_types::block::Epoch| {
                keys.share(&e.low).is_some() && keys.share(&e.high).is_some()
            };
            status.holds_current_key_shares = holds(epoch);
            status.holds_next_key_shares =
                finalized_summary(&self.pool, summary_height_for_round(&self.pool, round))
                    .is_some_and(|s| holds(&s.next));
        }
    }

    fn deliver(&mut self) -> Result<(), DriverError> {
        self.state.set_root(self.pool.root_height());
        if self.pool.root_height() > self.state.executed_height() {
            // Below the root: nothing to execute until the state sync installs the root's state.
            return Ok(());
        }
        let mut ordered: Vec<CryptoHash> = Vec::new();
        let blocks: Vec<_> = deliverable(&self.pool, self.state.executed_height())
            .into_iter()
            .map(|(h, b)| (h, b.clone()))
            .collect();
        for (hash, block) in blocks {
            let _span = tracing::info_span!(
                "execute_block",
                height = block.height.0,
                ingress = block.data().map_or(0, |d| d.ingress.len())
            )
            .entered();
            let done = self.state.execute(&block)?;
            // Blocks far below the tip (replayed after a restart, or a replica catching up)
            // are not counted: the subnet executed them before.
            if block.height.0 + CERTIFY_WITHIN >= self.pool.finalized_height().0 {
                self.count_execution(&block, &done);
            }
            // Heights far below the tip (a replica catching up) are not worth certifying.
            if block.height.0 + CERTIFY_WITHIN >= self.pool.finalized_height().0 {
                self.certify(block.height);
            }
            let m = &self.shared.metrics;
            m.blocks_finalized.inc();
            m.ingress_executed.inc_by(done.len() as u64);
            self.shared.log.executed(&done, now_ms());
            ordered.extend(ordered_ids(&block));
            tracing::debug!(height = block.height.0, block.hash = %hash, "delivered");
        }
        if let Some(c) = self.certifier.aggregate(|h| epoch_for_round(&self.pool, h)) {
            self.certification_out
                .push(ConsensusMessage::Certification(Box::new(c)));
        }
        if !self.certification_out.is_empty() {
            let out = std::mem::take(&mut self.certification_out);
            self.peers.push(&out, self.pool.finalized_height().0);
        }
        if !ordered.is_empty() {
            let mutations: Vec<_> = ordered.into_iter().map(Mutation::RemoveOrdered).collect();
            self.store.write(&batch_for(&self.pool, &mutations))?;
            self.pool.apply(mutations, 0);
        }
        Ok(())
    }

    fn count_execution(
        &self,
        block: &thicket_types::block::Block,
        done: &[(
            thicket_types::ingress::RequestId,
            thicket_execution::IngressStatus,
        )],
    ) {
        use crate::metrics::{MessageKind, RejectLabels, reject_code_name};
        use thicket_execution::IngressStatus;
        let m = &self.shared.metrics;
        m.block_rank.observe(block.rank.0 as f64);
        m.execution_instructions
            .inc_by(self.state.machine().batch_instructions());
        let update = MessageKind { kind: "update" };
        for (_, status) in done {
            match status {
                IngressStatus::Processing { .. } => {}
                IngressStatus::Replied { .. } => {
                    m.execution_messages.get_or_create(&update).inc();
                }
                IngressStatus::Rejected { code, .. } => {
                    m.execution_messages.get_or_create(&update).inc();
                    m.execution_rejects
                        .get_or_create(&RejectLabels {
                            kind: "update",
                            reject_code: reject_code_name(*code),
                        })
                        .inc();
                }
            }
        }
    }

    /// Builds the certified state tree of the height just executed, signs its root with this
    /// replica's share of the subnet key, and keeps the share for aggregation and for peers.
    fn certify(&mut self, height: Height) {
        let Some(epoch) = epoch_for_round(&self.pool, height) else {
            return;
        };
        let node_keys: Vec<[u8; 32]> = epoch
            .registry
            .members
            .values()
            .map(|r| r.signing_key.0)
            .collect();
        let subnet = Arc::new(SubnetInfo::new(
            epoch.high.coefficients().public_key().to_der(),
            &node_keys,
        ));
        let machine = self.state.machine();
        let tree = machine.certified_tree(&subnet).hashed();
        let content = self.certifier.executed(
            height,
            tree,
            machine.query_view(),
            machine.time_ns(),
            subnet,
        );
        if let Some(share) = self.consensus.keys().share(&epoch.high) {
            let share = Share {
                signature: threshold::sign_share(share, &content.message()),
                content,
                signer: self.consensus.node_id(),
            };
            self.certifier
                .add_share(share.clone(), self.state.executed_height(), epoch);
            self.certification_out
                .push(ConsensusMessage::CertificationShare(share));
        }
    }

    /// Fetches from a peer that says it is ahead (a random one of them: a peer lying about
    /// its height cannot monopolize this), in the background, so a peer that never answers
    /// cannot hold up the driver; what it sends arrives through the inbox.
    fn retransmit(&mut self) {
        let me = self.pool.finalized_height();
        let ahead: Vec<NodeId> = self
            .peers
            .finalized
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(_, f)| **f > me.0)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        if !ahead.is_empty() && !self.fetching.load(Ordering::Relaxed) {
            let peer = ahead[(self.rng.next_u32() as usize) % ahead.len()];
            let (peers, inbox, busy) = (
                self.peers.clone(),
                self.fetched_tx.clone(),
                self.fetching.clone(),
            );
            busy.store(true, Ordering::Relaxed);
            tokio::spawn(async move {
                let got = peers.fetch(peer, me.next()).await;
                if !got.is_empty() {
                    let _ = inbox.send(Inbound::Artifacts(got)).await;
                }
                busy.store(false, Ordering::Relaxed);
            });
        }
        // Shares of heights not yet certified go out again (a peer may have missed them).
        let shares: Vec<ConsensusMessage> = self
            .certifier
            .own_shares(self.consensus.node_id())
            .into_iter()
            .map(ConsensusMessage::CertificationShare)
            .collect();
        if !shares.is_empty() {
            self.peers.push(&shares, me.0);
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

/// Whether the DKG of the interval a summary closes failed: its next epoch is its current one
/// again (too few qualified dealings; keys and membership stay).
fn dkg_failed(summary: &thicket_types::block::Summary) -> bool {
    summary.next.high.transcript == summary.current.high.transcript
}
