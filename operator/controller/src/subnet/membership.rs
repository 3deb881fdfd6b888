//! The next step towards the spec: genesis, then membership changes one at a time (pure).
//!
//! Given the spec's size, what was observed and what status recorded, [`next_step`] names
//! exactly one step; the reconciler performs it, records it in status and comes back. Every
//! step is safe to repeat, so an operator that crashes anywhere resumes by computing the same
//! step again (etcd-operator's discipline):
//!
//! - **genesis**: the StatefulSet at full size; once every pod waits for genesis with its
//!   keys, the genesis DKG runs and every genesis member is started;
//! - **one change at a time**: nothing new starts while the registry being prepared differs
//!   from the epoch in force (a change waits for the next DKG summary);
//! - **scale down**: the highest pod's node is removed from the registry first; the pod and
//!   its volume go (StatefulSet shrinks) only once the epoch without it is in force;
//! - **join** (scale-up, replacement): a pod whose node is not a member is started from the
//!   genesis with the members as peers, then added by an administrator-signed change; a
//!   replaced pod's old node is removed from the registry before the new one is added (both
//!   would claim the pod's address);
//! - **scale up**: the StatefulSet grows by one pod only when every pod is a member;
//! - **roll**: pods made from an older template are deleted one at a time, each only when the
//!   whole subnet is healthy, and the next only when the previous one is back and caught up.
//!
//! A submitted change is not submitted again until [`RESUBMIT_AFTER_SECS`] pass without it
//! being ordered (a change is refused if the registry moved on, so a repeat is harmless).

use std::collections::BTreeSet;

use thicket_operator_api::v1alpha1::{OperationStatus, SubnetStatus};

use super::observed::{Observed, Pod, ReplicaPhase};

/// How long a submitted registry change may stay unordered before it is submitted again: a
/// few DKG intervals' worth of blocks at the default timing.
pub const RESUBMIT_AFTER_SECS: i64 = 30;
/// How far (in heights) a replica may trail the most advanced one and count as caught up.
pub const CAUGHT_UP_LAG: u64 = 10;

pub const ADD_NODE: &str = "AddNode";
pub const REMOVE_NODE: &str = "RemoveNode";
pub const REPLACE_NODE: &str = "ReplaceNode";
pub const ROLL: &str = "Roll";

/// A registry change to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add {
        pod: String,
        node_id: u64,
        record: Vec<u8>,
    },
    Remove {
        node_id: u64,
        pod: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Set the StatefulSet's size.
    Scale(i32),
    /// Run the genesis DKG among these pods (all waiting for genesis).
    Genesis(Vec<String>),
    /// Start these pods from the genesis (with the members as peers).
    Start(Vec<String>),
    /// Submit a registry change (`kind` is what status records), against `base_version`.
    Submit {
        kind: &'static str,
        change: Change,
        base_version: u64,
    },
    /// Delete a pod made from an older template (a roll).
    RollPod(String),
    /// Delete a pod's volume and the pod: its node was removed and cannot come back.
    Recreate(String),
    /// Nothing to do until something changes.
    Wait(String),
    /// At the spec.
    Idle,
}

/// Seconds since `op` started (a large number if it has no start time).
fn age(op: &OperationStatus, now: i64) -> i64 {
    op.started_at
        .as_ref()
        .map_or(i64::MAX, |t| now - t.0.as_second())
}

/// Whether `change` was submitted recently enough to wait for it instead of submitting again.
fn recently_submitted(op: Option<&OperationStatus>, node_id: u64, base: u64, now: i64) -> bool {
    op.is_some_and(|op| {
        op.node_id.as_deref() == Some(&node_id.to_string())
            && op.base_registry_version == Some(base as i64)
            && age(op, now) < RESUBMIT_AFTER_SECS
    })
}

fn submit(
    kind: &'static str,
    change: Change,
    base: u64,
    op: Option<&OperationStatus>,
    now: i64,
) -> Step {
    let node = match &change {
        Change::Add { node_id, .. } | Change::Remove { node_id, .. } => *node_id,
    };
    if recently_submitted(op, node, base, now) {
        return Step::Wait(format!(
            "registry change ({kind} of node {node}) submitted; waiting for the subnet to order it"
        ));
    }
    Step::Submit {
        kind,
        change,
        base_version: base,
    }
}

/// The pod name status last recorded for `node`.
fn recorded_pod(status: &SubnetStatus, node: u64) -> Option<&str> {
    let id = node.to_string();
    status
        .members
        .iter()
        .find(|m| m.node_id == id)
        .map(|m| m.pod.as_str())
}

fn genesis_step(desired: i32, obs: &Observed) -> Step {
    if obs.statefulset_replicas != Some(desired) {
        return Step::Scale(desired);
    }
    let waiting: Vec<String> = (0..desired)
        .filter_map(|i| obs.pods.get(&i))
        .filter(|p| {
            p.replica
                .as_ref()
                .is_some_and(|r| r.phase == ReplicaPhase::WaitingForGenesis)
        })
        .map(|p| p.name.clone())
        .collect();
    if waiting.len() == desired as usize {
        Step::Genesis(waiting)
    } else {
        Step::Wait(format!(
            "{} of {desired} replicas have created their keys and wait for genesis",
            waiting.len()
        ))
    }
}

/// The next step for a subnet of `desired` replicas.
pub fn next_step(desired: i32, obs: &Observed, status: &SubnetStatus, now: i64) -> Step {
    let Some(genesis) = &obs.genesis else {
        if obs.view().is_some() {
            return Step::Wait(
                "replicas run but the genesis ConfigMap is gone; restore it to change membership"
                    .into(),
            );
        }
        return genesis_step(desired, obs);
    };
    let op = status.operation.as_ref();
    // Genesis members waiting for their start (all of them right after genesis; some, if the
    // operator stopped half-way).
    let genesis_waiting: Vec<String> = obs
        .pods
        .values()
        .filter(|p| {
            p.replica.as_ref().is_some_and(|r| {
                r.phase == ReplicaPhase::WaitingForGenesis && genesis.members.contains(&r.node_id)
            })
        })
        .map(|p| p.name.clone())
        .collect();
    if !genesis_waiting.is_empty() {
        return Step::Start(genesis_waiting);
    }
    let Some(view) = obs.view() else {
        return Step::Wait("no replica runs yet".into());
    };
    let pending = &view.pending_members;
    let in_force = &view.members;
    let base = view.pending_registry_version;
    let pods = obs.statefulset_replicas.unwrap_or(0);

    if let Some(step) = scale_down(desired, pods, obs, status, op, base, now) {
        return step;
    }
    if pending != in_force {
        return Step::Wait(
            "a registry change takes effect at the next DKG interval boundary".into(),
        );
    }
    if let Some(step) = join(pods, obs, status, op, pending, base, now) {
        return step;
    }
    if let Some(p) = (0..pods).find(|i| obs.pods.get(i).is_none_or(|p| p.replica.is_none())) {
        return Step::Wait(format!("pod {p} does not answer yet"));
    }
    if let Some((p, _)) = obs
        .running()
        .find(|(_, r)| in_force.contains(&r.node_id) && !r.holds_key_shares)
    {
        return Step::Wait(format!("{} catches up and receives its key shares", p.name));
    }
    if pods < desired {
        return Step::Scale(pods + 1);
    }
    roll(obs, op, in_force)
}

/// Scale-down: remove the highest pod's node first, shrink once the removal is in force.
fn scale_down(
    desired: i32,
    pods: i32,
    obs: &Observed,
    status: &SubnetStatus,
    op: Option<&OperationStatus>,
    base: u64,
    now: i64,
) -> Option<Step> {
    if pods <= desired {
        return None;
    }
    let view = obs.view()?;
    let last = pods - 1;
    let pod = obs.pods.get(&last);
    let name = pod.map(|p| p.name.clone());
    // The node the pod runs, or the one status says it ran.
    let node = pod
        .and_then(|p| p.replica.as_ref().map(|r| r.node_id))
        .or_else(|| {
            let name = name.as_deref()?;
            status
                .members
                .iter()
                .find(|m| m.pod == name)
                .and_then(|m| m.node_id.parse().ok())
        });
    match node {
        Some(n) if view.pending_members.contains(&n) => {
            if view.pending_members.len() <= 1 {
                return Some(Step::Wait("the last member is never removed".into()));
            }
            let change = Change::Remove {
                node_id: n,
                pod: name,
            };
            Some(submit(REMOVE_NODE, change, base, op, now))
        }
        Some(n) if view.members.contains(&n) => Some(Step::Wait(format!(
            "the removal of node {n} takes effect at the next DKG interval boundary"
        ))),
        _ => Some(Step::Scale(last)),
    }
}

/// A pod whose node is not a member: start it, remove the node it replaces, add it.
fn join(
    pods: i32,
    obs: &Observed,
    status: &SubnetStatus,
    op: Option<&OperationStatus>,
    pending: &BTreeSet<u64>,
    base: u64,
    now: i64,
) -> Option<Step> {
    for i in 0..pods {
        let Some(pod) = obs.pods.get(&i) else {
            continue;
        };
        let Some(r) = &pod.replica else { continue };
        if pending.contains(&r.node_id) || pod.terminating {
            continue;
        }
        match r.phase {
            ReplicaPhase::Removed => return Some(Step::Recreate(pod.name.clone())),
            ReplicaPhase::WaitingForGenesis => return Some(Step::Start(vec![pod.name.clone()])),
            ReplicaPhase::Running => {}
        }
        // The member this pod used to run, if its volume was replaced.
        let old = pending.iter().copied().find(|m| {
            recorded_pod(status, *m) == Some(pod.name.as_str()) && obs.pod_of(*m).is_none()
        });
        let step = match old {
            Some(old) => {
                let change = Change::Remove {
                    node_id: old,
                    pod: Some(pod.name.clone()),
                };
                submit(REPLACE_NODE, change, base, op, now)
            }
            None => {
                let kind = if op.is_some_and(|o| o.kind == REPLACE_NODE) {
                    REPLACE_NODE
                } else {
                    ADD_NODE
                };
                let change = Change::Add {
                    pod: pod.name.clone(),
                    node_id: r.node_id,
                    record: r.record.clone(),
                };
                submit(kind, change, base, op, now)
            }
        };
        return Some(step);
    }
    None
}

/// Pods made from an older template go one at a time, each once the subnet is whole.
fn roll(obs: &Observed, op: Option<&OperationStatus>, in_force: &BTreeSet<u64>) -> Step {
    let Some(revision) = &obs.update_revision else {
        return Step::Idle;
    };
    let max = obs.max_height();
    let caught_up = |p: &Pod| {
        p.ready
            && !p.terminating
            && p.replica.as_ref().is_some_and(|r| {
                r.phase == ReplicaPhase::Running
                    && in_force.contains(&r.node_id)
                    && r.finalized_height + CAUGHT_UP_LAG >= max
            })
    };
    if let Some(op) = op.filter(|o| o.kind == ROLL) {
        let back = op
            .pod
            .as_ref()
            .and_then(|name| obs.pods.values().find(|p| &p.name == name))
            .is_some_and(|p| p.revision.as_ref() == Some(revision) && caught_up(p));
        if !back {
            return Step::Wait(format!(
                "{} restarts with the new template and catches up",
                op.pod.as_deref().unwrap_or("a pod")
            ));
        }
    }
    let outdated = obs
        .pods
        .values()
        .find(|p| p.revision.as_ref().is_some_and(|r| r != revision));
    match outdated {
        None => Step::Idle,
        Some(p) if obs.pods.values().all(caught_up) => Step::RollPod(p.name.clone()),
        Some(p) => Step::Wait(format!(
            "{} runs an older template; it rolls once every replica is ready and caught up",
            p.name
        )),
    }
}

#[cfg(test)]
mod tests;
