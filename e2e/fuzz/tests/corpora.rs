//! The bounded fuzzing run of every CI run: each target over its seeds, its committed corpus
//! (`e2e/fuzz/corpus/<target>/`, grown by libFuzzer runs), its regressions (inputs that once
//! crashed it, `e2e/fuzz/regressions/<target>/`), and seeded random mutations of them.
//! A failing input is written to the test's scratch directory and named in the failure.

use std::path::Path;

use thicket_fuzz::{TARGETS, seeds};

/// Mutations per target in this run (the system call target executes a batch for each).
fn mutations(target: &str) -> usize {
    match target {
        "system_call" => 400,
        "wasm_module" => 1500,
        _ => 4000,
    }
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).ok()?,
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.into_iter().map(|(_, b)| b).collect()
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `input`, `other` for splicing: bit flips, interesting bytes, inserted,
/// removed or repeated runs, cuts, and splices.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0, 1, 0x7f, 0x80, 0xff, 0x1f, 0x18][rng.below(7)];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below(len - i);
                v.drain(i..i + n.min(16));
            }
            4 if len > 0 => v.truncate(rng.below(len)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(8)).min(len - i);
                let run = v[i..i + n].to_vec();
                v.splice(i..i, run);
            }
            _ if !other.is_empty() => {
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn every_target_takes_its_corpus_and_mutations_of_it_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    for (name, run) in TARGETS {
        let mut inputs = seeds::for_target(name);
        inputs.extend(files(&root.join("corpus").join(name)));
        let regressions = files(&root.join("regressions").join(name));
        inputs.extend(regressions.iter().cloned());
        assert!(!inputs.is_empty(), "{name} has no inputs");
        let check = |input: &[u8]| {
            if std::panic::catch_unwind(|| run(input)).is_err() {
                std::fs::create_dir_all(&scratch).expect("scratch");
                let file = scratch.join(format!("{name}-{:016x}", fxhash(input)));
                std::fs::write(&file, input).expect("writes");
                panic!(
                    "{name} panicked on {} (replay: e2e/fuzz/run {name} --replay that file)",
                    file.display()
                );
            }
        };
        for input in &inputs {
            check(input);
        }
        let mut rng = Rng(0x7468_6963_6b65_7421 ^ fxhash(name.as_bytes()));
        for _ in 0..mutations(name) {
            let a = &inputs[rng.below(inputs.len())];
            let b = &inputs[rng.below(inputs.len())];
            check(&mutate(&mut rng, a, b));
        }
        eprintln!(
            "{name}: {} inputs ({} regressions), {} mutations",
            inputs.len(),
            regressions.len(),
            mutations(name)
        );
    }
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The seeds are what they claim to be: inputs each decoder accepts, so that mutations of them
/// reach past the first check.
#[test]
fn the_seeds_are_valid_inputs() {
    use candid::Principal;
    use thicket_fuzz::NOW_NS;
    use thicket_replica::http::gateway;
    let seed = |name: &str| seeds::for_target(name).remove(0);
    let url = [0u8, 0, 0, 0, 0, 0, 0, 1, 1, 1];
    thicket_replica::http::envelope::check_call(&seed("call_envelope"), &url, NOW_NS)
        .expect("the call seed is accepted");
    let (msg, _) = thicket_replica::http::envelope::check_query(&seed("query_envelope"), NOW_NS)
        .expect("the query seed is accepted");
    assert_eq!(msg.method_name, "go");
    let a = seed("artifact");
    let (id, body) = a.split_at(32);
    thicket_replica::wire::decode(&thicket_proto::p2p::Artifact {
        id: id.to_vec(),
        body: body.to_vec(),
    })
    .expect("the artifact seed decodes");
    assert!(thicket_replica::wire::decode_manifest(&seed("manifest")).is_some());
    thicket_canister::module_info::prepare(&seed("wasm_module")).expect("the module prepares");
    for (i, seed) in seeds::for_target("read_state_envelope").iter().enumerate() {
        let on = (seed[0] == 0).then_some(thicket_fuzz::canister());
        let r = thicket_replica::http::read_state::check_read_state(
            &seed[1..],
            on.as_ref().map(Principal::as_slice),
            NOW_NS,
        )
        .unwrap_or_else(|e| panic!("read_state seed {i} is refused: {e}"));
        assert!(!r.paths.is_empty());
    }
    let replies = seeds::for_target("gateway_reply");
    let verify = |answer| {
        gateway::verify_answer(
            thicket_fuzz::gateway_request(),
            &thicket_fuzz::canister(),
            answer,
            &thicket_fuzz::subnet_key().0,
            NOW_NS,
        )
    };
    for (i, version) in [(0, 2), (1, 1)] {
        let answer = gateway::read_answer(&replies[i]).expect("the answer reads");
        let passed = verify(answer)
            .unwrap_or_else(|e| panic!("the version {version} answer fails verification: {e:?}"));
        assert_eq!(passed.status_code, 200);
    }
    let streamed = gateway::read_answer(&replies[2]).expect("the streamed answer reads");
    let (callee, method, _) = streamed.callback.expect("a callback");
    assert_eq!(
        (callee, method.as_str()),
        (thicket_fuzz::canister(), "http_request_streaming_callback")
    );
    let (part, next) = gateway::read_part(&replies[3]).expect("the part reads");
    assert_eq!((part.as_slice(), next.is_some()), (&b" and more"[..], true));
    assert!(gateway::read_answer(&replies[4]).expect("reads").upgrade);
    // A byte changed in the certified body fails verification.
    let mut forged = gateway::read_answer(&replies[0]).expect("reads");
    forged.body[0] ^= 1;
    assert!(verify(forged).is_err(), "a forged body passes");
    let state = thicket_fuzz::base_state();
    let installed = state
        .canisters()
        .values()
        .filter(|c| c.module.is_some())
        .count();
    assert_eq!(
        installed, 1,
        "the system-call target's state holds an installed canister"
    );
}
