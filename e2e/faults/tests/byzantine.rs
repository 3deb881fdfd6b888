//! A Byzantine member on the real transport: four replica processes in network namespaces, the
//! last of them `thicket-faults replica --behaviour B` (the daemon's own process with the
//! simulator's Byzantine conduct, its real keys, gRPC with mutual TLS), for each behaviour the
//! issue names: equivocating block maker, invalid signatures, withheld dealings, a flood. The
//! three honest replicas must lose no answered call, sign and finalize nothing that conflicts,
//! keep answering, reshare the subnet key (every answer is certified by it), and keep
//! their memory; and the attack must really have happened (the attacker's log counts what it
//! changed, the honest replicas count the invalid artifacts they dropped).
//!
//! Needs root, as `tests/faults.rs` (which runs in another test binary: never at the same
//! time).

use thicket_faults::scenario::Scenario;
use thicket_faults::{Attacker, DKG_INTERVAL, RunConfig, TestBed, summary};
use thicket_sim::config::Behaviour;

#[test]
fn a_byzantine_member_on_the_wire_cannot_break_safety_or_liveness() {
    let Some(bed) = TestBed::prepare("the Byzantine runs").unwrap() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut reports = Vec::new();
    for (behaviour, seed) in [
        (Behaviour::Equivocate, 11),
        (Behaviour::InvalidSig, 12),
        (Behaviour::Withhold, 13),
        (Behaviour::Flood, 14),
    ] {
        let cfg = RunConfig {
            byzantine: Some(Attacker {
                behaviour,
                program: env!("CARGO_BIN_EXE_thicket-faults").into(),
            }),
            ..bed.config(Scenario::None, seed, 5, 25)
        };
        let r = rt.block_on(thicket_faults::run(&cfg)).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
        let name = &r.scenario;
        assert!(r.answered > 0, "{name}: no call was answered: {r:?}");
        assert!(r.audit_records > 0, "{name}: no audit record was read");
        assert!(
            r.byzantine_acts > 0,
            "{name}: the attacker never acted: {r:?}"
        );
        assert_eq!(r.lost, 0, "{name}: answered calls lost: {:?}", r.violations);
        assert!(r.violations.is_empty(), "{name}: {:?}", r.violations);
        assert!(
            r.recovery_secs.is_some(),
            "{name}: an honest replica stopped answering"
        );
        assert!(
            r.finalized_height > DKG_INTERVAL + DKG_INTERVAL / 2,
            "{name}: the subnet did not get through a DKG interval: {r:?}"
        );
        assert!(
            r.peak_rss_mib < 1024,
            "{name}: an honest replica grew to {} MiB",
            r.peak_rss_mib
        );
        if matches!(behaviour, Behaviour::InvalidSig | Behaviour::Flood) {
            assert!(
                r.invalid_artifacts > 0,
                "{name}: the honest replicas dropped no invalid artifact: {r:?}"
            );
        }
        reports.push(r);
    }
    eprint!("{}", summary(&reports));
    bed.finish();
}
