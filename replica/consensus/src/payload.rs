//! Block payloads: building and validating them against the chain they extend.
//!
//! Data blocks carry ingress, DKG dealings and complaints, and registry changes. Dealings are
//! accepted in the first half of an interval and complaints until its end, so that receivers
//! have time to object to a bad share before the summary block fixes the transcripts. The
//! summary block's content is a deterministic function of its chain: every replica computes it
//! and accepts only the block that matches.

use std::collections::{BTreeMap, BTreeSet};

use thicket_crypto::dkg;
use thicket_types::artifacts::ConsensusMessage;
use thicket_types::block::{
    Block, DataPayload, DkgComplaint, DkgId, DkgTag, Epoch, EpochKey, Payload, SignedDealing,
    Summary,
};
use thicket_types::ingress::SignedIngress;
use thicket_types::registry::{Registry, high_threshold, low_threshold};
use thicket_types::{CryptoHash, Height, NodeId};

use crate::membership::{interval_length, is_summary_height};

/// Most ingress bytes in one block: the IC's 4 MiB block payload limit. With it a block,
/// whatever its messages, stays well inside a transport message.
pub const MAX_BLOCK_INGRESS_BYTES: usize = 4 * 1024 * 1024;
use crate::pool::Pool;

/// A block's view of its interval: the summary that opened it and the blocks since.
pub struct IntervalChain<'a> {
    pub summary_height: Height,
    pub summary_hash: CryptoHash,
    pub summary: &'a Summary,
    /// Blocks after the summary up to and including the parent, oldest first.
    pub blocks: Vec<&'a Block>,
}

impl<'a> IntervalChain<'a> {
    /// The interval of the finalized tip: its summary and the finalized blocks since.
    pub fn finalized(pool: &'a Pool) -> Option<Self> {
        let h = pool.finalized_height();
        let hash = *pool.finalized_hash(h)?;
        Self::of(pool, hash, pool.block(h, &hash)?)
    }

    /// The interval chain for a child of the block `parent_hash`. `None` if blocks are missing.
    pub fn of(pool: &'a Pool, parent_hash: CryptoHash, parent: &'a Block) -> Option<Self> {
        let mut blocks = Vec::new();
        let (mut cur, mut cur_hash) = (parent, parent_hash);
        loop {
            if let Some(summary) = cur.summary() {
                blocks.reverse();
                return Some(IntervalChain {
                    summary_height: cur.height,
                    summary_hash: cur_hash,
                    summary,
                    blocks,
                });
            }
            blocks.push(cur);
            cur_hash = cur.parent;
            cur = pool.block(cur.height.prev(), &cur_hash)?;
        }
    }

    fn data(&self) -> impl Iterator<Item = &'a DataPayload> + '_ {
        self.blocks.iter().filter_map(|b| b.data())
    }

    pub fn dealings(&self) -> BTreeMap<(DkgId, NodeId), &'a SignedDealing> {
        self.data()
            .flat_map(|d| &d.dealings)
            .map(|d| ((d.dkg, d.dealer), d))
            .collect()
    }

    pub fn complaints(&self) -> BTreeSet<(DkgId, NodeId, u32)> {
        self.data()
            .flat_map(|d| &d.complaints)
            .map(|c| (c.dkg, c.dealer, c.complaint.receiver))
            .collect()
    }

    pub fn ingress(&self) -> BTreeSet<&'a [u8]> {
        self.data()
            .flat_map(|d| &d.ingress)
            .map(Vec::as_slice)
            .collect()
    }

    /// The summary's pending registry with the changes of this interval applied.
    pub fn pending_registry(&self) -> Registry {
        let mut reg = self.summary.pending.clone();
        for c in self.data().flat_map(|d| &d.registry_changes) {
            // Changes on chain were validated against exactly this sequence.
            if let Ok(next) = reg.apply(c) {
                reg = next;
            }
        }
        reg
    }

    pub fn dkg_id(&self, tag: DkgTag) -> DkgId {
        DkgId {
            summary_height: self.summary_height,
            tag,
        }
    }

    /// Dealer index of `node` in this interval's DKGs (position in `next` membership).
    pub fn dealer_index(&self, node: NodeId) -> Option<u32> {
        self.summary.next.registry.index_of(node)
    }
}

/// Last height of the interval at which dealings may be included.
fn dealing_window_end(pool: &Pool, s: Height) -> Height {
    Height(s.0 + (interval_length(pool) / 2).max(1))
}

/// Builds the payload of a block at `h` on `parent`.
pub fn build(pool: &Pool, parent_hash: CryptoHash, parent: &Block, h: Height) -> Payload {
    let Some(chain) = IntervalChain::of(pool, parent_hash, parent) else {
        return Payload::Data(DataPayload::default());
    };
    if is_summary_height(pool, h) {
        return Payload::Summary(Box::new(build_summary(&chain, h)));
    }
    let params = &chain.summary.current.registry.params;
    let mut data = DataPayload::default();
    let on_chain = chain.ingress();
    let mut size = 0;
    for (_, msg) in pool.waiting() {
        if let ConsensusMessage::Ingress(bytes) = msg {
            if data.ingress.len() < params.max_ingress_per_block
                && size + bytes.len() <= MAX_BLOCK_INGRESS_BYTES
                && !on_chain.contains(bytes.as_slice())
            {
                size += bytes.len();
                data.ingress.push(bytes.clone());
            }
        }
    }
    let mut reg = chain.pending_registry();
    for change in pool.waiting_registry_changes() {
        if let Ok(next) = reg.apply(change) {
            reg = next;
            data.registry_changes.push(change.clone());
        }
    }
    // DKG messages only on the finalized interval chain, where the pool validated them.
    if pool.finalized_hash(chain.summary_height) != Some(&chain.summary_hash) {
        return Payload::Data(data);
    }
    let dealings = chain.dealings();
    if h <= dealing_window_end(pool, chain.summary_height) {
        data.dealings = pool
            .dealings()
            .filter(|d| {
                d.dkg.summary_height == chain.summary_height
                    && !dealings.contains_key(&(d.dkg, d.dealer))
            })
            .take(params.dkg_dealings_per_block)
            .cloned()
            .collect();
    }
    let complained = chain.complaints();
    data.complaints = pool
        .complaints()
        .filter(|c| !complained.contains(&(c.dkg, c.dealer, c.complaint.receiver)))
        .filter(|c| {
            dealings
                .get(&(c.dkg, c.dealer))
                .is_some_and(|d| validate_complaint(&chain, c, d).is_ok())
        })
        .cloned()
        .collect();
    Payload::Data(data)
}

/// Validates the payload of `block` against its chain. `Err` is permanent.
pub fn validate(pool: &Pool, parent: &Block, block: &Block) -> Result<(), String> {
    let chain = IntervalChain::of(pool, block.parent, parent).ok_or("interval chain incomplete")?;
    match &block.payload {
        Payload::Summary(s) => {
            if !is_summary_height(pool, block.height) {
                return Err(format!(
                    "summary payload at non-summary height {}",
                    block.height
                ));
            }
            if **s != build_summary(&chain, block.height) {
                return Err("summary does not match the chain".into());
            }
            Ok(())
        }
        Payload::Data(d) => {
            if is_summary_height(pool, block.height) {
                return Err(format!("data payload at summary height {}", block.height));
            }
            validate_data(pool, &chain, block.height, d)
        }
    }
}

fn validate_data(
    pool: &Pool,
    chain: &IntervalChain,
    h: Height,
    d: &DataPayload,
) -> Result<(), String> {
    let params = &chain.summary.current.registry.params;
    let bytes: usize = d.ingress.iter().map(Vec::len).sum();
    if bytes > MAX_BLOCK_INGRESS_BYTES {
        return Err(format!(
            "{bytes} bytes of ingress, limit {MAX_BLOCK_INGRESS_BYTES}"
        ));
    }
    // Ingress this replica holds waiting was checked when it arrived (at the HTTP interface
    // or from a peer): only the rest is checked here, so a message costs one check per
    // replica (a signature check is most of a signed call's cost).
    for i in &d.ingress {
        if pool.waiting_ingress(i).is_none() {
            SignedIngress::verified(i).map_err(|e| format!("ingress: {e}"))?;
        }
    }
    if d.ingress.len() > params.max_ingress_per_block {
        return Err(format!(
            "{} ingress messages, limit {}",
            d.ingress.len(),
            params.max_ingress_per_block
        ));
    }
    let mut reg = chain.pending_registry();
    for c in &d.registry_changes {
        reg = reg.apply(c).map_err(|e| format!("registry change: {e}"))?;
    }
    if d.dealings.len() > params.dkg_dealings_per_block {
        return Err(format!(
            "{} dealings, limit {}",
            d.dealings.len(),
            params.dkg_dealings_per_block
        ));
    }
    if !d.dealings.is_empty() && h > dealing_window_end(pool, chain.summary_height) {
        return Err(format!("dealings at height {h}, after the dealing window"));
    }
    let mut dealings = chain.dealings();
    for sd in &d.dealings {
        validate_dealing(chain, sd)?;
        if dealings.insert((sd.dkg, sd.dealer), sd).is_some() {
            return Err(format!("second dealing of {} for {:?}", sd.dealer, sd.dkg));
        }
    }
    let prior = chain.dealings();
    let mut complained = chain.complaints();
    for c in &d.complaints {
        let dealing = prior
            .get(&(c.dkg, c.dealer))
            .ok_or_else(|| format!("complaint about a dealing of {} not on chain", c.dealer))?;
        validate_complaint(chain, c, dealing)?;
        if !complained.insert((c.dkg, c.dealer, c.complaint.receiver)) {
            return Err("duplicate complaint".into());
        }
    }
    Ok(())
}

/// Checks a dealing against the interval's configuration: known dealer, its signature, and the
/// public dealing checks.
pub fn validate_dealing(chain: &IntervalChain, sd: &SignedDealing) -> Result<(), String> {
    if sd.dkg.summary_height != chain.summary_height {
        return Err(format!(
            "dealing for DKG at {}, interval opened at {}",
            sd.dkg.summary_height, chain.summary_height
        ));
    }
    let index = chain
        .dealer_index(sd.dealer)
        .ok_or(format!("{} is not a dealer", sd.dealer))?;
    let record = &chain.summary.next.registry.members[&sd.dealer];
    record
        .signing_key
        .verify(
            &SignedDealing::signed_content(&sd.dkg, sd.dealer, &sd.dealing),
            &sd.signature,
        )
        .map_err(|_| format!("dealing of {} has a bad signature", sd.dealer))?;
    dkg::verify_dealing(chain.summary.config(sd.dkg.tag), index, &sd.dealing)
        .map_err(|e| e.to_string())
}

/// Checks that a complaint is justified.
pub fn validate_complaint(
    chain: &IntervalChain,
    c: &DkgComplaint,
    dealing: &SignedDealing,
) -> Result<(), String> {
    if c.dealing != dealing.hash() {
        return Err(format!("complaint about another dealing of {}", c.dealer));
    }
    let index = chain
        .dealer_index(c.dealer)
        .ok_or("complaint about a non-dealer")?;
    dkg::verify_complaint(
        chain.summary.config(c.dkg.tag),
        index,
        &dealing.dealing,
        &c.complaint,
    )
    .map_err(|e| e.to_string())
}

/// The summary of the block at `t`, from the interval chain that precedes it.
pub fn build_summary(chain: &IntervalChain, t: Height) -> Summary {
    let prev = chain.summary;
    let next = next_epoch(chain).unwrap_or_else(|| prev.next.clone());
    summary_from(t, prev.next.clone(), next, chain.pending_registry())
}

/// A summary at `t` with the DKG configurations that follow from its epochs: dealers are the
/// members of `next` (holders of the key being reshared), receivers the `pending` members.
pub fn summary_from(t: Height, current: Epoch, next: Epoch, pending: Registry) -> Summary {
    let dkg_config = |tag: DkgTag, threshold: usize, resharing| dkg::DkgConfig {
        dkg_id: DkgId {
            summary_height: t,
            tag,
        }
        .bytes(),
        threshold: threshold as u32,
        dealers: next.registry.members.len() as u32,
        receivers: pending.members.values().map(|r| r.dkg_key).collect(),
        resharing,
    };
    let n = pending.members.len();
    Summary {
        low_config: dkg_config(DkgTag::Low, low_threshold(n), None),
        high_config: dkg_config(
            DkgTag::High,
            high_threshold(n),
            Some(next.high.coefficients().clone()),
        ),
        current,
        next,
        pending,
    }
}

/// The epoch made by this interval's DKGs: `None` if either failed (too few qualified dealings),
/// in which case keys and membership stay as they are.
fn next_epoch(chain: &IntervalChain) -> Option<Epoch> {
    let dealings = chain.dealings();
    let complaints = chain.complaints();
    let key = |tag: DkgTag| -> Option<EpochKey> {
        let config = chain.summary.config(tag).clone();
        let id = chain.dkg_id(tag);
        let qualified: BTreeMap<u32, dkg::Dealing> = dealings
            .iter()
            .filter(|((d, _), _)| *d == id)
            .filter(|((_, dealer), _)| {
                !complaints
                    .iter()
                    .any(|(cd, cdealer, _)| *cd == id && cdealer == dealer)
            })
            .filter_map(|((_, dealer), sd)| {
                Some((chain.dealer_index(*dealer)?, sd.dealing.clone()))
            })
            .collect();
        let transcript = dkg::create_transcript(&config, &qualified).ok()?;
        let dealings = qualified
            .into_iter()
            .filter(|(i, _)| transcript.dealers.contains(i))
            .collect();
        Some(EpochKey::new(config, transcript, dealings))
    };
    Some(Epoch {
        registry: chain.summary.pending.clone(),
        low: key(DkgTag::Low)?,
        high: key(DkgTag::High)?,
    })
}
