//! Replicas as the operator runs them (`thicket replica pod`), driven only through their admin
//! API: each creates its keys, waits for genesis and reports its record; an orchestrator that
//! holds nothing secret runs the genesis DKG among them (deal, complain, start); they finalize;
//! a fifth replica joins through an administrator-signed registry change; a restarted replica
//! runs from its volume at once; bad requests are refused with a reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_proto::admin::admin_client::AdminClient;
use thicket_proto::admin::{
    Genesis, GenesisComplainRequest, GenesisDealRequest, NodeComplaints, NodeDealings, Peer, Phase,
    StartRequest, StatusReply, StatusRequest, SubmitRegistryChangeRequest,
};
use thicket_replica::pod::{self, PodConfig};
use thicket_types::registry::{
    NodeRecord, Registry, RegistryChange, SignedRegistryChange, SubnetParams,
};
use thicket_types::{CryptoHash, canonical_bytes};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Pod {
    cfg: PodConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), pod::PodError>>,
}

impl Pod {
    fn spawn(dir: &std::path::Path) -> Pod {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let listen = free_port();
        let cfg = PodConfig {
            data_dir: dir.to_path_buf(),
            p2p_url: format!("http://127.0.0.1:{listen}"),
            listen: addr(listen),
            http_listen: addr(free_port()),
            admin_listen: addr(free_port()),
        };
        Pod::spawn_with(cfg)
    }

    fn spawn_with(cfg: PodConfig) -> Pod {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(pod::run(cfg.clone(), rx));
        Pod { cfg, stop, task }
    }

    fn admin_url(&self) -> String {
        format!("http://{}", self.cfg.admin_listen)
    }

    async fn admin(&self) -> AdminClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match AdminClient::connect(self.admin_url()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("admin API unreachable: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn status(&self) -> StatusReply {
        self.admin()
            .await
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    async fn stop(self) -> PodConfig {
        let _ = self.stop.send(true);
        self.task
            .await
            .expect("pod task")
            .expect("pod stops cleanly");
        self.cfg
    }
}

fn params() -> SubnetParams {
    SubnetParams {
        unit_delay_ms: 300,
        initial_notary_delay_ms: 100,
        dkg_interval_length: 10,
        dkg_dealings_per_block: 16,
        max_ingress_per_block: 1000,
    }
}

/// What an orchestrator does: records → registry → dealings → complaints → the genesis.
async fn genesis_of(pods: &[Pod], admin: &NodeSigningKey) -> Genesis {
    let mut members = BTreeMap::new();
    let mut ids = Vec::new();
    for p in pods {
        let s = p.status().await;
        assert_eq!(s.phase(), Phase::WaitingForGenesis);
        let rec: NodeRecord = bincode::deserialize(&s.node_record).expect("a node record");
        assert_eq!(rec.node_id.0.to_string(), s.node_id);
        assert_eq!(rec.p2p_url, p.cfg.p2p_url);
        ids.push(rec.node_id);
        members.insert(rec.node_id, rec);
    }
    let registry = canonical_bytes(&Registry {
        subnet_id: CryptoHash([7; 32]),
        version: 0,
        members: members.clone(),
        params: params(),
        admin_key: admin.public_key(),
    });
    let mut dealings = Vec::new();
    for (p, id) in pods.iter().zip(&ids) {
        let d = p
            .admin()
            .await
            .genesis_deal(GenesisDealRequest {
                registry: registry.clone(),
            })
            .await
            .expect("deals")
            .into_inner();
        dealings.push(NodeDealings {
            node_id: id.0,
            dealings: d.dealings,
        });
    }
    let mut complaints = Vec::new();
    for (p, id) in pods.iter().zip(&ids) {
        let c = p
            .admin()
            .await
            .genesis_complain(GenesisComplainRequest {
                registry: registry.clone(),
                dealings: dealings.clone(),
            })
            .await
            .expect("complains")
            .into_inner();
        complaints.push(NodeComplaints {
            node_id: id.0,
            complaints: c.complaints,
        });
    }
    Genesis {
        registry,
        dealings,
        complaints,
    }
}

async fn eventually(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_run_genesis_through_the_admin_api_then_a_fifth_joins() {
    let dirs: Vec<_> = (0..5)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut pods: Vec<Pod> = dirs[..4].iter().map(|d| Pod::spawn(d.path())).collect();
    // Keys are on the volume, for the node's user only.
    let s0 = pods[0].status().await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dirs[0].path().join(pod::SECRETS))
            .expect("node.key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "node.key mode");
    assert!(s0.genesis_hash.is_empty());

    // Before genesis, a replica refuses what only members do, and bad genesis inputs.
    let mut a0 = pods[0].admin().await;
    let err = a0
        .submit_registry_change(SubmitRegistryChangeRequest {
            signed_change: vec![1, 2, 3],
        })
        .await
        .expect_err("not running");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = a0
        .genesis_deal(GenesisDealRequest {
            registry: vec![0xff; 10],
        })
        .await
        .expect_err("garbage registry");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("registry"), "{}", err.message());
    let err = a0
        .start(StartRequest::default())
        .await
        .expect_err("no genesis");
    assert_eq!(err.code(), Code::InvalidArgument);

    let admin = NodeSigningKey::generate(&mut OsRng);
    let genesis = genesis_of(&pods, &admin).await;
    let mut keys = Vec::new();
    for p in &pods {
        let r = p
            .admin()
            .await
            .start(StartRequest {
                genesis: Some(genesis.clone()),
                peers: vec![],
            })
            .await
            .expect("starts")
            .into_inner();
        keys.push((r.subnet_public_key, r.genesis_hash));
    }
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "one genesis");
    assert!(!keys[0].0.is_empty());
    for p in &pods {
        eventually("finalization on every replica", 60, async || {
            let s = p.status().await;
            s.phase() == Phase::Running && s.finalized_height >= 3
        })
        .await;
    }
    // Start again with the same genesis is harmless; another genesis and dealing are refused.
    let again = a0
        .start(StartRequest {
            genesis: Some(genesis.clone()),
            peers: vec![],
        })
        .await
        .expect("same genesis")
        .into_inner();
    assert_eq!(again.genesis_hash, keys[0].1);
    let err = a0
        .genesis_deal(GenesisDealRequest {
            registry: genesis.registry.clone(),
        })
        .await
        .expect_err("running");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut other = genesis.clone();
    other.complaints.clear();
    other.dealings.pop();
    let err = a0
        .start(StartRequest {
            genesis: Some(other),
            peers: vec![],
        })
        .await
        .expect_err("another genesis");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    // A fifth replica joins: started from the genesis with the members as peers, then added
    // to the registry by an administrator-signed change.
    let fifth = Pod::spawn(dirs[4].path());
    let rec = fifth.status().await;
    let record: NodeRecord = bincode::deserialize(&rec.node_record).expect("record");
    let peers = {
        let mut v = Vec::new();
        for p in &pods {
            let s = p.status().await;
            v.push(Peer {
                node_id: s.node_id.parse().expect("numeric node id"),
                url: p.cfg.p2p_url.clone(),
            });
        }
        v
    };
    fifth
        .admin()
        .await
        .start(StartRequest {
            genesis: Some(genesis.clone()),
            peers,
        })
        .await
        .expect("the joiner starts");
    let s = pods[0].status().await;
    let subnet_id: [u8; 32] = hex::decode(&s.subnet_id)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let change = SignedRegistryChange::signed(
        CryptoHash(subnet_id),
        s.pending_registry_version,
        RegistryChange::AddNode(Box::new(record.clone())),
        &admin,
    );
    a0.submit_registry_change(SubmitRegistryChangeRequest {
        signed_change: canonical_bytes(&change),
    })
    .await
    .expect("submitted");
    let id = record.node_id.0.to_string();
    eventually(
        "the fifth replica to hold its key shares",
        120,
        async || {
            let s = fifth.status().await;
            s.members.contains(&id) && s.holds_current_key_shares && s.finalized_height > 0
        },
    )
    .await;
    assert_eq!(fifth.status().await.subnet_public_key, keys[0].0);
    pods.push(fifth);

    // A replica restarted from its volume runs at once, from the same genesis.
    let cfg = pods.remove(1).stop().await;
    let restarted = Pod::spawn_with(cfg);
    eventually(
        "the restarted replica to run and finalize",
        60,
        async || {
            let s = restarted.status().await;
            s.phase() == Phase::Running && s.finalized_height > 3
        },
    )
    .await;
    assert_eq!(restarted.status().await.genesis_hash, keys[0].1);
    pods.push(restarted);
    for p in pods {
        p.stop().await;
    }
}
