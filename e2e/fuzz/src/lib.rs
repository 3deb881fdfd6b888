//! Fuzz targets: each takes any bytes, as a client or a peer could send them, through a
//! decoder of the replica, and must neither panic nor hang; where the decoder's result has a
//! property to keep, the target checks it.
//!
//! The same functions run three ways:
//! - coverage-guided under libFuzzer: `e2e/fuzz/run <target> <seconds>` (cargo-fuzz, in
//!   `e2e/fuzz/libfuzzer/`, with its own target directory);
//! - over the committed corpora and seeded mutations of them, in `cargo test -p thicket-fuzz`
//!   (the bounded run every CI run makes);
//! - each crash found becomes a file in `e2e/fuzz/regressions/<target>/`, replayed by that
//!   same test.
//!
//! # Layout
//! - [`TARGETS`]: the targets by name; [`seeds`]: valid inputs to start from.

use std::sync::OnceLock;

use candid::Principal;
use thicket_crypto::threshold::SecretShare;
use thicket_execution::{Batch, StateMachine};
use thicket_proto::p2p::Artifact;
use thicket_state::SubnetState;
use thicket_state::tree::HashedTree;
use thicket_types::Height;
use thicket_types::ingress::{IngressMessage, SignedIngress};

pub mod seeds;

/// A target: a name and the function that takes the bytes.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("call_envelope", call_envelope),
    ("query_envelope", query_envelope),
    ("artifact", artifact),
    ("manifest", manifest),
    ("system_call", system_call),
    ("wasm_module", wasm_module),
    ("read_state_envelope", read_state_envelope),
    ("gateway_reply", gateway_reply),
];

/// A fixed "now" for expiry checks, so that a run is repeatable.
pub const NOW_NS: u64 = 1_800_000_000_000_000_000;

/// A call envelope posted for a canister (the URL's canister is the first 10 bytes' canister
/// when the body names one): CBOR decoding, request id, signatures and delegations.
pub fn call_envelope(data: &[u8]) {
    let url_canister = [0u8, 0, 0, 0, 0, 0, 0, 1, 1, 1];
    if let Ok(signed) = thicket_replica::http::envelope::check_call(data, &url_canister, NOW_NS) {
        // What was accepted encodes and decodes back to itself (the pool and blocks carry it).
        let bytes = signed.to_bytes();
        let again = SignedIngress::from_bytes(&bytes).expect("an accepted call re-decodes");
        assert_eq!(again.content.request_id(), signed.content.request_id());
    }
}

/// A query envelope: decoding, request id, the sender's proof and expiry.
pub fn query_envelope(data: &[u8]) {
    let _ = thicket_replica::http::envelope::check_query(data, NOW_NS);
}

/// The subnet key of the targets that check certificates, dealt from a fixed seed: its
/// DER-encoded public key, and the secret that signs the seeds' certificates.
pub fn subnet_key() -> &'static (Vec<u8>, SecretShare) {
    static KEY: OnceLock<(Vec<u8>, SecretShare)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0x0074_6869_636b_6574);
        let (coefficients, mut shares) = thicket_crypto::threshold::deal_trusted(&mut rng, 1, 1);
        (coefficients.public_key().to_der(), shares.remove(0))
    })
}

/// The certified state tree of [`base_state`], as `read_state` reads it.
pub fn state_tree() -> &'static HashedTree {
    static TREE: OnceLock<HashedTree> = OnceLock::new();
    TREE.get_or_init(|| {
        let subnet = thicket_state::SubnetInfo::new(subnet_key().0.clone(), &[[1; 32]]);
        thicket_state::CertifiedTrees::default().tree(base_state(), &subnet)
    })
}

/// The canister of [`base_state`].
pub fn canister() -> Principal {
    thicket_state::ids::canister_id(thicket_state::ids::USER_RANGE.0)
}

/// A `read_state` request: the first byte picks the endpoint (even: the canister's, odd: the
/// subnet's), the rest is the envelope. What is accepted is then read from the certified state
/// tree: the witness of its paths has the tree's root, so the subnet's signature covers it.
pub fn read_state_envelope(data: &[u8]) {
    let Some((&endpoint, body)) = data.split_first() else {
        return;
    };
    let id = canister();
    let on = (endpoint % 2 == 0).then_some(id.as_slice());
    if let Ok(r) = thicket_replica::http::read_state::check_read_state(body, on, NOW_NS) {
        let mut paths = r.paths;
        paths.push(vec![b"time".to_vec()]);
        let witness = state_tree().witness(&paths);
        assert_eq!(witness.digest(), state_tree().digest());
        let _ = thicket_replica::certifier::encode_certificate(witness, &[0; 48]);
    }
}

/// The request the gateway target's answers are for: `GET /`, as the gateway asks for it.
pub fn gateway_request() -> ic_http_certification::HttpRequest<'static> {
    ic_http_certification::HttpRequest::get("/")
        .with_certificate_version(2)
        .build()
}

/// A canister's Candid reply to the gateway's `http_request` (`GET /`): read as the gateway
/// reads it (and as a part of a streamed body), then checked with the IC's response
/// verification against [`subnet_key`], certificate and tree from its `IC-Certificate` header.
pub fn gateway_reply(data: &[u8]) {
    use thicket_replica::http::gateway;
    let _ = gateway::read_part(data);
    let Ok(answer) = gateway::read_answer(data) else {
        return;
    };
    if answer.upgrade {
        return;
    }
    let body = answer.body.clone();
    if let Ok(passed) = gateway::verify_answer(
        gateway_request(),
        &canister(),
        answer,
        &subnet_key().0,
        NOW_NS,
    ) {
        assert_eq!(passed.body, body, "the verified body is the canister's");
    }
}

/// An artifact from a peer: an id (the first 32 bytes) and the canonical encoding (the rest).
pub fn artifact(data: &[u8]) {
    let (id, body) = data.split_at(data.len().min(32));
    let a = Artifact {
        id: id.to_vec(),
        body: body.to_vec(),
    };
    if let Ok((id, msg)) = thicket_replica::wire::decode(&a) {
        assert_eq!(msg.id(), id);
        // Re-encoded, it is the same artifact.
        let again = thicket_replica::wire::encode(&msg);
        assert_eq!(
            thicket_replica::wire::decode(&again).map(|(i, _)| i),
            Ok(id)
        );
    }
}

/// A checkpoint manifest from a peer (state sync).
pub fn manifest(data: &[u8]) {
    let _ = thicket_replica::wire::decode_manifest(data);
}

/// The state the system-call target starts from: genesis with one canister, controlled by the
/// anonymous principal, holding a small module.
pub fn base_state() -> &'static SubnetState {
    static BASE: OnceLock<SubnetState> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut s = SubnetState::genesis();
        let create =
            candid::encode_one(thicket_state::management::ProvisionalCreateCanisterArgs::default())
                .expect("encodes");
        execute(
            &mut s,
            1,
            Principal::management_canister(),
            "provisional_create_canister_with_cycles",
            create,
        );
        let install = seeds::install_args(canister(), &seeds::small_module());
        execute(
            &mut s,
            2,
            Principal::management_canister(),
            "install_code",
            install,
        );
        s
    })
}

fn execute(s: &mut SubnetState, height: u64, canister: Principal, method: &str, arg: Vec<u8>) {
    let msg = IngressMessage {
        sender: Principal::anonymous().as_slice().to_vec(),
        canister_id: canister.as_slice().to_vec(),
        method_name: method.into(),
        arg,
        ingress_expiry: NOW_NS + 60_000_000_000,
        nonce: Some(height.to_be_bytes().to_vec()),
    };
    let bytes = SignedIngress::anonymous(msg).to_bytes();
    s.execute(&Batch {
        height: Height(height),
        time_ns: NOW_NS,
        ingress: vec![&bytes],
    });
}

/// The methods the system-call target calls, by canister.
pub const MANAGEMENT_METHODS: &[&str] = &[
    "provisional_create_canister_with_cycles",
    "provisional_top_up_canister",
    "install_code",
    "install_chunked_code",
    "upload_chunk",
    "stored_chunks",
    "clear_chunk_store",
    "uninstall_code",
    "update_settings",
    "canister_status",
    "fetch_canister_logs",
    "stop_canister",
    "start_canister",
    "delete_canister",
    "take_canister_snapshot",
    "load_canister_snapshot",
    "list_canister_snapshots",
    "delete_canister_snapshot",
    "read_canister_snapshot_metadata",
    "read_canister_snapshot_data",
    "upload_canister_snapshot_metadata",
    "upload_canister_snapshot_data",
];
pub const LEDGER_METHODS: &[&str] = &[
    "icrc1_transfer",
    "icrc1_balance_of",
    "icrc2_approve",
    "icrc2_allowance",
    "icrc2_transfer_from",
    "withdraw",
    "withdraw_from",
    "create_canister",
    "create_canister_from",
];
pub const CMC_METHODS: &[&str] = &["get_subnet_for_canister", "get_default_subnets"];

/// A call to a system canister with any argument: the first byte picks the canister, the
/// second the method, the rest is the Candid argument. It runs in a batch on a state with one
/// canister; a call that fails changes nothing and answers a reject.
pub fn system_call(data: &[u8]) {
    let (Some(&which), Some(&m), arg) = (data.first(), data.get(1), data.get(2..).unwrap_or(&[]))
    else {
        return;
    };
    let (canister, methods) = match which % 3 {
        0 => (Principal::management_canister(), MANAGEMENT_METHODS),
        1 => (thicket_state::system::cycles_ledger(), LEDGER_METHODS),
        _ => (
            thicket_state::system::cycles_minting_canister(),
            CMC_METHODS,
        ),
    };
    let method = methods[m as usize % methods.len()];
    let mut s = base_state().clone();
    execute(&mut s, 3, canister, method, arg.to_vec());
    // Whatever the call did, the state still encodes and decodes to itself.
    let bytes = s.encode();
    let again = SubnetState::decode(&bytes).expect("the state decodes");
    assert_eq!(again.encode(), bytes);
}

/// A Wasm module as `install_code` gets it: its custom sections and metadata, its data
/// segments, its mutable globals, and the rewriting the runtime does before compiling. A valid
/// module stays valid once rewritten.
pub fn wasm_module(data: &[u8]) {
    let _ = thicket_canister::module_info::metadata(data);
    let _ = thicket_canister::module_info::exported_mutable_globals(data);
    if let Ok(info) = thicket_canister::ModuleInfo::parse(data) {
        let _ = info.keeps_main_memory();
        // (A module may declare gigabytes of initial memory, which an upgrade keeping the
        // heap then holds: not allocated here.)
        if info.initial_memory_bytes.is_some_and(|b| b <= 16 << 20) {
            let mut heap = vec![0u8; 65536];
            let _ = info.apply_data_segments(&mut heap);
        }
    }
    let valid = wasmparser::Validator::new().validate_all(data).is_ok();
    if let Ok(prepared) = thicket_canister::module_info::prepare(data)
        && valid
    {
        wasmparser::Validator::new()
            .validate_all(&prepared.wasm)
            .expect("a valid module stays valid once prepared");
    }
}
