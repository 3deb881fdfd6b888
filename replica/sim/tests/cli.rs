//! The command-line entry point: last line is the JSON summary; exit status tells.

use std::process::Command;

fn sim(args: &[&str]) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_thicket-sim"))
        .args(args)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let json = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"));
    (out.status.success(), json)
}

#[test]
fn honest_run_succeeds_and_summarizes() {
    let (ok, j) = sim(&["--replicas", "4", "--heights", "12", "--seeds", "2"]);
    assert!(ok, "{j}");
    assert_eq!(j["runs"], 2);
    assert_eq!(j["safety_violations"], 0);
    assert_eq!(j["liveness_failures"], 0);
    assert!(j["min_finalized_height"].as_u64().unwrap() >= 12);
    assert_eq!(j["public_key_changes"], 0);
}

#[test]
fn too_many_faults_exit_non_zero() {
    let (ok, j) = sim(&[
        "--nodes",
        "4",
        "--faulty",
        "2",
        "--behaviour",
        "silent",
        "--heights",
        "10",
    ]);
    assert!(!ok);
    assert_eq!(j["liveness_failures"], 1);
}

#[test]
fn bad_arguments_are_rejected_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_thicket-sim"))
        .args(["--behaviour", "evil", "--faulty", "1"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown behaviour"));
    let out = Command::new(env!("CARGO_BIN_EXE_thicket-sim"))
        .args(["--partition", "oops"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad partition"));
}
