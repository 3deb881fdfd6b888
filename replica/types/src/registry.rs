//! The registry: which nodes exist, their public keys, the subnet's membership and parameters.
//! It is versioned; every applied change bumps the version. Changes are signed by the subnet's
//! administrator key (the operator's identity) and ordered by consensus.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thicket_crypto::dkg::EncryptionPublicKey;
use thicket_crypto::multi_sig;
use thicket_crypto::node_key::{NodePublicKey, NodeSignature};

use crate::ids::{CryptoHash, NodeId, signing_bytes};

/// Public keys a node registers; the secret halves never leave the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    pub signing_key: NodePublicKey,
    pub committee_key: multi_sig::PublicKey,
    pub committee_pop: multi_sig::Pop,
    pub dkg_key: EncryptionPublicKey,
    /// Where peers reach the node's transport (`http://host:port`); empty for a node that is
    /// only reached through others (the simulator).
    pub p2p_url: String,
}

/// Consensus parameters of the subnet (the IC's SubnetRecord fields we use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetParams {
    pub unit_delay_ms: u64,
    pub initial_notary_delay_ms: u64,
    /// Heights per DKG interval; a summary block sits at every multiple.
    pub dkg_interval_length: u64,
    /// Most dealings a block may carry.
    pub dkg_dealings_per_block: usize,
    /// Most ingress messages a block may carry.
    pub max_ingress_per_block: usize,
}

/// A version of the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Chosen when the subnet is created; admin signatures name it, so a change signed for
    /// one subnet cannot be replayed on another.
    pub subnet_id: CryptoHash,
    pub version: u64,
    /// Members of the subnet, by id (ascending: index in this map = DKG index).
    pub members: BTreeMap<NodeId, NodeRecord>,
    pub params: SubnetParams,
    /// Key that signs registry changes.
    pub admin_key: NodePublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryChange {
    AddNode(Box<NodeRecord>),
    RemoveNode(NodeId),
}

/// A change signed by the administrator for one subnet, valid only against `base_version`, so a
/// change can neither be replayed nor applied to a registry it was not meant for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRegistryChange {
    pub base_version: u64,
    pub change: RegistryChange,
    pub signature: NodeSignature,
}

pub const REGISTRY_CHANGE_DOMAIN: &str = "thicket-registry-change";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    BadSignature,
    WrongVersion { expected: u64, got: u64 },
    AlreadyMember(NodeId),
    NotMember(NodeId),
    BadPop(NodeId),
    DuplicateKey(NodeId),
    TooFewMembers,
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::BadSignature => {
                f.write_str("registry change not signed by the admin key")
            }
            RegistryError::WrongVersion { expected, got } => {
                write!(
                    f,
                    "registry change for version {got}, registry is at {expected}"
                )
            }
            RegistryError::AlreadyMember(n) => write!(f, "{n} is already a member"),
            RegistryError::NotMember(n) => write!(f, "{n} is not a member"),
            RegistryError::BadPop(n) => write!(f, "{n}: committee key proof of possession invalid"),
            RegistryError::DuplicateKey(n) => write!(f, "{n} registers a key another member has"),
            RegistryError::TooFewMembers => f.write_str("a subnet needs at least one member"),
        }
    }
}

impl SignedRegistryChange {
    pub fn signed(
        subnet_id: CryptoHash,
        base_version: u64,
        change: RegistryChange,
        admin: &thicket_crypto::node_key::NodeSigningKey,
    ) -> Self {
        let signature = admin.sign(&Self::signed_content(&subnet_id, base_version, &change));
        SignedRegistryChange {
            base_version,
            change,
            signature,
        }
    }

    /// What the administrator signs.
    pub fn signed_content(
        subnet_id: &CryptoHash,
        base_version: u64,
        change: &RegistryChange,
    ) -> Vec<u8> {
        signing_bytes(REGISTRY_CHANGE_DOMAIN, &(subnet_id, base_version, change))
    }
}

impl Registry {
    /// Faults tolerated: ⌊(n−1)/3⌋.
    pub fn faults_tolerated(&self) -> usize {
        faults_tolerated(self.members.len())
    }

    pub fn index_of(&self, node: NodeId) -> Option<u32> {
        self.members
            .keys()
            .position(|n| *n == node)
            .map(|i| i as u32)
    }

    pub fn node_at(&self, index: u32) -> Option<NodeId> {
        self.members.keys().nth(index as usize).copied()
    }

    /// Every member's committee key comes with a valid proof of possession (without it, a
    /// rogue key could cancel the others' in an aggregate and forge multi-signatures), and no
    /// key is registered twice.
    pub fn check_keys(&self) -> Result<(), RegistryError> {
        for rec in self.members.values() {
            rec.committee_key
                .verify_pop(&rec.committee_pop)
                .map_err(|_| RegistryError::BadPop(rec.node_id))?;
        }
        self.check_distinct_keys()
    }

    fn check_distinct_keys(&self) -> Result<(), RegistryError> {
        let mut committee = std::collections::BTreeSet::new();
        let mut signing = std::collections::BTreeSet::new();
        let mut dkg = std::collections::BTreeSet::new();
        for rec in self.members.values() {
            let fresh = committee.insert(rec.committee_key.0.to_compressed())
                & signing.insert(rec.signing_key.0)
                & dkg.insert(rec.dkg_key.0.to_compressed());
            if !fresh {
                return Err(RegistryError::DuplicateKey(rec.node_id));
            }
        }
        Ok(())
    }

    /// Checks a change against this registry and returns the registry it produces.
    pub fn apply(&self, change: &SignedRegistryChange) -> Result<Registry, RegistryError> {
        let msg = SignedRegistryChange::signed_content(
            &self.subnet_id,
            change.base_version,
            &change.change,
        );
        self.admin_key
            .verify(&msg, &change.signature)
            .map_err(|_| RegistryError::BadSignature)?;
        if change.base_version != self.version {
            return Err(RegistryError::WrongVersion {
                expected: self.version,
                got: change.base_version,
            });
        }
        let mut next = self.clone();
        next.version += 1;
        match &change.change {
            RegistryChange::AddNode(rec) => {
                if next.members.contains_key(&rec.node_id) {
                    return Err(RegistryError::AlreadyMember(rec.node_id));
                }
                rec.committee_key
                    .verify_pop(&rec.committee_pop)
                    .map_err(|_| RegistryError::BadPop(rec.node_id))?;
                next.members.insert(rec.node_id, rec.as_ref().clone());
                next.check_distinct_keys()?;
            }
            RegistryChange::RemoveNode(id) => {
                next.members
                    .remove(id)
                    .ok_or(RegistryError::NotMember(*id))?;
                if next.members.is_empty() {
                    return Err(RegistryError::TooFewMembers);
                }
            }
        }
        Ok(next)
    }
}

/// f = ⌊(n−1)/3⌋ (the IC's `get_faults_tolerated`).
pub fn faults_tolerated(n: usize) -> usize {
    n.max(1).saturating_sub(1) / 3
}

/// Threshold of the high-threshold key and of notarization/finalization: n − f.
pub fn high_threshold(n: usize) -> usize {
    n - faults_tolerated(n)
}

/// Threshold of the low-threshold (beacon) key: f + 1.
pub fn low_threshold(n: usize) -> usize {
    faults_tolerated(n) + 1
}
