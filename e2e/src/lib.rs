//! Helpers for the end-to-end tests: driving `e2e/cluster` and the cluster's kubectl.
//!
//! The tests need root and a writable cgroup hierarchy (a privileged container is enough),
//! since they run containerd and a kubelet. Elsewhere they skip with a loud message, except
//! under `CI=true`, where a missing privilege fails them.
//!
//! # Layout
//! - this crate (`src/lib.rs`): the helpers (run `e2e/cluster`, kubectl, wait for conditions);
//! - `cluster` (a shell script): builds Kubernetes, etcd, CoreDNS, helm, local-path and
//!   Prometheus from `tools/`, starts the single-node cluster, builds images without a
//!   registry; `canisters/`: the sample Motoko canisters; `prometheus/`: the alerts' tests;
//! - `tests/kubernetes.rs`: one test sharing one cluster, its scenarios in
//!   `tests/kubernetes/` (smoke, operator, monitoring, load); `tests/monitoring_files.rs`:
//!   promtool and the dashboards' schema, without a cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `e2e/` directory.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

fn output(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let what = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing to `{what}`: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"))
}

/// Runs a command to success and returns its standard output; panics with its output
/// otherwise.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> String {
    let what = describe(cmd);
    let out = output(cmd, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{what}` failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Like [`run`], with standard error passed through as it comes: the progress of long steps
/// (a cold build of Kubernetes takes minutes), shown even if CI's time limit cuts the run.
pub fn run_streaming(cmd: &mut Command) -> String {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running `{what}`: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{what}` failed ({}), see its messages above:\n{stdout}",
        out.status
    );
    stdout
}

/// Takes from `cmd` the variables cargo sets for the test that runs it (the package's
/// `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, `OUT_DIR`...), keeping the user's cargo configuration:
/// a cargo run inside a test then builds exactly what the user's own would. With them, ring's
/// build script (which tracks `CARGO_MANIFEST_DIR`) would run again, and the half of the
/// dependencies above it be compiled again: 9 minutes of a CI run.
pub fn without_test_env(cmd: &mut Command) -> &mut Command {
    let config = [
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_INCREMENTAL",
        "CARGO_TERM_",
        "CARGO_BUILD_",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_PROFILE_",
    ];
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k == "CARGO"
            || k == "OUT_DIR"
            || (k.starts_with("CARGO_") && !config.iter().any(|c| k.starts_with(c)))
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// `e2e/cluster`, which builds the images' binaries with cargo: see [`without_test_env`].
fn cluster_cmd() -> Command {
    let mut cmd = Command::new(e2e_dir().join("cluster"));
    without_test_env(&mut cmd);
    cmd
}

/// `e2e/cluster ARGS`.
pub fn cluster(args: &[&str]) -> String {
    run_streaming(cluster_cmd().args(args))
}

/// The repository's root.
pub fn repo_dir() -> PathBuf {
    e2e_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(e2e_dir)
}

/// `kubectl ARGS` with `stdin`, for commands expected to fail: (success, stdout + stderr).
pub fn kubectl_try(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let out = output(cluster_cmd().arg("kubectl").args(args), stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls `check` every second until it returns `Some`, or panics after `secs` with `what`
/// and what `diagnose` says about the state of things.
pub fn wait_for<T>(
    what: &str,
    secs: u64,
    mut check: impl FnMut() -> Option<T>,
    diagnose: impl Fn() -> String,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            eprintln!("   {what}: after {:.0} s", start.elapsed().as_secs_f64());
            return v;
        }
        if start.elapsed().as_secs() > secs {
            panic!(
                "timed out after {secs} s waiting for {what}\n{}",
                diagnose()
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Whether `e2e/cluster status` finds a running cluster.
pub fn cluster_running() -> bool {
    output(cluster_cmd().arg("status"), None).status.success()
}

/// The cluster's kubectl, against it.
pub fn kubectl(args: &[&str]) -> String {
    cluster(&[&["kubectl"], args].concat())
}

/// `kubectl apply -f -` of a manifest.
pub fn apply(manifest: &str) -> String {
    run(
        cluster_cmd().args(["kubectl", "apply", "-f", "-"]),
        Some(manifest),
    )
}

/// `None` when this machine can run the cluster; otherwise why not.
pub fn missing_privileges() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!("not root (uid {uid})"));
    }
    let writable = Command::new("test")
        .args(["-w", "/sys/fs/cgroup/memory"])
        .status()
        .is_ok_and(|s| s.success());
    if !writable {
        return Some("no writable cgroup v1 hierarchy at /sys/fs/cgroup/memory".into());
    }
    None
}

/// Skips (loudly) where the machine cannot run the cluster, except on CI, which must.
pub fn require_privileges(test: &str) -> bool {
    match missing_privileges() {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: CI must run the Kubernetes tests, but this machine cannot: {why}")
        }
        Some(why) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: {why}; the Kubernetes tier needs root in a \
                 privileged container (see e2e/README.md) !!!!!!!!\n"
            );
            false
        }
    }
}

/// A cluster for one test: the one already running (left running), or one brought up for
/// the test and taken down when it ends, even when it fails.
pub struct Cluster {
    owned: bool,
}

impl Cluster {
    pub fn up() -> Self {
        if cluster_running() {
            eprintln!("using the running cluster (e2e/cluster status)");
            return Cluster { owned: false };
        }
        // Owned before `up` runs, so that a failed `up` is cleaned up too.
        let this = Cluster { owned: true };
        let out = cluster(&["up"]);
        assert!(
            out.contains("export KUBECONFIG="),
            "e2e/cluster up printed no kubeconfig: {out}"
        );
        this
    }

    /// Takes the cluster down now (if this test brought it up) and checks that nothing
    /// is left behind.
    pub fn down(mut self) {
        if self.owned {
            self.owned = false;
            cluster(&["down"]);
            assert_nothing_left();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            let status = cluster_cmd().arg("down").status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("e2e/cluster down failed: run it by hand");
            }
        }
    }
}

/// No process, mount or network namespace of the cluster is left.
pub fn assert_nothing_left() {
    let ps = run(Command::new("ps").args(["-eo", "pid,args"]), None);
    let left: Vec<&str> = ps
        .lines()
        .filter(|l| {
            // The cluster's binaries (cached under .cache/thicket/e2e/), whatever reads its
            // configuration (e2e/.cluster/), and containerd's shims (/run/thicket-e2e/).
            [".cache/thicket/e2e/", "e2e/.cluster/", "/run/thicket-e2e/"]
                .iter()
                .any(|name| l.contains(name))
        })
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains("thicket-e2e") || l.contains("/netns/cni-"))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    let netns = run(Command::new("ip").args(["netns", "list"]), None);
    assert!(
        !netns.lines().any(|l| l.starts_with("cni-")),
        "network namespaces left behind: {netns}"
    );
    let links = run(Command::new("ip").args(["-br", "link"]), None);
    assert!(
        !links.contains("thicket"),
        "network links left behind: {links}"
    );
    let rules = run(&mut Command::new("iptables-save"), None);
    let left: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("thicket-e2e"))
        .collect();
    assert!(left.is_empty(), "iptables rules left behind: {left:?}");
    let cgroups = run(
        Command::new("find").args(["/sys/fs/cgroup", "-maxdepth", "2", "-name", "thicket-e2e"]),
        None,
    );
    assert!(cgroups.trim().is_empty(), "cgroups left behind: {cgroups}");
}
