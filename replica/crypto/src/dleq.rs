//! Zero-knowledge proofs in G1 (Fiat–Shamir), for the DKG:
//! - Chaum–Pedersen proof that log_G(P) = log_R(K): a receiver reveals the Diffie–Hellman key
//!   of one dealing without revealing its secret key, so anyone can decrypt that dealing's share
//!   for it and judge the complaint;
//! - Schnorr proof of knowledge of log_G(R): a dealer proves it made its ephemeral key, so it
//!   cannot copy another dealer's and turn the complaints about its own dealing into keys that
//!   open the other dealer's shares.

use blstrs::{G1Affine, G1Projective, Scalar};
use group::{Curve, Group};
use serde::{Deserialize, Serialize};

use crate::CryptoError;
use crate::bls::{hash_to_scalar, random_scalar};

const DOMAIN: &str = "thicket-dkg-dleq";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DleqProof {
    challenge: Scalar,
    response: Scalar,
}

fn challenge(
    p: &G1Affine,
    r: &G1Affine,
    k: &G1Affine,
    a1: &G1Affine,
    a2: &G1Affine,
    ctx: &[u8],
) -> Scalar {
    hash_to_scalar(
        DOMAIN,
        &[
            &p.to_compressed(),
            &r.to_compressed(),
            &k.to_compressed(),
            &a1.to_compressed(),
            &a2.to_compressed(),
            ctx,
        ],
    )
}

/// Proves knowledge of `x` with P = G·x and K = R·x, bound to `ctx`.
pub fn prove<Rng: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut Rng,
    x: &Scalar,
    r: &G1Affine,
    ctx: &[u8],
) -> DleqProof {
    let p = (G1Projective::generator() * x).to_affine();
    let k = (G1Projective::from(r) * x).to_affine();
    let w = random_scalar(rng);
    let a1 = (G1Projective::generator() * w).to_affine();
    let a2 = (G1Projective::from(r) * w).to_affine();
    let c = challenge(&p, r, &k, &a1, &a2, ctx);
    DleqProof {
        challenge: c,
        response: w + c * x,
    }
}

/// Verifies that `k` = `r`·x for the x with `p` = G·x.
pub fn verify(
    proof: &DleqProof,
    p: &G1Affine,
    r: &G1Affine,
    k: &G1Affine,
    ctx: &[u8],
) -> Result<(), CryptoError> {
    let z = proof.response;
    let c = proof.challenge;
    let a1 = (G1Projective::generator() * z - G1Projective::from(p) * c).to_affine();
    let a2 = (G1Projective::from(r) * z - G1Projective::from(k) * c).to_affine();
    (challenge(p, r, k, &a1, &a2, ctx) == c)
        .then_some(())
        .ok_or(CryptoError::InvalidComplaint("DLEQ proof does not verify"))
}

const POK_DOMAIN: &str = "thicket-dkg-ephemeral-pok";

/// Schnorr proof of knowledge of r with R = G·r.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeProof {
    challenge: Scalar,
    response: Scalar,
}

fn pok_challenge(r: &G1Affine, a: &G1Affine, ctx: &[u8]) -> Scalar {
    hash_to_scalar(POK_DOMAIN, &[&r.to_compressed(), &a.to_compressed(), ctx])
}

/// Proves knowledge of `x` for G·x, bound to `ctx`.
pub fn prove_knowledge<Rng: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut Rng,
    x: &Scalar,
    ctx: &[u8],
) -> KnowledgeProof {
    let r = (G1Projective::generator() * x).to_affine();
    let w = random_scalar(rng);
    let a = (G1Projective::generator() * w).to_affine();
    let c = pok_challenge(&r, &a, ctx);
    KnowledgeProof {
        challenge: c,
        response: w + c * x,
    }
}

/// Verifies a proof of knowledge of log_G(`r`) bound to `ctx`.
pub fn verify_knowledge(
    proof: &KnowledgeProof,
    r: &G1Affine,
    ctx: &[u8],
) -> Result<(), CryptoError> {
    let a = (G1Projective::generator() * proof.response - G1Projective::from(r) * proof.challenge)
        .to_affine();
    (pok_challenge(r, &a, ctx) == proof.challenge)
        .then_some(())
        .ok_or(CryptoError::InvalidDealing(
            "no proof of knowledge of the ephemeral key".into(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn proof_verifies_and_binds_key_and_context() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let x = random_scalar(&mut rng);
        let r = crate::bls::g1_mul(&random_scalar(&mut rng));
        let p = crate::bls::g1_mul(&x);
        let k = (G1Projective::from(r) * x).to_affine();
        let proof = prove(&mut rng, &x, &r, b"ctx");
        assert!(verify(&proof, &p, &r, &k, b"ctx").is_ok());
        assert!(verify(&proof, &p, &r, &k, b"other").is_err());
        let wrong_k = (G1Projective::from(k) + G1Projective::generator()).to_affine();
        assert!(verify(&proof, &p, &r, &wrong_k, b"ctx").is_err());
    }

    #[test]
    fn knowledge_proof_binds_point_and_context() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let x = random_scalar(&mut rng);
        let r = crate::bls::g1_mul(&x);
        let proof = prove_knowledge(&mut rng, &x, b"dealer 1");
        assert!(verify_knowledge(&proof, &r, b"dealer 1").is_ok());
        assert!(verify_knowledge(&proof, &r, b"dealer 2").is_err());
        let other = crate::bls::g1_mul(&random_scalar(&mut rng));
        assert!(verify_knowledge(&proof, &other, b"dealer 1").is_err());
    }
}
