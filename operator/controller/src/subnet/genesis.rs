//! The genesis DKG, relayed by the operator: it never sees a secret.
//!
//! 1. every pod has created its keys and reports its public node record;
//! 2. the operator writes the genesis registry (a fresh subnet id, the records, the consensus
//!    parameters, the subnet's administrator public key);
//! 3. each member deals (its dealings are encrypted to the other members' keys);
//! 4. each member checks every dealing and complains about those that fail for it;
//! 5. the public `Genesis` (registry, dealings, complaints) is stored in the subnet's genesis
//!    ConfigMap, and every member is started from it: each derives the same genesis block and
//!    keys itself, excluding dealings that fail public checks or have a justified complaint.
//!
//! Steps 1–4 leave nothing behind, so an operator stopped among them runs them again; once the
//! ConfigMap exists, the same genesis is handed out whenever a member still waits.

use std::collections::BTreeMap;

use futures::future::try_join_all;
use prost::Message;
use rand_core::{OsRng, RngCore};
use thicket_crypto::node_key::NodePublicKey;
use thicket_proto::admin::{Genesis, NodeComplaints, NodeDealings};
use thicket_types::registry::{NodeRecord, Registry, SubnetParams};
use thicket_types::{CryptoHash, NodeId, canonical_bytes};

use super::build::Names;
use crate::replica::{self, ReplicaError};

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{pod} reports a node record that does not decode: {reason}")]
    Record { pod: String, reason: String },
    #[error("{pod} and another pod report the same node id {node}")]
    DuplicateNode { pod: String, node: u64 },
    #[error("the genesis ConfigMap does not hold a genesis: {0}")]
    Corrupt(String),
}

/// The genesis registry (version 0) of `records`.
pub fn registry(
    subnet_id: [u8; 32],
    records: BTreeMap<NodeId, NodeRecord>,
    params: SubnetParams,
    admin: NodePublicKey,
) -> Registry {
    Registry {
        subnet_id: CryptoHash(subnet_id),
        version: 0,
        members: records,
        params,
        admin_key: admin,
    }
}

/// The node records of `pods` (with the pod of each), from their admin APIs.
async fn records(
    names: &Names,
    pods: &[String],
) -> Result<BTreeMap<NodeId, (NodeRecord, String)>, GenesisError> {
    let replies = try_join_all(pods.iter().map(|p| {
        let url = names.admin_url(p);
        async move { replica::status(&url).await }
    }))
    .await?;
    let mut out = BTreeMap::new();
    for (pod, s) in pods.iter().zip(replies) {
        let rec: NodeRecord =
            bincode::deserialize(&s.node_record).map_err(|e| GenesisError::Record {
                pod: pod.clone(),
                reason: e.to_string(),
            })?;
        let node = rec.node_id.0;
        if out.insert(rec.node_id, (rec, pod.clone())).is_some() {
            return Err(GenesisError::DuplicateNode {
                pod: pod.clone(),
                node,
            });
        }
    }
    Ok(out)
}

/// Runs steps 1–4 among `pods` and returns the public genesis.
pub async fn run(
    names: &Names,
    pods: &[String],
    params: SubnetParams,
    admin: NodePublicKey,
) -> Result<Genesis, GenesisError> {
    let found = records(names, pods).await?;
    // Members in node-id order, as the registry orders them.
    let ids: Vec<u64> = found.keys().map(|n| n.0).collect();
    let urls: Vec<String> = found.values().map(|(_, p)| names.admin_url(p)).collect();
    let records = found.into_iter().map(|(n, (r, _))| (n, r)).collect();
    let mut subnet_id = [0u8; 32];
    OsRng.fill_bytes(&mut subnet_id);
    let registry = canonical_bytes(&registry(subnet_id, records, params, admin));
    let dealt = try_join_all(urls.iter().map(|u| replica::deal(u, &registry))).await?;
    let dealings: Vec<NodeDealings> = ids
        .iter()
        .zip(dealt)
        .map(|(n, d)| NodeDealings {
            node_id: *n,
            dealings: d,
        })
        .collect();
    let complained = try_join_all(
        urls.iter()
            .map(|u| replica::complain(u, &registry, &dealings)),
    )
    .await?;
    let complaints = ids
        .iter()
        .zip(complained)
        .map(|(n, c)| NodeComplaints {
            node_id: *n,
            complaints: c,
        })
        .collect();
    Ok(Genesis {
        registry,
        dealings,
        complaints,
    })
}

/// The genesis members' node ids.
pub fn members(genesis: &Genesis) -> Vec<u64> {
    genesis.dealings.iter().map(|d| d.node_id).collect()
}

pub fn encode(genesis: &Genesis) -> Vec<u8> {
    genesis.encode_to_vec()
}

pub fn decode(bytes: &[u8]) -> Result<Genesis, GenesisError> {
    Genesis::decode(bytes).map_err(|e| GenesisError::Corrupt(e.to_string()))
}
