//! A replica as the operator runs it in a pod (`thicket replica pod`): one process for the
//! replica's whole life, driven through its admin API.
//!
//! On its first start on an empty volume the replica creates its keys there (files readable by
//! its user only) under a fresh random node id, then waits for genesis: its admin API (on a
//! port of its own, not behind the public IC HTTP Service) reports its public node record and
//! answers the genesis steps. When the orchestrator hands it the public genesis (`Start`), the
//! replica derives the genesis block and keys itself, stores the genesis on its volume and
//! runs. Restarted, it finds its keys and genesis and runs again at once. A node removed from
//! the registry stops its replica, remembers it, and keeps answering `Status` (phase REMOVED)
//! until the pod goes.
//!
//! ```text
//!  orchestrator ──Status──► record      (WAITING_FOR_GENESIS)
//!               ──GenesisDeal / GenesisComplain──► dealings, complaints
//!               ──Start(genesis, peers)──► derive, persist, node::start_with (RUNNING)
//!  driver stops, removed ──► marker file                                   (REMOVED)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand_core::{OsRng, RngCore};
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_proto::admin::admin_server::{Admin, AdminServer};
use thicket_proto::admin::{
    AuditReply, AuditRequest, GenesisComplainReply, GenesisComplainRequest, GenesisDealReply,
    GenesisDealRequest, Phase, StartReply, StartRequest, StatusReply, StatusRequest,
    SubmitRegistryChangeReply, SubmitRegistryChangeRequest,
};
use thicket_types::artifacts::CatchUpContent;
use thicket_types::{NodeId, canonical_bytes};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};

use crate::admin::{AdminService, decode_dealings, decode_registry, derive_genesis, start_reply};
use crate::node::{self, Node, Options};
use crate::transport::MAX_MESSAGE_BYTES;

/// The node's secret keys (and node id), in its data directory only.
pub const SECRETS: &str = "node.key";
/// The genesis the replica runs from (canonical encoding of its root catch-up content).
pub const GENESIS: &str = "genesis.bin";
/// The peers `Start` named, to reach first after a restart.
pub const PEERS: &str = "peers.json";
/// Written when the node leaves the subnet's registry; a replica refuses to run with it.
pub const REMOVED: &str = "removed";

/// Largest node id a pod picks: 2^53, so ids stay exact in JSON numbers (kubectl, JavaScript).
const NODE_ID_LIMIT: u64 = 1 << 53;

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error(
        "{path} holds secret keys but other users may read it (mode {mode:o}): run \
         `chmod 600 {path}` (and check who could have copied it), then start again"
    )]
    Exposed { path: String, mode: u32 },
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("admin API: {0}")]
    Admin(#[from] tonic::transport::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PodError + '_ {
    move |source| PodError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place, created readable by
/// the owner only (keys and genesis alike: nothing here is for other local users), so the
/// bytes are never in a file others may open.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PodError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A temporary file left by an interrupted write may have any mode: not reused.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Creates `dir` and any missing parents for the node's user only (0700); a directory that
/// exists already is left as it is (a volume's mount point belongs to whoever mounted it).
pub fn create_private_dir(dir: &Path) -> Result<(), PodError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Reads a file of secret keys, refusing one that users other than this one may read: any
/// user (world bits), or a group this process is not running as. (A Kubernetes `fsGroup`
/// makes a volume's files readable by the pod's own group: that one is allowed.)
pub fn read_private(path: &Path) -> Result<Vec<u8>, PodError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.mode() & 0o7777;
    let own_group = meta.gid() == rustix::process::getegid().as_raw();
    if mode & 0o007 != 0 || (mode & 0o070 != 0 && !own_group) {
        return Err(PodError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    std::fs::read(path).map_err(io(path))
}

/// The node's keys from `dir`, created there on first use under a random node id.
pub fn load_or_create_secrets(dir: &Path) -> Result<NodeSecrets, PodError> {
    create_private_dir(dir)?;
    let path = dir.join(SECRETS);
    match read_private(&path) {
        Ok(bytes) => NodeSecrets::from_bytes(&bytes).map_err(|reason| PodError::Corrupt {
            path: path.display().to_string(),
            reason,
        }),
        Err(PodError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let id = OsRng.next_u64() % (NODE_ID_LIMIT - 1) + 1;
            let secrets = NodeSecrets::generate(&mut OsRng, NodeId(id));
            write_private(&path, &secrets.to_bytes())?;
            tracing::info!(node.id = id, "created the node's keys");
            Ok(secrets)
        }
        Err(e) => Err(e),
    }
}

/// Where a pod's replica listens and how peers reach it.
#[derive(Clone, Debug)]
pub struct PodConfig {
    pub data_dir: PathBuf,
    /// The transport URL of its registry record (the pod's stable DNS name).
    pub p2p_url: String,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub admin_listen: SocketAddr,
}

enum State {
    Waiting(Box<NodeSecrets>),
    /// Start accepted; the node is coming up.
    Starting,
    Running(AdminService),
    Removed,
}

struct StartCmd {
    root: CatchUpContent,
    peers: Vec<(NodeId, String)>,
    reply: oneshot::Sender<Result<StartReply, Status>>,
}

/// The admin API of a pod's replica, whatever its phase.
#[derive(Clone)]
struct PodAdmin {
    node_id: u64,
    record: Vec<u8>,
    state: Arc<Mutex<State>>,
    start: mpsc::Sender<StartCmd>,
}

impl PodAdmin {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, Status> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| Status::internal("state lock poisoned"))?;
        Ok(f(&mut s))
    }

    fn running(&self) -> Result<Option<AdminService>, Status> {
        self.with_state(|s| match s {
            State::Running(a) => Some(a.clone()),
            _ => None,
        })
    }

    fn waiting(&self, step: &str) -> Result<NodeSecrets, Status> {
        self.with_state(|s| match s {
            State::Waiting(secrets) => Ok((**secrets).clone()),
            State::Starting => Err(Status::unavailable("the replica is starting")),
            State::Running(_) => Err(Status::failed_precondition(format!(
                "{step}: this replica already runs"
            ))),
            State::Removed => Err(Status::failed_precondition(format!(
                "{step}: this node was removed from its subnet"
            ))),
        })?
    }

    fn idle_status(&self, phase: Phase) -> StatusReply {
        StatusReply {
            node_id: self.node_id.to_string(),
            node_record: self.record.clone(),
            phase: phase.into(),
            ..StatusReply::default()
        }
    }
}

/// Runs CPU-heavy DKG work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("genesis task failed: {e}")))?
}

#[tonic::async_trait]
impl Admin for PodAdmin {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let phase = self.with_state(|s| match s {
            State::Waiting(_) | State::Starting => Phase::WaitingForGenesis,
            State::Running(_) => Phase::Running,
            State::Removed => Phase::Removed,
        })?;
        match self.running()? {
            Some(admin) => admin.status_reply(Phase::Running),
            None => Ok(self.idle_status(phase)),
        }
        .map(Response::new)
    }

    async fn submit_registry_change(
        &self,
        req: Request<SubmitRegistryChangeRequest>,
    ) -> Result<Response<SubmitRegistryChangeReply>, Status> {
        match self.running()? {
            Some(admin) => admin.submit_registry_change(req).await,
            None => Err(Status::failed_precondition(
                "this replica does not run: registry changes go to members",
            )),
        }
    }

    async fn genesis_deal(
        &self,
        req: Request<GenesisDealRequest>,
    ) -> Result<Response<GenesisDealReply>, Status> {
        let me = self.waiting("GenesisDeal")?;
        let registry = decode_registry(&req.get_ref().registry)?;
        let dealings = blocking(move || {
            genesis::deal(&mut OsRng, &me, &registry)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .await?;
        Ok(Response::new(GenesisDealReply {
            dealings: canonical_bytes(&dealings),
        }))
    }

    async fn genesis_complain(
        &self,
        req: Request<GenesisComplainRequest>,
    ) -> Result<Response<GenesisComplainReply>, Status> {
        let me = self.waiting("GenesisComplain")?;
        let req = req.into_inner();
        let registry = decode_registry(&req.registry)?;
        let dealings = decode_dealings(&req.dealings)?;
        let complaints =
            blocking(move || Ok(genesis::complaints(&mut OsRng, &me, &registry, &dealings)))
                .await?;
        Ok(Response::new(GenesisComplainReply {
            complaints: canonical_bytes(&complaints),
        }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartReply>, Status> {
        if let Some(admin) = self.running()? {
            return admin.restart(req.get_ref()).map(Response::new);
        }
        self.waiting("Start")?;
        let req = req.into_inner();
        let peers = req
            .peers
            .iter()
            .map(|p| (NodeId(p.node_id), p.url.clone()))
            .collect();
        let root = blocking(move || derive_genesis(req.genesis.as_ref())).await?;
        // Only one Start proceeds; a concurrent one finds the replica starting.
        self.with_state(|s| match s {
            State::Waiting(_) => {
                *s = State::Starting;
                Ok(())
            }
            _ => Err(Status::unavailable("the replica is starting")),
        })??;
        let (reply, rx) = oneshot::channel();
        self.start
            .send(StartCmd { root, peers, reply })
            .await
            .map_err(|_| Status::unavailable("the replica is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the replica is shutting down"))?
            .map(Response::new)
    }

    async fn audit(&self, req: Request<AuditRequest>) -> Result<Response<AuditReply>, Status> {
        match self.running()? {
            Some(admin) => Ok(Response::new(admin.audit_reply(req.get_ref()))),
            None => Err(Status::failed_precondition(
                "the replica is not running yet: it has signed nothing",
            )),
        }
    }
}

fn read_genesis(dir: &Path) -> Result<Option<CatchUpContent>, PodError> {
    let path = dir.join(GENESIS);
    match std::fs::read(&path) {
        Ok(bytes) => bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| PodError::Corrupt {
                path: path.display().to_string(),
                reason: format!("not a genesis: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

fn read_peers(dir: &Path) -> Result<Vec<(NodeId, String)>, PodError> {
    let path = dir.join(PEERS);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PodError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Binds the replica's listeners and starts it.
async fn start_node(
    cfg: &PodConfig,
    secrets: NodeSecrets,
    root: &CatchUpContent,
    peers: &[(NodeId, String)],
) -> Result<Node, PodError> {
    let bind = async |what, addr| {
        TcpListener::bind(addr)
            .await
            .map_err(|source| PodError::Bind { what, addr, source })
    };
    let grpc = bind("--listen", cfg.listen).await?;
    let http = bind("--http-listen", cfg.http_listen).await?;
    let options = Options {
        p2p_url: Some(cfg.p2p_url.clone()),
        admin_on_http: false,
        ..Options::default()
    };
    Ok(node::start_with(secrets, root, &cfg.data_dir, grpc, http, peers, options).await?)
}

/// Waits for `Start` (unless a genesis is on the volume) and starts the node; `None` if
/// `stop` fired first.
async fn wait_and_start(
    cfg: &PodConfig,
    secrets: &NodeSecrets,
    admin: &PodAdmin,
    starts: &mut mpsc::Receiver<StartCmd>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Node>, PodError> {
    if let Some(root) = read_genesis(&cfg.data_dir)? {
        let node = start_node(cfg, secrets.clone(), &root, &read_peers(&cfg.data_dir)?).await?;
        return Ok(Some(node));
    }
    loop {
        let cmd = tokio::select! {
            _ = stop.changed() => return Ok(None),
            cmd = starts.recv() => match cmd { Some(c) => c, None => return Ok(None) },
        };
        let started = async {
            // On the volume before the node runs: a restart resumes from the same genesis.
            write_private(
                &cfg.data_dir.join(PEERS),
                &serde_json::to_vec(&cmd.peers).unwrap_or_default(),
            )?;
            write_private(&cfg.data_dir.join(GENESIS), &canonical_bytes(&cmd.root))?;
            start_node(cfg, secrets.clone(), &cmd.root, &cmd.peers).await
        }
        .await;
        match started {
            Ok(node) => {
                let _ = cmd.reply.send(Ok(start_reply(&cmd.root)));
                return Ok(Some(node));
            }
            Err(e) => {
                tracing::error!(error = %e, "starting from the genesis handed over failed");
                let _ = cmd.reply.send(Err(Status::internal(e.to_string())));
                let _ = admin.with_state(|s| *s = State::Waiting(Box::new(secrets.clone())));
            }
        }
    }
}

/// Runs a pod's replica until `stop` fires.
pub async fn run(cfg: PodConfig, mut stop: watch::Receiver<bool>) -> Result<(), PodError> {
    let secrets = load_or_create_secrets(&cfg.data_dir)?;
    let node_id = secrets.node_id.0;
    let removed = cfg.data_dir.join(REMOVED).exists();
    let (start_tx, mut starts) = mpsc::channel(1);
    let admin = PodAdmin {
        node_id,
        record: canonical_bytes(&secrets.record_at(&cfg.p2p_url)),
        state: Arc::new(Mutex::new(if removed {
            State::Removed
        } else {
            State::Waiting(Box::new(secrets.clone()))
        })),
        start: start_tx,
    };
    let listener = TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|source| PodError::Bind {
            what: "--admin-listen",
            addr: cfg.admin_listen,
            source,
        })?;
    let mut admin_stop = stop.clone();
    // Genesis dealing takes a while: the admin API's requests get longer than peers'.
    let server = tokio::spawn(
        crate::transport::server_builder(std::time::Duration::from_secs(300))
            .add_service(
                AdminServer::new(admin.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = admin_stop.changed().await;
                },
            ),
    );
    tracing::info!(node.id = node_id, admin = %cfg.admin_listen, removed, "replica pod up");
    if !removed {
        if let Some(node) = wait_and_start(&cfg, &secrets, &admin, &mut starts, &mut stop).await? {
            let _ = admin.with_state(|s| *s = State::Running(node.admin()));
            tracing::info!(node.id = node_id, listen = %cfg.listen, http = %cfg.http_listen, "replica running");
            tokio::select! {
                _ = stop.changed() => {}
                _ = wait_finished(&node) => {}
            }
            let driver = node.stop().await?;
            if driver.removed() {
                write_private(
                    &cfg.data_dir.join(REMOVED),
                    b"this node was removed from the subnet's registry\n",
                )?;
                let _ = admin.with_state(|s| *s = State::Removed);
                tracing::info!(
                    node.id = node_id,
                    "removed from the subnet; the replica stopped"
                );
            }
        }
    }
    // Removed (or stopping): the admin API still answers until the pod goes.
    if !*stop.borrow() {
        let _ = stop.changed().await;
    }
    server
        .await
        .map_err(|e| node::NodeError::Task("admin", e.to_string()))??;
    Ok(())
}

/// Resolves if the driver stops by itself (removed from the subnet, or a storage failure).
pub async fn wait_finished(node: &Node) {
    while !node.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
