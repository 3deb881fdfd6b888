//! The Wasm chunk store of each canister: `upload_chunk`, `stored_chunks`,
//! `clear_chunk_store`, and `install_chunked_code`, which installs a module assembled from a
//! store's chunks (modules larger than one message can carry).

use candid::Principal;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use thicket_canister::{PageMap, Runtime};

use super::{
    CanisterIdRecord, ChangeOrigin, ChunkHash, InstallCodeArgs, InstallMode, UploadChunkArgs,
};
use crate::canister::Canister;
use crate::limits::MAX_WASM_BYTES;
use crate::reject::Reject;
use crate::state::SubnetState;

/// The largest chunk, and the most chunks a store holds (the IC's limits).
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
pub const MAX_STORED_CHUNKS: usize = 100;

/// `install_chunked_code`'s argument (its mode has the same Candid type as `install_code`'s).
#[derive(candid::CandidType, candid::Deserialize, Clone, Debug)]
pub struct InstallChunkedCodeArgs {
    pub mode: InstallMode,
    pub target_canister: Principal,
    pub store_canister: Option<Principal>,
    pub chunk_hashes_list: Vec<ChunkHash>,
    pub wasm_module_hash: ByteBuf,
    pub arg: ByteBuf,
    pub sender_canister_version: Option<u64>,
}

impl SubnetState {
    /// The canister `id`, if `caller` controls it or is it (a canister may use its own
    /// chunk store).
    fn store_of(&mut self, id: &Principal, caller: &Principal) -> Result<&mut Canister, Reject> {
        if id == caller && self.canisters.contains_key(id) {
            return self
                .canisters
                .get_mut(id)
                .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")));
        }
        self.controlled(id, caller)
    }

    pub(crate) fn upload_chunk(
        &mut self,
        caller: &Principal,
        a: UploadChunkArgs,
    ) -> Result<ChunkHash, Reject> {
        if a.chunk.len() > MAX_CHUNK_BYTES {
            return Err(Reject::new(
                408,
                format!(
                    "A chunk has at most {MAX_CHUNK_BYTES} bytes, not {}",
                    a.chunk.len()
                ),
            ));
        }
        let c = self.store_of(&a.canister_id, caller)?;
        let hash = ByteBuf::from(Sha256::digest(&a.chunk).to_vec());
        if !c.extra.chunks.contains_key(&hash) {
            if c.extra.chunks.len() >= MAX_STORED_CHUNKS {
                return Err(Reject::new(
                    408,
                    format!(
                        "The chunk store of {} is full ({MAX_STORED_CHUNKS} chunks): clear it first",
                        a.canister_id
                    ),
                ));
            }
            c.extra
                .chunks
                .insert(hash.clone(), PageMap::from_bytes(&a.chunk));
        }
        Ok(ChunkHash {
            hash: hash.into_vec(),
        })
    }

    pub(crate) fn stored_chunks(
        &mut self,
        caller: &Principal,
        a: CanisterIdRecord,
    ) -> Result<Vec<ChunkHash>, Reject> {
        let c = self.store_of(&a.canister_id, caller)?;
        Ok(c.extra
            .chunks
            .keys()
            .map(|h| ChunkHash { hash: h.to_vec() })
            .collect())
    }

    pub(crate) fn clear_chunk_store(
        &mut self,
        caller: &Principal,
        a: CanisterIdRecord,
    ) -> Result<(), Reject> {
        self.store_of(&a.canister_id, caller)?.extra.chunks.clear();
        Ok(())
    }

    /// Installs the module made of the named chunks of the store canister (the target's own
    /// store if none is named), once its hash is the one given.
    pub(crate) fn install_chunked_code(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        by: &ChangeOrigin,
        a: InstallChunkedCodeArgs,
    ) -> Result<(), Reject> {
        let store_id = a.store_canister.unwrap_or(a.target_canister);
        let store = self.store_of(&store_id, caller)?;
        let mut wasm = Vec::new();
        for h in &a.chunk_hashes_list {
            let chunk = store
                .extra
                .chunks
                .get(serde_bytes::Bytes::new(&h.hash))
                .ok_or_else(|| {
                    Reject::new(
                        408,
                        format!(
                            "The chunk store of {store_id} has no chunk with hash {}",
                            hex::encode(&h.hash)
                        ),
                    )
                })?;
            if wasm.len() + chunk.len() > MAX_WASM_BYTES {
                return Err(Reject::new(
                    408,
                    format!("The module would exceed {MAX_WASM_BYTES} bytes"),
                ));
            }
            wasm.extend_from_slice(&chunk.to_vec());
        }
        let hash = Sha256::digest(&wasm);
        if hash.as_slice() != a.wasm_module_hash.as_slice() {
            return Err(Reject::new(
                408,
                format!(
                    "The chunks make a module with hash {}, not the {} given",
                    hex::encode(hash),
                    hex::encode(&a.wasm_module_hash)
                ),
            ));
        }
        self.install_code(
            rt,
            caller,
            by,
            InstallCodeArgs {
                mode: a.mode,
                canister_id: a.target_canister,
                wasm_module: ByteBuf::from(wasm),
                arg: a.arg,
                sender_canister_version: a.sender_canister_version,
            },
        )
    }
}
