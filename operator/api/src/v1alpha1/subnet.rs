//! `Subnet`: a set of replica pods running one IC-style subnet.
//!
//! The spec is what the user asks for (size, image, resources, storage, consensus timing,
//! scheduling); the status is what the operator observed and where it is in a multi-step
//! operation (genesis, adding, removing or replacing a node, rolling the pods), so that an
//! operator restarted at any point resumes the step it was in.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Byzantine-fault-tolerant subnet of replicas: n replicas tolerate f = ⌊(n−1)/3⌋ faulty
/// ones, so 4 is the smallest useful size and 3f+1 the efficient ones (4, 7, 10, 13).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "thicket.dev",
    version = "v1alpha1",
    kind = "Subnet",
    namespaced,
    status = "SubnetStatus",
    shortname = "sn",
    category = "thicket",
    derive = "PartialEq",
    doc = "A Thicket subnet: replica pods that run the IC protocol and host canisters",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Height",
        type_ = "integer",
        json_path = ".status.finalizedHeight"
    ),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.dkgEpoch"),
    printcolumn(
        name = "Public-Key",
        type_ = "string",
        json_path = ".status.publicKeyPrefix"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// Number of replicas, at least 4. Changing it adds or removes nodes one at a time
    /// through the subnet's registry; the subnet public key stays the same.
    #[x_kube(validation = Rule::new("self >= 4").message("spec.replicas must be at least 4 (n = 3f+1 replicas tolerate f faulty ones)"))]
    #[x_kube(validation = Rule::new("self <= 64").message("spec.replicas must be at most 64"))]
    pub replicas: i32,
    /// The replica image; defaults to the operator's configured replica image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Pull policy of the replica image (Always, IfNotPresent, Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Always', 'IfNotPresent', 'Never']").message("spec.imagePullPolicy must be Always, IfNotPresent or Never"))]
    pub image_pull_policy: Option<String>,
    /// Compute resources of each replica container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Each replica's persistent volume (its keys, blocks and state); fixed at creation.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Consensus timing and DKG interval; fixed at genesis.
    #[serde(default)]
    pub consensus: ConsensusSpec,
    /// Where replica pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

/// A replica's volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.storage is immutable: the replicas' volumes are claimed with it"))]
pub struct StorageSpec {
    /// Size of each replica's volume, a quantity such as 1Gi.
    #[serde(default = "default_storage_size")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.storage.size must be a positive quantity such as 1Gi"))]
    pub size: String,
    /// Storage class of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "1Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// A duration as Go writes them for Kubernetes (`300ms`, `1s`, `1m30s`), at most hours.
const DURATION_RULE: &str = "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')";

/// Consensus parameters, written into the genesis registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec.consensus is immutable: it is fixed at genesis"))]
pub struct ConsensusSpec {
    /// How long a replica waits before notarizing the lowest-ranked block (the IC's initial
    /// notary delay).
    #[serde(default = "default_notary_delay")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("spec.consensus.initialNotaryDelay must be a duration such as 300ms or 1s"))]
    pub initial_notary_delay: String,
    /// The extra wait per block-maker rank (the IC's unit delay).
    #[serde(default = "default_unit_delay")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("spec.consensus.unitDelay must be a duration such as 300ms or 1s"))]
    pub unit_delay: String,
    /// Heights per DKG interval: membership changes and key resharing take effect at interval
    /// boundaries.
    #[serde(default = "default_dkg_interval")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 10000").message("spec.consensus.dkgInterval must be between 10 and 10000 heights"))]
    pub dkg_interval: i64,
    /// Most ingress messages a block may carry: with the notary delay, it bounds the
    /// messages a subnet orders per second (1000 at 300 ms: about 3,300/s).
    #[serde(default = "default_max_ingress_per_block")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("spec.consensus.maxIngressPerBlock must be between 1 and 10000"))]
    pub max_ingress_per_block: i64,
}

fn default_notary_delay() -> String {
    "300ms".into()
}
fn default_unit_delay() -> String {
    "1s".into()
}
fn default_dkg_interval() -> i64 {
    50
}
fn default_max_ingress_per_block() -> i64 {
    1000
}

impl Default for ConsensusSpec {
    fn default() -> Self {
        ConsensusSpec {
            initial_notary_delay: default_notary_delay(),
            unit_delay: default_unit_delay(),
            dkg_interval: default_dkg_interval(),
            max_ingress_per_block: default_max_ingress_per_block(),
        }
    }
}

/// Pod scheduling overrides of the replica pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// Where the subnet is in its life.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum SubnetPhase {
    /// Replica pods are being created and generate their keys.
    #[default]
    Pending,
    /// The genesis DKG runs among the replicas.
    Genesis,
    /// The subnet finalizes blocks with all its members.
    Running,
    /// A node is being added, removed or replaced, or the pods roll.
    Reconfiguring,
    /// The subnet does not finalize, or fewer replicas than it needs are healthy.
    Degraded,
    /// The manifest cannot be acted on (see the conditions).
    Failed,
}

/// One member of the subnet's registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The node id (decimal).
    pub node_id: String,
    /// The pod that runs it.
    pub pod: String,
    /// Its finalized height when last observed.
    #[serde(default)]
    pub height: i64,
    /// Whether it holds its shares of the subnet's threshold keys.
    #[serde(default)]
    pub holds_key_shares: bool,
    /// Whether it answered and keeps up with the subnet.
    #[serde(default)]
    pub healthy: bool,
}

/// The step of a membership operation in flight, kept in status so that a restarted operator
/// resumes it (one step per reconcile).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// AddNode, RemoveNode, ReplaceNode or Roll.
    pub kind: String,
    /// The step it is at (see the operator's documentation).
    pub step: String,
    /// The pod concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The node concerned (decimal node id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// For a replacement: the node id the pod had before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_node_id: Option<String>,
    /// The registry version the submitted change applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_registry_version: Option<i64>,
    /// When the operation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// What the operator observed of the subnet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: SubnetPhase,
    /// Ready, Progressing, Degraded and Reconfiguring.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The subnet public key, hex of its DER encoding: the root key IC agents verify
    /// certificates with. It never changes while nodes come and go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The first 16 hex digits of the raw public key (after the DER header), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_prefix: Option<String>,
    /// The subnet id as IC tools name subnets: the textual principal of its public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// The id of the subnet's registry (hex), chosen at genesis: what registry changes are
    /// bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_id: Option<String>,
    /// The IC HTTP interface's Service URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// A canister id in the subnet's range, for agents creating canisters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_canister_id: Option<String>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub finalized_height: i64,
    #[serde(default)]
    pub dkg_epoch: i64,
    #[serde(default)]
    pub registry_version: i64,
    /// The registry's members.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// The membership operation in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
    /// The image the replica pods were last rolled to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Advice about the spec that does not stop the subnet (for example a size that is not
    /// 3f+1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
