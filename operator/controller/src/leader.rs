//! Leader election on a `coordination.k8s.io` Lease, as client-go's leaderelection does it:
//! the holder renews the lease every [`RENEW_EVERY`]; another candidate takes it over only once
//! it has not been renewed for [`LEASE_DURATION`]. Writes carry the Lease's resourceVersion,
//! so of two candidates racing for an expired lease exactly one wins. A leader that cannot
//! renew in time stops (the process exits and restarts as a candidate): two operators never
//! act on a subnet at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// How long a lease stays valid without renewal (client-go's default is 15 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews: three chances per lease duration.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Whether `me` may hold `lease` at `now`: it is free, expired, or already mine.
pub fn may_take(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
    let Some(spec) = lease else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .map_or(LEASE_DURATION.as_secs() as i64, i64::from);
            spec.renew_time
                .as_ref()
                .is_none_or(|t| t.0.as_second() + duration < now.as_second())
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
        }
    }

    /// One attempt to take or renew the lease; true if this candidate holds it now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        if !may_take(spec, &self.identity, now) {
            return Ok(false);
        }
        let renewing = spec.and_then(|s| s.holder_identity.as_deref()) == Some(&self.identity);
        let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
        let new_spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: if renewing {
                spec.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if renewing {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        };
        let result = match current {
            Some(mut lease) => {
                lease.spec = Some(new_spec);
                // resourceVersion is kept: a concurrent writer makes this fail with 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: reading the lease failed"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews the lease until a renewal fails for longer than the lease lasts; then returns
    /// (the caller must stop acting).
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leader election: another operator took the lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renewing failed"),
            }
            // Stop before another candidate may take over.
            if last_renewed.elapsed() + RENEW_EVERY >= LEASE_DURATION {
                tracing::error!("leader election: could not renew the lease in time");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("time"))),
            ..LeaseSpec::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("time")
    }

    #[test]
    fn a_lease_is_taken_when_free_expired_or_already_held() {
        assert!(may_take(None, "me", at(100)));
        assert!(may_take(Some(&spec("me", 99)), "me", at(100)));
        assert!(!may_take(Some(&spec("other", 90)), "me", at(100)));
        assert!(may_take(Some(&spec("other", 84)), "me", at(100)));
        assert!(may_take(Some(&spec("", 99)), "me", at(100)));
    }
}
