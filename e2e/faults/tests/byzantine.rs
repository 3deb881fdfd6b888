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

use std::time::Duration;

use thicket_faults::scenario::Scenario;
use thicket_faults::{Attacker, RunConfig, summary};
use thicket_sim::config::Behaviour;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

/// The DKG interval of the harness's subnets (`--dkg-interval`).
const DKG_INTERVAL: u64 = 30;

#[test]
fn a_byzantine_member_on_the_wire_cannot_break_safety_or_liveness() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Byzantine runs need root (network namespaces, iptables, tmpfs mounts)"
        );
        eprintln!("SKIPPED: the Byzantine runs need root (network namespaces, iptables, tmpfs)");
        return;
    }
    let work = std::env::temp_dir().join(format!("thicket-byzantine-test-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let wasm = work.join("Log.wasm");
    thicket_faults::compile_log(&wasm).unwrap();
    let thicket = thicket_faults::build_thicket("test").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut reports = Vec::new();
    for (behaviour, seed) in [
        (Behaviour::Equivocate, 11),
        (Behaviour::InvalidSig, 12),
        (Behaviour::Withhold, 13),
        (Behaviour::Flood, 14),
    ] {
        let cfg = RunConfig {
            scenario: Scenario::None,
            seed,
            replicas: 4,
            warmup: Duration::from_secs(5),
            faults: Duration::from_secs(25),
            clients: 8,
            thicket: thicket.clone(),
            wasm: wasm.clone(),
            work: work.clone(),
            byzantine: Some(Attacker {
                behaviour,
                program: env!("CARGO_BIN_EXE_thicket-faults").into(),
            }),
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
    let _ = std::fs::remove_dir_all(&work);
}
