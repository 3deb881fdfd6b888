//! The replicas' ServiceAccount: they never call the Kubernetes API, so it has no role and its
//! token is not mounted.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::{Names, meta};

pub fn service_account(names: &Names, owner: &OwnerReference) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(names, names.service_account(), owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
