//! Consensus artifacts: shares signed by one node, aggregates signed by many.
//!
//! A share can never be passed where an aggregate is expected: [`Share`], [`Multi`] and
//! [`Certified`] are distinct types, and their contents name the domain they are signed under.

use serde::{Deserialize, Serialize};
use thicket_crypto::{multi_sig, threshold};

use crate::block::{Block, BlockProposal, DkgComplaint, SignedDealing};
use crate::ids::{CryptoHash, Height, NodeId, hash_of, signing_bytes};
use crate::registry::SignedRegistryChange;

/// Content that is signed, with the domain it is signed under.
pub trait SignedContent: Serialize {
    const DOMAIN: &'static str;
    fn height(&self) -> Height;
    fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(Self::DOMAIN, self)
    }
}

/// One node's signature share on `content`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share<C, S> {
    pub content: C,
    pub signer: NodeId,
    pub signature: S,
}

/// A BLS multi-signature of several committee members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multi<C> {
    pub content: C,
    /// Ascending, no duplicates.
    pub signers: Vec<NodeId>,
    pub signature: multi_sig::CombinedSignature,
}

/// A threshold signature of a committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certified<C> {
    pub content: C,
    pub signature: threshold::CombinedSig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BeaconContent {
    pub height: Height,
    /// Hash of the beacon at height − 1.
    pub parent: CryptoHash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NotarizationContent {
    pub height: Height,
    pub block: CryptoHash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FinalizationContent {
    pub height: Height,
    pub block: CryptoHash,
}

/// What a catch-up package certifies: a finalized summary block, the beacon at its height
/// and the hash of the replicated state after executing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpContent {
    pub block: Block,
    pub beacon: RandomBeacon,
    pub state_hash: CryptoHash,
}

/// CUP shares sign the hash of the (large) content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpShareContent {
    pub height: Height,
    pub content_hash: CryptoHash,
}

impl SignedContent for BeaconContent {
    const DOMAIN: &'static str = "thicket-random-beacon";
    fn height(&self) -> Height {
        self.height
    }
}
impl SignedContent for NotarizationContent {
    const DOMAIN: &'static str = "thicket-notarization";
    fn height(&self) -> Height {
        self.height
    }
}
impl SignedContent for FinalizationContent {
    const DOMAIN: &'static str = "thicket-finalization";
    fn height(&self) -> Height {
        self.height
    }
}
impl SignedContent for CatchUpShareContent {
    const DOMAIN: &'static str = "thicket-catch-up-package";
    fn height(&self) -> Height {
        self.height
    }
}

impl CatchUpContent {
    pub fn hash(&self) -> CryptoHash {
        hash_of("thicket-catch-up-content", self)
    }
    pub fn share_content(&self) -> CatchUpShareContent {
        CatchUpShareContent {
            height: self.block.height,
            content_hash: self.hash(),
        }
    }
}

/// What replicas certify after executing a height: the root hash of the certified state tree
/// (IC interface specification, "Certification"). The signed message is the IC's, so clients
/// verify certificates with the subnet's public key as they would on the IC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CertificationContent {
    pub height: Height,
    pub root: CryptoHash,
}

impl CertificationContent {
    /// `domain_sep("ic-state-root")`: the length-prefixed domain of state certification.
    pub const DOMAIN_SEPARATOR: &'static [u8] = b"\x0Dic-state-root";

    pub fn message(&self) -> Vec<u8> {
        [Self::DOMAIN_SEPARATOR, &self.root.0].concat()
    }
}

pub type CertificationShare = Share<CertificationContent, threshold::SigShare>;
pub type Certification = Certified<CertificationContent>;

pub type RandomBeacon = Certified<BeaconContent>;
pub type RandomBeaconShare = Share<BeaconContent, threshold::SigShare>;
pub type Notarization = Multi<NotarizationContent>;
pub type NotarizationShare = Share<NotarizationContent, multi_sig::IndividualSignature>;
pub type Finalization = Multi<FinalizationContent>;
pub type FinalizationShare = Share<FinalizationContent, multi_sig::IndividualSignature>;
pub type CatchUpPackage = Certified<CatchUpContent>;
pub type CatchUpShare = Share<CatchUpShareContent, threshold::SigShare>;

impl RandomBeacon {
    pub fn hash(&self) -> CryptoHash {
        hash_of("thicket-random-beacon-hash", self)
    }
}

/// Everything replicas gossip to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    BlockProposal(Box<BlockProposal>),
    RandomBeacon(RandomBeacon),
    RandomBeaconShare(RandomBeaconShare),
    Notarization(Notarization),
    NotarizationShare(NotarizationShare),
    Finalization(Finalization),
    FinalizationShare(FinalizationShare),
    CatchUpPackage(Box<CatchUpPackage>),
    CatchUpShare(CatchUpShare),
    Dealing(Box<SignedDealing>),
    Complaint(Box<DkgComplaint>),
    /// An administrator-signed registry change waiting to be ordered.
    RegistryChange(Box<SignedRegistryChange>),
    /// An ingress message waiting to be ordered.
    Ingress(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Certification of executed state: handled by the replica's certifier, not the pool.
    CertificationShare(CertificationShare),
    Certification(Box<Certification>),
}

/// Artifact kinds, for counters (a bounded label set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ArtifactKind {
    BlockProposal,
    RandomBeacon,
    RandomBeaconShare,
    Notarization,
    NotarizationShare,
    Finalization,
    FinalizationShare,
    CatchUpPackage,
    CatchUpShare,
    Dealing,
    Complaint,
    RegistryChange,
    Ingress,
    CertificationShare,
    Certification,
}

impl ArtifactKind {
    /// Every kind (metrics export a zero for each from the start).
    pub const ALL: [ArtifactKind; 15] = [
        ArtifactKind::BlockProposal,
        ArtifactKind::RandomBeacon,
        ArtifactKind::RandomBeaconShare,
        ArtifactKind::Notarization,
        ArtifactKind::NotarizationShare,
        ArtifactKind::Finalization,
        ArtifactKind::FinalizationShare,
        ArtifactKind::CatchUpPackage,
        ArtifactKind::CatchUpShare,
        ArtifactKind::Dealing,
        ArtifactKind::Complaint,
        ArtifactKind::RegistryChange,
        ArtifactKind::Ingress,
        ArtifactKind::CertificationShare,
        ArtifactKind::Certification,
    ];
}

impl ConsensusMessage {
    /// Content-addressed id of the message.
    pub fn id(&self) -> CryptoHash {
        hash_of("thicket-artifact", self)
    }

    pub fn kind(&self) -> ArtifactKind {
        match self {
            ConsensusMessage::BlockProposal(_) => ArtifactKind::BlockProposal,
            ConsensusMessage::RandomBeacon(_) => ArtifactKind::RandomBeacon,
            ConsensusMessage::RandomBeaconShare(_) => ArtifactKind::RandomBeaconShare,
            ConsensusMessage::Notarization(_) => ArtifactKind::Notarization,
            ConsensusMessage::NotarizationShare(_) => ArtifactKind::NotarizationShare,
            ConsensusMessage::Finalization(_) => ArtifactKind::Finalization,
            ConsensusMessage::FinalizationShare(_) => ArtifactKind::FinalizationShare,
            ConsensusMessage::CatchUpPackage(_) => ArtifactKind::CatchUpPackage,
            ConsensusMessage::CatchUpShare(_) => ArtifactKind::CatchUpShare,
            ConsensusMessage::Dealing(_) => ArtifactKind::Dealing,
            ConsensusMessage::Complaint(_) => ArtifactKind::Complaint,
            ConsensusMessage::RegistryChange(_) => ArtifactKind::RegistryChange,
            ConsensusMessage::Ingress(_) => ArtifactKind::Ingress,
            ConsensusMessage::CertificationShare(_) => ArtifactKind::CertificationShare,
            ConsensusMessage::Certification(_) => ArtifactKind::Certification,
        }
    }

    /// The height the artifact belongs to, for purging; DKG messages count by their interval.
    pub fn height(&self) -> Height {
        match self {
            ConsensusMessage::BlockProposal(p) => p.block.height,
            ConsensusMessage::RandomBeacon(b) => b.content.height,
            ConsensusMessage::RandomBeaconShare(s) => s.content.height,
            ConsensusMessage::Notarization(n) => n.content.height,
            ConsensusMessage::NotarizationShare(s) => s.content.height,
            ConsensusMessage::Finalization(f) => f.content.height,
            ConsensusMessage::FinalizationShare(s) => s.content.height,
            ConsensusMessage::CatchUpPackage(c) => c.content.block.height,
            ConsensusMessage::CatchUpShare(s) => s.content.height,
            ConsensusMessage::Dealing(d) => d.dkg.summary_height,
            ConsensusMessage::Complaint(c) => c.dkg.summary_height,
            ConsensusMessage::RegistryChange(_) | ConsensusMessage::Ingress(_) => Height(u64::MAX),
            ConsensusMessage::CertificationShare(s) => s.content.height,
            ConsensusMessage::Certification(c) => c.content.height,
        }
    }
}
