//! Share aggregation for notarizations and finalizations: n−f validated shares on the same
//! content become one BLS multi-signature of all of them. The validator checked the shares,
//! one by one or as sums of those validated together (every such sum is part of this one), so
//! the aggregate needs no further check here.

use std::collections::BTreeMap;

use thicket_crypto::multi_sig;
use thicket_types::Height;
use thicket_types::artifacts::{ConsensusMessage, Multi};

use crate::membership::{epoch_for_round, notary_threshold};
use crate::pool::{Mutation, Pool};

pub fn aggregate(pool: &Pool) -> Vec<Mutation> {
    let mut out = Vec::new();
    let mut h = pool.finalized_height().next();
    let top = pool.notarized_height().next();
    while h <= top {
        out.extend(aggregate_height(pool, h));
        h = h.next();
    }
    out
}

fn aggregate_height(pool: &Pool, h: Height) -> Vec<Mutation> {
    let Some(epoch) = epoch_for_round(pool, h) else {
        return vec![];
    };
    let t = notary_threshold(epoch);
    let mut out = Vec::new();

    let mut notar: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for s in pool.notarization_shares(h) {
        notar
            .entry(s.content)
            .or_default()
            .push((s.signer, s.signature));
    }
    for (content, shares) in notar {
        if shares.len() >= t && pool.notarization(h, &content.block).is_none() {
            let (signers, sigs): (Vec<_>, Vec<_>) = shares.into_iter().unzip();
            out.push(Mutation::AddToValidated(ConsensusMessage::Notarization(
                Multi {
                    content,
                    signers,
                    signature: multi_sig::aggregate(&sigs),
                },
            )));
        }
    }

    let mut fin: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for s in pool.finalization_shares(h) {
        fin.entry(s.content)
            .or_default()
            .push((s.signer, s.signature));
    }
    for (content, shares) in fin {
        if shares.len() >= t && pool.finalization(h).is_none() {
            let (signers, sigs): (Vec<_>, Vec<_>) = shares.into_iter().unzip();
            out.push(Mutation::AddToValidated(ConsensusMessage::Finalization(
                Multi {
                    content,
                    signers,
                    signature: multi_sig::aggregate(&sigs),
                },
            )));
        }
    }
    out
}
