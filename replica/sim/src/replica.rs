//! One simulated replica: the replica core the daemon runs ([`thicket_core::Core`]), over a
//! "disk" that survives crashes ([`MemoryStore`]) and a toy deterministic state machine for
//! execution (a hash chain over the finalized blocks). This shell does what the daemon's driver
//! does with the core's commands, with virtual time: persist, then send; execute deliveries
//! and report them; sync state (from the catch-up package, instantly). Faulty replicas differ
//! only in their [`Byzantine`] conduct.

use std::collections::{BTreeSet, VecDeque};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::delivery::HashChainState;
use thicket_consensus::keys::NodeSecrets;
use thicket_core::{Core, Event, Executed, Ready, To};
use thicket_store::memory::MemoryStore;
use thicket_store::{ArtifactStore, Op, restore};
use thicket_types::artifacts::{CatchUpContent, CatchUpPackage, ConsensusMessage};
use thicket_types::{CryptoHash, Height, NodeId};

use crate::byzantine::Byzantine;
use crate::config::Behaviour;

pub struct SimReplica {
    pub id: NodeId,
    pub core: Core<Byzantine>,
    pub exec: HashChainState,
    pub behaviour: Behaviour,
    pub up: bool,
    /// Marked for removal by the administrator (no longer counted as a member).
    pub removed: bool,
    /// Restarted after losing its store: it no longer knows what it signed.
    pub amnesiac: bool,
    /// Artifacts from peers waiting for the next wake-up.
    pub inbox: Vec<(CryptoHash, ConsensusMessage)>,
    /// Invalid artifacts received and dropped.
    pub invalid: u64,
    /// Finalized blocks delivered, in order (drained by the safety checker).
    pub delivered: Vec<(Height, CryptoHash)>,
    /// Certified state roots, by height (drained by the safety checker).
    pub certified: Vec<(Height, CryptoHash)>,
    /// Subnet public keys (high-threshold group keys) seen in delivered summaries.
    pub subnet_keys: BTreeSet<Vec<u8>>,
    /// Summaries delivered whose `next` epoch came from a new DKG (keys reshared).
    pub reshares: u64,
    /// Membership size in the latest delivered summary's current epoch.
    pub members: usize,
    /// DKG complaints ordered in finalized blocks.
    pub dkg_complaints: u64,
    pub state_syncs: u64,
    /// Ids of registry changes delivered in finalized blocks.
    pub ordered_changes: BTreeSet<CryptoHash>,
    /// What survives a crash.
    disk: MemoryStore,
    genesis: CatchUpContent,
    secrets: NodeSecrets,
    seed: u64,
    restarts: u64,
}

/// What one step asks of the network.
#[derive(Default)]
pub struct Output {
    pub send: Vec<(To, ConsensusMessage)>,
    pub fetch: Option<(NodeId, Height)>,
    pub wake_at: Option<u64>,
}

impl SimReplica {
    pub fn new(
        secrets: NodeSecrets,
        genesis: &CatchUpContent,
        seed: u64,
        behaviour: Behaviour,
    ) -> Self {
        let mut disk = MemoryStore::default();
        // A fresh in-memory store cannot fail; it records genesis as the root.
        let pool = restore(&mut disk, genesis)
            .unwrap_or_else(|_| thicket_consensus::pool::Pool::new(genesis.clone(), None));
        let core = Core::with_conduct(
            secrets.clone(),
            pool,
            ChaCha20Rng::seed_from_u64(seed),
            Height(0),
            Byzantine(behaviour),
        );
        SimReplica {
            id: secrets.node_id,
            core,
            exec: HashChainState::default(),
            behaviour,
            up: behaviour != Behaviour::Silent,
            removed: false,
            amnesiac: false,
            inbox: Vec::new(),
            invalid: 0,
            delivered: vec![],
            certified: vec![],
            subnet_keys: BTreeSet::new(),
            reshares: 0,
            members: 0,
            dkg_complaints: 0,
            state_syncs: 0,
            ordered_changes: BTreeSet::new(),
            disk,
            genesis: genesis.clone(),
            secrets,
            seed,
            restarts: 0,
        }
    }

    pub fn is_honest(&self) -> bool {
        self.behaviour == Behaviour::Honest
    }

    /// Restart after a crash: the pool comes back from the store (everything the replica
    /// validated or signed before it died), the core's memory is lost. With `wipe` the disk is
    /// lost too (the node keys survive): like the IC's orchestrator, the replica then starts
    /// from the newest verified CUP its peers have (`cup`), never from genesis, so it cannot
    /// sign again at heights it signed before.
    /// `peers_notarized` is the highest height the peers it reaches had notarized (a wiped
    /// replica must not sign again where it may have signed before: [`Core::recovering`]).
    pub fn restart(&mut self, wipe: bool, cup: Option<CatchUpPackage>, peers_notarized: Height) {
        self.up = true;
        self.inbox.clear();
        if wipe {
            self.amnesiac = true;
            self.disk = MemoryStore::default();
            self.exec = HashChainState::default();
            self.delivered.clear();
            if let Some(cup) = cup {
                let root = cup.content.clone();
                let _ = self
                    .disk
                    .write(&vec![Op::PutRoot(Box::new(root), Some(Box::new(cup)))]);
            }
        }
        // The in-memory store cannot fail; a real replica halts on a storage error.
        let pool = restore(&mut self.disk, &self.genesis)
            .unwrap_or_else(|_| thicket_consensus::pool::Pool::new(self.genesis.clone(), None));
        self.restarts += 1;
        let core = Core::with_conduct(
            self.secrets.clone(),
            pool,
            ChaCha20Rng::seed_from_u64(self.seed ^ self.restarts.rotate_left(17)),
            self.exec.executed,
            Byzantine(self.behaviour),
        );
        self.core = if wipe {
            core.recovering(peers_notarized)
        } else {
            core
        };
    }

    /// Feeds one event to the core and carries out what it asks until nothing is left to
    /// execute or sync.
    pub fn step(&mut self, event: Event, now: u64) -> Output {
        let mut out = Output::default();
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let ready = self.core.step(event, now, &self.exec);
            events.extend(self.perform(ready, &mut out));
        }
        out
    }

    /// A wake-up: what arrived since the last one, or only the passing of time.
    pub fn wake(&mut self, now: u64) -> Output {
        let arrived = std::mem::take(&mut self.inbox);
        let event = if arrived.is_empty() {
            Event::Tick
        } else {
            Event::Artifacts(arrived)
        };
        self.step(event, now)
    }

    fn perform(&mut self, ready: Ready, out: &mut Output) -> Vec<Event> {
        if !ready.persist.is_empty() {
            // In memory: cannot fail.
            let _ = self.disk.write(&ready.persist);
        }
        self.invalid += ready.invalid.len() as u64;
        out.send.extend(ready.send);
        out.fetch = ready.fetch.or(out.fetch);
        out.wake_at = match (out.wake_at, ready.wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.certified.extend(
            ready
                .certified
                .iter()
                .map(|c| (c.content.height, c.content.root)),
        );
        if ready.removed {
            self.up = false;
        }
        // Blocks delivered in this step run first; a catch-up package adopted later in the
        // same step is synced after them (the daemon syncs in the background meanwhile).
        let mut next = Vec::new();
        if !ready.deliver.is_empty() {
            let done = ready
                .deliver
                .iter()
                .map(|d| {
                    self.execute(d);
                    Executed {
                        height: d.block.height,
                        certify: d.certify.then_some(self.exec.state),
                    }
                })
                .collect();
            next.push(Event::Executed(done));
        }
        if let Some(root) = ready.sync {
            if root.block.height > self.exec.executed {
                self.exec.sync_to(&root);
                self.state_syncs += 1;
            }
            next.push(Event::Synced {
                height: root.block.height,
                ok: true,
            });
        }
        next
    }

    fn execute(&mut self, d: &thicket_core::Delivery) {
        let b = &d.block;
        self.exec.execute(&d.hash, b);
        if let Some(data) = b.data() {
            self.dkg_complaints += data.complaints.len() as u64;
            for c in &data.registry_changes {
                self.ordered_changes
                    .insert(ConsensusMessage::RegistryChange(Box::new(c.clone())).id());
            }
        }
        if let Some(s) = b.summary() {
            for e in [&s.current, &s.next] {
                self.subnet_keys
                    .insert(e.high.coefficients().public_key().to_der());
            }
            self.reshares += u64::from(s.next != s.current);
            self.members = s.current.registry.members.len();
        }
        self.delivered.push((b.height, d.hash));
    }

    /// One line on where this replica stands.
    pub fn status(&self) -> String {
        let p = self.core.pool();
        format!(
            "{} {:?}{}{}: root {} finalized {} notarized {} beacon {} executed {} certified {} unvalidated {:?}",
            self.id,
            self.behaviour,
            if self.up { "" } else { " (down)" },
            if self.removed { " (removed)" } else { "" },
            p.root_height(),
            p.finalized_height(),
            p.notarized_height(),
            p.beacon_height(),
            self.exec.executed,
            self.core.certified_height(),
            p.unvalidated()
                .map(|(_, m)| (m.kind(), m.height().0))
                .collect::<Vec<_>>(),
        )
    }
}
