//! Random beacon maker and aggregator.
//!
//! RB_h = threshold signature (low threshold, f+1) on (h, hash RB_{h−1}). A share for h is made
//! only once height h−1 has a notarized block, so the beacon of a round cannot be known before
//! the previous round has ended. Uniqueness of threshold BLS signatures means no member,
//! however late it acts, can choose among several beacons.

use thicket_crypto::threshold;
use thicket_types::artifacts::{BeaconContent, Certified, ConsensusMessage, Share, SignedContent};

use crate::keys::{KeyStore, NodeSecrets};
use crate::membership::epoch_for_round;
use crate::pool::{Mutation, Pool};

/// Makes this node's beacon share for the next beacon height, if due.
pub fn make_share(pool: &Pool, me: &NodeSecrets, keys: &KeyStore) -> Vec<Mutation> {
    let h = pool.beacon_height().next();
    if pool.notarized_height() < h.prev() {
        return vec![];
    }
    let (Some(epoch), Some(parent)) = (epoch_for_round(pool, h), pool.beacon(h.prev())) else {
        return vec![];
    };
    if pool.beacon_shares(h).any(|s| s.signer == me.node_id) {
        return vec![];
    }
    let Some(share) = keys.share(&epoch.low) else {
        return vec![];
    };
    let content = BeaconContent {
        height: h,
        parent: parent.hash(),
    };
    let signature = threshold::sign_share(share, &content.signing_bytes());
    vec![Mutation::AddToValidated(
        ConsensusMessage::RandomBeaconShare(Share {
            content,
            signer: me.node_id,
            signature,
        }),
    )]
}

/// Combines validated shares into the beacon once f+1 agree on the same content.
pub fn aggregate(pool: &Pool) -> Vec<Mutation> {
    let h = pool.beacon_height().next();
    let (Some(epoch), Some(parent)) = (epoch_for_round(pool, h), pool.beacon(h.prev())) else {
        return vec![];
    };
    let content = BeaconContent {
        height: h,
        parent: parent.hash(),
    };
    let shares: Vec<_> = pool
        .beacon_shares(h)
        .filter(|s| s.content == content)
        .filter_map(|s| Some((epoch.registry.index_of(s.signer)?, s.signature)))
        .collect();
    match threshold::combine(&shares, epoch.low.threshold()) {
        Ok(signature) => vec![Mutation::AddToValidated(ConsensusMessage::RandomBeacon(
            Certified { content, signature },
        ))],
        Err(_) => vec![],
    }
}
