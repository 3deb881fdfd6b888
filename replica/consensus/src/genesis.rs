//! Genesis: the first registry and the first keys, made by a DKG among the initial members
//! without a trusted dealer. Each member deals (with its own randomness, which never leaves it);
//! a relay (the operator, or the simulator) carries the dealings and complaints, which it cannot
//! read; every member then checks them and derives the same transcripts.

use std::collections::BTreeMap;

use thicket_crypto::bls::hash_to_g1;
use thicket_crypto::dkg::{self, Complaint, Dealing, DkgConfig};
use thicket_crypto::threshold::CombinedSig;
use thicket_types::artifacts::{BeaconContent, CatchUpContent, Certified};
use thicket_types::block::{Block, DkgId, DkgTag, Epoch, EpochKey, Payload};
use thicket_types::registry::{Registry, high_threshold, low_threshold};
use thicket_types::{CryptoHash, Height, NodeId, Rank};

use crate::keys::NodeSecrets;
use crate::payload::summary_from;

/// The genesis DKG configuration for one key.
pub fn config(registry: &Registry, tag: DkgTag) -> DkgConfig {
    let n = registry.members.len();
    DkgConfig {
        dkg_id: DkgId {
            summary_height: Height(0),
            tag,
        }
        .bytes(),
        threshold: match tag {
            DkgTag::Low => low_threshold(n),
            DkgTag::High => high_threshold(n),
        } as u32,
        dealers: n as u32,
        receivers: registry.members.values().map(|r| r.dkg_key).collect(),
        resharing: None,
    }
}

/// A member's two genesis dealings.
pub fn deal<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
    me: &NodeSecrets,
    registry: &Registry,
) -> Result<[Dealing; 2], GenesisError> {
    let index = registry
        .index_of(me.node_id)
        .ok_or(GenesisError::NotAMember(me.node_id))?;
    let low = dkg::deal(rng, &config(registry, DkgTag::Low), index, None)?;
    let high = dkg::deal(rng, &config(registry, DkgTag::High), index, None)?;
    Ok([low, high])
}

/// A member's complaints about the genesis dealings addressed to it (dealer id, tag, complaint).
pub fn complaints<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
    me: &NodeSecrets,
    registry: &Registry,
    dealings: &BTreeMap<NodeId, [Dealing; 2]>,
) -> Vec<(NodeId, DkgTag, Complaint)> {
    let Some(receiver) = registry.index_of(me.node_id) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (dealer, pair) in dealings {
        let Some(d) = registry.index_of(*dealer) else {
            continue;
        };
        for (tag, dealing) in [(DkgTag::Low, &pair[0]), (DkgTag::High, &pair[1])] {
            if let Some(c) =
                dkg::complain(rng, &config(registry, tag), d, dealing, receiver, &me.dkg)
            {
                out.push((*dealer, tag, c));
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("{0} is not a genesis member")]
    NotAMember(NodeId),
    #[error("genesis DKG: {0}")]
    Dkg(#[from] thicket_crypto::CryptoError),
    #[error("dkg_interval_length {0} is below the minimum of {min}", min = crate::membership::MIN_DKG_INTERVAL_LENGTH)]
    IntervalTooShort(u64),
    #[error("genesis registry: {0}")]
    Registry(thicket_types::registry::RegistryError),
}

/// Genesis when every member's secrets are in this process (the simulator, tests): each deals,
/// each complains, and the root follows. A real subnet relays the same steps between processes.
pub fn in_process<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
    secrets: &[NodeSecrets],
    registry: Registry,
) -> Result<CatchUpContent, GenesisError> {
    let mut dealings = BTreeMap::new();
    for s in secrets {
        dealings.insert(s.node_id, deal(rng, s, &registry)?);
    }
    let complaints: Vec<_> = secrets
        .iter()
        .flat_map(|s| complaints(rng, s, &registry, &dealings))
        .collect();
    root(registry, &dealings, &complaints)
}

/// The genesis root (summary block at height 0 and the genesis beacon) from the relayed
/// dealings and complaints. Dealings failing public checks or with a justified complaint are
/// excluded; every member computes the same result from the same input.
pub fn root(
    registry: Registry,
    dealings: &BTreeMap<NodeId, [Dealing; 2]>,
    complaints: &[(NodeId, DkgTag, Complaint)],
) -> Result<CatchUpContent, GenesisError> {
    registry.check_keys().map_err(GenesisError::Registry)?;
    let l = registry.params.dkg_interval_length;
    if l < crate::membership::MIN_DKG_INTERVAL_LENGTH {
        return Err(GenesisError::IntervalTooShort(l));
    }
    let key = |tag: DkgTag, slot: usize| -> Result<EpochKey, GenesisError> {
        let cfg = config(&registry, tag);
        let mut qualified = BTreeMap::new();
        for (dealer, pair) in dealings {
            let Some(i) = registry.index_of(*dealer) else {
                continue;
            };
            let d = &pair[slot];
            let accused = complaints.iter().any(|(cd, ct, c)| {
                cd == dealer && *ct == tag && dkg::verify_complaint(&cfg, i, d, c).is_ok()
            });
            if dkg::verify_dealing(&cfg, i, d).is_ok() && !accused {
                qualified.insert(i, d.clone());
            }
        }
        let transcript = dkg::create_transcript(&cfg, &qualified)?;
        Ok(EpochKey::new(cfg, transcript, qualified))
    };
    let epoch = Epoch {
        low: key(DkgTag::Low, 0)?,
        high: key(DkgTag::High, 1)?,
        registry: registry.clone(),
    };
    let summary = summary_from(Height(0), epoch.clone(), epoch, registry);
    let block = Block {
        parent: CryptoHash::default(),
        height: Height(0),
        rank: Rank(0),
        maker: NodeId(0),
        time_ms: 0,
        payload: Payload::Summary(Box::new(summary)),
    };
    // The genesis beacon is fixed by the genesis block (as on the IC, where it is
    // preconstructed): it is trusted like the rest of genesis, never verified.
    let seed = hash_to_g1(&block.hash().0, b"THICKET_GENESIS_BEACON");
    let beacon = Certified {
        content: BeaconContent {
            height: Height(0),
            parent: CryptoHash::default(),
        },
        signature: CombinedSig(seed),
    };
    Ok(CatchUpContent {
        block,
        beacon,
        state_hash: CryptoHash::default(),
    })
}
