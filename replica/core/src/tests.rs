//! The core's commands for given events, on a 4-replica genesis made by the real DKG: exact
//! `Ready` contents for single steps, and a lock-step network of four cores for what needs
//! rounds (delivery, certification, catch-up and state sync, retransmission).

use std::collections::BTreeSet;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::delivery::HashChainState;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_consensus::pool::Pool;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_store::Op;
use thicket_types::artifacts::{CatchUpContent, ConsensusMessage};
use thicket_types::block::DkgTag;
use thicket_types::ingress::{ANONYMOUS, IngressMessage, SignedIngress};
use thicket_types::registry::{Registry, SubnetParams};
use thicket_types::{CryptoHash, Height, NodeId};

use thicket_consensus::StateReader;

use crate::{Core, Event, Executed, Ready, SYNC_RETRY_MS, To};

pub(crate) struct Fixture {
    pub(crate) secrets: Vec<NodeSecrets>,
    root: CatchUpContent,
}

pub(crate) fn fixture() -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let secrets: Vec<_> = (0..4)
        .map(|i| NodeSecrets::generate(&mut rng, NodeId(i)))
        .collect();
    let registry = Registry {
        subnet_id: CryptoHash([2; 32]),
        version: 0,
        members: secrets.iter().map(|s| (s.node_id, s.record())).collect(),
        params: SubnetParams {
            unit_delay_ms: 1000,
            initial_notary_delay_ms: 300,
            dkg_interval_length: 5,
            dkg_dealings_per_block: 8,
            max_ingress_per_block: 10,
        },
        admin_key: NodeSigningKey::generate(&mut rng).public_key(),
    };
    let root = genesis::in_process(&mut rng, &secrets, registry).expect("genesis");
    Fixture { secrets, root }
}

impl Fixture {
    pub(crate) fn core(&self, i: usize) -> Core {
        Core::new(
            self.secrets[i].clone(),
            Pool::new(self.root.clone(), None),
            ChaCha20Rng::seed_from_u64(i as u64),
            Height(0),
        )
    }
}

fn ingress(n: u64, expiry_ns: u64) -> SignedIngress {
    SignedIngress::anonymous(IngressMessage {
        sender: ANONYMOUS.to_vec(),
        canister_id: vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        method_name: "m".into(),
        arg: n.to_be_bytes().to_vec(),
        ingress_expiry: expiry_ns,
        nonce: None,
    })
}

/// Four cores in lock step: every message reaches every other core at the next round; blocks
/// are executed on a hash chain at once; time advances to the earliest wake-up.
struct Net {
    cores: Vec<Core>,
    states: Vec<HashChainState>,
    inboxes: Vec<Vec<(CryptoHash, ConsensusMessage)>>,
    now: u64,
    /// Everything each core was told to persist and to send, in order.
    persisted: Vec<Vec<Op>>,
    sent: Vec<Vec<ConsensusMessage>>,
    delivered: Vec<Vec<Height>>,
    certified: Vec<Vec<(Height, CryptoHash)>>,
    wake: Vec<Option<u64>>,
    /// A replica whose certification shares reach its peers with a forged signature (and no
    /// certification reaches anyone: each combines its own).
    forger: Option<usize>,
}

impl Net {
    fn new(f: &Fixture) -> Self {
        let n = f.secrets.len();
        Net {
            cores: (0..n).map(|i| f.core(i)).collect(),
            states: vec![HashChainState::default(); n],
            inboxes: vec![vec![]; n],
            now: 0,
            persisted: vec![vec![]; n],
            sent: vec![vec![]; n],
            delivered: vec![vec![]; n],
            certified: vec![vec![]; n],
            wake: vec![None; n],
            forger: None,
        }
    }

    fn step(&mut self, i: usize, event: Event) {
        let mut events = vec![event];
        while let Some(event) = events.pop() {
            let ready = self.cores[i].step(event, self.now, &self.states[i]);
            events.extend(self.perform(i, ready));
        }
    }

    fn perform(&mut self, i: usize, ready: Ready) -> Option<Event> {
        self.persisted[i].extend(ready.persist);
        for (to, mut msg) in ready.send {
            self.sent[i].push(msg.clone());
            if self.forger.is_some() && matches!(msg, ConsensusMessage::Certification(_)) {
                continue;
            }
            if let (Some(f), ConsensusMessage::CertificationShare(s)) = (self.forger, &mut msg)
                && f == i
            {
                s.signature = thicket_crypto::threshold::SigShare(thicket_crypto::bls::hash_to_g1(
                    b"forged",
                    b"THICKET_TEST",
                ));
            }
            for j in 0..self.cores.len() {
                let wanted = match &to {
                    To::All => true,
                    To::Nodes(ids) => ids.contains(&NodeId(j as u64)),
                };
                if j != i && wanted {
                    self.inboxes[j].push((msg.id(), msg.clone()));
                }
            }
        }
        self.wake[i] = ready.wake_at;
        for c in ready.certified {
            self.certified[i].push((c.content.height, c.content.root));
        }
        if let Some(root) = ready.sync {
            self.states[i].sync_to(&root);
            return Some(Event::Synced {
                height: root.block.height,
                ok: true,
            });
        }
        if ready.deliver.is_empty() {
            return None;
        }
        let done = ready
            .deliver
            .iter()
            .map(|d| {
                self.states[i].execute(&d.hash, &d.block);
                self.delivered[i].push(d.block.height);
                Executed {
                    height: d.block.height,
                    certify: d.certify.then_some(self.states[i].state),
                }
            })
            .collect();
        Some(Event::Executed(done))
    }

    /// One round: each core takes what arrived (or the time).
    fn round(&mut self) {
        for i in 0..self.cores.len() {
            let arrived = std::mem::take(&mut self.inboxes[i]);
            let event = if arrived.is_empty() {
                Event::Tick
            } else {
                Event::Artifacts(arrived)
            };
            self.step(i, event);
        }
        if self.inboxes.iter().all(Vec::is_empty) {
            let next = self.wake.iter().flatten().min().copied();
            self.now = next.map_or(self.now + 100, |w| w.max(self.now + 1));
        }
    }

    fn run_until(&mut self, done: impl Fn(&Net) -> bool) {
        for _ in 0..2_000 {
            if done(self) {
                return;
            }
            self.round();
        }
        panic!("no progress: finalized {:?}", self.finalized());
    }

    fn finalized(&self) -> Vec<Height> {
        self.cores
            .iter()
            .map(|c| c.pool().finalized_height())
            .collect()
    }
}

#[test]
fn a_fresh_replica_signs_a_beacon_share_deals_persists_them_and_names_its_peers() {
    let f = fixture();
    let mut core = f.core(0);
    let ready = core.step(Event::Tick, 0, &HashChainState::default());
    // Its beacon share for height 1, and its dealings of the interval's low and high keys.
    let sent: Vec<ConsensusMessage> = match ready.send.as_slice() {
        [
            (To::All, b @ ConsensusMessage::RandomBeaconShare(s)),
            (To::All, low @ ConsensusMessage::Dealing(l)),
            (To::All, high @ ConsensusMessage::Dealing(h)),
        ] => {
            assert_eq!((s.content.height, s.signer), (Height(1), NodeId(0)));
            assert_eq!((l.dealer, l.dkg.tag), (NodeId(0), DkgTag::Low));
            assert_eq!((h.dealer, h.dkg.tag), (NodeId(0), DkgTag::High));
            vec![b.clone(), low.clone(), high.clone()]
        }
        other => panic!("expected a beacon share and two dealings, got {other:?}"),
    };
    assert_eq!(
        ready.persist,
        sent.into_iter().map(Op::PutArtifact).collect::<Vec<_>>()
    );
    assert!(ready.deliver.is_empty() && ready.sync.is_none() && ready.fetch.is_none());
    let peers: Vec<NodeId> = ready
        .peers
        .expect("peers on the first step")
        .iter()
        .map(|r| r.node_id)
        .collect();
    assert_eq!(peers, (0..4).map(NodeId).collect::<Vec<_>>());
    assert!(!ready.removed);

    // Nothing new happened: nothing to do, the same peers are not named again.
    let again = core.step(Event::Tick, 0, &HashChainState::default());
    assert!(again.persist.is_empty() && again.send.is_empty() && again.peers.is_none());
}

#[test]
fn finalized_blocks_are_delivered_once_in_order_and_the_state_is_certified() {
    let f = fixture();
    let mut net = Net::new(&f);
    net.run_until(|n| {
        n.delivered.iter().all(|d| d.len() >= 4) && n.certified.iter().all(|c| !c.is_empty())
    });
    for i in 0..4 {
        let d = &net.delivered[i];
        let expected: Vec<Height> = (1..=d.len() as u64).map(Height).collect();
        assert_eq!(d, &expected, "replica {i} delivered out of order or twice");
    }
    // Every replica saw the same root certified at each height it certified.
    let mut roots = std::collections::BTreeMap::new();
    for (i, c) in net.certified.iter().enumerate() {
        for (h, root) in c {
            assert_eq!(
                *roots.entry(*h).or_insert(*root),
                *root,
                "replica {i} at {h:?}"
            );
            assert_eq!(Some(*root), net.states[i].state_hash(*h));
        }
    }
    // Nothing is sent that was not persisted (ingress and certification aside, which the store
    // does not keep).
    for i in 0..4 {
        let stored: BTreeSet<CryptoHash> = net.persisted[i]
            .iter()
            .filter_map(|op| match op {
                Op::PutArtifact(m) => Some(m.id()),
                _ => None,
            })
            .collect();
        for m in &net.sent[i] {
            let own = !matches!(
                m,
                ConsensusMessage::CertificationShare(_)
                    | ConsensusMessage::Certification(_)
                    | ConsensusMessage::Ingress(_)
            );
            if own {
                assert!(
                    stored.contains(&m.id()),
                    "replica {i} sent {m:?} unpersisted"
                );
            }
        }
    }
}

#[test]
fn a_forged_certification_share_is_set_aside_and_the_rest_certify() {
    // Replica 0's shares come first when combined: its forged ones make every peer's first
    // combination fail, check the shares one by one, and combine the valid ones (no replica
    // hears of another's certification here).
    let f = fixture();
    let mut net = Net::new(&f);
    net.forger = Some(0);
    net.run_until(|n| n.certified.iter().all(|c| c.len() >= 3));
    for (i, c) in net.certified.iter().enumerate() {
        for (h, root) in c {
            assert_eq!(
                Some(*root),
                net.states[i].state_hash(*h),
                "replica {i} at {h:?}"
            );
        }
    }
}

#[test]
fn ingress_admitted_here_goes_to_every_peer_and_is_ordered_once() {
    let f = fixture();
    let mut net = Net::new(&f);
    let msg = ingress(1, u64::MAX);
    net.cores[1]
        .admit_ingress(msg.clone(), 0)
        .expect("admitted");
    net.step(1, Event::Tick);
    let id = ConsensusMessage::Ingress(msg.to_bytes()).id();
    assert!(net.sent[1].iter().any(|m| m.id() == id));
    net.run_until(|n| {
        n.cores
            .iter()
            .all(|c| c.pool().waiting_len() == 0 && c.pool().finalized_height() >= Height(2))
    });
    // Ordered in exactly one finalized block.
    let pool = net.cores[0].pool();
    let ordered = (1..=pool.finalized_height().0)
        .filter_map(|h| pool.finalized_block(Height(h)))
        .filter_map(|b| b.data())
        .flat_map(|d| d.ingress.iter())
        .filter(|i| ConsensusMessage::Ingress((*i).clone()).id() == id)
        .count();
    assert_eq!(ordered, 1);
}

#[test]
fn ingress_beyond_twenty_blocks_waiting_is_refused_until_the_pool_drains() {
    // 10 messages per block in the fixture: 200 may wait.
    let f = fixture();
    let mut net = Net::new(&f);
    let limit = 10 * crate::admission::WAITING_BLOCKS;
    for n in 0..limit as u64 {
        net.cores[1]
            .admit_ingress(ingress(n, u64::MAX), 0)
            .expect("admitted");
    }
    net.step(1, Event::Tick);
    assert_eq!(net.cores[1].pool().waiting_len(), limit);
    let refused = net.cores[1]
        .admit_ingress(ingress(9_999, u64::MAX), 0)
        .expect_err("refused");
    assert_eq!(refused.waiting, limit);
    assert!(refused.to_string().contains("retry later"), "{refused}");
    net.run_until(|n| n.cores.iter().all(|c| c.pool().waiting_len() == 0));
    net.cores[1]
        .admit_ingress(ingress(9_999, u64::MAX), 0)
        .expect("admitted once ordered");
}

#[test]
fn expired_ingress_leaves_the_pool_at_the_next_retransmission() {
    let f = fixture();
    let mut core = f.core(0);
    let now_ms = 10_000_000;
    // Expired beyond the permitted drift.
    let stale = ingress(2, 1);
    core.admit_ingress(stale, now_ms).expect("admitted");
    // Within the drift: stays.
    let drift_ms = thicket_types::ingress::PERMITTED_DRIFT_NS / 1_000_000;
    let late = ingress(3, (now_ms - drift_ms / 2) * 1_000_000);
    core.admit_ingress(late.clone(), now_ms).expect("admitted");
    let state = HashChainState::default();
    core.step(Event::Tick, now_ms, &state);
    assert_eq!(core.pool().waiting_len(), 2);
    core.step(Event::Retransmit { peers: vec![] }, now_ms, &state);
    assert_eq!(core.pool().waiting_len(), 1);
    let id = ConsensusMessage::Ingress(late.to_bytes()).id();
    assert!(core.pool().waiting_get(&id).is_some());
    // Past the drift: goes at the next retransmission.
    core.step(
        Event::Retransmit { peers: vec![] },
        now_ms + drift_ms,
        &state,
    );
    assert_eq!(core.pool().waiting_len(), 0);
}

#[test]
fn retransmission_fetches_from_a_peer_ahead_and_resends_own_artifacts_when_stuck() {
    let f = fixture();
    let mut core = f.core(0);
    let state = HashChainState::default();
    let first = core.step(Event::Tick, 0, &state);
    let own: Vec<CryptoHash> = first.send.iter().map(|(_, m)| m.id()).collect();
    let peers = vec![(NodeId(1), Height(0)), (NodeId(2), Height(5))];
    let ready = core.step(Event::Retransmit { peers }, 0, &state);
    assert_eq!(ready.fetch, Some((NodeId(2), Height(1))));
    // No progress since it started: its own beacon share and dealings go out again, with the
    // aggregate of the open height (the genesis beacon).
    let resent: BTreeSet<CryptoHash> = ready.send.iter().map(|(_, m)| m.id()).collect();
    let beacon = ConsensusMessage::RandomBeacon(f.root.beacon.clone()).id();
    let expected: BTreeSet<CryptoHash> = own.into_iter().chain([beacon]).collect();
    assert_eq!(resent, expected);
    // Nobody ahead: no fetch.
    let ready = core.step(
        Event::Retransmit {
            peers: vec![(NodeId(1), Height(0))],
        },
        0,
        &state,
    );
    assert_eq!(ready.fetch, None);
}

#[test]
fn a_stuck_replica_resends_its_own_artifacts_but_none_of_its_waiting_ingress() {
    let f = fixture();
    let mut core = f.core(0);
    let state = HashChainState::default();
    core.step(Event::Tick, 0, &state);
    for n in 0..50 {
        core.admit_ingress(ingress(n, u64::MAX), 0)
            .expect("admitted");
    }
    core.step(Event::Tick, 0, &state);
    assert_eq!(core.pool().waiting_len(), 50);
    // Stuck (no peer, no progress): its own consensus artifacts go out again, none of the
    // waiting ingress (under overload, re-sending it to every peer every second kept the
    // subnet from recovering; the replica holding a message orders it in its own blocks).
    for _ in 0..3 {
        let ready = core.step(Event::Retransmit { peers: vec![] }, 0, &state);
        assert!(!ready.send.is_empty());
        assert!(
            ready
                .send
                .iter()
                .all(|(_, m)| !matches!(m, ConsensusMessage::Ingress(_))),
            "no ingress re-sent"
        );
    }
}

#[test]
fn a_replica_below_the_root_syncs_then_executes_on_and_retries_a_failed_sync_after_a_pause() {
    let f = fixture();
    let mut net = Net::new(&f);
    // Past the first summary (height 5) and its catch-up package.
    net.run_until(|n| n.cores.iter().all(|c| c.pool().root_height() >= Height(5)));
    let cup = net.cores[0].pool().latest_cup().expect("a CUP").clone();
    let mut fresh = Core::new(
        f.secrets[3].clone(),
        Pool::new(cup.content.clone(), Some(cup.clone())),
        ChaCha20Rng::seed_from_u64(9),
        Height(0),
    );
    let mut state = HashChainState::default();
    let ready = fresh.step(Event::Tick, net.now, &state);
    assert_eq!(ready.sync.as_ref(), Some(&cup.content));
    assert!(ready.deliver.is_empty());
    // Asked once while it runs.
    assert!(fresh.step(Event::Tick, net.now, &state).sync.is_none());
    // A failed sync is retried after the pause, not before.
    let h = cup.content.block.height;
    let failed = fresh.step(
        Event::Synced {
            height: h,
            ok: false,
        },
        net.now,
        &state,
    );
    assert!(failed.sync.is_none());
    assert_eq!(
        failed.wake_at.map(|w| w <= net.now + SYNC_RETRY_MS),
        Some(true)
    );
    let later = net.now + SYNC_RETRY_MS;
    assert_eq!(
        fresh.step(Event::Tick, later, &state).sync,
        Some(cup.content.clone())
    );
    state.sync_to(&cup.content);
    let ready = fresh.step(
        Event::Synced {
            height: h,
            ok: true,
        },
        later,
        &state,
    );
    assert!(ready.sync.is_none());
    assert_eq!(fresh.syncing(), None);
}

#[test]
fn a_replica_recovering_from_a_lost_store_signs_no_shares_where_it_may_have_signed_before() {
    let f = fixture();
    let mut net = Net::new(&f);
    let floor = Height(3);
    net.cores[3] = f.core(3).recovering(floor);
    net.run_until(|n| n.finalized().iter().all(|h| *h >= Height(6)));
    for m in &net.sent[3] {
        match m {
            ConsensusMessage::NotarizationShare(s) => assert!(s.content.height > floor, "{m:?}"),
            ConsensusMessage::FinalizationShare(s) => {
                assert!(s.content.height > floor.next(), "{m:?}")
            }
            _ => {}
        }
    }
    // It signs again above the floor.
    assert!(
        net.sent[3]
            .iter()
            .any(|m| matches!(m, ConsensusMessage::FinalizationShare(_)))
    );
}
