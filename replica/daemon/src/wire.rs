//! Artifacts on the wire: the canonical encoding in an envelope with the content id. A receiver
//! decodes with a size limit and drops anything whose id does not match its content.

use bincode::Options;
use thicket_proto::p2p::Artifact;
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::{CryptoHash, canonical_bytes};

/// Largest artifact accepted: a block with the IC's 4 MiB payload limit and a summary.
pub const MAX_ARTIFACT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("artifact id must be 32 bytes, got {0}")]
    BadIdLength(usize),
    #[error("artifact does not decode: {0}")]
    Undecodable(String),
    #[error("artifact id does not match its content")]
    IdMismatch,
}

pub fn encode(msg: &ConsensusMessage) -> Artifact {
    Artifact {
        id: msg.id().0.to_vec(),
        body: canonical_bytes(msg),
    }
}

/// Decodes an artifact from a peer. The options are those of `canonical_bytes` (bincode's
/// defaults: fixed-width integers) plus a size limit, so a hostile length prefix cannot make us
/// allocate.
pub fn decode(a: &Artifact) -> Result<(CryptoHash, ConsensusMessage), WireError> {
    let id: [u8; 32] =
        a.id.as_slice()
            .try_into()
            .map_err(|_| WireError::BadIdLength(a.id.len()))?;
    let msg: ConsensusMessage = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_ARTIFACT_BYTES)
        .deserialize(&a.body)
        .map_err(|e| WireError::Undecodable(e.to_string()))?;
    if msg.id().0 != id {
        return Err(WireError::IdMismatch);
    }
    Ok((CryptoHash(id), msg))
}

/// Decodes a peer's checkpoint manifest, bounded like artifacts: a manifest lists chunk
/// hashes, and a hostile length prefix cannot make us allocate more.
pub fn decode_manifest(bytes: &[u8]) -> Option<thicket_types::state::Manifest> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_ARTIFACT_BYTES)
        .deserialize(bytes)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejections() {
        let msg = ConsensusMessage::Ingress(b"hello".to_vec());
        let a = encode(&msg);
        assert_eq!(decode(&a).unwrap().1, msg);
        let mut wrong = a.clone();
        wrong.id[0] ^= 1;
        assert_eq!(decode(&wrong), Err(WireError::IdMismatch));
        let mut short = a.clone();
        short.id.pop();
        assert_eq!(decode(&short), Err(WireError::BadIdLength(31)));
        let garbage = Artifact {
            id: a.id.clone(),
            body: vec![0xff; 16],
        };
        assert!(matches!(decode(&garbage), Err(WireError::Undecodable(_))));
        // A length prefix claiming 2^60 bytes must not allocate.
        let mut huge = vec![12u8, 0, 0, 0]; // variant Ingress, then its length
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode(&Artifact {
                id: a.id,
                body: huge
            }),
            Err(WireError::Undecodable(_))
        ));
    }
}
