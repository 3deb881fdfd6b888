//! The state manager: runs the state machine over finalized blocks, checkpoints at summary
//! heights, answers consensus's state-hash questions, and installs synced state.

use std::collections::BTreeMap;

use thicket_consensus::StateReader;
use thicket_types::artifacts::CatchUpContent;
use thicket_types::block::Block;
use thicket_types::ingress::RequestId;
use thicket_types::state::Manifest;
use thicket_types::{CryptoHash, Height};

use crate::checkpoints::{CheckpointError, CheckpointStore};
use crate::{Batch, IngressStatus, StateMachine};

/// Checkpoints kept on disk: the one the current root certifies, the next, and one spare for
/// peers still syncing the previous one.
pub const KEPT_CHECKPOINTS: usize = 3;

pub struct StateManager<M> {
    machine: M,
    executed: Height,
    hashes: BTreeMap<Height, CryptoHash>,
    store: CheckpointStore,
    /// The pool's root height: its checkpoint is never pruned.
    root: Height,
}

/// Why a synced state was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("chunk {0} does not match the manifest")]
    Chunk(usize),
    #[error("{0}")]
    Decode(String),
    #[error("state claims height {found}, manifest says {expected}")]
    Height { found: Height, expected: Height },
    #[error(transparent)]
    Store(#[from] CheckpointError),
}

impl<M: StateMachine> StateManager<M> {
    /// Opens at the pool's root: genesis starts from the machine's genesis state; a catch-up
    /// package's state is loaded from the local checkpoint if one matches its state hash.
    /// Otherwise the manager stays below the root until [`Self::install`] gets the state.
    pub fn open(store: CheckpointStore, root: &CatchUpContent) -> Result<Self, CheckpointError> {
        let mut m = StateManager {
            machine: M::genesis(),
            executed: Height(0),
            hashes: BTreeMap::new(),
            store,
            root: root.block.height,
        };
        let h = root.block.height;
        if h == Height(0) {
            return Ok(m);
        }
        let local = m.store.load(h).unwrap_or_else(|e| {
            tracing::warn!(height = h.0, error = %e, "local checkpoint unreadable; will sync");
            None
        });
        match local {
            Some((manifest, bytes)) if manifest.hash() == root.state_hash => {
                match M::decode(&bytes) {
                    Ok(machine) => {
                        m.machine = machine;
                        m.executed = h;
                        m.hashes.insert(h, root.state_hash);
                    }
                    Err(e) => tracing::warn!(height = h.0, %e, "checkpoint unusable; will sync"),
                }
            }
            Some(_) => tracing::warn!(
                height = h.0,
                "local checkpoint differs from the catch-up package; will sync"
            ),
            None => {}
        }
        Ok(m)
    }

    /// Follows the pool's root (the checkpoint it certifies is kept).
    pub fn set_root(&mut self, root: Height) {
        self.root = root;
    }

    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, to tell it replica-local facts (never to change its replicated state).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Executes the next finalized block (its height must follow the executed one) and
    /// checkpoints after a summary block.
    pub fn execute(
        &mut self,
        block: &Block,
    ) -> Result<Vec<(RequestId, IngressStatus)>, CheckpointError> {
        debug_assert_eq!(block.height, self.executed.next());
        let out = self.machine.execute(&Batch::of(block));
        self.executed = block.height;
        if block.summary().is_some() {
            let chunks = self.machine.checkpoint();
            let manifest = Manifest {
                height: self.executed,
                chunks: chunks.iter().map(|c| c.info.clone()).collect(),
            };
            self.store.put_chunks(&manifest, chunks)?;
            self.record(self.executed, manifest.hash())?;
        }
        Ok(out)
    }

    fn record(&mut self, h: Height, hash: CryptoHash) -> Result<(), CheckpointError> {
        self.hashes.insert(h, hash);
        while self.hashes.len() > KEPT_CHECKPOINTS {
            self.hashes.pop_first();
        }
        self.store.retain_latest(KEPT_CHECKPOINTS, self.root)
    }

    /// Installs a state fetched from peers: `manifest` was checked against a verified catch-up
    /// package; each chunk is checked here before anything changes.
    pub fn install(
        &mut self,
        manifest: &Manifest,
        chunks: Vec<Vec<u8>>,
    ) -> Result<(), InstallError> {
        for (i, c) in chunks.iter().enumerate() {
            manifest
                .verify_chunk(i, c)
                .map_err(|_| InstallError::Chunk(i))?;
        }
        if chunks.len() != manifest.chunks.len() {
            return Err(InstallError::Chunk(chunks.len()));
        }
        let machine = M::decode(&chunks.concat()).map_err(InstallError::Decode)?;
        if machine.height() != manifest.height {
            return Err(InstallError::Height {
                found: machine.height(),
                expected: manifest.height,
            });
        }
        self.store.put(manifest, &chunks)?;
        self.machine = machine;
        self.executed = manifest.height;
        self.record(manifest.height, manifest.hash())?;
        Ok(())
    }
}

impl<M> StateReader for StateManager<M> {
    fn state_hash(&self, height: Height) -> Option<CryptoHash> {
        self.hashes.get(&height).copied()
    }
    fn executed_height(&self) -> Height {
        self.executed
    }
}
