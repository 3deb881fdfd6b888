//! State sync: fetch the checkpoint a verified catch-up package certifies, from any peers,
//! trusting none of them. The manifest must hash to the CUP's state hash; every chunk must
//! match the manifest. Chunks already held locally (from an older checkpoint) are not fetched.

use thicket_execution::checkpoints::CheckpointStore;
use thicket_types::state::Manifest;
use thicket_types::{CryptoHash, Height};

use crate::transport::Peers;

/// A verified checkpoint, ready to install.
pub struct Synced {
    pub manifest: Manifest,
    pub chunks: Vec<Vec<u8>>,
    /// Chunks fetched from peers (the rest were held locally).
    pub fetched: usize,
}

/// Fetches the checkpoint at `height` whose manifest hashes to `state_hash`. Returns `None`
/// when no peer can serve all of it now; the caller retries later.
pub async fn fetch_state(
    peers: &Peers,
    local: &CheckpointStore,
    height: Height,
    state_hash: CryptoHash,
) -> Option<Synced> {
    let ids = peers.ids();
    let mut manifest = None;
    for peer in &ids {
        match peers.manifest(*peer, height).await {
            Some(m) if m.hash() == state_hash && m.height == height => {
                manifest = Some(m);
                break;
            }
            Some(_) => tracing::warn!(
                peer = peer.0,
                height = height.0,
                "peer sent a manifest the CUP does not certify"
            ),
            None => {}
        }
    }
    let manifest = manifest?;
    let mut chunks = Vec::with_capacity(manifest.chunks.len());
    let mut fetched = 0;
    for (index, info) in manifest.chunks.iter().enumerate() {
        if let Ok(Some(c)) = local.chunk(&info.hash) {
            chunks.push(c);
            continue;
        }
        // Spread the chunks over the peers, moving on from one that fails or lies.
        let mut got = None;
        for k in 0..ids.len() {
            let peer = ids[(index + k) % ids.len()];
            let Some(c) = peers.chunk(peer, height, index as u32).await else {
                continue;
            };
            if manifest.verify_chunk(index, &c).is_ok() {
                got = Some(c);
                break;
            }
            tracing::warn!(
                peer = peer.0,
                index,
                "peer sent a chunk that does not match the manifest"
            );
        }
        chunks.push(got?);
        fetched += 1;
    }
    Some(Synced {
        manifest,
        chunks,
        fetched,
    })
}
