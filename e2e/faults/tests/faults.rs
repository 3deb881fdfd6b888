//! The short fault runs `cargo test` makes (the long campaign is `thicket-faults campaign`,
//! see docs/reliability.md): a kill -9 run, a split into halves (no quorum until healed), and a
//! mixed run (partitions, loss, delay, pauses, skewed clocks, a full disk), each with 25 s of
//! faults against four replica processes in network namespaces. Every answered call must be in
//! every replica's state, nothing any replica signed may conflict, and every replica must answer
//! again after the heal.
//!
//! Needs root (namespaces, iptables, tmpfs). Elsewhere it skips with a loud message, except
//! under CI=true, where that fails it.

use std::time::Duration;

use thicket_faults::scenario::Scenario;
use thicket_faults::{RunConfig, summary};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

#[test]
fn short_fault_runs_lose_no_answered_call_and_sign_nothing_twice() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the fault runs need root (network namespaces, iptables, tmpfs mounts)"
        );
        eprintln!("SKIPPED: the fault runs need root (network namespaces, iptables, tmpfs)");
        return;
    }
    let work = std::env::temp_dir().join(format!("thicket-faults-test-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let wasm = work.join("Log.wasm");
    thicket_faults::compile_log(&wasm).unwrap();
    let thicket = thicket_faults::build_thicket("test").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut reports = Vec::new();
    for (scenario, seed) in [
        (Scenario::Kill, 1),
        (Scenario::Halves, 2),
        (Scenario::Mixed, 3),
    ] {
        let cfg = RunConfig {
            scenario,
            seed,
            replicas: 4,
            warmup: Duration::from_secs(8),
            faults: Duration::from_secs(25),
            clients: 8,
            thicket: thicket.clone(),
            wasm: wasm.clone(),
            work: work.clone(),
            byzantine: None,
        };
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
    let _ = std::fs::remove_dir_all(&work);
}
