//! Ingress messages: update calls submitted by users, ordered by consensus and executed in
//! finalized order. The fields are those of an IC `call` request, and the request id is the
//! IC's representation-independent hash of them, so clients compute the same id.

use std::collections::BTreeSet;

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
    /// An array of blobs (a delegation's targets).
    Blobs(&'a [Vec<u8>]),
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
                Value::Blobs(blobs) => {
                    let hashed: Vec<u8> = blobs.iter().flat_map(|b| sha256(b)).collect();
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

/// Most delegations a request may carry, and most targets one delegation may name (the IC's
/// limits).
pub const MAX_DELEGATIONS: usize = 20;
pub const MAX_DELEGATION_TARGETS: usize = 1000;

/// One link of a request's delegation chain (`sender_delegation`): the previous key (the
/// sender's own key for the first link) lets `pubkey` sign for the sender until `expiration`
/// (nanoseconds since the epoch), only for the canisters in `targets` if it names any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDelegation {
    pub pubkey: Vec<u8>,
    pub expiration: u64,
    pub targets: Option<Vec<Vec<u8>>>,
    /// `"queries"` (only queries and `read_state`) or `"all"`; absent means all.
    pub permissions: Option<String>,
    pub signature: Vec<u8>,
}

impl SignedDelegation {
    /// What the delegating key signs: `"\x1Aic-request-auth-delegation"` and the
    /// representation-independent hash of the delegation map.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut fields = vec![
            ("pubkey", Value::Bytes(&self.pubkey)),
            ("expiration", Value::Nat(self.expiration)),
        ];
        if let Some(t) = &self.targets {
            fields.push(("targets", Value::Blobs(t)));
        }
        if let Some(p) = &self.permissions {
            fields.push(("permissions", Value::Bytes(p.as_bytes())));
        }
        [
            b"\x1Aic-request-auth-delegation".as_slice(),
            &hash_of_map(&fields),
        ]
        .concat()
    }
}

/// What a sender's proof allows: until when (the earliest expiration of its delegations) and
/// for which canisters (the targets every restricting delegation names). Unrestricted without
/// delegations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authority {
    pub expiration: Option<u64>,
    pub targets: Option<BTreeSet<Vec<u8>>>,
    /// A delegation permits only queries and `read_state`.
    pub queries_only: bool,
}

impl Authority {
    /// Whether the proof is still good at `now_ns`.
    pub fn live_at(&self, now_ns: u64) -> Result<(), String> {
        match self.expiration {
            Some(e) if e < now_ns => Err(format!(
                "a delegation of the sender expired at {e} (nanoseconds since the epoch)"
            )),
            _ => Ok(()),
        }
    }

    /// Whether the proof allows update calls.
    pub fn allows_calls(&self) -> Result<(), String> {
        if self.queries_only {
            return Err("the sender's delegations permit only queries and read_state".into());
        }
        Ok(())
    }

    /// Whether the proof covers requests to `canister` (the management canister is the empty
    /// principal, which a restricting delegation must name explicitly).
    pub fn covers(&self, canister: &[u8]) -> Result<(), String> {
        match &self.targets {
            Some(t) if !t.contains(canister) => Err(format!(
                "the sender's delegations do not cover canister {}",
                hex::encode(canister)
            )),
            _ => Ok(()),
        }
    }
}

/// Verifies `sig` over `msg` with `der_key`, a DER SubjectPublicKeyInfo of one of the IC's
/// user signature schemes: Ed25519 (64-byte signature), ECDSA on P-256 or on secp256k1 with
/// SHA-256 (64-byte `r ‖ s`; secp256k1 signatures must have a low `s`).
pub fn verify_signature(der_key: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), String> {
    use k256::pkcs8::DecodePublicKey;
    use p256::ecdsa::signature::Verifier;
    if let Some(k) = der_key.strip_prefix(&ED25519_DER_PREFIX) {
        let key = <[u8; 32]>::try_from(k)
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or("not a valid Ed25519 public key")?;
        let sig = Signature::from_slice(sig).map_err(|_| "an Ed25519 signature has 64 bytes")?;
        return key
            .verify_strict(msg, &sig)
            .map_err(|_| "the Ed25519 signature does not verify".to_string());
    }
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der_key) {
        let sig = p256::ecdsa::Signature::from_slice(sig)
            .map_err(|_| "an ECDSA P-256 signature is 64 bytes r ‖ s")?;
        return key
            .verify(msg, &sig)
            .map_err(|_| "the ECDSA P-256 signature does not verify".to_string());
    }
    if let Ok(key) = k256::ecdsa::VerifyingKey::from_public_key_der(der_key) {
        let sig = k256::ecdsa::Signature::from_slice(sig)
            .map_err(|_| "an ECDSA secp256k1 signature is 64 bytes r ‖ s")?;
        return key
            .verify(msg, &sig)
            .map_err(|_| "the ECDSA secp256k1 signature does not verify".to_string());
    }
    Err(
        "the key is not a DER Ed25519, ECDSA P-256 or ECDSA secp256k1 public key \
         (canister signatures are not supported by this replica)"
            .into(),
    )
}

/// Checks that `sender` made the request `id`: the anonymous sender without a signature, or a
/// key (Ed25519, ECDSA P-256 or secp256k1) whose self-authenticating id is the sender, signing
/// `"\x0Aic-request" ‖ request id` itself or through a chain of delegations. Returns what the
/// delegations allow; the caller checks it against the time and the target.
pub fn authenticate_sender(
    id: &RequestId,
    sender: &[u8],
    pubkey: Option<&[u8]>,
    sig: Option<&[u8]>,
    delegations: &[SignedDelegation],
) -> Result<Authority, String> {
    match (pubkey, sig) {
        (None, None) if sender == ANONYMOUS && delegations.is_empty() => Ok(Authority::default()),
        (None, None) if sender == ANONYMOUS => {
            Err("the anonymous sender cannot have delegations".into())
        }
        (None, None) => {
            Err("a non-anonymous sender must sign the request (sender_pubkey, sender_sig)".into())
        }
        (Some(pk), Some(sig)) => {
            if self_authenticating(pk) != sender {
                return Err("sender is not the self-authenticating id of sender_pubkey".into());
            }
            if delegations.len() > MAX_DELEGATIONS {
                return Err(format!(
                    "{} delegations; at most {MAX_DELEGATIONS} are allowed",
                    delegations.len()
                ));
            }
            let mut authority = Authority::default();
            let mut keys = BTreeSet::from([pk]);
            let mut key = pk;
            for (i, d) in delegations.iter().enumerate() {
                if let Some(t) = &d.targets {
                    if t.len() > MAX_DELEGATION_TARGETS {
                        return Err(format!(
                            "delegation {i} names {} targets; at most {MAX_DELEGATION_TARGETS} \
                             are allowed",
                            t.len()
                        ));
                    }
                    let t: BTreeSet<Vec<u8>> = t.iter().cloned().collect();
                    authority.targets = Some(match authority.targets.take() {
                        Some(prev) => prev.intersection(&t).cloned().collect(),
                        None => t,
                    });
                }
                match d.permissions.as_deref() {
                    None | Some("all") => {}
                    Some("queries") => authority.queries_only = true,
                    Some(other) => {
                        return Err(format!("delegation {i} has unknown permissions {other:?}"));
                    }
                }
                verify_signature(key, &d.signed_bytes(), &d.signature)
                    .map_err(|e| format!("delegation {i}: {e}"))?;
                if !keys.insert(&d.pubkey) {
                    return Err(format!(
                        "delegation {i} repeats a key: the chain has a cycle"
                    ));
                }
                authority.expiration = Some(
                    authority
                        .expiration
                        .map_or(d.expiration, |e| e.min(d.expiration)),
                );
                key = &d.pubkey;
            }
            let signed = [b"\x0Aic-request".as_slice(), &id.0].concat();
            verify_signature(key, &signed, sig).map_err(|e| format!("sender_sig: {e}"))?;
            Ok(authority)
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
    /// The delegation chain from the sender's key to the key that signed (empty: none).
    pub sender_delegation: Vec<SignedDelegation>,
}

impl SignedIngress {
    pub fn anonymous(content: IngressMessage) -> Self {
        SignedIngress {
            content,
            sender_pubkey: None,
            sender_sig: None,
            sender_delegation: Vec::new(),
        }
    }

    /// Checks that the sender sent this content (see [`authenticate_sender`]) and that its
    /// delegations cover the canister it calls. Returns what they allow: whether they are
    /// still good depends on the time, which the caller checks.
    pub fn authenticate(&self) -> Result<Authority, String> {
        let c = &self.content;
        let authority = authenticate_sender(
            &c.request_id(),
            &c.sender,
            self.sender_pubkey.as_deref(),
            self.sender_sig.as_deref(),
            &self.sender_delegation,
        )?;
        authority.covers(&c.canister_id)?;
        authority.allows_calls()?;
        Ok(authority)
    }

    /// The earliest expiration of the sender's delegations (no signature check).
    pub fn delegation_expiration(&self) -> Option<u64> {
        self.sender_delegation.iter().map(|d| d.expiration).min()
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
            sender_delegation: Vec::new(),
        };
        assert_eq!(good.authenticate(), Ok(Authority::default()));
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
            Ok(Authority::default()),
            "anonymous is anyone's to use"
        );
        assert!(SignedIngress::verified(b"junk").is_err());
    }

    /// A scheme's name, a DER public key, and a function signing with its private key.
    type Signer = (&'static str, Vec<u8>, Box<dyn Fn(&[u8]) -> Vec<u8>>);

    /// A signer of each scheme.
    fn signers() -> Vec<Signer> {
        use ed25519_dalek::Signer as _;
        use k256::pkcs8::EncodePublicKey;
        let ed = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let ed_der = [ED25519_DER_PREFIX.as_slice(), ed.verifying_key().as_bytes()].concat();
        let p = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).expect("p256 key");
        let p_der = p
            .verifying_key()
            .to_public_key_der()
            .expect("der")
            .into_vec();
        let k = k256::ecdsa::SigningKey::from_slice(&[6u8; 32]).expect("k256 key");
        let k_der = k
            .verifying_key()
            .to_public_key_der()
            .expect("der")
            .into_vec();
        vec![
            (
                "ed25519",
                ed_der,
                Box::new(move |m: &[u8]| ed.sign(m).to_bytes().to_vec()),
            ),
            (
                "p256",
                p_der,
                Box::new(move |m: &[u8]| {
                    let s: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&p, m);
                    s.to_bytes().to_vec()
                }),
            ),
            (
                "secp256k1",
                k_der,
                Box::new(move |m: &[u8]| {
                    let s: k256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&k, m);
                    s.to_bytes().to_vec()
                }),
            ),
        ]
    }

    fn message(sender: Vec<u8>, canister: &[u8]) -> IngressMessage {
        IngressMessage {
            sender,
            canister_id: canister.to_vec(),
            method_name: "m".into(),
            arg: vec![],
            ingress_expiry: 1,
            nonce: None,
        }
    }

    fn request(content: &IngressMessage) -> Vec<u8> {
        [b"\x0Aic-request".as_slice(), &content.request_id().0].concat()
    }

    #[test]
    fn ecdsa_and_ed25519_senders_are_checked() {
        for (name, der, sign) in signers() {
            let content = message(self_authenticating(&der), &[1]);
            let good = SignedIngress {
                sender_pubkey: Some(der.clone()),
                sender_sig: Some(sign(&request(&content))),
                sender_delegation: Vec::new(),
                content,
            };
            assert_eq!(good.authenticate(), Ok(Authority::default()), "{name}");
            let mut tampered = good.clone();
            tampered.content.method_name = "other".into();
            let err = tampered.authenticate().expect_err(name);
            assert!(err.contains("does not verify"), "{name}: {err}");
            let mut short = good.clone();
            short.sender_sig.as_mut().expect("sig").pop();
            assert!(short.authenticate().is_err(), "{name}");
        }
        let err = verify_signature(b"\x30\x03\x02\x01\x00", b"m", &[0; 64]).expect_err("no key");
        assert!(err.contains("not a DER"), "{err}");
    }

    #[test]
    fn delegation_chains_are_verified_with_their_limits() {
        let signers = signers();
        let (root, session, leaf) = (&signers[0], &signers[1], &signers[2]);
        let sender = self_authenticating(&root.1);
        let delegate =
            |from: &Signer, to: &[u8], expiration: u64, targets: Option<Vec<Vec<u8>>>| {
                let mut d = SignedDelegation {
                    pubkey: to.to_vec(),
                    expiration,
                    targets,
                    permissions: None,
                    signature: Vec::new(),
                };
                d.signature = (from.2)(&d.signed_bytes());
                d
            };
        // root (Ed25519) → session (P-256, for canisters 1 and 2) → leaf (secp256k1), which
        // signs a call to canister 1.
        let chain = vec![
            delegate(root, &session.1, 500, Some(vec![vec![1], vec![2]])),
            delegate(session, &leaf.1, 400, None),
        ];
        let content = message(sender.clone(), &[1]);
        let good = SignedIngress {
            sender_pubkey: Some(root.1.clone()),
            sender_sig: Some((leaf.2)(&request(&content))),
            sender_delegation: chain.clone(),
            content,
        };
        let authority = good.authenticate().expect("the chain verifies");
        assert_eq!(authority.expiration, Some(400));
        assert!(authority.live_at(400).is_ok() && authority.live_at(401).is_err());
        assert_eq!(good.delegation_expiration(), Some(400));

        // Another target, a signature by a key the chain does not end in, a changed
        // delegation, a cycle, too many delegations: all refused.
        let mut elsewhere = good.clone();
        elsewhere.content.canister_id = vec![3];
        elsewhere.sender_sig = Some((leaf.2)(&request(&elsewhere.content)));
        let err = elsewhere.authenticate().expect_err("not a target");
        assert!(err.contains("do not cover"), "{err}");
        let mut wrong_key = good.clone();
        wrong_key.sender_sig = Some((session.2)(&request(&good.content)));
        assert!(wrong_key.authenticate().is_err());
        let mut extended = good.clone();
        extended.sender_delegation[0].expiration = 10_000;
        let err = extended.authenticate().expect_err("changed delegation");
        assert!(err.contains("delegation 0"), "{err}");
        let mut cycle = good.clone();
        cycle.sender_delegation = vec![delegate(root, &root.1, 500, None)];
        cycle.sender_sig = Some((root.2)(&request(&cycle.content)));
        let err = cycle.authenticate().expect_err("cycle");
        assert!(err.contains("cycle"), "{err}");
        let mut long = good.clone();
        long.sender_delegation = vec![chain[0].clone(); MAX_DELEGATIONS + 1];
        let err = long.authenticate().expect_err("too long");
        assert!(err.contains("at most"), "{err}");
        let mut queries = good.clone();
        queries.sender_delegation[1].permissions = Some("queries".into());
        queries.sender_delegation[1].signature =
            (session.2)(&queries.sender_delegation[1].signed_bytes());
        let err = queries
            .authenticate()
            .expect_err("a call under a queries-only delegation");
        assert!(err.contains("only queries"), "{err}");
        let mut anonymous = SignedIngress::anonymous(message(ANONYMOUS.to_vec(), &[1]));
        anonymous.sender_delegation = chain;
        assert!(anonymous.authenticate().is_err());
    }
}
