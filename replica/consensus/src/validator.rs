//! Validator: moves unvalidated artifacts to the validated pool, or drops them.
//!
//! Each check first asks whether the artifact's dependencies are here (parent block, previous
//! beacon, the epoch's summary): if not, the verdict is *transient* and the artifact waits.
//! Only then does it run the cryptographic and semantic checks, whose failure is *permanent*:
//! the artifact is dropped and counted as invalid. Artifacts that are valid but no longer
//! needed are dropped quietly.
//!
//! Notarization and finalization shares are combined first: the shares of one content wait
//! until, with those already validated, they reach the notary threshold, and are then checked
//! together, their sum against the sum of their signers' keys (one pairing check for the
//! height instead of one per share). Only when that fails is each checked on its own, the
//! invalid ones dropped and counted. Shares validated together are aggregated together (the
//! aggregator takes every validated share of a content), so the sum that was checked is
//! what the aggregate holds.

use std::collections::{BTreeMap, BTreeSet};

use thicket_crypto::{multi_sig, threshold};
use thicket_types::artifacts::{ConsensusMessage, Multi, Share, SignedContent};
use thicket_types::block::{BlockProposal, DkgComplaint, Epoch, EpochKey, SignedDealing};
use thicket_types::ingress::SignedIngress;
use thicket_types::registry::SignedRegistryChange;
use thicket_types::{CryptoHash, Height, NodeId};

use crate::membership::{
    epoch_for_round, finalized_summary, is_summary_height, notary_threshold, rank_of,
};
use crate::payload::{self, IntervalChain};
use crate::pool::{Mutation, Pool};

enum Verdict {
    Valid,
    Invalid(String),
    Useless,
    Transient,
    /// A block share whose checks passed but its signature's: checked with the others.
    Combine(Box<Pending>),
}

use Verdict::*;

/// A notarization or finalization share waiting for its signature to be checked.
struct Pending {
    signing_bytes: Vec<u8>,
    signer: NodeId,
    signature: multi_sig::IndividualSignature,
    key: multi_sig::PublicKey,
    /// Shares of the same content already validated, and how many make an aggregate.
    validated: usize,
    threshold: usize,
}

/// How far ahead of this replica's clock a block's time may be. Hosts with NTP agree within
/// tens of milliseconds; 2 s leaves room for a bad clock while bounding how far a Byzantine
/// maker can push the subnet's time (a block further ahead waits until it is no longer).
pub const MAX_BLOCK_TIME_AHEAD_MS: u64 = 2_000;

pub fn validate(pool: &Pool, now: u64) -> Vec<Mutation> {
    let mut out = Vec::new();
    let mut groups: BTreeMap<Vec<u8>, Vec<(CryptoHash, Box<Pending>)>> = BTreeMap::new();
    for (id, msg) in pool.unvalidated() {
        match check(pool, msg, now) {
            Valid => out.push(Mutation::MoveToValidated(*id)),
            Invalid(reason) => out.push(Mutation::HandleInvalid(*id, reason)),
            Useless => out.push(Mutation::RemoveFromUnvalidated(*id)),
            Transient => {}
            Combine(p) => groups
                .entry(p.signing_bytes.clone())
                .or_default()
                .push((*id, p)),
        }
    }
    for group in groups.into_values() {
        out.extend(combine_first(group));
    }
    out
}

/// The shares of one content (one signing message): nothing while they cannot make an
/// aggregate with the validated ones; else all validated if their sum verifies, else each
/// checked on its own.
fn combine_first(mut group: Vec<(CryptoHash, Box<Pending>)>) -> Vec<Mutation> {
    // A second share by the same signer waits: once the first is validated it is a duplicate.
    let mut signers = BTreeSet::new();
    group.retain(|(_, p)| signers.insert(p.signer));
    let Some((_, first)) = group.first() else {
        return vec![];
    };
    if first.validated + group.len() < first.threshold {
        return vec![];
    }
    let (sigs, keys): (Vec<_>, Vec<_>) = group.iter().map(|(_, p)| (p.signature, p.key)).unzip();
    let sum = multi_sig::aggregate(&sigs);
    if multi_sig::verify_combined(&sum, &first.signing_bytes, &keys).is_ok() {
        return group
            .iter()
            .map(|(id, _)| Mutation::MoveToValidated(*id))
            .collect();
    }
    group
        .iter()
        .map(
            |(id, p)| match multi_sig::verify_individual(&p.signature, &p.signing_bytes, &p.key) {
                Ok(()) => Mutation::MoveToValidated(*id),
                Err(e) => Mutation::HandleInvalid(*id, e.to_string()),
            },
        )
        .collect()
}

fn check(pool: &Pool, msg: &ConsensusMessage, now: u64) -> Verdict {
    if pool.contains(msg) {
        return Useless;
    }
    if too_far_ahead(pool, msg) {
        return Useless;
    }
    match msg {
        ConsensusMessage::BlockProposal(p) => check_proposal(pool, p, now),
        ConsensusMessage::RandomBeacon(b) => {
            let h = b.content.height;
            let Some(parent) = pool.beacon(h.prev()) else {
                return if h <= pool.root_height() {
                    Useless
                } else {
                    Transient
                };
            };
            if b.content.parent != parent.hash() {
                return Invalid("beacon does not extend the previous beacon".into());
            }
            let Some(epoch) = epoch_for_round(pool, h) else {
                return Transient;
            };
            verdict(threshold::verify_combined(
                &b.signature,
                &b.content.signing_bytes(),
                &epoch.low.coefficients().public_key(),
            ))
        }
        ConsensusMessage::RandomBeaconShare(s) => {
            let h = s.content.height;
            if pool.beacon(h).is_some() {
                return Useless;
            }
            let Some(parent) = pool.beacon(h.prev()) else {
                return Transient;
            };
            if s.content.parent != parent.hash() {
                return Invalid("beacon share does not extend the previous beacon".into());
            }
            let Some(epoch) = epoch_for_round(pool, h) else {
                return Transient;
            };
            check_threshold_share(epoch, &epoch.low, s)
        }
        ConsensusMessage::NotarizationShare(s)
            if pool
                .notarization(s.content.height, &s.content.block)
                .is_some() =>
        {
            Useless
        }
        ConsensusMessage::FinalizationShare(s) if pool.finalization(s.content.height).is_some() => {
            Useless
        }
        ConsensusMessage::NotarizationShare(s) => {
            let validated = pool
                .notarization_shares(s.content.height)
                .filter(|v| v.content == s.content)
                .count();
            check_block_share(pool, s, &s.content.block, validated)
        }
        ConsensusMessage::FinalizationShare(s) => {
            let validated = pool
                .finalization_shares(s.content.height)
                .filter(|v| v.content == s.content)
                .count();
            check_block_share(pool, s, &s.content.block, validated)
        }
        ConsensusMessage::Notarization(n) => check_multi(pool, n),
        ConsensusMessage::Finalization(f) => check_multi(pool, f),
        ConsensusMessage::CatchUpShare(s) => {
            let h = s.content.height;
            if h <= pool.root_height() {
                return Useless;
            }
            let Some(epoch) = epoch_for_round(pool, h) else {
                return Transient;
            };
            check_threshold_share(epoch, &epoch.high, s)
        }
        ConsensusMessage::CatchUpPackage(c) => {
            let h = c.content.block.height;
            if c.content.block.summary().is_none() || !is_summary_height(pool, h) {
                return Invalid("catch-up package without a summary block".into());
            }
            if c.content.beacon.content.height != h {
                return Invalid("catch-up package beacon at another height".into());
            }
            let subnet_key = pool.root_summary().current.high.coefficients().public_key();
            verdict(threshold::verify_combined(
                &c.signature,
                &c.content.share_content().signing_bytes(),
                &subnet_key,
            ))
        }
        ConsensusMessage::Dealing(d) => check_dealing(pool, d),
        ConsensusMessage::Complaint(c) => check_complaint(pool, c),
        ConsensusMessage::RegistryChange(c) => {
            let registry = &pool.root_summary().current.registry;
            let msg = SignedRegistryChange::signed_content(
                &registry.subnet_id,
                c.base_version,
                &c.change,
            );
            verdict(registry.admin_key.verify(&msg, &c.signature))
        }
        // Every replica checks the sender's proof, not only the one that took the call.
        ConsensusMessage::Ingress(bytes) => match SignedIngress::verified(bytes) {
            Ok(_) => Valid,
            Err(e) => Invalid(format!("ingress: {e}")),
        },
        // Certification is the certifier's business (the driver hands these to it).
        ConsensusMessage::CertificationShare(_) | ConsensusMessage::Certification(_) => Useless,
    }
}

/// Rounds more than this many intervals ahead of the finalized height are not kept waiting
/// (bounds what a Byzantine peer can make a replica store); peers retransmit them later.
const MAX_INTERVALS_AHEAD: u64 = 4;

fn too_far_ahead(pool: &Pool, msg: &ConsensusMessage) -> bool {
    // A CUP may be far ahead (that is what it is for); ingress and registry changes have no
    // height.
    let bounded = !matches!(
        msg,
        ConsensusMessage::CatchUpPackage(_)
            | ConsensusMessage::Ingress(_)
            | ConsensusMessage::RegistryChange(_)
    );
    bounded
        && msg.height().0
            > pool.finalized_height().0
                + MAX_INTERVALS_AHEAD * crate::membership::interval_length(pool)
}

/// A threshold signature share of `key` (of `epoch`) by a member.
fn check_threshold_share<C: SignedContent>(
    epoch: &Epoch,
    key: &EpochKey,
    s: &Share<C, threshold::SigShare>,
) -> Verdict {
    let Some(share_key) = epoch
        .registry
        .index_of(s.signer)
        .and_then(|i| key.share_key(i))
    else {
        return Invalid(format!("{} is not a member", s.signer));
    };
    verdict(threshold::verify_share_with_key(
        &s.signature,
        &s.content.signing_bytes(),
        &share_key,
    ))
}

fn verdict<E: std::fmt::Display>(r: Result<(), E>) -> Verdict {
    match r {
        Ok(()) => Valid,
        Err(e) => Invalid(e.to_string()),
    }
}

fn check_proposal(pool: &Pool, p: &BlockProposal, now: u64) -> Verdict {
    let b = &p.block;
    let h = b.height;
    if h <= pool.finalized_height() {
        return Useless;
    }
    let (Some(epoch), Some(beacon)) = (epoch_for_round(pool, h), pool.beacon(h.prev())) else {
        return Transient;
    };
    let Some(parent) = pool.block(h.prev(), &b.parent) else {
        return Transient;
    };
    if !pool.is_notarized(h.prev(), &b.parent)
        || IntervalChain::of(pool, b.parent, parent).is_none()
    {
        return Transient;
    }
    if b.time_ms > now.saturating_add(MAX_BLOCK_TIME_AHEAD_MS) {
        return Transient;
    }
    let Some(record) = epoch.registry.members.get(&b.maker) else {
        return Invalid(format!("{} is not a member", b.maker));
    };
    if rank_of(epoch, &beacon.hash(), b.maker) != Some(b.rank) {
        return Invalid(format!("{} does not have rank {}", b.maker, b.rank.0));
    }
    if let Err(e) = record
        .signing_key
        .verify(&BlockProposal::signed_content(&b.hash()), &p.signature)
    {
        return Invalid(format!("block signature: {e}"));
    }
    if b.time_ms < parent.time_ms {
        return Invalid("block time before its parent's".into());
    }
    match payload::validate(pool, parent, b) {
        Ok(()) => Valid,
        Err(e) => Invalid(e),
    }
}

/// A committee member's share on a block (notarization or finalization).
fn check_block_share<C: SignedContent>(
    pool: &Pool,
    s: &Share<C, multi_sig::IndividualSignature>,
    block: &CryptoHash,
    validated: usize,
) -> Verdict {
    let h = s.content.height();
    if h <= pool.finalized_height() {
        return Useless;
    }
    let Some(epoch) = epoch_for_round(pool, h) else {
        return Transient;
    };
    if pool.block(h, block).is_none() {
        return Transient;
    }
    let Some(record) = epoch.registry.members.get(&s.signer) else {
        return Invalid(format!("{} is not a member", s.signer));
    };
    Combine(Box::new(Pending {
        signing_bytes: s.content.signing_bytes(),
        signer: s.signer,
        signature: s.signature,
        key: record.committee_key,
        validated,
        threshold: notary_threshold(epoch),
    }))
}

fn check_multi<C: SignedContent>(pool: &Pool, m: &Multi<C>) -> Verdict {
    let h = m.content.height();
    if h <= pool.finalized_height() {
        return Useless;
    }
    let Some(epoch) = epoch_for_round(pool, h) else {
        return Transient;
    };
    if !m.signers.windows(2).all(|w| w[0] < w[1]) {
        return Invalid("signers not strictly ascending".into());
    }
    if m.signers.len() < notary_threshold(epoch) {
        return Invalid(format!(
            "{} signers, threshold {}",
            m.signers.len(),
            notary_threshold(epoch)
        ));
    }
    let mut keys = Vec::with_capacity(m.signers.len());
    for s in &m.signers {
        match epoch.registry.members.get(s) {
            Some(r) => keys.push(r.committee_key),
            None => return Invalid(format!("{s} is not a member")),
        }
    }
    verdict(multi_sig::verify_combined(
        &m.signature,
        &m.content.signing_bytes(),
        &keys,
    ))
}

fn interval_of(pool: &Pool, s: Height) -> Option<IntervalChain<'_>> {
    Some(IntervalChain {
        summary_height: s,
        summary_hash: *pool.finalized_hash(s)?,
        summary: finalized_summary(pool, s)?,
        blocks: vec![],
    })
}

fn check_dealing(pool: &Pool, d: &SignedDealing) -> Verdict {
    if d.dkg.summary_height < pool.root_height() || pool.dealing(&d.dkg, d.dealer).is_some() {
        return Useless;
    }
    let Some(chain) = interval_of(pool, d.dkg.summary_height) else {
        return Transient;
    };
    match payload::validate_dealing(&chain, d) {
        Ok(()) => Valid,
        Err(e) => Invalid(e),
    }
}

/// A complaint is judged against the dealing on the finalized chain, never a gossiped copy.
fn check_complaint(pool: &Pool, c: &DkgComplaint) -> Verdict {
    let Some(chain) = IntervalChain::finalized(pool) else {
        return Transient;
    };
    if c.dkg.summary_height < chain.summary_height {
        return Useless;
    }
    let dealings = chain.dealings();
    let (true, Some(dealing)) = (
        c.dkg.summary_height == chain.summary_height,
        dealings.get(&(c.dkg, c.dealer)),
    ) else {
        return Transient;
    };
    match payload::validate_complaint(&chain, c, dealing) {
        Ok(()) => Valid,
        Err(e) => Invalid(e),
    }
}
