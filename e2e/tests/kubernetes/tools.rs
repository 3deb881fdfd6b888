//! IC developers' own tools against a Subnet the operator runs, through its Service: icp-cli
//! with the root key from `status.publicKey` (every certificate checked), paying for a new
//! canister with cycles from the cycles ledger, and that canister's website through the HTTP
//! gateway every replica serves.

use std::path::Path;

/// Runs icp-cli in `project` (with a home of its own): its output, or a panic with it.
fn icp(project: &Path, args: &[&str]) -> String {
    let bin = thicket_canister::motoko::icp_cli().expect("icp-cli from npm");
    let out = std::process::Command::new(bin)
        .args(args)
        .current_dir(project)
        .env("HOME", project)
        .env("DO_NOT_TRACK", "1")
        .output()
        .expect("runs icp");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "icp {}: {text}", args.join(" "));
    text
}

fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `url` is the subnet's Service, `key` its public key (hex DER), `counter` a canister the
/// operator installed (its count is 1).
pub fn ic_tools_work_through_the_service(url: &str, key: &str, counter: &str) {
    let project = std::env::temp_dir().join(format!("thicket-e2e-icp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(&project).expect("a project directory");
    std::fs::write(
        project.join("icp.yaml"),
        format!(
            "networks:\n  - name: thicket\n    mode: connected\n    url: {url}\n    root-key: {key}\n"
        ),
    )
    .expect("writes icp.yaml");
    let run = |args: &[&str]| icp(&project, args);
    assert!(run(&["network", "ping", "thicket"]).contains("healthy"));
    let got = run(&[
        "canister", "call", "-n", "thicket", counter, "get", "()", "--query",
    ]);
    assert!(got.contains("(1 : nat)"), "{got}");
    // Not its controller (the operator is): what the certified state shows anyone.
    let status = run(&["canister", "status", "-n", "thicket", counter]);
    assert!(status.contains("Module hash: 0x"), "{status}");
    // A canister paid from the faucet's cycles, with the website sample installed.
    let id = run(&["canister", "create", "--detached", "-q", "-n", "thicket"]);
    let id = id.trim();
    let wasm = project.join("website.wasm");
    let module = thicket_canister::motoko::compile_sample("Website").expect("Website compiles");
    std::fs::write(&wasm, module).expect("writes the module");
    let wasm = wasm.to_str().expect("utf-8 path");
    run(&["canister", "install", "-n", "thicket", id, "--wasm", wasm]);
    let host = url.trim_start_matches("http://");
    // The page, certified, once the state that certifies it is.
    let mut page = String::new();
    for _ in 0..30 {
        page = curl(&[&format!("{url}/?canisterId={id}")]);
        if page.contains("Hello from a canister on Thicket") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(page.contains("Hello from a canister on Thicket"), "{page}");
    let by_host = curl(&[
        "-H",
        &format!("Host: {id}.localhost"),
        &format!("http://{host}/v2.html"),
    ]);
    assert!(
        by_host.contains("Hello from a canister on Thicket"),
        "{by_host}"
    );
    let refused = curl(&[&format!("{url}/tampered?canisterId={id}")]);
    assert!(refused.contains("failed certification"), "{refused}");
    let _ = std::fs::remove_dir_all(&project);
}
