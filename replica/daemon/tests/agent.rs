//! The IC's own clients against a 4-replica subnet: the Rust agent (`ic-agent`, unmodified,
//! with its default verification: certificates against the root key it fetched, query
//! signatures against the node keys of the certified state tree), requests made by hand, and
//! the JavaScript agent. Every scenario is its own test with its own canisters, on one subnet
//! that the tests of this file share (started once, on a runtime of its own).

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use candid::{Decode, Encode, Nat, Principal};
use common::{LocalSubnet, eventually, lookup};
use ic_agent::{Agent, AgentError};
use thicket_replica::clock::now_ms;
use thicket_state::management::*;

/// The shared subnet's HTTP URLs.
fn subnet() -> &'static [String] {
    static URLS: OnceLock<Vec<String>> = OnceLock::new();
    URLS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The replicas live as long as the test process, on a runtime no test owns.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            // Its data outlives the tests (nothing stops it): it goes under cargo's scratch
            // directory, cleared at the next run.
            let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-subnet");
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(&base).expect("scratch directory");
            rt.block_on(async move {
                let subnet = LocalSubnet::start_in(11, Some(&base)).await;
                tx.send(subnet.urls.clone()).expect("sends");
                std::future::pending::<()>().await;
                drop(subnet);
            });
        });
        rx.recv().expect("the subnet starts")
    })
}

fn counter_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        thicket_canister::motoko::compile_sample("Counter").expect("Counter compiles")
    })
}

/// An agent for replica `i` with `identity` (anonymous if none), once it has the root key.
async fn agent_for(i: usize, identity: Option<Arc<dyn ic_agent::Identity>>) -> Agent {
    let mut b = Agent::builder().with_url(&subnet()[i]);
    if let Some(id) = identity {
        b = b.with_arc_identity(id);
    }
    let a = b.build().expect("agent");
    eventually("the root key", Duration::from_secs(60), || {
        a.fetch_root_key()
    })
    .await;
    a
}

fn install_args(id: Principal, mode: InstallMode, wasm: &[u8]) -> Vec<u8> {
    Encode!(&InstallCodeArgs {
        mode,
        canister_id: id,
        wasm_module: serde_bytes::ByteBuf::from(wasm.to_vec()),
        arg: serde_bytes::ByteBuf::from(b"DIDL\x00\x00".to_vec()),
        sender_canister_version: None,
    })
    .expect("encodes")
}

/// An empty canister, with the default cycles, controlled by the agent's identity.
async fn create(agent: &Agent) -> Principal {
    let ecid = Principal::from_text("i3flu-baaaa-aaaai-aaaaa-cai").expect("principal");
    let reply = agent
        .update(
            &Principal::management_canister(),
            "provisional_create_canister_with_cycles",
        )
        .with_effective_canister_id(ecid)
        .with_arg(Encode!(&ProvisionalCreateCanisterArgs::default()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("created");
    Decode!(&reply, CanisterIdRecord).expect("id").canister_id
}

/// A new canister with `wasm` installed, controlled by `agent`'s identity.
async fn deploy(agent: &Agent, wasm: &[u8]) -> Principal {
    let id = create(agent).await;
    install(agent, id, wasm).await;
    id
}

/// Installs `wasm` on canister `id`.
async fn install(agent: &Agent, id: Principal, wasm: &[u8]) {
    agent
        .update(&Principal::management_canister(), "install_code")
        .with_effective_canister_id(id)
        .with_arg(install_args(id, InstallMode::Install, wasm))
        .call_and_wait()
        .await
        .expect("installed");
}

async fn inc(agent: &Agent, id: Principal) -> Nat {
    let reply = agent
        .update(&id, "inc")
        .with_arg(Encode!().expect("encodes"))
        .call_and_wait()
        .await
        .expect("inc");
    Decode!(&reply, Nat).expect("nat")
}

/// The counter as a query sees it (the newest certified state, which may trail the last
/// update by a height or two).
async fn get(agent: &Agent, id: Principal) -> Result<Nat, AgentError> {
    let reply = agent
        .query(&id, "get")
        .with_arg(Encode!().expect("encodes"))
        .call()
        .await?;
    Ok(Decode!(&reply, Nat).expect("nat"))
}

/// Waits until a query sees the counter at `n`.
async fn query_sees(agent: &Agent, id: Principal, n: u32) {
    eventually("the query's count", Duration::from_secs(10), || async {
        match get(agent, id).await {
            Ok(c) if c == n => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

fn reject_code(err: &AgentError) -> Option<&str> {
    match err {
        AgentError::CertifiedReject { reject, .. } => reject.error_code.as_deref(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canister_is_created_installed_called_and_queried_with_signed_answers() {
    let agent = agent_for(0, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    for n in 1..=2u8 {
        assert_eq!(inc(&agent, id).await, Nat::from(n));
    }
    // The query's answer carries this node's signature, which the agent checks against the
    // certified node keys.
    query_sees(&agent, id, 2).await;
    let hash = agent
        .read_state_canister_info(id, "module_hash")
        .await
        .expect("module hash");
    use sha2::Digest;
    assert_eq!(hash, sha2::Sha256::digest(counter_wasm()).to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_and_an_endless_loop_are_certified_rejects_that_change_nothing() {
    let agent = agent_for(1, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    inc(&agent, id).await;
    for (method, code) in [("inc_then_trap", "IC0503"), ("spin", "IC0522")] {
        let err = agent
            .update(&id, method)
            .with_arg(Encode!().expect("encodes"))
            .call_and_wait()
            .await
            .expect_err("rejected");
        assert_eq!(reject_code(&err), Some(code), "{method}: {err}");
    }
    // The subnet goes on: the next call is ordered, executed and certified as usual, and the
    // count is what the successful calls made it.
    assert_eq!(inc(&agent, id).await, Nat::from(2u8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_controller_upgrades_and_the_state_survives() {
    let agent = agent_for(0, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    inc(&agent, id).await;
    let keep = InstallMode::Upgrade(Some(UpgradeOptions {
        skip_pre_upgrade: None,
        wasm_memory_persistence: Some(WasmMemoryPersistence::Keep),
    }));
    let mgmt = Principal::management_canister();
    let other = agent_for(
        1,
        Some(Arc::new(ic_agent::identity::BasicIdentity::from_raw_key(
            &[9; 32],
        ))),
    )
    .await;
    let err = other
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(install_args(id, keep.clone(), counter_wasm()))
        .call_and_wait()
        .await
        .expect_err("not a controller");
    assert_eq!(reject_code(&err), Some("IC0512"), "{err}");
    agent
        .update(&mgmt, "install_code")
        .with_effective_canister_id(id)
        .with_arg(install_args(id, keep, counter_wasm()))
        .call_and_wait()
        .await
        .expect("upgraded");
    assert_eq!(inc(&agent, id).await, Nat::from(2u8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canister_calls_another_and_answers_from_its_callback() {
    let agent = agent_for(2, None).await;
    let counter = deploy(&agent, counter_wasm()).await;
    let relay_wasm = thicket_canister::motoko::compile_sample("Relay").expect("Relay compiles");
    let relay = deploy(&agent, &relay_wasm).await;
    let reply = agent
        .update(&relay, "inc_via")
        .with_arg(Encode!(&counter.to_text()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("inc through the relay");
    assert_eq!(Decode!(&reply, Nat).expect("nat"), Nat::from(100u32));
    // The counter traps; the relay's callback catches the reject.
    let reply = agent
        .update(&relay, "trap_via")
        .with_arg(Encode!(&counter.to_text()).expect("encodes"))
        .call_and_wait()
        .await
        .expect("the relay catches the counter's trap");
    let text = Decode!(&reply, String).expect("text");
    assert!(text.contains("refusing on purpose"), "{text}");
    query_sees(&agent, counter, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_of_every_scheme_and_through_delegations_are_who_they_say() {
    use ic_agent::Identity;
    use ic_agent::identity::{
        BasicIdentity, DelegatedIdentity, Delegation, Prime256v1Identity, Secp256k1Identity,
        SignedDelegation,
    };
    let anonymous = agent_for(3, None).await;
    let id = deploy(&anonymous, counter_wasm()).await;
    let elsewhere = deploy(&anonymous, counter_wasm()).await;
    let whoami = |a: Agent, target: Principal| async move {
        a.update(&target, "whoami")
            .with_arg(Encode!().expect("encodes"))
            .call_and_wait()
            .await
            .map(|reply| Decode!(&reply, Principal).expect("a principal"))
    };
    let k1: Arc<dyn Identity> = Arc::new(Secp256k1Identity::from_private_key(
        k256::SecretKey::from_slice(&[7; 32]).expect("key"),
    ));
    let r1: Arc<dyn Identity> = Arc::new(Prime256v1Identity::from_private_key(
        p256::SecretKey::from_slice(&[8; 32]).expect("key"),
    ));
    let ed: Arc<dyn Identity> = Arc::new(BasicIdentity::from_raw_key(&[6; 32]));
    for identity in [k1, r1, ed] {
        let sender = identity.sender().expect("sender");
        let a = agent_for(3, Some(identity)).await;
        assert_eq!(whoami(a, id).await.expect("whoami"), sender);
    }
    // An Ed25519 root key delegates to a P-256 session key, for the counter only.
    let root = BasicIdentity::from_raw_key(&[21; 32]);
    let session =
        Prime256v1Identity::from_private_key(p256::SecretKey::from_slice(&[22; 32]).expect("key"));
    let delegated = |expiration: u64| {
        let delegation = Delegation {
            pubkey: session.public_key().expect("key"),
            expiration,
            targets: Some(vec![id]),
            permissions: None,
        };
        let signature = root
            .sign_delegation(&delegation)
            .expect("signs")
            .signature
            .expect("a signature");
        Arc::new(DelegatedIdentity::new_unchecked(
            root.public_key().expect("key"),
            Box::new(session.clone()),
            vec![SignedDelegation {
                delegation,
                signature,
            }],
        )) as Arc<dyn Identity>
    };
    let a = agent_for(3, Some(delegated((now_ms() + 600_000) * 1_000_000))).await;
    let sender = root.sender().expect("sender");
    assert_eq!(
        whoami(a.clone(), id).await.expect("delegated whoami"),
        sender
    );
    let err = whoami(a, elsewhere).await.expect_err("not a target");
    assert!(format!("{err}").contains("do not cover"), "{err}");
    let expired = agent_for(3, Some(delegated((now_ms() - 1_000) * 1_000_000))).await;
    let err = whoami(expired, id).await.expect_err("expired");
    assert!(format!("{err}").contains("expired"), "{err}");
}

/// A `read_state` envelope for `paths`, from `key`'s principal (signed) or from the sender
/// `[4]` (unsigned).
fn read_state(
    key: Option<&ed25519_dalek::SigningKey>,
    paths: &[Vec<Vec<u8>>],
    expiry: u64,
) -> Vec<u8> {
    use ciborium::Value as V;
    use thicket_types::ingress::{
        ED25519_DER_PREFIX, Value as F, hash_of_map, self_authenticating,
    };
    let der = key.map(|k| [&ED25519_DER_PREFIX[..], k.verifying_key().as_bytes()].concat());
    let sender = der.as_deref().map_or(vec![4], self_authenticating);
    let rid = hash_of_map(&[
        ("request_type", F::Bytes(b"read_state")),
        ("sender", F::Bytes(&sender)),
        ("paths", F::Paths(paths)),
        ("ingress_expiry", F::Nat(expiry)),
    ]);
    let content = V::Map(vec![
        (V::Text("request_type".into()), V::Text("read_state".into())),
        (V::Text("sender".into()), V::Bytes(sender)),
        (
            V::Text("paths".into()),
            V::Array(
                paths
                    .iter()
                    .map(|p| V::Array(p.iter().cloned().map(V::Bytes).collect()))
                    .collect(),
            ),
        ),
        (V::Text("ingress_expiry".into()), V::Integer(expiry.into())),
    ]);
    let mut env = vec![(V::Text("content".into()), content)];
    if let (Some(k), Some(der)) = (key, der) {
        use ed25519_dalek::Signer;
        let sig = k.sign(&[&b"\x0Aic-request"[..], &rid].concat());
        env.push((V::Text("sender_pubkey".into()), V::Bytes(der)));
        env.push((
            V::Text("sender_sig".into()),
            V::Bytes(sig.to_bytes().to_vec()),
        ));
    }
    let mut out = Vec::new();
    ciborium::into_writer(&V::Tag(55799, Box::new(V::Map(env))), &mut out).expect("cbor");
    out
}

async fn post(path: String, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", subnet()[2]))
        .header("content-type", "application/cbor")
        .body(body)
        .send()
        .await
        .expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_and_a_status_is_for_its_sender_only() {
    let agent = agent_for(2, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    // Paths the port does not serve: 404 with what it does serve.
    for r in [
        post("/nope".into(), b"x".to_vec()).await,
        reqwest::get(format!("{}/", subnet()[2]))
            .await
            .expect("answered"),
    ] {
        assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
        assert!(r.text().await.expect("body").contains("IC HTTP interface"));
    }
    let r = post(
        format!("/api/v3/canister/{id}/read_state"),
        b"not cbor".to_vec(),
    )
    .await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("CBOR"));
    let r = post(format!("/api/v2/canister/{id}/query"), b"\xa0".to_vec()).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);

    // A synchronous call by hand, from the sender [4]: answered with its certificate.
    let expiry = (now_ms() + 120_000) * 1_000_000;
    let call = thicket_types::ingress::IngressMessage {
        sender: vec![4],
        canister_id: id.as_slice().to_vec(),
        method_name: "inc".into(),
        arg: Encode!().expect("encodes"),
        ingress_expiry: expiry,
        nonce: Some(b"by hand".to_vec()),
    };
    let r = post(
        format!("/api/v4/canister/{id}/call"),
        thicket_replica::http::envelope::unsigned_envelope(&call),
    )
    .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let request = call.request_id();
    let paths = vec![vec![b"request_status".to_vec(), request.0.to_vec()]];
    // Someone else may not read its status; its sender may.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let r = post(
        format!("/api/v3/canister/{id}/read_state"),
        read_state(Some(&stranger), &paths, expiry),
    )
    .await;
    let status = r.status();
    let body = r.bytes().await.expect("body");
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let r = post(
        format!("/api/v2/canister/{id}/read_state"),
        read_state(None, &paths, expiry),
    )
    .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let body: ciborium::Value =
        ciborium::from_reader(&r.bytes().await.expect("body")[..]).expect("a CBOR reply");
    let field = |v: &ciborium::Value, name: &str| {
        v.as_tag()
            .and_then(|(_, v)| v.as_map())
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(name)))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let cert = field(&body, "certificate").into_bytes().expect("bytes");
    let cert: ciborium::Value = ciborium::from_reader(&cert[..]).expect("CBOR certificate");
    assert_eq!(
        lookup(
            &field(&cert, "tree"),
            &[b"request_status", &request.0, b"status"]
        ),
        Some(b"replied".to_vec())
    );
    // The list of all requests is not for anyone to read.
    let everything = vec![vec![b"request_status".to_vec()]];
    let r = post(
        format!("/api/v3/canister/{id}/read_state"),
        read_state(None, &everything, expiry),
    )
    .await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);

    // The replica's local status endpoint tells no more than read_state would tell someone
    // who proves no identity: the anonymous request's status, not a signed one's.
    let http = reqwest::Client::new();
    let anonymous = common::request_status(&http, &subnet()[2], &request.to_string()).await;
    assert_eq!(anonymous["status"], "replied", "{anonymous}");
    let (signed, signed_id) = signed_call(id, expiry, Encode!().expect("encodes"));
    let r = post(format!("/api/v4/canister/{id}/call"), signed).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let hidden = common::request_status(&http, &subnet()[2], &signed_id.to_string()).await;
    let never = common::request_status(&http, &subnet()[2], &"ab".repeat(32)).await;
    assert_eq!(hidden, never, "a signed request looks like one never seen");
    assert_eq!(hidden["status"], "unknown");
    assert!(
        hidden["note"]
            .as_str()
            .is_some_and(|n| n.contains("read_state"))
    );
}

/// A call to `id`'s `inc` signed by `signer` over a message whose argument is `signed_arg`
/// (the empty argument makes the signature valid), and the id of the request it sends.
fn signed_call(
    id: Principal,
    expiry: u64,
    signed_arg: Vec<u8>,
) -> (Vec<u8>, thicket_types::ingress::RequestId) {
    use ciborium::Value as V;
    use ed25519_dalek::Signer;
    let signer = ed25519_dalek::SigningKey::from_bytes(&[31; 32]);
    let der = [
        &thicket_types::ingress::ED25519_DER_PREFIX[..],
        signer.verifying_key().as_bytes(),
    ]
    .concat();
    let msg = thicket_types::ingress::IngressMessage {
        sender: thicket_types::ingress::self_authenticating(&der),
        canister_id: id.as_slice().to_vec(),
        method_name: "inc".into(),
        arg: Encode!().expect("encodes"),
        ingress_expiry: expiry,
        nonce: None,
    };
    let signed = thicket_types::ingress::IngressMessage {
        arg: signed_arg,
        ..msg.clone()
    };
    let sig = signer.sign(&[b"\x0Aic-request".as_slice(), &signed.request_id().0].concat());
    let envelope = thicket_replica::http::envelope::unsigned_envelope(&msg);
    let Ok(V::Tag(tag, body)) = ciborium::from_reader::<V, _>(envelope.as_slice()) else {
        panic!("a tagged envelope");
    };
    let V::Map(mut fields) = *body else {
        panic!("a map");
    };
    fields.push((V::Text("sender_pubkey".into()), V::Bytes(der)));
    fields.push((
        V::Text("sender_sig".into()),
        V::Bytes(sig.to_bytes().to_vec()),
    ));
    let mut out = Vec::new();
    ciborium::into_writer(&V::Tag(tag, Box::new(V::Map(fields))), &mut out).expect("cbor");
    (out, msg.request_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_invalid_requests_change_nothing() {
    let agent = agent_for(2, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    assert_eq!(inc(&agent, id).await, Nat::from(1u8));
    let now_ns = now_ms() * 1_000_000;
    let (expired, _) = signed_call(id, now_ns - 600_000_000_000, Encode!().expect("encodes"));
    let r = post(format!("/api/v3/canister/{id}/call"), expired).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = r.text().await.expect("body");
    assert!(body.contains("ingress_expiry"), "{body}");
    let (forged, _) = signed_call(
        id,
        now_ns + 60_000_000_000,
        b"DIDL\x00\x01\x7d\x01".to_vec(),
    );
    let r = post(format!("/api/v3/canister/{id}/call"), forged).await;
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = r.text().await.expect("body");
    assert!(body.contains("does not verify"), "{body}");
    let err = agent
        .update(&Principal::management_canister(), "install_code")
        .with_effective_canister_id(id)
        .with_arg(install_args(
            id,
            InstallMode::Reinstall,
            b"\0asm but not really",
        ))
        .call_and_wait()
        .await
        .expect_err("not a module");
    assert_eq!(reject_code(&err), Some("IC0505"), "{err}");
    // Nothing changed: the counter is where the one call put it.
    assert_eq!(inc(&agent, id).await, Nat::from(2u8));
}

/// Runs `e2e/canisters/agent-js.mjs` against replica `i` with `flags`: its JSON summary.
async fn agent_js(i: usize, flags: &[&str]) -> String {
    let tools = thicket_canister::motoko::ensure_installed().expect("npm packages");
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm_file = dir.path().join("counter.wasm");
    std::fs::write(&wasm_file, counter_wasm()).expect("writes");
    let url = subnet()[i].clone();
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(tools.join("agent-js.mjs"))
            .arg(&url)
            .arg(&wasm_file)
            .args(&flags)
            .output()
    })
    .await
    .expect("joins")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "agent-js failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_agent_deploys_and_calls_through_its_endpoints() {
    // @dfinity/agent from npm, in Node, through the endpoints it uses (v3 call, v2 query and
    // read_state), against another replica.
    let stdout = agent_js(3, &[]).await;
    assert!(stdout.contains("\"get\":\"2\""), "{stdout}");
    assert!(stdout.contains("\"status\":\"running\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_javascript_sdk_deploys_calls_and_reads_status_and_logs() {
    // @icp-sdk/core, the current JavaScript SDK: the same flow with the canister paid from the
    // cycles ledger, plus the management canister's fetch_canister_logs query sent to the
    // canister's endpoint.
    let stdout = agent_js(0, &["--core"]).await;
    assert!(stdout.contains("\"agent\":\"@icp-sdk/core\""), "{stdout}");
    // Created through the cycles ledger: 2T for the canister and the ledger's fee.
    assert!(stdout.contains("\"paid\":\"2000100000000\""), "{stdout}");
    assert!(
        stdout.contains("\"log\":[\"count is 1\",\"count is 2\"]"),
        "{stdout}"
    );
}

/// Runs icp-cli (`icp`, the npm package pinned in `e2e/canisters`) in `project` with a home of
/// its own: its output, or the failure with what it printed.
fn icp(project: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let bin = thicket_canister::motoko::icp_cli()?;
    let out = std::process::Command::new(bin)
        .args(args)
        .current_dir(project)
        .env("HOME", project)
        .env("DO_NOT_TRACK", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .map_err(|e| format!("running icp: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("icp {}: {text}", args.join(" ")))
    }
}

/// A project directory for icp-cli whose network `thicket` is replica `i`, connected with the
/// subnet's root key pinned: icp-cli verifies every certificate against it (no trust on
/// first use).
fn icp_project(i: usize, agent: &Agent) -> tempfile::TempDir {
    let project = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        project.path().join("icp.yaml"),
        format!(
            "networks:\n  - name: thicket\n    mode: connected\n    url: {}\n    root-key: {}\n",
            subnet()[i],
            hex::encode(agent.read_root_key())
        ),
    )
    .expect("writes icp.yaml");
    project
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icp_cli_drives_a_canister_from_call_to_delete() {
    let agent = agent_for(2, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    // A private metadata section is for controllers only.
    let other = agent_for(
        2,
        Some(Arc::new(ic_agent::identity::BasicIdentity::from_raw_key(
            &[9; 32],
        ))),
    )
    .await;
    let refused = other
        .read_state_canister_metadata(id, "candid:service")
        .await
        .expect_err("a private section is refused to others");
    assert!(refused.to_string().contains("controllers"), "{refused}");
    let own = agent
        .read_state_canister_metadata(id, "candid:service")
        .await
        .expect("the controller reads it");
    assert!(String::from_utf8_lossy(&own).contains("service"));
    let project = icp_project(2, &agent);
    let dir = project.path().to_path_buf();
    let id_text = id.to_text();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| icp(&dir, args).unwrap_or_else(|e| panic!("{e}"));
        let ping = run(&["network", "ping", "thicket"]);
        assert!(ping.contains("healthy"), "{ping}");
        let inc = run(&["canister", "call", "-n", "thicket", &id_text, "inc", "()"]);
        let get = run(&[
            "canister", "call", "-n", "thicket", &id_text, "get", "()", "--query",
        ]);
        let status = run(&["canister", "status", "-n", "thicket", &id_text]);
        let settings = run(&["canister", "settings", "show", "-n", "thicket", &id_text]);
        let candid = run(&[
            "canister",
            "metadata",
            "-n",
            "thicket",
            &id_text,
            "candid:service",
        ]);
        let logs = run(&["canister", "logs", "-n", "thicket", &id_text]);
        run(&[
            "canister",
            "settings",
            "update",
            "-n",
            "thicket",
            &id_text,
            "--freezing-threshold",
            "1000",
            "--log-visibility",
            "public",
            "--log-memory-limit",
            "8192",
        ]);
        let updated = run(&["canister", "settings", "show", "-n", "thicket", &id_text]);
        run(&["canister", "stop", "-n", "thicket", &id_text]);
        let stopped = run(&["canister", "status", "-n", "thicket", &id_text]);
        run(&["canister", "start", "-n", "thicket", &id_text]);
        let again = run(&["canister", "call", "-n", "thicket", &id_text, "inc", "()"]);
        run(&["canister", "stop", "-n", "thicket", &id_text]);
        // Its cycles are burned with it (recovering them is the other test's).
        run(&[
            "canister",
            "delete",
            "-n",
            "thicket",
            &id_text,
            "--no-recover-cycles",
        ]);
        let gone = icp(&dir, &["canister", "status", "-n", "thicket", &id_text])
            .expect_err("a deleted canister has no status");
        (
            inc,
            get,
            status,
            settings,
            candid,
            logs,
            (updated, stopped, again, gone),
        )
    })
    .await
    .expect("joins");
    let (inc, get, status, settings, candid, logs, (updated, stopped, again, gone)) = out;
    for setting in [
        "Freezing threshold: 1_000",
        "Log visibility: Public",
        "Log memory limit: 8_192",
    ] {
        assert!(updated.contains(setting), "{updated}");
    }
    assert!(stopped.contains("Status: Stopped"), "{stopped}");
    assert!(again.contains("(2 : nat)"), "{again}");
    assert!(gone.contains("not found"), "{gone}");
    // What `inc` printed, fetched with the management canister's fetch_canister_logs query.
    assert!(logs.contains("count is 1"), "{logs}");
    assert!(inc.contains("(1 : nat)"), "{inc}");
    assert!(get.contains("(1 : nat)"), "{get}");
    // The anonymous identity (icp-cli's default) deployed it, so it is the controller.
    for text in [&status, &settings] {
        assert!(text.contains("controller: 2vxsx-fae"), "{text}");
        assert!(text.contains("Freezing threshold: 2_592_000"), "{text}");
    }
    assert!(status.contains("Status: Running"), "{status}");
    assert!(status.contains("Module hash: 0x"), "{status}");
    // The Motoko compiler's private candid:service section, read by its controller.
    assert!(candid.contains("inc: () -> (nat);"), "{candid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icp_cli_takes_restores_downloads_and_uploads_snapshots() {
    let agent = agent_for(1, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    let copy = create(&agent).await;
    let project = icp_project(1, &agent);
    let dir = project.path().to_path_buf();
    let (id_text, copy_text) = (id.to_text(), copy.to_text());
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| icp(&dir, args).unwrap_or_else(|e| panic!("{e}"));
        let on = |verb: &[&str], canister: &str, rest: &[&str]| {
            let mut args = vec!["canister"];
            args.extend_from_slice(verb);
            args.extend_from_slice(&[canister, "-n", "thicket"]);
            args.extend_from_slice(rest);
            run(&args)
        };
        on(&["call"], &id_text, &["inc", "()"]);
        on(&["call"], &id_text, &["inc", "()"]);
        // Stopped first, as icp-cli's guide says, then snapshotted at 2.
        on(&["stop"], &id_text, &[]);
        let snap = on(&["snapshot", "create"], &id_text, &["-q"])
            .trim()
            .to_string();
        on(&["start"], &id_text, &[]);
        let three = on(&["call"], &id_text, &["inc", "()"]);
        let listed = on(&["snapshot", "list"], &id_text, &[]);
        on(&["stop"], &id_text, &[]);
        on(&["snapshot", "restore"], &id_text, &[&snap]);
        on(&["start"], &id_text, &[]);
        let restored = on(&["call"], &id_text, &["get", "()", "--query"]);
        // Downloaded to files, uploaded to the empty canister, restored there.
        let files = dir.join("snapshot");
        let files_text = files.to_string_lossy().to_string();
        on(
            &["snapshot", "download"],
            &id_text,
            &[&snap, "-o", &files_text],
        );
        // (Its progress goes to stderr, which `icp` keeps with the output.)
        let upload = on(&["snapshot", "upload"], &copy_text, &["-i", &files_text]);
        let uploaded = upload
            .split("Created snapshot ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no snapshot id in {upload}"))
            .to_string();
        on(&["stop"], &copy_text, &[]);
        on(&["snapshot", "restore"], &copy_text, &[&uploaded]);
        on(&["start"], &copy_text, &[]);
        let copied = on(&["call"], &copy_text, &["inc", "()"]);
        on(&["snapshot", "delete"], &id_text, &[&snap]);
        let after = on(&["snapshot", "list"], &id_text, &[]);
        let status = on(&["status"], &id_text, &[]);
        let files: Vec<String> = std::fs::read_dir(&files)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        (
            snap,
            three,
            listed,
            restored,
            copied,
            (after, status, files),
        )
    })
    .await
    .expect("joins");
    let (snap, three, listed, restored, copied, (after, status, files)) = out;
    // The id: the canister's snapshot number 0 and its id, in hex.
    assert_eq!(
        snap,
        format!("0000000000000000{}", hex::encode(id.as_slice()))
    );
    assert!(three.contains("(3 : nat)"), "{three}");
    assert!(listed.contains(&snap), "{listed}");
    assert!(restored.contains("(2 : nat)"), "{restored}");
    for file in [
        "metadata.json",
        "wasm_module.bin",
        "wasm_memory.bin",
        "stable_memory.bin",
    ] {
        assert!(files.iter().any(|f| f == file), "{file} in {files:?}");
    }
    // The copy goes on from the snapshot's count.
    assert!(copied.contains("(3 : nat)"), "{copied}");
    assert!(!after.contains(&snap), "{after}");
    assert!(status.contains("Status: Running"), "{status}");
}

/// The first number in `text`, read with its `_` separators.
fn number(text: &str) -> u128 {
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '_')
        .filter(|c| *c != '_')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("no number in {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icp_cli_pays_for_canisters_with_cycles_from_the_ledger() {
    let agent = agent_for(3, None).await;
    let project = icp_project(3, &agent);
    let wasm_file = project.path().join("counter.wasm");
    std::fs::write(&wasm_file, counter_wasm()).expect("writes");
    let dir = project.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| icp(&dir, args).unwrap_or_else(|e| panic!("{e}"));
        let wasm = wasm_file.to_str().expect("utf-8 path");
        run(&["identity", "new", "alice", "--storage", "plaintext"]);
        let alice = run(&["identity", "principal", "--identity", "alice"]);
        let alice = alice.trim();
        // The faucet: the anonymous identity, icp-cli's default, holds cycles to give.
        let faucet = run(&["cycles", "balance", "-n", "thicket"]);
        let sent = run(&["cycles", "transfer", "10t", alice, "-n", "thicket"]);
        let as_alice = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["-n", "thicket", "--identity", "alice"]);
            run(&all)
        };
        let funded = as_alice(&["cycles", "balance"]);
        // `icp canister create` asks the CMC for a subnet, then pays the cycles ledger.
        let id = as_alice(&["canister", "create", "--detached", "-q"]);
        let id = id.trim().to_string();
        let paid = as_alice(&["cycles", "balance"]);
        let created = as_alice(&["canister", "status", &id]);
        as_alice(&["canister", "install", &id, "--wasm", wasm]);
        let first = as_alice(&["canister", "call", &id, "inc", "()"]);
        as_alice(&[
            "canister",
            "install",
            &id,
            "--wasm",
            wasm,
            "--mode",
            "reinstall",
        ]);
        let reinstalled = as_alice(&["canister", "call", &id, "get", "()", "--query"]);
        as_alice(&["canister", "top-up", "--amount", "1t", &id]);
        let topped = as_alice(&["canister", "status", &id]);
        let before = as_alice(&["cycles", "balance"]);
        as_alice(&["canister", "stop", &id]);
        // Deleting recovers the canister's cycles into alice's account first.
        let deleted = as_alice(&["canister", "delete", &id]);
        let after = as_alice(&["cycles", "balance"]);
        let gone = icp(
            &dir,
            &[
                "canister",
                "status",
                &id,
                "-n",
                "thicket",
                "--identity",
                "alice",
            ],
        )
        .expect_err("a deleted canister has no status");
        (
            alice.to_string(),
            (faucet, sent, funded, paid),
            (created, first, reinstalled, topped),
            (before, deleted, after, gone),
        )
    })
    .await
    .expect("joins");
    let (
        alice,
        (faucet, sent, funded, paid),
        (created, first, reinstalled, topped),
        (before, deleted, after, gone),
    ) = out;
    const T: u128 = 1_000_000_000_000;
    const FEE: u128 = 100_000_000;
    assert!(number(&faucet) > 1_000_000 * T, "{faucet}");
    assert!(sent.contains(&alice), "{sent}");
    assert_eq!(number(&funded), 10 * T, "{funded}");
    // icp-cli's default: 2T for the canister (less the 0.5T creation fee), and the fee.
    assert_eq!(number(&paid), 8 * T - FEE, "{paid}");
    assert!(
        created.contains(&format!("controller: {alice}")),
        "{created}"
    );
    assert!(created.contains("Cycles: 1_500_000_000_000"), "{created}");
    assert!(first.contains("(1 : nat)"), "{first}");
    // A reinstall starts the counter afresh.
    assert!(reinstalled.contains("(0 : nat)"), "{reinstalled}");
    assert!(topped.contains("Cycles: 2_500_000_000_000"), "{topped}");
    assert_eq!(number(&before), 7 * T - 2 * FEE, "{before}");
    assert!(deleted.contains("Recovered"), "{deleted}");
    // All but the 50B icp-cli's recovery leaves behind comes back.
    assert_eq!(
        number(&after),
        number(&before) + 2_450_000_000_000,
        "{after}"
    );
    assert!(gone.contains("not found"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_agent_pays_for_a_canister_from_the_cycles_ledger() {
    // What icp-cli does through ic-agent, by hand: the faucet (the anonymous principal) funds
    // an identity, the CMC names the subnet, the agent reads that subnet's certified state,
    // and the cycles ledger creates the canister for the identity.
    use icrc_ledger_types::icrc1::account::Account;
    use icrc_ledger_types::icrc1::transfer::{TransferArg, TransferError};
    #[derive(candid::CandidType)]
    struct CreateCanisterArgs {
        from_subaccount: Option<Vec<u8>>,
        created_at_time: Option<u64>,
        amount: Nat,
        creation_args: Option<CreationArgs>,
    }
    #[derive(candid::CandidType)]
    struct CreationArgs {
        settings: Option<CanisterSettings>,
        subnet_selection: Option<Selection>,
    }
    #[derive(candid::CandidType)]
    enum Selection {
        Subnet { subnet: Principal },
    }
    #[derive(candid::CandidType, candid::Deserialize, Debug)]
    struct Created {
        canister_id: Principal,
    }
    const T: u64 = 1_000_000_000_000;
    let ledger = Principal::from_text("um5iw-rqaaa-aaaaq-qaaba-cai").expect("principal");
    let cmc = Principal::from_text("rkp4c-7iaaa-aaaaa-aaaca-cai").expect("principal");
    let faucet = agent_for(1, None).await;
    let identity = Arc::new(ic_agent::identity::BasicIdentity::from_raw_key(&[5; 32]));
    let agent = agent_for(1, Some(identity)).await;
    let me = Account {
        owner: agent.get_principal().expect("principal"),
        subaccount: None,
    };
    let sent = faucet
        .update(&ledger, "icrc1_transfer")
        .with_arg(
            Encode!(&TransferArg {
                from_subaccount: None,
                to: me,
                fee: None,
                created_at_time: None,
                memo: None,
                amount: (10 * T).into(),
            })
            .expect("encodes"),
        )
        .call_and_wait()
        .await
        .expect("transferred");
    let sent = Decode!(&sent, Result<Nat, TransferError>).expect("a result");
    assert!(sent.is_ok(), "{sent:?}");
    let subnets = agent
        .query(&cmc, "get_default_subnets")
        .with_arg(Encode!().expect("encodes"))
        .call()
        .await
        .expect("the CMC answers");
    let subnets = Decode!(&subnets, Vec<Principal>).expect("subnets");
    let subnet = agent
        .get_subnet_by_id(&subnets[0])
        .await
        .expect("the subnet's certified state");
    assert_eq!(subnet.id(), subnets[0]);
    let created = agent
        .update(&ledger, "create_canister")
        .with_arg(
            Encode!(&CreateCanisterArgs {
                from_subaccount: None,
                created_at_time: None,
                amount: (2 * T).into(),
                creation_args: Some(CreationArgs {
                    settings: None,
                    subnet_selection: Some(Selection::Subnet { subnet: subnets[0] }),
                }),
            })
            .expect("encodes"),
        )
        .call_and_wait()
        .await
        .expect("created");
    let created = Decode!(&created, Result<Created, candid::Reserved>).expect("a result");
    let id = created.expect("the ledger created it").canister_id;
    install(&agent, id, counter_wasm()).await;
    assert_eq!(inc(&agent, id).await, 1u64);
    let balance = eventually(
        "the balance in a certified state",
        Duration::from_secs(30),
        || async {
            let reply = agent
                .query(&ledger, "icrc1_balance_of")
                .with_arg(Encode!(&me).expect("encodes"))
                .call()
                .await?;
            let n = Decode!(&reply, Nat).map_err(|e| AgentError::MessageError(e.to_string()))?;
            if n == 10 * T {
                Err(AgentError::MessageError("not paid yet".into()))
            } else {
                Ok(n)
            }
        },
    )
    .await;
    assert_eq!(balance, 8 * T - 100_000_000);
}

fn website_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        thicket_canister::motoko::compile_sample("Website").expect("Website compiles")
    })
}

/// Debian's Chromium: found on the `PATH`, or installed with apt when running as root. `None`
/// where it cannot be had (outside CI only: under `CI=true` its absence fails the test).
fn chromium() -> Option<std::path::PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("chromium"))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "-q", "--no-install-recommends", "chromium"];
    let _ = apt(&install) || (apt(&["update", "-q"]) && apt(&install));
    let found = find();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is needed under CI: apt-get install chromium failed"
        );
        eprintln!("skipped: no chromium, and apt-get could not install it");
    }
    found
}

/// What headless Chromium renders of `url` (the DOM after scripts ran).
fn render(chromium: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--timeout=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("runs chromium");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_canisters_website_only_as_certified() {
    let agent = agent_for(2, None).await;
    let id = deploy(&agent, website_wasm()).await;
    let base = subnet()[2].clone();
    let port = base.rsplit(':').next().expect("a port").to_string();
    let host = format!("{id}.localhost:{port}");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{base}{path}"))
            .header(reqwest::header::HOST, host.clone())
            .send()
    };
    // The page, once the state certifying it is certified.
    let page = eventually("the certified page", Duration::from_secs(30), || async {
        let r = get("/").await.map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status == 200 {
            Ok(text)
        } else {
            Err(format!("{status}: {text}"))
        }
    })
    .await;
    assert!(page.contains("Hello from a canister on Thicket"), "{page}");
    // The same by `?canisterId=` on the replica's own host.
    let r = http
        .get(format!("{base}/index.html?canisterId={id}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/html")
    );
    assert_eq!(r.text().await.expect("body"), page);
    // Under certification version 2, whose expression certifies the content type too.
    let v2 = get("/v2.html").await.expect("answers");
    assert_eq!(v2.status(), 200, "{:?}", v2.headers());
    assert!(
        v2.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/html")
    );
    assert_eq!(v2.text().await.expect("body"), page);
    // A body in six parts through the streaming callback, checked whole.
    let big = get("/big.txt").await.expect("answers");
    assert_eq!(big.status(), 200);
    let big = big.bytes().await.expect("body");
    assert_eq!(big.len(), 5 * 65536 + 1000);
    assert!(big.starts_with(b"certified, streamed, and whole: "));
    // A body the canister did not certify is refused, with the reason.
    let tampered = get("/tampered").await.expect("answers");
    assert_eq!(tampered.status(), 503);
    let why = tampered.text().await.expect("body");
    assert!(why.contains("failed certification"), "{why}");
    assert!(!why.contains("nobody certified"), "{why}");
    // An upgrade to `http_request_update`: a call through consensus, each counted.
    for n in 1..=2 {
        let visits = get("/visits").await.expect("answers");
        assert_eq!(visits.status(), 200);
        assert_eq!(visits.text().await.expect("body"), format!("visits: {n}"));
    }
    // A path naming no canister is still not served.
    let r = http
        .get(format!("{base}/nothing"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 404);

    // A browser: Chromium resolves `*.localhost` to this machine by itself.
    let Some(chromium) = chromium() else {
        return;
    };
    let url = format!("http://{host}/");
    let tampered_url = format!("http://{host}/tampered");
    let (dom, refused) = tokio::task::spawn_blocking(move || {
        (render(&chromium, &url), render(&chromium, &tampered_url))
    })
    .await
    .expect("joins");
    assert!(
        dom.contains(r#"<h1 id="greeting">Hello from a canister on Thicket</h1>"#),
        "{dom}"
    );
    assert!(refused.contains("failed certification"), "{refused}");
}

/// `wasm` with a custom section of `padding` pseudo-random bytes appended (not metadata: a
/// module's size alone, which compression cannot shrink).
fn padded(wasm: &[u8], padding: usize) -> Vec<u8> {
    let leb = |n: usize, out: &mut Vec<u8>| {
        leb128::write::unsigned(out, n as u64).expect("writes to a Vec");
    };
    let name = b"thicket-padding";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    let mut x: u32 = 0x9e37_79b9;
    body.extend((0..padding).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icp_cli_installs_a_module_too_large_for_one_message_through_chunks() {
    let agent = agent_for(1, None).await;
    let mgmt = Principal::management_canister();
    let id = create(&agent).await;
    let project = icp_project(1, &agent);
    // 3 MiB: more than a request may carry (2 MiB), so icp-cli uploads it in chunks.
    let big = padded(counter_wasm(), 3 << 20);
    let wasm_file = project.path().join("big.wasm");
    std::fs::write(&wasm_file, &big).expect("writes");
    let dir = project.path().to_path_buf();
    let id_text = id.to_text();
    let (installed, upgraded, status) = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| icp(&dir, args).unwrap_or_else(|e| panic!("{e}"));
        let wasm = wasm_file.to_str().expect("utf-8 path");
        let installed = run(&[
            "canister", "install", "-n", "thicket", &id_text, "--wasm", wasm,
        ]);
        run(&["canister", "call", "-n", "thicket", &id_text, "inc", "()"]);
        // An upgrade keeps the Motoko heap (enhanced orthogonal persistence).
        let upgraded = run(&[
            "canister", "install", "-n", "thicket", &id_text, "--wasm", wasm, "--mode", "upgrade",
        ]);
        let status = run(&["canister", "status", "-n", "thicket", &id_text]);
        (installed, upgraded, status)
    })
    .await
    .expect("joins");
    for out in [&installed, &upgraded] {
        assert!(!out.contains("rror"), "{out}");
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(&big));
    assert!(status.contains(&hash), "{status}");
    assert_eq!(
        inc(&agent, id).await,
        Nat::from(2u8),
        "the upgrade kept the count"
    );
    // The store, read back: icp-cli cleared it after installing.
    let stored = agent
        .update(&mgmt, "stored_chunks")
        .with_effective_canister_id(id)
        .with_arg(Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes"))
        .call_and_wait()
        .await
        .expect("stored_chunks");
    let stored = Decode!(&stored, Vec<ChunkHash>).expect("hashes");
    assert!(stored.is_empty(), "icp-cli clears the store once installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_agent_reads_status_and_logs_through_ic_utils() {
    // ic-utils' management canister, as Rust tools use it: its own Candid types (an older
    // version of the interface's crate) decode the current status record, and its
    // canister_status and fetch_canister_logs are queries sent to the canister's endpoint.
    use ic_utils::call::SyncCall;
    use ic_utils::interfaces::ManagementCanister;
    use ic_utils::interfaces::management_canister::{CanisterStatusType, FetchCanisterLogsArgs};
    let agent = agent_for(0, None).await;
    let id = deploy(&agent, counter_wasm()).await;
    inc(&agent, id).await;
    let mgmt = ManagementCanister::create(&agent);
    // As a query (ic-utils' default), then as a call.
    let (status,) = mgmt
        .canister_status(&id)
        .call()
        .await
        .expect("canister_status as a query");
    let (as_call,) = mgmt
        .canister_status(&id)
        .as_update()
        .call()
        .await
        .expect("canister_status as a call");
    assert_eq!(as_call.module_hash, status.module_hash);
    assert_eq!(status.status, CanisterStatusType::Running);
    use sha2::Digest;
    assert_eq!(
        status.module_hash,
        Some(sha2::Sha256::digest(counter_wasm()).to_vec())
    );
    assert_eq!(
        status.memory_metrics.wasm_binary_size,
        Nat::from(counter_wasm().len())
    );
    let args = FetchCanisterLogsArgs {
        canister_id: id,
        filter: None,
    };
    let log = eventually(
        "the log in a certified state",
        Duration::from_secs(30),
        || async {
            let (logs,) = mgmt.fetch_canister_logs(&args).call().await?;
            let texts: Vec<String> = logs
                .canister_log_records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.content).into_owned())
                .collect();
            if texts.is_empty() {
                Err(AgentError::MessageError("no record yet".into()))
            } else {
                Ok(texts)
            }
        },
    )
    .await;
    assert_eq!(log, ["count is 1"]);
}
