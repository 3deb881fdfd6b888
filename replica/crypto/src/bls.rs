//! BLS12-381 building blocks shared by the multi-signature, threshold and DKG schemes.

use std::sync::LazyLock;

use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Prepared, Scalar};
use group::{Curve, Group, prime::PrimeCurveAffine};
use pairing::{MillerLoopResult, MultiMillerLoop};
use sha2::{Digest, Sha512};

/// Basic-scheme DST, used by the IC for threshold signatures (beacon, certification, CUP), so
/// that IC agents verify our certificates.
pub const DST_BASIC: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_";
/// Message DST of the proof-of-possession ciphersuite, used by the IC's multi-signatures.
pub const DST_POP_SIG: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// DST for proofs of possession themselves.
pub const DST_POP_PROOF: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// −g2, prepared once: every verification pairs the signature with it.
static NEG_G2: LazyLock<G2Prepared> = LazyLock::new(|| G2Prepared::from(-G2Affine::generator()));

/// Hashes `msg` to G1 (hash_to_curve, SSWU, random oracle) under `dst`.
pub fn hash_to_g1(msg: &[u8], dst: &[u8]) -> G1Affine {
    if !SHARED_CACHE.with(|c| c.borrow().is_some()) {
        return G1Projective::hash_to_curve(msg, dst, &[]).to_affine();
    }
    let mut key = Vec::with_capacity(1 + dst.len() + msg.len());
    key.push(0xff);
    key.extend_from_slice(dst);
    key.extend_from_slice(msg);
    if let Some(p) = HASH_CACHE.with(|c| c.borrow().get(&key).copied()) {
        return p;
    }
    let p = G1Projective::hash_to_curve(msg, dst, &[]).to_affine();
    HASH_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= SHARED_CACHE_CAPACITY {
            c.clear();
        }
        c.insert(key, p);
    });
    p
}

/// Checks e(sig, g2) == e(h, pk) with one multi-Miller loop and one final exponentiation.
/// Identity signatures or keys never verify: they would make forgery trivial.
pub fn pairing_check(sig: &G1Affine, pk: &G2Affine, h: &G1Affine) -> bool {
    if bool::from(sig.is_identity()) || bool::from(pk.is_identity()) {
        return false;
    }
    if !SHARED_CACHE.with(|c| c.borrow().is_some()) {
        return pairing_check_uncached(sig, pk, h);
    }
    let mut key = Vec::with_capacity(192);
    key.extend_from_slice(&sig.to_compressed());
    key.extend_from_slice(&pk.to_compressed());
    key.extend_from_slice(&h.to_compressed());
    if let Some(hit) = SHARED_CACHE.with(|c| c.borrow().as_ref().and_then(|m| m.get(&key).copied()))
    {
        return hit;
    }
    let ok = pairing_check_uncached(sig, pk, h);
    SHARED_CACHE.with(|c| {
        if let Some(m) = c.borrow_mut().as_mut() {
            if m.len() >= SHARED_CACHE_CAPACITY {
                m.clear();
            }
            m.insert(key, ok);
        }
    });
    ok
}

/// Entries kept before the cache starts over (about 200 MB at most).
const SHARED_CACHE_CAPACITY: usize = 1 << 20;

thread_local! {
    static HASH_CACHE: std::cell::RefCell<std::collections::HashMap<Vec<u8>, G1Affine>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    static SHARED_CACHE: std::cell::RefCell<Option<std::collections::HashMap<Vec<u8>, bool>>> =
        const { std::cell::RefCell::new(None) };
}

/// For the simulator only, which runs many replicas in one thread: remembers the outcome of
/// each (signature, key, message point) check and each message's hash to G1, so that the
/// replicas, which all verify the same artifacts, pay for each distinct computation once. The
/// answers are the same, since both are pure functions of their inputs. A replica process never
/// enables it.
pub fn enable_shared_verification_cache() {
    SHARED_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(std::collections::HashMap::new());
        }
    });
}

fn pairing_check_uncached(sig: &G1Affine, pk: &G2Affine, h: &G1Affine) -> bool {
    let pk = G2Prepared::from(*pk);
    Bls12::multi_miller_loop(&[(sig, &NEG_G2), (h, &pk)])
        .final_exponentiation()
        .is_identity()
        .into()
}

/// IC-style domain separator: one length byte, then the domain.
pub fn domain_separated(domain: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + domain.len() + data.len());
    out.push(u8::try_from(domain.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Hashes to a scalar: SHA-512 of the length-prefixed parts, reduced modulo the group order
/// (512 bits reduced to 255 leaves a bias below 2^-256).
pub fn hash_to_scalar(domain: &str, parts: &[&[u8]]) -> Scalar {
    let mut h = Sha512::new();
    h.update(domain_separated(domain, &[]));
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let two_64 = Scalar::from(u64::MAX) + Scalar::from(1u64);
    let mut acc = Scalar::from(0u64);
    for chunk in digest.chunks_exact(8) {
        let mut limb = [0u8; 8];
        limb.copy_from_slice(chunk);
        acc = acc * two_64 + Scalar::from(u64::from_be_bytes(limb));
    }
    acc
}

/// A uniformly random non-zero scalar.
pub fn random_scalar<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Scalar {
    loop {
        let s = <Scalar as ff::Field>::random(&mut *rng);
        if !bool::from(ff::Field::is_zero(&s)) {
            return s;
        }
    }
}

/// The G2 generator times `s`.
pub fn g2_mul(s: &Scalar) -> G2Affine {
    (blstrs::G2Projective::generator() * s).to_affine()
}

/// The G1 generator times `s`.
pub fn g1_mul(s: &Scalar) -> G1Affine {
    (G1Projective::generator() * s).to_affine()
}
