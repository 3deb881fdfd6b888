//! Helpers shared by the simulator's scenario tests.

use thicket_sim::config::Behaviour;
use thicket_sim::{RunReport, SimConfig, run};

pub fn config(
    nodes: usize,
    faulty: usize,
    behaviour: Behaviour,
    heights: u64,
    seed: u64,
) -> SimConfig {
    let mut c = SimConfig::new(nodes, heights, seed);
    c.faulty = faulty;
    c.behaviour = behaviour;
    c
}

pub fn run_ok(cfg: SimConfig) -> RunReport {
    let what = format!(
        "n={} f={} {:?} seed={}",
        cfg.nodes, cfg.faulty, cfg.behaviour, cfg.seed
    );
    let heights = cfg.heights;
    let r = run(cfg).expect("simulation starts");
    assert_eq!(r.safety_violations, 0, "{what}: safety violated: {r:?}");
    assert_eq!(
        r.double_signing, 0,
        "{what}: an honest replica double-signed: {r:?}"
    );
    assert!(!r.liveness_failure, "{what}: liveness failure: {r:?}");
    assert!(
        r.min_finalized_height >= heights,
        "{what}: stopped short: {r:?}"
    );
    assert_eq!(r.public_key_changes, 0, "{what}: subnet key changed: {r:?}");
    // The state near the tip is certified with the subnet key, as in the daemon.
    assert!(
        r.certified_height + 2 * thicket_core::CERTIFY_WITHIN >= r.min_finalized_height,
        "{what}: state certification fell behind: {r:?}"
    );
    r
}
