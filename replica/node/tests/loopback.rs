//! Four replicas in one process, each with its own sled store, talking gRPC over loopback:
//! the consensus core finalizes on real time, and a replica stopped and restarted from its
//! store catches up without double signing (its store brings back what it signed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_node::driver::Driver;
use thicket_node::transport::{Peers, TransportService};
use thicket_proto::p2p::transport_server::TransportServer;
use thicket_store::sled_store::SledStore;
use thicket_types::artifacts::CatchUpContent;
use thicket_types::registry::{Registry, SubnetParams};
use thicket_types::{CryptoHash, Height, NodeId};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::transport::server::TcpIncoming;

struct Replica {
    metrics: Arc<thicket_node::metrics::Metrics>,
    shutdown: watch::Sender<bool>,
    driver: tokio::task::JoinHandle<Result<Driver<SledStore>, thicket_store::StoreError>>,
    server: tokio::task::JoinHandle<()>,
}

fn genesis_for(secrets: &[NodeSecrets], urls: &[String], rng: &mut ChaCha20Rng) -> CatchUpContent {
    let registry = Registry {
        subnet_id: CryptoHash([5; 32]),
        version: 0,
        members: secrets
            .iter()
            .zip(urls)
            .map(|(s, url)| (s.node_id, s.record_at(url)))
            .collect(),
        params: SubnetParams {
            unit_delay_ms: 300,
            initial_notary_delay_ms: 100,
            dkg_interval_length: 10,
            dkg_dealings_per_block: 16,
            max_ingress_per_block: 100,
        },
        admin_key: NodeSigningKey::generate(rng).public_key(),
    };
    genesis::in_process(rng, secrets, registry).expect("genesis")
}

async fn start(
    secrets: NodeSecrets,
    genesis: &CatchUpContent,
    listener: TcpListener,
    peers: Vec<(NodeId, String)>,
    dir: &std::path::Path,
) -> Replica {
    let (inbox_tx, inbox) = mpsc::channel(1024);
    let finalized = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(thicket_node::metrics::Metrics::default());
    let service = TransportService::new(inbox_tx, finalized.clone(), metrics.clone());
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(TransportServer::new(service))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await;
    });
    let store = SledStore::open(dir).expect("store opens");
    let peers = Peers::new(&peers).expect("peer URLs");
    let driver = Driver::new(
        secrets,
        genesis,
        store,
        peers,
        inbox,
        finalized,
        metrics.clone(),
    )
    .expect("driver");
    let (shutdown, rx) = watch::channel(false);
    Replica {
        metrics,
        shutdown,
        driver: tokio::spawn(driver.run(rx)),
        server,
    }
}

async fn stop(r: Replica) -> Driver<SledStore> {
    let _ = r.shutdown.send(true);
    let driver = r.driver.await.expect("joins").expect("no storage error");
    r.server.abort();
    driver
}

/// Four replicas' keys, genesis, data directories and bound listeners.
struct Setup {
    secrets: Vec<NodeSecrets>,
    genesis: CatchUpContent,
    dirs: Vec<tempfile::TempDir>,
    addrs: Vec<String>,
    listeners: Vec<TcpListener>,
}

async fn setup(seed: u64) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let secrets: Vec<_> = (0..4)
        .map(|i| NodeSecrets::generate(&mut rng, NodeId(i)))
        .collect();
    let dirs = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut listeners = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..4 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        addrs.push(format!("http://{}", l.local_addr().expect("addr")));
        listeners.push(l);
    }
    let genesis = genesis_for(&secrets, &addrs, &mut rng);
    Setup {
        secrets,
        genesis,
        dirs,
        addrs,
        listeners,
    }
}

/// Stops every replica and checks that all finalized the same block wherever two of them
/// still hold one (safety); returns their finalized heights.
async fn stop_all_and_compare(replicas: impl IntoIterator<Item = Replica>) -> Vec<Height> {
    let mut heights = Vec::new();
    let mut blocks: BTreeMap<Height, CryptoHash> = BTreeMap::new();
    for r in replicas {
        let d = stop(r).await;
        let pool = d.pool();
        heights.push(pool.finalized_height());
        let mut h = pool.root_height();
        while h <= pool.finalized_height() {
            if let Some(hash) = pool.finalized_hash(h) {
                assert_eq!(
                    *blocks.entry(h).or_insert(*hash),
                    *hash,
                    "replicas disagree at {h:?}"
                );
            }
            h = h.next();
        }
    }
    heights
}

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
    let good = thicket_node::wire::encode(&forged);
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
    let mut client = TransportClient::connect(addrs[0].clone())
        .await
        .expect("connects");
    for _ in 0..20 {
        client
            .push(PushRequest {
                artifacts: junk.clone(),
                finalized_height: u64::MAX,
            })
            .await
            .expect("push answered");
    }
    tokio::time::sleep(Duration::from_secs(4)).await;

    let invalid = replicas[0].metrics.encode();
    let count = |kind: &str| {
        invalid
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "thicket_p2p_artifacts_invalid_total{{kind=\"{kind}\"}} "
                ))?
                .parse::<u64>()
                .ok()
            })
            .unwrap_or(0)
    };
    assert!(
        count("Undecodable") >= 80,
        "garbage was not counted:\n{invalid}"
    );
    assert!(
        count("RegistryChange") >= 1,
        "the forged change was not rejected:\n{invalid}"
    );
    let members = replicas[0]
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
