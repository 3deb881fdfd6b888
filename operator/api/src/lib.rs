//! The Thicket operator's custom resources: `Subnet` and `Canister` in `thicket.dev/v1alpha1`.
//!
//! Types only, with their OpenAPI schema, CEL validation rules (whose messages name the field),
//! printer columns and status; no Kubernetes client. The `crdgen` binary writes them to
//! `crds/` (CI fails when `crds/` is stale).
//!
//! # Layout
//! - [`v1alpha1::subnet`]: `Subnet` (replicas, image, resources, storage, consensus timing,
//!   scheduling) and its status (phase, conditions, public key, members, the operation in
//!   flight);
//! - [`v1alpha1::canister`]: `Canister` (subnet, wasm source, init argument, controllers);
//! - [`v1alpha1::conditions`]: condition types and the rule for updating them.

// kube's `printcolumn(name = .., type_ = ..)` repeats argument names clippy takes for repeated
// attributes.
#![allow(clippy::duplicated_attributes)]

pub mod v1alpha1;

use kube::CustomResourceExt;

/// The CRDs as YAML documents, in the order `crdgen` writes them: (file name, YAML).
pub fn crds() -> Vec<(&'static str, String)> {
    let yaml = |crd| serde_yaml::to_string(&crd).unwrap_or_default();
    vec![
        ("subnets.thicket.dev.yaml", yaml(v1alpha1::Subnet::crd())),
        (
            "canisters.thicket.dev.yaml",
            yaml(v1alpha1::Canister::crd()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn crds_in_the_repository_and_the_chart_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for dir in ["crds", "charts/thicket-operator/files/crds"] {
            for (name, yaml) in super::crds() {
                let on_disk =
                    std::fs::read_to_string(root.join(dir).join(name)).unwrap_or_default();
                assert!(
                    on_disk == yaml,
                    "{dir}/{name} is stale: run `cargo run -p thicket-operator-api --bin crdgen`"
                );
            }
        }
    }
}
