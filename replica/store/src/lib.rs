//! Durable storage for a replica's consensus state: the pool's root (genesis or the latest
//! catch-up package) and every validated artifact above it.
//!
//! A driver writes the [`Batch`] that [`batch_for`] derives from the roles' mutations *before*
//! applying them to the pool and before gossiping anything: a replica killed at any moment
//! restarts with every artifact it ever sent, so it never signs twice at a height, and with
//! everything it had finalized.
//!
//! # Layout
//! - [`ArtifactStore`]: the trait, with [`memory::MemoryStore`] and [`sled_store::SledStore`];
//! - [`batch_for`]: mutations → store operations; [`restore`]: store → pool;
//! - `tests/conformance.rs`: one suite run against both implementations.
//!
//! ```text
//!  roles ─► mutations ─► batch_for ─► store.write (atomic, durable) ─► pool.apply ─► gossip
//!  restart: store.load ─► restore ─► pool
//! ```
//!
//! Keys are big-endian so that the store's order is height order: `a ‖ height ‖ id` for
//! artifacts, `root` for the root.

pub mod memory;
#[cfg(feature = "sled")]
pub mod sled_store;

use thicket_consensus::pool::{Mutation, Pool};
use thicket_types::artifacts::{CatchUpContent, CatchUpPackage, ConsensusMessage};
use thicket_types::{CryptoHash, Height};

/// Storage failures. All are fatal for the replica: it halts rather than run on without the
/// guarantee that what it signed is on disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O: {0}")]
    Io(String),
    #[error("corrupted entry {key}: {reason}")]
    Corrupted { key: String, reason: String },
    /// Too little free space to write safely: nothing was written, the store is intact.
    #[error(
        "the disk holding {path} is (almost) full: {free_mib} MiB free, and the store writes \
         only with at least {needed_mib} MiB free (its database cannot recover from a write cut \
         short by a full disk); nothing was written and the store is intact: free space, then \
         start the replica again"
    )]
    DiskFull {
        path: String,
        free_mib: u64,
        needed_mib: u64,
    },
}

/// One storage operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Replace the root (genesis or an adopted catch-up package).
    PutRoot(Box<CatchUpContent>, Option<Box<CatchUpPackage>>),
    PutArtifact(ConsensusMessage),
    /// Remove one artifact (an ordered ingress message or registry change).
    Remove {
        height: Height,
        id: CryptoHash,
    },
    /// Remove every artifact below this height.
    PurgeBelow(Height),
}

/// Operations applied atomically.
pub type Batch = Vec<Op>;

/// What a store holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub root: CatchUpContent,
    pub cup: Option<CatchUpPackage>,
    /// Validated artifacts, in height order.
    pub artifacts: Vec<ConsensusMessage>,
}

pub trait ArtifactStore {
    /// Everything stored, or `None` for a fresh store.
    fn load(&self) -> Result<Option<Stored>, StoreError>;
    /// Applies a batch atomically and durably: when this returns, it survives a crash.
    fn write(&mut self, batch: &Batch) -> Result<(), StoreError>;
}

/// The store operations that mirror `mutations` on `pool` (call before applying them).
pub fn batch_for(pool: &Pool, mutations: &[Mutation]) -> Batch {
    let mut batch = Vec::new();
    // Waiting ingress is not stored: it is neither signed nor finalized by this replica (the
    // blocks that order it are), and a client whose message was lost in a crash sees it expire
    // and retries, as on the IC, whose ingress pool is in memory too.
    let kept = |msg: &ConsensusMessage| !matches!(msg, ConsensusMessage::Ingress(_));
    for m in mutations {
        match m {
            Mutation::AddToValidated(msg) if kept(msg) => batch.push(Op::PutArtifact(msg.clone())),
            Mutation::AddToValidated(_) => {}
            Mutation::MoveToValidated(id) => {
                if let Some(msg) = pool.unvalidated_get(id).filter(|m| kept(m)) {
                    batch.push(Op::PutArtifact(msg.clone()));
                }
            }
            Mutation::RemoveFromUnvalidated(_) | Mutation::HandleInvalid(..) => {}
            Mutation::PurgeBelow(h) => batch.push(Op::PurgeBelow(*h)),
            Mutation::AdoptCatchUpPackage(cup) => {
                batch.push(Op::PutRoot(
                    Box::new(cup.content.clone()),
                    Some(cup.clone()),
                ));
                batch.push(Op::PurgeBelow(cup.content.block.height));
            }
            Mutation::RemoveOrdered(id) => {
                if pool.waiting_get(id).is_none_or(kept) {
                    batch.push(Op::Remove {
                        height: Height(u64::MAX),
                        id: *id,
                    })
                }
            }
        }
    }
    batch
}

/// Rebuilds the pool from a store; `genesis` if the store is fresh (and records it).
pub fn restore<S: ArtifactStore>(
    store: &mut S,
    genesis: &CatchUpContent,
) -> Result<Pool, StoreError> {
    let Some(stored) = store.load()? else {
        store.write(&vec![Op::PutRoot(Box::new(genesis.clone()), None)])?;
        return Ok(Pool::new(genesis.clone(), None));
    };
    let mut pool = Pool::new(stored.root, stored.cup);
    pool.apply(
        stored
            .artifacts
            .into_iter()
            .map(Mutation::AddToValidated)
            .collect(),
        0,
    );
    Ok(pool)
}

/// Key of an artifact: `a ‖ height (big-endian) ‖ id`.
pub fn artifact_key(height: Height, id: &CryptoHash) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(b'a');
    k.extend_from_slice(&height.0.to_be_bytes());
    k.extend_from_slice(&id.0);
    k
}

pub const ROOT_KEY: &[u8] = b"root";

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(v).map_err(|e| StoreError::Io(format!("encoding: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|e| StoreError::Corrupted {
        key: describe_key(key),
        reason: e.to_string(),
    })
}

/// A key as people read it: an artifact's height and id, or the key's text.
pub(crate) fn describe_key(key: &[u8]) -> String {
    match (key.first(), key.get(1..9), key.get(9..)) {
        (Some(b'a'), Some(h), Some(id)) => format!(
            "artifact at height {} with id {}",
            u64::from_be_bytes(h.try_into().unwrap_or_default()),
            hex::encode(id)
        ),
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}
