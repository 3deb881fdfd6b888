//! The HTTP gateway: websites served by canisters, as the IC's gateways serve them. A request
//! for `http://<canister id>.localhost:<port>/...` (any host whose first label is a canister
//! id), or for any path with `?canisterId=<id>`, becomes the canister's `http_request` query on
//! the newest certified state. A response asking for an upgrade is answered by the
//! `http_request_update` call, which goes through consensus (its reply is certified like any
//! call's). A response with a streaming callback is completed by calling the callback query
//! until it has no token. Every query response is checked with the IC's response verification
//! (certification versions 1 and 2) against the subnet's key before anything is answered; one
//! that fails gets a 503 saying why, never the canister's bytes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use candid::de::DecoderConfig;
use candid::{CandidType, Deserialize, IDLArgs, IDLValue, Principal};
use ic_http_certification::{HttpRequest, HttpResponse, HttpUpdateRequest};
use thicket_canister::system_api::MAX_REPLY_BYTES;
use thicket_state::Reject;
use thicket_types::ingress::{IngressMessage, RequestId, SignedIngress};
use tokio::sync::oneshot;

use super::envelope::{MAX_REQUEST_BYTES, now_ns};
use super::query::execute;
use super::{HttpState, certified, not_found};
use crate::clock::now_ms;
use crate::transport::Inbound;

/// How far the certificate's time may lag behind the replica's clock.
const MAX_CERT_AGE_NS: u128 = 5 * 60 * 1_000_000_000;
/// The most a streamed body may add up to, and the most callbacks it may take.
const MAX_STREAMED_BYTES: usize = 64 << 20;
const MAX_STREAM_CALLBACKS: usize = 1024;
/// How long the gateway waits for an `http_request_update` call to be answered.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A canister's answer to `http_request` (and `http_request_update`); its streaming strategy
/// only noted here, and read generically when there is one (see [`streaming`]).
#[derive(CandidType, Deserialize)]
struct CanisterResponse {
    status_code: u16,
    headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    upgrade: Option<bool>,
    streaming_strategy: Option<candid::Reserved>,
}

/// Work quotas for decoding a canister's reply (to the gateway, or to the CLI), in Candid's
/// cost model (see `candid::de::DecoderConfig`). Text and blobs cost about a unit per byte, so
/// twice the largest reply lets any well-formed one through. A few bytes that declare millions of values
/// taking no bytes (a `vec null`) are refused after bounded work instead of being allocated:
/// at about 56 bytes per value, that is at most about 60 MB, held for a moment. Values skipped,
/// or decoded generically, cost 50 times as much on the decoding quota.
const REPLY_SKIPPING_WORK: usize = 2 * MAX_REPLY_BYTES;
const REPLY_DECODING_WORK: usize = 51 * REPLY_SKIPPING_WORK;

/// The Candid decoder settings for a canister's reply, with the quotas above.
pub fn reply_config() -> DecoderConfig {
    let mut config = DecoderConfig::new();
    config
        .set_decoding_quota(REPLY_DECODING_WORK)
        .set_skipping_quota(REPLY_SKIPPING_WORK);
    config
}

/// The field `name` of a Candid record.
fn field<'a>(record: &'a IDLValue, name: &str) -> Option<&'a IDLValue> {
    let IDLValue::Record(fields) = record else {
        return None;
    };
    let id = candid::idl_hash(name);
    fields.iter().find(|f| f.id.get_id() == id).map(|f| &f.val)
}

fn blob(v: &IDLValue) -> Option<Vec<u8>> {
    match v {
        IDLValue::Blob(b) => Some(b.clone()),
        IDLValue::Vec(items) => items
            .iter()
            .map(|i| match i {
                IDLValue::Nat8(b) => Some(*b),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A response's streaming callback (its method on the canister, and the first token), read
/// generically: each canister defines its own token type.
fn streaming(reply: &[u8]) -> Result<Option<(Principal, String, IDLValue)>, String> {
    let args =
        IDLArgs::from_bytes_with_config(reply, &reply_config()).map_err(|e| e.to_string())?;
    let strategy = args
        .args
        .first()
        .and_then(|r| field(r, "streaming_strategy"));
    let Some(IDLValue::Opt(strategy)) = strategy else {
        return Ok(None);
    };
    let IDLValue::Variant(variant) = &**strategy else {
        return Err("streaming_strategy is not a variant".into());
    };
    if variant.0.id.get_id() != candid::idl_hash("Callback") {
        return Err("the only streaming strategy is Callback".into());
    }
    let callback = &variant.0.val;
    let Some(IDLValue::Func(principal, method)) = field(callback, "callback") else {
        return Err("the Callback strategy names no callback".into());
    };
    let token = field(callback, "token").ok_or("the Callback strategy has no token")?;
    Ok(Some((*principal, method.clone(), token.clone())))
}

/// A canister's answer to `http_request` (or `http_request_update`), read.
pub struct Answer {
    pub status_code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// It asks for the `http_request_update` call instead.
    pub upgrade: bool,
    /// Its streaming callback (read unless it asks for the update call): the canister and the
    /// method to call, and the first token.
    pub callback: Option<(Principal, String, IDLValue)>,
}

/// Reads a canister's answer to `http_request` or `http_request_update` (its Candid reply).
pub fn read_answer(reply: &[u8]) -> Result<Answer, String> {
    let r: CanisterResponse =
        candid::utils::decode_one_with_config(reply, &reply_config()).map_err(|e| e.to_string())?;
    let upgrade = r.upgrade == Some(true);
    // Only a streamed body needs the reply read a second time, generically.
    let callback = match r.streaming_strategy {
        Some(_) if !upgrade => streaming(reply)?,
        _ => None,
    };
    Ok(Answer {
        status_code: r.status_code,
        headers: r.headers,
        body: r.body,
        upgrade,
        callback,
    })
}

/// Reads one part of a streamed body (the callback's Candid reply): its bytes, and the token
/// of the next part if there is one.
pub fn read_part(reply: &[u8]) -> Result<(Vec<u8>, Option<IDLValue>), String> {
    let part =
        IDLArgs::from_bytes_with_config(reply, &reply_config()).map_err(|e| e.to_string())?;
    let part = part.args.first();
    let bytes = part
        .and_then(|p| field(p, "body"))
        .and_then(blob)
        .ok_or("a streamed part without a body")?;
    let next = match part.and_then(|p| field(p, "token")) {
        Some(IDLValue::Opt(next)) => Some((**next).clone()),
        _ => None,
    };
    Ok((bytes, next))
}

/// Checks canister `id`'s complete answer to `request` with the IC's response verification
/// (certification versions 1 and 2) against the subnet's key `root_key_der` at `now_ns`, and
/// returns what the gateway passes on: the answer with, under version 2, its certified headers
/// only (version 1 certifies the body alone).
pub fn verify_answer(
    request: HttpRequest<'_>,
    id: &Principal,
    answer: Answer,
    root_key_der: &[u8],
    now_ns: u64,
) -> Result<Answer, Failure> {
    let status = StatusCode::from_u16(answer.status_code).map_err(|e| undecodable(id, e))?;
    let url = request.url().to_string();
    let checked = HttpResponse::builder()
        .with_status_code(status)
        .with_headers(answer.headers.clone())
        .with_body(answer.body.clone())
        .build();
    let failed = |e: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the response of canister {id} for {url} failed certification: {e}"),
        )
    };
    super::certificate_header::check(&answer.headers)
        .map_err(|e| failed(format!("its IC-Certificate header is refused: {e}")))?;
    let verified = ic_response_verification::verify_request_response_pair(
        request,
        checked,
        id.as_slice(),
        u128::from(now_ns),
        MAX_CERT_AGE_NS,
        root_key_der,
        ic_response_verification::MIN_VERIFICATION_VERSION,
    )
    .map_err(|e| failed(e.to_string()))?;
    let headers = match verified.response {
        Some(v) if verified.verification_version >= 2 => v.headers,
        _ => answer.headers,
    };
    Ok(Answer { headers, ..answer })
}

/// The canister a request is for: the first label of its host, or its `canisterId`.
pub fn canister_of(req: &Request) -> Option<Principal> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "canisterId")
                .then(|| Principal::from_text(v).ok())
                .flatten()
        })
    });
    let from_host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (first, rest) = h.split_once('.')?;
            (!rest.is_empty())
                .then(|| Principal::from_text(first).ok())
                .flatten()
        });
    from_host.or(from_query)
}

/// Serves a request for a canister's website, or answers 404 for a path this port does not
/// serve.
pub async fn gateway(s: Arc<HttpState>, req: Request) -> Response {
    let Some(id) = canister_of(&req) else {
        return not_found(req.uri().clone()).await;
    };
    match serve(&s, id, req).await {
        Ok(r) => r,
        Err((status, why)) => (status, format!("{why}\n")).into_response(),
    }
}

/// Why the gateway answers an error instead: the status and the reason.
pub type Failure = (StatusCode, String);

fn refused(id: &Principal, r: Reject) -> Failure {
    let status = match r.code {
        3 => StatusCode::NOT_FOUND,
        2 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    (
        status,
        format!(
            "canister {id} did not answer: {} ({})",
            r.message, r.error_code
        ),
    )
}

fn undecodable(id: &Principal, e: impl std::fmt::Display) -> Failure {
    (
        StatusCode::BAD_GATEWAY,
        format!("canister {id} answered something that is not an HTTP response: {e}"),
    )
}

async fn serve(s: &HttpState, id: Principal, req: Request) -> Result<Response, Failure> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")))?;
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let request = HttpRequest::builder()
        .with_method(parts.method.clone())
        .with_url(url)
        .with_headers(headers)
        .with_body(body.to_vec())
        .with_certificate_version(2)
        .build();
    let cert = certified(s).ok_or((
        StatusCode::SERVICE_UNAVAILABLE,
        "the subnet has not certified a state yet".to_string(),
    ))?;
    let arg = candid::encode_one(&request).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let anonymous = Principal::anonymous().as_slice().to_vec();
    let reply = execute(
        &s.queries,
        cert.clone(),
        anonymous.clone(),
        Some(id),
        "http_request".into(),
        arg,
    )
    .await
    .map_err(|r| refused(&id, r))?;
    let mut answer = read_answer(&reply).map_err(|e| undecodable(&id, e))?;
    if answer.upgrade {
        let update: HttpUpdateRequest = request.into();
        let reply = call_update(s, id, &update).await?;
        let a = read_answer(&reply).map_err(|e| undecodable(&id, e))?;
        // The reply of a call is certified by the subnet: nothing more to check.
        return Ok(respond(a.status_code, a.headers, a.body));
    }
    if let Some((callee, method, token)) = answer.callback.take() {
        stream(
            &s.queries,
            &cert,
            id,
            callee,
            method,
            token,
            &mut answer.body,
        )
        .await?;
    }
    let a = verify_answer(request, &id, answer, &cert.subnet.public_key_der, now_ns())?;
    Ok(respond(a.status_code, a.headers, a.body))
}

/// Completes a streamed body with the callback's parts.
async fn stream(
    queries: &super::query::QueryLimit,
    cert: &Arc<crate::certifier::CertifiedState>,
    id: Principal,
    callee: Principal,
    method: String,
    mut token: IDLValue,
    body: &mut Vec<u8>,
) -> Result<(), Failure> {
    if callee != id {
        return Err((
            StatusCode::BAD_GATEWAY,
            format!("canister {id} streams its body from another canister ({callee})"),
        ));
    }
    let anonymous = Principal::anonymous().as_slice().to_vec();
    for _ in 0..MAX_STREAM_CALLBACKS {
        let arg = IDLArgs::new(&[token])
            .to_bytes()
            .map_err(|e| undecodable(&id, e))?;
        let reply = execute(
            queries,
            cert.clone(),
            anonymous.clone(),
            Some(id),
            method.clone(),
            arg,
        )
        .await
        .map_err(|r| refused(&id, r))?;
        let (bytes, next) = read_part(&reply).map_err(|e| undecodable(&id, e))?;
        body.extend_from_slice(&bytes);
        if body.len() > MAX_STREAMED_BYTES {
            return Err((
                StatusCode::BAD_GATEWAY,
                format!("canister {id} streams more than {MAX_STREAMED_BYTES} bytes"),
            ));
        }
        match next {
            Some(next) => token = next,
            None => return Ok(()),
        }
    }
    Err((
        StatusCode::BAD_GATEWAY,
        format!("canister {id} streams its body in more than {MAX_STREAM_CALLBACKS} parts"),
    ))
}

/// Calls `http_request_update` through consensus, as the anonymous principal, and waits for
/// the certified reply.
async fn call_update(
    s: &HttpState,
    id: Principal,
    update: &HttpUpdateRequest<'_>,
) -> Result<Vec<u8>, Failure> {
    let arg = candid::encode_one(update).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let now = now_ms();
    let msg = IngressMessage {
        sender: Principal::anonymous().as_slice().to_vec(),
        canister_id: id.as_slice().to_vec(),
        method_name: "http_request_update".into(),
        arg,
        ingress_expiry: now_ns() + 4 * 60 * 1_000_000_000,
        nonce: Some(now_ns().to_be_bytes().to_vec()),
    };
    let request_id = msg.request_id();
    let (tx, rx) = oneshot::channel();
    let busy = |e: String| (StatusCode::SERVICE_UNAVAILABLE, e);
    s.inbox
        .send(Inbound::Ingress {
            msg: SignedIngress::anonymous(msg),
            reply: tx,
        })
        .await
        .map_err(|_| busy("replica shutting down".into()))?;
    rx.await
        .map_err(|_| busy("replica shutting down".into()))?
        .map_err(busy)?;
    s.log.accepted(request_id, now, true);
    s.metrics.ingress_accepted.inc();
    certified_reply(s, id, request_id).await
}

/// The certified reply to request `request_id`, once the subnet has one.
async fn certified_reply(
    s: &HttpState,
    id: Principal,
    request_id: RequestId,
) -> Result<Vec<u8>, Failure> {
    let deadline = tokio::time::Instant::now() + UPDATE_TIMEOUT;
    let at = |leaf: &'static [u8]| [b"request_status".as_slice(), &request_id.0, leaf];
    loop {
        if let Some(cert) = certified(s) {
            match cert.tree.lookup(&at(b"status")) {
                Some(b"replied") => {
                    return cert
                        .tree
                        .lookup(&at(b"reply"))
                        .map(|r| r.to_vec())
                        .ok_or_else(|| {
                            (
                                StatusCode::BAD_GATEWAY,
                                format!("canister {id}'s reply is missing"),
                            )
                        });
                }
                Some(b"rejected") => {
                    let message = cert.tree.lookup(&at(b"reject_message")).unwrap_or_default();
                    return Err((
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "canister {id} rejected http_request_update: {}",
                            String::from_utf8_lossy(message)
                        ),
                    ));
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "canister {id} did not answer http_request_update within {UPDATE_TIMEOUT:?}"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn respond(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            // The body is whole: the canister's framing headers do not apply to it.
            if k != axum::http::header::CONTENT_LENGTH && k != axum::http::header::TRANSFER_ENCODING
            {
                r.headers_mut().append(k, v);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(CandidType)]
    struct Token {
        key: String,
        index: u64,
    }

    candid::define_function!(Callback : (Token) -> (Part) query);

    #[derive(CandidType)]
    enum Strategy {
        Callback { callback: Callback, token: Token },
    }

    #[derive(CandidType)]
    struct Reply {
        status_code: u16,
        headers: Vec<(String, String)>,
        body: serde_bytes::ByteBuf,
        upgrade: Option<bool>,
        streaming_strategy: Option<Strategy>,
    }

    #[derive(CandidType)]
    struct Part {
        body: serde_bytes::ByteBuf,
        token: Option<Token>,
    }

    fn token() -> Token {
        Token {
            key: "/index.html".into(),
            index: 1,
        }
    }

    fn leb128(out: &mut Vec<u8>, n: u64) {
        leb128::write::unsigned(out, n).expect("writes to a Vec");
    }

    /// A Candid message of one `vec null` of `n` elements: a few bytes, each element none.
    fn vec_null(n: u64) -> Vec<u8> {
        let mut out = b"DIDL\x01\x6d\x7f\x01\x00".to_vec();
        leb128(&mut out, n);
        out
    }

    /// An empty answer (`status_code`, `headers`, `body`) with an extra field of `n` nulls,
    /// which the gateway skips.
    fn answer_with_nulls(n: u64) -> Vec<u8> {
        // Types: 0 the record, 1 vec 2, 2 record {text; text}, 3 blob, 4 vec null.
        let mut fields = [
            ("status_code", 0x7a_u8),
            ("headers", 1),
            ("body", 3),
            ("extra", 4),
        ];
        fields.sort_by_key(|(name, _)| candid::idl_hash(name));
        let mut out = b"DIDL\x05\x6c\x04".to_vec();
        for (name, ty) in fields {
            leb128(&mut out, u64::from(candid::idl_hash(name)));
            out.push(ty);
        }
        out.extend(b"\x6d\x02\x6c\x02\x00\x71\x01\x71\x6d\x7b\x6d\x7f\x01\x00");
        for (name, _) in fields {
            match name {
                "status_code" => out.extend(200_u16.to_le_bytes()),
                "extra" => leb128(&mut out, n),
                _ => out.push(0),
            }
        }
        out
    }

    #[test]
    fn the_largest_replies_decode_whole() {
        let headers: Vec<_> = (0..100)
            .map(|i| (format!("x-header-{i}"), "v".repeat(200)))
            .collect();
        let body = vec![7; MAX_REPLY_BYTES - 64 * 1024];
        let reply = candid::encode_one(Reply {
            status_code: 200,
            headers: headers.clone(),
            body: serde_bytes::ByteBuf::from(body.clone()),
            upgrade: None,
            streaming_strategy: Some(Strategy::Callback {
                callback: Callback::new(Principal::anonymous(), "next".into()),
                token: token(),
            }),
        })
        .expect("encodes");
        assert!(reply.len() <= MAX_REPLY_BYTES, "{}", reply.len());
        let answer = read_answer(&reply).expect("the largest answer reads");
        assert_eq!(
            (answer.status_code, answer.headers, answer.body.len()),
            (200, headers, body.len())
        );
        let (principal, method, _) = answer.callback.expect("the callback is read");
        assert_eq!(
            (principal, method.as_str()),
            (Principal::anonymous(), "next")
        );

        let part = candid::encode_one(Part {
            body: serde_bytes::ByteBuf::from(vec![8; MAX_REPLY_BYTES - 1024]),
            token: Some(token()),
        })
        .expect("encodes");
        let (bytes, next) = read_part(&part).expect("the largest part reads");
        assert_eq!(bytes.len(), MAX_REPLY_BYTES - 1024);
        assert!(next.is_some(), "the next token is read");
    }

    #[test]
    fn a_reply_declaring_millions_of_empty_values_is_refused_after_bounded_work() {
        // Found by the gateway_reply fuzz target: 66 bytes whose `vec null` fields decoded
        // into more than 4 GB of values. (2^30 values of 56 bytes would be 60 GB.)
        let started = Instant::now();
        for reply in [
            vec_null(1 << 30),
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../e2e/fuzz/regressions/gateway_reply/oom-ea6d147a160e4cb311e10249bfc6dc4f0f083c8d"
            ))
            .expect("the fuzz regression is there"),
        ] {
            assert!(read_part(&reply).is_err(), "a part of {} bytes", reply.len());
            assert!(read_answer(&reply).is_err(), "an answer of {} bytes", reply.len());
        }
        // An extra field of 2^40 nulls in an answer is skipped, not decoded: bounded as well.
        assert_eq!(
            read_answer(&answer_with_nulls(3))
                .expect("reads")
                .status_code,
            200
        );
        assert!(read_answer(&answer_with_nulls(1 << 40)).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
