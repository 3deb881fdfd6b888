//! The certified tree kept between heights (`CertifiedTrees`) is, at every height, the tree
//! built from the whole state: requests answered at once, pruned once they expire, the time and
//! the subnet; a height whose changes were not noted makes the next tree a full build.

use thicket_execution::{Batch, StateMachine};
use thicket_state::{CertifiedTrees, SubnetInfo, SubnetState};
use thicket_types::Height;
use thicket_types::ingress::{IngressMessage, SignedIngress};

const T0: u64 = 1_700_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

#[test]
fn the_kept_tree_is_the_built_tree_at_every_height() {
    let subnet = SubnetInfo::new(vec![7; 133], &[[1; 32], [2; 32]]);
    let mut state = SubnetState::genesis();
    let mut kept = CertifiedTrees::default();
    let (mut nonce, mut most) = (0u64, 0);
    for h in 1..=120u64 {
        let now = T0 + h * SECOND;
        // Up to four calls per height to canisters that do not exist (each rejected at once),
        // expiring 5 to 40 s later.
        let encoded: Vec<Vec<u8>> = (0..h % 5)
            .map(|k| {
                nonce += 1;
                let msg = IngressMessage {
                    sender: vec![4],
                    canister_id: vec![0xff, k as u8],
                    method_name: "m".into(),
                    arg: vec![],
                    ingress_expiry: now + (5 + nonce % 36) * SECOND,
                    nonce: Some(nonce.to_be_bytes().to_vec()),
                };
                SignedIngress::anonymous(msg).to_bytes()
            })
            .collect();
        let out = state.execute(&Batch {
            height: Height(h),
            time_ns: now,
            ingress: encoded.iter().map(Vec::as_slice).collect(),
        });
        most = most.max(state.history().len());
        if h == 70 {
            // Not noted: the tree kept must not be changed from here on.
            continue;
        }
        kept.executed(Height(h), &out);
        if h % 3 == 0 {
            let t = kept.tree(&state, &subnet);
            let built = state.certified_tree(&subnet).hashed();
            assert_eq!(t.digest(), built.digest(), "height {h}");
            assert_eq!(t, built, "height {h}");
        }
    }
    assert!(
        state.history().len() < most && most > 20,
        "requests came and were pruned ({most} at most, {} at the end)",
        state.history().len()
    );
}
