//! Leader election with a `coordination.k8s.io` Lease, so that two operator replicas never act
//! at once. The holder renews every second; a Lease not renewed for 4 s may be taken over. A
//! holder that cannot renew within 3 s — before anyone else may take over — gives up (the
//! caller exits); one that stops gracefully hands the Lease back. The times are short because
//! a failover waits for a leader: when the leader dies with a primary, the standby must lead
//! before the primary's own Lease (3 s by default) has run out. Written here because the
//! leader-election crates on crates.io are built on older kube versions, and a second kube in
//! the build costs minutes.

use std::time::Duration;

use kube::Client;

use super::Error;
use super::http::Health;
use crate::k8s::lease::{LeaseApi, Renewal, Takeover};

const NAME: &str = "pgha-operator";
const DURATION: Duration = Duration::from_secs(4);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Renewing must succeed within this, inside `DURATION`, or the holder stops.
const RENEW_DEADLINE: Duration = Duration::from_secs(3);

pub struct Lease {
    api: LeaseApi,
    identity: String,
}

impl Lease {
    pub fn new(client: Client, namespace: &str, identity: &str) -> Self {
        Self {
            api: LeaseApi::new(client, namespace, NAME),
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
            let sent = tokio::time::Instant::now();
            // An answer that comes after the deadline is no use: stop waiting then.
            let remaining = RENEW_DEADLINE.saturating_sub(last.elapsed());
            let attempt = tokio::time::timeout(remaining, self.try_take()).await;
            match attempt {
                Ok(Ok(true)) => last = sent,
                Ok(Ok(false)) => return "another replica holds the Lease".into(),
                Ok(Err(e)) if last.elapsed() >= RENEW_DEADLINE => {
                    return format!("not renewed for {:?}: {e}", last.elapsed());
                }
                Err(_) if last.elapsed() >= RENEW_DEADLINE => {
                    return format!(
                        "not renewed for {:?}: the API did not answer",
                        last.elapsed()
                    );
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader Lease failed"),
                Err(_) => tracing::warn!("renewing the leader Lease timed out"),
            }
        }
    }

    /// Hands the Lease back on a graceful stop: no holder, so a standby takes it at its next
    /// try. A failure only means the standby waits for the Lease to run out.
    pub async fn release(&self) {
        match self.api.release(&self.identity).await {
            Ok(true) => tracing::info!("leader Lease handed back"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader Lease not handed back"),
        }
    }

    /// Takes or renews the Lease; false when someone else holds it.
    async fn try_take(&self) -> Result<bool, Error> {
        let renewal = Renewal {
            duration_seconds: DURATION.as_secs() as i32,
            annotations: None,
        };
        Ok(self
            .api
            .renew(&self.identity, &renewal, Takeover::WhenExpired)
            .await?)
    }
}
