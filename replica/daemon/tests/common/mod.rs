//! The harness of the replica's multi-process-free tests: four replicas in one process, each
//! with its own sled store, talking gRPC (mutual TLS) over loopback, with HTTP interfaces.
//!
//! [`setup`] makes keys, a genesis by the real DKG, data directories and bound listeners;
//! [`LocalSubnet::start`] starts four replicas on them; [`eventually`] polls a condition with
//! a deadline; the rest reads metrics and certificates.
#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeMap;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_replica::driver::Driver;
use thicket_replica::node::{self, Node};
use thicket_store::sled_store::SledStore;
use thicket_types::artifacts::CatchUpContent;
use thicket_types::registry::{Registry, SubnetParams};
use thicket_types::{CryptoHash, Height, NodeId};
use tokio::net::TcpListener;

pub fn genesis_for(
    secrets: &[NodeSecrets],
    urls: &[String],
    rng: &mut ChaCha20Rng,
) -> CatchUpContent {
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

pub type Replica = Node;

pub async fn start(
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
pub async fn start_with_http(
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

pub async fn stop(r: Replica) -> Driver<SledStore> {
    r.stop().await.expect("stops cleanly")
}

/// Four replicas' keys, genesis, data directories and bound listeners.
pub struct Setup {
    pub secrets: Vec<NodeSecrets>,
    pub genesis: CatchUpContent,
    pub dirs: Vec<tempfile::TempDir>,
    pub addrs: Vec<String>,
    pub listeners: Vec<TcpListener>,
}

pub async fn setup(seed: u64) -> Setup {
    setup_in(seed, None).await
}

/// [`setup`] with the data directories inside `base` (instead of the system's temporary
/// directory).
pub async fn setup_in(seed: u64, base: Option<&std::path::Path>) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let secrets: Vec<_> = (0..4)
        .map(|i| NodeSecrets::generate(&mut rng, NodeId(i)))
        .collect();
    let dirs = (0..4)
        .map(|_| match base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir(),
        })
        .map(|d| d.expect("tempdir"))
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
pub async fn stop_all_and_compare(replicas: impl IntoIterator<Item = Replica>) -> Vec<Height> {
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

pub fn call_envelope(canister: &[u8], nonce: u64, expiry_ns: u64) -> (Vec<u8>, String) {
    let msg = thicket_types::ingress::IngressMessage {
        sender: vec![4],
        canister_id: canister.to_vec(),
        method_name: "record".into(),
        arg: nonce.to_be_bytes().to_vec(),
        ingress_expiry: expiry_ns,
        nonce: Some(nonce.to_be_bytes().to_vec()),
    };
    (
        thicket_replica::http::envelope::unsigned_envelope(&msg),
        msg.request_id().to_string(),
    )
}

pub async fn request_status(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    let r = http
        .get(format!("{base}/api/thicket/v1/request_status/{id}"))
        .send()
        .await
        .expect("status answered");
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON")
}

pub fn metric(node: &Node, name: &str) -> u64 {
    node.shared
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0)
}

/// The root hash of a CBOR hash tree (the specification's `reconstruct`).
pub fn reconstruct(t: &ciborium::Value) -> Vec<u8> {
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
pub fn lookup(t: &ciborium::Value, path: &[&[u8]]) -> Option<Vec<u8>> {
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

/// Four replicas with HTTP interfaces, started on a fresh [`setup`].
pub struct LocalSubnet {
    pub replicas: Vec<Replica>,
    /// Each replica's HTTP base URL.
    pub urls: Vec<String>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl LocalSubnet {
    pub async fn start(seed: u64) -> LocalSubnet {
        LocalSubnet::start_in(seed, None).await
    }

    /// A subnet whose data directories are inside `base`.
    pub async fn start_in(seed: u64, base: Option<&std::path::Path>) -> LocalSubnet {
        let Setup {
            secrets,
            genesis,
            dirs,
            listeners,
            ..
        } = setup_in(seed, base).await;
        let mut replicas = Vec::new();
        let mut urls = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let (r, url) =
                start_with_http(secrets[i].clone(), &genesis, l, vec![], dirs[i].path()).await;
            replicas.push(r);
            urls.push(url);
        }
        LocalSubnet {
            replicas,
            urls,
            dirs,
        }
    }
}

/// Polls `check` every 200 ms until it gives a value, for at most `within`; panics with the
/// last answer and `what` when time runs out.
pub async fn eventually<T, E: std::fmt::Debug, F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
