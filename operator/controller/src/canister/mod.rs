//! The Canister controller: a canister on a Subnet kept at the module and argument its spec
//! names, through the subnet's IC HTTP interface under the operator's identity.
//!
//! ```text
//!  dereference (Subnet status, the module, the canister's certified state)
//!      → plan::next_step (pure) → one call (create | install | upgrade | controllers)
//!      → status
//! ```
//!
//! On deletion (finalizer) the canister is stopped and deleted on its subnet; if the subnet is
//! gone or being deleted, there is nothing left to delete.

pub mod agent;
pub mod plan;
pub mod source;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Resource, ResourceExt};
use thicket_operator_api::v1alpha1::conditions::{self, PROGRESSING, READY};
use thicket_operator_api::v1alpha1::{Canister, CanisterPhase, CanisterStatus, Subnet};

use crate::context::Context;
use crate::events;
use crate::subnet::build::FIELD_MANAGER;
use crate::subnet::now;
use plan::{Desired, Step, SubnetInfo};

pub const CONTROLLER: &str = "canister";
pub const FINALIZER: &str = "thicket.dev/canister";

/// While waiting for the subnet or between steps.
const BUSY_REQUEUE: Duration = Duration::from_secs(5);
/// At the spec: notice a canister changed or deleted behind the operator's back.
const IDLE_REQUEUE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the Subnet: {0}")]
    Subnet(kube::Error),
    #[error("the module: {0}")]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Agent(#[from] agent::AgentCallError),
    #[error("{0}: the subnet is not Ready; deleting the canister waits for it")]
    SubnetNotReady(String),
    #[error("writing status: {0}")]
    Status(kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(Box<finalizer::Error<Error>>),
}

/// Every value [`Error::reason`] takes.
pub const REASONS: [&str; 6] = [
    "Subnet",
    "Module",
    "SubnetCall",
    "SubnetNotReady",
    "Status",
    "Finalizer",
];

impl Error {
    /// A bounded label for metrics (one of [`REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Subnet(_) => "Subnet",
            Error::Source(_) => "Module",
            Error::Agent(_) => "SubnetCall",
            Error::SubnetNotReady(_) => "SubnetNotReady",
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

/// The Candid encoding of the spec's init argument (`()` when none).
pub fn encode_arg(text: Option<&str>) -> Result<Vec<u8>, String> {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("()");
    candid_parser::parse_idl_args(text)
        .map_err(|e| format!("spec.initArg is not Candid text: {e}"))?
        .to_bytes()
        .map_err(|e| format!("spec.initArg does not encode: {e}"))
}

async fn patch_status(ctx: &Context, c: &Canister, status: &CanisterStatus) -> Result<(), Error> {
    let api = Api::<Canister>::namespaced(ctx.client.clone(), &c.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": "thicket.dev/v1alpha1",
        "kind": "Canister",
        "status": status,
    });
    api.patch_status(
        &c.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

/// The subnet's coordinates from its status, if the Subnet exists.
async fn subnet_info(ctx: &Context, c: &Canister) -> Result<Option<(Subnet, SubnetInfo)>, Error> {
    let ns = c.namespace().unwrap_or_default();
    let subnet = Api::<Subnet>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&c.spec.subnet)
        .await
        .map_err(Error::Subnet)?;
    Ok(subnet.map(|s| {
        let st = s.status.clone().unwrap_or_default();
        let info = SubnetInfo {
            subnet_id: st.subnet_id.clone().unwrap_or_default(),
            registry_id: st.registry_id.clone().unwrap_or_default(),
            endpoint: st.endpoint.clone().unwrap_or_default(),
            public_key: st.public_key.clone().unwrap_or_default(),
            effective_canister_id: st.effective_canister_id.clone().unwrap_or_default(),
            ready: conditions::is_true(&st.conditions, READY)
                && s.metadata.deletion_timestamp.is_none(),
        };
        (s, info)
    }))
}

pub async fn reconcile(c: Arc<Canister>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let uid = c.uid().unwrap_or_default();
    let api = Api::<Canister>::namespaced(ctx.client.clone(), &c.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, c, |ev| async {
        match ev {
            finalizer::Event::Apply(c) => reconcile_canister(c, &ctx).await,
            finalizer::Event::Cleanup(c) => cleanup(c, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconciled(CONTROLLER, &uid, started.elapsed(), result.is_ok());
    result
}

pub fn error_policy(c: Arc<Canister>, error: &Error, ctx: Arc<Context>) -> Action {
    let object = c.object_ref(&());
    Action::requeue(events::failed(
        &ctx,
        CONTROLLER,
        &object,
        error.reason(),
        error,
    ))
}

async fn event(ctx: &Context, c: &Canister, type_: EventType, reason: &str, note: String) {
    events::publish(ctx, &c.object_ref(&()), type_, reason, note).await;
}

/// Stops and deletes the canister on its subnet, unless the subnet is gone with it.
async fn cleanup(c: Arc<Canister>, ctx: &Context) -> Result<Action, Error> {
    let status = c.status.clone().unwrap_or_default();
    let Some(id) = &status.canister_id else {
        return Ok(Action::await_change());
    };
    match subnet_info(ctx, &c).await? {
        Some((_, info)) if info.ready && info.holds(&status) => {
            let agent = agent::connect(&info, &ctx.config.identity)?;
            agent::stop_and_delete(&agent, agent::principal(id)?).await?;
            event(
                ctx,
                &c,
                EventType::Normal,
                "Deleted",
                format!("stopped and deleted {id}"),
            )
            .await;
        }
        Some((s, _)) if s.metadata.deletion_timestamp.is_none() && s.status.is_some() => {
            // The subnet exists but is not Ready: wait, or the canister would outlive this
            // object.
            return Err(Error::SubnetNotReady(id.clone()));
        }
        _ => {
            event(
                ctx,
                &c,
                EventType::Normal,
                "SubnetGone",
                format!("{id} went with its subnet"),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

fn fail(mut status: CanisterStatus, c: &Canister, reason: &str, error: &str) -> CanisterStatus {
    let now = now();
    status.observed_generation = c.metadata.generation;
    status.phase = CanisterPhase::Failed;
    status.last_error = Some(error.to_string());
    let g = c.metadata.generation;
    conditions::set(&mut status.conditions, READY, false, reason, error, g, &now);
    conditions::set(
        &mut status.conditions,
        PROGRESSING,
        false,
        reason,
        error,
        g,
        &now,
    );
    status
}

async fn reconcile_canister(c: Arc<Canister>, ctx: &Context) -> Result<Action, Error> {
    let mut status = c.status.clone().unwrap_or_default();
    let uid = c.uid().unwrap_or_default();
    let arg = match encode_arg(c.spec.init_arg.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            patch_status(ctx, &c, &fail(status, &c, "InvalidInitArg", &e)).await?;
            event(ctx, &c, EventType::Warning, "InvalidInitArg", e).await;
            return Ok(Action::await_change());
        }
    };
    let ns = c.namespace().unwrap_or_default();
    let module = match source::fetch(&ctx.client, &ns, &c.spec.wasm).await {
        Ok(m) => m,
        Err(e) if e.transient() => return Err(e.into()),
        Err(e) => {
            patch_status(ctx, &c, &fail(status, &c, "InvalidModule", &e.to_string())).await?;
            event(ctx, &c, EventType::Warning, "InvalidModule", e.to_string()).await;
            return Ok(Action::requeue(IDLE_REQUEUE));
        }
    };
    let operator = agent::operator_principal(&ctx.config.identity);
    let mut controllers: BTreeSet<String> = c.spec.controllers.iter().cloned().collect();
    controllers.insert(operator);
    let desired = Desired {
        module_hash: module.sha256.clone(),
        arg_hash: source::sha256_hex(&arg),
        controllers,
    };
    let subnet = subnet_info(ctx, &c).await?;
    let info = subnet.as_ref().map(|(_, i)| i);
    let connected = match info.filter(|i| i.ready) {
        Some(i) => Some(agent::connect(i, &ctx.config.identity)?),
        None => None,
    };
    let on_subnet = match (&connected, &status.canister_id, info) {
        (Some(a), Some(id), Some(i)) if i.holds(&status) => {
            Some(agent::observe(a, agent::principal(id)?).await?)
        }
        _ => None,
    };
    // A status from before subnets were named by principal names it so from now on.
    if let Some(i) = info.filter(|i| i.holds(&status) && !i.subnet_id.is_empty()) {
        status.subnet_id = Some(i.subnet_id.clone());
    }
    let step = plan::next_step(&status, info, on_subnet.as_ref(), &desired);
    let now = now();
    let g = c.metadata.generation;
    let done = match (&step, &connected, info) {
        (Step::Create, Some(a), Some(i)) => {
            let id = agent::create(a, &i.effective_canister_id, &desired.controllers).await?;
            status.canister_id = Some(id.to_text());
            status.subnet_id = Some(i.subnet_id.clone());
            status.module_hash = None;
            status.module_prefix = None;
            status.arg_hash = None;
            event(
                ctx,
                &c,
                EventType::Normal,
                "Created",
                format!("canister {id} on subnet {}", i.subnet_id),
            )
            .await;
            false
        }
        (Step::Install | Step::Upgrade, Some(a), _) => {
            let id = agent::principal(status.canister_id.as_deref().unwrap_or_default())?;
            let upgrade = step == Step::Upgrade;
            agent::install(a, id, &module, arg, upgrade).await?;
            status.module_hash = Some(module.sha256.clone());
            status.module_prefix = Some(module.sha256[..12].to_string());
            status.arg_hash = Some(desired.arg_hash.clone());
            let what = if upgrade { "Upgraded" } else { "Installed" };
            event(
                ctx,
                &c,
                EventType::Normal,
                what,
                format!("module {}", module.sha256),
            )
            .await;
            false
        }
        (Step::SetControllers, Some(a), _) => {
            let id = agent::principal(status.canister_id.as_deref().unwrap_or_default())?;
            agent::set_controllers(a, id, &desired.controllers).await?;
            event(
                ctx,
                &c,
                EventType::Normal,
                "ControllersSet",
                desired
                    .controllers
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .await;
            false
        }
        (Step::Idle, _, _) => {
            if let Some(h) = on_subnet.as_ref().and_then(|o| o.module_hash.clone()) {
                status.module_prefix = Some(h[..12.min(h.len())].to_string());
                status.module_hash = Some(h);
            }
            true
        }
        _ => false,
    };
    status.observed_generation = g;
    status.last_error = None;
    status.phase = match &step {
        Step::WaitForSubnet(_) => CanisterPhase::Pending,
        Step::Idle => CanisterPhase::Running,
        _ => CanisterPhase::Installing,
    };
    let (reason, msg) = match &step {
        Step::WaitForSubnet(why) => ("WaitingForSubnet", why.clone()),
        Step::Create => ("Creating", String::new()),
        Step::Install => ("Installing", String::new()),
        Step::Upgrade => ("Upgrading", String::new()),
        Step::SetControllers => ("SettingControllers", String::new()),
        Step::Idle => ("Installed", format!("module {}", desired.module_hash)),
    };
    conditions::set(
        &mut status.conditions,
        READY,
        done,
        reason,
        msg.clone(),
        g,
        &now,
    );
    conditions::set(
        &mut status.conditions,
        PROGRESSING,
        !done,
        reason,
        msg,
        g,
        &now,
    );
    if c.status.as_ref() != Some(&status) {
        patch_status(ctx, &c, &status).await?;
    }
    ctx.succeeded(&uid);
    Ok(Action::requeue(if done {
        IDLE_REQUEUE
    } else if matches!(step, Step::WaitForSubnet(_)) {
        BUSY_REQUEUE
    } else {
        Duration::from_millis(500)
    }))
}
