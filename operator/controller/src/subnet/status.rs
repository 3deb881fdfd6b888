//! The Subnet's status, computed (pure) from the observations, the step taken and the status
//! before; then written to the status subresource.
//!
//! - `Ready`: the subnet finalizes with at least n − f healthy members;
//! - `Degraded`: some member is unhealthy (down, unreachable, or behind);
//! - `Reconfiguring`: a membership operation is in flight;
//! - `Progressing`: the operator has work left towards the spec.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use thicket_operator_api::v1alpha1::conditions::{
    self, DEGRADED, PROGRESSING, READY, RECONFIGURING,
};
use thicket_operator_api::v1alpha1::{
    MemberStatus, OperationStatus, Subnet, SubnetPhase, SubnetStatus,
};

use super::build::{FIELD_MANAGER, Names};
use super::membership::{ADD_NODE, CAUGHT_UP_LAG, Change, REMOVE_NODE, REPLACE_NODE, ROLL, Step};
use super::observed::{Observed, ReplicaPhase};

/// Length of the DER header of a BLS12-381 G2 public key (the IC's root key format); the raw
/// 96-byte key follows.
const DER_HEADER_LEN: usize = 37;

/// The operation in flight after `step`.
fn operation(
    step: &Step,
    prev: Option<&OperationStatus>,
    pods: i32,
    now: &Time,
) -> Option<OperationStatus> {
    let started = Some(now.clone());
    match step {
        Step::Submit {
            kind,
            change,
            base_version,
        } => {
            let (node, pod) = match change {
                Change::Add { node_id, pod, .. } => (*node_id, Some(pod.clone())),
                Change::Remove { node_id, pod } => (*node_id, pod.clone()),
            };
            let old = prev
                .filter(|p| p.kind == REPLACE_NODE && *kind == REPLACE_NODE)
                .and_then(|p| p.old_node_id.clone().or(p.node_id.clone()))
                .filter(|_| matches!(change, Change::Add { .. }));
            Some(OperationStatus {
                kind: (*kind).into(),
                step: "ChangeSubmitted".into(),
                pod,
                node_id: Some(node.to_string()),
                old_node_id: old,
                base_registry_version: Some(*base_version as i64),
                started_at: started,
            })
        }
        Step::RollPod(pod) => Some(OperationStatus {
            kind: ROLL.into(),
            step: "PodDeleted".into(),
            pod: Some(pod.clone()),
            started_at: started,
            ..OperationStatus::default()
        }),
        Step::Recreate(pod) => Some(OperationStatus {
            kind: REPLACE_NODE.into(),
            step: "VolumeDeleted".into(),
            pod: Some(pod.clone()),
            started_at: started,
            ..OperationStatus::default()
        }),
        // Growing the StatefulSet for genesis is no membership operation.
        Step::Scale(n) if prev.is_none() && *n != pods && pods > 0 => Some(OperationStatus {
            kind: if *n > pods { ADD_NODE } else { REMOVE_NODE }.into(),
            step: "StatefulSetScaled".into(),
            started_at: started,
            ..OperationStatus::default()
        }),
        Step::Start(pods) if prev.is_some() => prev.cloned().map(|mut op| {
            op.step = "ReplicaStarted".into();
            op.pod = pods.first().cloned().or(op.pod);
            op
        }),
        Step::Idle => None,
        _ => prev.cloned(),
    }
}

/// The status after this reconcile.
pub fn compute(
    subnet: &Subnet,
    obs: &Observed,
    step: &Step,
    warnings: Vec<String>,
    now: &Time,
) -> SubnetStatus {
    let prev = subnet.status.clone().unwrap_or_default();
    let names = Names::of(subnet);
    let generation = subnet.metadata.generation;
    let view = obs.view();
    let max = obs.max_height();
    let mut s = SubnetStatus {
        observed_generation: generation,
        replicas: subnet.spec.replicas,
        ready_replicas: obs.pods.values().filter(|p| p.ready).count() as i32,
        warnings,
        conditions: prev.conditions.clone(),
        ..SubnetStatus::default()
    };
    let pods = obs.statefulset_replicas.unwrap_or(0);
    s.operation = operation(step, prev.operation.as_ref(), pods, now);
    let in_force: BTreeSet<u64> = view.map(|v| v.members.clone()).unwrap_or_default();
    let mut healthy = 0;
    for node in &in_force {
        let pod = obs.pod_of(*node);
        let r = pod.and_then(|p| p.replica.as_ref());
        let ok = r.is_some_and(|r| {
            r.phase == ReplicaPhase::Running && r.finalized_height + CAUGHT_UP_LAG >= max
        }) && pod.is_some_and(|p| p.ready);
        healthy += usize::from(ok);
        s.members.push(MemberStatus {
            node_id: node.to_string(),
            pod: pod.map(|p| p.name.clone()).unwrap_or_else(|| {
                // Its pod is gone or does not answer: keep the pod status last saw.
                prev.members
                    .iter()
                    .find(|m| m.node_id == node.to_string())
                    .map(|m| m.pod.clone())
                    .unwrap_or_default()
            }),
            height: r.map_or(0, |r| r.finalized_height as i64),
            holds_key_shares: r.is_some_and(|r| r.holds_key_shares),
            healthy: ok,
        });
    }
    if let Some(v) = view {
        let hex_key = hex::encode(&v.public_key);
        s.public_key_prefix = v
            .public_key
            .get(DER_HEADER_LEN..DER_HEADER_LEN + 8)
            .map(hex::encode);
        s.public_key = Some(hex_key).filter(|k| !k.is_empty());
        s.subnet_id = Some(candid::Principal::self_authenticating(&v.public_key).to_text())
            .filter(|_| !v.public_key.is_empty());
        s.registry_id = Some(v.subnet_id.clone());
        s.finalized_height = max as i64;
        s.dkg_epoch = v.dkg_epoch as i64;
        s.registry_version = v.registry_version as i64;
        s.endpoint = Some(names.endpoint());
        s.effective_canister_id = Some(v.effective_canister_id.clone())
            .filter(|id| !id.is_empty())
            .or(prev.effective_canister_id.clone());
    } else {
        // Nothing answers now: what was known stays known.
        s.public_key = prev.public_key.clone();
        s.public_key_prefix = prev.public_key_prefix.clone();
        s.subnet_id = prev.subnet_id.clone();
        s.registry_id = prev.registry_id.clone();
        s.endpoint = prev.endpoint.clone();
        s.effective_canister_id = prev.effective_canister_id.clone();
        s.finalized_height = prev.finalized_height;
        s.dkg_epoch = prev.dkg_epoch;
        s.registry_version = prev.registry_version;
        if obs.genesis.is_some() || !prev.members.is_empty() {
            s.members = prev.members.clone();
        }
    }
    s.current_revision = obs
        .update_revision
        .clone()
        .filter(|rev| obs.pods.values().all(|p| p.revision.as_ref() == Some(rev)));
    let n = in_force.len();
    let f = n.saturating_sub(1) / 3;
    let finalizing = max > 0 && n > 0 && healthy >= n - f;
    let busy = !matches!(step, Step::Idle);
    s.phase = if obs.genesis.is_none() && view.is_none() {
        if matches!(step, Step::Genesis(_)) {
            SubnetPhase::Genesis
        } else {
            SubnetPhase::Pending
        }
    } else if view.is_none() || (!finalizing && max == 0) {
        SubnetPhase::Genesis
    } else if !finalizing {
        SubnetPhase::Degraded
    } else if s.operation.is_some() || busy {
        SubnetPhase::Reconfiguring
    } else {
        SubnetPhase::Running
    };
    let g = generation;
    let c = &mut s.conditions;
    let (ready_reason, ready_msg) = if finalizing {
        (
            "Finalizing",
            format!("{healthy} of {n} members healthy at height {max}"),
        )
    } else if view.is_none() {
        ("NotStarted", "no replica runs yet".to_string())
    } else {
        (
            "NotFinalizing",
            format!(
                "{healthy} of {n} members healthy; the subnet needs {}",
                n - f
            ),
        )
    };
    conditions::set(c, READY, finalizing, ready_reason, ready_msg, g, now);
    let unhealthy: Vec<&str> = s
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.pod.as_str())
        .collect();
    conditions::set(
        c,
        DEGRADED,
        view.is_some() && !unhealthy.is_empty(),
        if unhealthy.is_empty() {
            "AllMembersHealthy"
        } else {
            "MembersUnhealthy"
        },
        if unhealthy.is_empty() {
            String::new()
        } else {
            format!("unhealthy: {}", unhealthy.join(", "))
        },
        g,
        now,
    );
    let op_msg = s
        .operation
        .as_ref()
        .map(|o| format!("{} {}: {}", o.kind, o.pod.as_deref().unwrap_or(""), o.step))
        .unwrap_or_default();
    conditions::set(
        c,
        RECONFIGURING,
        s.operation.is_some(),
        s.operation.as_ref().map_or("Idle", |o| o.kind.as_str()),
        op_msg,
        g,
        now,
    );
    let (reason, msg) = match step {
        Step::Idle => ("AtSpec", String::new()),
        Step::Wait(why) => ("Waiting", why.clone()),
        Step::Genesis(_) => ("Genesis", "running the genesis DKG".into()),
        Step::Start(p) => ("StartingReplicas", p.join(", ")),
        Step::Scale(n) => ("Scaling", format!("StatefulSet to {n} pods")),
        Step::Submit { kind, .. } => ("RegistryChange", (*kind).to_string()),
        Step::RollPod(p) => ("Rolling", p.clone()),
        Step::Recreate(p) => ("RecreatingVolume", p.clone()),
    };
    conditions::set(c, PROGRESSING, busy, reason, msg, g, now);
    s
}

/// The status of a Subnet whose spec cannot be acted on.
pub fn invalid(subnet: &Subnet, error: &str, now: &Time) -> SubnetStatus {
    let mut s = subnet.status.clone().unwrap_or_default();
    s.observed_generation = subnet.metadata.generation;
    s.phase = SubnetPhase::Failed;
    let g = subnet.metadata.generation;
    conditions::set(
        &mut s.conditions,
        READY,
        false,
        "InvalidSpec",
        error,
        g,
        now,
    );
    conditions::set(
        &mut s.conditions,
        PROGRESSING,
        false,
        "InvalidSpec",
        error,
        g,
        now,
    );
    s
}

/// Writes `status` to the status subresource.
pub async fn patch(
    client: &kube::Client,
    names: &Names,
    status: &SubnetStatus,
) -> Result<(), kube::Error> {
    let api = Api::<Subnet>::namespaced(client.clone(), &names.namespace);
    let body = serde_json::json!({
        "apiVersion": "thicket.dev/v1alpha1",
        "kind": "Subnet",
        "status": status,
    });
    api.patch_status(
        &names.subnet,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subnet::membership::Change;
    use crate::subnet::observed::{GenesisRecord, Pod, Replica};
    use crate::subnet::testing::subnet;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
    }

    fn running(node: u64, height: u64) -> Replica {
        Replica {
            node_id: node,
            phase: ReplicaPhase::Running,
            finalized_height: height,
            members: (0..4).collect(),
            pending_members: (0..4).collect(),
            holds_key_shares: true,
            public_key: vec![7; DER_HEADER_LEN + 96],
            subnet_id: "ab".into(),
            effective_canister_id: "i3flu-baaaa-aaaai-aaaaa-cai".into(),
            ..Replica::default()
        }
    }

    fn observed(heights: [Option<u64>; 4]) -> Observed {
        Observed {
            statefulset_replicas: Some(4),
            update_revision: Some("r1".into()),
            pods: (0..4)
                .map(|i| {
                    let r = heights[i as usize].map(|h| running(i as u64, h));
                    (
                        i,
                        Pod {
                            name: format!("alpha-{i}"),
                            ready: r.is_some(),
                            revision: Some("r1".into()),
                            replica: r,
                            ..Pod::default()
                        },
                    )
                })
                .collect(),
            genesis: Some(GenesisRecord::default()),
        }
    }

    #[test]
    fn a_subnet_finalizing_with_every_member_is_ready_and_running() {
        let s = compute(
            &subnet("alpha", 4),
            &observed([Some(50); 4]),
            &Step::Idle,
            vec![],
            &at(5),
        );
        assert_eq!(s.phase, SubnetPhase::Running);
        assert!(conditions::is_true(&s.conditions, READY));
        assert!(!conditions::is_true(&s.conditions, DEGRADED));
        assert_eq!(s.members.len(), 4);
        assert!(s.members.iter().all(|m| m.healthy && m.holds_key_shares));
        assert_eq!(s.public_key_prefix.as_deref(), Some("0707070707070707"));
        // The subnet id as IC tools name it (the principal of its key); the registry's apart.
        let key = vec![7; DER_HEADER_LEN + 96];
        assert_eq!(
            s.subnet_id,
            Some(candid::Principal::self_authenticating(&key).to_text())
        );
        assert_eq!(s.registry_id.as_deref(), Some("ab"));
        assert_eq!(
            s.endpoint.as_deref(),
            Some("http://alpha.team-a.svc.cluster.local")
        );
        assert_eq!(s.current_revision.as_deref(), Some("r1"));
    }

    #[test]
    fn one_member_down_degrades_two_stop_finalization() {
        let one = compute(
            &subnet("alpha", 4),
            &observed([Some(50), Some(50), Some(50), None]),
            &Step::Idle,
            vec![],
            &at(5),
        );
        assert!(
            conditions::is_true(&one.conditions, READY),
            "n − f = 3 healthy"
        );
        assert!(conditions::is_true(&one.conditions, DEGRADED));
        assert_eq!(
            one.members[3].pod, "",
            "a member no pod reports and status never placed"
        );
        let two = compute(
            &subnet("alpha", 4),
            &observed([Some(50), Some(50), None, None]),
            &Step::Idle,
            vec![],
            &at(5),
        );
        assert!(!conditions::is_true(&two.conditions, READY));
        assert_eq!(two.phase, SubnetPhase::Degraded);
    }

    #[test]
    fn a_submitted_change_is_recorded_as_the_operation_in_flight() {
        let step = Step::Submit {
            kind: crate::subnet::membership::ADD_NODE,
            change: Change::Add {
                pod: "alpha-4".into(),
                node_id: 9,
                record: vec![],
            },
            base_version: 3,
        };
        let s = compute(
            &subnet("alpha", 5),
            &observed([Some(50); 4]),
            &step,
            vec![],
            &at(5),
        );
        let op = s.operation.expect("an operation");
        assert_eq!(op.kind, "AddNode");
        assert_eq!(op.node_id.as_deref(), Some("9"));
        assert_eq!(op.base_registry_version, Some(3));
        assert_eq!(op.started_at, Some(at(5)));
        assert_eq!(s.phase, SubnetPhase::Reconfiguring);
        assert!(conditions::is_true(&s.conditions, RECONFIGURING));
    }

    #[test]
    fn growing_the_statefulset_for_genesis_is_no_operation() {
        let obs = Observed::default();
        let s = compute(&subnet("alpha", 4), &obs, &Step::Scale(4), vec![], &at(5));
        assert_eq!(s.operation, None);
        assert_eq!(s.phase, SubnetPhase::Pending);
    }
}
