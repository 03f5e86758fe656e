//! Leader election with a `coordination.k8s.io` Lease, so that two operator replicas never act
//! at once. The holder renews every 2 s; a Lease not renewed for 15 s may be taken over. A
//! holder that cannot renew within 10 s — before anyone else may take over — gives up (the
//! caller exits); one that stops gracefully hands the Lease back. Written here because the leader-election crates on crates.io are built on
//! older kube versions, and a second kube in the build costs minutes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use super::Error;
use super::http::Health;

const NAME: &str = "pgha-operator";
const DURATION: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Renewing must succeed within this, well inside `DURATION`, or the holder stops.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

pub struct Lease {
    api: Api<LeaseObject>,
    identity: String,
}

/// Whether a Lease held by someone else may be taken: its last renewal is older than its
/// duration.
pub fn expired(renewed: Option<Timestamp>, duration_seconds: i32, now: Timestamp) -> bool {
    match renewed {
        None => true,
        Some(at) => now.duration_since(at) > SignedDuration::from_secs(duration_seconds.into()),
    }
}

impl Lease {
    pub fn new(client: Client, namespace: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
        }
    }

    /// Waits until this replica holds the Lease; `health` is ready once the API answers.
    pub async fn acquire(&self, health: &Health) -> Result<(), Error> {
        loop {
            let result = self.try_take().await;
            if result.is_ok() {
                health.set_ready();
            }
            match result {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader Lease not reachable; retrying"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews until it cannot; returns why it stopped.
    pub async fn keep(&self) -> String {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_take().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => return "another replica holds the Lease".into(),
                Err(e) if last.elapsed() >= RENEW_DEADLINE => {
                    return format!("not renewed for {:?}: {e}", last.elapsed());
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease failed"),
            }
        }
    }

    /// Hands the Lease back on a graceful stop: no holder, so a standby takes it at its next
    /// try. A failure only means the standby waits for the Lease to run out.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(NAME).await else {
            return;
        };
        let mut spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        let lease = LeaseObject {
            metadata: current.metadata.clone(),
            spec: Some(spec),
        };
        match self.api.replace(NAME, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!("leader Lease handed back"),
            Err(e) => tracing::warn!(error = %e, "leader Lease not handed back"),
        }
    }

    /// Takes or renews the Lease; false when someone else holds it. Writes carry the
    /// resourceVersion they read, so two replicas cannot both win.
    async fn try_take(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let mine = |previous: Option<&LeaseSpec>| {
            let same = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&self.identity);
            let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
            LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(DURATION.as_secs() as i32),
                acquire_time: if same {
                    previous.and_then(|p| p.acquire_time.clone())
                } else {
                    Some(MicroTime(now))
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if same { transitions } else { transitions + 1 }),
                ..Default::default()
            }
        };
        let result = match self.api.get_opt(NAME).await? {
            None => {
                let lease = LeaseObject {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(mine(None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(current) => {
                let spec = current.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.as_deref();
                let free = expired(
                    spec.renew_time.as_ref().map(|t| t.0),
                    spec.lease_duration_seconds.unwrap_or(15),
                    now,
                );
                if holder.is_some() && holder != Some(&self.identity) && !free {
                    return Ok(false);
                }
                let lease = LeaseObject {
                    metadata: current.metadata.clone(),
                    spec: Some(mine(Some(&spec))),
                };
                self.api.replace(NAME, &PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // Someone else wrote first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration() {
        let at = Timestamp::from_second(1_000).unwrap();
        let later = |s: i64| Timestamp::from_second(1_000 + s).unwrap();
        assert!(expired(None, 15, at));
        assert!(!expired(Some(at), 15, later(15)));
        assert!(expired(Some(at), 15, later(16)));
    }
}
