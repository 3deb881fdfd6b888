//! Byzantine behaviours. A faulty replica runs the real roles, then this module rewrites what
//! it adds to its own pool and what it sends, using its real keys, so that its artifacts are as
//! convincing as a malicious replica could make them.

use thicket_consensus::pool::Mutation;
use thicket_crypto::bls::{DST_BASIC, hash_to_g1};
use thicket_crypto::multi_sig;
use thicket_crypto::threshold::{CombinedSig, SigShare};
use thicket_types::artifacts::{
    ConsensusMessage, FinalizationContent, NotarizationContent, Share, SignedContent,
};
use thicket_types::block::{BlockProposal, DkgTag, SignedDealing};

use crate::config::Behaviour;
use crate::node::{SimNode, Target};

/// Rewrites the mutations of one step; may add extra messages to send.
pub fn rewrite(
    node: &mut SimNode,
    mutations: Vec<Mutation>,
) -> (Vec<Mutation>, Vec<(Target, ConsensusMessage)>) {
    match node.behaviour {
        Behaviour::BadDealing => {
            // Its pool, and so its blocks, keep the valid low-threshold dealing and a high-
            // threshold dealing with a hidden bad share that is never gossiped: only its blocks
            // carry it, so receivers must find it on the chain. Gossip gets a malformed copy of
            // the low-threshold dealing.
            let mut extra = Vec::new();
            let mut out = Vec::with_capacity(mutations.len());
            for m in mutations {
                match m {
                    Mutation::AddToValidated(ConsensusMessage::Dealing(d))
                        if d.dkg.tag == DkgTag::Low =>
                    {
                        extra.push((
                            Target::All,
                            ConsensusMessage::Dealing(Box::new(malformed(node, (*d).clone()))),
                        ));
                        out.push(Mutation::AddToValidated(ConsensusMessage::Dealing(d)));
                    }
                    m => out.push(bad_dealing(node, m)),
                }
            }
            (out, extra)
        }
        Behaviour::MultiNotarize => {
            let mut mutations = mutations;
            mutations.extend(sign_everything(node));
            (mutations, vec![])
        }
        _ => (mutations, vec![]),
    }
}

/// How one artifact of this replica leaves it.
pub fn send(node: &mut SimNode, msg: ConsensusMessage) -> Vec<(Target, ConsensusMessage)> {
    match node.behaviour {
        Behaviour::Equivocate => equivocate(node, msg),
        Behaviour::InvalidSig => vec![(Target::All, corrupt(node, msg))],
        Behaviour::BadDealing => match &msg {
            ConsensusMessage::Dealing(_) => vec![],
            _ => vec![(Target::All, msg)],
        },
        _ => vec![(Target::All, msg)],
    }
}

/// A block maker's second, conflicting block at the same height and rank: one half of the
/// peers gets each.
fn equivocate(node: &SimNode, msg: ConsensusMessage) -> Vec<(Target, ConsensusMessage)> {
    let ConsensusMessage::BlockProposal(p) = &msg else {
        return vec![(Target::All, msg)];
    };
    let mut twin = p.block.clone();
    twin.time_ms += 1;
    let signature = node
        .consensus
        .secrets()
        .signing
        .sign(&BlockProposal::signed_content(&twin.hash()));
    let twin = ConsensusMessage::BlockProposal(Box::new(BlockProposal {
        block: twin,
        signature,
    }));
    vec![(Target::Half(0), msg), (Target::Half(1), twin)]
}

/// What a re-sent artifact looks like coming from this replica.
pub fn disguise(node: &SimNode, msg: ConsensusMessage) -> ConsensusMessage {
    match node.behaviour {
        Behaviour::InvalidSig => corrupt(node, msg),
        _ => msg,
    }
}

fn corrupt(node: &SimNode, msg: ConsensusMessage) -> ConsensusMessage {
    let secrets = node.consensus.secrets();
    let forged_share = SigShare(hash_to_g1(b"forged", DST_BASIC));
    match msg {
        ConsensusMessage::BlockProposal(mut p) => {
            p.signature.0[0] ^= 1;
            ConsensusMessage::BlockProposal(p)
        }
        ConsensusMessage::RandomBeaconShare(mut s) => {
            s.signature = forged_share;
            ConsensusMessage::RandomBeaconShare(s)
        }
        ConsensusMessage::CatchUpShare(mut s) => {
            s.signature = forged_share;
            ConsensusMessage::CatchUpShare(s)
        }
        ConsensusMessage::NotarizationShare(mut s) => {
            s.signature = secrets.committee.sign(b"not this block");
            ConsensusMessage::NotarizationShare(s)
        }
        ConsensusMessage::FinalizationShare(mut s) => {
            s.signature = secrets.committee.sign(b"not this block");
            ConsensusMessage::FinalizationShare(s)
        }
        ConsensusMessage::Dealing(mut d) => {
            d.signature.0[1] ^= 1;
            ConsensusMessage::Dealing(d)
        }
        // Aggregates it combined from valid shares must not help either.
        ConsensusMessage::Notarization(mut n) => {
            n.signature = multi_sig::aggregate(&[secrets.committee.sign(b"not this block")]);
            ConsensusMessage::Notarization(n)
        }
        ConsensusMessage::Finalization(mut f) => {
            f.signature = multi_sig::aggregate(&[secrets.committee.sign(b"not this block")]);
            ConsensusMessage::Finalization(f)
        }
        ConsensusMessage::RandomBeacon(mut b) => {
            b.signature = CombinedSig(forged_share.0);
            ConsensusMessage::RandomBeacon(b)
        }
        ConsensusMessage::CatchUpPackage(mut c) => {
            c.signature = CombinedSig(forged_share.0);
            ConsensusMessage::CatchUpPackage(c)
        }
        other => other,
    }
}

/// A high-threshold dealing with a wrong share for one receiver, validly signed: it passes
/// every public check, and only that receiver's complaint can expose it.
fn bad_dealing(node: &SimNode, m: Mutation) -> Mutation {
    let Mutation::AddToValidated(ConsensusMessage::Dealing(mut sd)) = m else {
        return m;
    };
    let victim = usize::from(node.pool.root_summary().pending.index_of(node.id) == Some(0));
    if let Some(ct) = sd.dealing.ciphertexts.get_mut(victim) {
        *ct += thicket_crypto::Scalar::from(1u64);
    }
    resign(node, &mut sd);
    Mutation::AddToValidated(ConsensusMessage::Dealing(sd))
}

/// A dealing whose commitment has the wrong degree: anyone can see it is invalid.
fn malformed(node: &SimNode, mut sd: SignedDealing) -> SignedDealing {
    sd.dealing.commitment.0.pop();
    resign(node, &mut sd);
    sd
}

fn resign(node: &SimNode, sd: &mut SignedDealing) {
    sd.signature = node
        .consensus
        .secrets()
        .signing
        .sign(&SignedDealing::signed_content(
            &sd.dkg,
            sd.dealer,
            &sd.dealing,
        ));
}

/// Notarization shares for every block and finalization shares for every notarized block of
/// the open heights, whatever the rules say.
fn sign_everything(node: &SimNode) -> Vec<Mutation> {
    let secrets = node.consensus.secrets();
    let pool = &node.pool;
    let me = node.id;
    let mut out = Vec::new();
    let mut h = pool.finalized_height().next();
    while h <= pool.notarized_height().next() {
        for (block, _) in pool.proposals_at(h) {
            let block = *block;
            if !pool
                .notarization_shares(h)
                .any(|s| s.signer == me && s.content.block == block)
            {
                let content = NotarizationContent { height: h, block };
                let signature = secrets.committee.sign(&content.signing_bytes());
                out.push(Mutation::AddToValidated(
                    ConsensusMessage::NotarizationShare(Share {
                        content,
                        signer: me,
                        signature,
                    }),
                ));
            }
        }
        for (block, _) in pool.notarized_blocks(h) {
            if !pool
                .finalization_shares(h)
                .any(|s| s.signer == me && s.content.block == block)
            {
                let content = FinalizationContent { height: h, block };
                let signature = secrets.committee.sign(&content.signing_bytes());
                out.push(Mutation::AddToValidated(
                    ConsensusMessage::FinalizationShare(Share {
                        content,
                        signer: me,
                        signature,
                    }),
                ));
            }
        }
        h = h.next();
    }
    out
}
