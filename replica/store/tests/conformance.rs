//! One conformance suite, run against the in-memory and the sled store.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_consensus::genesis;
use thicket_consensus::keys::NodeSecrets;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_store::memory::MemoryStore;
use thicket_store::sled_store::SledStore;
use thicket_store::{ArtifactStore, Op, StoreError, restore};
use thicket_types::artifacts::{BeaconContent, CatchUpContent, Certified, ConsensusMessage};
use thicket_types::registry::{Registry, SubnetParams};
use thicket_types::{CryptoHash, Height, NodeId};

fn genesis_root() -> CatchUpContent {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let secrets: Vec<_> = (0..4)
        .map(|i| NodeSecrets::generate(&mut rng, NodeId(i)))
        .collect();
    let registry = Registry {
        subnet_id: CryptoHash([4; 32]),
        version: 0,
        members: secrets.iter().map(|s| (s.node_id, s.record())).collect(),
        params: SubnetParams {
            unit_delay_ms: 1000,
            initial_notary_delay_ms: 300,
            dkg_interval_length: 10,
            dkg_dealings_per_block: 8,
            max_ingress_per_block: 10,
        },
        admin_key: NodeSigningKey::generate(&mut rng).public_key(),
    };
    genesis::in_process(&mut rng, &secrets, registry).unwrap()
}

fn beacon(root: &CatchUpContent, h: u64) -> ConsensusMessage {
    ConsensusMessage::RandomBeacon(Certified {
        content: BeaconContent {
            height: Height(h),
            parent: CryptoHash([h as u8; 32]),
        },
        signature: root.beacon.signature,
    })
}

fn heights(store: &impl ArtifactStore) -> Vec<u64> {
    store
        .load()
        .unwrap()
        .unwrap()
        .artifacts
        .iter()
        .map(|a| a.height().0)
        .collect()
}

/// The behaviour every store must have. `reopen` closes and reopens the same storage.
fn conformance<S: ArtifactStore>(mut store: S, reopen: impl Fn(S) -> S) {
    let root = genesis_root();
    assert!(store.load().unwrap().is_none(), "a fresh store is empty");

    let ingress = ConsensusMessage::Ingress(b"hello".to_vec());
    store
        .write(&vec![
            Op::PutRoot(Box::new(root.clone()), None),
            Op::PutArtifact(beacon(&root, 7)),
            Op::PutArtifact(beacon(&root, 2)),
            Op::PutArtifact(ingress.clone()),
            Op::PutArtifact(beacon(&root, 300)),
        ])
        .unwrap();
    let mut store = reopen(store);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.root, root);
    assert_eq!(loaded.cup, None);
    assert_eq!(
        heights(&store),
        vec![2, 7, 300, u64::MAX],
        "height order, big-endian keys"
    );

    // Removal by id, and a purge that also drops what the same batch put below it.
    store
        .write(&vec![
            Op::Remove {
                height: Height(u64::MAX),
                id: ingress.id(),
            },
            Op::PutArtifact(beacon(&root, 5)),
            Op::PurgeBelow(Height(7)),
            Op::PutArtifact(beacon(&root, 8)),
        ])
        .unwrap();
    let store = reopen(store);
    assert_eq!(heights(&store), vec![7, 8, 300]);

    // A pool restored from the store has the root and the artifacts.
    let mut store = store;
    let pool = restore(&mut store, &root).unwrap();
    assert_eq!(pool.root_height(), Height(0));
    assert!(pool.beacon(Height(7)).is_some() && pool.beacon(Height(300)).is_some());
}

#[test]
fn memory_store_conforms() {
    conformance(MemoryStore::default(), |s| s);
}

#[test]
fn sled_store_conforms_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    conformance(SledStore::open(&path).unwrap(), |s| {
        drop(s);
        SledStore::open(&path).unwrap()
    });
}

#[test]
fn restore_of_a_fresh_store_records_genesis() {
    let root = genesis_root();
    let mut store = MemoryStore::default();
    let pool = restore(&mut store, &root).unwrap();
    assert_eq!(pool.root_height(), Height(0));
    assert_eq!(store.load().unwrap().unwrap().root, root);
}

#[test]
fn a_corrupted_entry_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = thicket_store::sled_store::open_db(dir.path()).unwrap();
        db.insert(b"root", b"not bincode".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    match store.load() {
        Err(StoreError::Corrupted { key, .. }) => assert_eq!(key, "root"),
        other => panic!(
            "expected a corruption error, got {:?}",
            other.map(|s| s.is_some())
        ),
    }
}

/// Waiting ingress stays in memory: neither its arrival nor its ordering touches the store,
/// while what a replica signs does.
#[test]
fn waiting_ingress_is_not_stored() {
    use thicket_consensus::pool::{Mutation, Pool};
    use thicket_store::batch_for;

    let root = genesis_root();
    let mut pool = Pool::new(root.clone(), None);
    let ingress = ConsensusMessage::Ingress(b"call".to_vec());
    pool.insert_unvalidated(ingress.clone());
    assert!(batch_for(&pool, &[Mutation::MoveToValidated(ingress.id())]).is_empty());
    pool.apply(vec![Mutation::MoveToValidated(ingress.id())], 0);
    assert!(pool.waiting_get(&ingress.id()).is_some());
    assert!(batch_for(&pool, &[Mutation::RemoveOrdered(ingress.id())]).is_empty());
    assert!(batch_for(&pool, &[Mutation::AddToValidated(ingress)]).is_empty());
    let signed = beacon(&root, 1);
    assert_eq!(
        batch_for(&pool, &[Mutation::AddToValidated(signed.clone())]),
        vec![Op::PutArtifact(signed)]
    );
}

/// A sled store in `dir` holding the genesis root and beacons at heights 1 to `n`.
fn filled(dir: &std::path::Path, n: u64) {
    let root = genesis_root();
    let mut store = SledStore::open(dir).unwrap();
    store
        .write(&vec![Op::PutRoot(Box::new(root.clone()), None)])
        .unwrap();
    for h in 1..=n {
        store
            .write(&vec![Op::PutArtifact(beacon(&root, h))])
            .unwrap();
    }
}

fn corruption(store: &SledStore) -> (String, String) {
    match store.load() {
        Err(StoreError::Corrupted { key, reason }) => (key, reason),
        other => panic!(
            "expected a corruption error, got {:?}",
            other.map(|s| s.map(|s| s.artifacts.len()))
        ),
    }
}

#[test]
fn a_store_that_lost_what_it_held_or_holds_changed_bytes_is_reported_corrupt() {
    // Lost: sled ends a damaged log where the damage starts, as if the writes after it never
    // happened; the seal beside the store remembers how far it got.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    filled(&path, 10);
    assert_eq!(
        std::fs::read(path.with_extension("seal")).unwrap(),
        10u64.to_be_bytes()
    );
    {
        let db = thicket_store::sled_store::open_db(&path).unwrap();
        let root = genesis_root();
        for h in 6..=10u64 {
            let m = beacon(&root, h);
            db.remove(thicket_store::artifact_key(m.height(), &m.id()))
                .unwrap();
        }
        db.flush().unwrap();
    }
    let (key, reason) = corruption(&SledStore::open(&path).unwrap());
    assert!(key.contains(&path.display().to_string()), "{key}");
    assert!(
        reason.contains("holds heights up to 5, but it reached 10"),
        "{reason}"
    );

    // Lost to the root: an empty store with a seal is not a fresh one.
    {
        let db = thicket_store::sled_store::open_db(&path).unwrap();
        db.clear().unwrap();
        db.flush().unwrap();
    }
    let (_, reason) = corruption(&SledStore::open(&path).unwrap());
    assert!(
        reason.contains("holds heights up to 0, but it reached 10"),
        "{reason}"
    );

    // Changed: an entry whose bytes are another artifact's no longer matches its key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    filled(&path, 5);
    {
        let db = thicket_store::sled_store::open_db(&path).unwrap();
        let root = genesis_root();
        let at3 = beacon(&root, 3);
        let other = bincode::serialize(&beacon(&root, 4)).unwrap();
        db.insert(thicket_store::artifact_key(at3.height(), &at3.id()), other)
            .unwrap();
        db.flush().unwrap();
    }
    let (key, reason) = corruption(&SledStore::open(&path).unwrap());
    assert!(key.starts_with("artifact at height 3 with id "), "{key}");
    assert!(reason.contains("does not match its key"), "{reason}");

    // Bytes flipped in the database file itself: refused when opened or loaded, never
    // loaded as a shorter store.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    filled(&path, 40);
    let db_file = path.join("db");
    let mut bytes = std::fs::read(&db_file).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&db_file, bytes).unwrap();
    match SledStore::open(&path) {
        Err(e) => assert!(matches!(e, StoreError::Corrupted { .. }), "{e}"),
        Ok(store) => {
            corruption(&store);
        }
    }
}

/// Sled cannot take a write cut short by a full disk (its flush then waits forever), so the
/// store neither opens nor writes without room, and says so with nothing written. (The fault
/// harness fills a real disk: `e2e/faults`, scenario disk-full.)
#[test]
fn a_store_on_a_full_disk_writes_nothing_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    match SledStore::open_with_min_free(&dir, u64::MAX) {
        Err(StoreError::DiskFull { path, .. }) => assert_eq!(path, dir.display().to_string()),
        other => panic!("expected DiskFull, got {:?}", other.map(|_| ())),
    }
    assert!(!dir.exists(), "nothing was created on the full disk");

    filled(&dir, 3);
    let root = genesis_root();
    let mut store = SledStore::open(&dir).unwrap();
    store.set_min_free(u64::MAX);
    let err = store
        .write(&vec![Op::PutArtifact(beacon(&root, 4))])
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{message}");
    assert!(
        message.contains("free space") && message.contains("intact"),
        "{message}"
    );
    drop(store);
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(
        heights(&store),
        vec![1, 2, 3],
        "the refused batch left no trace"
    );
}

/// A store opened again while a handle of this process still holds sled's lock (as sled's
/// background I/O does for a moment after a drop) opens once the lock is let go; a handle
/// kept open is still refused, after the wait, by the lock.
#[test]
fn a_store_opened_while_its_lock_is_let_go_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    filled(&path, 3);
    let held = thicket_store::sled_store::open_db(&path).unwrap();
    let letting_go = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let store = SledStore::open(&path).unwrap();
    letting_go.join().unwrap();
    assert_eq!(heights(&store), vec![1, 2, 3]);

    let started = std::time::Instant::now();
    match SledStore::open(&path) {
        Err(StoreError::Io(e)) => assert!(e.contains("could not acquire lock"), "{e}"),
        other => panic!("expected the lock error, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
}
