//! A replica's secret keys: its long-term node keys, and the threshold key shares it derives
//! from the epochs it belongs to. Shares are derived from the summary alone (its epoch keys
//! carry the combined dealings), so a replica starting from a catch-up package gets them too.

use std::collections::BTreeMap;

use thicket_crypto::dkg::{self, EncryptionSecretKey};
use thicket_crypto::multi_sig;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_crypto::threshold::SecretShare;
use thicket_types::block::{Epoch, EpochKey};
use thicket_types::registry::NodeRecord;
use thicket_types::{CryptoHash, NodeId, hash_of};

/// Long-term secrets of one node; created inside the node and never exported.
#[derive(Clone)]
pub struct NodeSecrets {
    pub node_id: NodeId,
    pub signing: NodeSigningKey,
    pub committee: multi_sig::SecretKey,
    pub dkg: EncryptionSecretKey,
}

impl NodeSecrets {
    pub fn generate<R: rand_core::RngCore + rand_core::CryptoRng>(
        rng: &mut R,
        node_id: NodeId,
    ) -> Self {
        NodeSecrets {
            node_id,
            signing: NodeSigningKey::generate(rng),
            committee: multi_sig::SecretKey::generate(rng),
            dkg: EncryptionSecretKey::generate(rng),
        }
    }

    /// The secrets' storage encoding (they live in the node's data directory, nowhere else).
    pub fn to_bytes(&self) -> Vec<u8> {
        thicket_types::canonical_bytes(&StoredSecrets {
            node_id: self.node_id,
            signing: self.signing.to_bytes(),
            committee: self.committee.clone(),
            dkg: self.dkg.clone(),
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let s: StoredSecrets =
            bincode::deserialize(bytes).map_err(|e| format!("node secrets do not decode: {e}"))?;
        Ok(NodeSecrets {
            node_id: s.node_id,
            signing: NodeSigningKey::from_bytes(&s.signing),
            committee: s.committee,
            dkg: s.dkg,
        })
    }

    /// The public record the node registers.
    pub fn record(&self) -> NodeRecord {
        self.record_at("")
    }

    /// The public record, with the address where peers reach this node.
    pub fn record_at(&self, p2p_url: &str) -> NodeRecord {
        NodeRecord {
            node_id: self.node_id,
            signing_key: self.signing.public_key(),
            committee_key: self.committee.public_key(),
            committee_pop: self.committee.pop(),
            dkg_key: self.dkg.public_key(),
            p2p_url: p2p_url.to_string(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecrets {
    node_id: NodeId,
    signing: [u8; 32],
    committee: multi_sig::SecretKey,
    dkg: EncryptionSecretKey,
}

/// Threshold shares by epoch key.
#[derive(Default, Clone)]
pub struct KeyStore {
    /// `None`: derivation failed (this node's dealings were bad); not retried.
    shares: BTreeMap<CryptoHash, Option<SecretShare>>,
}

fn key_id(key: &EpochKey) -> CryptoHash {
    hash_of("thicket-epoch-key", &key.transcript)
}

impl KeyStore {
    pub fn share(&self, key: &EpochKey) -> Option<&SecretShare> {
        self.shares.get(&key_id(key))?.as_ref()
    }

    /// Derives this node's shares of an epoch's keys, if it is a member and has not yet.
    /// A failure means the epoch's dealings are bad for this node; it then acts without
    /// that key (as a faulty member would).
    pub fn load_epoch(&mut self, epoch: &Epoch, me: &NodeSecrets) {
        let Some(index) = epoch.registry.index_of(me.node_id) else {
            return;
        };
        for key in [&epoch.low, &epoch.high] {
            let id = key_id(key);
            if self.shares.contains_key(&id) {
                continue;
            }
            let share =
                dkg::receiver_share(&key.config, &key.transcript, &key.dealings, index, &me.dkg);
            self.shares.insert(id, share.ok());
        }
    }

    /// Forgets shares of keys no longer in use.
    pub fn retain(&mut self, epochs: &[&Epoch]) {
        let keep: Vec<CryptoHash> = epochs
            .iter()
            .flat_map(|e| [key_id(&e.low), key_id(&e.high)])
            .collect();
        self.shares.retain(|k, _| keep.contains(k));
    }
}
