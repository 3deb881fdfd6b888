//! DKG roles: a dealer deals its low-threshold (fresh) and high-threshold (reshared) dealings
//! once the interval's summary is finalized; a receiver checks its share in every dealing and
//! complains publicly about a wrong one. Transcripts are made by the summary block
//! ([`crate::payload::build_summary`]).

use std::collections::BTreeSet;

use thicket_crypto::dkg;
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::block::{DkgComplaint, DkgId, DkgTag, SignedDealing, Summary};
use thicket_types::{Height, NodeId};

use crate::keys::{KeyStore, NodeSecrets};
use crate::membership::{finalized_summary, summary_height_for_round};
use crate::payload::IntervalChain;
use crate::pool::{Mutation, Pool};

/// The interval being dealt in (its summary height and summary), if that summary is finalized.
fn open_interval(pool: &Pool) -> Option<(Height, &Summary)> {
    let s = summary_height_for_round(pool, pool.finalized_height().next());
    finalized_summary(pool, s).map(|summary| (s, summary))
}

/// This node's dealings for the open interval, if not made yet.
pub fn make_dealings<R: rand_core::RngCore + rand_core::CryptoRng>(
    pool: &Pool,
    me: &NodeSecrets,
    keys: &KeyStore,
    rng: &mut R,
) -> Vec<Mutation> {
    let Some((s, summary)) = open_interval(pool) else {
        return vec![];
    };
    let Some(index) = summary.next.registry.index_of(me.node_id) else {
        return vec![];
    };
    let mut out = Vec::new();
    for tag in [DkgTag::Low, DkgTag::High] {
        let id = DkgId {
            summary_height: s,
            tag,
        };
        if pool.dealing(&id, me.node_id).is_some() {
            continue;
        }
        let reshared = match tag {
            DkgTag::Low => None,
            DkgTag::High => match keys.share(&summary.next.high) {
                Some(share) => Some(share),
                None => continue,
            },
        };
        let Ok(dealing) = dkg::deal(rng, summary.config(tag), index, reshared) else {
            continue;
        };
        let signature = me
            .signing
            .sign(&SignedDealing::signed_content(&id, me.node_id, &dealing));
        out.push(Mutation::AddToValidated(ConsensusMessage::Dealing(
            Box::new(SignedDealing {
                dkg: id,
                dealer: me.node_id,
                dealing,
                signature,
            }),
        )));
    }
    out
}

/// Complaints about the dealings on the finalized chain whose share for this node is wrong.
/// The chain, not gossip, decides which dealing of a dealer counts: a dealer may gossip one and
/// put another in its block. `checked` remembers dealings already examined, so each costs one
/// decryption.
pub fn make_complaints<R: rand_core::RngCore + rand_core::CryptoRng>(
    pool: &Pool,
    me: &NodeSecrets,
    checked: &mut BTreeSet<(DkgId, NodeId)>,
    rng: &mut R,
) -> Vec<Mutation> {
    let Some(chain) = IntervalChain::finalized(pool) else {
        return vec![];
    };
    let summary = chain.summary;
    let Some(receiver) = summary.pending.index_of(me.node_id) else {
        return vec![];
    };
    let mut out = Vec::new();
    for ((dkg, dealer), sd) in chain.dealings() {
        if !checked.insert((dkg, dealer)) {
            continue;
        }
        let Some(index) = chain.dealer_index(dealer) else {
            continue;
        };
        let config = summary.config(dkg.tag);
        if let Some(complaint) = dkg::complain(rng, config, index, &sd.dealing, receiver, &me.dkg) {
            out.push(Mutation::AddToValidated(ConsensusMessage::Complaint(
                Box::new(DkgComplaint {
                    dkg,
                    dealer,
                    dealing: sd.hash(),
                    complaint,
                }),
            )));
        }
    }
    checked.retain(|(d, _)| d.summary_height >= chain.summary_height);
    out
}
