//! Threshold BLS signatures (basic scheme, the IC's DST): any `threshold` of the share holders
//! produce the unique group signature, verifiable with the group public key alone.
//!
//! The group's public information is its [`PublicCoefficients`]: the Feldman commitment
//! g2^{a_k} to the secret polynomial. Coefficient 0 is the group key; evaluating the commitment
//! at x = i + 1 gives the public key of share `i`, so every share is verifiable on its own.

use std::collections::BTreeSet;

use blstrs::{G1Affine, G1Projective, G2Affine, G2Projective, Scalar};
use group::{Curve, Group, prime::PrimeCurveAffine};
use serde::{Deserialize, Serialize};

use crate::CryptoError;
use crate::bls::{DST_BASIC, g2_mul, hash_to_g1, pairing_check};
use crate::polynomial::{lagrange_at_zero, x_of};

/// DER prefix of an IC BLS12-381 public key (SubjectPublicKeyInfo with the IC's OIDs): what
/// agents expect as the root key.
pub const DER_PREFIX: [u8; 37] = [
    0x30, 0x81, 0x82, 0x30, 0x1d, 0x06, 0x0d, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xdc, 0x7c, 0x05,
    0x03, 0x01, 0x02, 0x01, 0x06, 0x0c, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xdc, 0x7c, 0x05, 0x03,
    0x02, 0x01, 0x03, 0x61, 0x00,
];

/// One holder's share of the group secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretShare(pub(crate) Scalar);

impl std::fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretShare(..)")
    }
}

/// The group public key (the subnet public key for the high-threshold key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey(pub G2Affine);

/// Feldman commitment to the group polynomial; its length is the threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicCoefficients(pub Vec<G2Affine>);

/// A holder's signature share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigShare(pub G1Affine);

/// The group signature combined from `threshold` shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombinedSig(pub G1Affine);

impl SecretShare {
    pub fn public_key(&self) -> G2Affine {
        g2_mul(&self.0)
    }
}

impl CombinedSig {
    /// The 48-byte compressed G1 point, as IC certificates carry it.
    pub fn to_bytes(&self) -> [u8; 48] {
        self.0.to_compressed()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes: [u8; 48] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("BLS signature must be 48 bytes"))?;
        Option::<G1Affine>::from(G1Affine::from_compressed(&bytes))
            .map(CombinedSig)
            .ok_or(CryptoError::Malformed("not a G1 point"))
    }
}

impl PublicKey {
    /// DER encoding (133 bytes), as `/api/v2/status` returns the root key.
    pub fn to_der(&self) -> Vec<u8> {
        let mut out = DER_PREFIX.to_vec();
        out.extend_from_slice(&self.0.to_compressed());
        out
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = der
            .strip_prefix(&DER_PREFIX[..])
            .ok_or(CryptoError::Malformed("not an IC BLS public key DER"))?;
        let bytes: [u8; 96] = key
            .try_into()
            .map_err(|_| CryptoError::Malformed("BLS public key must be 96 bytes"))?;
        Option::<G2Affine>::from(G2Affine::from_compressed(&bytes))
            .map(PublicKey)
            .ok_or(CryptoError::Malformed("not a G2 point"))
    }
}

impl PublicCoefficients {
    pub fn threshold(&self) -> usize {
        self.0.len()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.first().copied().unwrap_or_else(G2Affine::identity))
    }

    /// Commitment evaluated at x (Horner in the exponent).
    pub fn evaluate_at(&self, x: &Scalar) -> G2Projective {
        self.0
            .iter()
            .rev()
            .fold(G2Projective::identity(), |acc, c| acc * x + c)
    }

    /// Public key of the share held by `index`. Horner's rule with the small public x = index+1:
    /// each step is a handful of doublings instead of a full 255-bit multiplication, which makes
    /// share verification in DKG and in signing cheap.
    pub fn share_public_key(&self, index: u32) -> G2Affine {
        let x = u64::from(index) + 1;
        self.0
            .iter()
            .rev()
            .fold(G2Projective::identity(), |acc, c| mul_small(&acc, x) + c)
            .to_affine()
    }

    /// Commitment to the polynomial with the given coefficients.
    pub fn commit(coefficients: &[Scalar]) -> Self {
        PublicCoefficients(coefficients.iter().map(g2_mul).collect())
    }
}

/// `p · k` for a small public `k` by double-and-add (variable time is fine: `k` is public).
fn mul_small(p: &G2Projective, k: u64) -> G2Projective {
    let mut acc = G2Projective::identity();
    for bit in (0..64 - k.leading_zeros()).rev() {
        acc = acc.double();
        if (k >> bit) & 1 == 1 {
            acc += p;
        }
    }
    acc
}

/// Signs `msg` with a share.
pub fn sign_share(share: &SecretShare, msg: &[u8]) -> SigShare {
    SigShare((hash_to_g1(msg, DST_BASIC) * share.0).to_affine())
}

/// Verifies a share of holder `index` against the group's public coefficients.
pub fn verify_share(
    sig: &SigShare,
    msg: &[u8],
    coefficients: &PublicCoefficients,
    index: u32,
) -> Result<(), CryptoError> {
    verify_share_with_key(sig, msg, &coefficients.share_public_key(index))
}

/// Verifies a share against a precomputed share public key.
pub fn verify_share_with_key(
    sig: &SigShare,
    msg: &[u8],
    key: &G2Affine,
) -> Result<(), CryptoError> {
    pairing_check(&sig.0, key, &hash_to_g1(msg, DST_BASIC))
        .then_some(())
        .ok_or(CryptoError::InvalidSignature)
}

/// Combines `threshold` shares by Lagrange interpolation in the exponent. Shares are taken in
/// ascending index order, so the same input set always gives the same computation; the result
/// is unique regardless of which shares are used. Shares must have been verified.
pub fn combine(shares: &[(u32, SigShare)], threshold: usize) -> Result<CombinedSig, CryptoError> {
    let mut seen = BTreeSet::new();
    for (i, _) in shares {
        if !seen.insert(*i) {
            return Err(CryptoError::DuplicateIndex(*i));
        }
    }
    if shares.len() < threshold || threshold == 0 {
        return Err(CryptoError::NotEnoughShares {
            have: shares.len(),
            need: threshold.max(1),
        });
    }
    let mut sorted: Vec<_> = shares.to_vec();
    sorted.sort_by_key(|(i, _)| *i);
    sorted.truncate(threshold);
    let xs: Vec<_> = sorted.iter().map(|(i, _)| x_of(*i)).collect();
    let lambdas = lagrange_at_zero(&xs)?;
    let points: Vec<G1Projective> = sorted.iter().map(|(_, s)| s.0.into()).collect();
    Ok(CombinedSig(
        G1Projective::multi_exp(&points, &lambdas).to_affine(),
    ))
}

/// Verifies a combined signature against the group public key.
pub fn verify_combined(sig: &CombinedSig, msg: &[u8], pk: &PublicKey) -> Result<(), CryptoError> {
    pairing_check(&sig.0, &pk.0, &hash_to_g1(msg, DST_BASIC))
        .then_some(())
        .ok_or(CryptoError::InvalidSignature)
}

/// Deals a key with a trusted dealer. Only for tests and benchmarks of the signing path: the
/// protocol always uses [`crate::dkg`].
pub fn deal_trusted<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
    threshold: usize,
    holders: u32,
) -> (PublicCoefficients, Vec<SecretShare>) {
    let secret = crate::bls::random_scalar(rng);
    let p = crate::polynomial::Polynomial::random(rng, secret, threshold);
    let shares = (0..holders)
        .map(|i| SecretShare(p.evaluate(&x_of(i))))
        .collect();
    (PublicCoefficients::commit(p.coefficients()), shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn any_threshold_subset_gives_the_same_valid_signature(
            seed: u64, n in 1u32..8, t_frac in 0.0f64..1.0, msg: Vec<u8>, pick_seed: u64,
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let t = 1 + ((f64::from(n - 1)) * t_frac) as usize;
            let (coeffs, shares) = deal_trusted(&mut rng, t, n);
            let sig_shares: Vec<(u32, SigShare)> = shares.iter().enumerate()
                .map(|(i, s)| (i as u32, sign_share(s, &msg))).collect();
            for (i, s) in &sig_shares {
                prop_assert!(verify_share(s, &msg, &coeffs, *i).is_ok());
            }
            let first = combine(&sig_shares[..t], t).unwrap();
            prop_assert!(verify_combined(&first, &msg, &coeffs.public_key()).is_ok());
            // A different subset (rotated) gives the identical signature: uniqueness.
            let mut rotated = sig_shares.clone();
            rotated.rotate_left((pick_seed % u64::from(n)) as usize);
            let second = combine(&rotated[..t], t).unwrap();
            prop_assert_eq!(first, second);
            if t > 1 {
                prop_assert!(combine(&sig_shares[..t - 1], t).is_err());
            }
        }
    }

    #[test]
    fn small_scalar_evaluation_matches_the_generic_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (coeffs, _) = deal_trusted(&mut rng, 5, 1);
        for i in [0u32, 1, 6, 39, 1000] {
            assert_eq!(
                coeffs.share_public_key(i),
                coeffs.evaluate_at(&x_of(i)).to_affine()
            );
        }
    }

    #[test]
    fn share_from_wrong_holder_fails() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (coeffs, shares) = deal_trusted(&mut rng, 2, 4);
        let s = sign_share(&shares[1], b"m");
        assert!(verify_share(&s, b"m", &coeffs, 2).is_err());
        assert!(verify_share(&s, b"m", &coeffs, 1).is_ok());
    }

    #[test]
    fn der_roundtrip_and_prefix() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (coeffs, _) = deal_trusted(&mut rng, 2, 3);
        let der = coeffs.public_key().to_der();
        assert_eq!(der.len(), 133);
        assert_eq!(PublicKey::from_der(&der).unwrap(), coeffs.public_key());
        assert!(PublicKey::from_der(&der[1..]).is_err());
    }

    #[test]
    fn duplicate_indices_are_rejected() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (_, shares) = deal_trusted(&mut rng, 2, 3);
        let s = sign_share(&shares[0], b"m");
        assert_eq!(
            combine(&[(0, s), (0, s)], 2),
            Err(CryptoError::DuplicateIndex(0))
        );
    }
}

#[cfg(test)]
mod blst_interop {
    //! Our signatures are the standard min-sig BLS of `blst` (what IC agents use to verify).
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn combined_signature_verifies_with_blst_min_sig() {
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let (coeffs, shares) = deal_trusted(&mut rng, 2, 3);
        let sigs: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, sign_share(s, b"cert")))
            .collect();
        let sig = combine(&sigs, 2).unwrap();
        let pk =
            blst::min_sig::PublicKey::from_bytes(&coeffs.public_key().0.to_compressed()).unwrap();
        let bsig = blst::min_sig::Signature::from_bytes(&sig.0.to_compressed()).unwrap();
        assert_eq!(
            bsig.verify(true, b"cert", DST_BASIC, &[], &pk, true),
            blst::BLST_ERROR::BLST_SUCCESS
        );
        assert_ne!(
            bsig.verify(true, b"cerx", DST_BASIC, &[], &pk, true),
            blst::BLST_ERROR::BLST_SUCCESS
        );
    }
}
