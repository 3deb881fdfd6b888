//! Reads what exists for a subnet: its StatefulSet, pods, genesis ConfigMap, and each
//! replica's admin status (concurrently, each with a deadline). Errors reading the Kubernetes
//! API fail the reconcile (and back off); a replica that does not answer is an observation.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod as KubePod, Secret};
use kube::Api;
use kube::api::ListParams;
use thicket_crypto::node_key::NodeSigningKey;

use super::build::{Names, selector};
use super::genesis;
use super::observed::{GenesisRecord, Observed, Pod, Replica};
use crate::replica;

/// The genesis ConfigMap's key holding the encoded `Genesis`.
pub const GENESIS_KEY: &str = "genesis.pb";
/// The admin Secret's key holding the Ed25519 seed.
pub const ADMIN_KEY: &str = "admin.key";

#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("reading {what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error(transparent)]
    Genesis(#[from] genesis::GenesisError),
    #[error("Secret {0} does not hold a 32-byte {ADMIN_KEY}")]
    AdminKey(String),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DereferenceError {
    let what = what.into();
    move |source| DereferenceError::Kube { what, source }
}

fn pod_ready(p: &KubePod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn observe_pod(names: &Names, p: &KubePod) -> Pod {
    let name = p.metadata.name.clone().unwrap_or_default();
    let running = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
    let (replica, unreachable) = if running {
        match replica::status(&names.admin_url(&name)).await {
            Ok(s) => match Replica::from_status(&s) {
                Some(r) => (Some(r), None),
                None => (None, Some("its status does not parse".to_string())),
            },
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, Some("not running".to_string()))
    };
    Pod {
        revision: p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash").cloned()),
        ready: pod_ready(p),
        terminating: p.metadata.deletion_timestamp.is_some(),
        name,
        replica,
        unreachable,
    }
}

/// Everything observed of the subnet named by `names`.
pub async fn observe(client: &kube::Client, names: &Names) -> Result<Observed, DereferenceError> {
    let ns = &names.namespace;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get_opt(&names.statefulset())
        .await
        .map_err(kube_err(format!("StatefulSet {}", names.statefulset())))?;
    let selector = selector(names)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<KubePod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err("pods"))?;
    let observed = join_all(pods.items.iter().map(|p| observe_pod(names, p))).await;
    let pods: BTreeMap<i32, Pod> = observed
        .into_iter()
        .filter_map(|p| names.ordinal(&p.name).map(|i| (i, p)))
        .collect();
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&names.genesis_config_map())
        .await
        .map_err(kube_err(format!(
            "ConfigMap {}",
            names.genesis_config_map()
        )))?;
    let genesis = match cm
        .and_then(|c| c.binary_data)
        .and_then(|mut d| d.remove(GENESIS_KEY))
    {
        Some(bytes) => {
            let g = genesis::decode(&bytes.0)?;
            Some(GenesisRecord {
                members: genesis::members(&g).into_iter().collect(),
                encoded: bytes.0,
            })
        }
        None => None,
    };
    Ok(Observed {
        statefulset_replicas: sts.as_ref().and_then(|s| s.spec.as_ref()?.replicas),
        update_revision: sts
            .as_ref()
            .and_then(|s| s.status.as_ref()?.update_revision.clone()),
        pods,
        genesis,
    })
}

/// The subnet's administrator key, if its Secret exists.
pub async fn admin_key(
    client: &kube::Client,
    names: &Names,
) -> Result<Option<NodeSigningKey>, DereferenceError> {
    let name = names.admin_secret();
    let secret = Api::<Secret>::namespaced(client.clone(), &names.namespace)
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("Secret {name}")))?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let seed: [u8; 32] = secret
        .data
        .and_then(|mut d| d.remove(ADMIN_KEY))
        .and_then(|b| b.0.try_into().ok())
        .ok_or(DereferenceError::AdminKey(name))?;
    Ok(Some(NodeSigningKey::from_bytes(&seed)))
}
