//! The durable store on sled 0.34: one tree, batches applied atomically, flushed to disk before
//! `write` returns.
//!
//! Corruption is found, not run on: every artifact is checked against its key (which holds
//! its content hash) when the store is loaded, and a seal beside the store (`store.seal`)
//! records the highest height the store ever reached. Sled treats a damaged log as a torn
//! write and quietly ends it there, so a store that comes back lower than its seal lost
//! what it held, and is reported as corrupt: a replica that lost artifacts it signed could
//! sign again at those heights.
//!
//! A full disk is never let reach the database: sled 0.34 cannot take a write cut short by
//! one (its `flush` then waits forever, and a store reopened on a full disk may be left
//! unreadable). The store opens, and writes each batch, only with [`MIN_FREE_BYTES`] free on
//! its disk, and otherwise fails with [`StoreError::DiskFull`] having written nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thicket_types::Height;

use crate::{ArtifactStore, Batch, Op, ROOT_KEY, StoreError, Stored, artifact_key, decode, encode};

/// Free space the store needs on its disk before it opens or writes: room for the batch, a
/// checkpoint and sled's own segments, with a wide margin.
pub const MIN_FREE_BYTES: u64 = 64 << 20;

pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    /// The highest height the store reached (root or artifact), as sealed on disk.
    sealed: u64,
    min_free: u64,
}

/// Fails with [`StoreError::DiskFull`] if the disk holding `path` (or its nearest existing
/// ancestor) has less than `min_free` bytes free to unprivileged writers.
pub fn check_space(path: &Path, min_free: u64) -> Result<(), StoreError> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("."));
    let st = rustix::fs::statvfs(existing)
        .map_err(|e| StoreError::Io(format!("free space of {}: {e}", existing.display())))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < min_free {
        return Err(StoreError::DiskFull {
            path: path.display().to_string(),
            free_mib: free >> 20,
            needed_mib: min_free.div_ceil(1 << 20),
        });
    }
    Ok(())
}

/// How long [`open_db`] waits for the store's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `sled::open`, waiting up to [`LOCK_WAIT`] for the store's file lock. A handle of this
/// process that was just dropped lets go of the lock only once sled's background I/O threads
/// have dropped their references to the file, a moment later (sled's own tests block on the
/// lock for the same reason). Another process that keeps the store open still gets the lock
/// error, after the wait.
pub fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::open(dir) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The seal of the store in `dir`: a file beside it.
pub fn seal_path(dir: &Path) -> PathBuf {
    dir.with_extension("seal")
}

/// The height an artifact key names (`None` for the unordered ones kept at `u64::MAX`).
fn key_height(key: &[u8]) -> Option<u64> {
    let h = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    (h != u64::MAX).then_some(h)
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_min_free(dir, MIN_FREE_BYTES)
    }

    /// Opens the store needing `min_free` bytes free on its disk (rather than
    /// [`MIN_FREE_BYTES`]) to open and to write.
    pub fn open_with_min_free(dir: &Path, min_free: u64) -> Result<Self, StoreError> {
        // Even opening writes (sled recovers its log and writes a snapshot).
        check_space(dir, min_free)?;
        let db = open_db(dir).map_err(|e| match e {
            sled::Error::Corruption { .. } => StoreError::Corrupted {
                key: format!("the database files in {}", dir.display()),
                reason: e.to_string(),
            },
            e => StoreError::Io(format!("opening {}: {e}", dir.display())),
        })?;
        let seal = seal_path(dir);
        let sealed = match std::fs::read(&seal) {
            Ok(b) => {
                u64::from_be_bytes(b.as_slice().try_into().map_err(|_| StoreError::Corrupted {
                    key: seal.display().to_string(),
                    reason: format!("a seal has 8 bytes, not {}", b.len()),
                })?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StoreError::Io(format!("reading {}: {e}", seal.display()))),
        };
        Ok(SledStore {
            db,
            dir: dir.to_path_buf(),
            sealed,
            min_free,
        })
    }

    /// The error of a store that holds heights up to `reached` only, below its seal.
    fn lost(&self, reached: u64) -> StoreError {
        StoreError::Corrupted {
            key: format!("the database files in {}", self.dir.display()),
            reason: format!(
                "the store holds heights up to {reached}, but it reached {} before ({}): \
                 part of it was lost",
                self.sealed,
                seal_path(&self.dir).display()
            ),
        }
    }

    /// Records on disk that the store reached height `h` (after the batch that reached it
    /// is durable): written to a new file, synced and renamed into place.
    fn seal(&mut self, h: u64) -> Result<(), StoreError> {
        use std::io::Write;
        let path = seal_path(&self.dir);
        let tmp = path.with_extension("seal.tmp");
        let io = |e: std::io::Error| StoreError::Io(format!("sealing {}: {e}", path.display()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&h.to_be_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.sealed = h;
        Ok(())
    }

    /// Changes the free space the store needs to write (a test makes a disk look full).
    pub fn set_min_free(&mut self, bytes: u64) {
        self.min_free = bytes;
    }

    /// The database, for other trees that live beside the artifacts (checkpoints).
    pub fn db(&self) -> sled::Db {
        self.db.clone()
    }
}

impl ArtifactStore for SledStore {
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        let Some(root) = self.db.get(ROOT_KEY).map_err(io)? else {
            // Empty, though it reached a height before: it lost everything, root included.
            if self.sealed > 0 {
                return Err(self.lost(0));
            }
            return Ok(None);
        };
        let (root, cup): (thicket_types::artifacts::CatchUpContent, _) = decode(ROOT_KEY, &root)?;
        let mut reached = root.block.height.0;
        let mut artifacts = Vec::new();
        for entry in self.db.range(b"a".to_vec()..b"b".to_vec()) {
            let (k, v) = entry.map_err(io)?;
            let msg: thicket_types::artifacts::ConsensusMessage = decode(&k, &v)?;
            // The key holds the artifact's height and content hash: bytes changed on disk
            // no longer match it.
            if artifact_key(msg.height(), &msg.id()).as_slice() != &k[..] {
                return Err(StoreError::Corrupted {
                    key: crate::describe_key(&k),
                    reason: "its content does not match its key (a changed byte)".into(),
                });
            }
            reached = reached.max(key_height(&k).unwrap_or(0));
            artifacts.push(msg);
        }
        if reached < self.sealed {
            return Err(self.lost(reached));
        }
        Ok(Some(Stored {
            root,
            cup,
            artifacts,
        }))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        // Also covers the checkpoint a step may write next (same database, same disk).
        check_space(&self.dir, self.min_free)?;
        // Operations apply in order: stage them (a purge also drops what this batch put below
        // it), then commit the result as one atomic sled batch.
        let mut staged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for op in batch {
            match op {
                Op::PutRoot(root, cup) => {
                    staged.insert(ROOT_KEY.to_vec(), Some(encode(&(root, cup))?));
                }
                Op::PutArtifact(msg) => {
                    staged.insert(artifact_key(msg.height(), &msg.id()), Some(encode(msg)?));
                }
                Op::Remove { height, id } => {
                    staged.insert(artifact_key(*height, id), None);
                }
                Op::PurgeBelow(h) => {
                    let end = artifact_key(*h, &Default::default());
                    for key in self.db.range(b"a".to_vec()..end.clone()).keys() {
                        staged.insert(key.map_err(io)?.to_vec(), None);
                    }
                    for (_, v) in staged.range_mut(b"a".to_vec()..end) {
                        *v = None;
                    }
                }
            }
        }
        let mut reach = 0;
        for op in batch {
            match op {
                Op::PutRoot(root, _) => reach = reach.max(root.block.height.0),
                Op::PutArtifact(msg) if msg.height() != Height(u64::MAX) => {
                    reach = reach.max(msg.height().0)
                }
                _ => {}
            }
        }
        let mut b = sled::Batch::default();
        for (k, v) in staged {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(io)?;
        self.db.flush().map_err(io)?;
        if reach > self.sealed {
            self.seal(reach)?;
        }
        Ok(())
    }
}
