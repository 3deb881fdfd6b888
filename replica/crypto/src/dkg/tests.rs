use super::*;
use crate::threshold::{combine, sign_share, verify_combined, verify_share};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Committee {
    keys: Vec<EncryptionSecretKey>,
}

impl Committee {
    fn new(rng: &mut ChaCha20Rng, n: usize) -> Self {
        Committee {
            keys: (0..n).map(|_| EncryptionSecretKey::generate(rng)).collect(),
        }
    }
    fn public(&self) -> Vec<EncryptionPublicKey> {
        self.keys
            .iter()
            .map(EncryptionSecretKey::public_key)
            .collect()
    }
}

fn config(
    id: &str,
    t: u32,
    dealers: u32,
    to: &Committee,
    resharing: Option<PublicCoefficients>,
) -> DkgConfig {
    DkgConfig {
        dkg_id: id.as_bytes().to_vec(),
        threshold: t,
        dealers,
        receivers: to.public(),
        resharing,
    }
}

/// Runs a DKG where every dealer is honest; returns the transcript and every receiver's share.
fn run(
    rng: &mut ChaCha20Rng,
    cfg: &DkgConfig,
    to: &Committee,
    old: Option<&[SecretShare]>,
) -> (Transcript, Vec<SecretShare>) {
    let mut dealings = BTreeMap::new();
    for d in 0..cfg.dealers {
        let dealing = deal(rng, cfg, d, old.map(|o| &o[d as usize])).unwrap();
        verify_dealing(cfg, d, &dealing).unwrap();
        dealings.insert(d, dealing);
    }
    let tr = create_transcript(cfg, &dealings).unwrap();
    let shares = (0..to.keys.len() as u32)
        .map(|j| receiver_share(cfg, &tr, &dealings, j, &to.keys[j as usize]).unwrap())
        .collect();
    (tr, shares)
}

fn assert_signs(tr: &Transcript, shares: &[SecretShare], t: usize) {
    let msg = b"beacon";
    let sigs: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u32, sign_share(s, msg)))
        .collect();
    for (i, s) in &sigs {
        verify_share(s, msg, &tr.coefficients, *i).unwrap();
    }
    let sig = combine(&sigs[sigs.len() - t..], t).unwrap();
    verify_combined(&sig, msg, &tr.coefficients.public_key()).unwrap();
}

#[test]
fn fresh_dkg_gives_every_receiver_a_working_share() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let c = Committee::new(&mut rng, 4);
    let cfg = config("fresh", 3, 4, &c, None);
    let (tr, shares) = run(&mut rng, &cfg, &c, None);
    assert_eq!(tr.dealers, vec![0, 1, 2, 3]);
    assert_signs(&tr, &shares, 3);
}

#[test]
fn cheating_dealer_with_bad_share_is_excluded_and_receivers_agree() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let c = Committee::new(&mut rng, 4);
    let cfg = config("cheat", 2, 4, &c, None);
    let mut dealings = BTreeMap::new();
    for d in 0..4 {
        dealings.insert(d, deal(&mut rng, &cfg, d, None).unwrap());
    }
    // Dealer 1 sends receiver 2 a wrong share; the dealing still passes the public checks.
    dealings.get_mut(&1).unwrap().ciphertexts[2] += Scalar::from(1u64);
    verify_dealing(&cfg, 1, &dealings[&1]).unwrap();

    // Only receiver 2 has cause to complain, and its complaint convinces everyone.
    for j in [0u32, 1, 3] {
        assert!(complain(&mut rng, &cfg, 1, &dealings[&1], j, &c.keys[j as usize]).is_none());
    }
    let complaint = complain(&mut rng, &cfg, 1, &dealings[&1], 2, &c.keys[2]).unwrap();
    verify_complaint(&cfg, 1, &dealings[&1], &complaint).unwrap();

    // A false complaint (receiver 0 about the same dealing) and a forged key are rejected.
    let mut forged = complaint.clone();
    forged.receiver = 0;
    assert!(verify_complaint(&cfg, 1, &dealings[&1], &forged).is_err());
    let honest_dealing_complaint = Complaint {
        receiver: 0,
        key: (G1Projective::from(dealings[&0].ephemeral) * c.keys[0].0).to_affine(),
        proof: dleq::prove(
            &mut rng,
            &c.keys[0].0,
            &dealings[&0].ephemeral,
            &cfg.context(0, 0),
        ),
    };
    assert_eq!(
        verify_complaint(&cfg, 0, &dealings[&0], &honest_dealing_complaint),
        Err(CryptoError::InvalidComplaint(
            "the share matches the commitment"
        ))
    );

    // Everyone excludes dealer 1 and derives the same key; all receivers hold valid shares.
    dealings.remove(&1);
    let tr = create_transcript(&cfg, &dealings).unwrap();
    assert_eq!(tr.dealers, vec![0, 2, 3]);
    let shares: Vec<_> = (0..4u32)
        .map(|j| receiver_share(&cfg, &tr, &dealings, j, &c.keys[j as usize]).unwrap())
        .collect();
    assert_signs(&tr, &shares, 2);
}

#[test]
fn malformed_dealings_fail_public_verification() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let c = Committee::new(&mut rng, 4);
    let cfg = config("shape", 2, 4, &c, None);
    let good = deal(&mut rng, &cfg, 0, None).unwrap();

    let mut short = good.clone();
    short.commitment.0.pop();
    assert!(matches!(
        verify_dealing(&cfg, 0, &short),
        Err(CryptoError::InvalidDealing(_))
    ));
    let mut missing = good.clone();
    missing.ciphertexts.pop();
    assert!(verify_dealing(&cfg, 0, &missing).is_err());
    assert!(verify_dealing(&cfg, 4, &good).is_err(), "unknown dealer");
    let mut zero = good.clone();
    zero.ephemeral = G1Affine::identity();
    assert!(verify_dealing(&cfg, 0, &zero).is_err());
}

/// A dealer that copies another dealer's ephemeral key (to make the victims' complaints reveal
/// keys that open the other dealing) cannot prove knowledge of it.
#[test]
fn copied_ephemeral_keys_are_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let c = Committee::new(&mut rng, 4);
    let cfg = config("copy", 2, 4, &c, None);
    let honest = deal(&mut rng, &cfg, 0, None).unwrap();
    let mut copy = deal(&mut rng, &cfg, 1, None).unwrap();
    copy.ephemeral = honest.ephemeral;
    assert!(verify_dealing(&cfg, 1, &copy).is_err());
    copy.ephemeral_pok = honest.ephemeral_pok;
    assert!(
        verify_dealing(&cfg, 1, &copy).is_err(),
        "the proof is bound to the dealer"
    );
}

#[test]
fn too_few_dealings_give_no_transcript() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let c = Committee::new(&mut rng, 7);
    let cfg = config("few", 3, 7, &c, None);
    let mut dealings = BTreeMap::new();
    dealings.insert(0, deal(&mut rng, &cfg, 0, None).unwrap());
    dealings.insert(1, deal(&mut rng, &cfg, 1, None).unwrap());
    assert_eq!(
        create_transcript(&cfg, &dealings),
        Err(CryptoError::NotEnoughDealings { have: 2, need: 3 })
    );
}

#[test]
fn resharing_dealer_with_wrong_key_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let old = Committee::new(&mut rng, 4);
    let (tr, shares) = run(&mut rng, &config("g", 3, 4, &old, None), &old, None);
    let new = Committee::new(&mut rng, 5);
    let cfg = config("r", 3, 4, &new, Some(tr.coefficients.clone()));
    // Dealer 2 deals dealer 0's share instead of its own.
    let wrong = deal(&mut rng, &cfg, 2, Some(&shares[0])).unwrap();
    assert!(matches!(
        verify_dealing(&cfg, 2, &wrong),
        Err(CryptoError::InvalidDealing(_))
    ));
    assert!(
        deal(&mut rng, &cfg, 2, None).is_err(),
        "resharing requires the old share"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    /// Key resharing across changing committees (any size, any overlap, new thresholds)
    /// keeps the group public key, and each new committee can sign.
    #[test]
    fn resharing_keeps_the_public_key(seed: u64, sizes in proptest::collection::vec(1usize..8, 1..4)) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let threshold = |n: usize| (n - (n - 1) / 3) as u32;
        let n0 = 4;
        let mut committee = Committee::new(&mut rng, n0);
        let cfg0 = config("genesis", threshold(n0), n0 as u32, &committee, None);
        let (mut tr, mut shares) = run(&mut rng, &cfg0, &committee, None);
        let key = tr.coefficients.public_key();
        for (round, n) in sizes.into_iter().enumerate() {
            // Keep some old members (overlap), add fresh ones.
            let mut next = Committee::new(&mut rng, n);
            for (k, old_key) in committee.keys.iter().take(n / 2).enumerate() {
                next.keys[k] = old_key.clone();
            }
            let cfg = config(&format!("reshare-{round}"), threshold(n), committee.keys.len() as u32,
                &next, Some(tr.coefficients.clone()));
            let (t2, s2) = run(&mut rng, &cfg, &next, Some(&shares));
            prop_assert_eq!(t2.coefficients.public_key(), key);
            assert_signs(&t2, &s2, threshold(n) as usize);
            tr = t2;
            shares = s2;
            committee = next;
        }
    }
}
