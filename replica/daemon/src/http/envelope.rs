//! IC request envelopes (CBOR): the content and the sender's proof, and the checks a call
//! passes before it enters the pool.
//!
//!
//! Accepted: the anonymous sender without a signature, and senders with an Ed25519, ECDSA
//! P-256 or ECDSA secp256k1 key (self-authenticating principal, signature over
//! `"\x0Aic-request" ‖ request id`), directly or through a chain of delegations (`sender_delegation`)
//! that is still valid and covers the canister called. Everything else is refused with a
//! message saying why.

use serde::Deserialize;

use crate::clock::now_ms;
use serde_bytes::ByteBuf;
use thicket_types::ingress::{
    IngressMessage, MAX_INGRESS_TTL_NS, PERMITTED_DRIFT_NS, RequestId, SignedDelegation,
    SignedIngress, authenticate_sender,
};

/// Largest request body accepted (the IC's ingress limit plus envelope).
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024 + 16 * 1024;

/// A request envelope (CBOR): the content and the sender's proof.
#[derive(Deserialize)]
pub(crate) struct Envelope<C> {
    pub(crate) content: C,
    pub(crate) sender_pubkey: Option<ByteBuf>,
    pub(crate) sender_sig: Option<ByteBuf>,
    pub(crate) sender_delegation: Option<Vec<CborSignedDelegation>>,
}

/// A `sender_delegation` entry as agents send it.
#[derive(Deserialize)]
pub(crate) struct CborSignedDelegation {
    delegation: CborDelegation,
    signature: ByteBuf,
}

#[derive(Deserialize)]
struct CborDelegation {
    pubkey: ByteBuf,
    expiration: u64,
    targets: Option<Vec<ByteBuf>>,
    permissions: Option<String>,
}

impl<C> Envelope<C> {
    pub(crate) fn delegations(&self) -> Vec<SignedDelegation> {
        self.sender_delegation
            .iter()
            .flatten()
            .map(|d| SignedDelegation {
                pubkey: d.delegation.pubkey.to_vec(),
                expiration: d.delegation.expiration,
                targets: d
                    .delegation
                    .targets
                    .as_ref()
                    .map(|t| t.iter().map(|p| p.to_vec()).collect()),
                permissions: d.delegation.permissions.clone(),
                signature: d.signature.to_vec(),
            })
            .collect()
    }

    /// Checks that `sender` made request `id`, and that its delegations, if any, are still
    /// good at `now_ns` and cover `target` (when the request names a canister).
    pub(crate) fn authenticate(
        &self,
        id: &RequestId,
        sender: &[u8],
        target: Option<&[u8]>,
        now_ns: u64,
    ) -> Result<(), String> {
        let authority = authenticate_sender(
            id,
            sender,
            self.sender_pubkey.as_deref().map(|b| b.as_slice()),
            self.sender_sig.as_deref().map(|b| b.as_slice()),
            &self.delegations(),
        )?;
        authority.live_at(now_ns)?;
        match target {
            Some(t) => authority.covers(t),
            None => Ok(()),
        }
    }
}

/// The content of a `call` or `query` request (they have the same fields).
#[derive(Deserialize)]
pub(crate) struct Content {
    pub(crate) request_type: String,
    pub(crate) sender: ByteBuf,
    pub(crate) canister_id: ByteBuf,
    pub(crate) method_name: String,
    pub(crate) arg: ByteBuf,
    pub(crate) ingress_expiry: u64,
    pub(crate) nonce: Option<ByteBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngressError {
    #[error("request body is not a CBOR call envelope: {0}")]
    Malformed(String),
    #[error("request_type must be \"call\" on this endpoint, got {0:?}")]
    WrongType(String),
    #[error("the URL names canister {url} but the request is for {content}")]
    CanisterMismatch { url: String, content: String },
    #[error("ingress_expiry {expiry} is outside [{min}, {max}] (nanoseconds since the epoch)")]
    Expiry { expiry: u64, min: u64, max: u64 },
    #[error("{0}")]
    Signature(String),
    #[error("request of {0} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit")]
    TooLarge(usize),
}

/// Parses a query envelope and checks it as the query endpoint does before it looks at the
/// canister: its type, its sender's proof (signature and delegations, live at `now_ns`, which
/// must cover the canister named) and its expiry. Returns the query and its request id.
pub fn check_query(body: &[u8], now_ns: u64) -> Result<(IngressMessage, RequestId), String> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request of {} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit",
            body.len()
        ));
    }
    let env: Envelope<Content> = decode(body, "query")?;
    let c = &env.content;
    if c.request_type != "query" {
        return Err(format!(
            "request_type must be \"query\" on this endpoint, got {:?}",
            c.request_type
        ));
    }
    let msg = IngressMessage {
        sender: c.sender.to_vec(),
        canister_id: c.canister_id.to_vec(),
        method_name: c.method_name.clone(),
        arg: c.arg.to_vec(),
        ingress_expiry: c.ingress_expiry,
        nonce: c.nonce.as_ref().map(|n| n.to_vec()),
    };
    let id = msg.request_id_as("query");
    env.authenticate(&id, &c.sender, Some(&c.canister_id), now_ns)?;
    check_expiry_at(c.ingress_expiry, now_ns)?;
    Ok((msg, id))
}

/// Parses and checks a call envelope posted for canister `url_canister` at time `now_ns`.
pub fn check_call(
    body: &[u8],
    url_canister: &[u8],
    now_ns: u64,
) -> Result<SignedIngress, IngressError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(IngressError::TooLarge(body.len()));
    }
    let env: Envelope<Content> =
        ciborium::from_reader(body).map_err(|e| IngressError::Malformed(e.to_string()))?;
    let sender_delegation = env.delegations();
    let c = env.content;
    if c.request_type != "call" {
        return Err(IngressError::WrongType(c.request_type));
    }
    // Calls to the management canister name their target as the effective canister id.
    if !c.canister_id.is_empty() && c.canister_id.as_slice() != url_canister {
        return Err(IngressError::CanisterMismatch {
            url: hex::encode(url_canister),
            content: hex::encode(&c.canister_id),
        });
    }
    // Already expired would be accepted and never executed: refused instead.
    let (min, max) = (
        now_ns,
        now_ns
            .saturating_add(MAX_INGRESS_TTL_NS)
            .saturating_add(PERMITTED_DRIFT_NS),
    );
    if c.ingress_expiry < min || c.ingress_expiry > max {
        return Err(IngressError::Expiry {
            expiry: c.ingress_expiry,
            min,
            max,
        });
    }
    let msg = IngressMessage {
        sender: c.sender.into_vec(),
        canister_id: c.canister_id.into_vec(),
        method_name: c.method_name,
        arg: c.arg.into_vec(),
        ingress_expiry: c.ingress_expiry,
        nonce: c.nonce.map(ByteBuf::into_vec),
    };
    let signed = SignedIngress {
        content: msg,
        sender_delegation,
        sender_pubkey: env.sender_pubkey.map(ByteBuf::into_vec),
        sender_sig: env.sender_sig.map(ByteBuf::into_vec),
    };
    signed
        .authenticate()
        .and_then(|authority| authority.live_at(now_ns))
        .map_err(IngressError::Signature)?;
    Ok(signed)
}

/// The CBOR envelope of an unsigned call (the anonymous sender), as agents send it: the
/// self-describing tag, then `{content: {...}}`.
pub fn unsigned_envelope(msg: &IngressMessage) -> Vec<u8> {
    use ciborium::Value::{Bytes, Integer, Text};
    let mut content = vec![
        (Text("request_type".into()), Text("call".into())),
        (Text("sender".into()), Bytes(msg.sender.clone())),
        (Text("canister_id".into()), Bytes(msg.canister_id.clone())),
        (Text("method_name".into()), Text(msg.method_name.clone())),
        (Text("arg".into()), Bytes(msg.arg.clone())),
        (
            Text("ingress_expiry".into()),
            Integer(msg.ingress_expiry.into()),
        ),
    ];
    if let Some(n) = &msg.nonce {
        content.push((Text("nonce".into()), Bytes(n.clone())));
    }
    wrap(content)
}

/// The CBOR envelope of an unsigned request of any type (call, query, read_state) with these
/// `content` fields: the self-describing tag (55799), then `{content: {...}}`.
pub fn wrap(content: Vec<(ciborium::Value, ciborium::Value)>) -> Vec<u8> {
    use ciborium::Value::{Map, Tag, Text};
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = ciborium::into_writer(
        &Tag(
            55799,
            Box::new(Map(vec![(Text("content".into()), Map(content))])),
        ),
        &mut out,
    );
    out
}

pub(crate) fn now_ns() -> u64 {
    now_ms().saturating_mul(1_000_000)
}

/// The expiry rule for requests that are not ordered (queries, read_state), for every sender:
/// whether `expiry` is inside the ingress window at time `now`.
pub(crate) fn check_expiry_at(expiry: u64, now: u64) -> Result<(), String> {
    let (min, max) = (
        now.saturating_sub(PERMITTED_DRIFT_NS),
        now.saturating_add(MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS),
    );
    if expiry < min || expiry > max {
        return Err(format!(
            "Invalid request expiry: {expiry} is outside [{min}, {max}] (nanoseconds since the epoch)"
        ));
    }
    Ok(())
}

pub(crate) fn decode<C: for<'de> Deserialize<'de>>(
    body: &[u8],
    what: &str,
) -> Result<Envelope<C>, String> {
    ciborium::from_reader(body)
        .map_err(|e| format!("request body is not a CBOR {what} envelope: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use thicket_types::ingress::{ANONYMOUS, ED25519_DER_PREFIX, self_authenticating};

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn envelope(content: &ciborium::Value, extra: Vec<(&str, ciborium::Value)>) -> Vec<u8> {
        let mut fields = vec![(ciborium::Value::Text("content".into()), content.clone())];
        fields.extend(
            extra
                .into_iter()
                .map(|(k, v)| (ciborium::Value::Text(k.into()), v)),
        );
        let mut out = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Tag(55799, Box::new(ciborium::Value::Map(fields))),
            &mut out,
        )
        .expect("encodes");
        out
    }

    fn content(sender: &[u8], expiry: u64) -> ciborium::Value {
        use ciborium::Value::{Bytes, Integer, Map, Text};
        Map(vec![
            (Text("request_type".into()), Text("call".into())),
            (Text("sender".into()), Bytes(sender.to_vec())),
            (
                Text("canister_id".into()),
                Bytes(vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1]),
            ),
            (Text("method_name".into()), Text("greet".into())),
            (Text("arg".into()), Bytes(b"DIDL\x00\x00".to_vec())),
            (Text("ingress_expiry".into()), Integer(expiry.into())),
        ])
    }

    const CANISTER: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1];

    #[test]
    fn anonymous_call_is_accepted() {
        let body = envelope(&content(&ANONYMOUS, NOW + 60_000_000_000), vec![]);
        let delegated = envelope(
            &content(&ANONYMOUS, NOW + 1),
            vec![(
                "sender_delegation",
                ciborium::Value::Array(vec![ciborium::Value::Map(vec![
                    (
                        ciborium::Value::Text("delegation".into()),
                        ciborium::Value::Map(vec![
                            (
                                ciborium::Value::Text("pubkey".into()),
                                ciborium::Value::Bytes(vec![1]),
                            ),
                            (
                                ciborium::Value::Text("expiration".into()),
                                ciborium::Value::Integer(NOW.into()),
                            ),
                        ]),
                    ),
                    (
                        ciborium::Value::Text("signature".into()),
                        ciborium::Value::Bytes(vec![2]),
                    ),
                ])]),
            )],
        );
        assert!(matches!(
            check_call(&delegated, &CANISTER, NOW),
            Err(IngressError::Signature(m)) if m.contains("anonymous")
        ));
        let m = check_call(&body, &CANISTER, NOW).expect("accepted");
        assert_eq!(m.content.method_name, "greet");
        // The encoder gives back the same message.
        let again = check_call(&unsigned_envelope(&m.content), &CANISTER, NOW).expect("accepted");
        assert_eq!(again, m);
    }

    #[test]
    fn ed25519_signed_call_is_checked() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let der = [
            ED25519_DER_PREFIX.as_slice(),
            key.verifying_key().as_bytes(),
        ]
        .concat();
        let sender = self_authenticating(&der);
        let c = content(&sender, NOW + 1);
        let unsigned = check_call(&envelope(&c, vec![]), &CANISTER, NOW);
        assert!(matches!(unsigned, Err(IngressError::Signature(_))));
        let msg = IngressMessage {
            sender: sender.clone(),
            canister_id: CANISTER.to_vec(),
            method_name: "greet".into(),
            arg: b"DIDL\x00\x00".to_vec(),
            ingress_expiry: NOW + 1,
            nonce: None,
        };
        let sig = key.sign(&[b"\x0Aic-request".as_slice(), &msg.request_id().0].concat());
        let signed = |sig: Vec<u8>| {
            envelope(
                &c,
                vec![
                    ("sender_pubkey", ciborium::Value::Bytes(der.clone())),
                    ("sender_sig", ciborium::Value::Bytes(sig)),
                ],
            )
        };
        assert_eq!(
            check_call(&signed(sig.to_bytes().to_vec()), &CANISTER, NOW).map(|s| s.content),
            Ok(msg)
        );
        let mut bad = sig.to_bytes().to_vec();
        bad[0] ^= 1;
        assert_eq!(
            check_call(&signed(bad), &CANISTER, NOW),
            Err(IngressError::Signature(
                "sender_sig: the Ed25519 signature does not verify".into()
            ))
        );
    }

    #[test]
    fn bad_requests_say_why() {
        let ok = content(&ANONYMOUS, NOW);
        assert!(matches!(
            check_call(b"\xff\x00garbage", &CANISTER, NOW),
            Err(IngressError::Malformed(_))
        ));
        assert!(matches!(
            check_call(&envelope(&ok, vec![]), &[9], NOW),
            Err(IngressError::CanisterMismatch { .. })
        ));
        let expired = content(&ANONYMOUS, NOW - 1);
        assert!(matches!(
            check_call(&envelope(&expired, vec![]), &CANISTER, NOW),
            Err(IngressError::Expiry { .. })
        ));
        let far = content(
            &ANONYMOUS,
            NOW + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS + 1,
        );
        assert!(matches!(
            check_call(&envelope(&far, vec![]), &CANISTER, NOW),
            Err(IngressError::Expiry { .. })
        ));
        let not_anonymous = content(&[1, 2, 3], NOW);
        assert!(matches!(
            check_call(&envelope(&not_anonymous, vec![]), &CANISTER, NOW),
            Err(IngressError::Signature(_))
        ));
    }
}
