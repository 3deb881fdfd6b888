//! The event loop: a virtual clock, a seeded network with latency, loss and partitions,
//! crashes and restarts, membership changes by the administrator, and the checkers for safety
//! (no two honest replicas deliver different blocks at one height), liveness (finalization
//! resumes once the network is whole) and key stability.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_crypto::threshold;
use thicket_types::artifacts::{CatchUpContent, CatchUpPackage, ConsensusMessage, SignedContent};
use thicket_types::registry::{Registry, RegistryChange, SignedRegistryChange};
use thicket_types::{CryptoHash, Height, NodeId, hash_of};

use crate::config::{Behaviour, ChangeKind, SimConfig};
use thicket_core::{Event as CoreEvent, MAX_FETCH, To};

use crate::replica::{Output, SimReplica};
use crate::report::RunReport;

mod checks;

enum Event {
    Deliver {
        to: usize,
        msg: Rc<(CryptoHash, ConsensusMessage)>,
    },
    Wake {
        node: usize,
    },
    /// `from` asked `peer` for what it has from `height` on.
    Fetch {
        from: usize,
        peer: usize,
        height: Height,
    },
    Retransmit,
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
        wipe: bool,
    },
}

pub struct Simulation {
    cfg: SimConfig,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimReplica>,
    /// Earliest scheduled wake-up per node, to avoid piling up timers.
    wakes: Vec<Option<u64>>,
    net: ChaCha20Rng,
    admin: NodeSigningKey,
    genesis: CatchUpContent,
    /// Registry version the next change applies to, and whether a change is in flight.
    registry_version: u64,
    in_flight: Option<CryptoHash>,
    next_change: usize,
    /// height → first block hash an honest replica delivered there.
    chain: BTreeMap<Height, CryptoHash>,
    safety_violations: u64,
    last_progress: (u64, Height),
    signed_notarizations: BTreeMap<(usize, Height), BTreeSet<CryptoHash>>,
    signed_finalizations: BTreeMap<(usize, Height), CryptoHash>,
    double_signing: u64,
    amnesiac_double_signing: u64,
    /// height → the state root an honest replica first saw certified there.
    certified: BTreeMap<Height, CryptoHash>,
    /// (replica, height) → the root it signed a certification share for.
    signed_certifications: BTreeMap<(usize, Height), CryptoHash>,
    ingress_seq: u64,
}

impl Simulation {
    pub fn new(cfg: SimConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.nodes >= 1, "a subnet needs at least one replica");
        anyhow::ensure!(
            cfg.faulty <= cfg.nodes,
            "{} faulty replicas among {}",
            cfg.faulty,
            cfg.nodes
        );
        thicket_crypto::bls::enable_shared_verification_cache();
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        let admin = NodeSigningKey::generate(&mut rng);
        let secrets: Vec<NodeSecrets> = (0..cfg.nodes)
            .map(|i| NodeSecrets::generate(&mut rng, NodeId(i as u64)))
            .collect();
        let registry = Registry {
            subnet_id: hash_of("thicket-sim-subnet", &cfg.seed),
            version: 0,
            members: secrets.iter().map(|s| (s.node_id, s.record())).collect(),
            params: cfg.params.clone(),
            admin_key: admin.public_key(),
        };
        // The genesis DKG as the operator runs it, with every member dealing and complaining.
        let genesis = genesis::in_process(&mut rng, &secrets, registry)?;
        // The faulty replicas are a seeded random choice.
        let mut order: Vec<usize> = (0..cfg.nodes).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.gen_range(0..=i));
        }
        let faulty: BTreeMap<usize, usize> = order
            .iter()
            .take(cfg.faulty)
            .enumerate()
            .map(|(k, i)| (*i, k))
            .collect();
        let nodes: Vec<SimReplica> = secrets
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let behaviour = faulty
                    .get(&i)
                    .map_or(Behaviour::Honest, |k| cfg.behaviour.for_faulty(*k));
                SimReplica::new(s, &genesis, cfg.seed ^ (i as u64 + 1) << 32, behaviour)
            })
            .collect();
        let n = nodes.len();
        let mut sim = Simulation {
            net: ChaCha20Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            cfg,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            wakes: vec![None; n],
            nodes,
            admin,
            genesis,
            registry_version: 0,
            in_flight: None,
            next_change: 0,
            chain: BTreeMap::new(),
            safety_violations: 0,
            last_progress: (0, Height(0)),
            signed_notarizations: BTreeMap::new(),
            signed_finalizations: BTreeMap::new(),
            double_signing: 0,
            amnesiac_double_signing: 0,
            certified: BTreeMap::new(),
            signed_certifications: BTreeMap::new(),
            ingress_seq: 0,
        };
        for i in 0..n {
            sim.schedule(0, Event::Wake { node: i });
        }
        sim.schedule(sim.cfg.retransmit_ms, Event::Retransmit);
        for c in sim.cfg.crashes.clone() {
            sim.schedule(c.at_ms, Event::Crash { node: c.node });
            sim.schedule(
                c.at_ms + c.down_ms,
                Event::Restart {
                    node: c.node,
                    wipe: c.wipe,
                },
            );
        }
        Ok(sim)
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        if let Event::Wake { node } = ev {
            if self.wakes[node].is_some_and(|w| w <= at && w >= self.now) {
                return;
            }
            self.wakes[node] = Some(at);
        }
        self.queue.insert((at, self.seq), ev);
    }

    /// Runs until every honest member finalized the target height, or liveness fails.
    pub fn run(mut self) -> RunReport {
        let started = std::time::Instant::now();
        let mut liveness_failure = false;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            self.now = at;
            match ev {
                Event::Deliver { to, msg } => {
                    if self.nodes[to].up {
                        let (id, msg) = &*msg;
                        self.nodes[to].inbox.push((*id, msg.clone()));
                        self.schedule(self.now + 1, Event::Wake { node: to });
                    }
                }
                Event::Wake { node } => {
                    if self.wakes[node] == Some(at) {
                        self.wakes[node] = None;
                    }
                    if self.nodes[node].up {
                        let out = self.nodes[node].wake(self.now);
                        self.carry_out(node, out);
                    }
                }
                Event::Fetch { from, peer, height } => self.serve_fetch(from, peer, height),
                Event::Retransmit => {
                    self.retransmit();
                    self.submit_ingress();
                    self.membership();
                    if self.done() {
                        break;
                    }
                    if self.stalled() {
                        liveness_failure = true;
                        break;
                    }
                    self.schedule(self.now + self.cfg.retransmit_ms, Event::Retransmit);
                }
                Event::Crash { node } => self.nodes[node].up = false,
                Event::Restart { node, wipe } => {
                    let cup = if wipe { self.newest_cup(node) } else { None };
                    let notarized = self.peers_notarized(node);
                    self.nodes[node].restart(wipe, cup, notarized);
                    self.schedule(self.now, Event::Wake { node });
                }
            }
        }
        self.report(liveness_failure, started.elapsed())
    }

    /// What a replica's step asked of the network.
    fn carry_out(&mut self, i: usize, out: Output) {
        for (to, msg) in out.send {
            self.send(i, to, msg);
        }
        if let Some((peer, height)) = out.fetch {
            if let Some(p) = self.nodes.iter().position(|n| n.id == peer) {
                let latency = self.latency();
                self.schedule(
                    self.now + latency,
                    Event::Fetch {
                        from: i,
                        peer: p,
                        height,
                    },
                );
            }
        }
        if let Some(w) = out.wake_at {
            self.schedule(w.max(self.now + 1), Event::Wake { node: i });
        }
        self.observe(i);
    }

    fn latency(&mut self) -> u64 {
        self.net.gen_range(
            self.cfg.min_latency_ms..=self.cfg.max_latency_ms.max(self.cfg.min_latency_ms),
        )
    }

    /// A peer answers a fetch (if it is up and reachable), as the daemon's transport does.
    fn serve_fetch(&mut self, from: usize, peer: usize, height: Height) {
        if !self.nodes[peer].up || !self.connected(from, peer) {
            return;
        }
        for m in self.nodes[peer].core.serve_fetch(height, MAX_FETCH) {
            let latency = self.latency();
            self.schedule(
                self.now + latency,
                Event::Deliver {
                    to: from,
                    msg: Rc::new((m.id(), m)),
                },
            );
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        !self
            .cfg
            .partitions
            .iter()
            .any(|p| p.active(self.now) && a % p.groups != b % p.groups)
    }

    fn send(&mut self, from: usize, target: To, msg: ConsensusMessage) {
        if self.nodes[from].is_honest() {
            self.check_signing(from, &msg);
        }
        let msg = Rc::new((msg.id(), msg));
        for to in 0..self.nodes.len() {
            let wanted = match &target {
                To::All => true,
                To::Nodes(ids) => ids.contains(&self.nodes[to].id),
            };
            if to == from || !wanted || !self.connected(from, to) {
                continue;
            }
            if self.cfg.drop_rate > 0.0 && self.net.gen_bool(self.cfg.drop_rate.min(1.0)) {
                continue;
            }
            let latency = self.latency();
            self.schedule(
                self.now + latency,
                Event::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    /// The highest height the peers a replica reaches have notarized.
    fn peers_notarized(&self, node: usize) -> Height {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.up && self.connected(node, *i))
            .map(|(_, n)| n.core.pool().notarized_height())
            .max()
            .unwrap_or_default()
    }

    /// What an orchestrator does for a replica that lost its disk: ask the peers it can reach
    /// for their catch-up packages and keep the newest that verifies with the subnet key.
    fn newest_cup(&self, node: usize) -> Option<CatchUpPackage> {
        let subnet_key = self
            .genesis
            .block
            .summary()?
            .current
            .high
            .coefficients()
            .public_key();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.up && self.connected(node, *i))
            .filter_map(|(_, n)| n.core.pool().latest_cup())
            .filter(|c| {
                let msg = c.content.share_content().signing_bytes();
                threshold::verify_combined(&c.signature, &msg, &subnet_key).is_ok()
            })
            .max_by_key(|c| c.content.block.height)
            .cloned()
    }

    /// Every replica compares notes with the peers it can reach, as the daemon does each
    /// second: it learns their finalized heights and the core decides what to fetch and send.
    fn retransmit(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            if !self.nodes[a].up {
                continue;
            }
            let peers: Vec<(NodeId, Height)> = (0..n)
                .filter(|b| *b != a && self.nodes[*b].up && self.connected(a, *b))
                .map(|b| {
                    (
                        self.nodes[b].id,
                        self.nodes[b].core.pool().finalized_height(),
                    )
                })
                .collect();
            let out = self.nodes[a].step(CoreEvent::Retransmit { peers }, self.now);
            self.carry_out(a, out);
        }
    }

    fn submit_ingress(&mut self) {
        let per_tick = self.cfg.ingress_per_sec * self.cfg.retransmit_ms / 1000;
        for _ in 0..per_tick {
            self.ingress_seq += 1;
            let to = (self.ingress_seq as usize) % self.nodes.len();
            let content = thicket_types::ingress::IngressMessage {
                sender: thicket_types::ingress::ANONYMOUS.to_vec(),
                canister_id: vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
                method_name: "sim".into(),
                arg: format!("ingress-{}-{}", self.cfg.seed, self.ingress_seq).into_bytes(),
                ingress_expiry: u64::MAX,
                nonce: None,
            };
            let msg = ConsensusMessage::Ingress(
                thicket_types::ingress::SignedIngress::anonymous(content).to_bytes(),
            );
            self.schedule(
                self.now + 1,
                Event::Deliver {
                    to,
                    msg: Rc::new((msg.id(), msg)),
                },
            );
        }
    }

    fn honest_members(&self) -> impl Iterator<Item = &SimReplica> {
        self.nodes.iter().filter(|n| n.is_honest() && !n.removed)
    }

    fn done(&self) -> bool {
        self.next_change >= self.cfg.changes.len()
            && self.in_flight.is_none()
            && self
                .honest_members()
                .all(|n| n.exec.executed.0 >= self.cfg.heights)
    }

    /// No finalization anywhere for `stall_ms` while the network is whole and nobody is down.
    fn stalled(&self) -> bool {
        let healed = self
            .cfg
            .partitions
            .iter()
            .map(|p| p.end())
            .max()
            .unwrap_or(0);
        let restarted = self
            .cfg
            .crashes
            .iter()
            .map(|c| c.at_ms + c.down_ms)
            .max()
            .unwrap_or(0);
        let since = self.last_progress.0.max(healed).max(restarted);
        self.now > since + self.cfg.stall_ms
    }

    /// Submits the next membership change once its height is reached and the previous one
    /// was ordered; marks ordered changes.
    fn membership(&mut self) {
        if let Some(id) = self.in_flight {
            let ordered = self
                .honest_members()
                .any(|n| n.ordered_changes.contains(&id));
            if ordered {
                self.in_flight = None;
                self.registry_version += 1;
            } else {
                return;
            }
        }
        let Some(change) = self.cfg.changes.get(self.next_change).copied() else {
            return;
        };
        let top = self
            .honest_members()
            .map(|n| n.exec.executed)
            .max()
            .unwrap_or_default();
        if top.0 < change.at_height {
            return;
        }
        let registry_change = match change.kind {
            ChangeKind::Add => {
                let id = NodeId(self.nodes.len() as u64);
                let seed = self.cfg.seed ^ 0xADD ^ id.0;
                let secrets = NodeSecrets::generate(&mut ChaCha20Rng::seed_from_u64(seed), id);
                let record = secrets.record();
                self.nodes.push(SimReplica::new(
                    secrets,
                    &self.genesis,
                    seed,
                    Behaviour::Honest,
                ));
                self.wakes.push(None);
                let i = self.nodes.len() - 1;
                self.schedule(self.now, Event::Wake { node: i });
                RegistryChange::AddNode(Box::new(record))
            }
            ChangeKind::Remove => {
                let Some(victim) = self.nodes.iter().rposition(|n| n.is_honest() && !n.removed)
                else {
                    return;
                };
                self.nodes[victim].removed = true;
                RegistryChange::RemoveNode(self.nodes[victim].id)
            }
        };
        let subnet_id = self
            .genesis
            .block
            .summary()
            .map(|s| s.current.registry.subnet_id)
            .unwrap_or_default();
        let signed = SignedRegistryChange::signed(
            subnet_id,
            self.registry_version,
            registry_change,
            &self.admin,
        );
        let msg = ConsensusMessage::RegistryChange(Box::new(signed));
        self.in_flight = Some(msg.id());
        self.next_change += 1;
        let msg = Rc::new((msg.id(), msg));
        for to in 0..self.nodes.len() {
            self.schedule(
                self.now + 1,
                Event::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn report(&self, liveness_failure: bool, wall: std::time::Duration) -> RunReport {
        let honest: Vec<&SimReplica> = self.honest_members().collect();
        let min_h = honest.iter().map(|n| n.exec.executed.0).min().unwrap_or(0);
        let keys: BTreeSet<&Vec<u8>> = honest.iter().flat_map(|n| n.subnet_keys.iter()).collect();
        let chain_hash = hash_of(
            "thicket-sim-chain",
            &self.chain.range(..=Height(min_h)).collect::<Vec<_>>(),
        );
        RunReport {
            seed: self.cfg.seed,
            safety_violations: self.safety_violations,
            double_signing: self.double_signing,
            amnesiac_double_signing: self.amnesiac_double_signing,
            liveness_failure,
            min_finalized_height: min_h,
            max_finalized_height: honest.iter().map(|n| n.exec.executed.0).max().unwrap_or(0),
            public_key_changes: keys.len().saturating_sub(1) as u64,
            subnet_public_key: hex::encode(
                self.genesis
                    .block
                    .summary()
                    .map(|s| s.current.high.coefficients().public_key().to_der())
                    .unwrap_or_default(),
            ),
            reshares: honest.iter().map(|n| n.reshares).max().unwrap_or(0),
            final_members: honest.iter().map(|n| n.members).max().unwrap_or(0),
            dkg_complaints: honest.iter().map(|n| n.dkg_complaints).max().unwrap_or(0),
            invalid_artifacts: honest.iter().map(|n| n.invalid).sum(),
            state_syncs: self.nodes.iter().map(|n| n.state_syncs).sum(),
            certified_height: honest
                .iter()
                .map(|n| n.core.certified_height().0)
                .max()
                .unwrap_or(0),
            virtual_ms: self.now,
            wall_ms: wall.as_millis() as u64,
            chain_hash: chain_hash.to_string(),
            stall: if liveness_failure {
                self.nodes.iter().map(SimReplica::status).collect()
            } else {
                vec![]
            },
        }
    }
}
