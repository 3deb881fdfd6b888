//! In-memory store: for tests and the simulator (a "disk" that survives a simulated crash).

use std::collections::BTreeMap;

use crate::{ArtifactStore, Batch, Op, ROOT_KEY, StoreError, Stored, artifact_key, decode, encode};

/// Encoded entries by key, exactly as the sled store keeps them.
#[derive(Default, Clone)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl ArtifactStore for MemoryStore {
    fn load(&self) -> Result<Option<Stored>, StoreError> {
        let Some(root) = self.entries.get(ROOT_KEY) else {
            return Ok(None);
        };
        let (root, cup) = decode(ROOT_KEY, root)?;
        let artifacts = self
            .entries
            .range(b"a".to_vec()..b"b".to_vec())
            .map(|(k, v)| decode(k, v))
            .collect::<Result<_, _>>()?;
        Ok(Some(Stored {
            root,
            cup,
            artifacts,
        }))
    }

    fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        // Encode everything first, so that a failure leaves the store unchanged.
        let mut staged = Vec::with_capacity(batch.len());
        for op in batch {
            staged.push(match op {
                Op::PutRoot(root, cup) => Staged::Put(ROOT_KEY.to_vec(), encode(&(root, cup))?),
                Op::PutArtifact(msg) => {
                    Staged::Put(artifact_key(msg.height(), &msg.id()), encode(msg)?)
                }
                Op::Remove { height, id } => Staged::Delete(artifact_key(*height, id)),
                Op::PurgeBelow(h) => Staged::PurgeBelow(artifact_key(*h, &Default::default())),
            });
        }
        for s in staged {
            match s {
                Staged::Put(k, v) => {
                    self.entries.insert(k, v);
                }
                Staged::Delete(k) => {
                    self.entries.remove(&k);
                }
                Staged::PurgeBelow(end) => self
                    .entries
                    .retain(|k, _| !(k.first() == Some(&b'a') && *k < end)),
            }
        }
        Ok(())
    }
}

enum Staged {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    PurgeBelow(Vec<u8>),
}
