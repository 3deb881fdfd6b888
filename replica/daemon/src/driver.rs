//! The driver of one replica: the async shell around the replica core
//! ([`thicket_core::Core`]), which decides everything. The driver turns what happens (peers'
//! artifacts, clients' ingress, timers, finished state syncs) into core events and carries out
//! the core's commands: it writes [`Ready::persist`] to the store before sending anything (a
//! replica killed at any instant restarts with all it signed and all it finalized), pushes
//! artifacts to peers, executes delivered blocks with the [`StateManager`] and reports them
//! back, syncs state from peers in the background, publishes certified states, and follows the
//! registry's peers. The simulator drives the same core with virtual time.
//!
//! ```text
//!  inbox / timers / sync results ─► Event ─► Core::step ─► Ready
//!     persist (sled) ─► push to peers ─► execute ─► Event::Executed ─► Core::step ─► …
//! ```

mod observe;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use thicket_consensus::StateReader;
use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::membership::epoch_for_round;
use thicket_core::conduct::Conduct;
use thicket_core::{CERTIFY_WITHIN, Core, Delivery, Event, Executed, MAX_FETCH, Ready, To};
use thicket_execution::checkpoints::{CheckpointError, CheckpointStore};
use thicket_execution::manager::StateManager;
use thicket_state::SubnetInfo;
use thicket_state::SubnetState;
use thicket_store::{ArtifactStore, Op, StoreError, restore};
use thicket_types::artifacts::{CatchUpContent, ConsensusMessage};
use thicket_types::registry::NodeRecord;
use thicket_types::{Height, NodeId};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::audit::Audit;
use crate::certifier::{Published, Trees};
use crate::clock::now_ms;
use crate::ingress::IngressLog;
use crate::metrics::{KindLabel, Metrics};
use crate::sync::{Synced, fetch_state};
use crate::transport::{Inbound, Peers};
use observe::{Observer, View};

/// Why a replica stops: it must not run on without what it signed, or its state, on disk.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// State shared between the driver and the servers in front of it.
#[derive(Clone)]
pub struct Shared {
    /// What this replica signed, finalized and certified (the admin API's `Audit`).
    pub audit: Arc<Audit>,
    /// The finalized height, which the transport reports to peers.
    pub finalized: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<IngressLog>,
    /// The newest certified state (for read_state, sync calls and queries).
    pub certified: Published,
}

impl Shared {
    pub fn new(me: NodeId) -> Self {
        Shared {
            audit: Arc::new(Audit::new(me)),
            finalized: Arc::default(),
            metrics: Arc::default(),
            log: Arc::default(),
            certified: Published::default(),
        }
    }
}

/// How often a replica compares notes with its peers: fetches the chain from one that is ahead
/// and, when it made no progress since last time, re-sends its own open artifacts.
pub const RETRANSMIT_INTERVAL: Duration = Duration::from_millis(1000);

/// Longest sleep without looking at the pool: bounds the delay of a wake-up a role asked for
/// while an inbound artifact was being processed.
const MAX_IDLE: Duration = Duration::from_millis(100);

/// Inbox messages handled before the roles run again.
const MAX_DRAIN: usize = 1024;

/// How a replica conducts itself, chosen at start: [`thicket_core::conduct::Honest`], unless a
/// test binary makes it Byzantine.
pub type BoxedConduct = Box<dyn Conduct + Send>;

pub struct Driver<S> {
    core: Core<BoxedConduct>,
    store: S,
    state: StateManager<SubnetState>,
    trees: Trees,
    peers: Peers,
    inbox: mpsc::Receiver<Inbound>,
    shared: Shared,
    wake: Option<u64>,
    removed: bool,
    /// Where state syncs report (their target height), and the one under way.
    synced_tx: mpsc::Sender<(Height, Option<Synced>)>,
    synced_rx: mpsc::Receiver<(Height, Option<Synced>)>,
    /// Background fetches from peers: their results, and whether one is under way.
    fetched_tx: mpsc::Sender<Inbound>,
    fetched_rx: mpsc::Receiver<Inbound>,
    fetching: Arc<std::sync::atomic::AtomicBool>,
    observer: Observer,
}

impl<S: ArtifactStore> Driver<S> {
    /// A driver whose pool is restored from `store` (or starts at `genesis`), and whose state
    /// is the checkpoint its root certifies (or is synced from peers).
    // The replica's parts, which only `node::start_with` assembles.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        secrets: NodeSecrets,
        genesis: &CatchUpContent,
        mut store: S,
        checkpoints: CheckpointStore,
        peers: Peers,
        inbox: mpsc::Receiver<Inbound>,
        shared: Shared,
        conduct: BoxedConduct,
    ) -> Result<Self, DriverError> {
        let pool = restore(&mut store, genesis)?;
        shared.audit.restored(&pool);
        let state = StateManager::open(checkpoints, pool.root())?;
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        let (synced_tx, synced_rx) = mpsc::channel(1);
        let (fetched_tx, fetched_rx) = mpsc::channel(4);
        let observer = Observer::new(&pool, &shared.metrics);
        let core = Core::with_conduct(
            secrets,
            pool,
            ChaCha20Rng::from_seed(seed),
            state.executed_height(),
            conduct,
        );
        Ok(Driver {
            core,
            store,
            state,
            trees: Trees::new(shared.certified.clone()),
            peers,
            inbox,
            shared,
            wake: None,
            removed: false,
            synced_tx,
            synced_rx,
            fetched_tx,
            fetched_rx,
            fetching: Arc::default(),
            observer,
        })
    }

    pub fn pool(&self) -> &thicket_consensus::pool::Pool {
        self.core.pool()
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
            let event = tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(m) => {
                        // Take what else is waiting too: one step (and one disk flush) for
                        // the lot.
                        let mut arrived = Vec::new();
                        self.handle(m, &mut arrived);
                        for _ in 0..MAX_DRAIN {
                            match self.inbox.try_recv() {
                                Ok(m) => self.handle(m, &mut arrived),
                                Err(_) => break,
                            }
                        }
                        Event::Artifacts(arrived)
                    }
                    None => break,
                },
                _ = tokio::time::sleep(idle) => Event::Tick,
                _ = retransmit.tick() => Event::Retransmit { peers: self.peer_heights() },
                Some((height, synced)) = self.synced_rx.recv() => self.install(height, synced)?,
                Some(m) = self.fetched_rx.recv() => {
                    let mut arrived = Vec::new();
                    self.handle(m, &mut arrived);
                    Event::Artifacts(arrived)
                }
                _ = shutdown.changed() => break,
            };
            self.advance(event)?;
            if self.removed {
                tracing::info!("this node was removed from the subnet's registry; stopping");
                break;
            }
        }
        Ok(self)
    }

    /// Answers what needs no step; collects peers' artifacts for the next one.
    fn handle(
        &mut self,
        msg: Inbound,
        arrived: &mut Vec<(thicket_types::CryptoHash, ConsensusMessage)>,
    ) {
        match msg {
            Inbound::Artifacts(list) => {
                for (_, m) in &list {
                    let kind = KindLabel {
                        kind: format!("{:?}", m.kind()),
                    };
                    self.shared
                        .metrics
                        .artifacts_received
                        .get_or_create(&kind)
                        .inc();
                }
                arrived.extend(list);
            }
            Inbound::Fetch { from, limit, reply } => {
                let _ = reply.send(self.core.serve_fetch(from, limit));
            }
            Inbound::RequestSender { id, reply } => {
                let sender = self.state.machine().history().get(&id);
                let _ = reply.send(sender.map(|e| e.sender.clone()));
            }
            Inbound::Ingress { msg, reply } => {
                let _ = reply.send(
                    self.core
                        .admit_ingress(msg, now_ms())
                        .map_err(|e| e.to_string()),
                );
            }
        }
    }

    /// The finalized heights peers last reported.
    fn peer_heights(&self) -> Vec<(NodeId, Height)> {
        self.peers
            .finalized
            .lock()
            .map(|h| h.iter().map(|(id, f)| (*id, Height(*f))).collect())
            .unwrap_or_default()
    }

    /// Steps the core with `event`, and again with what carrying out its commands produced
    /// (executed blocks, a finished sync), until it asks for nothing more.
    pub fn advance(&mut self, event: Event) -> Result<(), DriverError> {
        let now = now_ms();
        self.wake = None;
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let ready = self.core.step(event, now, &self.state);
            events.extend(self.perform(ready)?);
        }
        let finalized = self.core.pool().finalized_height();
        self.shared.finalized.store(finalized.0, Ordering::Relaxed);
        let view = View {
            core: &self.core,
            state: &self.state,
            metrics: &self.shared.metrics,
            syncing: self.core.syncing().is_some(),
            published: self.shared.certified.read().is_ok_and(|c| c.is_some()),
            peers_connected: self.peers.finalized.lock().map_or(0, |p| p.len()),
        };
        self.observer.after_step(&view);
        Ok(())
    }

    /// Carries out one step's commands, in the order the core's contract requires.
    fn perform(&mut self, ready: Ready) -> Result<Option<Event>, DriverError> {
        if !ready.persist.is_empty() {
            self.store.write(&ready.persist)?;
        }
        let m = &self.shared.metrics;
        for (kind, reason) in &ready.invalid {
            tracing::debug!(?kind, %reason, "invalid artifact");
            let kind = KindLabel {
                kind: format!("{kind:?}"),
            };
            m.artifacts_invalid.get_or_create(&kind).inc();
        }
        m.artifacts_dropped.inc_by(ready.dropped);
        self.audit(&ready);
        self.send(ready.send);
        if let Some(w) = ready.wake_at {
            self.wake = Some(self.wake.map_or(w, |x| x.min(w)));
        }
        for c in &ready.certified {
            self.trees.publish(c);
        }
        if let Some(records) = ready.peers {
            self.learn_peers(&records);
        }
        self.removed |= ready.removed;
        if let Some((peer, from)) = ready.fetch {
            self.fetch(peer, from);
        }
        if let Some(root) = ready.sync {
            self.start_sync(&root);
        }
        self.state.set_root(self.core.pool().root_height());
        if ready.deliver.is_empty() {
            return Ok(None);
        }
        let mut done = Vec::with_capacity(ready.deliver.len());
        for d in &ready.deliver {
            done.push(self.execute(d)?);
        }
        Ok(Some(Event::Executed(done)))
    }

    /// Records what this step signed (stored, or for certification shares sent) and the
    /// certifications it learned.
    fn audit(&self, ready: &Ready) {
        let (audit, pool) = (&self.shared.audit, self.core.pool());
        for op in &ready.persist {
            if let Op::PutArtifact(msg) = op {
                audit.signed(msg, pool);
            }
        }
        for (_, msg) in &ready.send {
            if let ConsensusMessage::CertificationShare(_) = msg {
                audit.signed(msg, pool);
            }
        }
        for c in &ready.certified {
            audit.certified(c.content.height, c.content.root);
        }
    }

    /// Pushes artifacts to peers, in messages of at most [`MAX_FETCH`].
    fn send(&self, out: Vec<(To, ConsensusMessage)>) {
        let finalized = self.core.pool().finalized_height().0;
        let mut all = Vec::new();
        for (to, msg) in out {
            match to {
                To::All => all.push(msg),
                To::Nodes(ids) => self.peers.push_to(Some(&ids), &[msg], finalized),
            }
        }
        for chunk in all.chunks(MAX_FETCH) {
            self.peers.push_to(None, chunk, finalized);
        }
    }

    /// Executes one delivered block; builds the certified tree when the core asks for it.
    fn execute(&mut self, d: &Delivery) -> Result<Executed, DriverError> {
        let block = &d.block;
        let _span = tracing::info_span!(
            "execute_block",
            height = block.height.0,
            ingress = block.data().map_or(0, |d| d.ingress.len())
        )
        .entered();
        if self.state.machine().subnet_id().is_none()
            && let Some(epoch) = epoch_for_round(self.core.pool(), block.height)
        {
            // The system canisters answer with the subnet's id (the principal of its key).
            let key = epoch.high.coefficients().public_key().to_der();
            let id = candid::Principal::self_authenticating(&key);
            self.state.machine_mut().set_subnet_id(id);
        }
        let done = self.state.execute(block)?;
        self.shared.audit.finalized(block.height, d.hash);
        self.trees.kept.executed(block.height, &done);
        let tip = self.core.pool().finalized_height();
        let m = &self.shared.metrics;
        // Blocks far below the tip (replayed after a restart, or a replica catching up) are
        // not counted: the subnet executed them before.
        if block.height.0 + CERTIFY_WITHIN >= tip.0 {
            let instructions = self.state.machine().batch_instructions();
            observe::count_execution(m, block, &done, instructions);
        }
        m.blocks_finalized.inc();
        m.ingress_executed.inc_by(done.len() as u64);
        let history = self.state.machine().history();
        let anonymous = |id: &thicket_types::ingress::RequestId| {
            history
                .get(id)
                .is_some_and(|h| h.sender == candid::Principal::anonymous().as_slice())
        };
        self.shared.log.executed(&done, anonymous, now_ms());
        tracing::debug!(height = block.height.0, block.hash = %d.hash, "delivered");
        let certify = if d.certify {
            self.certified_root(block.height)
        } else {
            None
        };
        Ok(Executed {
            height: block.height,
            certify,
        })
    }

    /// Builds the certified state tree of the height just executed and keeps it until the
    /// subnet certifies it; returns its root for the core to sign.
    fn certified_root(&mut self, height: Height) -> Option<thicket_types::CryptoHash> {
        let epoch = epoch_for_round(self.core.pool(), height)?;
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
        let tree = self.trees.kept.tree(machine, &subnet);
        Some(self.trees.executed(
            height,
            tree,
            machine.query_view(),
            machine.time_ns(),
            subnet,
        ))
    }

    /// Peers come from the registry; their node keys are what TLS accepts.
    fn learn_peers(&mut self, records: &[NodeRecord]) {
        let me = self.core.node_id();
        let keys: BTreeMap<NodeId, [u8; 32]> = records
            .iter()
            .map(|r| (r.node_id, r.signing_key.0))
            .collect();
        let named: Vec<_> = records
            .iter()
            .filter(|r| r.node_id != me)
            .map(|r| (r.node_id, r.p2p_url.clone()))
            .collect();
        self.peers.learn(&named, keys);
    }

    /// Fetches from a peer in the background, so a peer that never answers cannot hold up
    /// the driver; what it sends arrives through the inbox.
    fn fetch(&mut self, peer: NodeId, from: Height) {
        if self.fetching.load(Ordering::Relaxed) {
            return;
        }
        let (peers, inbox, busy) = (
            self.peers.clone(),
            self.fetched_tx.clone(),
            self.fetching.clone(),
        );
        busy.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            let got = peers.fetch(peer, from).await;
            if !got.is_empty() {
                let _ = inbox.send(Inbound::Artifacts(got)).await;
            }
            busy.store(false, Ordering::Relaxed);
        });
    }

    /// Syncs the state a catch-up package certifies from peers, in the background.
    fn start_sync(&mut self, root: &CatchUpContent) {
        let target = root.block.height;
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

    /// Installs a synced state if it is still the one the root needs. The core hears whether
    /// the sync succeeded (a failed one is retried after a pause).
    fn install(&mut self, height: Height, synced: Option<Synced>) -> Result<Event, DriverError> {
        let failed = Event::Synced { height, ok: false };
        let Some(s) = synced else {
            tracing::debug!(height = height.0, "state sync incomplete; retrying");
            return Ok(failed);
        };
        let ok = Event::Synced { height, ok: true };
        if height != self.core.pool().root_height() || self.state.executed_height() >= height {
            return Ok(ok);
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
                Ok(ok)
            }
            Err(thicket_execution::manager::InstallError::Store(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(height = height.0, error = %e, "synced state refused");
                Ok(failed)
            }
        }
    }
}
