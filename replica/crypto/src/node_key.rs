//! Ed25519 node signing keys: a replica signs its block proposals (and, later, query
//! responses) with it; its public key identifies the node in the registry.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use crate::CryptoError;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), as IC agents expect node keys.
pub const DER_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Clone)]
pub struct NodeSigningKey(ed25519_dalek::SigningKey);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodePublicKey(pub [u8; 32]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSignature(#[serde(with = "sig_bytes")] pub [u8; 64]);

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = Vec::deserialize(d)?;
        v.try_into()
            .map_err(|_| D::Error::custom("signature must be 64 bytes"))
    }
}

impl NodeSigningKey {
    pub fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        NodeSigningKey(ed25519_dalek::SigningKey::generate(rng))
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        NodeSigningKey(ed25519_dalek::SigningKey::from_bytes(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_key(&self) -> NodePublicKey {
        NodePublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> NodeSignature {
        NodeSignature(self.0.sign(msg).to_bytes())
    }
}

impl NodePublicKey {
    /// Strict verification (rejects small-order keys and non-canonical signatures).
    pub fn verify(&self, msg: &[u8], sig: &NodeSignature) -> Result<(), CryptoError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| CryptoError::Malformed("Ed25519 public key"))?;
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| CryptoError::InvalidSignature)?;
        Ok(())
    }

    pub fn to_der(&self) -> Vec<u8> {
        let mut out = DER_PREFIX.to_vec();
        out.extend_from_slice(&self.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn sign_verify_and_tamper() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = NodeSigningKey::generate(&mut rng);
        let sig = k.sign(b"block");
        assert!(k.public_key().verify(b"block", &sig).is_ok());
        assert!(k.public_key().verify(b"blocc", &sig).is_err());
        assert_eq!(k.public_key().to_der().len(), 44);
        let again = NodeSigningKey::from_bytes(&k.to_bytes());
        assert_eq!(again.public_key(), k.public_key());
    }
}
