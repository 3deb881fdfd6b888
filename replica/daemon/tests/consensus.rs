//! Consensus over the real transport: four replicas finalize on real time, a replica stopped
//! and restarted from its store catches up without double signing, and a peer's garbage and
//! forgeries change nothing.

mod common;

use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::keys::NodeSecrets;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_replica::tls::{self, Identity, PeerKeys};
use thicket_types::{CryptoHash, Height, NodeId};
use tokio::net::TcpListener;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_finalize_over_grpc_and_one_restarts_from_its_store() {
    let Setup {
        secrets,
        genesis,
        dirs,
        addrs,
        listeners,
    } = setup(1).await;
    let peers_of = |i: usize| -> Vec<(NodeId, String)> {
        (0..4)
            .filter(|j| *j != i)
            .map(|j| (NodeId(j as u64), addrs[j].clone()))
            .collect()
    };
    let mut replicas = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        replicas.push(Some(
            start(secrets[i].clone(), &genesis, l, peers_of(i), dirs[i].path()).await,
        ));
    }

    // Let the subnet run, then stop replica 3 and keep going with the other three.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r3 = stop(replicas[3].take().expect("running")).await;
    let before = r3.pool().finalized_height();
    drop(r3);
    assert!(
        before >= Height(5),
        "replica 3 finalized only {before:?} in 6 s"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Restart it from its store on its old address.
    let l = TcpListener::bind(addrs[3].trim_start_matches("http://"))
        .await
        .expect("rebinds");
    replicas[3] = Some(start(secrets[3].clone(), &genesis, l, peers_of(3), dirs[3].path()).await);
    tokio::time::sleep(Duration::from_secs(6)).await;

    let chains = stop_all_and_compare(replicas.into_iter().flatten()).await;
    println!("replica 3 stopped at {before:?}; finalized heights at the end: {chains:?}");
    let min = *chains.iter().min().expect("four");
    assert!(
        min > before,
        "the restarted replica did not catch up: {chains:?} (was {before:?})"
    );
    assert!(min >= Height(15), "finalization too slow: {chains:?}");
}

/// Replicas started without a peer list find each other in the registry. A peer pushing
/// garbage, forged and oversized artifacts changes nothing: each is dropped and counted, and the
/// honest replicas keep finalizing the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_forgeries_from_a_peer_change_nothing() {
    use thicket_proto::p2p::transport_client::TransportClient;
    use thicket_proto::p2p::{Artifact, PushRequest};
    use thicket_types::artifacts::ConsensusMessage;
    use thicket_types::registry::{RegistryChange, SignedRegistryChange};

    let Setup {
        secrets,
        genesis,
        dirs,
        addrs,
        listeners,
    } = setup(2).await;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut replicas = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        // No peers given: each replica finds the others in the registry's records.
        replicas.push(start(secrets[i].clone(), &genesis, l, vec![], dirs[i].path()).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A registry change removing node 0, validly encoded but signed by an outsider instead of
    // the subnet's administrator.
    let outsider = NodeSigningKey::generate(&mut rng);
    let change = SignedRegistryChange::signed(
        CryptoHash([5; 32]),
        0,
        RegistryChange::RemoveNode(NodeId(0)),
        &outsider,
    );
    let forged = ConsensusMessage::RegistryChange(Box::new(change));
    let good = thicket_replica::wire::encode(&forged);
    let mut huge = vec![12u8, 0, 0, 0];
    huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let junk = vec![
        Artifact {
            id: vec![1; 32],
            body: vec![0xAB; 100],
        },
        Artifact {
            id: vec![2; 5],
            body: good.body.clone(),
        },
        Artifact {
            id: vec![3; 32],
            body: good.body.clone(),
        },
        Artifact {
            id: good.id.clone(),
            body: huge,
        },
        good,
    ];
    // The Byzantine peer is a member (node 3's key), so it gets through mutual TLS.
    let as_node = |s: &NodeSecrets| {
        let keys = PeerKeys::default();
        keys.set([(NodeId(0), secrets[0].signing.public_key().0)].into());
        let identity = Identity::new(s).expect("certificate");
        let cfg = tls::client_config(&identity, &keys, NodeId(0)).expect("TLS config");
        TransportClient::new(tls::channel(&addrs[0], cfg).expect("channel"))
    };
    let mut client = as_node(&secrets[3]);
    for _ in 0..20 {
        client
            .push(PushRequest {
                artifacts: junk.clone(),
                finalized_height: u64::MAX,
            })
            .await
            .expect("push answered");
    }
    // A flood beyond the peer's rate is cut at the transport, counted against that peer.
    let flood: Vec<Artifact> = (0..30_000u32)
        .map(|i| Artifact {
            id: vec![7; 32],
            body: i.to_le_bytes().to_vec(),
        })
        .collect();
    for _ in 0..3 {
        client
            .push(PushRequest {
                artifacts: flood.clone(),
                finalized_height: 0,
            })
            .await
            .expect("push answered");
    }
    // An outsider (a key no registry record holds) does not get past the handshake.
    let outsider_node = NodeSecrets::generate(&mut rng, NodeId(9));
    let refused = as_node(&outsider_node)
        .push(PushRequest {
            artifacts: junk.clone(),
            finalized_height: 0,
        })
        .await;
    assert!(refused.is_err(), "an outsider's push was answered");
    tokio::time::sleep(Duration::from_secs(4)).await;

    let invalid = replicas[0].shared.metrics.encode();
    let count = |kind: &str| {
        metric(
            &replicas[0],
            &format!("thicket_p2p_artifacts_invalid_total{{kind=\"{kind}\"}}"),
        )
    };
    assert!(
        count("Undecodable") >= 80,
        "garbage was not counted:\n{invalid}"
    );
    assert!(
        count("RegistryChange") >= 1,
        "the forged change was not rejected:\n{invalid}"
    );
    let limited = metric(&replicas[0], "thicket_p2p_artifacts_rate_limited_total");
    assert!(limited >= 10_000, "the flood was not limited:\n{invalid}");
    let refused = metric(&replicas[0], "thicket_p2p_tls_refused_total");
    assert!(refused >= 1, "the outsider was not refused:\n{invalid}");
    let members = replicas[0]
        .shared
        .metrics
        .status
        .lock()
        .expect("status")
        .members
        .clone();
    assert_eq!(members, vec![0, 1, 2, 3], "membership changed");

    let heights = stop_all_and_compare(replicas).await;
    assert!(
        heights.iter().all(|h| *h >= Height(10)),
        "finalization stalled: {heights:?}"
    );
}
