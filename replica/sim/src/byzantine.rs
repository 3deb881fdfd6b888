//! Byzantine behaviours, as a [`Conduct`] of the replica core. A faulty replica runs the real
//! roles, then rewrites what it adds to its own pool and what it sends, using its real keys, so
//! that its artifacts are as convincing as a malicious replica could make them. An honest
//! replica's conduct changes nothing (it behaves as [`thicket_core::conduct::Honest`]).

use std::collections::BTreeSet;

use thicket_consensus::pool::Mutation;
use thicket_core::To;
use thicket_core::conduct::{Conduct, Context};
use thicket_crypto::bls::{DST_BASIC, hash_to_g1};
use thicket_crypto::multi_sig;
use thicket_crypto::threshold::{CombinedSig, SigShare};
use thicket_types::artifacts::{
    BeaconContent, CatchUpPackage, ConsensusMessage, FinalizationContent, NotarizationContent,
    Share, SignedContent,
};
use thicket_types::block::{BlockProposal, DkgTag, SignedDealing};
use thicket_types::{Height, NodeId, hash_of};

use crate::config::Behaviour;

/// A replica's conduct in the simulation.
#[derive(Clone, Copy, Debug)]
pub struct Byzantine(pub Behaviour);

impl Conduct for Byzantine {
    fn rewrite(
        &mut self,
        cx: &Context<'_>,
        mutations: Vec<Mutation>,
    ) -> (Vec<Mutation>, Vec<(To, ConsensusMessage)>) {
        match self.0 {
            Behaviour::BadDealing => {
                // Its pool, and so its blocks, keep the valid low-threshold dealing and a high-
                // threshold dealing with a hidden bad share that is never gossiped: only its
                // blocks carry it, so receivers must find it on the chain. Gossip gets a
                // malformed copy of the low-threshold dealing.
                let mut extra = Vec::new();
                let mut out = Vec::with_capacity(mutations.len());
                for m in mutations {
                    match m {
                        Mutation::AddToValidated(ConsensusMessage::Dealing(d))
                            if d.dkg.tag == DkgTag::Low =>
                        {
                            extra.push((
                                To::All,
                                ConsensusMessage::Dealing(Box::new(malformed(cx, (*d).clone()))),
                            ));
                            out.push(Mutation::AddToValidated(ConsensusMessage::Dealing(d)));
                        }
                        m => out.push(bad_dealing(cx, m)),
                    }
                }
                (out, extra)
            }
            Behaviour::MultiNotarize => {
                let mut mutations = mutations;
                mutations.extend(sign_everything(cx));
                (mutations, vec![])
            }
            Behaviour::Withhold => {
                // Its dealings never reach its pool, so neither its peers nor its blocks get
                // them (its roles make them again each round, and lose them again).
                let me = cx.secrets.node_id;
                let kept = mutations
                    .into_iter()
                    .filter(|m| {
                        !matches!(m, Mutation::AddToValidated(ConsensusMessage::Dealing(d))
                            if d.dealer == me)
                    })
                    .collect();
                (kept, vec![])
            }
            _ => (mutations, vec![]),
        }
    }

    fn send(&mut self, cx: &Context<'_>, msg: ConsensusMessage) -> Vec<(To, ConsensusMessage)> {
        match self.0 {
            Behaviour::Equivocate => equivocate(cx, msg),
            Behaviour::InvalidSig => vec![(To::All, corrupt(cx, msg))],
            Behaviour::BadDealing => match &msg {
                ConsensusMessage::Dealing(_) => vec![],
                _ => vec![(To::All, msg)],
            },
            Behaviour::Flood => {
                let junk = flood(cx, &msg);
                std::iter::once(msg)
                    .chain(junk)
                    .map(|m| (To::All, m))
                    .collect()
            }
            _ => vec![(To::All, msg)],
        }
    }

    fn relays(&self) -> bool {
        self.0 != Behaviour::InvalidSig
    }

    fn disguise(&self, cx: &Context<'_>, msg: ConsensusMessage) -> ConsensusMessage {
        match self.0 {
            Behaviour::InvalidSig => corrupt(cx, msg),
            _ => msg,
        }
    }
}

/// Artifacts a flooding replica sends with each one it makes.
pub const FLOOD_PER_ARTIFACT: u64 = 64;

/// What a flooding replica sends with `msg`, all signed with its real keys (signatures of the
/// wrong bytes where it cannot sign the right ones): shares for made-up blocks at the open
/// heights (they wait for a block that never comes, until finalization passes them), shares
/// with forged signatures for the real proposals (each costs a receiver a check), beacon
/// shares far ahead (dropped unread), and a catch-up package far ahead with a forged
/// signature (which may be far ahead, so it is checked).
fn flood(cx: &Context<'_>, msg: &ConsensusMessage) -> Vec<ConsensusMessage> {
    let pool = cx.pool;
    let me = cx.secrets.node_id;
    let seed = msg.id();
    let wrong = cx.secrets.committee.sign(&seed.0);
    let forged_share = SigShare(hash_to_g1(&seed.0, DST_BASIC));
    let open = pool.finalized_height().next();
    let real: Vec<_> = pool.proposals_at(open).map(|(block, _)| *block).collect();
    let mut out = Vec::with_capacity(FLOOD_PER_ARTIFACT as usize);
    for i in 0..FLOOD_PER_ARTIFACT {
        let made_up = hash_of("thicket-sim-flood", &(seed, i));
        let height = Height(open.0 + i % 3);
        out.push(match i % 8 {
            0..=2 => ConsensusMessage::NotarizationShare(Share {
                content: NotarizationContent {
                    height,
                    block: made_up,
                },
                signer: me,
                signature: wrong,
            }),
            3..=4 => ConsensusMessage::FinalizationShare(Share {
                content: FinalizationContent {
                    height,
                    block: made_up,
                },
                signer: me,
                signature: wrong,
            }),
            5 if !real.is_empty() => {
                let block = real[(i as usize / 8) % real.len()];
                // A signature of other bytes for each: every one is a new artifact.
                let signature = cx.secrets.committee.sign(&made_up.0);
                ConsensusMessage::NotarizationShare(Share {
                    content: NotarizationContent {
                        height: open,
                        block,
                    },
                    signer: me,
                    signature,
                })
            }
            7 if i == 7 => {
                let mut content = pool.root().clone();
                content.block.height = Height(open.0 + 100_000 + i);
                ConsensusMessage::CatchUpPackage(Box::new(CatchUpPackage {
                    content,
                    signature: CombinedSig(forged_share.0),
                }))
            }
            _ => ConsensusMessage::RandomBeaconShare(Share {
                content: BeaconContent {
                    height: Height(open.0 + 100_000 + i),
                    parent: made_up,
                },
                signer: me,
                signature: forged_share,
            }),
        });
    }
    out
}

/// The members (in force and announced) whose id has the given parity.
fn half(cx: &Context<'_>, parity: u64) -> To {
    let s = cx.pool.root_summary();
    let ids: BTreeSet<NodeId> = s
        .current
        .registry
        .members
        .keys()
        .chain(s.pending.members.keys())
        .filter(|id| id.0 % 2 == parity)
        .copied()
        .collect();
    To::Nodes(ids)
}

/// A block maker's second, conflicting block at the same height and rank: one half of the
/// peers gets each.
fn equivocate(cx: &Context<'_>, msg: ConsensusMessage) -> Vec<(To, ConsensusMessage)> {
    let ConsensusMessage::BlockProposal(p) = &msg else {
        return vec![(To::All, msg)];
    };
    let mut twin = p.block.clone();
    twin.time_ms += 1;
    let signature = cx
        .secrets
        .signing
        .sign(&BlockProposal::signed_content(&twin.hash()));
    let twin = ConsensusMessage::BlockProposal(Box::new(BlockProposal {
        block: twin,
        signature,
    }));
    vec![(half(cx, 0), msg), (half(cx, 1), twin)]
}

fn corrupt(cx: &Context<'_>, msg: ConsensusMessage) -> ConsensusMessage {
    let secrets = cx.secrets;
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
fn bad_dealing(cx: &Context<'_>, m: Mutation) -> Mutation {
    let Mutation::AddToValidated(ConsensusMessage::Dealing(mut sd)) = m else {
        return m;
    };
    let me = cx.secrets.node_id;
    let victim = usize::from(cx.pool.root_summary().pending.index_of(me) == Some(0));
    if let Some(ct) = sd.dealing.ciphertexts.get_mut(victim) {
        *ct += thicket_crypto::Scalar::from(1u64);
    }
    resign(cx, &mut sd);
    Mutation::AddToValidated(ConsensusMessage::Dealing(sd))
}

/// A dealing whose commitment has the wrong degree: anyone can see it is invalid.
fn malformed(cx: &Context<'_>, mut sd: SignedDealing) -> SignedDealing {
    sd.dealing.commitment.0.pop();
    resign(cx, &mut sd);
    sd
}

fn resign(cx: &Context<'_>, sd: &mut SignedDealing) {
    sd.signature = cx.secrets.signing.sign(&SignedDealing::signed_content(
        &sd.dkg,
        sd.dealer,
        &sd.dealing,
    ));
}

/// Notarization shares for every block and finalization shares for every notarized block of
/// the open heights, whatever the rules say.
fn sign_everything(cx: &Context<'_>) -> Vec<Mutation> {
    let secrets = cx.secrets;
    let pool = cx.pool;
    let me = secrets.node_id;
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
