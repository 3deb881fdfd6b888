//! The `thicket-operator` binary as a user first meets it: its flags are documented, a bad
//! flag is refused before anything starts, and outside a cluster (no in-cluster service
//! account, no kubeconfig) it says it cannot reach the Kubernetes API and exits, rather than
//! wait. The controllers themselves are tested against a real cluster (`e2e/tests`), with the
//! image built from this very binary.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn operator() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_thicket-operator"));
    // A home that does not exist: no kubeconfig to find there either.
    let home = std::env::temp_dir().join(format!("thicket-operator-{}-none", std::process::id()));
    c.env("HOME", &home)
        .env("KUBECONFIG", home.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `cmd` to its end, killing it (and failing) after 30 s.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd.spawn().expect("starting thicket-operator");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child
        .try_wait()
        .expect("waiting for thicket-operator")
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("thicket-operator did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("reading its output")
}

#[test]
fn the_flags_are_documented_and_a_bad_one_is_refused() {
    let mut help = operator();
    help.arg("--help");
    let out = run(help);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--replica-image",
        "--http-listen",
        "--no-leader-election",
        "--lease-namespace",
        "--lease-name",
        "--identity",
        "--otlp-endpoint",
    ] {
        assert!(
            text.contains(flag),
            "--help does not mention {flag}:\n{text}"
        );
    }

    let mut bad = operator();
    bad.args(["--http-listen", "not-an-address"]);
    let out = run(bad);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--http-listen") && err.contains("not-an-address"),
        "{err}"
    );
}

#[test]
fn outside_a_cluster_it_says_it_cannot_reach_the_api_and_exits() {
    let mut cmd = operator();
    cmd.args(["--no-leader-election", "--http-listen", "127.0.0.1:0"]);
    let out = run(cmd);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to the Kubernetes API"), "{err}");
    assert!(err.contains("no-such-kubeconfig"), "{err}");
}
