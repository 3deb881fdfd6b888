//! `thicket up` end to end: genesis DKG among replica processes, a subnet that finalizes, a
//! replica killed with SIGKILL while the others go on, `thicket status`, and a clean stop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn finalized_height(metrics_url: &str) -> Option<u64> {
    metric(metrics_url, "thicket_consensus_finalized_height")
}

/// One unlabelled sample of a replica's /metrics.
fn metric(metrics_url: &str, name: &str) -> Option<u64> {
    let addr = metrics_url
        .trim_start_matches("http://")
        .split('/')
        .next()?;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

fn subnet(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("subnet.json")).ok()?).ok()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

struct Up(Child);
impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// A running `thicket up` (stopped when dropped) and what its subnet.json says.
struct LocalSubnet {
    dir: tempfile::TempDir,
    up: Up,
    info: serde_json::Value,
    replicas: Vec<serde_json::Value>,
    metrics: Vec<String>,
}

/// Starts `thicket up` with 4 replicas on ports from `port_range` up and waits until every
/// replica finalized height 5.
fn up_and_finalizing(port_range: u16, extra: &[&str]) -> LocalSubnet {
    let dir = tempfile::tempdir().expect("tempdir");
    // Below the ephemeral range (32768 and up), where outgoing connections take their ports.
    let base_port = port_range + (std::process::id() % 3000) as u16;
    let up = Up(Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args(["up", "--replicas", "4", "--data-dir"])
        .arg(dir.path())
        .args(["--base-port", &base_port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("thicket up starts"));
    wait_until("subnet.json", Duration::from_secs(60), || {
        subnet(dir.path()).is_some()
    });
    let info = subnet(dir.path()).expect("subnet.json");
    let replicas = info["replicas"].as_array().expect("replicas").clone();
    let metrics: Vec<String> = replicas
        .iter()
        .map(|r| r["metrics_url"].as_str().expect("url").to_string())
        .collect();
    wait_until("every replica finalizing", Duration::from_secs(60), || {
        metrics
            .iter()
            .all(|m| finalized_height(m).is_some_and(|h| h >= 5))
    });
    LocalSubnet {
        dir,
        up,
        info,
        replicas,
        metrics,
    }
}

#[test]
fn local_subnet_finalizes_survives_a_sigkill_and_stops_cleanly() {
    let LocalSubnet {
        dir,
        up,
        info,
        replicas,
        metrics,
    } = up_and_finalizing(10000, &[]);
    assert_eq!(
        info["public_key"].as_str().map(str::len),
        Some(266),
        "hex of a 133-byte DER key"
    );
    // The subnet id as IC tools name subnets: the principal of its key; the registry's apart.
    let key = hex::decode(info["public_key"].as_str().expect("key")).expect("hex");
    assert_eq!(
        info["subnet_id"].as_str(),
        Some(
            candid::Principal::self_authenticating(&key)
                .to_text()
                .as_str()
        )
    );
    assert_eq!(info["registry_id"].as_str().map(str::len), Some(64));
    assert_eq!(replicas.len(), 4);
    // The admin key (it signs membership changes) and every replica's keys are the user's
    // only.
    assert_eq!(mode(&dir.path().join("admin.key")), 0o600);
    for r in &replicas {
        let data = Path::new(r["data_dir"].as_str().expect("data_dir"));
        assert_eq!((mode(data), mode(&data.join("node.key"))), (0o700, 0o600));
    }

    // SIGKILL one replica: the three others keep finalizing.
    let victim = replicas[3]["pid"].as_u64().expect("pid");
    Command::new("kill")
        .arg("-KILL")
        .arg(victim.to_string())
        .status()
        .expect("kill");
    let before = finalized_height(&metrics[0]).expect("height");
    wait_until(
        "finalization without the killed replica",
        Duration::from_secs(30),
        || {
            metrics[..3]
                .iter()
                .all(|m| finalized_height(m).is_some_and(|h| h >= before + 10))
        },
    );

    let status = Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args(["status", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("finalized"),
        "{text}"
    );
    assert!(
        text.contains("unreachable"),
        "the killed replica shows as unreachable: {text}"
    );

    // A clean stop takes every replica down.
    drop(up);
    let pids: Vec<u64> = replicas.iter().filter_map(|r| r["pid"].as_u64()).collect();
    wait_until("replicas to exit", Duration::from_secs(15), || {
        pids.iter().all(|p| !alive(*p))
    });
}

fn cmdline(pid: u64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// With 2 of 4 replicas killed nothing more is finalized (n − f = 3 are needed); restarted
/// from their data directories, they catch up and the subnet finalizes again.
#[test]
fn two_of_four_killed_stall_the_subnet_until_they_restart() {
    let LocalSubnet {
        dir: _dir,
        up: _up,
        replicas,
        metrics,
        ..
    } = up_and_finalizing(14000, &[]);

    let mut restart = Vec::new();
    for r in &replicas[2..] {
        let pid = r["pid"].as_u64().expect("pid");
        restart.push(cmdline(pid));
        Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .expect("kill");
    }
    std::thread::sleep(Duration::from_secs(2));
    let stalled: Vec<u64> = metrics[..2]
        .iter()
        .map(|m| finalized_height(m).expect("height"))
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let still: Vec<u64> = metrics[..2]
        .iter()
        .map(|m| finalized_height(m).expect("height"))
        .collect();
    // One survivor may still catch up to the other; nothing new is finalized.
    assert_eq!(
        stalled.iter().max(),
        still.iter().max(),
        "finalized with only 2 of 4 replicas"
    );

    let mut children = Vec::new();
    for args in restart {
        let (exe, rest) = args.split_first().expect("a command line");
        children.push(
            Command::new(exe)
                .args(rest)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("restarts"),
        );
    }
    let target = still.iter().max().copied().unwrap_or(0) + 5;
    wait_until(
        "progress after the restart",
        Duration::from_secs(60),
        || {
            metrics
                .iter()
                .all(|m| finalized_height(m).is_some_and(|h| h >= target))
        },
    );
    for mut c in children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
}

/// Bad input gets an error that names the problem.
#[test]
fn bad_configuration_and_corrupted_data_are_reported_clearly() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_thicket"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    std::fs::write(dir.path().join("genesis.bin"), b"garbage").expect("write");
    let err = run(&["up", "--data-dir", d]);
    assert!(err.contains("genesis.bin is not a valid genesis"), "{err}");
    let err = run(&[
        "up",
        "--data-dir",
        &format!("{d}/fresh"),
        "--base-port",
        "65530",
    ]);
    assert!(err.contains("leaves no room"), "{err}");
    let err = run(&["status", "--data-dir", d]);
    assert!(err.contains("subnet.json"), "{err}");
    let err = run(&[
        "replica",
        "run",
        "--data-dir",
        d,
        "--genesis",
        &format!("{d}/genesis.bin"),
        "--listen",
        "127.0.0.1:1",
        "--http-listen",
        "127.0.0.1:2",
    ]);
    assert!(err.contains("node.key"), "{err}");
    let err = run(&["replica", "keygen", "--data-dir", d, "--node-id", "x"]);
    assert!(err.contains("invalid value"), "{err}");
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).expect("exists").permissions())
        & 0o777
}

#[test]
fn keys_are_for_their_user_only_and_a_replica_refuses_keys_others_may_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = dir.path().join("data").join("replica-1");
    let out = Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args([
            "replica",
            "keygen",
            "--node-id",
            "1",
            "--p2p-url",
            "http://127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&replica)
        .output()
        .expect("keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Created with their modes (no moment where others could open them).
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&replica), 0o700);
    assert_eq!(mode(&replica.join("node.key")), 0o600);
    assert_eq!(mode(&replica.join("node.record")), 0o600);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_thicket"))
            .args([
                "replica",
                "run",
                "--listen",
                "127.0.0.1:1",
                "--http-listen",
                "127.0.0.1:2",
            ])
            .arg("--data-dir")
            .arg(&replica)
            .arg("--genesis")
            .arg(dir.path().join("genesis.bin"))
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // With its own keys the replica goes on (to the missing genesis).
    let err = run();
    assert!(err.contains("genesis.bin"), "{err}");
    // Keys others may read: refused, with the command that fixes it.
    let key = replica.join("node.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let err = run();
    assert!(
        err.contains("other users may read it (mode 644)")
            && err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    // `reset-store` (what a replica with a corrupt store names) moves the store aside and
    // keeps the keys.
    let reset = || {
        Command::new(env!("CARGO_BIN_EXE_thicket"))
            .args(["replica", "reset-store", "--data-dir"])
            .arg(&replica)
            .output()
            .expect("runs")
    };
    let out = reset();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no store"));
    std::fs::create_dir(replica.join("store")).expect("creates");
    let out = reset();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("the keys stay"));
    assert!(!replica.join("store").exists() && key.exists());
}

fn thicket(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("thicket runs")
}

/// The subnet public key (hex DER) a replica reports over the admin API.
fn public_key(admin_url: &str) -> String {
    hex::encode(admin_status(admin_url).subnet_public_key)
}

fn admin_status(admin_url: &str) -> thicket_proto::admin::StatusReply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = thicket_proto::admin::admin_client::AdminClient::connect(admin_url.to_string())
            .await
            .expect("admin API");
        c.status(thicket_proto::admin::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    })
}

/// 4 → 5: `thicket replica add` brings a new replica in through a registry change; it starts from
/// the newest catch-up package, syncs the state from its peers, becomes a member while the
/// subnet keeps finalizing, and the subnet public key does not change. 5 → 4: `thicket replica
/// remove` takes it out; it stops by itself and the four others go on.
#[test]
fn a_node_joins_through_catch_up_and_state_sync_and_a_removed_node_stops() {
    let LocalSubnet {
        dir,
        up: _up,
        info,
        replicas: _,
        metrics,
    } = up_and_finalizing(18000, &["--dkg-interval", "10"]);
    let key = info["public_key"].as_str().expect("public key").to_string();
    // Past two intervals, the members have a catch-up package for the newcomer to start from.
    wait_until("two DKG intervals", Duration::from_secs(60), || {
        metrics
            .iter()
            .all(|m| finalized_height(m).is_some_and(|h| h >= 25))
    });

    let out = thicket(dir.path(), &["replica", "add", "--timeout", "120"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("node 4 joined"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = subnet(dir.path()).expect("subnet.json");
    let replicas = info["replicas"].as_array().expect("replicas").clone();
    assert_eq!(replicas.len(), 5);
    let new = &replicas[4];
    let new_metrics = new["metrics_url"].as_str().expect("url");
    assert!(
        metric(new_metrics, "thicket_state_syncs_total").is_some_and(|n| n >= 1),
        "the new replica did not sync state"
    );
    // The admin API is served on the HTTP port.
    let grpc = |r: &serde_json::Value| r["http_url"].as_str().expect("url").to_string();
    assert_eq!(public_key(&grpc(new)), key, "the subnet key changed");
    assert_eq!(
        public_key(&grpc(&replicas[0])),
        key,
        "the subnet key changed"
    );
    let before = finalized_height(new_metrics).expect("height");
    // It holds its shares of the subnet key (dealt to it by the resharing), and its admin API
    // gives its public record.
    wait_until(
        "key shares on the new node",
        Duration::from_secs(30),
        || admin_status(&grpc(new)).holds_current_key_shares,
    );
    let record: thicket_types::registry::NodeRecord =
        bincode::deserialize(&admin_status(&grpc(new)).node_record).expect("a node record");
    assert_eq!(record.node_id, thicket_types::NodeId(4));
    let all: Vec<String> = metrics
        .iter()
        .cloned()
        .chain([new_metrics.to_string()])
        .collect();
    wait_until("five replicas finalizing", Duration::from_secs(60), || {
        all.iter()
            .all(|m| finalized_height(m).is_some_and(|h| h >= before + 10))
    });

    let out = thicket(
        dir.path(),
        &["replica", "remove", "--node-id", "4", "--timeout", "120"],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = new["pid"].as_u64().expect("pid");
    wait_until(
        "the removed replica to stop",
        Duration::from_secs(30),
        || !alive(pid),
    );
    let info = subnet(dir.path()).expect("subnet.json");
    assert_eq!(info["replicas"][4]["removed"], true);
    // It remembers: started again, it refuses to run.
    let data_dir = new["data_dir"].as_str().expect("data_dir").to_string();
    let again = Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args(["replica", "run", "--data-dir", &data_dir, "--genesis"])
        .arg(dir.path().join("genesis.bin"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("was removed from the subnet"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let before = finalized_height(&metrics[0]).expect("height");
    wait_until("four replicas finalizing", Duration::from_secs(60), || {
        metrics
            .iter()
            .all(|m| finalized_height(m).is_some_and(|h| h >= before + 10))
    });
    assert_eq!(
        public_key(&grpc(&replicas[0])),
        key,
        "the subnet key changed"
    );

    let out = thicket(dir.path(), &["replica", "remove", "--node-id", "4"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node 4 is not a member"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A minimal OTLP/HTTP collector: records (path, body) of every request and answers 200.
/// Requests a collector received: (path, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

fn collector() -> (u16, Received) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                let mut r = std::io::BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    record.lock().expect("lock").push((path, body));
                    let _ = w.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, seen)
}

/// With --otlp-endpoint, replicas export their spans (block execution among them) to an
/// OpenTelemetry collector over OTLP/HTTP.
#[test]
fn replicas_export_spans_to_an_otlp_collector() {
    let (port, seen) = collector();
    let dir = tempfile::tempdir().expect("tempdir");
    let base_port = 22000 + (std::process::id() % 3000) as u16;
    let _up = Up(Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args(["up", "--replicas", "1", "--data-dir"])
        .arg(dir.path())
        .args(["--base-port", &base_port.to_string()])
        .args(["--otlp-endpoint", &format!("http://127.0.0.1:{port}")])
        .env("OTEL_BSP_SCHEDULE_DELAY", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("thicket up starts"));
    wait_until("spans at the collector", Duration::from_secs(60), || {
        seen.lock().expect("lock").iter().any(|(path, body)| {
            let has = |s: &[u8]| body.windows(s.len()).any(|w| w == s);
            path == "/v1/traces" && has(b"thicket-replica") && has(b"execute_block")
        })
    });
}

/// `thicket genesis`: keys and genesis for replicas started elsewhere, each at its own address
/// (the fault harness starts them in network namespaces from it).
#[test]
fn genesis_for_replicas_at_their_own_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("subnet");
    let genesis = |urls: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_thicket"));
        cmd.arg("genesis").arg("--data-dir").arg(&dir);
        for u in urls {
            cmd.args(["--p2p-url", u]);
        }
        cmd.output().unwrap()
    };
    let urls = [
        "http://10.78.0.1:7000",
        "http://10.78.0.2:7000",
        "http://10.78.0.3:7000",
    ];
    let out = genesis(&urls);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(printed["subnet_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(printed["replicas"].as_array().map(Vec::len), Some(3));
    assert!(dir.join("genesis.bin").exists());
    for i in 0..3 {
        let d = dir.join(format!("replica-{i}"));
        assert_eq!(mode(&d.join("node.key")), 0o600);
    }
    // Another genesis in the same directory would orphan the first one's replicas.
    let again = genesis(&urls);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a subnet's genesis"));
    let tmp2 = tempfile::tempdir().unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_thicket"))
        .args(["genesis", "--p2p-url", "not a url", "--data-dir"])
        .arg(tmp2.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a URL"));
}
