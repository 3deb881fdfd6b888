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

/// Byte strings encoded as bytes, not as sequences of numbers (with bincode the same encoding,
/// a length and the bytes, written and read at once rather than byte by byte).
pub mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| serde_bytes::Bytes::new(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<serde_bytes::ByteBuf>::deserialize(d)?;
        Ok(v.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[test]
    fn byte_strings_encode_as_vectors_of_bytes_do() {
        #[derive(Serialize)]
        struct Plain(Vec<Vec<u8>>);
        #[derive(Serialize, Deserialize)]
        struct Strings(#[serde(with = "super::byte_strings")] Vec<Vec<u8>>);
        #[derive(Serialize)]
        struct One(#[serde(with = "serde_bytes")] Vec<u8>);
        let v = vec![vec![1, 2, 3], vec![], vec![255; 300]];
        let plain = bincode::serialize(&Plain(v.clone())).unwrap();
        assert_eq!(bincode::serialize(&Strings(v.clone())).unwrap(), plain);
        let back: Strings = bincode::deserialize(&plain).unwrap();
        assert_eq!(back.0, v);
        assert_eq!(
            bincode::serialize(&One(v[2].clone())).unwrap(),
            bincode::serialize(&v[2]).unwrap()
        );
    }
}
