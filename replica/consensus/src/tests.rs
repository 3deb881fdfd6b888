//! Role tests: the exact mutations each role returns for a given pool, on a 4-replica genesis
//! made by the real DKG.

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_crypto::{multi_sig, threshold};
use thicket_types::artifacts::{CatchUpContent, ConsensusMessage, SignedContent};
use thicket_types::block::{BlockProposal, Payload};
use thicket_types::registry::{Registry, SubnetParams};
use thicket_types::{CryptoHash, Height, NodeId, Rank};

use crate::keys::{KeyStore, NodeSecrets};
use crate::membership::ranking;
use crate::pool::{Mutation, Pool};
use crate::{aggregator, beacon, block_maker, finalizer, genesis, notary, validator};

struct Fixture {
    secrets: Vec<NodeSecrets>,
    root: CatchUpContent,
    rng: ChaCha20Rng,
}

fn fixture() -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let secrets: Vec<_> = (0..4)
        .map(|i| NodeSecrets::generate(&mut rng, NodeId(i)))
        .collect();
    let registry = Registry {
        subnet_id: CryptoHash([1; 32]),
        version: 0,
        members: secrets.iter().map(|s| (s.node_id, s.record())).collect(),
        params: SubnetParams {
            unit_delay_ms: 1000,
            initial_notary_delay_ms: 300,
            dkg_interval_length: 10,
            dkg_dealings_per_block: 8,
            max_ingress_per_block: 10,
        },
        admin_key: NodeSigningKey::generate(&mut rng).public_key(),
    };
    let root = genesis::in_process(&mut rng, &secrets, registry).unwrap();
    Fixture { secrets, root, rng }
}

impl Fixture {
    fn pool(&self) -> Pool {
        Pool::new(self.root.clone(), None)
    }
    fn keys(&self, i: usize) -> KeyStore {
        let mut k = KeyStore::default();
        k.load_epoch(
            &self.root.block.summary().unwrap().current,
            &self.secrets[i],
        );
        k
    }
    /// Node indices by rank at height 1.
    fn ranked(&self) -> Vec<usize> {
        let epoch = &self.root.block.summary().unwrap().current;
        ranking(epoch, &self.root.beacon.hash())
            .iter()
            .map(|n| n.0 as usize)
            .collect()
    }
    /// The block the replica of rank `rank` proposes at height 1 (at the time it may).
    fn proposal(&mut self, pool: &Pool, rank: usize) -> BlockProposal {
        let i = self.ranked()[rank];
        let out =
            block_maker::make_block(pool, &self.secrets[i], 1000 * rank as u64, &mut self.rng);
        match out.mutations.as_slice() {
            [Mutation::AddToValidated(ConsensusMessage::BlockProposal(p))] => (**p).clone(),
            other => panic!("expected one proposal, got {other:?}"),
        }
    }
}

fn add(pool: &mut Pool, msgs: impl Into<Vec<Mutation>>) {
    pool.apply(msgs.into(), 0);
}

#[test]
fn genesis_members_derive_working_threshold_shares() {
    let f = fixture();
    let epoch = &f.root.block.summary().unwrap().current;
    for i in 0..4 {
        assert!(f.keys(i).share(&epoch.low).is_some());
        assert!(f.keys(i).share(&epoch.high).is_some());
    }
}

#[test]
fn beacon_maker_shares_the_next_beacon_and_aggregator_combines() {
    let f = fixture();
    let mut pool = f.pool();
    let out = beacon::make_share(&pool, &f.secrets[0], &f.keys(0));
    let [Mutation::AddToValidated(ConsensusMessage::RandomBeaconShare(s))] = out.as_slice() else {
        panic!("expected one beacon share, got {out:?}");
    };
    assert_eq!(
        (s.content.height, s.content.parent, s.signer),
        (Height(1), f.root.beacon.hash(), NodeId(0))
    );
    let epoch = &f.root.block.summary().unwrap().current;
    threshold::verify_share(
        &s.signature,
        &s.content.signing_bytes(),
        epoch.low.coefficients(),
        0,
    )
    .unwrap();
    // Threshold f+1 = 2: one share is not enough, two are.
    add(&mut pool, out);
    assert!(beacon::aggregate(&pool).is_empty());
    let share = beacon::make_share(&pool, &f.secrets[1], &f.keys(1));
    add(&mut pool, share);
    let out = beacon::aggregate(&pool);
    assert!(
        matches!(out.as_slice(), [Mutation::AddToValidated(ConsensusMessage::RandomBeacon(b))] if b.content.height == Height(1))
    );
}

#[test]
fn block_makers_wait_for_their_rank() {
    let mut f = fixture();
    let pool = f.pool();
    let ranked = f.ranked();
    let leader = f.proposal(&pool, 0);
    assert_eq!(
        (leader.block.height, leader.block.rank, leader.block.parent),
        (Height(1), Rank(0), f.root.block.hash())
    );
    assert!(matches!(leader.block.payload, Payload::Data(_)));
    // Rank 1 waits unit_delay × 1; rank 2 is no block maker when f = 1.
    let out = block_maker::make_block(&pool, &f.secrets[ranked[1]], 0, &mut f.rng);
    assert!(out.mutations.is_empty());
    assert_eq!(out.wake_at, Some(1000));
    let out = block_maker::make_block(&pool, &f.secrets[ranked[2]], 5000, &mut f.rng);
    assert!(out.mutations.is_empty() && out.wake_at.is_none());
}

#[test]
fn notary_signs_the_lowest_rank_after_its_delay() {
    let mut f = fixture();
    let mut pool = f.pool();
    let p0 = f.proposal(&pool, 0);
    let p1 = f.proposal(&pool, 1);
    add(
        &mut pool,
        vec![Mutation::AddToValidated(ConsensusMessage::BlockProposal(
            Box::new(p1.clone()),
        ))],
    );
    add(
        &mut pool,
        vec![Mutation::AddToValidated(ConsensusMessage::BlockProposal(
            Box::new(p0.clone()),
        ))],
    );
    let me = &f.secrets[0];
    let early = notary::notarize(&pool, me, 299);
    assert!(early.mutations.is_empty());
    assert_eq!(early.wake_at, Some(300));
    let out = notary::notarize(&pool, me, 300);
    let [Mutation::AddToValidated(ConsensusMessage::NotarizationShare(s))] =
        out.mutations.as_slice()
    else {
        panic!("expected one share, got {out:?}");
    };
    assert_eq!(s.content.block, p0.block.hash());
    multi_sig::verify_individual(
        &s.signature,
        &s.content.signing_bytes(),
        &me.committee.public_key(),
    )
    .unwrap();
    add(&mut pool, out.mutations);
    assert!(
        notary::notarize(&pool, me, 5000).mutations.is_empty(),
        "signs once, never a higher rank"
    );
}

#[test]
fn finalizer_signs_only_the_single_notarized_block_it_alone_notarized() {
    let mut f = fixture();
    let mut pool = f.pool();
    let p0 = f.proposal(&pool, 0);
    let p1 = f.proposal(&pool, 1);
    add(
        &mut pool,
        vec![Mutation::AddToValidated(ConsensusMessage::BlockProposal(
            Box::new(p0.clone()),
        ))],
    );
    for i in 0..3 {
        let share = notary::notarize(&pool, &f.secrets[i], 300).mutations;
        add(&mut pool, share);
    }
    let notarization = aggregator::aggregate(&pool);
    add(&mut pool, notarization);
    assert_eq!(pool.notarized_height(), Height(1));
    // Node 3 signed nothing else: it finality-signs p0.
    let out = finalizer::finalize(&pool, &f.secrets[3]);
    assert!(
        matches!(out.as_slice(), [Mutation::AddToValidated(ConsensusMessage::FinalizationShare(s))] if s.content.block == p0.block.hash())
    );
    // A node that notarized another block at height 1 must not.
    let other = thicket_types::artifacts::NotarizationContent {
        height: Height(1),
        block: p1.block.hash(),
    };
    let share = thicket_types::artifacts::Share {
        content: other,
        signer: NodeId(3),
        signature: f.secrets[3].committee.sign(&other.signing_bytes()),
    };
    add(
        &mut pool,
        vec![Mutation::AddToValidated(
            ConsensusMessage::NotarizationShare(share),
        )],
    );
    assert!(finalizer::finalize(&pool, &f.secrets[3]).is_empty());
}

/// Ingress must carry its sender's proof wherever it travels: a replica cannot relay, or put
/// in a block, a call it made up in someone else's name.
#[test]
fn ingress_without_its_senders_proof_is_refused_in_gossip_and_in_blocks() {
    use thicket_types::ingress::{ANONYMOUS, IngressMessage, SignedIngress};
    let mut f = fixture();
    let mut pool = f.pool();
    let call = |sender: &[u8]| {
        SignedIngress::anonymous(IngressMessage {
            sender: sender.to_vec(),
            canister_id: vec![1],
            method_name: "transfer".into(),
            arg: vec![],
            ingress_expiry: u64::MAX,
            nonce: None,
        })
        .to_bytes()
    };
    let honest = ConsensusMessage::Ingress(call(&ANONYMOUS));
    let forged = ConsensusMessage::Ingress(call(&[7; 29]));
    pool.insert_unvalidated(honest.clone());
    pool.insert_unvalidated(forged.clone());
    let out = validator::validate(&pool, 0);
    assert!(out.contains(&Mutation::MoveToValidated(honest.id())));
    assert!(out.iter().any(|m| matches!(m, Mutation::HandleInvalid(i, reason) if *i == forged.id() && reason.contains("sign"))));

    // The same forgery inside a properly signed block makes the block invalid.
    let mut p = f.proposal(&pool, 0);
    let maker = f.ranked()[0];
    if let thicket_types::block::Payload::Data(d) = &mut p.block.payload {
        d.ingress.push(call(&[7; 29]));
    }
    p.signature = f.secrets[maker]
        .signing
        .sign(&BlockProposal::signed_content(&p.block.hash()));
    let msg = ConsensusMessage::BlockProposal(Box::new(p));
    let mut pool = f.pool();
    pool.insert_unvalidated(msg.clone());
    let out = validator::validate(&pool, 0);
    assert!(
        out.iter().any(|m| matches!(m, Mutation::HandleInvalid(i, reason) if *i == msg.id() && reason.contains("ingress"))),
        "{out:?}"
    );

    // Ingress the pool already holds, checked when it arrived, is not checked again inside
    // a block: each message costs one check per replica. (Shown with bytes no check would
    // pass, put in as if the HTTP interface had checked them.)
    let mut pool = f.pool();
    assert!(pool.insert_checked(forged.clone(), 0));
    assert!(pool.waiting_ingress(&call(&[7; 29])).is_some());
    pool.insert_unvalidated(msg.clone());
    let out = validator::validate(&pool, 0);
    assert!(
        out.contains(&Mutation::MoveToValidated(msg.id())),
        "{out:?}"
    );
}

#[test]
fn validator_drops_forgeries_and_waits_for_missing_parents() {
    let mut f = fixture();
    let mut pool = f.pool();
    let good = f.proposal(&pool, 0);
    let mut forged = good.clone();
    forged.signature.0[5] ^= 1;
    let mut orphan = good.clone();
    orphan.block.height = Height(2);
    orphan.block.parent = CryptoHash([7; 32]);
    for p in [&good, &forged, &orphan] {
        pool.insert_unvalidated(ConsensusMessage::BlockProposal(Box::new(p.clone())));
    }
    let out = validator::validate(&pool, 0);
    let id = |p: &BlockProposal| ConsensusMessage::BlockProposal(Box::new(p.clone())).id();
    assert!(out.contains(&Mutation::MoveToValidated(id(&good))));
    assert!(out.iter().any(|m| matches!(m, Mutation::HandleInvalid(i, reason) if *i == id(&forged) && reason.contains("signature"))));
    assert!(!out.iter().any(|m| matches!(m, Mutation::MoveToValidated(i) | Mutation::HandleInvalid(i, _) | Mutation::RemoveFromUnvalidated(i) if *i == id(&orphan))));
    assert_eq!(out.len(), 2);
}

#[test]
fn an_equivocating_rank_is_skipped_by_the_notary() {
    let mut f = fixture();
    let mut pool = f.pool();
    let p0 = f.proposal(&pool, 0);
    let maker = f.ranked()[0];
    let mut twin = p0.block.clone();
    twin.time_ms += 1;
    let twin = BlockProposal {
        signature: f.secrets[maker]
            .signing
            .sign(&BlockProposal::signed_content(&twin.hash())),
        block: twin,
    };
    for p in [p0, twin] {
        add(
            &mut pool,
            vec![Mutation::AddToValidated(ConsensusMessage::BlockProposal(
                Box::new(p),
            ))],
        );
    }
    assert!(
        notary::notarize(&pool, &f.secrets[0], 10_000)
            .mutations
            .is_empty()
    );
    let p1 = f.proposal(&pool, 1);
    add(
        &mut pool,
        vec![Mutation::AddToValidated(ConsensusMessage::BlockProposal(
            Box::new(p1.clone()),
        ))],
    );
    let out = notary::notarize(&pool, &f.secrets[0], 10_000);
    assert!(
        matches!(out.mutations.as_slice(), [Mutation::AddToValidated(ConsensusMessage::NotarizationShare(s))] if s.content.block == p1.block.hash())
    );
}

#[test]
fn genesis_rejects_a_committee_key_without_proof_of_possession() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let secrets: Vec<_> = (0..4)
        .map(|i| NodeSecrets::generate(&mut rng, NodeId(i)))
        .collect();
    let mut members: BTreeMap<_, _> = secrets.iter().map(|s| (s.node_id, s.record())).collect();
    // A rogue key: someone else's proof of possession.
    let stolen = members[&NodeId(0)].committee_pop;
    members.get_mut(&NodeId(3)).unwrap().committee_pop = stolen;
    let registry = Registry {
        subnet_id: CryptoHash([2; 32]),
        version: 0,
        members,
        params: fixture()
            .root
            .block
            .summary()
            .unwrap()
            .current
            .registry
            .params
            .clone(),
        admin_key: NodeSigningKey::generate(&mut rng).public_key(),
    };
    let err = genesis::root(registry, &BTreeMap::new(), &[]).unwrap_err();
    assert!(err.to_string().contains("proof of possession"), "{err}");
}

#[test]
fn registry_changes_are_bound_to_their_subnet_and_version() {
    use thicket_types::registry::{RegistryChange, RegistryError, SignedRegistryChange};
    let mut f = fixture();
    let mut registry = f.root.block.summary().unwrap().current.registry.clone();
    let admin = NodeSigningKey::generate(&mut f.rng);
    registry.admin_key = admin.public_key();
    let newcomer = NodeSecrets::generate(&mut f.rng, NodeId(9)).record();
    let add = |subnet, version| {
        SignedRegistryChange::signed(
            subnet,
            version,
            RegistryChange::AddNode(Box::new(newcomer.clone())),
            &admin,
        )
    };
    let next = registry.apply(&add(registry.subnet_id, 0)).unwrap();
    assert_eq!((next.version, next.members.len()), (1, 5));
    assert_eq!(
        registry.apply(&add(CryptoHash([3; 32]), 0)),
        Err(RegistryError::BadSignature)
    );
    assert_eq!(
        next.apply(&add(registry.subnet_id, 0)),
        Err(RegistryError::WrongVersion {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        next.apply(&add(registry.subnet_id, 1)),
        Err(RegistryError::AlreadyMember(NodeId(9)))
    );
}

#[test]
fn blocks_from_the_future_wait_until_their_time() {
    let mut f = fixture();
    let mut pool = f.pool();
    let mut p = f.proposal(&pool, 0);
    let maker = f.ranked()[0];
    p.block.time_ms = 60_000;
    p.signature = f.secrets[maker]
        .signing
        .sign(&BlockProposal::signed_content(&p.block.hash()));
    let id = ConsensusMessage::BlockProposal(Box::new(p.clone())).id();
    pool.insert_unvalidated(ConsensusMessage::BlockProposal(Box::new(p)));
    assert!(
        validator::validate(&pool, 1_000).is_empty(),
        "too far ahead: waits"
    );
    let later = 60_000 - validator::MAX_BLOCK_TIME_AHEAD_MS;
    assert_eq!(
        validator::validate(&pool, later),
        vec![Mutation::MoveToValidated(id)]
    );
}

#[test]
fn node_secrets_roundtrip_through_storage() {
    let f = fixture();
    let s = &f.secrets[2];
    let back = NodeSecrets::from_bytes(&s.to_bytes()).unwrap();
    assert_eq!(back.record(), s.record());
    assert!(NodeSecrets::from_bytes(b"garbage").is_err());
}

/// The ids of validated ingress are remembered (so copies cost nothing) only as long as a
/// copy could still be executed: a replica under steady load does not keep every id it ever
/// saw.
#[test]
fn ingress_ids_are_forgotten_once_no_copy_could_execute() {
    use crate::pool::SEEN_UNORDERED_MS;
    use thicket_types::ingress::{ANONYMOUS, IngressMessage, SignedIngress};
    let f = fixture();
    let mut pool = f.pool();
    let call = |n: u8| {
        ConsensusMessage::Ingress(
            SignedIngress::anonymous(IngressMessage {
                sender: ANONYMOUS.to_vec(),
                canister_id: vec![1],
                method_name: "m".into(),
                arg: vec![n],
                ingress_expiry: u64::MAX,
                nonce: None,
            })
            .to_bytes(),
        )
    };
    let base = pool.seen_len();
    assert!(pool.insert_checked(call(1), 1_000));
    pool.insert_unvalidated(call(2));
    pool.apply(vec![Mutation::MoveToValidated(call(2).id())], 2_000);
    assert_eq!(pool.seen_len(), base + 2);
    // Ordered: no longer waiting, but still remembered, so a late copy is ignored.
    pool.apply(vec![Mutation::RemoveOrdered(call(1).id())], 3_000);
    pool.insert_unvalidated(call(1));
    assert_eq!(pool.unvalidated_len(), 0);
    // Past the time to live (and drift) of the first two, a new message makes them go.
    assert!(pool.insert_checked(call(3), 2_000 + SEEN_UNORDERED_MS + 1));
    assert_eq!(pool.seen_len(), base + 1);
    pool.insert_unvalidated(call(1));
    assert_eq!(
        pool.unvalidated_len(),
        1,
        "a copy after the id was forgotten is checked again"
    );
}

#[test]
fn block_shares_wait_for_the_threshold_and_are_checked_together_then_one_by_one() {
    let mut f = fixture();
    let p0 = f.proposal(&f.pool(), 0);
    // A pool holding the block, and the given shares from peers.
    let pool_with = |shares: &[&thicket_types::artifacts::NotarizationShare]| {
        let mut pool = f.pool();
        add(
            &mut pool,
            vec![Mutation::AddToValidated(ConsensusMessage::BlockProposal(
                Box::new(p0.clone()),
            ))],
        );
        for s in shares {
            pool.insert_unvalidated(ConsensusMessage::NotarizationShare((*s).clone()));
        }
        pool
    };
    let share = |i: usize| {
        let out = notary::notarize(&pool_with(&[]), &f.secrets[i], 5000);
        let [Mutation::AddToValidated(ConsensusMessage::NotarizationShare(s))] =
            out.mutations.as_slice()
        else {
            panic!("expected one share, got {out:?}");
        };
        s.clone()
    };
    let (s1, s2, s3) = (share(1), share(2), share(3));
    let mut forged = s3.clone();
    forged.signature = f.secrets[3].committee.sign(b"not this block");
    let id = |s: &thicket_types::artifacts::NotarizationShare| {
        ConsensusMessage::NotarizationShare(s.clone()).id()
    };

    // Two of the three needed: nothing is checked yet, nothing dropped.
    assert!(validator::validate(&pool_with(&[&s1, &s2]), 0).is_empty());
    // With this replica's own share validated, the two make an aggregate: both validated,
    // and the notarization of the three verifies.
    let mut pool = pool_with(&[&s1, &s2]);
    let own = notary::notarize(&pool, &f.secrets[0], 5000).mutations;
    add(&mut pool, own);
    let mut out = validator::validate(&pool, 0);
    out.sort_by_key(|m| format!("{m:?}"));
    let mut want = vec![
        Mutation::MoveToValidated(id(&s1)),
        Mutation::MoveToValidated(id(&s2)),
    ];
    want.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(out, want);
    add(&mut pool, out);
    let n = aggregator::aggregate(&pool);
    let [Mutation::AddToValidated(ConsensusMessage::Notarization(n))] = n.as_slice() else {
        panic!("expected a notarization, got {n:?}");
    };
    let epoch = &f.root.block.summary().unwrap().current;
    let keys: Vec<_> = n
        .signers
        .iter()
        .map(|s| epoch.registry.members[s].committee_key)
        .collect();
    assert_eq!(keys.len(), 3);
    multi_sig::verify_combined(&n.signature, &n.content.signing_bytes(), &keys).unwrap();

    // A forged share among three: their sum fails, so each is checked; the forgery alone is
    // dropped as invalid.
    let mut pool = pool_with(&[&s1, &s2, &forged]);
    let out = validator::validate(&pool, 0);
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out.contains(&Mutation::MoveToValidated(id(&s1))));
    assert!(out.contains(&Mutation::MoveToValidated(id(&s2))));
    assert!(out.iter().any(
        |m| matches!(m, Mutation::HandleInvalid(i, reason) if *i == id(&forged) && reason.contains("signature"))
    ));
    // The same signer's honest share is then validated on its own.
    add(&mut pool, out);
    pool.insert_unvalidated(ConsensusMessage::NotarizationShare(s3.clone()));
    assert_eq!(
        validator::validate(&pool, 0),
        vec![Mutation::MoveToValidated(id(&s3))]
    );
}
