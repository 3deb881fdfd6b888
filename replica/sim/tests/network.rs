//! Partitions that heal, crashes and restarts, membership changes, determinism, and the
//! detection of a stall when more than f replicas are faulty.

mod common;

use common::{config, run_ok};
use thicket_sim::config::{Behaviour, ChangeKind, Crash, MembershipChange, Partition};
use thicket_sim::run;

#[test]
fn finalization_resumes_after_partitions_heal() {
    for (n, seed) in [(4, 1u64), (4, 2), (7, 3), (13, 4)] {
        let mut cfg = config(n, 0, Behaviour::Honest, 40, seed);
        // Two halves: neither has n − f replicas, so nothing is finalized until the heal.
        cfg.partitions = vec![
            Partition {
                start_ms: 3_000,
                duration_ms: 6_000,
                groups: 2,
            },
            Partition {
                start_ms: 14_000,
                duration_ms: 4_000,
                groups: 3,
            },
        ];
        let r = run_ok(cfg);
        assert!(r.virtual_ms > 18_000, "{r:?}");
    }
}

#[test]
fn partition_with_a_byzantine_replica_heals() {
    let mut cfg = config(7, 2, Behaviour::Mixed, 30, 9);
    cfg.partitions = vec![Partition {
        start_ms: 2_000,
        duration_ms: 5_000,
        groups: 2,
    }];
    run_ok(cfg);
}

#[test]
fn lossy_network_still_finalizes() {
    let mut cfg = config(4, 1, Behaviour::Equivocate, 25, 11);
    cfg.drop_rate = 0.1;
    run_ok(cfg);
}

#[test]
fn crashed_replicas_catch_up_with_and_without_their_disk() {
    let mut cfg = config(4, 0, Behaviour::Honest, 60, 21);
    cfg.crashes = vec![
        Crash {
            node: 1,
            at_ms: 2_000,
            down_ms: 3_000,
            wipe: false,
        },
        // Down for several intervals and restarted empty: it must start from a CUP.
        Crash {
            node: 2,
            at_ms: 6_000,
            down_ms: 9_000,
            wipe: true,
        },
    ];
    let r = run_ok(cfg);
    assert!(
        r.state_syncs >= 1,
        "the wiped replica did not start from a CUP: {r:?}"
    );
}

#[test]
fn membership_4_5_7_4_keeps_the_subnet_key() {
    for seed in [31u64, 32] {
        let mut cfg = config(4, 0, Behaviour::Honest, 100, seed);
        let change = |kind, at_height| MembershipChange { kind, at_height };
        cfg.changes = vec![
            change(ChangeKind::Add, 10),
            change(ChangeKind::Add, 30),
            change(ChangeKind::Add, 30),
            change(ChangeKind::Remove, 50),
            change(ChangeKind::Remove, 50),
            change(ChangeKind::Remove, 50),
        ];
        let r = run_ok(cfg);
        assert_eq!(r.final_members, 4, "{r:?}");
        assert!(r.state_syncs >= 3, "joiners should start from a CUP: {r:?}");
        assert!(r.reshares >= 8, "{r:?}");
    }
}

#[test]
fn same_seed_same_chain() {
    let a = run_ok(config(7, 2, Behaviour::Mixed, 25, 77));
    let b = run_ok(config(7, 2, Behaviour::Mixed, 25, 77));
    assert_eq!(a.chain_hash, b.chain_hash);
    assert_eq!(a.min_finalized_height, b.min_finalized_height);
    assert_eq!(a.virtual_ms, b.virtual_ms);
    let c = run_ok(config(7, 2, Behaviour::Mixed, 25, 78));
    assert_ne!(a.chain_hash, c.chain_hash);
}

#[test]
fn more_than_f_faulty_is_reported_as_a_stall() {
    for behaviour in [Behaviour::Silent, Behaviour::InvalidSig] {
        let r = run(config(4, 2, behaviour, 20, 5)).expect("starts");
        assert!(r.liveness_failure, "{r:?}");
        assert_eq!(r.safety_violations, 0, "{r:?}");
    }
}

/// The fault campaign (`thicket-sim --campaign`), a few seeds of each size: every Byzantine
/// behaviour with a partition and a crash-restart, disk kept or wiped, all safe and live. The
/// long campaign (1,000 seeds per size) is in BENCHMARKS.md.
#[test]
fn fault_campaign_seeds_are_safe_and_live() {
    for (n, seeds) in [(4, 6), (7, 3)] {
        for seed in 0..seeds {
            let r = run_ok(thicket_sim::SimConfig::campaign(n, 20, seed));
            assert!(r.reshares >= 1, "n={n} seed {seed}: {r:?}");
        }
    }
}
