//! The durable store on sled 0.34: one tree, batches applied atomically, flushed to disk before
//! `write` returns.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{ArtifactStore, Batch, Op, ROOT_KEY, StoreError, Stored, artifact_key, decode, encode};

pub struct SledStore {
    db: sled::Db,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir)
            .map_err(|e| StoreError::Io(format!("opening {}: {e}", dir.display())))?;
        Ok(SledStore { db })
    }

    /// The database, for other trees that live beside the artifacts (checkpoints).
    pub fn db(&self) -> sled::Db {
        self.db.clone()
    }
}

impl ArtifactStore for SledStore {
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        let Some(root) = self.db.get(ROOT_KEY).map_err(io)? else {
            return Ok(None);
        };
        let (root, cup) = decode(ROOT_KEY, &root)?;
        let mut artifacts = Vec::new();
        for entry in self.db.range(b"a".to_vec()..b"b".to_vec()) {
            let (k, v) = entry.map_err(io)?;
            artifacts.push(decode(&k, &v)?);
        }
        Ok(Some(Stored {
            root,
            cup,
            artifacts,
        }))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
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
        let mut b = sled::Batch::default();
        for (k, v) in staged {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }
}
