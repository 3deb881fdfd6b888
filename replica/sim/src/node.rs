//! One simulated replica: the real consensus over a real pool, a toy deterministic state
//! machine for execution (a hash chain over the finalized blocks), and, for faulty replicas,
//! the Byzantine behaviour that rewrites what it does and sends.

use std::collections::BTreeSet;

use rand_chacha::ChaCha20Rng;
use thicket_consensus::Consensus;
use thicket_consensus::delivery::{HashChainState, deliverable, ordered_ids};
use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::pool::{Mutation, Pool, relayed};
use thicket_types::artifacts::{CatchUpContent, CatchUpPackage, ConsensusMessage};
use thicket_types::block::Block;
use thicket_types::{CryptoHash, Height, NodeId};

use thicket_store::memory::MemoryStore;
use thicket_store::{ArtifactStore, Op, batch_for, restore};

use crate::byzantine;
use crate::config::Behaviour;

/// Where a message goes: every peer, or the peers whose id has the given parity.
pub enum Target {
    All,
    Half(u64),
}

pub struct SimNode {
    pub id: NodeId,
    pub consensus: Consensus,
    pub pool: Pool,
    pub exec: HashChainState,
    pub rng: ChaCha20Rng,
    pub behaviour: Behaviour,
    pub up: bool,
    pub removed: bool,
    /// Invalid artifacts received, by reason (a bounded sample is enough for reports).
    pub invalid: u64,
    /// Finalized blocks delivered, in order.
    pub delivered: Vec<(Height, CryptoHash)>,
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
}

/// Enough rounds for one arrival to ripple through every role; a bound, not a tuning knob.
const MAX_ITERATIONS: usize = 64;

impl SimNode {
    pub fn new(
        secrets: NodeSecrets,
        genesis: &CatchUpContent,
        rng: ChaCha20Rng,
        behaviour: Behaviour,
    ) -> Self {
        let mut disk = MemoryStore::default();
        // A fresh in-memory store cannot fail; it records genesis as the root.
        let pool = restore(&mut disk, genesis).unwrap_or_else(|_| Pool::new(genesis.clone(), None));
        SimNode {
            id: secrets.node_id,
            consensus: Consensus::new(secrets),
            pool,
            exec: HashChainState::default(),
            rng,
            behaviour,
            up: behaviour != Behaviour::Silent,
            removed: false,
            invalid: 0,
            delivered: vec![],
            subnet_keys: BTreeSet::new(),
            reshares: 0,
            members: 0,
            dkg_complaints: 0,
            state_syncs: 0,
            ordered_changes: BTreeSet::new(),
            disk,
            genesis: genesis.clone(),
        }
    }

    pub fn is_honest(&self) -> bool {
        self.behaviour == Behaviour::Honest
    }

    /// Restart after a crash: the pool comes back from the store (everything the replica
    /// validated or signed before it died), the consensus's memory is lost. With `wipe` the
    /// disk is lost too (the node keys survive): like the IC's orchestrator, the replica then
    /// starts from the newest verified CUP its peers have (`cup`), never from genesis, so it
    /// cannot sign again at heights it signed before.
    pub fn restart(&mut self, wipe: bool, cup: Option<CatchUpPackage>) {
        self.up = true;
        if wipe {
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
        self.pool = restore(&mut self.disk, &self.genesis)
            .unwrap_or_else(|_| Pool::new(self.genesis.clone(), None));
        self.consensus = Consensus::new(self.consensus.secrets().clone());
    }

    fn persist(&mut self, batch: &thicket_store::Batch) {
        if !batch.is_empty() {
            // In memory: cannot fail.
            let _ = self.disk.write(batch);
        }
    }

    /// Runs the roles until nothing changes; returns what to send. Blocks delivered are kept
    /// (honest replicas' only) for the safety checker.
    pub fn step(&mut self, now: u64) -> (Vec<(Target, ConsensusMessage)>, Option<u64>) {
        let mut outgoing = Vec::new();
        let mut wake = None;
        for _ in 0..MAX_ITERATIONS {
            let out = self
                .consensus
                .on_state_change(&self.pool, now, &mut self.rng, &self.exec);
            wake = out.wake_at;
            if out.mutations.is_empty() {
                break;
            }
            let (mutations, extra) = byzantine::rewrite(self, out.mutations);
            // On "disk" before the pool changes and before anything is sent.
            self.persist(&batch_for(&self.pool, &mutations));
            let applied = self.pool.apply(mutations, now);
            self.invalid += applied.invalid.len() as u64;
            for msg in applied.to_gossip {
                outgoing.extend(byzantine::send(self, msg));
            }
            outgoing.extend(extra);
            for msg in applied.to_relay {
                if relayed(&msg) && self.behaviour != Behaviour::InvalidSig {
                    outgoing.push((Target::All, msg));
                }
            }
            self.deliver();
        }
        (outgoing, wake)
    }

    fn deliver(&mut self) {
        if self.pool.root_height() > self.exec.executed {
            self.exec.sync_to(self.pool.root());
            self.state_syncs += 1;
        }
        let blocks: Vec<(CryptoHash, Block)> = deliverable(&self.pool, self.exec.executed)
            .into_iter()
            .map(|(h, b)| (h, b.clone()))
            .collect();
        let mut ordered = Vec::new();
        for (hash, b) in blocks {
            self.exec.execute(&hash, &b);
            if let Some(d) = b.data() {
                self.dkg_complaints += d.complaints.len() as u64;
                for c in &d.registry_changes {
                    self.ordered_changes
                        .insert(ConsensusMessage::RegistryChange(Box::new(c.clone())).id());
                }
            }
            ordered.extend(ordered_ids(&b));
            if let Some(s) = b.summary() {
                for e in [&s.current, &s.next] {
                    self.subnet_keys
                        .insert(e.high.coefficients().public_key().to_der());
                }
                self.reshares += u64::from(s.next != s.current);
                self.members = s.current.registry.members.len();
            }
            self.delivered.push((b.height, hash));
        }
        if !ordered.is_empty() {
            self.pool.apply(
                ordered.into_iter().map(Mutation::RemoveOrdered).collect(),
                0,
            );
        }
    }

    /// One line on where this replica stands.
    pub fn status(&self) -> String {
        let p = &self.pool;
        format!(
            "{} {:?}{}{}: root {} finalized {} notarized {} beacon {} executed {} unvalidated {:?}",
            self.id,
            self.behaviour,
            if self.up { "" } else { " (down)" },
            if self.removed { " (removed)" } else { "" },
            p.root_height(),
            p.finalized_height(),
            p.notarized_height(),
            p.beacon_height(),
            self.exec.executed,
            p.unvalidated()
                .map(|(_, m)| (m.kind(), m.height().0))
                .collect::<Vec<_>>(),
        )
    }

    /// What this replica re-sends to a peer at finalized height `peer_finalized`: the chain
    /// it lacks (or a CUP if it is below our root), and while we are stuck, our own artifacts of
    /// the open heights (they may have been lost).
    pub fn retransmit(&self, peer_finalized: Height, stuck: bool) -> Vec<ConsensusMessage> {
        let mut out = self.pool.catch_up_for(peer_finalized, 50);
        if stuck {
            out.extend(self.pool.open_artifacts(self.id));
        }
        out.into_iter()
            .map(|m| byzantine::disguise(self, m))
            .collect()
    }
}
