//! The Subnet controller: a pipeline with I/O only at its ends.
//!
//! ```text
//!  dereference (StatefulSet, pods, replicas' admin status, genesis, admin key)
//!      → validate (pure) → plan: membership::next_step (pure) → build children (pure)
//!      → apply (server-side apply; perform the one step) → status (pure compute, then patch)
//! ```
//!
//! One step per reconcile; the reconcile comes back soon while there is work, and every
//! 30 s when the subnet is at its spec (replicas' heights move without Kubernetes events).
//! The `thicket.dev/paused` annotation stops every step and write but status.

pub mod apply;
pub mod build;
pub mod dereference;
pub mod genesis;
pub mod membership;
pub mod observed;
pub mod status;
pub mod validate;

#[cfg(test)]
pub mod testing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Resource, ResourceExt};
use thicket_operator_api::v1alpha1::Subnet;

use crate::context::Context;
use crate::events;
use build::Names;
use membership::Step;

pub const CONTROLLER: &str = "subnet";
pub const FINALIZER: &str = "thicket.dev/subnet";
pub const PAUSED: &str = "thicket.dev/paused";

/// While a step is under way: replicas move in seconds.
const BUSY_REQUEUE: Duration = Duration::from_secs(3);
/// At the spec: status (heights, health) still refreshes.
const IDLE_REQUEUE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Dereference(#[from] dereference::DereferenceError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("writing status: {0}")]
    Status(kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(Box<finalizer::Error<Error>>),
}

/// Every value [`Error::reason`] takes.
pub const REASONS: [&str; 8] = [
    "Dereference",
    "KubeApi",
    "Genesis",
    "Replica",
    "RegistryChangeRefused",
    "Inconsistent",
    "Status",
    "Finalizer",
];

impl Error {
    /// A bounded label for metrics (one of [`REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "Dereference",
            Error::Apply(e) => e.reason(),
            Error::Status(_) => "Status",
            // The reconcile's own error, when it is one.
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "Finalizer",
            },
        }
    }
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Entry point for the controller runtime.
pub async fn reconcile(subnet: Arc<Subnet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = subnet.namespace().unwrap_or_default();
    let uid = subnet.uid().unwrap_or_default();
    let api = Api::<Subnet>::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, subnet, |ev| async {
        match ev {
            finalizer::Event::Apply(s) => reconcile_subnet(s, &ctx).await,
            finalizer::Event::Cleanup(s) => cleanup(s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconciled(CONTROLLER, &uid, started.elapsed(), result.is_ok());
    result
}

pub fn error_policy(subnet: Arc<Subnet>, error: &Error, ctx: Arc<Context>) -> Action {
    let object = subnet.object_ref(&());
    Action::requeue(events::failed(
        &ctx,
        CONTROLLER,
        &object,
        error.reason(),
        error,
    ))
}

async fn event(ctx: &Context, subnet: &Subnet, type_: EventType, reason: &str, note: String) {
    events::publish(ctx, &subnet.object_ref(&()), type_, reason, note).await;
}

/// The Subnet is being deleted: its children go with it (owner references; volumes with the
/// StatefulSet); only the metrics forget it here.
async fn cleanup(subnet: Arc<Subnet>, ctx: &Context) -> Result<Action, Error> {
    ctx.metrics
        .subnet_phase(&subnet.uid().unwrap_or_default(), None);
    event(
        ctx,
        &subnet,
        EventType::Normal,
        "Deleting",
        "the subnet's replicas, volumes and keys are deleted with it".into(),
    )
    .await;
    Ok(Action::await_change())
}

async fn reconcile_subnet(subnet: Arc<Subnet>, ctx: &Context) -> Result<Action, Error> {
    let names = Names::of(&subnet);
    let uid = subnet.uid().unwrap_or_default();
    let now = now();
    let v = match validate::validate(&subnet, ctx.config.replica_image.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            let status = status::invalid(&subnet, &e.to_string(), &now);
            status::patch(&ctx.client, &names, &status)
                .await
                .map_err(Error::Status)?;
            event(
                ctx,
                &subnet,
                EventType::Warning,
                "InvalidSpec",
                e.to_string(),
            )
            .await;
            ctx.metrics.subnet_phase(&uid, Some(("Failed", false)));
            return Ok(Action::await_change());
        }
    };
    let obs = dereference::observe(&ctx.client, &names).await?;
    let admin = dereference::admin_key(&ctx.client, &names).await?;
    let paused = subnet
        .annotations()
        .get(PAUSED)
        .is_some_and(|v| v == "true");
    let prev = subnet.status.clone().unwrap_or_default();
    let step = if paused {
        Step::Wait(format!("paused ({PAUSED}: \"true\")"))
    } else {
        membership::next_step(v.replicas, &obs, &prev, now.0.as_second())
    };
    if !paused {
        let owner = build::owner(&subnet);
        let admin = apply::ensure_admin_key(&ctx.client, &names, &owner, admin).await?;
        let pods = match step {
            Step::Scale(n) => n,
            _ => obs.statefulset_replicas.unwrap_or(v.replicas),
        };
        let children = build::children(&subnet, &v, pods);
        apply::children(&ctx.client, &names, &children).await?;
        match apply::step(&ctx.client, &names, &owner, &v, &obs, &step, &admin).await {
            Ok(Some((reason, note))) => {
                tracing::info!(controller.name = CONTROLLER, object = %names.subnet, reason, note, "step");
                event(ctx, &subnet, EventType::Normal, reason, note).await;
            }
            Ok(None) => {}
            Err(e) => {
                event(ctx, &subnet, EventType::Warning, e.reason(), e.to_string()).await;
                return Err(e.into());
            }
        }
    }
    let new = status::compute(&subnet, &obs, &step, v.warnings.clone(), &now);
    if new.warnings != prev.warnings {
        for w in &new.warnings {
            event(ctx, &subnet, EventType::Warning, "SpecAdvice", w.clone()).await;
        }
    }
    let phase = format!("{:?}", new.phase);
    ctx.metrics
        .subnet_phase(&uid, Some((&phase, new.operation.is_some())));
    if new != prev {
        status::patch(&ctx.client, &names, &new)
            .await
            .map_err(Error::Status)?;
    }
    ctx.succeeded(&uid);
    Ok(match step {
        Step::Idle => Action::requeue(IDLE_REQUEUE),
        _ => Action::requeue(BUSY_REQUEUE),
    })
}
