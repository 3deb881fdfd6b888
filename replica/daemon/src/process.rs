//! The `thicket replica run` process: a replica from its data directory and a genesis file,
//! with bootstrap peers, until it is told to stop, its driver stops by itself (a storage
//! failure, or the subnet removed it), and then it remembers a removal so that it never runs
//! again as a member. The fault harness's Byzantine replicas run the same process with
//! another conduct ([`node::Options::conduct`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use thicket_consensus::keys::NodeSecrets;
use thicket_types::NodeId;
use thicket_types::artifacts::CatchUpContent;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::{self, NodeError, Options};
use crate::pod::{self, PodError, REMOVED, SECRETS};

/// What `thicket replica run` is given.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub data_dir: PathBuf,
    /// The genesis catch-up content (bincode), as `thicket genesis` or `up` wrote it.
    pub genesis: PathBuf,
    /// Transport address for peers (and the admin API on the HTTP port).
    pub listen: SocketAddr,
    /// The IC HTTP interface, metrics and health.
    pub http_listen: SocketAddr,
    /// Bootstrap peers as `NODE_ID=URL`; the registry's records name the rest.
    pub peers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Files(#[from] PodError),
    #[error("{path} is not a valid genesis: {reason}")]
    Genesis { path: String, reason: String },
    #[error("--peer {peer:?}: {reason}")]
    Peer { peer: String, reason: &'static str },
    #[error("node {node} was removed from the subnet (see {marker}); it does not run again")]
    Removed { node: u64, marker: String },
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The node's keys in `dir` (refused if other users may read them).
pub fn secrets(dir: &Path) -> Result<NodeSecrets, PodError> {
    let path = dir.join(SECRETS);
    let bytes = pod::read_private(&path)?;
    NodeSecrets::from_bytes(&bytes).map_err(|reason| PodError::Corrupt {
        path: path.display().to_string(),
        reason,
    })
}

/// `NODE_ID=URL` peers.
pub fn parse_peers(peers: &[String]) -> Result<Vec<(NodeId, String)>, RunError> {
    peers
        .iter()
        .map(|p| {
            let bad = |reason| RunError::Peer {
                peer: p.clone(),
                reason,
            };
            let (id, url) = p
                .split_once('=')
                .ok_or_else(|| bad("expected NODE_ID=URL"))?;
            let id = id.parse().map_err(|_| bad("node id must be a number"))?;
            Ok((NodeId(id), url.to_string()))
        })
        .collect()
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, PodError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| PodError::Bind { what, addr, source })
}

/// Runs the replica until `stop` flips or its driver stops by itself.
pub async fn run(
    spec: RunSpec,
    options: Options,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let me = secrets(&spec.data_dir)?;
    let genesis_err = |reason: String| RunError::Genesis {
        path: spec.genesis.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(&spec.genesis).map_err(|e| genesis_err(e.to_string()))?;
    let root: CatchUpContent =
        bincode::deserialize(&bytes).map_err(|e| genesis_err(e.to_string()))?;
    let peers = parse_peers(&spec.peers)?;
    let removed_marker = spec.data_dir.join(REMOVED);
    let node_id = me.node_id.0;
    if removed_marker.exists() {
        return Err(RunError::Removed {
            node: node_id,
            marker: removed_marker.display().to_string(),
        });
    }
    let grpc = bind("--listen", spec.listen).await?;
    let http = bind("--http-listen", spec.http_listen).await?;
    let running = node::start_with(
        me,
        &root,
        &spec.data_dir,
        grpc,
        http,
        &peers,
        Options {
            admin_on_http: true,
            ..options
        },
    )
    .await?;
    tracing::info!(
        node.id = node_id,
        listen = %spec.listen,
        http_listen = %spec.http_listen,
        "replica running"
    );
    let stopped = async {
        if stop.wait_for(|s| *s).await.is_err() {
            // Nobody can tell it to stop any more: it runs until its driver stops.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = stopped => {}
        _ = pod::wait_finished(&running) => {}
    }
    let driver = running.stop().await?;
    if driver.removed() {
        // Remembered across restarts: a removed node must not come back as a member.
        pod::write_private(
            &removed_marker,
            b"this node was removed from the subnet's registry\n",
        )?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A watch that flips on SIGINT or SIGTERM (needs a running runtime).
pub fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        terminated().await;
        let _ = tx.send(true);
    });
    rx
}
