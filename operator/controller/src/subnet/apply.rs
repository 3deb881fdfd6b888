//! The writing end of the pipeline: server-side apply of the built children, the subnet's
//! administrator key, and the one step the planner chose.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thicket_crypto::node_key::NodeSigningKey;
use thicket_proto::admin::Peer;
use thicket_types::registry::{NodeRecord, RegistryChange, SignedRegistryChange};
use thicket_types::{CryptoHash, NodeId, canonical_bytes};

use super::build::{Children, FIELD_MANAGER, Names, meta};
use super::dereference::{ADMIN_KEY, GENESIS_KEY};
use super::genesis::{self, GenesisError};
use super::membership::{Change, Step};
use super::observed::Observed;
use super::validate::Validated;
use crate::replica::{self, ReplicaError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("genesis: {0}")]
    Genesis(#[from] GenesisError),
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    #[error("no replica accepted the registry change: {0}")]
    NotAccepted(String),
    #[error("{0}")]
    Inconsistent(String),
}

impl ApplyError {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Kube { .. } => "KubeApi",
            ApplyError::Genesis(_) => "Genesis",
            ApplyError::Replica(_) => "Replica",
            ApplyError::NotAccepted(_) => "RegistryChangeRefused",
            ApplyError::Inconsistent(_) => "Inconsistent",
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ApplyError {
    let what = what.into();
    move |source| ApplyError::Kube { what, source }
}

async fn ssa<K>(client: &kube::Client, ns: &str, obj: &K) -> Result<(), ApplyError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let what = format!("{} {name}", K::kind(&K::DynamicType::default()));
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(kube_err(what))?;
    Ok(())
}

/// Server-side applies every child (idempotent; the operator owns these fields).
pub async fn children(
    client: &kube::Client,
    names: &Names,
    c: &Children,
) -> Result<(), ApplyError> {
    let ns = &names.namespace;
    ssa(client, ns, &c.service_account).await?;
    ssa(client, ns, &c.peers_service).await?;
    ssa(client, ns, &c.http_service).await?;
    ssa(client, ns, &c.pdb).await?;
    ssa(client, ns, &c.network_policy).await?;
    ssa(client, ns, &c.statefulset).await
}

/// The subnet's administrator key: created once, in a Secret the Subnet owns.
pub async fn ensure_admin_key(
    client: &kube::Client,
    names: &Names,
    owner: &OwnerReference,
    existing: Option<NodeSigningKey>,
) -> Result<NodeSigningKey, ApplyError> {
    if let Some(k) = existing {
        return Ok(k);
    }
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let name = names.admin_secret();
    let secret = Secret {
        metadata: meta(names, name.clone(), owner),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            ADMIN_KEY.to_string(),
            ByteString(seed.to_vec()),
        )])),
        ..Secret::default()
    };
    // Create, never overwrite: another key would lock the operator out of the subnet.
    Api::<Secret>::namespaced(client.clone(), &names.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(kube_err(format!("Secret {name}")))?;
    Ok(NodeSigningKey::from_bytes(&seed))
}

/// Runs the genesis DKG among `pods` and records it in the genesis ConfigMap.
async fn run_genesis(
    client: &kube::Client,
    names: &Names,
    owner: &OwnerReference,
    v: &Validated,
    pods: &[String],
    admin: &NodeSigningKey,
) -> Result<Vec<u8>, ApplyError> {
    let g = genesis::run(names, pods, v.params.clone(), admin.public_key()).await?;
    let encoded = genesis::encode(&g);
    let name = names.genesis_config_map();
    let cm = ConfigMap {
        metadata: meta(names, name.clone(), owner),
        immutable: Some(true),
        binary_data: Some(BTreeMap::from([(
            GENESIS_KEY.to_string(),
            ByteString(encoded.clone()),
        )])),
        ..ConfigMap::default()
    };
    // Create, never overwrite: replicas may already run from a genesis recorded before.
    Api::<ConfigMap>::namespaced(client.clone(), &names.namespace)
        .create(&PostParams::default(), &cm)
        .await
        .map_err(kube_err(format!("ConfigMap {name}")))?;
    Ok(encoded)
}

/// The members' transport URLs, for a replica to reach first.
fn peers(names: &Names, obs: &Observed) -> Vec<Peer> {
    let members = obs.view().map(|v| v.members.clone()).unwrap_or_default();
    obs.running()
        .filter(|(_, r)| members.contains(&r.node_id))
        .map(|(p, r)| Peer {
            node_id: r.node_id,
            url: names.p2p_url(&p.name),
        })
        .collect()
}

async fn start(
    names: &Names,
    obs: &Observed,
    pods: &[String],
    genesis: &[u8],
) -> Result<(), ApplyError> {
    let g = genesis::decode(genesis)?;
    let peers = peers(names, obs);
    let results = join_all(pods.iter().map(|p| {
        let url = names.admin_url(p);
        let (g, peers) = (&g, peers.clone());
        async move { replica::start(&url, g, peers).await }
    }))
    .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

/// Signs `change` and hands it to every running member; one acceptance is enough (the
/// members gossip it), none is an error.
async fn submit(
    names: &Names,
    obs: &Observed,
    change: &Change,
    base_version: u64,
    admin: &NodeSigningKey,
) -> Result<(), ApplyError> {
    let view = obs
        .view()
        .ok_or_else(|| ApplyError::Inconsistent("no replica runs".into()))?;
    let subnet_id: [u8; 32] = hex::decode(&view.subnet_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApplyError::Inconsistent("a replica reports a malformed subnet id".into())
        })?;
    let change = match change {
        Change::Add { record, pod, .. } => {
            let rec: NodeRecord = bincode::deserialize(record).map_err(|e| {
                ApplyError::Inconsistent(format!("{pod} reports a malformed node record: {e}"))
            })?;
            RegistryChange::AddNode(Box::new(rec))
        }
        Change::Remove { node_id, .. } => RegistryChange::RemoveNode(NodeId(*node_id)),
    };
    let signed = SignedRegistryChange::signed(CryptoHash(subnet_id), base_version, change, admin);
    let bytes = canonical_bytes(&signed);
    let members = &view.members;
    let targets: Vec<String> = obs
        .running()
        .filter(|(_, r)| members.contains(&r.node_id))
        .map(|(p, _)| names.admin_url(&p.name))
        .collect();
    let results = join_all(targets.iter().map(|u| replica::submit(u, bytes.clone()))).await;
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    if errors.len() == results.len() {
        return Err(ApplyError::NotAccepted(errors.join("; ")));
    }
    Ok(())
}

async fn delete<K>(client: &kube::Client, ns: &str, name: &str) -> Result<(), ApplyError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let what = format!("deleting {} {name}", K::kind(&K::DynamicType::default()));
    match Api::<K>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(what)(e)),
    }
}

/// Performs `step`; returns what happened, for an Event.
pub async fn step(
    client: &kube::Client,
    names: &Names,
    owner: &OwnerReference,
    v: &Validated,
    obs: &Observed,
    step: &Step,
    admin: &NodeSigningKey,
) -> Result<Option<(&'static str, String)>, ApplyError> {
    let ns = &names.namespace;
    Ok(match step {
        Step::Genesis(pods) => {
            let encoded = run_genesis(client, names, owner, v, pods, admin).await?;
            start(names, obs, pods, &encoded).await?;
            Some((
                "GenesisStarted",
                format!(
                    "genesis DKG among {} replicas done; replicas started",
                    pods.len()
                ),
            ))
        }
        Step::Start(pods) => {
            let genesis = obs
                .genesis
                .as_ref()
                .ok_or_else(|| ApplyError::Inconsistent("no genesis recorded".into()))?;
            start(names, obs, pods, &genesis.encoded).await?;
            Some(("ReplicaStarted", format!("started {}", pods.join(", "))))
        }
        Step::Submit {
            kind,
            change,
            base_version,
        } => {
            submit(names, obs, change, *base_version, admin).await?;
            let what = match change {
                Change::Add { node_id, pod, .. } => format!("add node {node_id} ({pod})"),
                Change::Remove { node_id, .. } => format!("remove node {node_id}"),
            };
            Some((
                "RegistryChangeSubmitted",
                format!("{kind}: {what} (registry version {base_version})"),
            ))
        }
        Step::RollPod(pod) => {
            delete::<Pod>(client, ns, pod).await?;
            Some((
                "PodRolled",
                format!("deleted {pod} to restart it on the new template"),
            ))
        }
        Step::Recreate(pod) => {
            let ordinal = names.ordinal(pod).unwrap_or_default();
            delete::<PersistentVolumeClaim>(client, ns, &names.pvc(ordinal)).await?;
            delete::<Pod>(client, ns, pod).await?;
            Some((
                "VolumeRecreated",
                format!("{pod}'s node was removed; it comes back with a new volume and keys"),
            ))
        }
        Step::Scale(n) => Some(("Scaled", format!("StatefulSet at {n} replicas"))),
        Step::Wait(_) | Step::Idle => None,
    })
}
