//! At most f replicas down by choice (drains, evictions): n − f replicas are what the subnet
//! needs to notarize and finalize.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Names, meta, selector};
use crate::subnet::validate::Validated;

pub fn build(names: &Names, owner: &OwnerReference, v: &Validated) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(names, names.statefulset(), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(v.faults)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(names)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
