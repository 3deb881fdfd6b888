//! What a run found, and the summary over many seeds that the CLI prints as its last line.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub seed: u64,
    /// Heights at which two honest replicas delivered different blocks or saw different state
    /// roots certified.
    pub safety_violations: u64,
    /// Honest replicas breaking the finalizer's signing rule, or signing two state roots at one
    /// height (e.g. after forgetting a crash).
    pub double_signing: u64,
    /// The same by replicas that lost their store (and so what they signed): they count as
    /// faulty; reported, not a failure.
    pub amnesiac_double_signing: u64,
    pub liveness_failure: bool,
    pub min_finalized_height: u64,
    pub max_finalized_height: u64,
    /// Distinct subnet public keys seen in delivered summaries, minus one.
    pub public_key_changes: u64,
    pub subnet_public_key: String,
    /// Summaries whose next epoch came from a completed DKG (keys reshared).
    pub reshares: u64,
    pub final_members: usize,
    /// DKG complaints ordered (each excludes a cheating dealer's dealing).
    pub dkg_complaints: u64,
    /// Invalid artifacts honest replicas received and dropped.
    pub invalid_artifacts: u64,
    pub state_syncs: u64,
    /// The highest height whose state an honest replica saw certified.
    pub certified_height: u64,
    pub virtual_ms: u64,
    pub wall_ms: u64,
    /// Hash of the finalized chain up to `min_finalized_height`.
    pub chain_hash: String,
    /// On a liveness failure: each replica's view (to see where it stalled).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stall: Vec<String>,
}

impl RunReport {
    /// Finalized heights per virtual second.
    pub fn finalization_rate(&self) -> f64 {
        self.min_finalized_height as f64 * 1000.0 / self.virtual_ms.max(1) as f64
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub nodes: usize,
    pub faulty: usize,
    pub behaviour: crate::config::Behaviour,
    pub safety_violations: u64,
    pub double_signing: u64,
    pub amnesiac_double_signing: u64,
    pub liveness_failures: usize,
    pub min_finalized_height: u64,
    pub public_key_changes: u64,
    pub reshares_min: u64,
    pub final_members_min: usize,
    pub final_members_max: usize,
    pub dkg_complaints: u64,
    pub invalid_artifacts: u64,
    pub state_syncs: u64,
    /// Mean finalized heights per virtual second over the runs.
    pub finalization_rate: f64,
    pub wall_ms: u64,
}

impl Summary {
    pub fn of(cfg: &crate::config::SimConfig, runs: &[RunReport]) -> Self {
        Summary {
            runs: runs.len(),
            nodes: cfg.nodes,
            faulty: cfg.faulty,
            behaviour: cfg.behaviour,
            safety_violations: runs.iter().map(|r| r.safety_violations).sum(),
            double_signing: runs.iter().map(|r| r.double_signing).sum(),
            amnesiac_double_signing: runs.iter().map(|r| r.amnesiac_double_signing).sum(),
            liveness_failures: runs.iter().filter(|r| r.liveness_failure).count(),
            min_finalized_height: runs
                .iter()
                .map(|r| r.min_finalized_height)
                .min()
                .unwrap_or(0),
            public_key_changes: runs.iter().map(|r| r.public_key_changes).sum(),
            reshares_min: runs.iter().map(|r| r.reshares).min().unwrap_or(0),
            final_members_min: runs.iter().map(|r| r.final_members).min().unwrap_or(0),
            final_members_max: runs.iter().map(|r| r.final_members).max().unwrap_or(0),
            dkg_complaints: runs.iter().map(|r| r.dkg_complaints).sum(),
            invalid_artifacts: runs.iter().map(|r| r.invalid_artifacts).sum(),
            state_syncs: runs.iter().map(|r| r.state_syncs).sum(),
            finalization_rate: runs.iter().map(RunReport::finalization_rate).sum::<f64>()
                / runs.len().max(1) as f64,
            wall_ms: runs.iter().map(|r| r.wall_ms).sum(),
        }
    }

    pub fn ok(&self) -> bool {
        self.safety_violations == 0 && self.double_signing == 0 && self.liveness_failures == 0
    }
}
