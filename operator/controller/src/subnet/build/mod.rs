//! The objects a Subnet owns, built by pure functions from the validated spec (no client):
//! golden-tested against YAML in `testdata/`.
//!
//! | object | name | why |
//! |---|---|---|
//! | StatefulSet | `<subnet>` | replica pods, one volume each |
//! | Service (headless) | `<subnet>-peers` | stable DNS names: peers' transport, the operator's admin API |
//! | Service | `<subnet>` | the IC HTTP interface for agents |
//! | PodDisruptionBudget | `<subnet>` | at most f replicas down by choice |
//! | NetworkPolicy | `<subnet>` | transport from the subnet's pods, admin API from the operator only |
//! | ServiceAccount | `<subnet>-replica` | replicas need no API access: no token mounted |

pub mod network_policy;
pub mod pdb;
pub mod rbac;
pub mod services;
pub mod statefulset;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use thicket_operator_api::v1alpha1::Subnet;

use super::validate::Validated;

/// The replica-to-replica transport (mutual TLS, registry members only).
pub const P2P_PORT: i32 = 7000;
/// The replica's admin gRPC API, for the operator only.
pub const ADMIN_PORT: i32 = 7001;
/// The IC HTTP interface, /metrics, /healthz and /readyz.
pub const HTTP_PORT: i32 = 8080;
/// Where replicas keep their keys, blocks and state.
pub const DATA_DIR: &str = "/data";
pub const FIELD_MANAGER: &str = "thicket-operator";
/// Label on the operator's own pods, which the NetworkPolicy admits to the admin port.
pub const OPERATOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "thicket-operator");

/// Names of a subnet's objects, all derived from the Subnet's name.
#[derive(Clone, Debug)]
pub struct Names {
    pub subnet: String,
    pub namespace: String,
}

impl Names {
    pub fn of(subnet: &Subnet) -> Names {
        Names {
            subnet: subnet.metadata.name.clone().unwrap_or_default(),
            namespace: subnet.metadata.namespace.clone().unwrap_or_default(),
        }
    }
    pub fn statefulset(&self) -> String {
        self.subnet.clone()
    }
    pub fn peers_service(&self) -> String {
        format!("{}-peers", self.subnet)
    }
    pub fn http_service(&self) -> String {
        self.subnet.clone()
    }
    pub fn service_account(&self) -> String {
        format!("{}-replica", self.subnet)
    }
    pub fn genesis_config_map(&self) -> String {
        format!("{}-genesis", self.subnet)
    }
    pub fn admin_secret(&self) -> String {
        format!("{}-admin", self.subnet)
    }
    pub fn pod(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.subnet)
    }
    /// The ordinal of one of this subnet's pods.
    pub fn ordinal(&self, pod: &str) -> Option<i32> {
        pod.strip_prefix(&format!("{}-", self.subnet))?.parse().ok()
    }
    pub fn pvc(&self, ordinal: i32) -> String {
        format!("data-{}", self.pod(ordinal))
    }
    fn pod_host(&self, pod: &str) -> String {
        format!(
            "{pod}.{}.{}.svc.cluster.local",
            self.peers_service(),
            self.namespace
        )
    }
    /// The admin API of one pod, through the headless Service's DNS name.
    pub fn admin_url(&self, pod: &str) -> String {
        format!("http://{}:{ADMIN_PORT}", self.pod_host(pod))
    }
    /// The transport URL of one pod (its registry record's).
    pub fn p2p_url(&self, pod: &str) -> String {
        format!("http://{}:{P2P_PORT}", self.pod_host(pod))
    }
    /// The IC HTTP interface's Service URL.
    pub fn endpoint(&self) -> String {
        format!(
            "http://{}.{}.svc.cluster.local",
            self.http_service(),
            self.namespace
        )
    }
}

/// Labels that select a subnet's replica pods.
pub fn selector(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "thicket-replica".into()),
        ("app.kubernetes.io/instance".into(), names.subnet.clone()),
    ])
}

/// Labels on every object a subnet owns.
pub fn labels(names: &Names) -> BTreeMap<String, String> {
    let mut l = selector(names);
    l.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    l.insert("app.kubernetes.io/part-of".into(), "thicket".into());
    l
}

/// Metadata of an owned object: name, namespace, labels and the controller reference.
pub fn meta(names: &Names, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The Subnet as its children's controller (deleted with it).
pub fn owner(subnet: &Subnet) -> OwnerReference {
    subnet.controller_owner_ref(&()).unwrap_or_default()
}

/// Everything a Subnet owns, built from its validated spec.
#[derive(Clone, Debug)]
pub struct Children {
    pub statefulset: StatefulSet,
    pub peers_service: Service,
    pub http_service: Service,
    pub pdb: PodDisruptionBudget,
    pub network_policy: NetworkPolicy,
    pub service_account: ServiceAccount,
}

/// The subnet's children; `pods` is the StatefulSet's replica count, which the membership
/// steps set (it follows `spec.replicas` one node at a time).
pub fn children(subnet: &Subnet, v: &Validated, pods: i32) -> Children {
    let names = Names::of(subnet);
    let owner = owner(subnet);
    Children {
        statefulset: statefulset::build(&names, &owner, v, pods),
        peers_service: services::peers(&names, &owner),
        http_service: services::http(&names, &owner),
        pdb: pdb::build(&names, &owner, v),
        network_policy: network_policy::build(&names, &owner),
        service_account: rbac::service_account(&names, &owner),
    }
}
