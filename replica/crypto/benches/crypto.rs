//! Crypto figures for BENCHMARKS.md: `cargo bench -p thicket-crypto`.
//! Sizes follow IC subnets: n = 4, 13 (application), 40 (NNS); thresholds as the protocol uses
//! them (multi-sig and high threshold n − f, resharing from n to n).

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thicket_crypto::dkg::{self, DkgConfig, EncryptionSecretKey};
use thicket_crypto::{multi_sig, threshold};

const SIZES: [u32; 3] = [4, 13, 40];
const MSG: &[u8] = b"thicket benchmark message: a 32-byte block hash.....";

fn high_threshold(n: u32) -> u32 {
    n - (n - 1) / 3
}

fn bench_multi_sig(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("multi_sig");
    let sk = multi_sig::SecretKey::generate(&mut rng);
    let sig = sk.sign(MSG);
    g.bench_function("sign", |b| b.iter(|| sk.sign(MSG)));
    g.bench_function("verify_individual", |b| {
        b.iter(|| multi_sig::verify_individual(&sig, MSG, &sk.public_key()))
    });
    for n in SIZES {
        let t = high_threshold(n) as usize;
        let keys: Vec<_> = (0..t)
            .map(|_| multi_sig::SecretKey::generate(&mut rng))
            .collect();
        let sigs: Vec<_> = keys.iter().map(|k| k.sign(MSG)).collect();
        let pks: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
        let agg = multi_sig::aggregate(&sigs);
        g.bench_with_input(BenchmarkId::new("aggregate", n), &sigs, |b, s| {
            b.iter(|| multi_sig::aggregate(s))
        });
        g.bench_with_input(BenchmarkId::new("verify_aggregate", n), &pks, |b, p| {
            b.iter(|| multi_sig::verify_combined(&agg, MSG, p))
        });
    }
    g.finish();
}

fn bench_threshold(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut g = c.benchmark_group("threshold");
    for n in SIZES {
        let t = high_threshold(n) as usize;
        let (coeffs, shares) = threshold::deal_trusted(&mut rng, t, n);
        let sig_shares: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, threshold::sign_share(s, MSG)))
            .collect();
        let combined = threshold::combine(&sig_shares, t).expect("enough shares");
        g.bench_function(BenchmarkId::new("sign_share", n), |b| {
            b.iter(|| threshold::sign_share(&shares[0], MSG))
        });
        g.bench_function(BenchmarkId::new("verify_share", n), |b| {
            b.iter(|| threshold::verify_share(&sig_shares[n as usize - 1].1, MSG, &coeffs, n - 1))
        });
        g.bench_function(BenchmarkId::new("combine", n), |b| {
            b.iter(|| threshold::combine(&sig_shares, t))
        });
        g.bench_function(BenchmarkId::new("verify_combined", n), |b| {
            b.iter(|| threshold::verify_combined(&combined, MSG, &coeffs.public_key()))
        });
    }
    g.finish();
}

fn bench_dkg(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut g = c.benchmark_group("dkg");
    g.sample_size(10);
    for n in SIZES {
        let t = high_threshold(n);
        let keys: Vec<_> = (0..n)
            .map(|_| EncryptionSecretKey::generate(&mut rng))
            .collect();
        let fresh = DkgConfig {
            dkg_id: b"bench".to_vec(),
            threshold: t,
            dealers: n,
            receivers: keys.iter().map(|k| k.public_key()).collect(),
            resharing: None,
        };
        let dealings: BTreeMap<u32, _> = (0..n)
            .map(|d| (d, dkg::deal(&mut rng, &fresh, d, None).expect("deal")))
            .collect();
        let transcript = dkg::create_transcript(&fresh, &dealings).expect("transcript");
        g.bench_function(BenchmarkId::new("deal", n), |b| {
            b.iter(|| dkg::deal(&mut rng, &fresh, 0, None))
        });
        g.bench_function(BenchmarkId::new("verify_dealing", n), |b| {
            b.iter(|| dkg::verify_dealing(&fresh, 0, &dealings[&0]))
        });
        g.bench_function(BenchmarkId::new("decrypt_share", n), |b| {
            b.iter(|| dkg::decrypt_share(&fresh, 0, &dealings[&0], 1, &keys[1]))
        });
        g.bench_function(BenchmarkId::new("create_transcript", n), |b| {
            b.iter(|| dkg::create_transcript(&fresh, &dealings))
        });
        let share =
            dkg::receiver_share(&fresh, &transcript, &dealings, 0, &keys[0]).expect("share");
        let reshare = DkgConfig {
            dkg_id: b"bench-reshare".to_vec(),
            resharing: Some(transcript.coefficients.clone()),
            ..fresh.clone()
        };
        g.bench_function(BenchmarkId::new("reshare_deal", n), |b| {
            b.iter(|| dkg::deal(&mut rng, &reshare, 0, Some(&share)))
        });
        let reshared: BTreeMap<u32, _> = (0..n)
            .map(|d| {
                let s = dkg::receiver_share(&fresh, &transcript, &dealings, d, &keys[d as usize])
                    .expect("share");
                (d, dkg::deal(&mut rng, &reshare, d, Some(&s)).expect("deal"))
            })
            .collect();
        g.bench_function(BenchmarkId::new("reshare_verify_dealing", n), |b| {
            b.iter(|| dkg::verify_dealing(&reshare, 1, &reshared[&1]))
        });
        g.bench_function(BenchmarkId::new("reshare_transcript", n), |b| {
            b.iter(|| dkg::create_transcript(&reshare, &reshared))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_multi_sig, bench_threshold, bench_dkg
}
criterion_main!(benches);
