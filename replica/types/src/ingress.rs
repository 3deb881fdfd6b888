//! Ingress messages: update calls submitted by users, ordered by consensus and executed in
//! finalized order. The fields are those of an IC `call` request, and the request id is the
//! IC's representation-independent hash of them, so clients compute the same id.

use bincode::Options;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha224, Sha256};

use crate::canonical_bytes;

/// The anonymous principal (`2vxsx-fae`).
pub const ANONYMOUS: [u8; 1] = [0x04];

/// Longest an ingress message may live, as on the IC: its expiry is at most this far after the
/// time it is accepted or executed.
pub const MAX_INGRESS_TTL_NS: u64 = 5 * 60 * 1_000_000_000;

/// Allowed clock drift between a client and the subnet when judging an expiry.
pub const PERMITTED_DRIFT_NS: u64 = 60 * 1_000_000_000;

/// The content of an IC `call` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressMessage {
    pub sender: Vec<u8>,
    pub canister_id: Vec<u8>,
    pub method_name: String,
    pub arg: Vec<u8>,
    /// Nanoseconds since the UNIX epoch after which the message must not be executed.
    pub ingress_expiry: u64,
    pub nonce: Option<Vec<u8>>,
}

/// The IC request id: SHA-256 of the representation-independent encoding of a request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub [u8; 32]);

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// A value in a request map.
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Nat(u64),
    /// A nested map, given by its own `hash_of_map`.
    Map([u8; 32]),
    /// `read_state` paths: an array of arrays of blobs.
    Paths(&'a [Vec<Vec<u8>>]),
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Unsigned LEB128, the IC's encoding of naturals in request ids and the state tree.
pub fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Representation-independent hash of a map (IC interface specification, "Request ids"):
/// hash each key and value, sort the concatenated pairs, hash their concatenation.
pub fn hash_of_map(fields: &[(&str, Value<'_>)]) -> [u8; 32] {
    let mut pairs: Vec<Vec<u8>> = fields
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Bytes(b) => sha256(b),
                Value::Nat(n) => sha256(&leb128(*n)),
                Value::Map(h) => *h,
                Value::Paths(paths) => {
                    let hashed: Vec<u8> = paths
                        .iter()
                        .flat_map(|p| {
                            let labels: Vec<u8> = p.iter().flat_map(|l| sha256(l)).collect();
                            sha256(&labels)
                        })
                        .collect();
                    sha256(&hashed)
                }
            };
            [sha256(k.as_bytes()), value].concat()
        })
        .collect();
    pairs.sort();
    sha256(&pairs.concat())
}

impl IngressMessage {
    pub fn request_id(&self) -> RequestId {
        self.request_id_as("call")
    }

    /// The request id of the same fields under another request type (`query`).
    pub fn request_id_as(&self, request_type: &str) -> RequestId {
        let mut fields = vec![
            ("request_type", Value::Bytes(request_type.as_bytes())),
            ("sender", Value::Bytes(&self.sender)),
            ("canister_id", Value::Bytes(&self.canister_id)),
            ("method_name", Value::Bytes(self.method_name.as_bytes())),
            ("arg", Value::Bytes(&self.arg)),
            ("ingress_expiry", Value::Nat(self.ingress_expiry)),
        ];
        if let Some(n) = &self.nonce {
            fields.push(("nonce", Value::Bytes(n)));
        }
        RequestId(hash_of_map(&fields))
    }
}

/// Largest encoded ingress message (the IC's 2 MiB limit on an ingress message).
pub const MAX_INGRESS_BYTES: usize = 2 * 1024 * 1024;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
pub const ED25519_DER_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The self-authenticating principal of a DER public key: SHA-224 of it, then 0x02.
pub fn self_authenticating(der: &[u8]) -> Vec<u8> {
    let mut p = Sha224::digest(der).to_vec();
    p.push(0x02);
    p
}

/// Checks that `sender` made the request `id`: the anonymous sender without a signature, or
/// an Ed25519 key whose self-authenticating id is the sender, signing
/// `"\x0Aic-request" ‖ request id`.
pub fn authenticate_sender(
    id: &RequestId,
    sender: &[u8],
    pubkey: Option<&[u8]>,
    sig: Option<&[u8]>,
) -> Result<(), String> {
    match (pubkey, sig) {
        (None, None) if sender == ANONYMOUS => Ok(()),
        (None, None) => {
            Err("a non-anonymous sender must sign the request (sender_pubkey, sender_sig)".into())
        }
        (Some(pk), Some(sig)) => {
            if self_authenticating(pk) != sender {
                return Err("sender is not the self-authenticating id of sender_pubkey".into());
            }
            let key = pk
                .strip_prefix(&ED25519_DER_PREFIX)
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .ok_or("sender_pubkey is not a DER Ed25519 key (other schemes: not yet)")?;
            let sig = Signature::from_slice(sig).map_err(|_| "sender_sig is not 64 bytes")?;
            let signed = [b"\x0Aic-request".as_slice(), &id.0].concat();
            key.verify_strict(&signed, &sig)
                .map_err(|_| "sender_sig does not verify".to_string())
        }
        _ => Err("sender_pubkey and sender_sig go together".into()),
    }
}

/// An ingress message as consensus gossips, orders and executes it: the content with the
/// sender's proof, so that every replica (not only the one that took it over HTTP) checks that
/// the sender really sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIngress {
    pub content: IngressMessage,
    pub sender_pubkey: Option<Vec<u8>>,
    pub sender_sig: Option<Vec<u8>>,
}

impl SignedIngress {
    pub fn anonymous(content: IngressMessage) -> Self {
        SignedIngress {
            content,
            sender_pubkey: None,
            sender_sig: None,
        }
    }

    /// Checks that the sender sent this content: the anonymous sender without a signature, or
    /// an Ed25519 key whose self-authenticating id is the sender, signing
    /// `"\x0Aic-request" ‖ request id`.
    pub fn authenticate(&self) -> Result<(), String> {
        let c = &self.content;
        authenticate_sender(
            &c.request_id(),
            &c.sender,
            self.sender_pubkey.as_deref(),
            self.sender_sig.as_deref(),
        )
    }

    /// The bytes consensus orders (`ConsensusMessage::Ingress`).
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical_bytes(self)
    }

    /// Decodes with a size limit (the bytes may come from any peer).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_INGRESS_BYTES {
            return None;
        }
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(MAX_INGRESS_BYTES as u64)
            .deserialize(bytes)
            .ok()
    }

    /// Decodes and authenticates gossiped or ordered bytes.
    pub fn verified(bytes: &[u8]) -> Result<Self, String> {
        let m = Self::from_bytes(bytes).ok_or("ingress does not decode")?;
        m.authenticate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the IC interface specification ("Request ids"): a `call` to
    /// canister 00000000000004D2 with method `hello` and argument `DIDL\0\xFD*`.
    #[test]
    fn request_id_matches_the_specification_example() {
        let fields = [
            ("request_type", Value::Bytes(b"call")),
            ("canister_id", Value::Bytes(&[0, 0, 0, 0, 0, 0, 0x04, 0xD2])),
            ("method_name", Value::Bytes(b"hello")),
            ("arg", Value::Bytes(b"DIDL\x00\xFD*")),
        ];
        assert_eq!(
            hex::encode(hash_of_map(&fields)),
            "8781291c347db32a9d8c10eb62b710fce5a93be676474c42babc74c51858f94b"
        );
    }

    /// The specification's call with a sender and an expiry (IC-REFERENCE §4.3).
    #[test]
    fn request_id_of_a_full_call_matches_the_specification() {
        let m = IngressMessage {
            sender: ANONYMOUS.to_vec(),
            canister_id: vec![0, 0, 0, 0, 0, 0, 0x04, 0xD2],
            method_name: "hello".into(),
            arg: b"DIDL\x00\xFD*".to_vec(),
            ingress_expiry: 1_685_570_400_000_000_000,
            nonce: None,
        };
        assert_eq!(
            m.request_id().to_string(),
            "1d1091364d6bb8a6c16b203ee75467d59ead468f523eb058880ae8ec80e2b101"
        );
    }

    #[test]
    fn leb128_encodes_like_the_spec() {
        assert_eq!(leb128(0), vec![0]);
        assert_eq!(leb128(624485), vec![0xE5, 0x8E, 0x26]);
    }

    #[test]
    fn nonce_and_sender_change_the_id() {
        let m = IngressMessage {
            sender: ANONYMOUS.to_vec(),
            canister_id: vec![1],
            method_name: "m".into(),
            arg: vec![],
            ingress_expiry: 1,
            nonce: None,
        };
        let mut n = m.clone();
        n.nonce = Some(vec![1]);
        assert_ne!(m.request_id(), n.request_id());
        let signed = SignedIngress::anonymous(m);
        assert_eq!(SignedIngress::verified(&signed.to_bytes()), Ok(signed));
    }

    #[test]
    fn gossiped_ingress_must_prove_its_sender() {
        use ed25519_dalek::{Signer, SigningKey};
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let der = [
            ED25519_DER_PREFIX.as_slice(),
            key.verifying_key().as_bytes(),
        ]
        .concat();
        let content = IngressMessage {
            sender: self_authenticating(&der),
            canister_id: vec![1],
            method_name: "m".into(),
            arg: vec![],
            ingress_expiry: 1,
            nonce: None,
        };
        let sig = key.sign(&[b"\x0Aic-request".as_slice(), &content.request_id().0].concat());
        let good = SignedIngress {
            content: content.clone(),
            sender_pubkey: Some(der.clone()),
            sender_sig: Some(sig.to_bytes().to_vec()),
        };
        assert_eq!(good.authenticate(), Ok(()));
        // A Byzantine replica cannot strip the proof, nor reuse it for other content.
        let stripped = SignedIngress::anonymous(content.clone());
        assert!(stripped.authenticate().is_err());
        let mut other = good.clone();
        other.content.arg = vec![1];
        assert!(other.authenticate().is_err());
        let mut impersonated = SignedIngress::anonymous(content);
        impersonated.content.sender = ANONYMOUS.to_vec();
        impersonated.content.arg = vec![2];
        assert_eq!(
            impersonated.authenticate(),
            Ok(()),
            "anonymous is anyone's to use"
        );
        assert!(SignedIngress::verified(b"junk").is_err());
    }
}
