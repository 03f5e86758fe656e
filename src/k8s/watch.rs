//! How watches come back after the API server was away.

use std::time::Duration;

use kube::runtime::watcher::ExponentialBackoff;

/// Retry a failed watch after 0.2 s, doubling up to 5 s (with jitter), instead of kube's
/// default of up to 30 s: after an API outage the operator and the agents would otherwise
/// see new orders and status up to half a minute late. 5 s still spaces a fleet's retries
/// while the API server is down.
pub fn backoff() -> ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}
