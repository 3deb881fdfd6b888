//! Prometheus metrics of a replica (`prometheus-client`, `thicket_` prefix, base units, no
//! unbounded labels) and the status snapshot the admin API serves.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Artifact kind (a fixed set).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why an update call was refused (a fixed set: [`REFUSAL_REASONS`]).
    pub reason: &'static str,
}

/// Every value of [`ReasonLabel`], each exported from the start (at zero).
pub const REFUSAL_REASONS: [&str; 5] = [
    "malformed",
    "expired",
    "signature",
    "too_large",
    "pool_full",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The IC HTTP endpoint: call, call_sync, query, read_state, status.
    pub endpoint: &'static str,
    /// The answer's status class: 2xx, 4xx, 5xx.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageKind {
    /// update (replicated, from ingress) or query (on this replica only).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub kind: &'static str,
    /// The IC reject code's name (canister_error: the canister trapped).
    pub reject_code: &'static str,
}

/// The IC's reject codes by number.
pub fn reject_code_name(code: u8) -> &'static str {
    match code {
        1 => "sys_fatal",
        2 => "sys_transient",
        3 => "destination_invalid",
        4 => "canister_reject",
        5 => "canister_error",
        _ => "sys_unknown",
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub finalized_height: Gauge<i64, AtomicI64>,
    pub notarized_height: Gauge<i64, AtomicI64>,
    pub executed_height: Gauge<i64, AtomicI64>,
    /// Height of the newest state certified on this replica.
    pub certification_height: Gauge<i64, AtomicI64>,
    /// Height of the catch-up package the pool is rooted at.
    pub catch_up_height: Gauge<i64, AtomicI64>,
    pub dkg_epoch: Gauge<i64, AtomicI64>,
    pub dkg_interval_length: Gauge<i64, AtomicI64>,
    /// Summary blocks seen (each starts a key epoch).
    pub dkg_epochs: Counter,
    /// Summaries whose next epoch has another membership: the key was reshared to it.
    pub dkg_reshares: Counter,
    /// Summaries whose interval's DKG failed (the keys in force are kept).
    pub dkg_failures: Counter,
    /// Consecutive summaries whose DKG failed (0 after one that succeeded).
    pub dkg_failed_intervals: Gauge<i64, AtomicI64>,
    /// Consecutive summaries that left an ordered registry change waiting.
    pub dkg_pending_change_epochs: Gauge<i64, AtomicI64>,
    pub registry_version: Gauge<i64, AtomicI64>,
    /// The registry version with every ordered change (equal to the one in force when none waits).
    pub registry_pending_version: Gauge<i64, AtomicI64>,
    pub subnet_members: Gauge<i64, AtomicI64>,
    /// 1 when the replica finalizes and has a certified state (what `/readyz` checks).
    pub ready: Gauge<i64, AtomicI64>,
    pub blocks_finalized: Counter<u64, AtomicU64>,
    pub artifacts_received: Family<KindLabel, Counter>,
    pub artifacts_invalid: Family<KindLabel, Counter>,
    /// Arrivals dropped because the unvalidated section was full.
    pub artifacts_dropped: Counter,
    pub peers_connected: Gauge<i64, AtomicI64>,
    /// Artifacts dropped because a peer exceeded its rate.
    pub artifacts_rate_limited: Counter,
    /// Connections refused at the TLS handshake (not a member, bad certificate, timeout).
    pub tls_refused: Counter,
    /// Time between successive finalized heights.
    pub block_time: Histogram,
    /// From the start of a round (the previous height notarized) to its height's notarization.
    pub round_duration: Histogram,
    /// From the start of a round to the finalization of its height.
    pub finalization_latency: Histogram,
    /// Rank of each finalized block's maker (0: the first-ranked one).
    pub block_rank: Histogram,
    pub ingress_accepted: Counter,
    pub ingress_refused: Family<ReasonLabel, Counter>,
    /// HTTP connections closed as they came, by the limit they met (`total`, `per_source`).
    pub http_connections_refused: Family<ReasonLabel, Counter>,
    /// Queries refused because too many were waiting for a turn to run.
    pub queries_refused_busy: Counter,
    /// Ingress messages executed (replied or rejected) by this replica.
    pub ingress_executed: Counter,
    pub http_duration: Family<EndpointLabels, Histogram>,
    pub execution_messages: Family<MessageKind, Counter>,
    /// Wasm instructions of replicated execution.
    pub execution_instructions: Counter,
    pub execution_rejects: Family<RejectLabels, Counter>,
    pub canisters: Gauge<i64, AtomicI64>,
    pub canister_memory: Gauge<i64, AtomicI64>,
    pub canister_stable_memory: Gauge<i64, AtomicI64>,
    pub state_syncs: Counter,
    pub state_sync_chunks: Counter,
    pub state_sync_in_progress: Gauge<i64, AtomicI64>,
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

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        let round_buckets = [
            0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
        ];
        let m = Metrics {
            finalized_height: Gauge::default(),
            notarized_height: Gauge::default(),
            executed_height: Gauge::default(),
            certification_height: Gauge::default(),
            catch_up_height: Gauge::default(),
            dkg_epoch: Gauge::default(),
            dkg_interval_length: Gauge::default(),
            dkg_epochs: Counter::default(),
            dkg_reshares: Counter::default(),
            dkg_failures: Counter::default(),
            dkg_failed_intervals: Gauge::default(),
            dkg_pending_change_epochs: Gauge::default(),
            registry_version: Gauge::default(),
            registry_pending_version: Gauge::default(),
            subnet_members: Gauge::default(),
            ready: Gauge::default(),
            blocks_finalized: Counter::default(),
            artifacts_received: Family::default(),
            artifacts_invalid: Family::default(),
            artifacts_dropped: Counter::default(),
            peers_connected: Gauge::default(),
            artifacts_rate_limited: Counter::default(),
            tls_refused: Counter::default(),
            block_time: Histogram::new(round_buckets),
            round_duration: Histogram::new(round_buckets),
            finalization_latency: Histogram::new(round_buckets),
            block_rank: Histogram::new([0.0, 1.0, 2.0, 3.0, 5.0, 10.0]),
            ingress_accepted: Counter::default(),
            ingress_refused: Family::default(),
            http_connections_refused: Family::default(),
            queries_refused_busy: Counter::default(),
            ingress_executed: Counter::default(),
            http_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            execution_messages: Family::default(),
            execution_instructions: Counter::default(),
            execution_rejects: Family::default(),
            canisters: Gauge::default(),
            canister_memory: Gauge::default(),
            canister_stable_memory: Gauge::default(),
            state_syncs: Counter::default(),
            state_sync_chunks: Counter::default(),
            state_sync_in_progress: Gauge::default(),
            status: Mutex::new(Status::default()),
            registry: Registry::default(),
        };
        // Label sets known in advance exist from the start, so rates and alerts see a zero
        // rather than no series.
        let kinds = thicket_types::artifacts::ArtifactKind::ALL.map(|k| format!("{k:?}"));
        for kind in kinds.iter().map(String::as_str).chain(["Undecodable"]) {
            let kind = KindLabel { kind: kind.into() };
            let _ = m.artifacts_received.get_or_create(&kind);
            let _ = m.artifacts_invalid.get_or_create(&kind);
        }
        for reason in REFUSAL_REASONS {
            let _ = m.ingress_refused.get_or_create(&ReasonLabel { reason });
        }
        for reason in ["total", "per_source"] {
            let _ = m
                .http_connections_refused
                .get_or_create(&ReasonLabel { reason });
        }
        for kind in ["update", "query"] {
            let _ = m.execution_messages.get_or_create(&MessageKind { kind });
            for code in 1..=6 {
                let _ = m.execution_rejects.get_or_create(&RejectLabels {
                    kind,
                    reject_code: reject_code_name(code),
                });
            }
        }
        let mut r = Registry::with_prefix("thicket");
        r.register(
            "consensus_finalized_height",
            "Highest finalized height",
            m.finalized_height.clone(),
        );
        r.register(
            "consensus_notarized_height",
            "Highest notarized height",
            m.notarized_height.clone(),
        );
        r.register(
            "execution_height",
            "Highest executed height",
            m.executed_height.clone(),
        );
        r.register(
            "certification_height",
            "Height of the newest certified state",
            m.certification_height.clone(),
        );
        r.register(
            "consensus_catch_up_height",
            "Height of the catch-up package the replica runs from",
            m.catch_up_height.clone(),
        );
        r.register(
            "dkg_epoch",
            "Summary height of the DKG epoch in force",
            m.dkg_epoch.clone(),
        );
        r.register(
            "dkg_interval_length",
            "Heights per DKG interval",
            m.dkg_interval_length.clone(),
        );
        r.register(
            "dkg_epochs",
            "Summary blocks finalized (each starts a key epoch)",
            m.dkg_epochs.clone(),
        );
        r.register(
            "dkg_reshares",
            "Summaries that reshared the subnet key to a new membership",
            m.dkg_reshares.clone(),
        );
        r.register(
            "dkg_failures",
            "Summaries whose interval's DKG failed (keys in force kept)",
            m.dkg_failures.clone(),
        );
        r.register(
            "dkg_failed_intervals",
            "Consecutive DKG intervals that failed",
            m.dkg_failed_intervals.clone(),
        );
        r.register(
            "dkg_pending_change_epochs",
            "Consecutive summaries that left an ordered registry change waiting",
            m.dkg_pending_change_epochs.clone(),
        );
        r.register(
            "registry_version",
            "Registry version in force",
            m.registry_version.clone(),
        );
        r.register(
            "registry_pending_version",
            "Registry version with every ordered change",
            m.registry_pending_version.clone(),
        );
        r.register(
            "subnet_members",
            "Nodes in the registry version in force",
            m.subnet_members.clone(),
        );
        r.register(
            "replica_ready",
            "1 when the replica finalizes and has a certified state",
            m.ready.clone(),
        );
        r.register(
            "consensus_blocks_finalized",
            "Blocks finalized and delivered",
            m.blocks_finalized.clone(),
        );
        r.register(
            "p2p_artifacts_received",
            "Artifacts received from peers, by kind",
            m.artifacts_received.clone(),
        );
        r.register(
            "p2p_artifacts_invalid",
            "Invalid artifacts dropped, by kind",
            m.artifacts_invalid.clone(),
        );
        r.register(
            "p2p_artifacts_dropped",
            "Artifacts dropped because the unvalidated pool was full",
            m.artifacts_dropped.clone(),
        );
        r.register(
            "p2p_peers_connected",
            "Peers that answered the last push",
            m.peers_connected.clone(),
        );
        r.register(
            "p2p_artifacts_rate_limited",
            "Artifacts dropped because the sending peer exceeded its rate",
            m.artifacts_rate_limited.clone(),
        );
        r.register(
            "p2p_tls_refused",
            "Connections refused at the TLS handshake",
            m.tls_refused.clone(),
        );
        r.register(
            "consensus_block_time_seconds",
            "Time between successive finalized heights",
            m.block_time.clone(),
        );
        r.register(
            "consensus_round_duration_seconds",
            "From the start of a round to the notarization of its height",
            m.round_duration.clone(),
        );
        r.register(
            "consensus_finalization_latency_seconds",
            "From the start of a round to the finalization of its height",
            m.finalization_latency.clone(),
        );
        r.register(
            "consensus_finalized_block_rank",
            "Rank of the maker of each finalized block",
            m.block_rank.clone(),
        );
        r.register(
            "ingress_accepted",
            "Ingress messages accepted over HTTP",
            m.ingress_accepted.clone(),
        );
        r.register(
            "ingress_refused",
            "Ingress messages refused over HTTP, by reason",
            m.ingress_refused.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed as they came, by the limit they met",
            m.http_connections_refused.clone(),
        );
        r.register(
            "queries_refused_busy",
            "Queries refused because too many were waiting for a turn to run",
            m.queries_refused_busy.clone(),
        );
        r.register(
            "ingress_executed",
            "Ingress messages executed in finalized blocks",
            m.ingress_executed.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "IC HTTP requests, by endpoint and status class",
            m.http_duration.clone(),
        );
        r.register(
            "execution_messages",
            "Messages executed: update (replicated) and query (here)",
            m.execution_messages.clone(),
        );
        r.register(
            "execution_instructions",
            "Wasm instructions of replicated execution",
            m.execution_instructions.clone(),
        );
        r.register(
            "execution_rejects",
            "Messages rejected, by kind and reject code",
            m.execution_rejects.clone(),
        );
        r.register("canisters", "Canisters on the subnet", m.canisters.clone());
        r.register(
            "canister_memory_bytes",
            "Wasm heap memory of all canisters",
            m.canister_memory.clone(),
        );
        r.register(
            "canister_stable_memory_bytes",
            "Stable memory of all canisters",
            m.canister_stable_memory.clone(),
        );
        r.register(
            "state_syncs",
            "State syncs completed (checkpoints installed from peers)",
            m.state_syncs.clone(),
        );
        r.register(
            "state_sync_chunks",
            "State chunks fetched from peers",
            m.state_sync_chunks.clone(),
        );
        r.register(
            "state_sync_in_progress",
            "1 while a state sync from peers is under way",
            m.state_sync_in_progress.clone(),
        );
        Metrics { registry: r, ..m }
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
