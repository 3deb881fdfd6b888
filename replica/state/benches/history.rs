//! What a height costs as the request history grows: a batch of 100 calls to a canister that
//! does not exist (each answered at once with a reject, so the figure is the history's and
//! the certified tree's cost, not a canister's), with 10^3 and with 10^6 requests remembered
//! (all still unexpired). Flat per-message cost means the two figures are close.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use thicket_execution::{Batch, StateMachine};
use thicket_state::{CertifiedTrees, SubnetInfo, SubnetState};
use thicket_types::Height;
use thicket_types::ingress::{IngressMessage, SignedIngress};

const T0: u64 = 1_700_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

struct Subnet {
    state: SubnetState,
    kept: CertifiedTrees,
    info: SubnetInfo,
    height: u64,
    nonce: u64,
}

impl Subnet {
    /// One height with `n` calls, expiring 290 s after the first height, and the certified
    /// tree the height needs.
    fn height(&mut self, n: usize) {
        self.height += 1;
        let now = T0 + self.height * SECOND / 1000;
        let encoded: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                self.nonce += 1;
                let msg = IngressMessage {
                    sender: vec![4],
                    canister_id: vec![0xff, 1],
                    method_name: "m".into(),
                    arg: vec![],
                    ingress_expiry: T0 + 290 * SECOND,
                    nonce: Some(self.nonce.to_be_bytes().to_vec()),
                };
                SignedIngress::anonymous(msg).to_bytes()
            })
            .collect();
        let out = self.state.execute(&Batch {
            height: Height(self.height),
            time_ns: now,
            ingress: encoded.iter().map(Vec::as_slice).collect(),
        });
        self.kept.executed(Height(self.height), &out);
        std::hint::black_box(self.kept.tree(&self.state, &self.info));
    }
}

fn history(c: &mut Criterion) {
    let mut g = c.benchmark_group("history");
    g.sample_size(20);
    for size in [1_000usize, 1_000_000] {
        let mut s = Subnet {
            state: SubnetState::genesis(),
            kept: CertifiedTrees::default(),
            info: SubnetInfo::new(vec![7; 133], &[[1; 32], [2; 32]]),
            height: 0,
            nonce: 0,
        };
        while s.state.history().len() < size {
            s.height(10_000.min(size));
        }
        g.bench_function(BenchmarkId::new("height_of_100_calls", size), |b| {
            b.iter(|| s.height(100))
        });
    }
    g.finish();
}

criterion_group!(benches, history);
criterion_main!(benches);
