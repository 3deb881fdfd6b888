//! Mutual TLS between replicas, pinned to the registry.
//!
//! Each replica presents a self-signed certificate for its Ed25519 node key (the key its
//! registry record holds), made afresh at start. Nothing is trusted through a CA: a server
//! accepts a client only if the client's certificate key is the node key of a registry member
//! (in force, or about to join), and learns which node it is talking to; a client accepts a
//! server only if its key is the one the registry gives for the node it meant to reach. The
//! TLS handshake signatures prove possession of that key. TLS 1.3 only.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thicket_consensus::keys::NodeSecrets;
use thicket_types::NodeId;

/// The name clients put in the handshake; certificates are pinned by key, not by name.
pub const SERVER_NAME: &str = "replica.thicket.internal";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making the node certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The node keys a replica talks to: registry members by node id. The driver updates it as the
/// registry changes; the verifiers read it at every handshake.
#[derive(Clone, Default)]
pub struct PeerKeys(Arc<RwLock<BTreeMap<NodeId, [u8; 32]>>>);

impl PeerKeys {
    pub fn set(&self, keys: BTreeMap<NodeId, [u8; 32]>) {
        if let Ok(mut k) = self.0.write() {
            if *k != keys {
                *k = keys;
            }
        }
    }

    pub fn key_of(&self, id: NodeId) -> Option<[u8; 32]> {
        self.0.read().ok()?.get(&id).copied()
    }

    pub fn node_with_key(&self, key: &[u8; 32]) -> Option<NodeId> {
        self.0
            .read()
            .ok()?
            .iter()
            .find_map(|(id, k)| (k == key).then_some(*id))
    }
}

/// RFC 8410 PKCS#8 (v1) prefix of an Ed25519 private key: the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// OID 1.3.101.112 (Ed25519).
const ED25519_OID: &str = "1.3.101.112";

/// A node's certificate and key for TLS.
#[derive(Clone)]
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
}

impl Identity {
    pub fn new(secrets: &NodeSecrets) -> Result<Self, TlsError> {
        let pkcs8 = [ED25519_PKCS8_PREFIX.as_slice(), &secrets.signing.to_bytes()].concat();
        let key_der = PrivatePkcs8KeyDer::from(pkcs8);
        let cert_err = |e: rcgen::Error| TlsError::Certificate(e.to_string());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
            .map_err(cert_err)?;
        let mut params =
            rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, secrets.node_id.to_string());
        let cert = params.self_signed(&key_pair).map_err(cert_err)?;
        Ok(Identity {
            cert: cert.der().clone(),
            key: Arc::new(key_der),
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.as_ref().clone_key())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The Ed25519 key a certificate carries; anything else is refused.
pub fn ed25519_key(cert: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
    let bad = |why: &str| rustls::Error::General(format!("peer certificate: {why}"));
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| bad("not X.509"))?;
    let spki = parsed.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(bad("not an Ed25519 key"));
    }
    spki.subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| bad("malformed Ed25519 key"))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Client side: the server must hold the registry key of the node we meant to reach.
#[derive(Debug)]
struct PinnedServer {
    expected: NodeId,
    keys: PeerKeys,
    algs: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKeys")
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key(end_entity)?;
        match self.keys.key_of(self.expected) {
            Some(k) if k == key => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::General(format!(
                "{} presented a key that is not its registry key",
                self.expected
            ))),
            None => Err(rustls::Error::General(format!(
                "{} is not in this replica's registry",
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side: the client must hold the registry key of some member.
#[derive(Debug)]
struct MemberClients {
    keys: PeerKeys,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for MemberClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = ed25519_key(end_entity)?;
        self.keys
            .node_with_key(&key)
            .map(|_| ClientCertVerified::assertion())
            .ok_or_else(|| rustls::Error::General("client key is not a registry member's".into()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The server configuration: our certificate, member clients only, HTTP/2.
pub fn server_config(id: &Identity, keys: &PeerKeys) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MemberClients {
            keys: keys.clone(),
            algs: algorithms(),
        }))
        .with_single_cert(vec![id.cert.clone()], id.key())?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// The client configuration for connections to `peer`: its registry key pinned.
pub fn client_config(
    id: &Identity,
    keys: &PeerKeys,
    peer: NodeId,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            expected: peer,
            keys: keys.clone(),
            algs: algorithms(),
        }))
        .with_client_auth_cert(vec![id.cert.clone()], id.key())?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn the_certificate_carries_the_node_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = NodeSecrets::generate(&mut rng, NodeId(3));
        let id = Identity::new(&s).expect("certificate");
        assert_eq!(
            ed25519_key(&id.cert).expect("key"),
            s.signing.public_key().0
        );
        let keys = PeerKeys::default();
        keys.set([(NodeId(3), s.signing.public_key().0)].into());
        assert_eq!(
            keys.node_with_key(&s.signing.public_key().0),
            Some(NodeId(3))
        );
        assert!(server_config(&id, &keys).is_ok());
        assert!(client_config(&id, &keys, NodeId(3)).is_ok());
    }
}

/// Which member is on the other end of an accepted connection (from its certificate).
#[derive(Clone, Copy, Debug)]
pub struct PeerInfo {
    pub node_id: NodeId,
}

/// An accepted, authenticated connection.
pub struct PeerConn {
    inner: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    info: PeerInfo,
    _slot: MemberSlot,
}

/// Connections one member may hold open at once: its channel needs one, a reconnect briefly
/// two; more is a member misbehaving, and is closed at once.
pub const MAX_CONNECTIONS_PER_MEMBER: usize = 8;

/// A member's open connections, counted down when one closes.
#[derive(Clone, Default)]
struct MemberConns(Arc<std::sync::Mutex<std::collections::HashMap<NodeId, usize>>>);

struct MemberSlot {
    node: NodeId,
    conns: MemberConns,
}

impl MemberConns {
    fn open(&self, node: NodeId) -> Option<MemberSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(node).or_default();
        if *n >= MAX_CONNECTIONS_PER_MEMBER {
            return None;
        }
        *n += 1;
        Some(MemberSlot {
            node,
            conns: self.clone(),
        })
    }
}

impl Drop for MemberSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.conns.0.lock()
            && let Some(n) = m.get_mut(&self.node)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.node);
            }
        }
    }
}

impl tonic::transport::server::Connected for PeerConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info
    }
}

impl tokio::io::AsyncRead for PeerConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PeerConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Handshakes longer than this are abandoned (a peer cannot hold a slot by stalling).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Handshakes in progress at once; beyond, new connections are closed at once. Members keep
/// their connections open, so only a flood of strangers meets the limit.
const MAX_HANDSHAKES: usize = 64;

/// A request to a peer that takes longer than this fails (and is retried later, elsewhere).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections on `listener`, each handshaken in its own task; only members'
/// connections come out of the stream. Refusals are counted and logged at debug level.
pub fn incoming(
    listener: tokio::net::TcpListener,
    cfg: rustls::ServerConfig,
    keys: PeerKeys,
    refused: prometheus_client::metrics::counter::Counter,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<PeerConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let members = MemberConns::default();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused.inc();
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, keys, refused, members) = (
                acceptor.clone(),
                tx.clone(),
                keys.clone(),
                refused.clone(),
                members.clone(),
            );
            tokio::spawn(async move {
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(slot);
                let conn = match tls {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        refused.inc();
                        tracing::debug!(%addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        refused.inc();
                        return;
                    }
                };
                let node = conn
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| ed25519_key(c).ok())
                    .and_then(|k| keys.node_with_key(&k));
                let Some(node_id) = node else {
                    return;
                };
                let Some(slot) = members.open(node_id) else {
                    refused.inc();
                    tracing::debug!(%addr, %node_id, "a member holds too many connections");
                    return;
                };
                let _ = tx
                    .send(Ok(PeerConn {
                        inner: conn,
                        info: PeerInfo { node_id },
                        _slot: slot,
                    }))
                    .await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A peer's connection is pinged this often, even when no request is open...
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// ...and dropped when a ping goes unanswered this long. A partition that drops packets
/// leaves no trace on an idle TCP connection: without pings, the channel would keep sending
/// into it and, once the network heals, wait out TCP's retransmission backoff (tens of
/// seconds after a long partition) before a request got through. Dropped, the channel
/// reconnects on the next request, and the first attempt after the heal succeeds.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// A connection attempt (TCP and TLS) to a peer abandoned after this long: while a peer is
/// unreachable, attempts are retried at about this pace, so one starts soon after it is back.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A lazily connected gRPC channel to `peer` at `url`, over mutual TLS with its registry key
/// pinned.
pub fn channel(
    url: &str,
    cfg: rustls::ClientConfig,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            let connector = connector.clone();
            async move {
                let host = uri.host().unwrap_or("127.0.0.1").to_string();
                let port = uri.port_u16().unwrap_or(80);
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                let name = ServerName::try_from(SERVER_NAME)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}
