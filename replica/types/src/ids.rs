//! Identifiers and content hashing.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Block height; the genesis summary is height 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Height(pub u64);

/// Block-maker rank within a round: 0 is the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rank(pub u64);

/// A replica's identity in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// SHA-256 of an artifact's canonical encoding.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CryptoHash(pub [u8; 32]);

impl Height {
    pub fn next(self) -> Height {
        Height(self.0 + 1)
    }
    /// The previous height; saturates at genesis.
    pub fn prev(self) -> Height {
        Height(self.0.saturating_sub(1))
    }
}

impl std::fmt::Display for Height {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node-{}", self.0)
    }
}

impl std::fmt::Debug for CryptoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &hex::encode(self.0)[..12])
    }
}

impl std::fmt::Display for CryptoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Canonical, deterministic encoding (bincode with fixed-width integers, fields in declaration
/// order, maps only as `BTreeMap`). Encoding our own in-memory types cannot fail.
pub fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serialize(value).unwrap_or_default()
}

/// Bytes a signature covers: length-prefixed domain, then the canonical encoding.
pub fn signing_bytes<T: Serialize + ?Sized>(domain: &str, value: &T) -> Vec<u8> {
    thicket_crypto::bls::domain_separated(domain, &canonical_bytes(value))
}

/// Content hash under a domain.
pub fn hash_of<T: Serialize + ?Sized>(domain: &str, value: &T) -> CryptoHash {
    CryptoHash(Sha256::digest(signing_bytes(domain, value)).into())
}
