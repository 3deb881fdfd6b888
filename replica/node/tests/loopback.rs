//! Four replicas in one process, each with its own sled store, talking gRPC over loopback:
//! the consensus core finalizes on real time, and a replica stopped and restarted from its
//! store catches up without double signing (its store brings back what it signed).

use std::collections::BTreeMap;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_node::driver::Driver;
use thicket_node::node::{self, Node};
use thicket_node::tls::{self, Identity, PeerKeys};
use thicket_store::sled_store::SledStore;
use thicket_types::artifacts::CatchUpContent;
use thicket_types::registry::{Registry, SubnetParams};
use thicket_types::{CryptoHash, Height, NodeId};
use tokio::net::TcpListener;

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
            max_ingress_per_block: 1000,
        },
        admin_key: NodeSigningKey::generate(rng).public_key(),
    };
    genesis::in_process(rng, secrets, registry).expect("genesis")
}

type Replica = Node;

async fn start(
    secrets: NodeSecrets,
    genesis: &CatchUpContent,
    listener: TcpListener,
    peers: Vec<(NodeId, String)>,
    dir: &std::path::Path,
) -> Replica {
    start_with_http(secrets, genesis, listener, peers, dir)
        .await
        .0
}

/// Starts a replica; also returns the base URL of its HTTP endpoint.
async fn start_with_http(
    secrets: NodeSecrets,
    genesis: &CatchUpContent,
    listener: TcpListener,
    peers: Vec<(NodeId, String)>,
    dir: &std::path::Path,
) -> (Replica, String) {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", http.local_addr().expect("addr"));
    let node = node::start(secrets, genesis, dir, listener, http, &peers)
        .await
        .expect("replica starts");
    (node, url)
}

async fn stop(r: Replica) -> Driver<SledStore> {
    r.stop().await.expect("stops cleanly")
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
    let limited = metric(
        &replicas[0],
        "thicket_p2p_artifacts_rate_limited_total{peer=\"3\"}",
    );
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

/// A CBOR call envelope from the anonymous sender, and its request id.
fn call_envelope(canister: &[u8], nonce: u64, expiry_ns: u64) -> (Vec<u8>, String) {
    let msg = thicket_types::ingress::IngressMessage {
        sender: vec![4],
        canister_id: canister.to_vec(),
        method_name: "record".into(),
        arg: nonce.to_be_bytes().to_vec(),
        ingress_expiry: expiry_ns,
        nonce: Some(nonce.to_be_bytes().to_vec()),
    };
    (
        thicket_node::http::envelope::unsigned_envelope(&msg),
        msg.request_id().to_string(),
    )
}

async fn request_status(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    let r = http
        .get(format!("{base}/api/thicket/v1/request_status/{id}"))
        .send()
        .await
        .expect("status answered");
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON")
}

fn metric(node: &Node, name: &str) -> u64 {
    node.shared
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0)
}

/// Ingress posted over HTTP to any replica is gossiped, ordered, and executed by every replica
/// in the same finalized order. A replica whose data directory is wiped comes back through the
/// newest catch-up package and a chunked state sync from its peers (its state spans several
/// chunks), then executes on and reaches the same state hashes as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_executes_everywhere_and_a_wiped_replica_syncs_its_state() {
    let Setup {
        secrets,
        genesis,
        dirs,
        addrs,
        listeners,
    } = setup(4).await;
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (r, url) =
            start_with_http(secrets[i].clone(), &genesis, l, vec![], dirs[i].path()).await;
        replicas.push(Some(r));
        urls.push(url);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Enough messages that each remembered status makes the state larger than one chunk.
    let http = reqwest::Client::new();
    let expiry = (thicket_node::driver::now_ms() + 240_000) * 1_000_000;
    let canisters: Vec<Vec<u8>> = (0..10u8)
        .map(|c| vec![0, 0, 0, 0, 0, 0, 0, c, 1, 1])
        .collect();
    let mut ids = Vec::new();
    const N: u64 = 5_000;
    for batch in 0..(N / 100) {
        let mut posts = tokio::task::JoinSet::new();
        for k in 0..100 {
            let n = batch * 100 + k;
            let canister = &canisters[(n % 10) as usize];
            let (body, id) = call_envelope(canister, n, expiry);
            ids.push(id);
            let text = ic_principal::Principal::from_slice(canister).to_text();
            let url = format!("{}/api/v2/canister/{text}/call", urls[(n % 4) as usize]);
            let post = http
                .post(url)
                .header("content-type", "application/cbor")
                .body(body);
            posts.spawn(post.send());
        }
        for r in posts.join_all().await {
            assert_eq!(r.expect("posted").status(), reqwest::StatusCode::ACCEPTED);
        }
    }
    // A malformed body is refused with a reason and changes nothing.
    let text = ic_principal::Principal::from_slice(&canisters[0]).to_text();
    let r = http
        .post(format!("{}/api/v2/canister/{text}/call", urls[0]))
        .body(b"not cbor".to_vec())
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("CBOR"));

    // Every replica executes every message, at the same height.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in [&ids[0], &ids[ids.len() / 2], &ids[ids.len() - 1]] {
        let mut heights = Vec::new();
        for url in &urls {
            loop {
                let s = request_status(&http, url, id).await;
                // No canister has these ids: each call is rejected, once, in block order.
                if s["status"] == "rejected" {
                    heights.push(s["height"].as_u64().expect("height"));
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{id} not executed: {s}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(heights.windows(2).all(|w| w[0] == w[1]), "{heights:?}");
    }
    // ... each of them exactly once.
    loop {
        let executed: Vec<u64> = replicas
            .iter()
            .flatten()
            .map(|r| metric(r, "thicket_ingress_executed_total"))
            .collect();
        if executed.iter().all(|e| *e == N) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && executed.iter().all(|e| *e <= N),
            "executed {executed:?} of {N}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every replica certifies its state with the subnet key: a certificate for a request's
    // status verifies as an IC client checks it, and shows the status.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for r in replicas.iter().flatten() {
        let rid = hex::decode(&ids[0]).expect("hex request id");
        // The newest certified state that has executed the request.
        let certified = loop {
            let got = r.shared.certified.read().ok().and_then(|c| c.clone());
            if let Some(c) = got.filter(|c| c.tree.contains(&[b"request_status", &rid])) {
                break c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the request is not certified"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let path = vec![b"request_status".to_vec(), rid.clone()];
        let bytes = certified.certificate(&[path]);
        let cert: ciborium::Value = ciborium::from_reader(&bytes[..]).expect("a CBOR certificate");
        let field = |name: &str| {
            let ciborium::Value::Tag(55799, inner) = &cert else {
                panic!("self-describing CBOR expected");
            };
            inner
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(name)))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let tree = field("tree");
        let msg = [&b"\x0Dic-state-root"[..], &reconstruct(&tree)].concat();
        let sig = field("signature").into_bytes().expect("signature bytes");
        let sig = thicket_crypto::threshold::CombinedSig::from_bytes(&sig).expect("48 bytes");
        let key = thicket_crypto::threshold::PublicKey::from_der(&certified.subnet.public_key_der)
            .expect("root key");
        thicket_crypto::threshold::verify_combined(&sig, &msg, &key).expect("the subnet signed it");
        assert_eq!(
            lookup(&tree, &[b"request_status", &rid, b"status"]),
            Some(b"rejected".to_vec())
        );
        assert!(lookup(&tree, &[b"time"]).is_some());
    }

    // Wipe replica 3: stop it and give it an empty data directory.
    stop(replicas[3].take().expect("running")).await;
    let fresh = tempfile::tempdir().expect("tempdir");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let l = TcpListener::bind(addrs[3].trim_start_matches("http://"))
        .await
        .expect("rebinds");
    replicas[3] = Some(start(secrets[3].clone(), &genesis, l, vec![], fresh.path()).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let r3 = replicas[3].as_ref().expect("running");
    while metric(r3, "thicket_state_syncs_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no state sync:\n{}",
            r3.shared.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metric(r3, "thicket_state_sync_chunks_total") >= 2,
        "the state should span several chunks:\n{}",
        r3.shared.metrics.encode()
    );
    // It executes on from the synced state, through at least one more checkpoint.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let mut drivers = Vec::new();
    for r in replicas.into_iter().flatten() {
        drivers.push(stop(r).await);
    }
    use thicket_consensus::StateReader;
    let synced = &drivers[3];
    let common: Vec<Height> = (0..=synced.state().executed_height().0)
        .map(Height)
        .filter(|h| {
            synced.state().state_hash(*h).is_some() && drivers[0].state().state_hash(*h).is_some()
        })
        .collect();
    assert!(!common.is_empty(), "no checkpoint height in common");
    for h in common {
        assert_eq!(
            synced.state().state_hash(h),
            drivers[0].state().state_hash(h),
            "state differs at {h}"
        );
    }
    assert!(synced.pool().finalized_height() > Height(30));
}

/// The root hash of a CBOR hash tree, as the interface specification reconstructs it.
fn reconstruct(t: &ciborium::Value) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let items = t.as_array().expect("a hash tree node is an array");
    let tag = items[0].as_integer().map(i128::from).expect("node tag");
    let ds = |s: &str| [&[s.len() as u8][..], s.as_bytes()].concat();
    let bytes = |i: usize| items[i].as_bytes().expect("bytes").clone();
    let h = |parts: &[&[u8]]| Sha256::digest(parts.concat()).to_vec();
    match tag {
        0 => h(&[&ds("ic-hashtree-empty")]),
        1 => h(&[
            &ds("ic-hashtree-fork"),
            &reconstruct(&items[1]),
            &reconstruct(&items[2]),
        ]),
        2 => h(&[
            &ds("ic-hashtree-labeled"),
            &bytes(1),
            &reconstruct(&items[2]),
        ]),
        3 => h(&[&ds("ic-hashtree-leaf"), &bytes(1)]),
        4 => bytes(1),
        _ => panic!("unknown hash tree node {tag}"),
    }
}

/// The leaf at `path` in a CBOR hash tree, if revealed.
fn lookup(t: &ciborium::Value, path: &[&[u8]]) -> Option<Vec<u8>> {
    let items = t.as_array()?;
    let tag = items[0].as_integer().map(i128::from)?;
    match (tag, path.split_first()) {
        (3, None) => items[1].as_bytes().cloned(),
        (1, Some(_)) => lookup(&items[1], path).or_else(|| lookup(&items[2], path)),
        (2, Some((first, rest))) if items[1].as_bytes().map(Vec::as_slice) == Some(*first) => {
            lookup(&items[2], rest)
        }
        _ => None,
    }
}

/// The Rust IC agent, unmodified and with its default verification (certificates against the
/// root key it fetched, query signatures against the node keys in the certified state tree):
/// it creates, installs, calls, queries, reads and upgrades a Motoko canister on a 4-replica
/// subnet; a trap, an endless loop and a non-controller's upgrade are rejected and change
/// nothing, and the subnet goes on; a second Motoko canister calls the first (an
/// inter-canister call and a caught reject); senders sign with Ed25519, ECDSA P-256,
/// secp256k1 and through delegations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ic_agent_deploys_calls_and_upgrades_a_motoko_canister() {
    use candid::{Decode, Encode, Nat, Principal};
    use ic_agent::{Agent, AgentError};
    use thicket_state::management::*;

    let wasm = thicket_canister::motoko::compile_sample("Counter").expect("Counter compiles");
    let Setup {
        secrets,
        genesis,
        dirs,
        listeners,
        ..
    } = setup(11).await;
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (r, url) =
            start_with_http(secrets[i].clone(), &genesis, l, vec![], dirs[i].path()).await;
        replicas.push(r);
        urls.push(url);
    }
    let agent = Agent::builder().with_url(&urls[0]).build().expect("agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = agent.fetch_root_key().await {
        assert!(std::time::Instant::now() < deadline, "no root key: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mgmt = Principal::management_canister();
    let ecid = Principal::from_text("rwlgt-iiaaa-aaaaa-aaaaa-cai").expect("principal");
    let reply = agent
        .update(&mgmt, "provisional_create_canister_with_cycles")
        .with_effective_canister_id(ecid)
        .with_arg(Encode!(&ProvisionalCreateCanisterArgs::default()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("created");
    let id = Decode!(&reply, CanisterIdRecord).expect("id").canister_id;
    let install = |mode: InstallMode| {
        Encode!(&InstallCodeArgs {
            mode,
            canister_id: id,
            wasm_module: serde_bytes::ByteBuf::from(wasm.clone()),
            arg: serde_bytes::ByteBuf::from(b"DIDL\x00\x00".to_vec()),
            sender_canister_version: None,
        })
        .expect("encodes")
    };
    agent
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(install(InstallMode::Install))
        .call_and_wait()
        .await
        .expect("installed");
    for n in 1..=2u8 {
        let reply = agent
            .update(&id, "inc")
            .with_arg(Encode!().expect("encodes"))
            .call_and_wait()
            .await
            .expect("inc");
        assert_eq!(Decode!(&reply, Nat).expect("nat"), Nat::from(n));
    }
    // A query, its response signature checked against the certified node keys. Queries run
    // on the newest certified state, which may trail the last update by a height or two.
    let get = || async {
        agent
            .query(&id, "get")
            .with_arg(Encode!().expect("encodes"))
            .call()
            .await
            .map(|r| Decode!(&r, Nat).expect("nat"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match get().await {
            Ok(n) if n == 2u8 => break,
            other => assert!(std::time::Instant::now() < deadline, "get: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hash = agent
        .read_state_canister_info(id, "module_hash")
        .await
        .expect("module hash");
    use sha2::Digest;
    assert_eq!(hash, sha2::Sha256::digest(&wasm).to_vec());

    // A trap is a certified reject and changes nothing.
    let err = agent
        .update(&id, "inc_then_trap")
        .with_arg(Encode!().expect("encodes"))
        .call_and_wait()
        .await
        .expect_err("traps");
    assert!(
        matches!(&err, AgentError::CertifiedReject { reject, .. } if reject.error_code.as_deref() == Some("IC0503")),
        "{err}"
    );

    // An endless loop is cut by the instruction limit (IC0522) and the subnet goes on: the
    // next call is ordered, executed and certified as usual.
    let err = agent
        .update(&id, "spin")
        .with_arg(Encode!().expect("encodes"))
        .call_and_wait()
        .await
        .expect_err("cut");
    assert!(
        matches!(&err, AgentError::CertifiedReject { reject, .. } if reject.error_code.as_deref() == Some("IC0522")),
        "{err}"
    );

    // Someone else may not upgrade it; its controller may, and the counter survives.
    let keep = InstallMode::Upgrade(Some(UpgradeOptions {
        skip_pre_upgrade: None,
        wasm_memory_persistence: Some(WasmMemoryPersistence::Keep),
    }));
    let other = Agent::builder()
        .with_url(&urls[1])
        .with_identity(ic_agent::identity::BasicIdentity::from_raw_key(&[9; 32]))
        .build()
        .expect("agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = other.fetch_root_key().await {
        assert!(std::time::Instant::now() < deadline, "no root key: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let err = other
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(install(keep.clone()))
        .call_and_wait()
        .await
        .expect_err("not a controller");
    assert!(
        matches!(&err, AgentError::CertifiedReject { reject, .. } if reject.error_code.as_deref() == Some("IC0512")),
        "{err}"
    );
    agent
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(install(keep))
        .call_and_wait()
        .await
        .expect("upgraded");
    let reply = agent
        .update(&id, "inc")
        .with_arg(Encode!().expect("encodes"))
        .call_and_wait()
        .await
        .expect("inc after the upgrade");
    assert_eq!(Decode!(&reply, Nat).expect("nat"), Nat::from(3u8));

    // Another Motoko canister calls the counter: the ingress call is answered from the
    // relay's callback once the counter has replied.
    let relay_wasm = thicket_canister::motoko::compile_sample("Relay").expect("Relay compiles");
    let reply = agent
        .update(&mgmt, "provisional_create_canister_with_cycles")
        .with_effective_canister_id(ecid)
        .with_arg(Encode!(&ProvisionalCreateCanisterArgs::default()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("created");
    let relay = Decode!(&reply, CanisterIdRecord).expect("id").canister_id;
    agent
        .update(&mgmt, "install_code")
        .with_effective_canister_id(relay)
        .with_arg(
            Encode!(&InstallCodeArgs {
                mode: InstallMode::Install,
                canister_id: relay,
                wasm_module: serde_bytes::ByteBuf::from(relay_wasm),
                arg: serde_bytes::ByteBuf::from(b"DIDL\x00\x00".to_vec()),
                sender_canister_version: None,
            })
            .expect("encodes"),
        )
        .call_and_wait()
        .await
        .expect("relay installed");
    let reply = agent
        .update(&relay, "inc_via")
        .with_arg(Encode!(&id.to_text()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("inc through the relay");
    assert_eq!(Decode!(&reply, Nat).expect("nat"), Nat::from(400u32));
    let reply = agent
        .update(&relay, "trap_via")
        .with_arg(Encode!(&id.to_text()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("the relay catches the counter's trap");
    let text = Decode!(&reply, String).expect("text");
    assert!(text.contains("refusing on purpose"), "{text}");

    // Senders of each signature scheme, and through a chain of delegations: the canister sees
    // the sender's principal.
    {
        use ic_agent::Identity;
        use ic_agent::identity::{
            BasicIdentity, DelegatedIdentity, Delegation, Prime256v1Identity, Secp256k1Identity,
            SignedDelegation,
        };
        use std::sync::Arc;
        let agent_as = |identity: Arc<dyn Identity>| {
            let url = urls[3].clone();
            async move {
                let a = Agent::builder()
                    .with_url(&url)
                    .with_arc_identity(identity)
                    .build()
                    .expect("agent");
                a.fetch_root_key().await.expect("root key");
                a
            }
        };
        let whoami = |a: Agent, target: Principal| async move {
            a.update(&target, "whoami")
                .with_arg(Encode!().expect("encodes"))
                .call_and_wait()
                .await
                .map(|reply| Decode!(&reply, Principal).expect("a principal"))
        };
        let k1: Arc<dyn Identity> = Arc::new(Secp256k1Identity::from_private_key(
            k256::SecretKey::from_slice(&[7; 32]).expect("key"),
        ));
        let r1: Arc<dyn Identity> = Arc::new(Prime256v1Identity::from_private_key(
            p256::SecretKey::from_slice(&[8; 32]).expect("key"),
        ));
        for identity in [k1, r1] {
            let sender = identity.sender().expect("sender");
            let a = agent_as(identity).await;
            assert_eq!(whoami(a, id).await.expect("whoami"), sender);
        }
        // An Ed25519 root key delegates to a P-256 session key, for the counter only.
        let root = BasicIdentity::from_raw_key(&[21; 32]);
        let session = Prime256v1Identity::from_private_key(
            p256::SecretKey::from_slice(&[22; 32]).expect("key"),
        );
        let delegated = |expiration: u64| {
            let delegation = Delegation {
                pubkey: session.public_key().expect("key"),
                expiration,
                targets: Some(vec![id]),
                permissions: None,
            };
            let signature = root
                .sign_delegation(&delegation)
                .expect("signs")
                .signature
                .expect("a signature");
            Arc::new(DelegatedIdentity::new_unchecked(
                root.public_key().expect("key"),
                Box::new(session.clone()),
                vec![SignedDelegation {
                    delegation,
                    signature,
                }],
            )) as Arc<dyn Identity>
        };
        let later = (thicket_node::driver::now_ms() + 600_000) * 1_000_000;
        let a = agent_as(delegated(later)).await;
        let sender = root.sender().expect("sender");
        assert_eq!(
            whoami(a.clone(), id).await.expect("delegated whoami"),
            sender
        );
        let err = whoami(a, relay).await.expect_err("not a target");
        assert!(format!("{err}").contains("do not cover"), "{err}");
        let earlier = (thicket_node::driver::now_ms() - 1_000) * 1_000_000;
        let err = whoami(agent_as(delegated(earlier)).await, id)
            .await
            .expect_err("expired");
        assert!(format!("{err}").contains("expired"), "{err}");
    }

    // By hand: bad requests get a 4xx with the reason, and a request's status is for its
    // sender only.
    let http = reqwest::Client::new();
    let post = |path: String, body: Vec<u8>| {
        http.post(format!("{}{path}", urls[2]))
            .header("content-type", "application/cbor")
            .body(body)
            .send()
    };
    let r = post(
        format!("/api/v3/canister/{id}/read_state"),
        b"not cbor".to_vec(),
    )
    .await
    .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("CBOR"));
    let r = post(format!("/api/v2/canister/{id}/query"), b"\xa0".to_vec())
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let expiry = (thicket_node::driver::now_ms() + 120_000) * 1_000_000;
    let call = thicket_types::ingress::IngressMessage {
        sender: vec![4],
        canister_id: id.as_slice().to_vec(),
        method_name: "inc".into(),
        arg: Encode!().expect("encodes"),
        ingress_expiry: expiry,
        nonce: Some(b"by hand".to_vec()),
    };
    let r = post(
        format!("/api/v4/canister/{id}/call"),
        thicket_node::http::envelope::unsigned_envelope(&call),
    )
    .await
    .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let request = call.request_id();
    let read = |key: Option<&ed25519_dalek::SigningKey>| {
        use thicket_types::ingress::{
            ED25519_DER_PREFIX, Value as F, hash_of_map, self_authenticating,
        };
        let paths = vec![vec![b"request_status".to_vec(), request.0.to_vec()]];
        let der = key.map(|k| [&ED25519_DER_PREFIX[..], k.verifying_key().as_bytes()].concat());
        let sender = der.as_deref().map_or(vec![4], self_authenticating);
        let rid = hash_of_map(&[
            ("request_type", F::Bytes(b"read_state")),
            ("sender", F::Bytes(&sender)),
            ("paths", F::Paths(&paths)),
            ("ingress_expiry", F::Nat(expiry)),
        ]);
        use ciborium::Value as V;
        let content = V::Map(vec![
            (V::Text("request_type".into()), V::Text("read_state".into())),
            (V::Text("sender".into()), V::Bytes(sender)),
            (
                V::Text("paths".into()),
                V::Array(vec![V::Array(
                    paths[0].iter().cloned().map(V::Bytes).collect(),
                )]),
            ),
            (V::Text("ingress_expiry".into()), V::Integer(expiry.into())),
        ]);
        let mut env = vec![(V::Text("content".into()), content)];
        if let (Some(k), Some(der)) = (key, der) {
            use ed25519_dalek::Signer;
            let sig = k.sign(&[&b"\x0Aic-request"[..], &rid].concat());
            env.push((V::Text("sender_pubkey".into()), V::Bytes(der)));
            env.push((
                V::Text("sender_sig".into()),
                V::Bytes(sig.to_bytes().to_vec()),
            ));
        }
        let mut out = Vec::new();
        ciborium::into_writer(&V::Tag(55799, Box::new(V::Map(env))), &mut out).expect("cbor");
        out
    };
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let r = post(
        format!("/api/v3/canister/{id}/read_state"),
        read(Some(&stranger)),
    )
    .await
    .expect("answered");
    let status = r.status();
    let body = r.bytes().await.expect("body");
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let r = post(format!("/api/v2/canister/{id}/read_state"), read(None))
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let body: ciborium::Value =
        ciborium::from_reader(&r.bytes().await.expect("body")[..]).expect("a CBOR reply");
    let field = |v: &ciborium::Value, name: &str| {
        v.as_tag()
            .and_then(|(_, v)| v.as_map())
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(name)))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let cert = field(&body, "certificate").into_bytes().expect("bytes");
    let cert: ciborium::Value = ciborium::from_reader(&cert[..]).expect("CBOR certificate");
    assert_eq!(
        lookup(
            &field(&cert, "tree"),
            &[b"request_status", &request.0, b"status"]
        ),
        Some(b"replied".to_vec())
    );
    // The list of all requests is not for anyone to read.
    let everything = {
        use ciborium::Value as V;
        let content = V::Map(vec![
            (V::Text("request_type".into()), V::Text("read_state".into())),
            (V::Text("sender".into()), V::Bytes(vec![4])),
            (
                V::Text("paths".into()),
                V::Array(vec![V::Array(vec![V::Bytes(b"request_status".to_vec())])]),
            ),
            (V::Text("ingress_expiry".into()), V::Integer(expiry.into())),
        ]);
        let env = V::Map(vec![(V::Text("content".into()), content)]);
        let mut out = Vec::new();
        ciborium::into_writer(&V::Tag(55799, Box::new(env)), &mut out).expect("cbor");
        out
    };
    let r = post(format!("/api/v3/canister/{id}/read_state"), everything)
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);

    // Bad requests change nothing: an expired call and a call signed over another request id
    // get a 400 with the reason, and an invalid module is a certified IC0505 reject.
    let count = || async {
        let reply = agent
            .query(&id, "get")
            .with_arg(Encode!().expect("encodes"))
            .call()
            .await
            .expect("get");
        Decode!(&reply, Nat).expect("nat")
    };
    let before = count().await;
    let signer = ed25519_dalek::SigningKey::from_bytes(&[31; 32]);
    let signed_call = |expiry: u64, signed_arg: Vec<u8>| {
        use ciborium::Value as V;
        use ed25519_dalek::Signer;
        let der = [
            &thicket_types::ingress::ED25519_DER_PREFIX[..],
            signer.verifying_key().as_bytes(),
        ]
        .concat();
        let msg = thicket_types::ingress::IngressMessage {
            sender: thicket_types::ingress::self_authenticating(&der),
            canister_id: id.as_slice().to_vec(),
            method_name: "inc".into(),
            arg: Encode!().expect("encodes"),
            ingress_expiry: expiry,
            nonce: None,
        };
        let signed = thicket_types::ingress::IngressMessage {
            arg: signed_arg,
            ..msg.clone()
        };
        let sig = signer.sign(&[b"\x0Aic-request".as_slice(), &signed.request_id().0].concat());
        let envelope = thicket_node::http::envelope::unsigned_envelope(&msg);
        let Ok(V::Tag(tag, body)) = ciborium::from_reader::<V, _>(envelope.as_slice()) else {
            panic!("a tagged envelope");
        };
        let V::Map(mut fields) = *body else {
            panic!("a map");
        };
        fields.push((V::Text("sender_pubkey".into()), V::Bytes(der)));
        fields.push((
            V::Text("sender_sig".into()),
            V::Bytes(sig.to_bytes().to_vec()),
        ));
        let mut out = Vec::new();
        ciborium::into_writer(&V::Tag(tag, Box::new(V::Map(fields))), &mut out).expect("cbor");
        out
    };
    let now_ns = thicket_node::driver::now_ms() * 1_000_000;
    let expired = signed_call(now_ns - 600_000_000_000, Encode!().expect("encodes"));
    let r = post(format!("/api/v3/canister/{id}/call"), expired)
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = r.text().await.expect("body");
    assert!(body.contains("ingress_expiry"), "{body}");
    let forged = signed_call(now_ns + 60_000_000_000, b"DIDL\x00\x01\x7d\x01".to_vec());
    let r = post(format!("/api/v3/canister/{id}/call"), forged)
        .await
        .expect("answered");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = r.text().await.expect("body");
    assert!(body.contains("does not verify"), "{body}");
    let err = agent
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(
            Encode!(&InstallCodeArgs {
                mode: InstallMode::Reinstall,
                canister_id: id,
                wasm_module: serde_bytes::ByteBuf::from(b"\0asm but not really".to_vec()),
                arg: serde_bytes::ByteBuf::from(b"DIDL\x00\x00".to_vec()),
                sender_canister_version: None,
            })
            .expect("encodes"),
        )
        .call_and_wait()
        .await
        .expect_err("not a module");
    assert!(
        matches!(&err, AgentError::CertifiedReject { reject, .. } if reject.error_code.as_deref() == Some("IC0505")),
        "{err}"
    );
    assert_eq!(count().await, before, "nothing changed");

    // The JavaScript agent (@dfinity/agent from npm, in Node) does the same through the
    // endpoints it uses (v3 call, v2 query and read_state), against another replica.
    let tools = thicket_canister::motoko::ensure_installed().expect("npm packages");
    let wasm_file = dirs[0].path().join("counter.wasm");
    std::fs::write(&wasm_file, &wasm).expect("writes");
    let url = urls[3].clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(tools.join("agent-js.mjs"))
            .arg(&url)
            .arg(&wasm_file)
            .output()
    })
    .await
    .expect("joins")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "agent-js failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"get\":\"2\""), "{stdout}");
    for r in replicas {
        stop(r).await;
    }
}
