//! A canister's life on the subnet state machine, through ingress batches as consensus
//! delivers them: provisional creation, install, update calls, queries, upgrades (memory kept
//! with `wasm_memory_persistence = keep`, refused without it), controllers, stop/start/delete,
//! traps and endless loops that change nothing, modules that are not valid, and calls between
//! canisters. The canisters are written in WAT, so these tests need no npm; Motoko canisters
//! go through the same paths in the replica's agent tests (`replica/daemon/tests/agent.rs`).

use candid::{Decode, Encode, Principal};
use serde_bytes::ByteBuf;
use thicket_execution::{Batch, IngressStatus, StateMachine};
use thicket_state::SubnetState;
use thicket_state::ids::canister_id;
use thicket_state::management::*;
use thicket_types::Height;

mod common;

use common::*;

const NO_ARGS: fn() -> Vec<u8> = || b"DIDL\x00\x00".to_vec();

fn keep() -> InstallMode {
    InstallMode::Upgrade(Some(UpgradeOptions {
        skip_pre_upgrade: None,
        wasm_memory_persistence: Some(WasmMemoryPersistence::Keep),
    }))
}

/// A counter: `inc` and `get` answer the count as a Candid `nat` (below 128: one LEB128 byte),
/// `inc_then_trap` counts and traps, `spin` never ends. Marked for enhanced orthogonal
/// persistence as Motoko marks its canisters, so upgrades must keep its heap.
const COUNTER: &str = r#"(module
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "DIDL\00\01\7d")
  (data (i32.const 16) "refusing on purpose")
  ;; the count is at 100
  (func $reply_count
    (i32.store8 (i32.const 7) (i32.load (i32.const 100)))
    (call $append (i32.const 0) (i32.const 8))
    (call $reply))
  (func $count (i32.store (i32.const 100) (i32.add (i32.load (i32.const 100)) (i32.const 1))))
  (func (export "canister_update inc") (call $count) (call $reply_count))
  (func (export "canister_query get") (call $reply_count))
  (func (export "canister_update inc_then_trap") (call $count) (call $trap (i32.const 16) (i32.const 19)))
  (func (export "canister_update spin") (loop $forever (br $forever)))
  (@custom "icp:private enhanced-orthogonal-persistence" ""))"#;

#[test]
fn a_canister_through_its_lifecycle() {
    let wasm = wat::parse_str(COUNTER).expect("wat");
    let mut s = Subnet::new();
    let mgmt = Principal::management_canister();

    let id = s.create(ANON);
    // Users' canisters start above the NNS range (where IC tools look for system canisters).
    assert_eq!(id, canister_id(0x100_0000));
    assert_eq!(id.to_text(), "i3flu-baaaa-aaaai-aaaaa-cai");

    // Calling the empty canister is refused.
    let (code, msg, err) = s.rejected(ANON, &id, "inc", NO_ARGS());
    assert_eq!((code, err.as_str()), (5, "IC0537"), "{msg}");

    // Only a controller installs.
    let (code, msg, err) = match s.install(OTHER, id, InstallMode::Install, &wasm) {
        IngressStatus::Rejected {
            code,
            message,
            error_code,
            ..
        } => (code, message, error_code),
        other => panic!("{other:?}"),
    };
    assert_eq!((code, err.as_deref()), (5, Some("IC0512")), "{msg}");
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &wasm),
        IngressStatus::Replied { .. }
    ));
    // Installing twice is refused.
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &wasm),
        IngressStatus::Rejected { code: 5, .. }
    ));

    for n in 1..=2u8 {
        let reply = s.ok(ANON, &id, "inc", NO_ARGS());
        assert_eq!(
            Decode!(&reply, candid::Nat).expect("nat"),
            candid::Nat::from(n)
        );
    }
    assert_eq!(s.count(&id), 2);

    // A trap rolls back its message; an endless loop is cut and changes nothing.
    let (code, msg, err) = s.rejected(ANON, &id, "inc_then_trap", NO_ARGS());
    assert_eq!(
        (code, err.as_str()),
        (5, "IC0503"),
        "ic0.trap is CanisterCalledTrap"
    );
    assert!(msg.contains("refusing on purpose"), "{msg}");
    let (code, msg, err) = s.rejected(ANON, &id, "spin", NO_ARGS());
    assert_eq!((code, err.as_str()), (5, "IC0522"), "{msg}");
    assert!(msg.contains("instruction limit"), "{msg}");
    let (code, _, err) = s.rejected(ANON, &id, "no_such_method", NO_ARGS());
    assert_eq!((code, err.as_str()), (5, "IC0536"));
    assert_eq!(s.count(&id), 2);

    // Upgrades: enhanced orthogonal persistence needs `keep`, and keeps the heap.
    let (code, msg) = match s.install(ANON, id, InstallMode::Upgrade(None), &wasm) {
        IngressStatus::Rejected { code, message, .. } => (code, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(code, 5);
    assert!(msg.contains("wasm_memory_persistence"), "{msg}");
    assert_eq!(s.count(&id), 2);
    assert!(
        matches!(
            s.install(OTHER, id, keep(), &wasm),
            IngressStatus::Rejected { code: 5, .. }
        ),
        "a non-controller cannot upgrade"
    );
    let up = s.install(ANON, id, keep(), &wasm);
    assert!(matches!(up, IngressStatus::Replied { .. }), "{up:?}");
    assert_eq!(s.count(&id), 2, "the upgrade kept the counter");
    s.ok(ANON, &id, "inc", NO_ARGS());
    assert_eq!(s.count(&id), 3);
    // Reinstall starts over.
    assert!(matches!(
        s.install(ANON, id, InstallMode::Reinstall, &wasm),
        IngressStatus::Replied { .. }
    ));
    assert_eq!(s.count(&id), 0);
    s.ok(ANON, &id, "inc", NO_ARGS());

    // Settings and status: hand the canister to OTHER.
    let controllers = vec![Principal::from_slice(OTHER)];
    let update = Encode!(&UpdateSettingsArgs {
        canister_id: id,
        settings: CanisterSettings {
            controllers: Some(controllers.clone()),
            ..CanisterSettings::default()
        },
        sender_canister_version: None,
    })
    .expect("encodes");
    s.ok(ANON, &mgmt, "update_settings", update);
    let rec = || Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes");
    assert_eq!(
        s.rejected(ANON, &mgmt, "canister_status", rec()).2,
        "IC0512"
    );
    let status = Decode!(
        &s.ok(OTHER, &mgmt, "canister_status", rec()),
        CanisterStatusResult
    )
    .expect("status");
    assert_eq!(status.status, CanisterStatusType::Running);
    assert_eq!(status.settings.controllers, controllers);
    assert_eq!(status.module_hash, Some(sha256(&wasm)));
    // The current interface's fields: the version (install, upgrade, reinstall, then the
    // settings change), the memory by part, the settings this replica keeps at defaults.
    assert_eq!(status.version, 4);
    assert_eq!(
        status.memory_metrics.wasm_binary_size,
        candid::Nat::from(wasm.len())
    );
    assert_eq!(status.settings.log_visibility, LogVisibility::Controllers);
    assert!(status.settings.environment_variables.is_empty());
    // A setting of the interface this replica cannot keep yet is refused, not dropped.
    let minimum = Encode!(&UpdateSettingsArgs {
        canister_id: id,
        settings: CanisterSettings {
            minimum_incoming_canister_call_cycles: Some(5u64.into()),
            ..CanisterSettings::default()
        },
        sender_canister_version: None,
    })
    .expect("encodes");
    let (_, message, code) = s.rejected(OTHER, &mgmt, "update_settings", minimum);
    assert_eq!(code, "IC0408");
    assert!(
        message.contains("minimum_incoming_canister_call_cycles"),
        "{message}"
    );

    // Stop, start, delete.
    assert_eq!(
        s.rejected(OTHER, &mgmt, "delete_canister", rec()).2,
        "IC0510"
    );
    s.ok(OTHER, &mgmt, "stop_canister", rec());
    assert_eq!(s.rejected(ANON, &id, "inc", NO_ARGS()).2, "IC0508");
    s.ok(OTHER, &mgmt, "start_canister", rec());
    s.ok(ANON, &id, "inc", NO_ARGS());
    assert_eq!(s.count(&id), 2);
    s.ok(OTHER, &mgmt, "stop_canister", rec());
    s.ok(OTHER, &mgmt, "delete_canister", rec());
    assert_eq!(s.rejected(ANON, &id, "inc", NO_ARGS()).2, "IC0301");

    // The state (canisters and all) round-trips through its checkpoint encoding.
    let again = SubnetState::decode(&s.state.encode()).expect("decodes");
    assert_eq!(again, s.state);
}

#[test]
fn bad_management_calls_are_rejected_and_change_nothing() {
    let mut s = Subnet::new();
    let mgmt = Principal::management_canister();
    let id = s.create(ANON);
    let before = s.state.canister(&id).cloned();

    let not_wasm = s.install(
        ANON,
        id,
        InstallMode::Install,
        b"\0asm\x01\0\0\0\x05garbage",
    );
    assert!(
        matches!(&not_wasm, IngressStatus::Rejected { code: 5, error_code: Some(e), .. } if e == "IC0505"),
        "{not_wasm:?}"
    );
    let (code, msg, _) = s.rejected(
        ANON,
        &mgmt,
        "install_code",
        b"DIDL\x00\x01\x71\x01x".to_vec(),
    );
    assert_eq!(code, 4, "{msg}");
    assert!(msg.contains("decoding"), "{msg}");
    assert_eq!(s.rejected(ANON, &mgmt, "no_such_method", NO_ARGS()).0, 4);
    // An out-of-range id cannot be specified.
    let far = ProvisionalCreateCanisterArgs {
        specified_id: Some(canister_id(1 << 40)),
        ..Default::default()
    };
    assert_eq!(
        s.rejected(
            ANON,
            &mgmt,
            "provisional_create_canister_with_cycles",
            Encode!(&far).expect("encodes")
        )
        .2,
        "IC0405"
    );
    // A module exporting a `canister_` name the IC does not know is refused.
    let odd = wat::parse_str(r#"(module (func (export "canister_bogus")))"#).expect("wat");
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &odd),
        IngressStatus::Rejected { code: 5, .. }
    ));
    assert_eq!(s.state.canister(&id).cloned(), before);

    // A gzip-compressed module installs like the plain one.
    let wat = wat::parse_str(
        r#"(module (import "ic0" "msg_reply" (func $reply)) (memory (export "memory") 1)
             (func (export "canister_update ping") (call $reply)))"#,
    )
    .expect("wat");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &wat).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &gz),
        IngressStatus::Replied { .. }
    ));
    assert_eq!(s.ok(OTHER, &id, "ping", Vec::new()), Vec::<u8>::new());
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

#[test]
fn the_certified_tree_shows_statuses_canisters_and_the_subnet() {
    use ic_certification::LookupResult;
    use thicket_state::SubnetInfo;

    let mut s = Subnet::new();
    let id = s.create(ANON);
    s.rejected(ANON, &id, "inc", NO_ARGS());
    let subnet = SubnetInfo::new(vec![7; 133], &[[1; 32], [2; 32]]);
    let tree = s.state.certified_tree(&subnet).hashed();
    let ids: Vec<_> = s.state.history().keys().copied().collect();
    assert_eq!(ids.len(), 2);

    let sid = subnet.subnet_id.as_slice().to_vec();
    let paths = vec![
        vec![b"request_status".to_vec(), ids[0].0.to_vec()],
        vec![b"request_status".to_vec(), ids[1].0.to_vec()],
        vec![b"request_status".to_vec(), vec![0xff; 32]],
        vec![
            b"canister".to_vec(),
            id.as_slice().to_vec(),
            b"controllers".to_vec(),
        ],
        vec![b"subnet".to_vec()],
        vec![b"time".to_vec()],
    ];
    let w = tree.witness(&paths);
    assert_eq!(w.digest(), tree.digest());
    let statuses: Vec<_> = ids
        .iter()
        .map(
            |i| match w.lookup_path([&b"request_status"[..], &i.0, b"status"]) {
                LookupResult::Found(v) => v.to_vec(),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert!(statuses.contains(&b"replied".to_vec()) && statuses.contains(&b"rejected".to_vec()));
    assert_eq!(
        w.lookup_path([&b"request_status"[..], &[0xff; 32], b"status"]),
        LookupResult::Absent
    );
    let LookupResult::Found(controllers) =
        w.lookup_path([&b"canister"[..], id.as_slice(), b"controllers"])
    else {
        panic!("controllers revealed");
    };
    let decoded: ciborium::Value = ciborium::from_reader(controllers).expect("CBOR");
    assert_eq!(
        decoded,
        ciborium::Value::Tag(
            55799,
            Box::new(ciborium::Value::Array(vec![ciborium::Value::Bytes(
                ANON.to_vec()
            )]))
        )
    );
    assert_eq!(
        w.lookup_path([&b"subnet"[..], &sid, b"public_key"]),
        LookupResult::Found(&[7u8; 133][..])
    );
    for (node, der) in &subnet.nodes {
        assert_eq!(
            w.lookup_path([
                &b"subnet"[..],
                &sid,
                b"node",
                node.as_slice(),
                b"public_key"
            ]),
            LookupResult::Found(der.as_slice())
        );
        assert_eq!(der.len(), 44);
    }
    assert!(matches!(
        w.lookup_path([&b"time"[..]]),
        LookupResult::Found(_)
    ));
    // Module hashes were not asked for.
    assert_eq!(
        w.lookup_path([&b"canister"[..], id.as_slice(), b"certified_data"]),
        LookupResult::Unknown
    );
    // The subnet answers for the NNS range, the users' range and the cycles ledger's range.
    let LookupResult::Found(ranges) = w.lookup_path([&b"subnet"[..], &sid, b"canister_ranges"])
    else {
        panic!("canister ranges revealed");
    };
    let ciborium::Value::Tag(55799, ranges) = ciborium::from_reader(ranges).expect("CBOR") else {
        panic!("self-described CBOR");
    };
    let text = |v: &ciborium::Value| match v {
        ciborium::Value::Bytes(b) => Principal::from_slice(b).to_text(),
        other => panic!("{other:?}"),
    };
    let ranges: Vec<(String, String)> = ranges
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            let r = r.as_array().expect("a pair");
            (text(&r[0]), text(&r[1]))
        })
        .collect();
    let cycles_ledger = Principal::from_text("um5iw-rqaaa-aaaaq-qaaba-cai").expect("id");
    let index = thicket_state::ids::canister_index(&cycles_ledger).expect("a canister id");
    let (lo, hi) = thicket_state::ids::CANISTER_RANGES[2];
    assert!((lo..=hi).contains(&index));
    assert_eq!(
        ranges,
        [
            ("rwlgt-iiaaa-aaaaa-aaaaa-cai", "n5n4y-3aaaa-aaaaa-p777q-cai"),
            ("i3flu-baaaa-aaaai-aaaaa-cai", "uqdr7-siaaa-aaaai-p777q-cai"),
            ("uc7f6-kaaaa-aaaaq-qaaaa-cai", "ijz7v-ziaaa-aaaaq-7777q-cai"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn an_upgrade_whose_data_lies_outside_its_memory_is_refused_and_changes_nothing() {
    let eop = |body: &str| {
        wat::parse_str(format!(
            r#"(module (@custom "icp:private enhanced-orthogonal-persistence" "")
                 (memory (export "memory") 1) {body})"#
        ))
        .expect("wat")
    };
    let mut s = Subnet::new();
    let id = s.create(ANON);
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &eop("")),
        IngressStatus::Replied { .. }
    ));
    let before = s.state.canister(&id).cloned();
    for bad in [
        r#"(data (i32.const 70000) "x")"#,
        r#"(data (i32.const 0xFFFFFFFF) "xy")"#,
    ] {
        let status = s.install(ANON, id, keep(), &eop(bad));
        assert!(
            matches!(&status, IngressStatus::Rejected { code: 5, error_code: Some(e), .. } if e == "IC0505"),
            "{status:?}"
        );
        assert_eq!(s.state.canister(&id).cloned(), before);
    }
}

const PING: &str = r#"(module
  (import "ic0" "msg_arg_data_size" (func $arg_size (result i32)))
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i32 i32 i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "msg_reject" (func $reject (param i32 i32)))
  (import "ic0" "canister_self_size" (func $self_size (result i32)))
  (import "ic0" "canister_self_copy" (func $self_copy (param i32 i32 i32)))
  (import "ic0" "call_new" (func $call_new (param i32 i32 i32 i32 i32 i32 i32 i32)))
  (import "ic0" "call_data_append" (func $call_data (param i32 i32)))
  (import "ic0" "call_on_cleanup" (func $on_cleanup (param i32 i32)))
  (import "ic0" "call_perform" (func $perform (result i32)))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (memory (export "memory") 1)
  (table 4 funcref)
  (elem (i32.const 0) $pass_reply $pass_reject $trap_reply $cleanup)
  (data (i32.const 40) "ping")
  (data (i32.const 48) "rejected")
  (data (i32.const 120) "on purpose")
  ;; 0: n, 4..14: the peer; 64: n - 1, 68..: our id (the argument of the next hop)
  (func $call_peer (param $reply i32) (param $cleanup i32)
    (call $arg_copy (i32.const 0) (i32.const 0) (call $arg_size))
    (i32.store (i32.const 64) (i32.sub (i32.load (i32.const 0)) (i32.const 1)))
    (call $self_copy (i32.const 68) (i32.const 0) (call $self_size))
    (call $call_new (i32.const 4) (i32.sub (call $arg_size) (i32.const 4)) (i32.const 40) (i32.const 4)
      (local.get $reply) (i32.const 0) (i32.const 1) (i32.const 0))
    (call $call_data (i32.const 64) (i32.add (i32.const 4) (call $self_size)))
    (if (local.get $cleanup) (then (call $on_cleanup (i32.const 3) (i32.const 0))))
    (drop (call $perform)))
  (func (export "canister_update ping")
    (call $arg_copy (i32.const 0) (i32.const 0) (i32.const 4))
    (if (i32.eqz (i32.load (i32.const 0)))
      (then (call $append (i32.const 0) (i32.const 4)) (call $reply) (return)))
    (call $call_peer (i32.const 0) (i32.const 0)))
  (func (export "canister_update fail_in_callback")
    (call $call_peer (i32.const 2) (i32.const 1)))
  (func $pass_reply (param i32)
    (call $arg_copy (i32.const 0) (i32.const 0) (call $arg_size))
    (call $append (i32.const 0) (call $arg_size))
    (call $reply))
  (func $pass_reject (param i32)
    (call $reject (i32.const 48) (i32.const 8)))
  (func $trap_reply (param i32)
    (i32.store (i32.const 204) (i32.const 1))
    (call $trap (i32.const 120) (i32.const 10)))
  (func $cleanup (param i32)
    (i32.store (i32.const 200) (i32.add (i32.load (i32.const 200)) (i32.const 1))))
  (func (export "canister_query state")
    (call $append (i32.const 200) (i32.const 8))
    (call $reply)))"#;

fn ping_arg(n: u32, peer: &Principal) -> Vec<u8> {
    [&n.to_le_bytes()[..], peer.as_slice()].concat()
}

#[test]
fn a_trapping_callback_runs_its_cleanup_and_stopping_waits_for_open_calls() {
    let wasm = wat::parse_str(PING).expect("wat");
    let mut s = Subnet::new();
    let (a, b) = (s.create(ANON), s.create(ANON));
    for id in [a, b] {
        let installed = s.install(ANON, id, InstallMode::Install, &wasm);
        assert!(
            matches!(installed, IngressStatus::Replied { .. }),
            "{installed:?}"
        );
    }

    // A short chain completes within one batch.
    let reply = s.ok(ANON, &a, "ping", ping_arg(5, &b));
    assert_eq!(reply, 0u32.to_le_bytes());

    // The reply callback traps: its change is rolled back, the cleanup's is kept, and the
    // caller gets the trap.
    let (code, msg, err) = s.rejected(ANON, &a, "fail_in_callback", ping_arg(1, &b));
    assert_eq!((code, err.as_str()), (5, "IC0503"), "{msg}");
    assert!(msg.contains("on purpose"), "{msg}");
    let state = s.query(&a, "state");
    assert_eq!(state, [1, 0, 0, 0, 0, 0, 0, 0], "one cleanup, and no mark");

    // A canister has at most 500 calls outstanding: deeper, call_perform fails, this canister
    // does not reply, and the chain unwinds with rejects.
    let (_, ids) = s.batch(vec![(ANON, a, "ping", ping_arg(3000, &b))]);
    for _ in 0..10 {
        if s.state.queue().is_empty() {
            break;
        }
        s.batch(Vec::new());
    }
    match s.state.ingress_status(&ids[0]) {
        Some(IngressStatus::Rejected { code, message, .. }) => {
            assert_eq!((*code, message.as_str()), (4, "rejected"))
        }
        other => panic!("{other:?}"),
    }

    // A chain longer than a batch handles stays open across batches.
    let (out, ids) = s.batch(vec![(ANON, a, "ping", ping_arg(900, &b))]);
    assert!(
        matches!(&out[..], [(_, IngressStatus::Processing { .. })]),
        "still processing: {out:?}"
    );
    let long = ids[0];
    assert!(matches!(
        s.state.ingress_status(&long),
        Some(IngressStatus::Processing { .. })
    ));
    assert!(!s.state.queue().is_empty());

    // Stopping a waits for its open calls: a is stopping and refuses new calls while the
    // chain finishes; once its last call context closes it is stopped, and the stop call is
    // answered.
    let stop = Encode!(&CanisterIdRecord { canister_id: a }).expect("encodes");
    let mgmt = Principal::management_canister();
    let (out, ids) = s.batch(vec![
        (ANON, mgmt, "stop_canister", stop),
        (ANON, a, "ping", ping_arg(0, &b)),
    ]);
    let (stop_id, refused) = (ids[0], ids[1]);
    let status = |id| out.iter().find(|(i, _)| *i == id).map(|(_, s)| s.clone());
    match status(refused) {
        Some(IngressStatus::Rejected { error_code, .. }) => {
            assert_eq!(error_code.as_deref(), Some("IC0509"))
        }
        other => panic!("a stopping canister takes no new calls: {other:?}"),
    }
    match status(long) {
        Some(IngressStatus::Replied { reply, .. }) => assert_eq!(reply, 0u32.to_le_bytes()),
        other => panic!("the chain completes: {other:?}"),
    }
    assert!(matches!(
        status(stop_id),
        Some(IngressStatus::Replied { .. })
    ));
    assert!(s.state.queue().is_empty());
    let c = s.state.canister(&a).expect("exists");
    assert_eq!(c.status, thicket_state::canister::Status::Stopped);
    for id in [a, b] {
        let c = s.state.canister(&id).expect("exists");
        assert!(c.call_contexts.is_empty() && c.callbacks.is_empty(), "{id}");
    }
}

#[test]
fn a_checkpoint_writes_again_only_the_heap_chunks_that_changed() {
    use thicket_execution::StateMachine as _;
    let mut s = Subnet::new();
    let big = COUNTER.replace(
        r#"(memory (export "memory") 1)"#,
        r#"(memory (export "memory") 64)"#,
    );
    let wasm = wat::parse_str(&big).expect("wat");
    let id = s.create(ANON);
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &wasm),
        IngressStatus::Replied { .. }
    ));
    s.ok(ANON, &id, "inc", NO_ARGS());
    let hashes =
        |s: &Subnet| -> Vec<_> { s.state.checkpoint().iter().map(|c| c.info.hash).collect() };
    let first = hashes(&s);
    s.ok(ANON, &id, "inc", NO_ARGS());
    let second = hashes(&s);
    // The header and meta fit one chunk, the history of a few requests another; the 4 MiB
    // heap is 16 chunks of which one changed.
    assert_eq!(second.len(), 18);
    let changed = first.iter().zip(&second).filter(|(a, b)| a != b).count();
    assert_eq!(
        changed, 3,
        "the meta chunk, the history's (one request more) and the heap chunk holding the count"
    );

    // The encoding decodes to the same state, as does an older plain encoding; a cut or
    // padded one is refused with an error.
    // (Replica-local bookkeeping such as the last batch's instructions is not state.)
    let bytes = s.state.encode();
    let again = SubnetState::decode(&bytes).expect("decodes");
    assert_eq!(again.encode(), bytes);
    assert_eq!(again.canisters(), s.state.canisters());
    let plain = bincode::serialize(&s.state).expect("encodes");
    assert_eq!(
        SubnetState::decode(&plain).expect("decodes").encode(),
        bytes
    );
    // A decoded state forgets expired requests as the original would (its index of the
    // history by expiry is rebuilt).
    let mut later = SubnetState::decode(&bytes).expect("decodes");
    assert_eq!(later.history().len(), s.state.history().len());
    later.execute(&Batch {
        height: Height(s.height + 1),
        time_ns: T0 + 3_600 * 1_000_000_000,
        ingress: vec![],
    });
    assert!(later.history().is_empty(), "all expired an hour later");
    for bad in [
        &bytes[..bytes.len() - 1],
        &bytes[..20],
        &[bytes.as_slice(), &[0]].concat(),
    ] {
        assert!(SubnetState::decode(bad).is_err());
    }
}

/// Prints from an update, from an update that then traps, and from a query.
const PRINTER: &str = r#"(module
  (import "ic0" "debug_print" (func $print (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "trap" (func $trap (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from an update")
  (data (i32.const 32) "broken on purpose")
  (data (i32.const 64) "hello from a query")
  (func (export "canister_update say") (call $print (i32.const 0) (i32.const 20)) (call $reply))
  (func (export "canister_update fail")
    (call $print (i32.const 0) (i32.const 20))
    (call $trap (i32.const 32) (i32.const 17)))
  (func (export "canister_query peek") (call $print (i32.const 64) (i32.const 18)) (call $reply)))"#;

#[test]
fn replicated_executions_leave_logs_for_those_their_visibility_allows() {
    let mut s = Subnet::new();
    let mgmt = Principal::management_canister();
    let wasm = wat::parse_str(PRINTER).expect("wat");
    let id = s.create(ANON);
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &wasm),
        IngressStatus::Replied { .. }
    ));
    s.ok(ANON, &id, "say", NO_ARGS());
    s.rejected(ANON, &id, "fail", NO_ARGS());
    // A query prints nothing into the log (it is not replicated).
    s.query(&id, "peek");

    let logs = |s: &Subnet, who: &[u8], filter: Option<CanisterLogFilter>| {
        let arg = Encode!(&FetchCanisterLogsArgs {
            canister_id: id,
            filter,
        })
        .expect("encodes");
        s.state
            .query_view()
            .management_query(&Principal::from_slice(who), "fetch_canister_logs", &arg)
            .map(|reply| {
                Decode!(&reply, FetchCanisterLogsResult)
                    .expect("a log")
                    .canister_log_records
            })
    };
    let records = logs(&s, ANON, None).expect("the controller reads the log");
    let texts: Vec<_> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.content).into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "hello from an update",
            "hello from an update",
            "[TRAP]: broken on purpose"
        ]
    );
    assert_eq!(records.iter().map(|r| r.idx).collect::<Vec<_>>(), [0, 1, 2]);
    // Each record carries its block's time (one block per call here, a second apart).
    assert!(records[0].timestamp_nanos < records[1].timestamp_nanos);
    assert_eq!(records[1].timestamp_nanos, records[2].timestamp_nanos);
    let only = logs(
        &s,
        ANON,
        Some(CanisterLogFilter::ByIdx { start: 1, end: 2 }),
    )
    .expect("log");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].idx, 1);

    // Others may not read it, until the visibility says so.
    let refused = logs(&s, OTHER, None).expect_err("controllers only");
    assert_eq!(refused.code, 5);
    let settings = |settings: CanisterSettings| {
        Encode!(&UpdateSettingsArgs {
            canister_id: id,
            settings,
            sender_canister_version: None,
        })
        .expect("encodes")
    };
    s.ok(
        ANON,
        &mgmt,
        "update_settings",
        settings(CanisterSettings {
            log_visibility: Some(LogVisibility::AllowedViewers(vec![Principal::from_slice(
                OTHER,
            )])),
            ..CanisterSettings::default()
        }),
    );
    assert_eq!(logs(&s, OTHER, None).expect("an allowed viewer").len(), 3);

    // A smaller log keeps the newest records that fit; status reports the setting and size.
    s.ok(
        ANON,
        &mgmt,
        "update_settings",
        settings(CanisterSettings {
            log_memory_limit: Some(30u64.into()),
            ..CanisterSettings::default()
        }),
    );
    let kept = logs(&s, ANON, None).expect("log");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].idx, 2);
    let rec = Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes");
    let status = Decode!(
        &s.ok(ANON, &mgmt, "canister_status", rec.clone()),
        CanisterStatusResult
    )
    .expect("status");
    assert_eq!(status.settings.log_memory_limit, candid::Nat::from(30u8));
    assert_eq!(
        status.memory_metrics.log_memory_store_size,
        candid::Nat::from(kept[0].content.len())
    );
    assert!(matches!(
        status.settings.log_visibility,
        LogVisibility::AllowedViewers(_)
    ));
    // Status is for controllers, unless its own visibility says otherwise (as a call, and as
    // a query to the management canister).
    assert_eq!(
        s.rejected(OTHER, &mgmt, "canister_status", rec.clone()).2,
        "IC0512"
    );
    let status_query = |s: &Subnet, who: &[u8]| {
        s.state
            .query_view()
            .management_query(&Principal::from_slice(who), "canister_status", &rec)
    };
    assert_eq!(status_query(&s, OTHER).expect_err("not allowed").code, 5);
    assert!(status_query(&s, ANON).is_ok());
    s.ok(
        ANON,
        &mgmt,
        "update_settings",
        settings(CanisterSettings {
            status_visibility: Some(StatusVisibility::Public),
            ..CanisterSettings::default()
        }),
    );
    s.ok(OTHER, &mgmt, "canister_status", rec.clone());
    assert!(status_query(&s, OTHER).is_ok());

    // The log and the settings survive a checkpoint.
    let again = SubnetState::decode(&s.state.encode()).expect("decodes");
    assert_eq!(
        again.canister(&id).map(|c| &c.extra),
        s.state.canister(&id).map(|c| &c.extra)
    );
    // A reinstall starts the log over; the indices keep counting.
    assert!(matches!(
        s.install(ANON, id, InstallMode::Reinstall, &wasm),
        IngressStatus::Replied { .. }
    ));
    assert!(logs(&s, ANON, None).expect("log").is_empty());
    s.ok(ANON, &id, "say", NO_ARGS());
    assert_eq!(logs(&s, ANON, None).expect("log")[0].idx, 3);
}

#[test]
fn a_module_is_installed_from_uploaded_chunks_once_its_hash_matches() {
    let mut s = Subnet::new();
    let mgmt = Principal::management_canister();
    let wasm = wat::parse_str(COUNTER).expect("wat");
    let id = s.create(ANON);
    let record = || Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes");
    let upload = |chunk: &[u8]| {
        Encode!(&UploadChunkArgs {
            canister_id: id,
            chunk: chunk.to_vec(),
        })
        .expect("encodes")
    };
    let third = wasm.len().div_ceil(3);
    let mut hashes = Vec::new();
    for part in wasm.chunks(third) {
        let reply = s.ok(ANON, &mgmt, "upload_chunk", upload(part));
        hashes.push(Decode!(&reply, ChunkHash).expect("a hash"));
    }
    assert_eq!(hashes[0].hash, sha256(&wasm[..third]));
    // The same chunk again is stored once.
    s.ok(ANON, &mgmt, "upload_chunk", upload(&wasm[..third]));
    let stored = Decode!(
        &s.ok(ANON, &mgmt, "stored_chunks", record()),
        Vec<ChunkHash>
    )
    .expect("hashes");
    assert_eq!(stored.len(), 3);
    let status = Decode!(
        &s.ok(ANON, &mgmt, "canister_status", record()),
        CanisterStatusResult
    )
    .expect("status");
    assert_eq!(
        status.memory_metrics.wasm_chunk_store_size,
        candid::Nat::from(wasm.len())
    );
    // Only controllers use the store; a chunk is at most 1 MiB.
    assert_eq!(
        s.rejected(OTHER, &mgmt, "upload_chunk", upload(b"x")).2,
        "IC0512"
    );
    assert_eq!(
        s.rejected(
            ANON,
            &mgmt,
            "upload_chunk",
            upload(&vec![0; MAX_CHUNK_BYTES + 1])
        )
        .2,
        "IC0408"
    );

    // The store survives a checkpoint (its chunks travel as page maps).
    let again = SubnetState::decode(&s.state.encode()).expect("decodes");
    assert_eq!(
        again.canister(&id).map(|c| &c.extra),
        s.state.canister(&id).map(|c| &c.extra)
    );

    let install = |hash: Vec<u8>| {
        Encode!(&InstallChunkedCodeArgs {
            mode: InstallMode::Install,
            target_canister: id,
            store_canister: None,
            chunk_hashes_list: hashes.clone(),
            wasm_module_hash: ByteBuf::from(hash),
            arg: ByteBuf::from(NO_ARGS()),
            sender_canister_version: None,
        })
        .expect("encodes")
    };
    let (_, message, code) = s.rejected(ANON, &mgmt, "install_chunked_code", install(vec![0; 32]));
    assert_eq!(code, "IC0408");
    assert!(message.contains("hash"), "{message}");
    s.ok(ANON, &mgmt, "install_chunked_code", install(sha256(&wasm)));
    s.ok(ANON, &id, "inc", NO_ARGS());
    assert_eq!(s.count(&id), 1);

    s.ok(ANON, &mgmt, "clear_chunk_store", record());
    let stored = Decode!(
        &s.ok(ANON, &mgmt, "stored_chunks", record()),
        Vec<ChunkHash>
    )
    .expect("hashes");
    assert!(stored.is_empty());
}

/// Reads its environment variables: `value` answers the value of the variable its argument
/// names (trapping for one it does not have), `first` their count as a byte, then the first
/// name.
const ENV: &str = r#"(module
  (import "ic0" "msg_arg_data_size" (func $arg_size (result i32)))
  (import "ic0" "msg_arg_data_copy" (func $arg_copy (param i32 i32 i32)))
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "env_var_count" (func $count (result i32)))
  (import "ic0" "env_var_name_size" (func $name_size (param i32) (result i32)))
  (import "ic0" "env_var_name_copy" (func $name_copy (param i32 i32 i32 i32)))
  (import "ic0" "env_var_value_size" (func $value_size (param i32 i32) (result i32)))
  (import "ic0" "env_var_value_copy" (func $value_copy (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "canister_query value") (local $size i32)
    (call $arg_copy (i32.const 0) (i32.const 0) (call $arg_size))
    (local.set $size (call $value_size (i32.const 0) (call $arg_size)))
    (call $value_copy (i32.const 0) (call $arg_size) (i32.const 512) (i32.const 0) (local.get $size))
    (call $append (i32.const 512) (local.get $size))
    (call $reply))
  (func (export "canister_query first")
    (i32.store8 (i32.const 0) (call $count))
    (call $name_copy (i32.const 0) (i32.const 1) (i32.const 0) (call $name_size (i32.const 0)))
    (call $append (i32.const 0) (i32.add (i32.const 1) (call $name_size (i32.const 0))))
    (call $reply)))"#;

#[test]
fn environment_variables_are_kept_reported_and_read_by_the_canister() {
    let mut s = Subnet::new();
    let id = s.create(ANON);
    let installed = s.install(
        ANON,
        id,
        InstallMode::Install,
        &wat::parse_str(ENV).expect("wat"),
    );
    assert!(
        matches!(installed, IngressStatus::Replied { .. }),
        "{installed:?}"
    );
    let mgmt = Principal::management_canister();
    let set = |vars: Vec<(&str, String)>| {
        Encode!(&UpdateSettingsArgs {
            canister_id: id,
            settings: CanisterSettings {
                environment_variables: Some(
                    vars.into_iter()
                        .map(|(name, value)| EnvironmentVariable {
                            name: name.into(),
                            value,
                        })
                        .collect(),
                ),
                ..CanisterSettings::default()
            },
            sender_canister_version: None,
        })
        .expect("encodes")
    };
    s.ok(
        ANON,
        &mgmt,
        "update_settings",
        set(vec![("B", "2".into()), ("A", "one".into())]),
    );
    let rt = thicket_canister::shared().expect("runtime");
    let view = s.state.query_view();
    let ask = |method: &str, arg: &[u8]| view.query(rt, ANON, &id, method, arg, None);
    assert_eq!(ask("first", b"").expect("answers"), b"\x02A");
    assert_eq!(ask("value", b"A").expect("answers"), b"one");
    let missing = ask("value", b"C").expect_err("no such variable");
    assert!(
        missing.message.contains("no environment variable \"C\""),
        "{missing:?}"
    );
    let rec = Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes");
    let status = Decode!(
        &s.ok(ANON, &mgmt, "canister_status", rec),
        CanisterStatusResult
    )
    .expect("a status");
    let names: Vec<_> = status
        .settings
        .environment_variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(names, [("A", "one"), ("B", "2")]);
    // Beyond the IC's bounds, or a name twice: refused, and nothing changes.
    let too_many = set((0..21).map(|i| ("V", i.to_string())).collect());
    assert_eq!(
        s.rejected(ANON, &mgmt, "update_settings", too_many).2,
        "IC0408"
    );
    let long = "x".repeat(129);
    assert_eq!(
        s.rejected(ANON, &mgmt, "update_settings", set(vec![("A", long)]))
            .2,
        "IC0408"
    );
    let twice = set(vec![("A", "1".into()), ("A", "2".into())]);
    let (_, message, code) = s.rejected(ANON, &mgmt, "update_settings", twice);
    assert_eq!(code, "IC0408");
    assert!(message.contains("set twice"), "{message}");
    let view = s.state.query_view();
    assert_eq!(
        view.query(rt, ANON, &id, "value", b"A", None)
            .expect("answers"),
        b"one"
    );
}

#[test]
fn canister_info_tells_canisters_the_history_of_a_canister() {
    let mut s = Subnet::new();
    let mgmt = Principal::management_canister();
    let id = s.create(ANON);
    let wasm = wat::parse_str(COUNTER).expect("wat");
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &wasm),
        IngressStatus::Replied { .. }
    ));
    assert!(matches!(
        s.install(ANON, id, keep(), &wasm),
        IngressStatus::Replied { .. }
    ));
    let controllers = vec![Principal::from_slice(ANON), Principal::from_slice(OTHER)];
    let settings = |controllers: Vec<Principal>| {
        Encode!(&UpdateSettingsArgs {
            canister_id: id,
            settings: CanisterSettings {
                controllers: Some(controllers),
                ..CanisterSettings::default()
            },
            sender_canister_version: None,
        })
        .expect("encodes")
    };
    s.ok(
        ANON,
        &mgmt,
        "update_settings",
        settings(controllers.clone()),
    );
    // Only canisters may ask.
    let info = |n: Option<u64>| {
        Encode!(&CanisterInfoArgs {
            canister_id: id,
            num_requested_changes: n,
        })
        .expect("encodes")
    };
    assert_eq!(
        s.rejected(ANON, &mgmt, "canister_info", info(Some(5))).2,
        "IC0407"
    );
    let asker = s.create(ANON);
    let relay = relay(&mgmt, "canister_info", 0);
    assert!(matches!(
        s.install(ANON, asker, InstallMode::Install, &relay),
        IngressStatus::Replied { .. }
    ));
    let reply = s.ok(ANON, &asker, "relay", info(Some(10)));
    let got = Decode!(&reply, CanisterInfoResult).expect("a canister_info result");
    assert_eq!(got.total_num_changes, 4);
    assert_eq!(got.controllers, controllers);
    assert_eq!(got.module_hash, Some(sha256(&wasm)));
    let user = ChangeOrigin::FromUser(FromUserRecord {
        user_id: Principal::from_slice(ANON),
    });
    let details: Vec<_> = got
        .recent_changes
        .iter()
        .map(|c| {
            assert_eq!(c.origin, user);
            (c.canister_version, c.details.clone().expect("details"))
        })
        .collect();
    let deployed = |mode| {
        ChangeDetails::CodeDeployment(CodeDeploymentRecord {
            mode,
            module_hash: sha256(&wasm),
        })
    };
    assert_eq!(
        details,
        [
            (
                0,
                ChangeDetails::Creation(CreationRecord {
                    controllers: vec![Principal::from_slice(ANON)],
                    environment_variables_hash: None,
                })
            ),
            (1, deployed(CodeDeploymentMode::Install)),
            (2, deployed(CodeDeploymentMode::Upgrade)),
            (
                3,
                ChangeDetails::ControllersChange(ControllersChangeRecord {
                    controllers: controllers.clone()
                })
            ),
        ]
    );
    // None asked: the count alone. Beyond 20 changes, the oldest go.
    let reply = s.ok(ANON, &asker, "relay", info(None));
    let got = Decode!(&reply, CanisterInfoResult).expect("a result");
    assert!(got.recent_changes.is_empty() && got.total_num_changes == 4);
    for i in 0..20 {
        let next = if i % 2 == 0 {
            vec![Principal::from_slice(ANON)]
        } else {
            controllers.clone()
        };
        s.ok(ANON, &mgmt, "update_settings", settings(next));
    }
    let reply = s.ok(ANON, &asker, "relay", info(Some(100)));
    let got = Decode!(&reply, CanisterInfoResult).expect("a result");
    assert_eq!(got.total_num_changes, 24);
    assert_eq!(got.recent_changes.len(), 20);
    assert_eq!(got.recent_changes[0].canister_version, 4);
}
