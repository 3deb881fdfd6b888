//! Valid inputs for each target, to start from: a fuzzer mutates them into the inputs a
//! decoder would not see from a well-behaved client or peer.

use candid::{Encode, Principal};
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::ingress::{IngressMessage, SignedIngress};
use thicket_types::state::{ChunkInfo, Manifest};
use thicket_types::{CryptoHash, Height, canonical_bytes};

use crate::{CMC_METHODS, LEDGER_METHODS, MANAGEMENT_METHODS, NOW_NS};

/// A module with what the decoders look at: an exported mutable global, a data segment, a
/// metadata section, a start function and a table.
pub fn small_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "ic0" "msg_reply" (func $reply))
  (memory (export "memory") 1)
  (global $g (export "g") (mut i32) (i32.const 7))
  (table 1 funcref)
  (elem (i32.const 0) $start)
  (data (i32.const 16) "hello")
  (func $start (global.set $g (i32.const 8)))
  (start $start)
  (func (export "canister_update go") (call $reply))
  (func (export "canister_query get") (call $reply))
  (@custom "icp:public candid:service" "service : { go : () -> () }"))"#,
    )
    .expect("the seed module's WAT")
}

/// `install_code`'s argument installing `wasm` on `id`.
pub fn install_args(id: Principal, wasm: &[u8]) -> Vec<u8> {
    use thicket_state::management::{InstallCodeArgs, InstallMode};
    Encode!(&InstallCodeArgs {
        mode: InstallMode::Install,
        canister_id: id,
        wasm_module: wasm.to_vec().into(),
        arg: b"DIDL\x00\x00".to_vec().into(),
        sender_canister_version: None,
    })
    .expect("encodes")
}

fn call() -> IngressMessage {
    IngressMessage {
        sender: vec![4],
        canister_id: vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
        method_name: "go".into(),
        arg: b"DIDL\x00\x00".to_vec(),
        ingress_expiry: NOW_NS + 60_000_000_000,
        nonce: Some(vec![1, 2, 3]),
    }
}

fn method_index(methods: &[&str], name: &str) -> u8 {
    methods.iter().position(|m| *m == name).unwrap_or(0) as u8
}

/// Seeds for target `name`.
pub fn for_target(name: &str) -> Vec<Vec<u8>> {
    let canister = thicket_state::ids::canister_id(thicket_state::ids::USER_RANGE.0);
    let record = Encode!(&thicket_state::management::CanisterIdRecord {
        canister_id: canister
    })
    .expect("encodes");
    match name {
        "call_envelope" => vec![thicket_replica::http::envelope::unsigned_envelope(&call())],
        "query_envelope" => {
            let call = thicket_replica::http::envelope::unsigned_envelope(&call());
            // The same fields with request_type "query".
            let at = call
                .windows(4)
                .position(|w| w == b"call")
                .expect("the request type");
            let mut query = call[..at].to_vec();
            query[at - 1] = 0x65; // a 5-byte text
            query.extend_from_slice(b"query");
            query.extend_from_slice(&call[at + 4..]);
            vec![query]
        }
        "artifact" => {
            let ingress = SignedIngress::anonymous(call()).to_bytes();
            let msg = ConsensusMessage::Ingress(ingress);
            let a = thicket_replica::wire::encode(&msg);
            vec![[a.id, a.body].concat()]
        }
        "manifest" => vec![canonical_bytes(&Manifest {
            height: Height(100),
            chunks: vec![
                ChunkInfo {
                    hash: CryptoHash([7; 32]),
                    size: 1 << 20,
                },
                ChunkInfo {
                    hash: CryptoHash([9; 32]),
                    size: 12,
                },
            ],
        })],
        "system_call" => vec![
            [
                &[0, method_index(MANAGEMENT_METHODS, "canister_status")][..],
                &record,
            ]
            .concat(),
            [
                &[
                    0,
                    method_index(MANAGEMENT_METHODS, "take_canister_snapshot"),
                ][..],
                &Encode!(&ic_snapshot_args(canister)).expect("encodes"),
            ]
            .concat(),
            [
                &[0, method_index(MANAGEMENT_METHODS, "update_settings")][..],
                &Encode!(&thicket_state::management::UpdateSettingsArgs {
                    canister_id: canister,
                    settings: thicket_state::management::CanisterSettings {
                        freezing_threshold: Some(1000u64.into()),
                        ..Default::default()
                    },
                    sender_canister_version: None,
                })
                .expect("encodes"),
            ]
            .concat(),
            [
                &[1, method_index(LEDGER_METHODS, "icrc1_balance_of")][..],
                &Encode!(&Account {
                    owner: Principal::anonymous(),
                    subaccount: None,
                })
                .expect("encodes"),
            ]
            .concat(),
            [
                &[2, method_index(CMC_METHODS, "get_subnet_for_canister")][..],
                &Encode!(&SubnetForCanister {
                    principal: Some(canister),
                })
                .expect("encodes"),
            ]
            .concat(),
        ],
        "wasm_module" => vec![small_module()],
        "read_state_envelope" => read_state_seeds(),
        "gateway_reply" => gateway_seeds(),
        _ => vec![],
    }
}

#[derive(candid::CandidType)]
struct Account {
    owner: Principal,
    subaccount: Option<Vec<u8>>,
}

#[derive(candid::CandidType)]
struct SubnetForCanister {
    principal: Option<Principal>,
}

#[derive(candid::CandidType)]
struct SnapshotArgs {
    canister_id: Principal,
    replace_snapshot: Option<Vec<u8>>,
    uninstall_code: Option<bool>,
    sender_canister_version: Option<u64>,
}

fn ic_snapshot_args(canister_id: Principal) -> SnapshotArgs {
    SnapshotArgs {
        canister_id,
        replace_snapshot: None,
        uninstall_code: None,
        sender_canister_version: None,
    }
}

/// `read_state` envelopes of the anonymous sender, each behind its endpoint byte (0: the
/// canister's, 1: the subnet's), reading each kind of path.
fn read_state_seeds() -> Vec<Vec<u8>> {
    let id = crate::canister().as_slice().to_vec();
    let l = |s: &str| s.as_bytes().to_vec();
    let canister_paths = vec![
        vec![vec![l("time")]],
        vec![
            vec![l("canister"), id.clone(), l("module_hash")],
            vec![l("canister"), id.clone(), l("controllers")],
        ],
        vec![vec![
            l("canister"),
            id.clone(),
            l("metadata"),
            l("candid:service"),
        ]],
        vec![
            vec![l("request_status"), vec![7; 32], l("status")],
            vec![l("request_status"), vec![7; 32], l("reply")],
        ],
        vec![vec![l("subnet")], vec![l("api_boundary_nodes")]],
    ];
    let subnet_paths = vec![
        vec![vec![l("subnet")]],
        vec![vec![l("canister_ranges")], vec![l("time")]],
    ];
    let endpoint =
        |byte: u8, paths: Vec<Vec<Vec<u8>>>| [vec![byte], read_state_envelope(paths)].concat();
    canister_paths
        .into_iter()
        .map(|p| endpoint(0, p))
        .chain(subnet_paths.into_iter().map(|p| endpoint(1, p)))
        .collect()
}

/// An unsigned `read_state` envelope (self-describing CBOR) reading `paths`.
fn read_state_envelope(paths: Vec<Vec<Vec<u8>>>) -> Vec<u8> {
    use ciborium::Value::{Array, Bytes, Integer, Text};
    let paths = paths
        .into_iter()
        .map(|p| Array(p.into_iter().map(Bytes).collect()))
        .collect();
    let content = vec![
        (Text("request_type".into()), Text("read_state".into())),
        (Text("sender".into()), Bytes(vec![4])),
        (Text("paths".into()), Array(paths)),
        (
            Text("ingress_expiry".into()),
            Integer((NOW_NS + 60_000_000_000).into()),
        ),
        (Text("nonce".into()), Bytes(vec![1, 2, 3])),
    ];
    thicket_replica::http::envelope::wrap(content)
}

/// The subnet's certificate that the canister's certified data is `data`, at [`NOW_NS`].
fn certificate(data: &[u8]) -> Vec<u8> {
    use thicket_crypto::threshold::{combine, sign_share};
    use thicket_types::artifacts::CertificationContent;
    let id = crate::canister().as_slice().to_vec();
    let mut t = thicket_state::tree::LabeledTree::subtree();
    t.insert(&[b"canister", &id, b"certified_data"], data.to_vec());
    t.insert(&[b"time"], thicket_state::tree::leb128(NOW_NS));
    let t = t.hashed();
    let root = CertificationContent {
        height: Height(1),
        root: CryptoHash(t.digest()),
    };
    let share = sign_share(&crate::subnet_key().1, &root.message());
    let signature = combine(&[(0, share)], 1).expect("one share of a 1-of-1 key");
    let witness = t.witness(&[
        vec![b"canister".to_vec(), id, b"certified_data".to_vec()],
        vec![b"time".to_vec()],
    ]);
    thicket_replica::certifier::encode_certificate(witness, &signature.to_bytes())
}

/// A canister's answer to `http_request`, as Candid (`streaming_strategy` a `Callback` with
/// this token, when given).
#[derive(candid::CandidType)]
struct HttpAnswer {
    status_code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    upgrade: Option<bool>,
    streaming_strategy: Option<Strategy>,
}

#[derive(candid::CandidType)]
enum Strategy {
    Callback {
        callback: StreamingCallback,
        token: Token,
    },
}

candid::define_function!(StreamingCallback : (Token) -> (Part) query);

#[derive(candid::CandidType, Clone)]
struct Token {
    key: String,
    index: u64,
}

#[derive(candid::CandidType)]
struct Part {
    body: Vec<u8>,
    token: Option<Token>,
}

fn answer(response: &ic_http_certification::HttpResponse, upgrade: Option<bool>) -> HttpAnswer {
    HttpAnswer {
        status_code: response.status_code().as_u16(),
        headers: response.headers().to_vec(),
        body: response.body().to_vec(),
        upgrade,
        streaming_strategy: None,
    }
}

/// Canisters' answers to `GET /`: certified with version 2 (full certification) and with
/// version 1 (`http_assets`), one asking for the update call, one streamed, and a streamed part.
fn gateway_seeds() -> Vec<Vec<u8>> {
    use base64::Engine;
    use ic_http_certification::utils::add_v2_certificate_header;
    use ic_http_certification::{
        CERTIFICATE_EXPRESSION_HEADER_NAME, DefaultCelBuilder, HttpCertification,
        HttpCertificationPath, HttpCertificationTree, HttpCertificationTreeEntry, HttpResponse,
    };
    use sha2::Digest;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    // Version 2: the request and the response certified, headers included.
    let cel = DefaultCelBuilder::full_certification().build();
    let mut v2 = HttpResponse::ok(
        b"<h1>thicket</h1>".to_vec(),
        vec![
            (CERTIFICATE_EXPRESSION_HEADER_NAME.into(), cel.to_string()),
            ("content-type".into(), "text/html".into()),
        ],
    )
    .build();
    let path = HttpCertificationPath::exact("/");
    let certification =
        HttpCertification::full(&cel, &crate::gateway_request(), &v2, None).expect("certifies");
    let entry = HttpCertificationTreeEntry::new(&path, certification);
    let mut tree = HttpCertificationTree::default();
    tree.insert(&entry);
    let witness = tree.witness(&entry, "/").expect("a witness");
    add_v2_certificate_header(
        &certificate(&tree.root_hash()),
        &mut v2,
        &witness,
        &path.to_expr_path(),
    );

    // Version 1: the body's hash under /http_assets/<path>.
    let body = b"hello, version 1".to_vec();
    let mut assets = thicket_state::tree::LabeledTree::subtree();
    assets.insert(
        &[b"http_assets", b"/"],
        sha2::Sha256::digest(&body).to_vec(),
    );
    let assets = assets.hashed();
    let mut tree_cbor = Vec::new();
    ciborium::into_writer(
        &ciborium::tag::Required::<_, 55799>(assets.full()),
        &mut tree_cbor,
    )
    .expect("encodes");
    let v1 = HttpResponse::ok(
        body,
        vec![(
            "IC-Certificate".into(),
            format!(
                "certificate=:{}:, tree=:{}:",
                b64(&certificate(&assets.digest())),
                b64(&tree_cbor)
            ),
        )],
    )
    .build();

    let token = Token {
        key: "/".into(),
        index: 1,
    };
    let streamed = HttpAnswer {
        streaming_strategy: Some(Strategy::Callback {
            callback: StreamingCallback::new(
                crate::canister(),
                "http_request_streaming_callback".into(),
            ),
            token: token.clone(),
        }),
        ..answer(&v2, None)
    };
    let part = Part {
        body: b" and more".to_vec(),
        token: Some(token),
    };
    let upgrade = answer(&HttpResponse::ok(Vec::new(), vec![]).build(), Some(true));
    vec![
        Encode!(&answer(&v2, None)).expect("encodes"),
        Encode!(&answer(&v1, None)).expect("encodes"),
        Encode!(&streamed).expect("encodes"),
        Encode!(&part).expect("encodes"),
        Encode!(&upgrade).expect("encodes"),
    ]
}
