//! The operator, installed by its Helm chart, runs a Subnet: the API server refuses invalid
//! manifests with messages naming the field; the 4-replica example turns Ready with its
//! public key, which the subnet's IC HTTP Service serves as its root key; deleting the
//! Subnet removes every object it owns.

use std::time::Instant;

use thicket_e2e::{cluster, kubectl, kubectl_try, repo_dir, wait_for};

use super::load;

const SYSTEM_NS: &str = "thicket-system";
const NS: &str = "thicket-demo";

fn jsonpath(kind: &str, name: &str, path: &str) -> String {
    kubectl_try(
        &[
            "-n",
            NS,
            "get",
            kind,
            name,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    )
    .1
}

/// What to look at when a wait times out.
fn diagnose() -> String {
    let (_, subnet) = kubectl_try(&["-n", NS, "get", "subnets", "-o", "yaml"], None);
    let (_, pods) = kubectl_try(&["-n", NS, "get", "pods,pvc", "-o", "wide"], None);
    let (_, events) = kubectl_try(
        &["-n", NS, "get", "events", "--sort-by=.lastTimestamp"],
        None,
    );
    let (_, logs) = kubectl_try(
        &[
            "-n",
            SYSTEM_NS,
            "logs",
            "deploy/thicket-operator",
            "--tail=60",
        ],
        None,
    );
    let (_, replica) = kubectl_try(&["-n", NS, "logs", "demo-0", "--tail=30"], None);
    format!(
        "--- subnets\n{subnet}\n--- pods\n{pods}\n--- events\n{events}\n--- operator\n{logs}\n--- demo-0\n{replica}"
    )
}

fn install_operator() {
    let rendered = cluster(&["install-manifest"]);
    let path = repo_dir().join("manifests/install.yaml");
    assert!(
        std::fs::read_to_string(&path).is_ok_and(|f| f == rendered),
        "manifests/install.yaml is not what the chart renders: \
         e2e/cluster install-manifest > manifests/install.yaml"
    );
    let replica = cluster(&["image", "replica"]).trim().to_string();
    let operator = cluster(&["image", "operator"]).trim().to_string();
    let (repo, tag) = operator.rsplit_once(':').expect("image:tag");
    let chart = repo_dir().join("charts/thicket-operator");
    let chart = chart.to_str().expect("UTF-8 path");
    let started = Instant::now();
    cluster(&[
        "helm",
        "upgrade",
        "--install",
        "thicket-operator",
        chart,
        "--namespace",
        SYSTEM_NS,
        "--create-namespace",
        "--set",
        &format!("image.repository={repo}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &format!("replica.image={replica}"),
        "--wait",
        "--timeout",
        "180s",
    ]);
    eprintln!(
        "   helm install: operator ready after {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// `kubectl apply` of `manifest` must fail, with `message` in the API server's answer.
fn refused(what: &str, manifest: &str, message: &str) {
    let (ok, out) = kubectl_try(&["-n", NS, "apply", "-f", "-"], Some(manifest));
    assert!(!ok, "{what}: the API server accepted it: {out}");
    assert!(
        out.contains(message),
        "{what}: expected a message naming the field ({message:?}), got: {out}"
    );
}

fn subnet(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: thicket.dev/v1alpha1\nkind: Subnet\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

fn canister(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: thicket.dev/v1alpha1\nkind: Canister\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

fn invalid_manifests_are_refused() {
    refused(
        "3 replicas",
        &subnet("small", "  replicas: 3\n"),
        "spec.replicas must be at least 4",
    );
    refused(
        "a malformed duration",
        &subnet("slow", "  replicas: 4\n  consensus: {unitDelay: soon}\n"),
        "spec.consensus.unitDelay must be a duration",
    );
    refused(
        "two wasm sources",
        &canister(
            "both",
            "  subnet: demo\n  wasm:\n    configMap: {name: m, key: k}\n    url: {url: 'https://example.org/a.wasm', sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}\n",
        ),
        "spec.wasm must set exactly one of configMap and url",
    );
    refused(
        "a bad sha256",
        &canister(
            "badsum",
            "  subnet: demo\n  wasm:\n    url: {url: 'https://example.org/a.wasm', sha256: abc123}\n",
        ),
        "spec.wasm.url.sha256 must be 64 lowercase hex digits",
    );
}

fn subnet_ready() -> Option<()> {
    let ready = jsonpath(
        "subnet",
        "demo",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    (ready == "True").then_some(())
}

/// Members as status reports them: (node id, pod, holds key shares).
fn members() -> Vec<(String, String, bool)> {
    let text = jsonpath("subnet", "demo", "{.status.members}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
    list.iter()
        .map(|m| {
            (
                m["nodeId"].as_str().unwrap_or_default().to_string(),
                m["pod"].as_str().unwrap_or_default().to_string(),
                m["holdsKeyShares"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The subnet is at `n` members, each on its pod and holding its key shares, with no
/// operation in flight and every pod Ready.
fn settled(n: usize) -> Option<Vec<(String, String, bool)>> {
    let m = members();
    let op = jsonpath("subnet", "demo", "{.status.operation}");
    let ready = jsonpath("subnet", "demo", "{.status.readyReplicas}");
    let phase = jsonpath("subnet", "demo", "{.status.phase}");
    (m.len() == n
        && m.iter().all(|(_, pod, shares)| *shares && !pod.is_empty())
        && op.is_empty()
        && ready == n.to_string()
        && phase == "Running")
        .then_some(m)
}

fn height() -> u64 {
    jsonpath("subnet", "demo", "{.status.finalizedHeight}")
        .parse()
        .unwrap_or(0)
}

/// Merges `spec` (JSON) into the Subnet's spec.
fn patch_spec(spec: &str) {
    kubectl(&[
        "-n",
        NS,
        "patch",
        "subnet",
        "demo",
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{spec}}}"),
    ]);
}

fn scale(n: usize) {
    patch_spec(&format!("{{\"replicas\":{n}}}"));
}

fn compile_counter() -> std::path::PathBuf {
    let wasm =
        thicket_canister::motoko::compile_sample("Counter").expect("moc compiles Counter.mo");
    let path =
        std::env::temp_dir().join(format!("thicket-e2e-counter-{}.wasm", std::process::id()));
    std::fs::write(&path, wasm).expect("writing the module");
    path
}

/// Counter.mo with one more method: another module, the same state layout.
fn compile_counter_v2() -> std::path::PathBuf {
    let src =
        std::fs::read_to_string(repo_dir().join("e2e/canisters/Counter.mo")).expect("Counter.mo");
    let v2 = src.replacen(
        "public query func get()",
        "public query func version() : async Nat { 2 };\n\n  public query func get()",
        1,
    );
    let dir = std::env::temp_dir().join(format!("thicket-e2e-v2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("Counter.mo");
    std::fs::write(&path, v2).expect("writing Counter.mo v2");
    let wasm = thicket_canister::motoko::compile(&path).expect("moc compiles Counter.mo v2");
    let out = dir.join("counter.wasm");
    std::fs::write(&out, wasm).expect("writing the module");
    out
}

/// Replaces an object with `manifest` (client-side apply would copy a module into an
/// annotation, beyond its 256 KiB limit).
fn kubectl_replace(manifest: &str) {
    let (ok, out) = kubectl_try(&["-n", NS, "replace", "-f", "-"], Some(manifest));
    assert!(ok, "kubectl replace: {out}");
}

/// `kubectl apply` of `manifests/NAME` in the test namespace; returns when it was applied.
fn apply_example(name: &str) -> Instant {
    let path = repo_dir().join("manifests").join(name);
    let applied = Instant::now();
    kubectl(&["-n", NS, "apply", "-f", path.to_str().expect("UTF-8 path")]);
    applied
}

/// The example Subnet, Running, with its counter canister installed: what the scenarios after
/// this one use, and [`deleting_removes_everything`] removes.
pub struct Demo {
    /// The IC HTTP Service's URL.
    pub url: String,
    /// `status.publicKey`, hex.
    pub key: String,
    pub canister: candid::Principal,
}

pub const DEMO_NS: &str = NS;
pub const OPERATOR_NS: &str = SYSTEM_NS;

pub fn the_operator_runs_a_subnet() -> Demo {
    install_operator();
    kubectl(&["delete", "namespace", NS, "--ignore-not-found", "--wait"]);
    kubectl(&["create", "namespace", NS]);
    invalid_manifests_are_refused();

    let applied = apply_example("subnet-4.yaml");
    wait_for(
        "the 4-replica Subnet to turn Ready",
        240,
        subnet_ready,
        diagnose,
    );
    let ready_secs = applied.elapsed().as_secs_f64();
    eprintln!("   kubectl apply -> Subnet Ready: {ready_secs:.1} s");
    let key = jsonpath("subnet", "demo", "{.status.publicKey}");
    assert!(
        key.len() == 266 && key.starts_with("308182301d"),
        "status.publicKey is the DER BLS key (133 bytes): {key}"
    );
    let start_members = wait_for(
        "every member to hold its shares",
        120,
        || settled(4),
        diagnose,
    );
    let row = kubectl(&["-n", NS, "get", "subnets", "demo", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "demo", "{row}");
    assert_eq!(cols[1], "4", "REPLICAS: {row}");
    assert_eq!(cols[2], "4", "READY: {row}");
    assert!(cols[3].parse::<u64>().is_ok_and(|h| h > 0), "HEIGHT: {row}");
    assert_eq!(cols[5], &key[74..90], "PUBLIC-KEY prefix: {row}");
    assert_eq!(cols[6], "Running", "PHASE: {row}");
    // Fields fixed at genesis or at creation stay fixed.
    let (ok, out) = kubectl_try(
        &[
            "-n",
            NS,
            "patch",
            "subnet",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"consensus":{"dkgInterval":20}}}"#,
        ],
        None,
    );
    assert!(
        !ok && out.contains("spec.consensus is immutable"),
        "changing the DKG interval is refused, naming the field: {out}"
    );

    // The IC HTTP interface's Service serves the same root key to agents.
    let ip = jsonpath("service", "demo", "{.spec.clusterIP}");
    let url = format!("http://{ip}");
    let body = std::process::Command::new("curl")
        .args([
            "-sSf",
            "--max-time",
            "10",
            "--retry",
            "20",
            "--retry-delay",
            "1",
        ])
        .arg(format!("{url}/api/v2/status"))
        .output()
        .expect("curl");
    assert!(
        body.status.success(),
        "status through the Service: {body:?}"
    );
    let raw = load::hex(&key);
    assert!(
        body.stdout.windows(raw.len()).any(|w| w == raw.as_slice()),
        "/api/v2/status through the Service carries status.publicKey as its root key"
    );

    // A Canister from a ConfigMap (Motoko, compiled here), installed by the operator.
    let wasm = compile_counter();
    kubectl(&[
        "-n",
        NS,
        "create",
        "configmap",
        "counter-wasm",
        &format!("--from-file=counter.wasm={}", wasm.display()),
    ]);
    let applied = apply_example("canister-configmap.yaml");
    let id = wait_for(
        "the Canister to be installed",
        180,
        || {
            let phase = jsonpath("canister", "counter", "{.status.phase}");
            let id = jsonpath("canister", "counter", "{.status.canisterId}");
            (phase == "Running" && !id.is_empty()).then_some(id)
        },
        diagnose,
    );
    let install_secs = applied.elapsed().as_secs_f64();
    eprintln!("   kubectl apply -> Canister installed: {install_secs:.1} s");
    let row = kubectl(&["-n", NS, "get", "canisters", "counter", "--no-headers"]);
    assert!(
        row.contains(&id) && row.contains("demo") && row.contains("Running"),
        "{row}"
    );
    let canister = candid::Principal::from_text(&id).expect("a canister id");
    let agent = load::agent(&url, &key);
    assert_eq!(
        load::inc_once(&agent, canister),
        Ok(1),
        "the canister answers through the Service"
    );
    super::tools::ic_tools_work_through_the_service(&url, &key, &id);

    // A new module in the ConfigMap upgrades the canister; Motoko's enhanced orthogonal
    // persistence keeps its state.
    let v2 = compile_counter_v2();
    let cm = kubectl(&[
        "-n",
        NS,
        "create",
        "configmap",
        "counter-wasm",
        &format!("--from-file=counter.wasm={}", v2.display()),
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let first = jsonpath("canister", "counter", "{.status.moduleHash}");
    kubectl_replace(&cm);
    wait_for(
        "the Canister to be upgraded to the new module",
        120,
        || {
            let hash = jsonpath("canister", "counter", "{.status.moduleHash}");
            let phase = jsonpath("canister", "counter", "{.status.phase}");
            (hash != first && !hash.is_empty() && phase == "Running").then_some(())
        },
        diagnose,
    );
    assert_eq!(
        load::get_retrying(&agent, canister),
        1,
        "the upgrade kept the counter"
    );

    // Update calls throughout every membership change.
    let load = load::Load::start(load::agent(&url, &key), canister);
    let mut heights = vec![height()];

    // Scale up to 5, with the operator killed in the middle of it.
    let started = Instant::now();
    scale(5);
    wait_for(
        "the scale-up to start",
        60,
        || (!jsonpath("subnet", "demo", "{.status.operation}").is_empty()).then_some(()),
        diagnose,
    );
    kubectl(&[
        "-n",
        SYSTEM_NS,
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/name=thicket-operator",
        "--wait=false",
    ]);
    let five = wait_for(
        "node 5 to be a member holding its shares",
        300,
        || settled(5),
        diagnose,
    );
    let scale_up_secs = started.elapsed().as_secs_f64();
    eprintln!("   scale-up -> new node a member: {scale_up_secs:.1} s");
    assert!(five.iter().any(|(_, pod, _)| pod == "demo-4"), "{five:?}");
    heights.push(height());

    // Scale down to 4: the node leaves the registry, then its pod and volume go.
    scale(4);
    wait_for(
        "the subnet back at 4 with demo-4's volume gone",
        300,
        || {
            let pvc = kubectl_try(&["-n", NS, "get", "pvc", "data-demo-4"], None).0;
            settled(4).filter(|_| !pvc)
        },
        diagnose,
    );
    heights.push(height());

    // Replace a node: its pod and volume deleted, it comes back with new keys.
    let old = start_members
        .iter()
        .find(|(_, pod, _)| pod == "demo-2")
        .map(|(id, _, _)| id.clone())
        .expect("demo-2 is a member");
    kubectl(&["-n", NS, "delete", "pvc", "data-demo-2", "--wait=false"]);
    kubectl(&["-n", NS, "delete", "pod", "demo-2", "--wait=false"]);
    let replaced = wait_for(
        "demo-2 to come back as a new member",
        400,
        || {
            settled(4).filter(|m| {
                m.iter().any(|(id, pod, _)| pod == "demo-2" && *id != old)
                    && !m.iter().any(|(id, _, _)| *id == old)
            })
        },
        diagnose,
    );
    eprintln!("   replaced node {old} on demo-2: members {replaced:?}");
    heights.push(height());

    // A new image rolls the pods one at a time while the subnet keeps finalizing.
    let replica = jsonpath(
        "statefulset",
        "demo",
        "{.spec.template.spec.containers[0].image}",
    );
    let rolled = cluster(&["tag", &replica, &format!("{replica}-rolled")])
        .trim()
        .to_string();
    patch_spec(&format!("{{\"image\":\"{rolled}\"}}"));
    let mut last = (height(), Instant::now());
    wait_for(
        "every pod to run the new image",
        400,
        || {
            let h = height();
            if h > last.0 {
                last = (h, Instant::now());
            }
            assert!(
                last.1.elapsed().as_secs() < 60,
                "the subnet stopped finalizing during the roll (at height {})",
                last.0
            );
            let images = kubectl(&[
                "-n",
                NS,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/instance=demo",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ]);
            let all_new = images.split_whitespace().count() == 4
                && images.split_whitespace().all(|i| i == rolled);
            settled(4).filter(|_| all_new)
        },
        diagnose,
    );
    heights.push(height());

    let (answered, failed, errors) = load.stop();
    let count = load::get_retrying(&agent, canister);
    eprintln!(
        "   {answered} update calls answered during the changes ({failed} failed: {errors:?}); counter {count}"
    );
    assert!(answered > 10, "calls kept being answered: {answered}");
    // Every answered increment is in the counter; a failed call (its answer lost) may or may
    // not have been executed.
    assert!(
        count > answered && count <= answered + 1 + failed,
        "counter {count} vs {answered} answered (+1 before) and {failed} unanswered"
    );
    assert_eq!(
        jsonpath("subnet", "demo", "{.status.publicKey}"),
        key,
        "the public key never changed"
    );
    assert!(
        heights.windows(2).all(|w| w[0] < w[1]),
        "finalized heights {heights:?}"
    );
    eprintln!(
        "   figures: apply -> Ready {ready_secs:.1} s; scale-up -> member {scale_up_secs:.1} s; canister apply -> installed {install_secs:.1} s"
    );
    Demo { url, key, canister }
}

/// The subnet settles at 4 members again (after a scenario disturbed it).
pub fn wait_settled() {
    wait_for("the subnet to settle at 4", 300, || settled(4), diagnose);
}

pub fn deleting_removes_everything(demo: Demo) {
    let Demo { url, key, canister } = demo;
    let agent = load::agent(&url, &key);

    // Deleting the Canister deletes it on the subnet.
    kubectl(&[
        "-n",
        NS,
        "delete",
        "canister",
        "counter",
        "--wait",
        "--timeout=120s",
    ]);
    // The operator saw the deletion certified by one replica; the Service may route this
    // read to another that publishes that height a moment later.
    wait_for(
        "the canister to be gone from every replica's certified state",
        30,
        || {
            let reads: Vec<_> = (0..8)
                .map(|_| load::runtime_block(agent.read_state_canister_controllers(canister)))
                .collect();
            reads.iter().all(Result::is_err).then_some(())
        },
        diagnose,
    );

    // Deleting the Subnet removes everything it owns.
    kubectl(&[
        "-n",
        NS,
        "delete",
        "subnet",
        "demo",
        "--wait",
        "--timeout=120s",
    ]);
    wait_for(
        "the Subnet's objects to go",
        120,
        || {
            let left = kubectl(&[
                "-n",
                NS,
                "get",
                "statefulsets,services,pods,pvc,poddisruptionbudgets,networkpolicies,serviceaccounts",
                "-l",
                "app.kubernetes.io/instance=demo",
                "-o",
                "name",
            ]);
            let genesis = kubectl_try(&["-n", NS, "get", "configmap", "demo-genesis"], None).0;
            let admin = kubectl_try(&["-n", NS, "get", "secret", "demo-admin"], None).0;
            (left.trim().is_empty() && !genesis && !admin).then_some(())
        },
        diagnose,
    );
    kubectl(&["delete", "namespace", NS, "--wait"]);
}
