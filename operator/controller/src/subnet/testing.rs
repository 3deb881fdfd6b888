//! Fixtures for the subnet's unit tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use thicket_operator_api::v1alpha1::{Subnet, SubnetSpec};

/// A Subnet as the API server returns it (uid, generation), with default settings.
pub fn subnet(name: &str, replicas: i32) -> Subnet {
    let spec: SubnetSpec =
        serde_json::from_value(serde_json::json!({ "replicas": replicas })).expect("a spec");
    let mut s = Subnet::new(name, spec);
    s.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("team-a".into()),
        uid: Some("5f0c1d2e-0000-4000-8000-000000000001".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    s
}
