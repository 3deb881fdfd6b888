//! The operator's Prometheus metrics (`/metrics`), named per Prometheus conventions with
//! bounded labels: the controller, an error reason (an enum's variant), a phase.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub subnets: Family<PhaseLabels, Gauge>,
    pub operations_in_flight: Gauge,
    /// Objects whose last reconcile failed, by controller.
    pub failing_objects: Family<ControllerLabels, Gauge>,
    /// Phase per subnet uid, from which `subnets` is counted.
    phases: Mutex<HashMap<String, (String, bool)>>,
    /// (controller, uid) of the objects whose last reconcile failed, and when it failed.
    failing: Mutex<BTreeMap<(String, String), Instant>>,
    /// The controllers registered with their error reasons.
    controllers: Mutex<BTreeSet<String>>,
}

/// After this long without a reconcile, a failing object is taken to be gone.
const FAILING_FORGOTTEN: Duration = Duration::from_secs(600);

fn duration_histogram() -> Histogram {
    // 10 ms .. ~80 s: a status poll is milliseconds, a genesis DKG seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 14,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("thicket_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let subnets = Family::<PhaseLabels, Gauge>::default();
        let operations_in_flight = Gauge::default();
        let failing_objects = Family::<ControllerLabels, Gauge>::default();
        for controller in ["subnet", "canister"] {
            let l = ControllerLabels {
                controller: controller.into(),
            };
            let _ = reconciles.get_or_create(&l);
            let _ = failing_objects.get_or_create(&l);
        }
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take",
            duration.clone(),
        );
        registry.register("subnets", "Subnets by phase", subnets.clone());
        registry.register(
            "reconfiguration_steps_in_flight",
            "Subnets with a membership operation in flight",
            operations_in_flight.clone(),
        );
        registry.register(
            "failing_objects",
            "Objects whose last reconcile failed",
            failing_objects.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            subnets,
            operations_in_flight,
            failing_objects,
            phases: Mutex::new(HashMap::new()),
            failing: Mutex::new(BTreeMap::new()),
            controllers: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Metrics {
    /// A reconcile of object `uid` that took `took`; one that `succeeded` clears the object
    /// from the failing ones (a failure is counted by [`Metrics::failed`], with its reason).
    pub fn reconciled(&self, controller: &str, uid: &str, took: Duration, succeeded: bool) {
        let l = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
        if succeeded {
            self.recovered(controller, uid);
        }
    }

    /// Exports a zero for each reason `controller` can fail for, so rates and alerts see
    /// a series before the first failure.
    pub fn register(&self, controller: &str, reasons: &[&str]) {
        if let Ok(mut c) = self.controllers.lock() {
            c.insert(controller.into());
        }
        let _ = self.failing_objects.get_or_create(&ControllerLabels {
            controller: controller.into(),
        });
        for reason in reasons {
            let _ = self.errors.get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: (*reason).into(),
            });
        }
    }

    /// A failed reconcile of object `uid`, for `reason`.
    pub fn failed(&self, controller: &str, reason: &str, uid: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: reason.into(),
            })
            .inc();
        self.set_failing(controller, uid, true);
    }

    /// A reconcile of object `uid` that succeeded (after failures or not).
    pub fn recovered(&self, controller: &str, uid: &str) {
        self.set_failing(controller, uid, false);
    }

    fn set_failing(&self, controller: &str, uid: &str, failing: bool) {
        let Ok(mut map) = self.failing.lock() else {
            return;
        };
        let key = (controller.to_string(), uid.to_string());
        if failing {
            map.insert(key, Instant::now());
        } else {
            map.remove(&key);
        }
        self.recount_failing(&mut map);
    }

    /// Counts the failing objects per controller. A failing object is retried at most two
    /// minutes apart; one not heard of for [`FAILING_FORGOTTEN`] is gone (deleted while
    /// failing, its finalizer removed by hand) and no longer counted.
    fn recount_failing(&self, map: &mut BTreeMap<(String, String), Instant>) {
        map.retain(|_, at| at.elapsed() < FAILING_FORGOTTEN);
        let controllers = self
            .controllers
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        for controller in &controllers {
            let n = map.keys().filter(|(c, _)| c == controller).count();
            self.failing_objects
                .get_or_create(&ControllerLabels {
                    controller: controller.into(),
                })
                .set(n as i64);
        }
    }

    /// Records a subnet's phase (`None`: it is gone) and recounts subnets per phase.
    pub fn subnet_phase(&self, uid: &str, phase: Option<(&str, bool)>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some((p, op)) => phases.insert(uid.to_string(), (p.to_string(), op)),
            None => phases.remove(uid),
        };
        self.subnets.clear();
        for p in [
            "Pending",
            "Genesis",
            "Running",
            "Reconfiguring",
            "Degraded",
            "Failed",
        ] {
            self.subnets
                .get_or_create(&PhaseLabels { phase: p.into() })
                .set(0);
        }
        for (p, _) in phases.values() {
            self.subnets
                .get_or_create(&PhaseLabels { phase: p.clone() })
                .inc();
        }
        self.operations_in_flight
            .set(phases.values().filter(|(_, op)| *op).count() as i64);
    }

    pub fn encode(&self) -> String {
        if let Ok(mut map) = self.failing.lock() {
            self.recount_failing(&mut map);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(m: &Metrics, controller: &str) -> i64 {
        m.failing_objects
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .get()
    }

    #[test]
    fn failing_objects_count_those_whose_last_reconcile_failed() {
        let m = Metrics::default();
        m.register("subnet", &["KubeApi", "Genesis"]);
        m.register("canister", &["Module", "SubnetNotReady"]);
        m.failed("subnet", "KubeApi", "a");
        m.failed("subnet", "KubeApi", "a");
        m.failed("subnet", "Genesis", "b");
        m.failed("canister", "Module", "c");
        assert_eq!((failing(&m, "subnet"), failing(&m, "canister")), (2, 1));
        m.recovered("subnet", "a");
        m.recovered("canister", "c");
        assert_eq!((failing(&m, "subnet"), failing(&m, "canister")), (1, 0));
        let text = m.encode();
        assert!(
            text.contains("thicket_operator_reconcile_errors_total{controller=\"subnet\",reason=\"KubeApi\"} 2"),
            "{text}"
        );
        // Every reason is exported before its first failure.
        assert!(
            text.contains("thicket_operator_reconcile_errors_total{controller=\"canister\",reason=\"SubnetNotReady\"} 0"),
            "{text}"
        );
    }
}
