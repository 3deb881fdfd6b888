//! Ingress messages: update calls submitted by users, ordered by consensus and executed in
//! finalized order. The fields are those of an IC `call` request, and the request id is the
//! IC's representation-independent hash of them, so clients compute the same id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// A value in a request map, as far as `call` requests need.
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Nat(u64),
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn leb128(mut n: u64) -> Vec<u8> {
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
            };
            [sha256(k.as_bytes()), value].concat()
        })
        .collect();
    pairs.sort();
    sha256(&pairs.concat())
}

impl IngressMessage {
    pub fn request_id(&self) -> RequestId {
        let mut fields = vec![
            ("request_type", Value::Bytes(b"call")),
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

    /// The bytes consensus orders (`ConsensusMessage::Ingress`).
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical_bytes(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bincode::deserialize(bytes).ok()
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
        assert_eq!(IngressMessage::from_bytes(&m.to_bytes()), Some(m));
    }
}
