//! One replica, assembled: the sled store, the driver, the replica-to-replica gRPC server
//! (mutual TLS, members only) and the public HTTP server (metrics, health, the IC ingress path
//! and the admin gRPC API), started together and stopped together. The `thicket replica run`
//! binary and the in-process tests both use it.

use std::path::Path;
use std::sync::Arc;

use thicket_consensus::keys::NodeSecrets;
use thicket_execution::checkpoints::CheckpointStore;
use thicket_proto::admin::admin_server::AdminServer;
use thicket_proto::p2p::transport_server::TransportServer;
use thicket_store::sled_store::SledStore;
use thicket_types::NodeId;
use thicket_types::artifacts::CatchUpContent;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::AdminService;
use crate::driver::{BoxedConduct, Driver, DriverError, Shared};
use crate::http::HttpState;
use crate::tls::{self, Identity, PeerKeys, TlsError};
use crate::transport::{MAX_MESSAGE_BYTES, Peers, TransportError, TransportService};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening the store in {dir}: {source}{}", recovery(source, dir))]
    Store { dir: String, source: DriverError },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the driver stopped: {0}")]
    Driver(#[from] DriverError),
    #[error("{0} task failed: {1}")]
    Task(&'static str, String),
}

/// What to do about a store that cannot be trusted: the exact command that sets it aside, so
/// the replica rejoins from its peers with its keys.
fn recovery(source: &DriverError, dir: &str) -> String {
    let corrupt = matches!(
        source,
        DriverError::Store(thicket_store::StoreError::Corrupted { .. })
            | DriverError::Checkpoint(
                thicket_execution::checkpoints::CheckpointError::Corrupted { .. }
            )
    );
    if !corrupt {
        return String::new();
    }
    format!(
        "\nThe store cannot be trusted, and the replica does not run on it. It can rejoin the \
         subnet from its peers (a catch-up package, then state sync), keeping its keys: run \
         `thicket replica reset-store --data-dir {dir}` (it moves the store aside, for \
         inspection), then start the replica again."
    )
}

/// Moves the store of the replica in `dir` aside (`store.corrupt-<seconds>`, and its seal),
/// keeping its keys: started again, the replica rejoins from its peers. Returns where the
/// store went.
pub fn reset_store(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let store = dir.join("store");
    if !store.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} holds no store", dir.display()),
        ));
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("store.corrupt-{secs}"));
    std::fs::rename(&store, &aside)?;
    let seal = thicket_store::sled_store::seal_path(&store);
    if seal.exists() {
        std::fs::rename(&seal, dir.join(format!("store.corrupt-{secs}.seal")))?;
    }
    Ok(aside)
}

/// A running replica.
pub struct Node {
    pub shared: Shared,
    admin: AdminService,
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<Result<Driver<SledStore>, DriverError>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
}

/// How a replica is reached, beyond its listeners.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The transport URL peers use (its registry record's); by default the gRPC listener's
    /// address.
    pub p2p_url: Option<String>,
    /// Serve the admin gRPC API on the HTTP port too (a local subnet); a pod serves it on a
    /// port of its own instead, away from the public IC HTTP interface.
    pub admin_on_http: bool,
    /// What the HTTP port allows clients.
    pub http_limits: crate::http::server::Limits,
    /// How the replica conducts itself (honest; the fault harness's Byzantine replicas differ).
    pub conduct: MakeConduct,
}

/// Makes the replica's conduct when it starts: the protocol as written unless a test binary
/// gives another (`thicket-faults replica --behaviour ...`, Byzantine on the real transport).
#[derive(Clone, Default)]
pub struct MakeConduct(Option<Arc<dyn Fn() -> BoxedConduct + Send + Sync>>);

impl MakeConduct {
    pub fn new(make: impl Fn() -> BoxedConduct + Send + Sync + 'static) -> Self {
        MakeConduct(Some(Arc::new(make)))
    }

    pub fn make(&self) -> BoxedConduct {
        match &self.0 {
            Some(make) => make(),
            None => Box::new(thicket_core::conduct::Honest),
        }
    }
}

impl std::fmt::Debug for MakeConduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "custom" } else { "honest" })
    }
}

/// Starts a replica with its data in `dir`, serving gRPC on `grpc` and HTTP (with the admin
/// API) on `http`.
pub async fn start(
    secrets: NodeSecrets,
    genesis: &CatchUpContent,
    dir: &Path,
    grpc: TcpListener,
    http: TcpListener,
    peers: &[(NodeId, String)],
) -> Result<Node, NodeError> {
    let options = Options {
        admin_on_http: true,
        ..Options::default()
    };
    start_with(secrets, genesis, dir, grpc, http, peers, options).await
}

/// Starts a replica with its data in `dir`, serving gRPC on `grpc` and HTTP on `http`.
pub async fn start_with(
    secrets: NodeSecrets,
    genesis: &CatchUpContent,
    dir: &Path,
    grpc: TcpListener,
    http: TcpListener,
    peers: &[(NodeId, String)],
    options: Options,
) -> Result<Node, NodeError> {
    let store_err = |source: DriverError| NodeError::Store {
        dir: dir.display().to_string(),
        source,
    };
    let store = SledStore::open(&dir.join("store")).map_err(|e| store_err(e.into()))?;
    let checkpoints = CheckpointStore::open(&store.db()).map_err(|e| store_err(e.into()))?;
    let identity = Identity::new(&secrets)?;
    let record = match &options.p2p_url {
        Some(url) => secrets.record_at(url),
        None => grpc
            .local_addr()
            .map(|a| secrets.record_at(&format!("http://{a}")))
            .unwrap_or_else(|_| secrets.record()),
    };
    let keys = PeerKeys::default();
    let tls = tls::server_config(&identity, &keys)?;
    let peers = Peers::new(peers, identity, keys.clone())?;
    let shared = Shared::new(secrets.node_id);
    if let Ok(mut s) = shared.metrics.status.lock() {
        s.node_record = thicket_types::canonical_bytes(&record);
        s.genesis_hash = genesis.block.hash().0.to_vec();
    }
    let (inbox_tx, inbox) = mpsc::channel(4096);
    let node_id = secrets.node_id.0;
    let node_key = secrets.signing.clone();
    let node_principal = thicket_types::ingress::self_authenticating(
        &[
            &thicket_types::ingress::ED25519_DER_PREFIX[..],
            &node_key.public_key().0,
        ]
        .concat(),
    );
    let driver = Driver::new(
        secrets,
        genesis,
        store,
        checkpoints.clone(),
        peers,
        inbox,
        shared.clone(),
        options.conduct.make(),
    )
    .map_err(store_err)?;

    let (shutdown, rx) = watch::channel(false);
    let mut stop = rx.clone();
    let incoming = tls::incoming(grpc, tls, keys.clone(), shared.metrics.tls_refused.clone());
    let grpc = tokio::spawn(
        crate::transport::server_builder(crate::tls::REQUEST_TIMEOUT)
            .add_service(
                TransportServer::new(TransportService::new(
                    inbox_tx.clone(),
                    shared.finalized.clone(),
                    shared.metrics.clone(),
                    checkpoints,
                    keys.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            }),
    );
    let state = Arc::new(HttpState {
        metrics: shared.metrics.clone(),
        inbox: inbox_tx.clone(),
        log: shared.log.clone(),
        certified: shared.certified.clone(),
        node_key,
        node_principal,
        queries: crate::http::query::QueryLimit::new(
            options.http_limits.max_queries,
            options.http_limits.max_waiting_queries,
            shared.metrics.queries_refused_busy.clone(),
        ),
    });
    let admin = AdminService {
        node_id,
        audit: shared.audit.clone(),
        metrics: shared.metrics.clone(),
        inbox: inbox_tx,
    };
    let mut app = crate::http::router(state.clone());
    if options.admin_on_http {
        // gRPC next to the IC HTTP interface (the replica-to-replica port admits registry
        // members only).
        app = app
            .merge(tonic::service::Routes::new(AdminServer::new(admin.clone())).into_axum_router());
    }
    // A path that is neither the IC interface nor a gRPC service of this port goes to the
    // HTTP gateway when it names a canister (its host, or `?canisterId=`), and is a 404
    // otherwise (tonic's own fallback would answer 200 with a gRPC "unimplemented" status).
    let limits = options.http_limits;
    let app = app
        .fallback(move |req| crate::http::gateway::gateway(state.clone(), req))
        .layer(axum::middleware::from_fn_with_state(
            limits.request_timeout,
            crate::http::server::bounded,
        ));
    let http = tokio::spawn(crate::http::server::serve(
        http,
        app,
        limits,
        shared.metrics.http_connections_refused.clone(),
        rx.clone(),
    ));
    let driver = tokio::spawn(driver.run(rx));
    Ok(Node {
        shared,
        admin,
        shutdown,
        driver,
        grpc,
        http,
    })
}

impl Node {
    /// The admin API of this replica (to serve on a port of its own).
    pub fn admin(&self) -> AdminService {
        self.admin.clone()
    }

    /// Resolves when the driver stops on its own (a storage failure).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// Stops everything and returns the driver (its pool and state, for inspection).
    pub async fn stop(self) -> Result<Driver<SledStore>, NodeError> {
        let _ = self.shutdown.send(true);
        let task = |e: tokio::task::JoinError| e.to_string();
        let driver = self
            .driver
            .await
            .map_err(|e| NodeError::Task("driver", task(e)))??;
        self.grpc
            .await
            .map_err(|e| NodeError::Task("gRPC", task(e)))?
            .map_err(|e| NodeError::Task("gRPC", e.to_string()))?;
        self.http
            .await
            .map_err(|e| NodeError::Task("HTTP", task(e)))?
            .map_err(|e| NodeError::Task("HTTP", e.to_string()))?;
        Ok(driver)
    }
}
