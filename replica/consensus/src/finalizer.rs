//! Finalizer (the IC rule): sign a finalization share for block b at h only if b is the single
//! notarized block known at h, this node has not finality-signed h, and it signed no
//! notarization share for any other block at h.
//!
//! Safety: a finalization of b needs n−f shares; at least f+1 of them are honest and so did not
//! notarize any other block at h. A competing block then gets at most n−(f+1) < n−f notarization
//! shares and can never be notarized, let alone finalized: one finalized block per height.

use thicket_types::Height;
use thicket_types::artifacts::{ConsensusMessage, FinalizationContent, Share, SignedContent};

use crate::keys::NodeSecrets;
use crate::membership::epoch_for_round;
use crate::pool::{Mutation, Pool};

pub fn finalize(pool: &Pool, me: &NodeSecrets) -> Vec<Mutation> {
    let mut out = Vec::new();
    let mut h = pool.finalized_height().next();
    while h <= pool.notarized_height() {
        if let Some(m) = finalize_height(pool, me, h) {
            out.push(m);
        }
        h = h.next();
    }
    out
}

fn finalize_height(pool: &Pool, me: &NodeSecrets, h: Height) -> Option<Mutation> {
    let epoch = epoch_for_round(pool, h)?;
    if !epoch.registry.members.contains_key(&me.node_id) {
        return None;
    }
    let notarized = pool.notarized_blocks(h);
    let [(hash, _)] = notarized.as_slice() else {
        return None;
    };
    let hash = *hash;
    if pool.finalization_shares(h).any(|s| s.signer == me.node_id) {
        return None;
    }
    if pool
        .notarization_shares(h)
        .any(|s| s.signer == me.node_id && s.content.block != hash)
    {
        return None;
    }
    let content = FinalizationContent {
        height: h,
        block: hash,
    };
    let signature = me.committee.sign(&content.signing_bytes());
    Some(Mutation::AddToValidated(
        ConsensusMessage::FinalizationShare(Share {
            content,
            signer: me.node_id,
            signature,
        }),
    ))
}
