//! Chaum–Pedersen proof (Fiat–Shamir) that log_G(P) = log_R(K) in G1, for the generator G.
//! A DKG receiver uses it to reveal the Diffie–Hellman key of one dealing without revealing
//! its secret key: anyone can then decrypt that dealing's share for it and judge the complaint.

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
}
