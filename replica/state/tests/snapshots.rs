//! Canister snapshots on the subnet state machine: taken, listed, loaded back (module, heap,
//! stable memory, globals, certified data), deleted, replaced, read out and uploaded into
//! another canister; who may do what; the limit of 10; what a checkpoint keeps.

use candid::{Decode, Encode, Principal};
use ic_management_canister_types::{
    DeleteCanisterSnapshotArgs, LoadCanisterSnapshotArgs, ReadCanisterSnapshotDataArgs,
    ReadCanisterSnapshotDataResult, ReadCanisterSnapshotMetadataArgs,
    ReadCanisterSnapshotMetadataResult, Snapshot, SnapshotDataKind, SnapshotDataOffset,
    SnapshotMetadataGlobal, SnapshotSource, TakeCanisterSnapshotArgs,
    UploadCanisterSnapshotMetadataArgs, UploadCanisterSnapshotMetadataResult,
};
use serde_bytes::ByteBuf;
use thicket_execution::{IngressStatus, StateMachine};
use thicket_state::SubnetState;
use thicket_state::management::*;

mod common;

use common::*;

const NO_ARGS: fn() -> Vec<u8> = || b"DIDL\x00\x00".to_vec();

/// `inc` counts in its heap (at 100), in an exported mutable global and in its stable memory's
/// first byte, and certifies the count; `get`, `global` and `stable` answer each of them.
const KEEPER: &str = r#"(module
  (import "ic0" "msg_reply_data_append" (func $append (param i32 i32)))
  (import "ic0" "msg_reply" (func $reply))
  (import "ic0" "stable64_size" (func $ssize (result i64)))
  (import "ic0" "stable64_grow" (func $sgrow (param i64) (result i64)))
  (import "ic0" "stable64_write" (func $swrite (param i64 i64 i64)))
  (import "ic0" "stable64_read" (func $sread (param i64 i64 i64)))
  (import "ic0" "certified_data_set" (func $certify (param i32 i32)))
  (memory (export "memory") 1)
  (global $g (export "g") (mut i32) (i32.const 0))
  (data (i32.const 0) "DIDL\00\01\7d")
  (func $answer (param i32)
    (i32.store8 (i32.const 7) (local.get 0))
    (call $append (i32.const 0) (i32.const 8))
    (call $reply))
  (func (export "canister_update inc")
    (i32.store (i32.const 100) (i32.add (i32.load (i32.const 100)) (i32.const 1)))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (if (i64.eqz (call $ssize)) (then (drop (call $sgrow (i64.const 1)))))
    (call $swrite (i64.const 0) (i64.const 100) (i64.const 4))
    (call $certify (i32.const 100) (i32.const 4))
    (call $answer (i32.load (i32.const 100))))
  (func (export "canister_query get") (call $answer (i32.load (i32.const 100))))
  (func (export "canister_query global") (call $answer (global.get $g)))
  (func (export "canister_query stable")
    (call $sread (i64.const 200) (i64.const 0) (i64.const 4))
    (call $answer (i32.load (i32.const 200)))))"#;

fn mgmt() -> Principal {
    Principal::management_canister()
}

fn take(id: Principal, replace: Option<Vec<u8>>, uninstall: bool) -> Vec<u8> {
    Encode!(&TakeCanisterSnapshotArgs {
        canister_id: id,
        replace_snapshot: replace,
        uninstall_code: Some(uninstall),
        sender_canister_version: None,
    })
    .expect("encodes")
}

fn load(id: Principal, snapshot: &[u8]) -> Vec<u8> {
    Encode!(&LoadCanisterSnapshotArgs {
        canister_id: id,
        snapshot_id: snapshot.to_vec(),
        sender_canister_version: None,
    })
    .expect("encodes")
}

fn list(s: &mut Subnet, who: &[u8], id: Principal) -> Vec<Snapshot> {
    let reply = s.ok(
        who,
        &mgmt(),
        "list_canister_snapshots",
        Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes"),
    );
    Decode!(&reply, Vec<Snapshot>).expect("a list")
}

fn delete(id: Principal, snapshot: &[u8]) -> Vec<u8> {
    Encode!(&DeleteCanisterSnapshotArgs {
        canister_id: id,
        snapshot_id: snapshot.to_vec(),
    })
    .expect("encodes")
}

/// The three counts: heap, global, stable memory.
fn counts(s: &Subnet, id: &Principal) -> [u64; 3] {
    ["get", "global", "stable"].map(|m| {
        let reply = s.query(id, m);
        Decode!(&reply, candid::Nat)
            .expect("a nat")
            .0
            .try_into()
            .expect("small")
    })
}

fn installed(s: &mut Subnet, id: Principal) {
    let wasm = wat::parse_str(KEEPER).expect("wat");
    assert!(matches!(
        s.install(ANON, id, InstallMode::Install, &wasm),
        IngressStatus::Replied { .. }
    ));
}

fn status(s: &mut Subnet, id: Principal) -> CanisterStatusResult {
    let reply = s.ok(
        ANON,
        &mgmt(),
        "canister_status",
        Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes"),
    );
    Decode!(&reply, CanisterStatusResult).expect("a status")
}

#[test]
fn a_snapshot_is_taken_loaded_back_listed_replaced_and_deleted() {
    let mut s = Subnet::new();
    let id = s.create(ANON);
    installed(&mut s, id);
    for _ in 0..3 {
        s.ok(ANON, &id, "inc", NO_ARGS());
    }
    assert_eq!(counts(&s, &id), [3, 3, 3]);
    let version = s.state.canisters()[&id].version;

    let reply = s.ok(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(id, None, false),
    );
    let first = Decode!(&reply, Snapshot).expect("a snapshot");
    // The canister's first snapshot: local number 0, then the canister's id.
    assert_eq!(first.id, [&[0u8; 8][..], id.as_slice()].concat());
    let wasm_len = wat::parse_str(KEEPER).expect("wat").len() as u64;
    assert_eq!(first.total_size, wasm_len + 65536 + 65536 + 8 + 4);
    assert_eq!(list(&mut s, ANON, id), vec![first.clone()]);
    let st = status(&mut s, id);
    assert_eq!(st.memory_metrics.snapshots_size, first.total_size);

    for _ in 0..2 {
        s.ok(ANON, &id, "inc", NO_ARGS());
    }
    assert_eq!(counts(&s, &id), [5, 5, 5]);
    s.ok(ANON, &mgmt(), "load_canister_snapshot", load(id, &first.id));
    assert_eq!(counts(&s, &id), [3, 3, 3], "heap, global and stable memory");
    let c = &s.state.canisters()[&id];
    assert_eq!(c.certified_data, 3u32.to_le_bytes());
    assert_eq!(c.version, version + 1);
    let last = c.extra.history.changes.back().expect("a change");
    match last.details.as_ref().expect("details") {
        ChangeDetails::LoadSnapshot(r) => {
            assert_eq!(r.snapshot_id, first.id);
            assert_eq!(r.canister_version, version);
            assert_eq!(r.from_canister_id, None);
            assert_eq!(r.taken_at_timestamp, first.taken_at_timestamp);
            assert_eq!(
                r.source,
                SnapshotSource::TakenFromCanister(candid::Reserved)
            );
        }
        other => panic!("not a load: {other:?}"),
    }
    // It goes on from there, and the snapshot is still there to load again.
    s.ok(ANON, &id, "inc", NO_ARGS());
    assert_eq!(counts(&s, &id), [4, 4, 4]);
    s.ok(ANON, &mgmt(), "load_canister_snapshot", load(id, &first.id));
    assert_eq!(counts(&s, &id), [3, 3, 3]);

    // Ten at most; replacing one keeps the count.
    let mut ids = vec![first.id.clone()];
    for _ in 1..10 {
        let reply = s.ok(
            ANON,
            &mgmt(),
            "take_canister_snapshot",
            take(id, None, false),
        );
        ids.push(Decode!(&reply, Snapshot).expect("a snapshot").id);
    }
    let (_, msg, code) = s.rejected(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(id, None, false),
    );
    assert_eq!(code, "IC0406", "{msg}");
    assert!(msg.contains("maximum of 10 snapshots"), "{msg}");
    let reply = s.ok(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(id, Some(first.id.clone()), false),
    );
    let replacing = Decode!(&reply, Snapshot).expect("a snapshot");
    assert_eq!(replacing.id[..8], 10u64.to_be_bytes());
    let listed: Vec<Vec<u8>> = list(&mut s, ANON, id).into_iter().map(|s| s.id).collect();
    assert_eq!(listed.len(), 10);
    assert!(!listed.contains(&first.id));
    let (_, msg, code) = s.rejected(ANON, &mgmt(), "load_canister_snapshot", load(id, &first.id));
    assert_eq!(code, "IC0305", "{msg}");

    s.ok(
        ANON,
        &mgmt(),
        "delete_canister_snapshot",
        delete(id, &ids[1]),
    );
    assert_eq!(list(&mut s, ANON, id).len(), 9);
    let (_, _, code) = s.rejected(
        ANON,
        &mgmt(),
        "delete_canister_snapshot",
        delete(id, &ids[1]),
    );
    assert_eq!(code, "IC0305");
    // Not a snapshot id at all.
    let (_, _, code) = s.rejected(
        ANON,
        &mgmt(),
        "delete_canister_snapshot",
        delete(id, &[1, 2]),
    );
    assert_eq!(code, "IC0408");

    // A checkpoint carries them.
    let again = SubnetState::decode(&s.state.encode()).expect("decodes");
    assert_eq!(again.canisters(), s.state.canisters());
    assert_eq!(again.canisters()[&id].extra.snapshots.len(), 9);

    // Taken with uninstall_code: the canister is empty after, and the snapshot brings it back.
    let reply = s.ok(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(id, Some(ids[2].clone()), true),
    );
    let taken = Decode!(&reply, Snapshot).expect("a snapshot");
    assert!(s.state.canisters()[&id].module.is_none());
    let (_, msg, code) = s.rejected(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(id, None, false),
    );
    assert_eq!(code, "IC0406");
    assert!(msg.contains("empty"), "{msg}");
    s.ok(ANON, &mgmt(), "load_canister_snapshot", load(id, &taken.id));
    assert_eq!(counts(&s, &id), [3, 3, 3]);

    // Deleting the canister deletes its snapshots.
    s.ok(
        ANON,
        &mgmt(),
        "stop_canister",
        Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes"),
    );
    s.ok(
        ANON,
        &mgmt(),
        "delete_canister",
        Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes"),
    );
    let (_, _, code) = s.rejected(ANON, &mgmt(), "load_canister_snapshot", load(id, &taken.id));
    assert_eq!(code, "IC0301");
}

#[test]
fn only_controllers_take_load_and_delete_and_visibility_says_who_reads() {
    let mut s = Subnet::new();
    let id = s.create(ANON);
    installed(&mut s, id);
    s.ok(ANON, &id, "inc", NO_ARGS());
    let reply = s.ok(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(id, None, false),
    );
    let snap = Decode!(&reply, Snapshot).expect("a snapshot");
    let metadata = || {
        Encode!(&ReadCanisterSnapshotMetadataArgs {
            canister_id: id,
            snapshot_id: snap.id.clone(),
        })
        .expect("encodes")
    };
    let list_arg = || Encode!(&CanisterIdRecord { canister_id: id }).expect("encodes");
    for (method, arg) in [
        ("take_canister_snapshot", take(id, None, false)),
        ("load_canister_snapshot", load(id, &snap.id)),
        ("delete_canister_snapshot", delete(id, &snap.id)),
        ("list_canister_snapshots", list_arg()),
        ("read_canister_snapshot_metadata", metadata()),
    ] {
        let (_, msg, code) = s.rejected(OTHER, &mgmt(), method, arg);
        assert_eq!(code, "IC0512", "{method}: {msg}");
    }
    // Public snapshots: anyone lists and reads them; still only controllers change them.
    let settings = Encode!(&UpdateSettingsArgs {
        canister_id: id,
        settings: CanisterSettings {
            snapshot_visibility: Some(SnapshotVisibility::Public),
            ..CanisterSettings::default()
        },
        sender_canister_version: None,
    })
    .expect("encodes");
    s.ok(ANON, &mgmt(), "update_settings", settings);
    assert_eq!(
        status(&mut s, id).settings.snapshot_visibility,
        SnapshotVisibility::Public
    );
    assert_eq!(list(&mut s, OTHER, id), vec![snap.clone()]);
    let reply = s.ok(
        OTHER,
        &mgmt(),
        "read_canister_snapshot_metadata",
        metadata(),
    );
    let md = Decode!(&reply, ReadCanisterSnapshotMetadataResult).expect("metadata");
    assert_eq!(md.canister_version, 1);
    let (_, _, code) = s.rejected(
        OTHER,
        &mgmt(),
        "delete_canister_snapshot",
        delete(id, &snap.id),
    );
    assert_eq!(code, "IC0512");
    // A snapshot is named with its canister: another canister's id does not find it.
    let other = s.create(ANON);
    let (_, _, code) = s.rejected(
        ANON,
        &mgmt(),
        "delete_canister_snapshot",
        delete(other, &snap.id),
    );
    assert_eq!(code, "IC0305");
    assert_eq!(list(&mut s, ANON, id).len(), 1);
}

#[test]
fn a_snapshot_read_out_and_uploaded_loads_into_another_canister() {
    let mut s = Subnet::new();
    let from = s.create(ANON);
    installed(&mut s, from);
    for _ in 0..7 {
        s.ok(ANON, &from, "inc", NO_ARGS());
    }
    let reply = s.ok(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(from, None, false),
    );
    let snap = Decode!(&reply, Snapshot).expect("a snapshot");
    let reply = s.ok(
        ANON,
        &mgmt(),
        "read_canister_snapshot_metadata",
        Encode!(&ReadCanisterSnapshotMetadataArgs {
            canister_id: from,
            snapshot_id: snap.id.clone(),
        })
        .expect("encodes"),
    );
    let md = Decode!(&reply, ReadCanisterSnapshotMetadataResult).expect("metadata");
    assert_eq!(
        md.source,
        Some(SnapshotSource::TakenFromCanister(candid::Reserved))
    );
    assert_eq!((md.wasm_memory_size, md.stable_memory_size), (65536, 65536));
    assert!(matches!(
        md.globals.as_slice(),
        [Some(SnapshotMetadataGlobal::I32(7))]
    ));
    assert_eq!(md.certified_data, 7u32.to_le_bytes());
    let mut read = |kind: SnapshotDataKind| {
        let reply = s.ok(
            ANON,
            &mgmt(),
            "read_canister_snapshot_data",
            Encode!(&ReadCanisterSnapshotDataArgs {
                canister_id: from,
                snapshot_id: snap.id.clone(),
                kind,
            })
            .expect("encodes"),
        );
        Decode!(&reply, ReadCanisterSnapshotDataResult)
            .expect("data")
            .chunk
    };
    let wasm = read(SnapshotDataKind::WasmModule {
        offset: 0,
        size: md.wasm_module_size,
    });
    assert_eq!(wasm, wat::parse_str(KEEPER).expect("wat"));
    // The heap in two slices.
    let mut heap = read(SnapshotDataKind::WasmMemory {
        offset: 0,
        size: 40_000,
    });
    heap.extend(read(SnapshotDataKind::WasmMemory {
        offset: 40_000,
        size: 65536 - 40_000,
    }));
    assert_eq!(heap[100], 7);
    let stable = read(SnapshotDataKind::StableMemory {
        offset: 0,
        size: 65536,
    });
    assert_eq!(stable[0], 7);
    // Past the end: refused.
    let past = Encode!(&ReadCanisterSnapshotDataArgs {
        canister_id: from,
        snapshot_id: snap.id.clone(),
        kind: SnapshotDataKind::StableMemory {
            offset: 65536,
            size: 1,
        },
    })
    .expect("encodes");
    let (_, _, code) = s.rejected(ANON, &mgmt(), "read_canister_snapshot_data", past);
    assert_eq!(code, "IC0408");

    // Uploaded into an empty canister, then loaded there.
    let to = s.create(ANON);
    let upload = |globals, wasm_memory_size| {
        Encode!(&UploadCanisterSnapshotMetadataArgs {
            canister_id: to,
            replace_snapshot: None,
            wasm_module_size: md.wasm_module_size,
            globals,
            wasm_memory_size,
            stable_memory_size: md.stable_memory_size,
            certified_data: md.certified_data.clone(),
            global_timer: None,
            on_low_wasm_memory_hook_status: None,
        })
        .expect("encodes")
    };
    let (_, msg, code) = s.rejected(
        ANON,
        &mgmt(),
        "upload_canister_snapshot_metadata",
        upload(vec![SnapshotMetadataGlobal::I32(7)], 1000),
    );
    assert_eq!(code, "IC0408", "{msg}");
    assert!(msg.contains("multiple of 65536"), "{msg}");
    let reply = s.ok(
        ANON,
        &mgmt(),
        "upload_canister_snapshot_metadata",
        upload(vec![SnapshotMetadataGlobal::I32(7)], 65536),
    );
    let uploaded = Decode!(&reply, UploadCanisterSnapshotMetadataResult)
        .expect("an id")
        .snapshot_id;
    let mut put = |kind: SnapshotDataOffset, bytes: &[u8], snapshot: &[u8]| {
        let arg = Encode!(&UploadCanisterSnapshotDataArgs {
            canister_id: to,
            snapshot_id: ByteBuf::from(snapshot.to_vec()),
            kind,
            chunk: ByteBuf::from(bytes.to_vec()),
        })
        .expect("encodes");
        s.call(ANON, &mgmt(), "upload_canister_snapshot_data", arg)
    };
    for (kind, bytes) in [
        (SnapshotDataOffset::WasmModule { offset: 0 }, &wasm[..]),
        (
            SnapshotDataOffset::WasmMemory { offset: 0 },
            &heap[..30_000],
        ),
        (
            SnapshotDataOffset::WasmMemory { offset: 30_000 },
            &heap[30_000..],
        ),
        (SnapshotDataOffset::StableMemory { offset: 0 }, &stable[..]),
    ] {
        assert!(matches!(
            put(kind, bytes, &uploaded),
            IngressStatus::Replied { .. }
        ));
    }
    // Past its end, and into a taken snapshot: refused.
    assert!(matches!(
        put(
            SnapshotDataOffset::StableMemory { offset: 65000 },
            &[0; 1000],
            &uploaded
        ),
        IngressStatus::Rejected { .. }
    ));
    s.ok(
        ANON,
        &mgmt(),
        "take_canister_snapshot",
        take(from, None, false),
    );
    let (_, _, code) = s.rejected(
        ANON,
        &mgmt(),
        "upload_canister_snapshot_data",
        Encode!(&UploadCanisterSnapshotDataArgs {
            canister_id: from,
            snapshot_id: ByteBuf::from(snap.id.clone()),
            kind: SnapshotDataOffset::WasmModule { offset: 0 },
            chunk: ByteBuf::from(vec![0]),
        })
        .expect("encodes"),
    );
    assert_eq!(code, "IC0409");

    // Globals of another type than the module's do not load (every message would trap).
    let reply = s.ok(
        ANON,
        &mgmt(),
        "upload_canister_snapshot_metadata",
        upload(vec![SnapshotMetadataGlobal::I64(7)], 65536),
    );
    let mistyped = Decode!(&reply, UploadCanisterSnapshotMetadataResult)
        .expect("an id")
        .snapshot_id;
    let module = Encode!(&UploadCanisterSnapshotDataArgs {
        canister_id: to,
        snapshot_id: ByteBuf::from(mistyped.clone()),
        kind: SnapshotDataOffset::WasmModule { offset: 0 },
        chunk: ByteBuf::from(wasm.clone()),
    })
    .expect("encodes");
    s.ok(ANON, &mgmt(), "upload_canister_snapshot_data", module);
    let (_, msg, code) = s.rejected(ANON, &mgmt(), "load_canister_snapshot", load(to, &mistyped));
    assert_eq!(code, "IC0408", "{msg}");
    assert!(msg.contains("global \"g\" is I32"), "{msg}");

    s.ok(ANON, &mgmt(), "load_canister_snapshot", load(to, &uploaded));
    assert_eq!(counts(&s, &to), [7, 7, 7]);
    assert_eq!(s.state.canisters()[&to].certified_data, 7u32.to_le_bytes());
    s.ok(ANON, &to, "inc", NO_ARGS());
    assert_eq!(counts(&s, &to), [8, 8, 8]);

    // Loaded straight from the other canister (the caller controls both): recorded so.
    s.ok(ANON, &mgmt(), "load_canister_snapshot", load(to, &snap.id));
    assert_eq!(counts(&s, &to), [7, 7, 7]);
    let last = s.state.canisters()[&to]
        .extra
        .history
        .changes
        .back()
        .cloned();
    match last.and_then(|c| c.details) {
        Some(ChangeDetails::LoadSnapshot(r)) => assert_eq!(r.from_canister_id, Some(from)),
        other => panic!("not a load: {other:?}"),
    }
    // Not by someone who controls only the target.
    let settings = Encode!(&UpdateSettingsArgs {
        canister_id: to,
        settings: CanisterSettings {
            controllers: Some(vec![
                Principal::from_slice(ANON),
                Principal::from_slice(OTHER)
            ]),
            ..CanisterSettings::default()
        },
        sender_canister_version: None,
    })
    .expect("encodes");
    s.ok(ANON, &mgmt(), "update_settings", settings);
    let (_, _, code) = s.rejected(OTHER, &mgmt(), "load_canister_snapshot", load(to, &snap.id));
    assert_eq!(code, "IC0512");

    // An uploaded snapshot whose module is not one is refused when loaded, changing nothing.
    let reply = s.ok(
        ANON,
        &mgmt(),
        "upload_canister_snapshot_metadata",
        upload(vec![], 65536),
    );
    let empty = Decode!(&reply, UploadCanisterSnapshotMetadataResult)
        .expect("an id")
        .snapshot_id;
    let before = s.state.canisters()[&to].clone();
    let (_, msg, _) = s.rejected(ANON, &mgmt(), "load_canister_snapshot", load(to, &empty));
    assert!(!msg.is_empty());
    assert_eq!(s.state.canisters()[&to], before);
}
