//! The planner's exact next step for given observations and status.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use thicket_operator_api::v1alpha1::{MemberStatus, OperationStatus, SubnetStatus};

use super::*;
use crate::subnet::observed::{GenesisRecord, Observed, Pod, Replica, ReplicaPhase};

const NOW: i64 = 1_000_000;

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
}

fn ids(v: &[u64]) -> BTreeSet<u64> {
    v.iter().copied().collect()
}

fn waiting(node: u64) -> Replica {
    Replica {
        node_id: node,
        phase: ReplicaPhase::WaitingForGenesis,
        record: vec![node as u8],
        ..Replica::default()
    }
}

/// A running replica that sees `members` in force and `pending` being prepared.
fn running(node: u64, members: &[u64], pending: &[u64], version: u64) -> Replica {
    Replica {
        node_id: node,
        phase: ReplicaPhase::Running,
        record: vec![node as u8],
        finalized_height: 100,
        members: ids(members),
        pending_members: ids(pending),
        registry_version: version,
        pending_registry_version: version + u64::from(members != pending),
        holds_key_shares: members.contains(&node),
        ..Replica::default()
    }
}

fn pod(ordinal: i32, replica: Option<Replica>) -> (i32, Pod) {
    (
        ordinal,
        Pod {
            name: format!("a-{ordinal}"),
            ready: replica
                .as_ref()
                .is_some_and(|r| r.phase == ReplicaPhase::Running),
            terminating: false,
            revision: Some("r1".into()),
            replica,
            unreachable: None,
        },
    )
}

fn genesis(members: &[u64]) -> Option<GenesisRecord> {
    Some(GenesisRecord {
        members: ids(members),
        encoded: vec![1],
    })
}

/// A steady subnet of nodes 10.. on pods a-0.., all members.
fn steady(n: i32) -> Observed {
    let members: Vec<u64> = (0..n as u64).map(|i| 10 + i).collect();
    Observed {
        statefulset_replicas: Some(n),
        update_revision: Some("r1".into()),
        pods: (0..n)
            .map(|i| pod(i, Some(running(10 + i as u64, &members, &members, 3))))
            .collect(),
        genesis: genesis(&members[..4.min(members.len())]),
    }
}

fn status_of(obs: &Observed) -> SubnetStatus {
    SubnetStatus {
        members: obs
            .pods
            .values()
            .filter_map(|p| {
                p.replica.as_ref().map(|r| MemberStatus {
                    node_id: r.node_id.to_string(),
                    pod: p.name.clone(),
                    ..MemberStatus::default()
                })
            })
            .collect(),
        ..SubnetStatus::default()
    }
}

fn op(kind: &str, node: u64, base: u64, started: i64) -> Option<OperationStatus> {
    Some(OperationStatus {
        kind: kind.into(),
        step: "ChangeSubmitted".into(),
        node_id: Some(node.to_string()),
        base_registry_version: Some(base as i64),
        started_at: Some(at(started)),
        ..OperationStatus::default()
    })
}

#[test]
fn genesis_grows_the_statefulset_then_waits_for_every_pods_keys() {
    let mut obs = Observed::default();
    let none = SubnetStatus::default();
    assert_eq!(next_step(4, &obs, &none, NOW), Step::Scale(4));
    obs.statefulset_replicas = Some(4);
    obs.pods = (0..3).map(|i| pod(i, Some(waiting(i as u64)))).collect();
    obs.pods.extend([pod(3, None)]);
    assert_eq!(
        next_step(4, &obs, &none, NOW),
        Step::Wait("3 of 4 replicas have created their keys and wait for genesis".into())
    );
    obs.pods.extend([pod(3, Some(waiting(3)))]);
    let all: Vec<String> = (0..4).map(|i| format!("a-{i}")).collect();
    assert_eq!(next_step(4, &obs, &none, NOW), Step::Genesis(all.clone()));
    // The genesis is recorded: its members are started, again after a crash half-way.
    obs.genesis = genesis(&[0, 1, 2, 3]);
    assert_eq!(next_step(4, &obs, &none, NOW), Step::Start(all));
    obs.pods.insert(
        0,
        pod(0, Some(running(0, &[0, 1, 2, 3], &[0, 1, 2, 3], 0))).1,
    );
    assert_eq!(
        next_step(4, &obs, &none, NOW),
        Step::Start(vec!["a-1".into(), "a-2".into(), "a-3".into()])
    );
}

#[test]
fn a_steady_subnet_at_its_size_is_idle() {
    let obs = steady(4);
    assert_eq!(next_step(4, &obs, &status_of(&obs), NOW), Step::Idle);
}

#[test]
fn scale_up_grows_by_one_pod_starts_it_then_adds_its_node() {
    let mut obs = steady(4);
    let status = status_of(&obs);
    assert_eq!(next_step(5, &obs, &status, NOW), Step::Scale(5));
    obs.statefulset_replicas = Some(5);
    assert_eq!(
        next_step(5, &obs, &status, NOW),
        Step::Wait("pod 4 does not answer yet".into())
    );
    obs.pods.extend([pod(4, Some(waiting(77)))]);
    assert_eq!(
        next_step(5, &obs, &status, NOW),
        Step::Start(vec!["a-4".into()])
    );
    obs.pods.extend([pod(4, Some(running(77, &[], &[], 0)))]);
    let add = Step::Submit {
        kind: ADD_NODE,
        change: Change::Add {
            pod: "a-4".into(),
            node_id: 77,
            record: vec![77],
        },
        base_version: 3,
    };
    assert_eq!(next_step(5, &obs, &status, NOW), add);
    // Submitted moments ago: wait for it; long ago and still not ordered: submit again.
    let mut status = status;
    status.operation = op(ADD_NODE, 77, 3, NOW - 5);
    assert!(matches!(next_step(5, &obs, &status, NOW), Step::Wait(_)));
    status.operation = op(ADD_NODE, 77, 3, NOW - RESUBMIT_AFTER_SECS);
    assert_eq!(next_step(5, &obs, &status, NOW), add);
}

#[test]
fn a_joiner_counts_once_its_change_is_in_force_and_it_holds_its_shares() {
    let mut obs = steady(5);
    let old: Vec<u64> = (10..14).collect();
    let new: Vec<u64> = (10..15).collect();
    for (i, p) in obs.pods.iter_mut() {
        p.replica = Some(running(10 + *i as u64, &old, &new, 3));
    }
    let status = status_of(&obs);
    assert_eq!(
        next_step(5, &obs, &status, NOW),
        Step::Wait("a registry change takes effect at the next DKG interval boundary".into())
    );
    for (i, p) in obs.pods.iter_mut() {
        let mut r = running(10 + *i as u64, &new, &new, 4);
        r.holds_key_shares = *i != 4;
        p.replica = Some(r);
    }
    assert_eq!(
        next_step(5, &obs, &status, NOW),
        Step::Wait("a-4 catches up and receives its key shares".into())
    );
    obs.pods
        .get_mut(&4)
        .and_then(|p| p.replica.as_mut())
        .expect("a-4")
        .holds_key_shares = true;
    assert_eq!(next_step(5, &obs, &status, NOW), Step::Idle);
}

#[test]
fn scale_down_removes_the_node_before_its_pod_and_volume() {
    let mut obs = steady(5);
    let status = status_of(&obs);
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Submit {
            kind: REMOVE_NODE,
            change: Change::Remove {
                node_id: 14,
                pod: Some("a-4".into())
            },
            base_version: 3,
        }
    );
    // Ordered but not in force: the pod stays.
    let all: Vec<u64> = (10..15).collect();
    let four: Vec<u64> = (10..14).collect();
    for (i, p) in obs.pods.iter_mut() {
        p.replica = Some(running(10 + *i as u64, &all, &four, 3));
    }
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Wait("the removal of node 14 takes effect at the next DKG interval boundary".into())
    );
    // In force: the replica stopped itself; now the StatefulSet shrinks.
    for (i, p) in obs.pods.iter_mut() {
        p.replica = Some(running(10 + *i as u64, &four, &four, 4));
    }
    obs.pods
        .get_mut(&4)
        .and_then(|p| p.replica.as_mut())
        .expect("a-4")
        .phase = ReplicaPhase::Removed;
    assert_eq!(next_step(4, &obs, &status, NOW), Step::Scale(4));
}

#[test]
fn a_replaced_pod_gets_its_old_node_removed_then_its_new_node_added() {
    let mut obs = steady(4);
    let mut status = status_of(&obs);
    let members: Vec<u64> = (10..14).collect();
    // a-2's pod and volume were deleted: it comes back waiting, with new keys.
    obs.pods.insert(2, pod(2, Some(waiting(99))).1);
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Start(vec!["a-2".into()])
    );
    obs.pods.insert(2, pod(2, Some(running(99, &[], &[], 0))).1);
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Submit {
            kind: REPLACE_NODE,
            change: Change::Remove {
                node_id: 12,
                pod: Some("a-2".into())
            },
            base_version: 3,
        }
    );
    // The old node is out: the new one goes in, still as part of the replacement.
    let three = [10, 11, 13];
    for i in [0, 1, 3] {
        obs.pods
            .insert(i, pod(i, Some(running(10 + i as u64, &three, &three, 4))).1);
    }
    status.operation = op(REPLACE_NODE, 12, 3, NOW - 60);
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Submit {
            kind: REPLACE_NODE,
            change: Change::Add {
                pod: "a-2".into(),
                node_id: 99,
                record: vec![99],
            },
            base_version: 4,
        }
    );
    let _ = members;
}

#[test]
fn a_removed_replica_below_the_size_gets_a_new_volume() {
    let mut obs = steady(4);
    let status = status_of(&obs);
    let three = [10, 11, 12];
    for i in 0..3 {
        obs.pods
            .insert(i, pod(i, Some(running(10 + i as u64, &three, &three, 4))).1);
    }
    let mut removed = running(13, &three, &three, 4);
    removed.phase = ReplicaPhase::Removed;
    obs.pods.insert(3, pod(3, Some(removed)).1);
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Recreate("a-3".into())
    );
}

#[test]
fn a_roll_deletes_one_outdated_pod_at_a_time_once_the_subnet_is_whole() {
    let mut obs = steady(4);
    obs.update_revision = Some("r2".into());
    let mut status = status_of(&obs);
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::RollPod("a-0".into())
    );
    status.operation = Some(OperationStatus {
        kind: ROLL.into(),
        step: "PodDeleted".into(),
        pod: Some("a-0".into()),
        started_at: Some(at(NOW)),
        ..OperationStatus::default()
    });
    // a-0 is back on the new template but not ready yet.
    let p0 = obs.pods.get_mut(&0).expect("a-0");
    p0.revision = Some("r2".into());
    p0.ready = false;
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::Wait("a-0 restarts with the new template and catches up".into())
    );
    obs.pods.get_mut(&0).expect("a-0").ready = true;
    assert_eq!(
        next_step(4, &obs, &status, NOW),
        Step::RollPod("a-1".into())
    );
    // Any replica behind stops the roll.
    let lagging = obs
        .pods
        .get_mut(&3)
        .and_then(|p| p.replica.as_mut())
        .expect("a-3");
    lagging.finalized_height = 50;
    assert!(matches!(next_step(4, &obs, &status, NOW), Step::Wait(_)));
    let _ = BTreeMap::<u8, u8>::new();
}
