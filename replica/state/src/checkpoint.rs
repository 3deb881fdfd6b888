//! The state's checkpoint encoding. Canister memories travel apart from the rest, so a
//! checkpoint costs what changed since the last one, not the size of the heaps:
//!
//! ```text
//! "THICKET\x01" | meta length (u64) | page maps (u64) | each page map's length (u64) | meta | page maps
//! ```
//!
//! The meta is the state's bincode encoding with each page map written as its length
//! ([`thicket_canister::detached`]). Chunks are cut from the header and meta, then from each
//! page map on its own starting at its first byte: a chunk of a heap that no message changed
//! keeps its bytes, and the page map remembers its hash, so it is neither hashed nor written
//! again. All integers are little-endian. An encoding without the magic is an older plain
//! bincode state, still read.

use thicket_canister::PageMap;
use thicket_canister::detached::{attaching, detaching};
use thicket_types::CryptoHash;
use thicket_types::state::{CHUNK_SIZE, Chunk, ChunkInfo, chunk_hash};

use crate::state::SubnetState;

const MAGIC: &[u8; 8] = b"THICKET\x01";

fn hash(bytes: &[u8]) -> [u8; 32] {
    chunk_hash(bytes).0
}

/// The state as checkpoint chunks.
pub(crate) fn chunks(state: &SubnetState) -> Vec<Chunk> {
    // Straight into a buffer: `bincode::serialize` would walk the state twice (a size pass
    // first), meeting every page map twice.
    let (meta, maps) = detaching(|| {
        let mut meta = Vec::new();
        bincode::serialize_into(&mut meta, state).map(|()| meta)
    });
    let meta = meta.unwrap_or_else(|e| panic!("the state cannot be encoded: {e}"));
    let mut head = Vec::with_capacity(24 + 8 * maps.len() + meta.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    head.extend_from_slice(&(maps.len() as u64).to_le_bytes());
    for m in &maps {
        head.extend_from_slice(&(m.len() as u64).to_le_bytes());
    }
    head.extend_from_slice(&meta);
    let mut chunks = Chunk::split(&head);
    for map in maps {
        for (i, h) in map.chunk_hashes(CHUNK_SIZE, hash).into_iter().enumerate() {
            let (at, size) = (i * CHUNK_SIZE, CHUNK_SIZE.min(map.len() - i * CHUNK_SIZE));
            let map: PageMap = map.clone();
            chunks.push(Chunk {
                info: ChunkInfo {
                    hash: CryptoHash(h),
                    size: size as u32,
                },
                bytes: Box::new(move || map.read(at, size)),
            });
        }
    }
    chunks
}

/// Reads an encoding [`chunks`] made (concatenated), or an older plain one.
pub(crate) fn decode(bytes: &[u8]) -> Result<SubnetState, String> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return bincode::deserialize(bytes).map_err(|e| format!("undecodable state: {e}"));
    };
    let mut at = 0usize;
    let mut word = || -> Result<usize, String> {
        let w = rest
            .get(at..at + 8)
            .ok_or("state encoding cut short in its header")?;
        at += 8;
        let w = u64::from_le_bytes(w.try_into().map_err(|_| "header word")?);
        usize::try_from(w).map_err(|_| format!("length {w} too large"))
    };
    let meta_len = word()?;
    let count = word()?;
    if count > rest.len() / 8 {
        return Err(format!("{count} page maps cannot fit in the encoding"));
    }
    let lens = (0..count).map(|_| word()).collect::<Result<Vec<_>, _>>()?;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let part = at
            .checked_add(n)
            .and_then(|end| rest.get(at..end))
            .ok_or("state encoding cut short")?;
        at += n;
        Ok(part)
    };
    let meta = take(meta_len)?;
    let maps = lens
        .iter()
        .map(|&n| take(n).map(PageMap::from_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    if at != rest.len() {
        return Err(format!(
            "{} bytes after the state encoding",
            rest.len() - at
        ));
    }
    attaching(maps, || {
        bincode::deserialize::<SubnetState>(meta).map_err(Box::<dyn std::error::Error>::from)
    })
    .map_err(|e| format!("undecodable state: {e}"))
}
