//! Kubernetes Events about the objects the operator manages (what a step did, why it failed),
//! and the log line and backoff of a failed reconcile.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use crate::context::Context;

/// Publishes an Event on `object`; a failure to publish is logged, never fatal.
pub async fn publish(
    ctx: &Context,
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, object).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}

/// Counts a failed reconcile of `object` and returns how long to wait before the next one.
pub fn failed(
    ctx: &Context,
    controller: &str,
    object: &ObjectReference,
    reason: &str,
    error: &dyn std::fmt::Display,
) -> Duration {
    let uid = object.uid.as_deref().unwrap_or_default();
    ctx.metrics.failed(controller, reason, uid);
    let wait = ctx.backoff(uid);
    tracing::warn!(
        controller.name = controller,
        object = object.name.as_deref().unwrap_or_default(),
        k8s.namespace.name = object.namespace.as_deref().unwrap_or_default(),
        error = %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    wait
}
