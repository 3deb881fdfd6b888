//! The ingress history in checkpoints: carried apart from the rest of the state, ordered by
//! expiry and cut into chunks by content, so a checkpoint shares with the one before every
//! chunk of the history that did not change.

use std::collections::BTreeSet;

use thicket_execution::{Batch, StateMachine};
use thicket_state::SubnetState;
use thicket_types::Height;
use thicket_types::ingress::{IngressMessage, SignedIngress};

const T0: u64 = 1_700_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

/// Executes a height of `calls` calls to a canister that does not exist (each rejected at
/// once, and remembered in the history until it expires, 5 minutes on).
fn height(state: &mut SubnetState, h: u64, calls: u64) {
    let now = T0 + h * SECOND;
    let encoded: Vec<Vec<u8>> = (0..calls)
        .map(|k| {
            let msg = IngressMessage {
                sender: vec![4],
                canister_id: vec![0xff],
                method_name: "m".into(),
                arg: vec![],
                ingress_expiry: now + 300 * SECOND,
                nonce: Some((h << 32 | k).to_be_bytes().to_vec()),
            };
            SignedIngress::anonymous(msg).to_bytes()
        })
        .collect();
    state.execute(&Batch {
        height: Height(h),
        time_ns: now,
        ingress: encoded.iter().map(Vec::as_slice).collect(),
    });
}

fn hashes(state: &SubnetState) -> Vec<thicket_types::CryptoHash> {
    state.checkpoint().iter().map(|c| c.info.hash).collect()
}

#[test]
fn a_checkpoint_shares_the_history_chunks_that_did_not_change() {
    let mut state = SubnetState::genesis();
    for h in 1..=40 {
        height(&mut state, h, 500);
    }
    assert_eq!(state.history().len(), 20_000);
    let first = hashes(&state);
    // Two more heights, the second after the first four heights' requests expired.
    height(&mut state, 41, 500);
    height(&mut state, 305, 500);
    assert_eq!(state.history().len(), 19_000);
    let second = hashes(&state);
    let before: BTreeSet<_> = first.iter().collect();
    let new = second.iter().filter(|h| !before.contains(h)).count();
    assert!(
        first.len() > 40 && new <= 10,
        "{new} of {} chunks new ({} before)",
        second.len(),
        first.len()
    );
    // The encoding decodes to the same state and history.
    let bytes = state.encode();
    let again = SubnetState::decode(&bytes).expect("decodes");
    assert_eq!(again.history(), state.history());
    assert_eq!(again.encode(), bytes);
    // A cut encoding is refused.
    for bad in [&bytes[..bytes.len() - 1], &bytes[..40]] {
        assert!(SubnetState::decode(bad).is_err());
    }
}
