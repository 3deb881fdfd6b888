//! What every reconcile shares: the Kubernetes client, the operator's configuration, metrics,
//! the event recorder, and a per-object retry counter (kube-runtime has no per-object backoff
//! of its own).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};

use crate::metrics::Metrics;

/// The operator's settings (from its command line, which the chart fills).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The replica image of Subnets whose spec names none.
    pub replica_image: Option<String>,
    /// The Ed25519 seed of the identity the operator calls subnets with (its Secret's).
    pub identity: [u8; 32],
}

pub struct Context {
    pub client: kube::Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Consecutive failures per object uid.
    failures: Mutex<HashMap<String, u32>>,
}

/// The first retry after a failure, doubled per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Long enough not to hammer a broken replica or API server, short enough to notice a fix.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

impl Context {
    pub fn new(client: kube::Client, config: Config, metrics: Arc<Metrics>) -> Context {
        let reporter = Reporter {
            controller: "thicket-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `uid` and returns how long to wait before the next attempt.
    pub fn backoff(&self, uid: &str) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(uid.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff_after(n)
    }

    /// Forgets `uid`'s failures (it reconciled).
    pub fn succeeded(&self, uid: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(uid);
        }
    }
}

/// The wait after `n` consecutive failures.
pub fn backoff_after(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff_after(1), Duration::from_secs(2));
        assert_eq!(backoff_after(2), Duration::from_secs(4));
        assert_eq!(backoff_after(5), Duration::from_secs(32));
        assert_eq!(backoff_after(7), MAX_BACKOFF);
        assert_eq!(backoff_after(40), MAX_BACKOFF);
    }
}
