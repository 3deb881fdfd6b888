//! Prometheus metrics of a replica (`prometheus-client`, `thicket_` prefix, base units, no
//! unbounded labels) and the status snapshot the admin API serves.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Artifact kind (a fixed set).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Node id of a registry member (a bounded set).
    pub peer: u64,
}

pub struct Metrics {
    pub registry: Registry,
    pub finalized_height: Gauge<i64, AtomicI64>,
    pub notarized_height: Gauge<i64, AtomicI64>,
    pub executed_height: Gauge<i64, AtomicI64>,
    pub dkg_epoch: Gauge<i64, AtomicI64>,
    pub blocks_finalized: Counter<u64, AtomicU64>,
    pub artifacts_received: Family<KindLabel, Counter>,
    pub artifacts_invalid: Family<KindLabel, Counter>,
    /// Arrivals dropped because the unvalidated section was full.
    pub artifacts_dropped: Counter,
    pub peers_connected: Gauge<i64, AtomicI64>,
    /// Artifacts dropped because a peer exceeded its rate.
    pub artifacts_rate_limited: Family<PeerLabel, Counter>,
    /// Connections refused at the TLS handshake (not a member, bad certificate, timeout).
    pub tls_refused: Counter,
    /// Time between successive finalized heights.
    pub round_duration: Histogram,
    pub ingress_accepted: Counter,
    /// Ingress messages executed (replied or rejected) by this replica.
    pub ingress_executed: Counter,
    pub state_syncs: Counter,
    pub state_sync_chunks: Counter,
    /// What the admin API's Status reports.
    pub status: Mutex<Status>,
}

use std::sync::atomic::AtomicI64;

#[derive(Clone, Debug, Default)]
pub struct Status {
    pub root_height: u64,
    pub registry_version: u64,
    pub members: Vec<u64>,
    pub subnet_public_key: Vec<u8>,
    pub subnet_id: String,
    pub pending_registry_version: u64,
    pub pending_members: Vec<u64>,
    pub node_record: Vec<u8>,
    pub holds_current_key_shares: bool,
    pub holds_next_key_shares: bool,
    /// Hash of the genesis block the replica runs from.
    pub genesis_hash: Vec<u8>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("thicket");
        let m = Metrics {
            finalized_height: Gauge::default(),
            notarized_height: Gauge::default(),
            executed_height: Gauge::default(),
            dkg_epoch: Gauge::default(),
            blocks_finalized: Counter::default(),
            artifacts_received: Family::default(),
            artifacts_invalid: Family::default(),
            artifacts_dropped: Counter::default(),
            peers_connected: Gauge::default(),
            artifacts_rate_limited: Family::default(),
            tls_refused: Counter::default(),
            round_duration: Histogram::new([
                0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
            ]),
            ingress_accepted: Counter::default(),
            ingress_executed: Counter::default(),
            state_syncs: Counter::default(),
            state_sync_chunks: Counter::default(),
            status: Mutex::new(Status::default()),
            registry: Registry::default(),
        };
        registry.register(
            "consensus_finalized_height",
            "Highest finalized height",
            m.finalized_height.clone(),
        );
        registry.register(
            "consensus_notarized_height",
            "Highest notarized height",
            m.notarized_height.clone(),
        );
        registry.register(
            "execution_height",
            "Highest executed height",
            m.executed_height.clone(),
        );
        registry.register(
            "dkg_epoch",
            "Summary height of the DKG epoch in force",
            m.dkg_epoch.clone(),
        );
        registry.register(
            "consensus_blocks_finalized",
            "Blocks finalized and delivered",
            m.blocks_finalized.clone(),
        );
        registry.register(
            "p2p_artifacts_received",
            "Artifacts received from peers, by kind",
            m.artifacts_received.clone(),
        );
        registry.register(
            "p2p_artifacts_invalid",
            "Invalid artifacts dropped, by kind",
            m.artifacts_invalid.clone(),
        );
        registry.register(
            "p2p_artifacts_dropped",
            "Artifacts dropped because the unvalidated pool was full",
            m.artifacts_dropped.clone(),
        );
        registry.register(
            "p2p_peers_connected",
            "Peers that answered the last push",
            m.peers_connected.clone(),
        );
        registry.register(
            "p2p_artifacts_rate_limited",
            "Artifacts dropped because the sending peer exceeded its rate",
            m.artifacts_rate_limited.clone(),
        );
        registry.register(
            "p2p_tls_refused",
            "Connections refused at the TLS handshake",
            m.tls_refused.clone(),
        );
        registry.register(
            "consensus_round_duration_seconds",
            "Time between successive finalized heights",
            m.round_duration.clone(),
        );
        registry.register(
            "ingress_accepted",
            "Ingress messages accepted over HTTP",
            m.ingress_accepted.clone(),
        );
        registry.register(
            "ingress_executed",
            "Ingress messages executed in finalized blocks",
            m.ingress_executed.clone(),
        );
        registry.register(
            "state_syncs",
            "State syncs completed (checkpoints installed from peers)",
            m.state_syncs.clone(),
        );
        registry.register(
            "state_sync_chunks",
            "State chunks fetched from peers",
            m.state_sync_chunks.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_conventions() {
        let m = Metrics::default();
        m.finalized_height.set(7);
        m.artifacts_invalid
            .get_or_create(&KindLabel {
                kind: "BlockProposal".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("thicket_consensus_finalized_height 7"),
            "{text}"
        );
        assert!(
            text.contains("thicket_p2p_artifacts_invalid_total{kind=\"BlockProposal\"} 1"),
            "{text}"
        );
    }
}
