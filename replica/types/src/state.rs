//! Checkpoints of the replicated state as they travel in state sync: the state's canonical
//! encoding split into chunks, and a manifest listing each chunk's hash. The hash of the
//! manifest is the state hash a catch-up package certifies, so a replica that holds a verified
//! CUP can check a manifest from any peer, and then every chunk against the manifest.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CryptoHash, Height, hash_of};

/// Chunk size for state sync: small enough that one chunk is one bounded gRPC message.
pub const CHUNK_SIZE: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub hash: CryptoHash,
    pub size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub height: Height,
    pub chunks: Vec<ChunkInfo>,
}

/// Why assembled state bytes were refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {index} does not match the manifest")]
    Mismatch { index: usize },
    #[error("chunk index {index} beyond the manifest's {count} chunks")]
    OutOfRange { index: usize, count: usize },
}

pub fn chunk_hash(bytes: &[u8]) -> CryptoHash {
    let mut h = Sha256::new();
    h.update(b"\x12thicket-state-chunk");
    h.update(bytes);
    CryptoHash(h.finalize().into())
}

/// One chunk of a checkpoint as the state produces it: what the manifest lists, and its bytes
/// on demand (a store that already holds a chunk with this hash never asks for them).
pub struct Chunk {
    pub info: ChunkInfo,
    pub bytes: Box<dyn FnOnce() -> Vec<u8> + Send>,
}

impl Chunk {
    /// Bytes already at hand, cut into chunks.
    pub fn split(bytes: &[u8]) -> Vec<Chunk> {
        bytes
            .chunks(CHUNK_SIZE)
            .map(|c| {
                let info = ChunkInfo {
                    hash: chunk_hash(c),
                    size: c.len() as u32,
                };
                let c = c.to_vec();
                Chunk {
                    info,
                    bytes: Box::new(move || c),
                }
            })
            .collect()
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.info.fmt(f)
    }
}

impl Manifest {
    /// Splits a state encoding into chunks and lists them.
    pub fn split(height: Height, bytes: &[u8]) -> (Manifest, Vec<Vec<u8>>) {
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK_SIZE).map(<[u8]>::to_vec).collect();
        let infos = chunks
            .iter()
            .map(|c| ChunkInfo {
                hash: chunk_hash(c),
                size: c.len() as u32,
            })
            .collect();
        (
            Manifest {
                height,
                chunks: infos,
            },
            chunks,
        )
    }

    /// The state hash: what a catch-up package certifies.
    pub fn hash(&self) -> CryptoHash {
        hash_of("thicket-state-manifest", self)
    }

    /// Checks one chunk against the manifest.
    pub fn verify_chunk(&self, index: usize, bytes: &[u8]) -> Result<(), ChunkError> {
        let info = self.chunks.get(index).ok_or(ChunkError::OutOfRange {
            index,
            count: self.chunks.len(),
        })?;
        if info.size as usize != bytes.len() || info.hash != chunk_hash(bytes) {
            return Err(ChunkError::Mismatch { index });
        }
        Ok(())
    }

    pub fn total_size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.size)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_verify() {
        let bytes: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17))
            .map(|i| (i / 7 % 251) as u8)
            .collect();
        let (m, chunks) = Manifest::split(Height(7), &bytes);
        assert_eq!(m.chunks.len(), 3);
        assert_eq!(m.total_size(), bytes.len() as u64);
        for (i, c) in chunks.iter().enumerate() {
            m.verify_chunk(i, c).expect("own chunk");
        }
        assert_eq!(
            m.verify_chunk(1, &chunks[0]),
            Err(ChunkError::Mismatch { index: 1 })
        );
        assert_eq!(
            m.verify_chunk(3, &chunks[0]),
            Err(ChunkError::OutOfRange { index: 3, count: 3 })
        );
        assert_eq!(chunks.concat(), bytes);
        let (m2, _) = Manifest::split(Height(8), &bytes);
        assert_ne!(m.hash(), m2.hash(), "the height is certified too");
    }
}
