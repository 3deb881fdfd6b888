//! Safety and liveness with f Byzantine replicas of every behaviour, n ∈ {4, 7, 13}, over
//! 105 seeds in all: no two honest replicas finalize different blocks, every honest replica
//! reaches the target height, the subnet key survives every DKG interval.

mod common;

use common::{config, run_ok};
use thicket_sim::config::Behaviour;

const BEHAVIOURS: [Behaviour; 7] = [
    Behaviour::Honest,
    Behaviour::Silent,
    Behaviour::Equivocate,
    Behaviour::InvalidSig,
    Behaviour::BadDealing,
    Behaviour::MultiNotarize,
    Behaviour::Mixed,
];

/// Runs `seeds` seeds of every behaviour with f = ⌊(n−1)/3⌋ faulty replicas.
fn sweep(n: usize, seeds: u64, heights: u64) {
    let f = (n - 1) / 3;
    for (b, behaviour) in BEHAVIOURS.into_iter().enumerate() {
        for s in 0..seeds {
            let faulty = if behaviour == Behaviour::Honest { 0 } else { f };
            let seed = 1000 * n as u64 + 100 * b as u64 + s;
            let r = run_ok(config(n, faulty, behaviour, heights, seed));
            assert!(
                r.reshares >= 1,
                "seed {seed}: no DKG interval completed: {r:?}"
            );
            match behaviour {
                Behaviour::InvalidSig => {
                    assert!(r.invalid_artifacts > 0, "forgeries went unnoticed: {r:?}")
                }
                Behaviour::BadDealing => {
                    assert!(
                        r.invalid_artifacts > 0,
                        "malformed dealings went unnoticed: {r:?}"
                    );
                }
                _ => {}
            }
        }
    }
}

#[test]
fn four_replicas_one_byzantine() {
    sweep(4, 8, 20);
}

#[test]
fn seven_replicas_two_byzantine() {
    sweep(7, 4, 20);
}

#[test]
fn thirteen_replicas_four_byzantine() {
    sweep(13, 3, 20);
}

/// A cheating dealer's hidden bad share is caught by its receiver's complaint, the dealing is
/// excluded, and the reshared key is still the subnet key.
#[test]
fn bad_dealings_are_complained_about_and_excluded() {
    let mut complaints = 0;
    for seed in 0..3 {
        let r = run_ok(config(7, 2, Behaviour::BadDealing, 30, 70 + seed));
        assert!(r.reshares >= 2, "{r:?}");
        complaints += r.dkg_complaints;
    }
    assert!(complaints > 0, "no complaint was ever ordered");
}
