//! Checkpoints on sled: manifests by height, chunks by content hash (shared between
//! checkpoints that contain the same bytes). The transport serves them to peers that sync.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use thicket_types::state::{Chunk, Manifest, chunk_hash};
use thicket_types::{CryptoHash, Height};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint storage I/O: {0}")]
    Io(String),
    #[error("corrupted checkpoint {what}: {reason}")]
    Corrupted { what: String, reason: String },
}

fn io(e: sled::Error) -> CheckpointError {
    CheckpointError::Io(e.to_string())
}

/// Handles to the checkpoint trees; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct CheckpointStore {
    db: sled::Db,
    manifests: sled::Tree,
    chunks: sled::Tree,
    /// The hashes of the chunks stored, read from the store once (when first needed) and
    /// kept up to date by this handle and its clones: whether a chunk is stored is then
    /// known without reading it (a sled lookup reads the value, 256 KiB, for every chunk of
    /// every heap at each checkpoint).
    held: Arc<Mutex<Option<HashSet<[u8; 32]>>>>,
}

impl CheckpointStore {
    /// The checkpoint trees of `db`. Open them once per database and clone the handle:
    /// clones share what they know of the stored chunks, separately opened handles do not.
    pub fn open(db: &sled::Db) -> Result<Self, CheckpointError> {
        Ok(CheckpointStore {
            db: db.clone(),
            manifests: db.open_tree("checkpoint-manifests").map_err(io)?,
            chunks: db.open_tree("checkpoint-chunks").map_err(io)?,
            held: Arc::default(),
        })
    }

    /// Runs `f` on the set of stored chunk hashes (read from the store the first time).
    fn with_held<R>(
        &self,
        f: impl FnOnce(&mut HashSet<[u8; 32]>) -> Result<R, CheckpointError>,
    ) -> Result<R, CheckpointError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            let mut known = HashSet::new();
            for k in self.chunks.iter().keys() {
                if let Ok(h) = <[u8; 32]>::try_from(k.map_err(io)?.as_ref()) {
                    known.insert(h);
                }
            }
            *held = Some(known);
        }
        f(held.get_or_insert_default())
    }

    /// A store in a temporary sled database (tests, tools).
    pub fn temporary() -> Result<Self, CheckpointError> {
        let db = sled::Config::new().temporary(true).open().map_err(io)?;
        Self::open(&db)
    }

    /// Writes the chunks, then the manifest, and flushes: a manifest on disk always has its
    /// chunks.
    pub fn put(&self, manifest: &Manifest, chunks: &[Vec<u8>]) -> Result<(), CheckpointError> {
        self.with_held(|held| {
            for (info, bytes) in manifest.chunks.iter().zip(chunks) {
                self.chunks
                    .insert(info.hash.0, bytes.as_slice())
                    .map_err(io)?;
                held.insert(info.hash.0);
            }
            Ok(())
        })?;
        self.put_manifest(manifest)
    }

    /// [`Self::put`] for chunks a state produced: a chunk already stored (under its content
    /// hash, by an earlier checkpoint) is neither produced nor written again.
    pub fn put_chunks(
        &self,
        manifest: &Manifest,
        chunks: Vec<Chunk>,
    ) -> Result<(), CheckpointError> {
        self.with_held(|held| {
            for c in chunks {
                if !held.contains(&c.info.hash.0) {
                    self.chunks.insert(c.info.hash.0, (c.bytes)()).map_err(io)?;
                    held.insert(c.info.hash.0);
                }
            }
            Ok(())
        })?;
        self.put_manifest(manifest)
    }

    fn put_manifest(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let encoded =
            bincode::serialize(manifest).map_err(|e| CheckpointError::Io(e.to_string()))?;
        self.manifests
            .insert(manifest.height.0.to_be_bytes(), encoded)
            .map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    pub fn manifest(&self, height: Height) -> Result<Option<Manifest>, CheckpointError> {
        let Some(bytes) = self.manifests.get(height.0.to_be_bytes()).map_err(io)? else {
            return Ok(None);
        };
        bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupted {
                what: format!("manifest at height {height}"),
                reason: e.to_string(),
            })
    }

    /// A chunk by its hash, if held and intact.
    pub fn chunk(&self, hash: &CryptoHash) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some(bytes) = self.chunks.get(hash.0).map_err(io)? else {
            return Ok(None);
        };
        if chunk_hash(&bytes) != *hash {
            return Err(CheckpointError::Corrupted {
                what: format!("chunk {hash}"),
                reason: "content does not match its hash".into(),
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Heights with a checkpoint, ascending.
    pub fn heights(&self) -> Result<Vec<Height>, CheckpointError> {
        self.manifests
            .iter()
            .keys()
            .map(|k| {
                let k = k.map_err(io)?;
                let b: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| CheckpointError::Corrupted {
                        what: "manifest key".into(),
                        reason: format!("{} bytes", k.len()),
                    })?;
                Ok(Height(u64::from_be_bytes(b)))
            })
            .collect()
    }

    /// The whole state encoding of the checkpoint at `height`, every chunk checked.
    pub fn load(&self, height: Height) -> Result<Option<(Manifest, Vec<u8>)>, CheckpointError> {
        let Some(manifest) = self.manifest(height)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(manifest.total_size() as usize);
        for info in &manifest.chunks {
            let chunk = self
                .chunk(&info.hash)?
                .ok_or_else(|| CheckpointError::Corrupted {
                    what: format!("checkpoint at height {height}"),
                    reason: format!("chunk {} missing", info.hash),
                })?;
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((manifest, bytes)))
    }

    /// Keeps the newest `keep` checkpoints, the one at `root` (the checkpoint the pool's root
    /// certifies must survive: after a restart it is where execution resumes), and the chunks
    /// they use.
    pub fn retain_latest(&self, keep: usize, root: Height) -> Result<(), CheckpointError> {
        let heights = self.heights()?;
        let newest = heights.len().saturating_sub(keep);
        let (dropped, kept): (Vec<_>, Vec<_>) = heights
            .iter()
            .enumerate()
            .partition(|(i, h)| *i < newest && **h != root);
        if dropped.is_empty() {
            return Ok(());
        }
        for (_, h) in &dropped {
            self.manifests.remove(h.0.to_be_bytes()).map_err(io)?;
        }
        let mut used = std::collections::BTreeSet::new();
        for (_, h) in &kept {
            if let Some(m) = self.manifest(**h)? {
                used.extend(m.chunks.iter().map(|c| c.hash.0));
            }
        }
        self.with_held(|held| {
            let unused: Vec<[u8; 32]> = held
                .iter()
                .filter(|h| !used.contains(*h))
                .copied()
                .collect();
            for h in unused {
                self.chunks.remove(h).map_err(io)?;
                held.remove(&h);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_load_and_retain() {
        let store = CheckpointStore::temporary().expect("temporary store");
        for h in 1..=4u64 {
            let bytes = vec![h as u8; 300_000];
            let (m, chunks) = Manifest::split(Height(h * 10), &bytes);
            store.put(&m, &chunks).expect("put");
        }
        let (m, bytes) = store.load(Height(20)).expect("load").expect("present");
        assert_eq!(m.height, Height(20));
        assert_eq!(bytes, vec![2u8; 300_000]);
        store.retain_latest(2, Height(20)).expect("retain");
        assert_eq!(
            store.heights().expect("heights"),
            vec![Height(20), Height(30), Height(40)],
            "the root's checkpoint stays"
        );
        store.retain_latest(2, Height(0)).expect("retain");
        assert_eq!(
            store.heights().expect("heights"),
            vec![Height(30), Height(40)]
        );
        assert!(store.load(Height(20)).expect("load").is_none());
        assert_eq!(store.chunks.len(), 4, "two chunks for each kept checkpoint");
    }

    #[test]
    fn stored_chunks_are_neither_produced_nor_written_again() {
        use thicket_types::state::ChunkInfo;
        let chunk = |bytes: &'static [u8], produce: bool| Chunk {
            info: ChunkInfo {
                hash: chunk_hash(bytes),
                size: bytes.len() as u32,
            },
            bytes: Box::new(move || {
                assert!(produce, "a stored chunk was produced again");
                bytes.to_vec()
            }),
        };
        let manifest = |h: u64, parts: &[&[u8]]| Manifest {
            height: Height(h),
            chunks: parts
                .iter()
                .map(|b| ChunkInfo {
                    hash: chunk_hash(b),
                    size: b.len() as u32,
                })
                .collect(),
        };
        let db = sled::Config::new().temporary(true).open().expect("db");
        let store = CheckpointStore::open(&db).expect("store");
        let (m, chunks) = Manifest::split(Height(1), b"old");
        store.put(&m, &chunks).expect("put");
        let m = manifest(2, &[b"old", b"new"]);
        store
            .put_chunks(&m, vec![chunk(b"old", false), chunk(b"new", true)])
            .expect("put chunks");
        // Another handle on the same store reads what is stored from it.
        let again = CheckpointStore::open(&db).expect("store");
        let m = manifest(3, &[b"new", b"newer"]);
        again
            .put_chunks(&m, vec![chunk(b"new", false), chunk(b"newer", true)])
            .expect("put chunks");
        assert_eq!(
            again.load(Height(3)).expect("load").expect("held").1,
            b"newnewer"
        );
        again.retain_latest(1, Height(0)).expect("retain");
        assert_eq!(again.chunks.len(), 2);
        // Dropped chunks are known to be gone: stored again when a checkpoint needs them.
        let m = manifest(4, &[b"old"]);
        again
            .put_chunks(&m, vec![chunk(b"old", true)])
            .expect("put chunks");
        assert_eq!(
            again.load(Height(4)).expect("load").expect("held").1,
            b"old"
        );
    }

    #[test]
    fn a_corrupted_chunk_is_reported() {
        let store = CheckpointStore::temporary().expect("temporary store");
        let (m, chunks) = Manifest::split(Height(5), b"state");
        store.put(&m, &chunks).expect("put");
        store
            .chunks
            .insert(m.chunks[0].hash.0, b"other".as_slice())
            .expect("insert");
        let err = store.load(Height(5)).expect_err("corrupted");
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
