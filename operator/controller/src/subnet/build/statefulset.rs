//! The replica pods: a StatefulSet with one volume per pod.
//!
//! - `podManagementPolicy: Parallel`: genesis needs every pod up at once (an ordered start
//!   would wait for pod 0 to be Ready, which needs the others);
//! - `updateStrategy: OnDelete`: the operator rolls pods itself, one at a time, each only once
//!   the previous one has caught up and the subnet finalizes;
//! - volumes are deleted with the Subnet and when the set shrinks (the operator shrinks it
//!   only after the node left the registry);
//! - the pod runs as a non-root user on a read-only root filesystem, without a service
//!   account token (replicas never call the Kubernetes API).

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecurityContext, TCPSocketAction, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::{ADMIN_PORT, DATA_DIR, HTTP_PORT, Names, P2P_PORT, labels, meta, selector};
use crate::subnet::validate::Validated;

/// The non-root user of the replica image.
const REPLICA_UID: i64 = 65532;

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container(names: &Names, v: &Validated) -> Container {
    let p2p_url = format!(
        "http://$(POD_NAME).{}.$(POD_NAMESPACE).svc.cluster.local:{P2P_PORT}",
        names.peers_service()
    );
    Container {
        name: "replica".into(),
        image: Some(v.image.clone()),
        image_pull_policy: Some(v.image_pull_policy.clone()),
        args: Some(vec![
            "replica".into(),
            "pod".into(),
            "--data-dir".into(),
            DATA_DIR.into(),
            "--p2p-url".into(),
            p2p_url,
            "--listen".into(),
            format!("0.0.0.0:{P2P_PORT}"),
            "--admin-listen".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
            "--http-listen".into(),
            format!("0.0.0.0:{HTTP_PORT}"),
        ]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("info".into()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            port("p2p", P2P_PORT),
            port("admin", ADMIN_PORT),
            port("http", HTTP_PORT),
        ]),
        // Ready once it finalizes; the HTTP port only opens once the replica runs.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("http".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // The admin API answers in every phase, waiting for genesis included.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("admin".into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        resources: v.resources.clone(),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

fn volume_claim(names: &Names, v: &Validated) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(names)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: v.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(v.storage_size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

pub fn build(names: &Names, owner: &OwnerReference, v: &Validated, pods: i32) -> StatefulSet {
    let pod_meta = ObjectMeta {
        labels: Some(labels(names)),
        annotations: Some(BTreeMap::from([
            ("prometheus.io/scrape".into(), "true".into()),
            ("prometheus.io/port".into(), HTTP_PORT.to_string()),
            ("prometheus.io/path".into(), "/metrics".into()),
        ])),
        ..ObjectMeta::default()
    };
    let scheduling = &v.scheduling;
    StatefulSet {
        metadata: meta(names, names.statefulset(), owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(pods),
            service_name: Some(names.peers_service()),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Delete".into()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector(names)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(PodSpec {
                    service_account_name: Some(names.service_account()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(REPLICA_UID),
                        run_as_group: Some(REPLICA_UID),
                        fs_group: Some(REPLICA_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container(names, v)],
                    node_selector: scheduling.node_selector.clone(),
                    tolerations: scheduling.tolerations.clone(),
                    affinity: scheduling.affinity.clone(),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(names, v)]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}
