//! What the operator saw of a subnet in one reconcile: its StatefulSet, its pods and what each
//! replica's admin API said. Filled by [`super::dereference`]; read by the pure planner
//! ([`super::membership`]) and status ([`super::status`]).

use std::collections::{BTreeMap, BTreeSet};

use thicket_proto::admin::{Phase, StatusReply};

/// A replica's view, from its admin API.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Replica {
    pub node_id: u64,
    pub phase: ReplicaPhase,
    /// Its public node record (canonical encoding), what an AddNode change carries.
    pub record: Vec<u8>,
    pub finalized_height: u64,
    /// Members of the epoch in force.
    pub members: BTreeSet<u64>,
    /// Members of the registry being prepared (every ordered change applied).
    pub pending_members: BTreeSet<u64>,
    pub registry_version: u64,
    pub pending_registry_version: u64,
    pub dkg_epoch: u64,
    pub holds_key_shares: bool,
    pub public_key: Vec<u8>,
    pub subnet_id: String,
    pub genesis_hash: Vec<u8>,
    /// A canister id in the subnet's range (textual).
    pub effective_canister_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplicaPhase {
    #[default]
    WaitingForGenesis,
    Running,
    Removed,
}

impl Replica {
    /// Reads a Status reply; `None` if it does not parse (an older or faulty replica).
    pub fn from_status(s: &StatusReply) -> Option<Replica> {
        let ids = |v: &[String]| v.iter().map(|m| m.parse().ok()).collect::<Option<_>>();
        Some(Replica {
            node_id: s.node_id.parse().ok()?,
            phase: match s.phase() {
                Phase::WaitingForGenesis => ReplicaPhase::WaitingForGenesis,
                Phase::Removed => ReplicaPhase::Removed,
                Phase::Running | Phase::Unspecified => ReplicaPhase::Running,
            },
            record: s.node_record.clone(),
            finalized_height: s.finalized_height,
            members: ids(&s.members)?,
            pending_members: ids(&s.pending_members)?,
            registry_version: s.registry_version,
            pending_registry_version: s.pending_registry_version,
            dkg_epoch: s.dkg_epoch,
            holds_key_shares: s.holds_current_key_shares,
            public_key: s.subnet_public_key.clone(),
            subnet_id: s.subnet_id.clone(),
            genesis_hash: s.genesis_hash.clone(),
            effective_canister_id: s.effective_canister_id.clone(),
        })
    }
}

/// One pod of the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Pod {
    pub name: String,
    /// Kubernetes says it is Ready (it finalizes).
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Its `controller-revision-hash` label: the pod template it was made from.
    pub revision: Option<String>,
    /// What its admin API said, if it answered.
    pub replica: Option<Replica>,
    /// Why its admin API did not answer.
    pub unreachable: Option<String>,
}

/// The genesis the operator ran (its ConfigMap), if any.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GenesisRecord {
    /// Node ids of the genesis registry.
    pub members: BTreeSet<u64>,
    /// The encoded `Genesis` message handed to replicas.
    pub encoded: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observed {
    /// The StatefulSet's replica count, if it exists.
    pub statefulset_replicas: Option<i32>,
    /// The StatefulSet's current pod template revision.
    pub update_revision: Option<String>,
    /// Pods by ordinal.
    pub pods: BTreeMap<i32, Pod>,
    pub genesis: Option<GenesisRecord>,
}

impl Observed {
    /// Running replicas' views.
    pub fn running(&self) -> impl Iterator<Item = (&Pod, &Replica)> {
        self.pods.values().filter_map(|p| {
            p.replica
                .as_ref()
                .filter(|r| r.phase == ReplicaPhase::Running)
                .map(|r| (p, r))
        })
    }

    /// The subnet as the most advanced running replica sees it (the newest pending registry,
    /// then the highest finalized height).
    pub fn view(&self) -> Option<&Replica> {
        self.running()
            .map(|(_, r)| r)
            .max_by_key(|r| (r.pending_registry_version, r.finalized_height))
    }

    /// The highest finalized height any replica reports.
    pub fn max_height(&self) -> u64 {
        self.running()
            .map(|(_, r)| r.finalized_height)
            .max()
            .unwrap_or(0)
    }

    /// The pod that runs `node`, if one reports it.
    pub fn pod_of(&self, node: u64) -> Option<&Pod> {
        self.pods
            .values()
            .find(|p| p.replica.as_ref().is_some_and(|r| r.node_id == node))
    }
}
