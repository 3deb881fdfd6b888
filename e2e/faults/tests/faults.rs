//! The short fault runs `cargo test` makes (the long campaign is `thicket-faults campaign`,
//! see docs/reliability.md): a kill -9 run, a split into halves (no quorum until healed), and a
//! mixed run (partitions, loss, delay, pauses, skewed clocks, a full disk), each with 25 s of
//! faults against four replica processes in network namespaces. Every answered call must be in
//! every replica's state, nothing any replica signed may conflict, and every replica must answer
//! again after the heal.
//!
//! Needs root (namespaces, iptables, tmpfs). Elsewhere it skips with a loud message, except
//! under CI=true, where that fails it.

use thicket_faults::scenario::Scenario;
use thicket_faults::{TestBed, summary};

#[test]
fn short_fault_runs_lose_no_answered_call_and_sign_nothing_twice() {
    let Some(bed) = TestBed::prepare("the fault runs").unwrap() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut reports = Vec::new();
    for (scenario, seed) in [
        (Scenario::Kill, 1),
        (Scenario::Halves, 2),
        (Scenario::Mixed, 3),
    ] {
        let cfg = bed.config(scenario, seed, 8, 25);
        let report = rt.block_on(thicket_faults::run(&cfg)).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        assert!(report.answered > 0, "no call was answered: {report:?}");
        assert!(report.audit_records > 0, "no audit record was read");
        reports.push(report);
    }
    eprint!("{}", summary(&reports));
    for r in &reports {
        assert_eq!(
            r.lost, 0,
            "{}: answered calls lost: {:?}",
            r.scenario, r.violations
        );
        assert!(
            r.violations.is_empty(),
            "{}: safety violations: {:?}",
            r.scenario,
            r.violations
        );
        assert!(
            r.recovery_secs.is_some(),
            "{}: a replica did not answer again within 4 minutes of the heal",
            r.scenario
        );
    }
    bed.finish();
}
