//! BLS multi-signatures with proof of possession, as the IC uses for notarization and
//! finalization: each committee member signs with its own key; signatures and keys aggregate by
//! addition. Rogue-key attacks are prevented by registering every key with a proof of possession.

use blstrs::{G1Affine, G1Projective, G2Affine, G2Projective, Scalar};
use group::{Curve, prime::PrimeCurveAffine};
use serde::{Deserialize, Serialize};

use crate::CryptoError;
use crate::bls::{DST_POP_PROOF, DST_POP_SIG, domain_separated, g2_mul, hash_to_g1, pairing_check};

/// Domain of the proof-of-possession message (the IC's).
const POP_DOMAIN: &str = "ic-multi-sig-bls12381-pop";

/// A committee signing secret key.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretKey(Scalar);

/// A committee signing public key (G2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey(pub G2Affine);

/// Proof that the holder of a public key knows its secret key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pop(pub G1Affine);

/// One member's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndividualSignature(pub G1Affine);

/// The sum of several members' signatures on the same message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombinedSignature(pub G1Affine);

impl SecretKey {
    pub fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        SecretKey(crate::bls::random_scalar(rng))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(g2_mul(&self.0))
    }

    pub fn sign(&self, msg: &[u8]) -> IndividualSignature {
        IndividualSignature((hash_to_g1(msg, DST_POP_SIG) * self.0).to_affine())
    }

    pub fn pop(&self) -> Pop {
        let m = pop_message(&self.public_key());
        Pop((hash_to_g1(&m, DST_POP_PROOF) * self.0).to_affine())
    }
}

fn pop_message(pk: &PublicKey) -> Vec<u8> {
    domain_separated(POP_DOMAIN, &pk.0.to_compressed())
}

impl PublicKey {
    /// Checks the proof of possession; a key is only usable once this passed.
    pub fn verify_pop(&self, pop: &Pop) -> Result<(), CryptoError> {
        let h = hash_to_g1(&pop_message(self), DST_POP_PROOF);
        pairing_check(&pop.0, &self.0, &h)
            .then_some(())
            .ok_or(CryptoError::InvalidPop)
    }
}

/// Verifies one member's signature.
pub fn verify_individual(
    sig: &IndividualSignature,
    msg: &[u8],
    pk: &PublicKey,
) -> Result<(), CryptoError> {
    pairing_check(&sig.0, &pk.0, &hash_to_g1(msg, DST_POP_SIG))
        .then_some(())
        .ok_or(CryptoError::InvalidSignature)
}

/// Adds signatures up. The caller verified each one (or verifies the aggregate).
pub fn aggregate(sigs: &[IndividualSignature]) -> CombinedSignature {
    let sum: G1Projective = sigs.iter().map(|s| G1Projective::from(s.0)).sum();
    CombinedSignature(sum.to_affine())
}

/// Verifies an aggregate against the signers' keys (all with verified proofs of possession).
pub fn verify_combined(
    sig: &CombinedSignature,
    msg: &[u8],
    pks: &[PublicKey],
) -> Result<(), CryptoError> {
    if pks.is_empty() {
        return Err(CryptoError::InvalidSignature);
    }
    let apk: G2Projective = pks.iter().map(|p| G2Projective::from(p.0)).sum();
    let apk = apk.to_affine();
    if bool::from(apk.is_identity()) {
        return Err(CryptoError::InvalidSignature);
    }
    pairing_check(&sig.0, &apk, &hash_to_g1(msg, DST_POP_SIG))
        .then_some(())
        .ok_or(CryptoError::InvalidSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn keys(seed: u64, n: usize) -> Vec<SecretKey> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| SecretKey::generate(&mut rng)).collect()
    }

    #[test]
    fn pop_verifies_only_for_its_key() {
        let k = keys(1, 2);
        assert!(k[0].public_key().verify_pop(&k[0].pop()).is_ok());
        assert_eq!(
            k[1].public_key().verify_pop(&k[0].pop()),
            Err(CryptoError::InvalidPop)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn aggregate_verifies_and_binds_message_and_signers(seed: u64, n in 1usize..6, msg: Vec<u8>) {
            let k = keys(seed, n + 1);
            let sigs: Vec<_> = k[..n].iter().map(|s| s.sign(&msg)).collect();
            for (s, key) in sigs.iter().zip(&k) {
                prop_assert!(verify_individual(s, &msg, &key.public_key()).is_ok());
            }
            let agg = aggregate(&sigs);
            let pks: Vec<_> = k[..n].iter().map(SecretKey::public_key).collect();
            prop_assert!(verify_combined(&agg, &msg, &pks).is_ok());
            let mut other = msg.clone();
            other.push(1);
            prop_assert!(verify_combined(&agg, &other, &pks).is_err());
            let wrong: Vec<_> = k[1..=n].iter().map(SecretKey::public_key).collect();
            prop_assert!(verify_combined(&agg, &msg, &wrong).is_err());
        }
    }

    #[test]
    fn identity_signature_is_rejected() {
        let k = keys(3, 1);
        let sig = IndividualSignature(G1Affine::identity());
        assert!(verify_individual(&sig, b"m", &k[0].public_key()).is_err());
    }
}
