//! gRPC transport between replicas: the server hands what peers push to the driver's inbox
//! (after the wire checks), and answers fetches from the driver's pool; the client side pushes
//! to every peer and remembers how far each has finalized.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thicket_execution::checkpoints::CheckpointStore;
use thicket_proto::p2p::transport_client::TransportClient;
use thicket_proto::p2p::transport_server::Transport;
use thicket_proto::p2p::{
    Artifact, ChunkReply, ChunkRequest, FetchReply, FetchRequest, ManifestReply, ManifestRequest,
    PushReply, PushRequest,
};
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::state::Manifest;
use thicket_types::{CryptoHash, Height, NodeId};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::metrics::{KindLabel, Metrics};
use crate::tls::{self, Identity, PeerInfo, PeerKeys};
use crate::wire;

/// What the transport hands the driver.
pub enum Inbound {
    Artifacts(Vec<(CryptoHash, ConsensusMessage)>),
    Fetch {
        from: Height,
        limit: usize,
        reply: oneshot::Sender<Vec<ConsensusMessage>>,
    },
    /// An ingress message accepted over HTTP (already checked); the reply says whether the
    /// pool took it.
    Ingress {
        msg: thicket_types::ingress::SignedIngress,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Who sent an executed request, if the state still remembers it (read_state lets only
    /// the sender read a request's status).
    RequestSender {
        id: thicket_types::ingress::RequestId,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

pub use thicket_core::MAX_FETCH;

/// The service peers call.
pub struct TransportService {
    inbox: mpsc::Sender<Inbound>,
    finalized: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    checkpoints: CheckpointStore,
    keys: PeerKeys,
    /// Per peer: (artifacts, bytes).
    budgets: Mutex<BTreeMap<NodeId, (Budget, Budget)>>,
}

/// A gRPC server with the limits every port of a replica keeps: a request that takes longer
/// than `request_timeout` is ended, a connection is pinged when quiet and closed if it does
/// not answer, and one connection carries a bounded number of requests at once.
pub fn server_builder(request_timeout: std::time::Duration) -> tonic::transport::Server {
    use std::time::Duration;
    tonic::transport::Server::builder()
        .timeout(request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(128))
        .concurrency_limit_per_connection(64)
        .tcp_keepalive(Some(Duration::from_secs(60)))
}

/// Artifacts a peer may push per second, and the burst it may save up: well above what an
/// honest peer sends (a few consensus artifacts per round, plus the ingress it relays), so
/// only a flooding peer is cut, and only its excess.
pub const PEER_ARTIFACTS_PER_SEC: f64 = 20_000.0;
pub const PEER_BURST: f64 = 40_000.0;
/// The same in bytes: a peer may push 64 MiB/s, saving up 128 MiB.
pub const PEER_BYTES_PER_SEC: f64 = 64.0 * 1024.0 * 1024.0;
pub const PEER_BYTES_BURST: f64 = 128.0 * 1024.0 * 1024.0;

/// Largest gRPC message either side accepts; pushes and fetch replies are cut to half of it.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
const MAX_BATCH_BYTES: usize = MAX_MESSAGE_BYTES / 2;

/// A token bucket.
struct Budget {
    tokens: f64,
    at: std::time::Instant,
    rate: f64,
    burst: f64,
}

impl Budget {
    fn new(rate: f64, burst: f64) -> Self {
        Budget {
            tokens: burst,
            at: std::time::Instant::now(),
            rate,
            burst,
        }
    }

    fn refill(&mut self) {
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }
}

/// Splits encoded artifacts into batches of at most `MAX_BATCH_BYTES` (one artifact alone may
/// exceed it; it is bounded by `wire::MAX_ARTIFACT_BYTES`).
fn batches(artifacts: Vec<Artifact>) -> Vec<Vec<Artifact>> {
    let mut out: Vec<Vec<Artifact>> = Vec::new();
    let mut size = 0;
    for a in artifacts {
        let n = a.body.len() + a.id.len();
        match out.last_mut() {
            Some(last) if size + n <= MAX_BATCH_BYTES => last.push(a),
            _ => {
                size = 0;
                out.push(vec![a]);
            }
        }
        size += n;
    }
    out
}

impl TransportService {
    pub fn new(
        inbox: mpsc::Sender<Inbound>,
        finalized: Arc<AtomicU64>,
        metrics: Arc<Metrics>,
        checkpoints: CheckpointStore,
        keys: PeerKeys,
    ) -> Self {
        TransportService {
            inbox,
            finalized,
            metrics,
            checkpoints,
            keys,
            budgets: Mutex::new(BTreeMap::new()),
        }
    }
}

impl TransportService {
    /// The authenticated peer of a request, if it is still a registry member (membership is
    /// checked at every request, not only at the handshake: a removed node's open connection
    /// stops working).
    fn member<T>(&self, req: &Request<T>) -> Result<NodeId, Status> {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.node_id)
            .ok_or_else(|| Status::unauthenticated("no peer identity"))?;
        if self.keys.key_of(peer).is_none() {
            return Err(Status::permission_denied(format!(
                "{peer} is not a registry member"
            )));
        }
        Ok(peer)
    }

    /// How many of `sizes` (artifact sizes, in order) the peer's budgets allow.
    fn admit(&self, peer: NodeId, sizes: impl Iterator<Item = usize>) -> Result<usize, Status> {
        let mut budgets = self
            .budgets
            .lock()
            .map_err(|_| Status::internal("budget lock poisoned"))?;
        let (count, bytes) = budgets.entry(peer).or_insert_with(|| {
            (
                Budget::new(PEER_ARTIFACTS_PER_SEC, PEER_BURST),
                Budget::new(PEER_BYTES_PER_SEC, PEER_BYTES_BURST),
            )
        });
        count.refill();
        bytes.refill();
        let mut granted = 0;
        for n in sizes {
            if count.tokens < 1.0 || bytes.tokens < n as f64 {
                break;
            }
            count.tokens -= 1.0;
            bytes.tokens -= n as f64;
            granted += 1;
        }
        Ok(granted)
    }
}

fn storage(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("checkpoint storage: {e}"))
}

#[tonic::async_trait]
impl Transport for TransportService {
    async fn push(&self, req: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let peer = self.member(&req)?;
        let n = req.get_ref().artifacts.len();
        let granted = self.admit(
            peer,
            req.get_ref()
                .artifacts
                .iter()
                .map(|a| a.body.len() + a.id.len()),
        )?;
        if granted < n {
            // No peer label on the counter (peer ids are unbounded over a subnet's life): the
            // log names the peer.
            tracing::debug!(
                peer.id = peer.0,
                dropped = n - granted,
                "peer over its rate limit"
            );
            self.metrics
                .artifacts_rate_limited
                .inc_by((n - granted) as u64);
        }
        let mut ok = Vec::new();
        for a in req.get_ref().artifacts.iter().take(granted) {
            match wire::decode(a) {
                Ok(x) => ok.push(x),
                Err(e) => {
                    // Dropped at the wire (bad id, undecodable, too big).
                    self.metrics
                        .artifacts_invalid
                        .get_or_create(&KindLabel {
                            kind: "Undecodable".into(),
                        })
                        .inc();
                    tracing::debug!(error = %e, "dropped artifact at the wire");
                }
            }
        }
        if !ok.is_empty() {
            self.inbox
                .send(Inbound::Artifacts(ok))
                .await
                .map_err(|_| Status::unavailable("replica shutting down"))?;
        }
        Ok(Response::new(PushReply {
            finalized_height: self.finalized.load(Ordering::Relaxed),
        }))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        self.member(&req)?;
        let r = req.into_inner();
        let (tx, rx) = oneshot::channel();
        let limit = (r.limit as usize).clamp(1, MAX_FETCH);
        self.inbox
            .send(Inbound::Fetch {
                from: Height(r.from_height),
                limit,
                reply: tx,
            })
            .await
            .map_err(|_| Status::unavailable("replica shutting down"))?;
        let msgs = rx
            .await
            .map_err(|_| Status::unavailable("replica shutting down"))?;
        let artifacts = batches(msgs.iter().map(wire::encode).collect())
            .into_iter()
            .next()
            .unwrap_or_default();
        Ok(Response::new(FetchReply { artifacts }))
    }

    async fn state_manifest(
        &self,
        req: Request<ManifestRequest>,
    ) -> Result<Response<ManifestReply>, Status> {
        self.member(&req)?;
        let m = self
            .checkpoints
            .manifest(Height(req.get_ref().height))
            .map_err(storage)?;
        Ok(Response::new(ManifestReply {
            manifest: m
                .map(|m| bincode::serialize(&m).unwrap_or_default())
                .unwrap_or_default(),
        }))
    }

    async fn state_chunk(
        &self,
        req: Request<ChunkRequest>,
    ) -> Result<Response<ChunkReply>, Status> {
        self.member(&req)?;
        let r = req.get_ref();
        let Some(m) = self
            .checkpoints
            .manifest(Height(r.height))
            .map_err(storage)?
        else {
            return Ok(Response::new(ChunkReply::default()));
        };
        let Some(info) = m.chunks.get(r.index as usize) else {
            return Err(Status::out_of_range(format!(
                "chunk {} of a {}-chunk checkpoint",
                r.index,
                m.chunks.len()
            )));
        };
        let chunk = self.checkpoints.chunk(&info.hash).map_err(storage)?;
        Ok(Response::new(ChunkReply {
            chunk: chunk.unwrap_or_default(),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer {peer}: bad URL {url:?}: {reason}")]
    BadPeerUrl {
        peer: NodeId,
        url: String,
        reason: String,
    },
}

/// The peers of a replica, with the finalized height each last reported.
#[derive(Clone)]
pub struct Peers {
    clients: Vec<(NodeId, TransportClient<Channel>)>,
    /// The URL each client was made for, to notice when the registry moves a peer.
    urls: BTreeMap<NodeId, String>,
    pub finalized: Arc<Mutex<BTreeMap<NodeId, u64>>>,
    identity: Identity,
    /// Registry members' node keys: whom we accept, and what each peer must present.
    keys: PeerKeys,
}

impl Peers {
    /// Lazily connected clients: a peer that is down costs nothing until it is back.
    pub fn new(
        peers: &[(NodeId, String)],
        identity: Identity,
        keys: PeerKeys,
    ) -> Result<Self, TransportError> {
        let mut p = Peers {
            clients: Vec::new(),
            urls: BTreeMap::new(),
            finalized: Arc::new(Mutex::new(BTreeMap::new())),
            identity,
            keys,
        };
        for (id, url) in peers {
            p.connect(*id, url)?;
        }
        Ok(p)
    }

    pub fn keys(&self) -> &PeerKeys {
        &self.keys
    }

    fn connect(&mut self, id: NodeId, url: &str) -> Result<(), TransportError> {
        let bad = |reason: String| TransportError::BadPeerUrl {
            peer: id,
            url: url.to_string(),
            reason,
        };
        let cfg =
            tls::client_config(&self.identity, &self.keys, id).map_err(|e| bad(e.to_string()))?;
        let channel = tls::channel(url, cfg).map_err(|e| bad(e.to_string()))?;
        self.clients.retain(|(p, _)| *p != id);
        self.clients.push((
            id,
            TransportClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        ));
        self.urls.insert(id, url.to_string());
        Ok(())
    }

    /// Follows the registry: connects to the peers it names (and moves those whose address
    /// changed), and once it names any, forgets the others (removed nodes, or bootstrap peers
    /// that are not members). A registry URL that does not parse is skipped: one bad record
    /// must not cut a replica off from the others.
    pub fn learn(&mut self, registry_peers: &[(NodeId, String)], keys: BTreeMap<NodeId, [u8; 32]>) {
        self.keys.set(keys);
        for (id, url) in registry_peers {
            if !url.is_empty() && self.urls.get(id) != Some(url) && self.connect(*id, url).is_err()
            {
                tracing::warn!(peer.id = id.0, %url, "registry names an unusable peer URL");
            }
        }
        if registry_peers.is_empty() {
            return;
        }
        let named: std::collections::BTreeSet<NodeId> =
            registry_peers.iter().map(|(id, _)| *id).collect();
        if self.clients.iter().any(|(id, _)| !named.contains(id)) {
            self.clients.retain(|(id, _)| named.contains(id));
            self.urls.retain(|id, _| named.contains(id));
            if let Ok(mut f) = self.finalized.lock() {
                f.retain(|id, _| named.contains(id));
            }
        }
    }

    /// Pushes artifacts to every peer (or only to `only`), without waiting; failures are
    /// retried by retransmission.
    pub fn push_to(
        &self,
        only: Option<&BTreeSet<NodeId>>,
        msgs: &[ConsensusMessage],
        finalized: u64,
    ) {
        if msgs.is_empty() {
            return;
        }
        for artifacts in batches(msgs.iter().map(wire::encode).collect()) {
            let req = PushRequest {
                artifacts,
                finalized_height: finalized,
            };
            let wanted = self
                .clients
                .iter()
                .filter(|(id, _)| only.is_none_or(|o| o.contains(id)));
            for (id, client) in wanted {
                let (id, mut client, req, heights) =
                    (*id, client.clone(), req.clone(), self.finalized.clone());
                tokio::spawn(async move {
                    if let Ok(reply) = client.push(req).await {
                        if let Ok(mut h) = heights.lock() {
                            h.insert(id, reply.get_ref().finalized_height);
                        }
                    }
                });
            }
        }
    }

    /// Fetches what the peer has from `from` on.
    pub async fn fetch(&self, peer: NodeId, from: Height) -> Vec<(CryptoHash, ConsensusMessage)> {
        let Some((_, client)) = self.clients.iter().find(|(id, _)| *id == peer) else {
            return vec![];
        };
        let req = FetchRequest {
            from_height: from.0,
            limit: MAX_FETCH as u32,
        };
        match client.clone().fetch(req).await {
            Ok(r) => r
                .into_inner()
                .artifacts
                .iter()
                .filter_map(|a| wire::decode(a).ok())
                .collect(),
            Err(_) => vec![],
        }
    }

    /// A peer's manifest of the checkpoint at `height`, if it has one and it decodes.
    pub async fn manifest(&self, peer: NodeId, height: Height) -> Option<Manifest> {
        let (_, client) = self.clients.iter().find(|(id, _)| *id == peer)?;
        let reply = client
            .clone()
            .state_manifest(ManifestRequest { height: height.0 })
            .await
            .ok()?;
        wire::decode_manifest(&reply.into_inner().manifest)
    }

    /// One chunk of a peer's checkpoint (unchecked: the caller checks it against the manifest).
    pub async fn chunk(&self, peer: NodeId, height: Height, index: u32) -> Option<Vec<u8>> {
        let (_, client) = self.clients.iter().find(|(id, _)| *id == peer)?;
        let reply = client
            .clone()
            .state_chunk(ChunkRequest {
                height: height.0,
                index,
            })
            .await
            .ok()?;
        Some(reply.into_inner().chunk)
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.clients.iter().map(|(id, _)| *id).collect()
    }
}
