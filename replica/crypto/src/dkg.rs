//! Distributed key generation without a trusted dealer, and resharing of an existing key.
//!
//! Each dealer shares a secret with a Feldman-committed polynomial (coefficients committed in
//! G2, so the commitment's constant term is directly a BLS public key) and encrypts each
//! receiver's share with hashed ElGamal over G1 to the receiver's DKG encryption key.
//!
//! Everything about a dealing is publicly checkable ([`verify_dealing`]) except whether each
//! ciphertext hides the share the commitment promises. A receiver whose share is wrong publishes
//! a [`Complaint`]: the Diffie–Hellman key of that one dealing with a DLEQ proof, which lets
//! everybody decrypt the share and see that it is wrong ([`verify_complaint`]). A dealing with a
//! justified complaint is excluded, so all honest parties, seeing the same dealings and the same
//! complaints, derive the same transcript ([`create_transcript`]).
//!
//! *Fresh* DKG sums the qualified dealers' polynomials: more than `⌊(dealers−1)/3⌋` dealings are
//! needed, so at least one honest dealer contributes and the key is unknown to everyone.
//! *Resharing*: dealer `i` of the old committee deals its old share; the commitment's constant
//! term must equal the old share's public key. The first `old threshold` qualified dealings
//! (by dealer index) are combined with Lagrange coefficients, so the new polynomial's constant
//! term, and hence the group public key, is unchanged.
//!
//! Safety: a dealer cannot make two honest receivers disagree, because inclusion depends only on
//! public data. Liveness: a receiver that never complains in time about a bad share ends up with
//! an unusable share and behaves as faulty; this is why the protocol leaves a complaint window.

use std::collections::BTreeMap;

use blstrs::{G1Affine, G1Projective, G2Projective, Scalar};
use group::{Curve, prime::PrimeCurveAffine};
use serde::{Deserialize, Serialize};

use crate::CryptoError;
use crate::bls::{g1_mul, g2_mul, hash_to_scalar, random_scalar};
use crate::dleq::{self, DleqProof, KnowledgeProof};
use crate::polynomial::{Polynomial, lagrange_at_zero, x_of};
use crate::threshold::{PublicCoefficients, SecretShare};

const MASK_DOMAIN: &str = "thicket-dkg-share-mask";

/// A receiver's DKG decryption key.
#[derive(Clone, Serialize, Deserialize)]
pub struct EncryptionSecretKey(Scalar);

/// A receiver's DKG encryption key (G1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionPublicKey(pub G1Affine);

impl EncryptionSecretKey {
    pub fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        EncryptionSecretKey(random_scalar(rng))
    }

    pub fn public_key(&self) -> EncryptionPublicKey {
        EncryptionPublicKey(g1_mul(&self.0))
    }
}

/// Parameters every participant of one DKG instance agrees on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgConfig {
    /// Unique id of the instance; binds ciphertexts and complaints to it.
    pub dkg_id: Vec<u8>,
    /// Threshold of the key being created.
    pub threshold: u32,
    /// Number of dealers (dealer indices are `0..dealers`).
    pub dealers: u32,
    /// Receivers' encryption keys; a receiver's index is its position here.
    pub receivers: Vec<EncryptionPublicKey>,
    /// For resharing: the public coefficients of the key being reshared; dealer `i` is the
    /// holder of share `i` of that key.
    pub resharing: Option<PublicCoefficients>,
}

impl DkgConfig {
    /// Checks the IC's config invariants.
    pub fn validate(&self) -> Result<(), CryptoError> {
        let n = self.receivers.len();
        let bad = |m: String| Err(CryptoError::InvalidConfig(m));
        if self.threshold == 0 || self.threshold as usize > n {
            return bad(format!("threshold {} with {} receivers", self.threshold, n));
        }
        if self.dealers == 0 {
            return bad("no dealers".into());
        }
        if let Some(old) = &self.resharing {
            if (self.dealers as usize) < old.threshold() {
                return bad(format!(
                    "{} dealers cannot reshare a key of threshold {}",
                    self.dealers,
                    old.threshold()
                ));
            }
        }
        Ok(())
    }

    /// How many qualified dealings a transcript needs.
    pub fn min_dealings(&self) -> usize {
        match &self.resharing {
            Some(old) => old.threshold(),
            None => (self.dealers as usize - 1) / 3 + 1,
        }
    }

    fn context(&self, dealer: u32, receiver: u32) -> Vec<u8> {
        let mut ctx = self.dkg_id.clone();
        ctx.extend_from_slice(&dealer.to_be_bytes());
        ctx.extend_from_slice(&receiver.to_be_bytes());
        ctx
    }

    fn dealer_context(&self, dealer: u32) -> Vec<u8> {
        let mut ctx = self.dkg_id.clone();
        ctx.extend_from_slice(b"dealer");
        ctx.extend_from_slice(&dealer.to_be_bytes());
        ctx
    }

    fn receiver_key(&self, receiver: u32) -> Result<&EncryptionPublicKey, CryptoError> {
        self.receivers
            .get(receiver as usize)
            .ok_or(CryptoError::InvalidConfig(format!(
                "no receiver {receiver}"
            )))
    }
}

/// One dealer's contribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dealing {
    pub commitment: PublicCoefficients,
    /// Ephemeral ElGamal key G·r.
    pub ephemeral: G1Affine,
    /// Proof that the dealer knows r (bound to the DKG and the dealer).
    pub ephemeral_pok: KnowledgeProof,
    /// Share of receiver j plus the mask derived from (encryption key of j)·r.
    pub ciphertexts: Vec<Scalar>,
}

/// A receiver's public proof that its share in a dealing is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    pub receiver: u32,
    /// Diffie–Hellman key ephemeral·x of the receiver.
    pub key: G1Affine,
    pub proof: DleqProof,
}

/// The outcome of a DKG: the group's public coefficients and which dealings made them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub coefficients: PublicCoefficients,
    pub dealers: Vec<u32>,
}

fn mask(config: &DkgConfig, dealer: u32, receiver: u32, key: &G1Affine) -> Scalar {
    hash_to_scalar(
        MASK_DOMAIN,
        &[&config.context(dealer, receiver), &key.to_compressed()],
    )
}

/// Creates a dealing. For resharing, `reshared` is the dealer's share of the old key.
pub fn deal<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
    config: &DkgConfig,
    dealer: u32,
    reshared: Option<&SecretShare>,
) -> Result<Dealing, CryptoError> {
    config.validate()?;
    let constant = match (&config.resharing, reshared) {
        (Some(_), Some(share)) => share.0,
        (None, None) => random_scalar(rng),
        _ => {
            return Err(CryptoError::InvalidConfig(
                "resharing needs exactly the old share".into(),
            ));
        }
    };
    let poly = Polynomial::random(rng, constant, config.threshold as usize);
    let r = random_scalar(rng);
    let ciphertexts = (0..config.receivers.len() as u32)
        .map(|j| {
            let key = (G1Projective::from(config.receivers[j as usize].0) * r).to_affine();
            poly.evaluate(&x_of(j)) + mask(config, dealer, j, &key)
        })
        .collect();
    Ok(Dealing {
        commitment: PublicCoefficients::commit(poly.coefficients()),
        ephemeral: g1_mul(&r),
        ephemeral_pok: dleq::prove_knowledge(rng, &r, &config.dealer_context(dealer)),
        ciphertexts,
    })
}

/// Public checks of a dealing: shape, non-degenerate points and, for resharing, that it deals
/// the dealer's share of the old key.
pub fn verify_dealing(
    config: &DkgConfig,
    dealer: u32,
    dealing: &Dealing,
) -> Result<(), CryptoError> {
    let bad = |m: String| Err(CryptoError::InvalidDealing(m));
    if dealer >= config.dealers {
        return bad(format!(
            "dealer {dealer} is not one of {} dealers",
            config.dealers
        ));
    }
    if dealing.commitment.threshold() != config.threshold as usize {
        return bad(format!(
            "commitment has {} coefficients, threshold is {}",
            dealing.commitment.threshold(),
            config.threshold
        ));
    }
    if dealing.ciphertexts.len() != config.receivers.len() {
        return bad(format!(
            "{} ciphertexts for {} receivers",
            dealing.ciphertexts.len(),
            config.receivers.len()
        ));
    }
    if bool::from(dealing.ephemeral.is_identity()) {
        return bad("ephemeral key is the identity".into());
    }
    dleq::verify_knowledge(
        &dealing.ephemeral_pok,
        &dealing.ephemeral,
        &config.dealer_context(dealer),
    )?;
    if let Some(old) = &config.resharing {
        if dealing.commitment.0[0] != old.share_public_key(dealer) {
            return bad(format!("dealer {dealer} does not reshare its own share"));
        }
    } else if bool::from(dealing.commitment.0[0].is_identity()) {
        return bad("zero secret".into());
    }
    Ok(())
}

fn open(
    config: &DkgConfig,
    dealer: u32,
    dealing: &Dealing,
    receiver: u32,
    key: &G1Affine,
) -> Result<SecretShare, CryptoError> {
    let ct = dealing
        .ciphertexts
        .get(receiver as usize)
        .ok_or(CryptoError::InvalidDealing(format!(
            "no ciphertext for receiver {receiver}"
        )))?;
    let share = *ct - mask(config, dealer, receiver, key);
    if g2_mul(&share) != dealing.commitment.share_public_key(receiver) {
        return Err(CryptoError::InvalidDealing(format!(
            "share of receiver {receiver} does not match the commitment"
        )));
    }
    Ok(SecretShare(share))
}

/// Decrypts and checks the receiver's share of a (publicly verified) dealing.
pub fn decrypt_share(
    config: &DkgConfig,
    dealer: u32,
    dealing: &Dealing,
    receiver: u32,
    sk: &EncryptionSecretKey,
) -> Result<SecretShare, CryptoError> {
    let key = (G1Projective::from(dealing.ephemeral) * sk.0).to_affine();
    open(config, dealer, dealing, receiver, &key)
}

/// The receiver's complaint if its share in `dealing` is wrong, `None` if the share is fine.
pub fn complain<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
    config: &DkgConfig,
    dealer: u32,
    dealing: &Dealing,
    receiver: u32,
    sk: &EncryptionSecretKey,
) -> Option<Complaint> {
    decrypt_share(config, dealer, dealing, receiver, sk).err()?;
    Some(Complaint {
        receiver,
        key: (G1Projective::from(dealing.ephemeral) * sk.0).to_affine(),
        proof: dleq::prove(
            rng,
            &sk.0,
            &dealing.ephemeral,
            &config.context(dealer, receiver),
        ),
    })
}

/// `Ok` iff the complaint is justified: its key is proven to be the receiver's and the share it
/// opens does not match the commitment. A dealing with a justified complaint is disqualified.
pub fn verify_complaint(
    config: &DkgConfig,
    dealer: u32,
    dealing: &Dealing,
    complaint: &Complaint,
) -> Result<(), CryptoError> {
    let pk = config
        .receiver_key(complaint.receiver)
        .map_err(|_| CryptoError::InvalidComplaint("unknown receiver"))?;
    dleq::verify(
        &complaint.proof,
        &pk.0,
        &dealing.ephemeral,
        &complaint.key,
        &config.context(dealer, complaint.receiver),
    )?;
    match open(config, dealer, dealing, complaint.receiver, &complaint.key) {
        Ok(_) => Err(CryptoError::InvalidComplaint(
            "the share matches the commitment",
        )),
        Err(_) => Ok(()),
    }
}

/// Which dealings are combined, and with which weights: all for a fresh key, the first
/// `old threshold` with Lagrange coefficients for resharing.
fn selection(
    config: &DkgConfig,
    qualified: &BTreeMap<u32, Dealing>,
) -> Result<Vec<(u32, Scalar)>, CryptoError> {
    let need = config.min_dealings();
    if qualified.len() < need {
        return Err(CryptoError::NotEnoughDealings {
            have: qualified.len(),
            need,
        });
    }
    match &config.resharing {
        None => Ok(qualified.keys().map(|d| (*d, Scalar::from(1u64))).collect()),
        Some(_) => {
            let dealers: Vec<u32> = qualified.keys().copied().take(need).collect();
            let xs: Vec<Scalar> = dealers.iter().map(|d| x_of(*d)).collect();
            Ok(dealers.into_iter().zip(lagrange_at_zero(&xs)?).collect())
        }
    }
}

/// Combines qualified dealings (publicly verified, without justified complaints) into the
/// transcript. Deterministic in its input.
pub fn create_transcript(
    config: &DkgConfig,
    qualified: &BTreeMap<u32, Dealing>,
) -> Result<Transcript, CryptoError> {
    config.validate()?;
    let sel = selection(config, qualified)?;
    // Coefficient k of the group polynomial is Σ_d weight_d · C_{d,k}: one multi-exponentiation
    // per coefficient (Pippenger), or a plain sum when all weights are 1 (fresh keys).
    let unweighted = sel.iter().all(|(_, w)| *w == Scalar::from(1u64));
    let weights: Vec<Scalar> = sel.iter().map(|(_, w)| *w).collect();
    let coefficients: Vec<G2Projective> = (0..config.threshold as usize)
        .map(|k| {
            let points: Vec<G2Projective> = sel
                .iter()
                .map(|(d, _)| G2Projective::from(qualified[d].commitment.0[k]))
                .collect();
            if unweighted {
                points.iter().sum()
            } else {
                G2Projective::multi_exp(&points, &weights)
            }
        })
        .collect();
    let coefficients = PublicCoefficients(coefficients.iter().map(|c| c.to_affine()).collect());
    if let Some(old) = &config.resharing {
        if coefficients.public_key() != old.public_key() {
            return Err(CryptoError::ResharingChangedKey);
        }
    }
    Ok(Transcript {
        coefficients,
        dealers: sel.into_iter().map(|(d, _)| d).collect(),
    })
}

/// The receiver's share of the transcript's key.
pub fn receiver_share(
    config: &DkgConfig,
    transcript: &Transcript,
    qualified: &BTreeMap<u32, Dealing>,
    receiver: u32,
    sk: &EncryptionSecretKey,
) -> Result<SecretShare, CryptoError> {
    let sel = selection(config, qualified)?;
    let mut share = Scalar::from(0u64);
    for (dealer, weight) in &sel {
        share += decrypt_share(config, *dealer, &qualified[dealer], receiver, sk)?.0 * weight;
    }
    let share = SecretShare(share);
    if share.public_key() != transcript.coefficients.share_public_key(receiver) {
        return Err(CryptoError::InvalidDealing(
            "combined share does not match the transcript".into(),
        ));
    }
    Ok(share)
}

#[cfg(test)]
mod tests;
