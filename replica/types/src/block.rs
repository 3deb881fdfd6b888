//! Blocks and their payloads. Every `dkg_interval_length` heights a *summary block* carries the
//! DKG summary instead of data: the keys and membership for the coming rounds and the DKG
//! configurations for the dealings of the interval that follows.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use thicket_crypto::blstrs::G2Affine;

use serde::{Deserialize, Serialize};
use thicket_crypto::dkg::{Complaint, Dealing, DkgConfig, Transcript};
use thicket_crypto::node_key::NodeSignature;
use thicket_crypto::threshold::PublicCoefficients;

use crate::ids::{CryptoHash, Height, NodeId, Rank, hash_of};
use crate::registry::{Registry, SignedRegistryChange};

pub const BLOCK_DOMAIN: &str = "thicket-block";
pub const PROPOSAL_DOMAIN: &str = "thicket-block-proposal";
pub const DEALING_DOMAIN: &str = "thicket-dkg-dealing";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub parent: CryptoHash,
    pub height: Height,
    pub rank: Rank,
    pub maker: NodeId,
    /// The maker's clock when proposing (validation context time), milliseconds.
    pub time_ms: u64,
    pub payload: Payload,
}

impl Block {
    pub fn hash(&self) -> CryptoHash {
        hash_of(BLOCK_DOMAIN, self)
    }

    pub fn summary(&self) -> Option<&Summary> {
        match &self.payload {
            Payload::Summary(s) => Some(s),
            Payload::Data(_) => None,
        }
    }

    pub fn data(&self) -> Option<&DataPayload> {
        match &self.payload {
            Payload::Data(d) => Some(d),
            Payload::Summary(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Summary(Box<Summary>),
    Data(DataPayload),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPayload {
    #[serde(with = "crate::ids::byte_strings")]
    pub ingress: Vec<Vec<u8>>,
    pub dealings: Vec<SignedDealing>,
    pub complaints: Vec<DkgComplaint>,
    pub registry_changes: Vec<SignedRegistryChange>,
}

/// Which key a DKG instance produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DkgTag {
    /// Fresh every interval; threshold f+1; random beacon.
    Low,
    /// Reshared every interval; threshold n−f; state certification and CUPs (subnet key).
    High,
}

/// A DKG instance: the tag and the summary height whose configuration it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DkgId {
    pub summary_height: Height,
    pub tag: DkgTag,
}

impl DkgId {
    /// The id bytes the crypto binds ciphertexts and complaints to.
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = b"thicket-dkg".to_vec();
        v.extend_from_slice(&self.summary_height.0.to_be_bytes());
        v.push(match self.tag {
            DkgTag::Low => 0,
            DkgTag::High => 1,
        });
        v
    }
}

/// One threshold key of an epoch, with what its holders need to derive their shares from the
/// summary alone (so a node that starts from a catch-up package needs no older blocks).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochKey {
    pub config: DkgConfig,
    pub transcript: Transcript,
    /// The dealings the transcript combines, by dealer index.
    pub dealings: BTreeMap<u32, Dealing>,
    /// Public keys of the shares, derived from the transcript on first use: every share
    /// verification needs one, and each costs `threshold` G2 multiplications to derive.
    #[serde(skip)]
    share_keys: OnceLock<Vec<G2Affine>>,
}

impl PartialEq for EpochKey {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.transcript == other.transcript
            && self.dealings == other.dealings
    }
}
impl Eq for EpochKey {}

impl EpochKey {
    pub fn new(
        config: DkgConfig,
        transcript: Transcript,
        dealings: BTreeMap<u32, Dealing>,
    ) -> Self {
        EpochKey {
            config,
            transcript,
            dealings,
            share_keys: OnceLock::new(),
        }
    }

    /// Public key of share `index`.
    pub fn share_key(&self, index: u32) -> Option<G2Affine> {
        let keys = self.share_keys.get_or_init(|| {
            (0..self.config.receivers.len() as u32)
                .map(|i| self.transcript.coefficients.share_public_key(i))
                .collect()
        });
        keys.get(index as usize).copied()
    }

    pub fn coefficients(&self) -> &PublicCoefficients {
        &self.transcript.coefficients
    }
    pub fn threshold(&self) -> usize {
        self.transcript.coefficients.threshold()
    }
}

/// Keys and membership for the rounds of one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub registry: Registry,
    /// Receivers are `registry.members`, in order.
    pub low: EpochKey,
    pub high: EpochKey,
}

impl Epoch {
    pub fn key(&self, tag: DkgTag) -> &EpochKey {
        match tag {
            DkgTag::Low => &self.low,
            DkgTag::High => &self.high,
        }
    }
}

/// The DKG summary of a summary block at height s (interval length L).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Keys and membership of rounds s+1 ..= s+L (equal to the previous summary's `next`).
    pub current: Epoch,
    /// Keys and membership of rounds s+L+1 ..= s+2L, made from the dealings of the interval
    /// that ended here (or `current` again if that DKG failed).
    pub next: Epoch,
    /// The registry with every change ordered so far: receivers of this interval's DKGs.
    pub pending: Registry,
    /// Configurations of the DKGs dealt in blocks s+1 .. s+L−1; dealers are `next` members.
    pub low_config: DkgConfig,
    pub high_config: DkgConfig,
}

impl Summary {
    pub fn config(&self, tag: DkgTag) -> &DkgConfig {
        match tag {
            DkgTag::Low => &self.low_config,
            DkgTag::High => &self.high_config,
        }
    }
}

/// A dealing, signed by its dealer's node key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDealing {
    pub dkg: DkgId,
    pub dealer: NodeId,
    pub dealing: Dealing,
    pub signature: NodeSignature,
}

impl SignedDealing {
    pub fn hash(&self) -> CryptoHash {
        hash_of("thicket-dkg-dealing-hash", self)
    }

    pub fn signed_content(dkg: &DkgId, dealer: NodeId, dealing: &Dealing) -> Vec<u8> {
        crate::ids::signing_bytes(DEALING_DOMAIN, &(dkg, dealer, dealing))
    }
}

/// A receiver's complaint against a dealing on chain (self-authenticating: its DLEQ proof
/// shows it comes from the receiver's DKG key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgComplaint {
    pub dkg: DkgId,
    pub dealer: NodeId,
    /// Hash of the dealing on chain that the complaint is about: a dealer that deals twice
    /// cannot make a complaint about one apply to the other.
    pub dealing: CryptoHash,
    pub complaint: Complaint,
}

/// A block signed by its maker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockProposal {
    pub block: Block,
    pub signature: NodeSignature,
}

impl BlockProposal {
    pub fn signed_content(hash: &CryptoHash) -> Vec<u8> {
        crate::ids::signing_bytes(PROPOSAL_DOMAIN, hash)
    }
}
