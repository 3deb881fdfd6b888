//! The state's checkpoint encoding. Canister memories and the ingress history travel apart
//! from the rest, so a checkpoint costs what changed since the last one, not the size of the
//! heaps or of the history:
//!
//! ```text
//! "THICKET\x04" | meta length (u64) | history length (u64) | page maps (u64)
//!     | each page map's length (u64) | meta | history | page maps
//! ```
//!
//! The meta is the state's bincode encoding with each page map written as its length
//! ([`thicket_canister::detached`]) and the history left out. The history is its entries,
//! each the bincode encoding of (request id, entry), ordered by expiry then id: new requests
//! are added at the end and expired ones leave at the front. Chunks are cut from the header
//! and meta; from the history after each entry whose id starts with a zero byte (about every
//! 256 entries, and at most [`CHUNK_SIZE`] bytes), so a part of the history that did not
//! change gives the same chunks, which are not written again; and from each page map on its
//! own starting at its first byte: a chunk of a heap that no message changed keeps its
//! bytes, and the page map remembers its hash, so it is neither hashed nor written again.
//! All integers are little-endian. Older encodings are still read: `"THICKET\x03"` (the same
//! layout, without the system canisters' [`crate::ledger::SystemState`]), `"THICKET\x02"`
//! (also canisters without their [`crate::canister::Extra`]), `"THICKET\x01"` (the
//! history inside the meta too) and plain bincode (no magic).

use thicket_canister::PageMap;
use thicket_canister::detached::{attaching, detaching};
use thicket_types::CryptoHash;
use thicket_types::ingress::RequestId;
use thicket_types::state::{CHUNK_SIZE, Chunk, ChunkInfo, chunk_hash};

use crate::canister::before_extra;
use crate::ledger::before_system;
use crate::state::{HistoryEntry, SubnetState, with_history, without_history};

const MAGIC: &[u8; 8] = b"THICKET\x04";
/// The same layout, from before the system canisters' state.
const MAGIC_3: &[u8; 8] = b"THICKET\x03";
/// The same layout, from before canisters had their `Extra`.
const MAGIC_2: &[u8; 8] = b"THICKET\x02";
/// The encoding with the history inside the meta.
const MAGIC_1: &[u8; 8] = b"THICKET\x01";

fn hash(bytes: &[u8]) -> [u8; 32] {
    chunk_hash(bytes).0
}

/// The state as checkpoint chunks.
pub(crate) fn chunks(state: &SubnetState) -> Vec<Chunk> {
    // Straight into a buffer: `bincode::serialize` would walk the state twice (a size pass
    // first), meeting every page map twice.
    let (meta, maps) = detaching(|| {
        without_history(|| {
            let mut meta = Vec::new();
            bincode::serialize_into(&mut meta, state).map(|()| meta)
        })
    });
    let meta = meta.unwrap_or_else(|e| panic!("the state cannot be encoded: {e}"));
    let (history, cuts) = history(state);
    let mut head = Vec::with_capacity(32 + 8 * maps.len() + meta.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    head.extend_from_slice(&(history.len() as u64).to_le_bytes());
    head.extend_from_slice(&(maps.len() as u64).to_le_bytes());
    for m in &maps {
        head.extend_from_slice(&(m.len() as u64).to_le_bytes());
    }
    head.extend_from_slice(&meta);
    let mut chunks = Chunk::split(&head);
    let mut from = 0;
    for to in cuts {
        chunks.extend(Chunk::split(&history[from..to]));
        from = to;
    }
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

/// The history as the checkpoint carries it (see the module's doc), and where its chunks
/// end.
fn history(state: &SubnetState) -> (Vec<u8>, Vec<usize>) {
    let mut entries: Vec<_> = state.history().iter().collect();
    entries.sort_unstable_by_key(|(id, e)| (e.expiry, **id));
    let (mut bytes, mut cuts) = (Vec::new(), Vec::new());
    let mut from = 0;
    for (id, e) in entries {
        let at = bytes.len();
        bincode::serialize_into(&mut bytes, &(id, e))
            .unwrap_or_else(|e| panic!("the history cannot be encoded: {e}"));
        if at > from && bytes.len() - from > CHUNK_SIZE {
            cuts.push(at);
            from = at;
        }
        if id.0[0] == 0 {
            cuts.push(bytes.len());
            from = bytes.len();
        }
    }
    if from < bytes.len() {
        cuts.push(bytes.len());
    }
    (bytes, cuts)
}

/// Reads an encoding [`chunks`] made (concatenated), or an older one.
pub(crate) fn decode(bytes: &[u8]) -> Result<SubnetState, String> {
    if let Some(rest) = bytes.strip_prefix(MAGIC) {
        return decode_layout(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(MAGIC_3) {
        return before_system(|| decode_layout(rest, true));
    }
    if let Some(rest) = bytes.strip_prefix(MAGIC_2) {
        return before_system(|| before_extra(|| decode_layout(rest, true)));
    }
    if let Some(rest) = bytes.strip_prefix(MAGIC_1) {
        return before_system(|| before_extra(|| decode_layout(rest, false)));
    }
    // Plain bincode: the state as it is now, or as it was before the system canisters' state
    // (and before the canister extras).
    bincode::deserialize(bytes)
        .or_else(|_| before_system(|| bincode::deserialize(bytes)))
        .or_else(|_| before_system(|| before_extra(|| bincode::deserialize(bytes))))
        .map_err(|e| format!("undecodable state: {e}"))
}

/// The encoding after its magic, with the history apart or inside the meta.
fn decode_layout(rest: &[u8], history_apart: bool) -> Result<SubnetState, String> {
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
    let history_len = if history_apart { word()? } else { 0 };
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
    let mut history_bytes = take(history_len)?;
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
    let decode_meta = || {
        attaching(maps, || {
            bincode::deserialize::<SubnetState>(meta).map_err(Box::<dyn std::error::Error>::from)
        })
        .map_err(|e| format!("undecodable state: {e}"))
    };
    if !history_apart {
        return decode_meta();
    }
    let mut history = std::collections::BTreeMap::new();
    while !history_bytes.is_empty() {
        let (id, e): (RequestId, HistoryEntry) = bincode::deserialize_from(&mut history_bytes)
            .map_err(|e| format!("undecodable history: {e}"))?;
        history.insert(id, e);
    }
    with_history(history, decode_meta)
}

#[cfg(test)]
mod tests {
    use thicket_execution::StateMachine;

    use super::*;

    #[test]
    fn encodings_with_the_history_inside_are_still_read() {
        let mut state = SubnetState::genesis();
        let msg = thicket_types::ingress::IngressMessage {
            sender: vec![4],
            canister_id: vec![0xff],
            method_name: "m".into(),
            arg: vec![],
            ingress_expiry: 1_900_000_060_000_000_000,
            nonce: None,
        };
        let bytes = thicket_types::ingress::SignedIngress::anonymous(msg).to_bytes();
        state.execute(&thicket_execution::Batch {
            height: thicket_types::Height(1),
            time_ns: 1_900_000_000_000_000_000,
            ingress: vec![&bytes],
        });
        assert_eq!(state.history().len(), 1);
        // The older layout: no history length, the history inside the meta, no canister
        // extras.
        let meta = before_system(|| before_extra(|| bincode::serialize(&state))).expect("encodes");
        let mut old = MAGIC_1.to_vec();
        old.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        old.extend_from_slice(&0u64.to_le_bytes());
        old.extend_from_slice(&meta);
        let mut again = decode(&old).expect("decodes");
        assert_eq!(again.history(), state.history());
        // That format had no system canisters' state.
        again.system = state.system.clone();
        assert_eq!(again.encode(), state.encode());
    }

    #[test]
    fn encodings_from_before_the_canister_extras_are_still_read() {
        let mut state = SubnetState::genesis();
        let mut c = crate::canister::Canister::new(Default::default(), 5, 1);
        c.extra.log.push(1, b"printed".to_vec(), 4096);
        let id = crate::ids::canister_id(3);
        state.canisters.insert(id, c);
        let now = state.encode();
        let again = decode(&now).expect("decodes");
        assert_eq!(again.canister(&id), state.canister(&id));
        // The same layout under the magic of format 2, written without the extras: the
        // canister comes back with default ones, the rest as it was.
        let mut old = before_system(|| before_extra(|| state.encode()));
        old[..8].copy_from_slice(MAGIC_2);
        let mut back = decode(&old).expect("decodes");
        let c = back.canisters.get_mut(&id).expect("the canister");
        assert!(c.extra.log.records.is_empty());
        c.extra = state.canister(&id).expect("it").extra.clone();
        back.system = state.system.clone();
        assert_eq!(back.encode(), now);
    }

    #[test]
    fn encodings_from_before_the_system_canisters_are_still_read() {
        let mut state = SubnetState::genesis();
        let who = icrc_ledger_types::icrc1::account::Account {
            owner: candid::Principal::from_slice(&[9; 29]),
            subaccount: None,
        };
        std::sync::Arc::make_mut(&mut state.system)
            .ledger
            .credit(&who, 7);
        let now = state.encode();
        assert_eq!(
            decode(&now).expect("decodes").system().ledger.balance(&who),
            7
        );
        // Format 3: the same layout without the system canisters' state, which comes back
        // empty; the rest as it was.
        let mut old = before_system(|| state.encode());
        old[..8].copy_from_slice(MAGIC_3);
        let mut back = decode(&old).expect("decodes");
        assert_eq!(back.system().ledger.balance(&who), 0);
        back.system = state.system.clone();
        assert_eq!(back.encode(), now);
    }
}
