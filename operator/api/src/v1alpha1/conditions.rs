//! Conditions as Kubernetes API conventions define them: a list keyed by type, each with a
//! status, a CamelCase reason, a message, the generation it was computed for, and the time its
//! status last changed (kept when only the reason or message change).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The subnet (or canister) serves: it finalizes and answers calls.
pub const READY: &str = "Ready";
/// The operator is working towards the spec.
pub const PROGRESSING: &str = "Progressing";
/// Fewer replicas than the subnet needs are healthy, or it does not finalize.
pub const DEGRADED: &str = "Degraded";
/// A membership operation (add, remove, replace, roll) is in flight.
pub const RECONFIGURING: &str = "Reconfiguring";

/// Sets condition `type_` in `list`: the transition time moves only when the status changes.
pub fn set(
    list: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let new = |last: Time| Condition {
        type_: type_.to_string(),
        status: status.clone(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    };
    match list.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let last = if c.status == status {
                c.last_transition_time.clone()
            } else {
                now.clone()
            };
            *c = new(last);
        }
        None => list.push(new(now.clone())),
    }
}

/// Whether condition `type_` is True.
pub fn is_true(list: &[Condition], type_: &str) -> bool {
    list.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("a valid time"))
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut list = vec![];
        set(
            &mut list,
            READY,
            false,
            "Genesis",
            "running DKG",
            Some(1),
            &at(10),
        );
        set(
            &mut list,
            READY,
            false,
            "Genesis",
            "still",
            Some(2),
            &at(20),
        );
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].message, "still");
        assert_eq!(list[0].observed_generation, Some(2));
        set(&mut list, READY, true, "Finalizing", "ok", Some(2), &at(30));
        assert_eq!(list[0].last_transition_time, at(30));
        assert!(is_true(&list, READY));
        set(&mut list, DEGRADED, false, "Healthy", "", Some(2), &at(30));
        assert_eq!(list.len(), 2);
        assert!(!is_true(&list, DEGRADED));
    }
}
