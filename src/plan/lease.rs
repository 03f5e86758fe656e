//! The primary Lease: when a holder must fence itself, and when others may take the Lease.
//! Time is a parameter: the agent passes its monotonic clock, the operator the API's times.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::PgClusterSpec;
use crate::api::instance::PrimaryLease;
use crate::plan::names;

/// Annotations with which the primary publishes its WAL position on every renewal, so the
/// operator knows the high-water mark even after the primary is gone.
pub const LSN_ANNOTATION: &str = "pgha.dev/lsn";
pub const TIMELINE_ANNOTATION: &str = "pgha.dev/timeline";
pub const SYSTEM_ID_ANNOTATION: &str = "pgha.dev/system-identifier";
/// Which run of the holder's agent renews: a restarted agent finds another run's mark and
/// hands the Lease back instead of carrying on, so the operator decides whether a replica
/// takes over. The operator removes the mark when it assigns the Lease.
pub const AGENT_RUN_ANNOTATION: &str = "pgha.dev/agent-run";
/// When the holder last renewed again after its Lease had gone unrenewed past its duration
/// (the API server away or unreachable), RFC 3339: the node Leases went stale in that
/// outage too, and are given time to catch up before they say a node is lost.
pub const API_RETURNED_ANNOTATION: &str = "pgha.dev/api-returned";
/// The standbys the primary has as synchronous, comma-separated.
pub const SYNCHRONOUS_ANNOTATION: &str = "pgha.dev/synchronous";

/// The primary Lease of a cluster, as its instances are told.
pub fn primary_lease(cluster: &str, spec: &PgClusterSpec) -> PrimaryLease {
    let failover = &spec.failover;
    PrimaryLease {
        name: names::primary_lease(cluster),
        duration_seconds: failover.lease_seconds,
        renew_millis: failover.renew_millis,
        fence_margin_millis: failover.fence_margin_millis,
    }
}

/// How long after the send of its last successful renewal a holder may still act as primary.
/// Measured from the send, not the answer: the API server may have stamped the renewal at
/// any moment in between.
pub fn holds_for(lease: &PrimaryLease) -> Duration {
    let total = Duration::from_secs(u64::try_from(lease.duration_seconds).unwrap_or(0));
    let margin = Duration::from_millis(u64::try_from(lease.fence_margin_millis).unwrap_or(0));
    total.saturating_sub(margin)
}

/// Whether a holder whose last successful renewal was sent `since_sent` ago must fence now.
pub fn must_fence(lease: &PrimaryLease, since_sent: Duration) -> bool {
    since_sent >= holds_for(lease)
}

/// The moment a Lease renewed at `renewed` for `duration_seconds` runs out; a Lease never
/// renewed has run out already.
pub fn expires(renewed: Option<Timestamp>, duration_seconds: i32) -> Option<Timestamp> {
    renewed.map(|at| at + SignedDuration::from_secs(duration_seconds.into()))
}

/// Whether a Lease held by someone else may be taken: its last renewal is older than its
/// duration.
pub fn expired(renewed: Option<Timestamp>, duration_seconds: i32, now: Timestamp) -> bool {
    expires(renewed, duration_seconds).is_none_or(|end| now > end)
}

/// The stretch without the API that a successful renewal, answered at `answered`, ends —
/// `(began, ended)` on the holder's monotonic clock — when the Lease went unrenewed for
/// longer than `lease_time` since the last successful renewal was sent (`renewed_at`).
/// Such a stretch that began no more than `lease_time` after `previous` ended continues it:
/// an API server back from an outage that cannot keep up with renewals yet is still the same
/// outage, and reporting only its tail would say "3 s without the API" after a minute.
pub fn outage_ended(
    previous: Option<(Instant, Instant)>,
    renewed_at: Instant,
    answered: Instant,
    lease_time: Duration,
) -> Option<(Instant, Instant)> {
    if answered.saturating_duration_since(renewed_at) <= lease_time {
        return None;
    }
    let began = match previous {
        Some((began, ended)) if renewed_at.saturating_duration_since(ended) <= lease_time => began,
        _ => renewed_at,
    };
    Some((began, answered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures::cluster;

    #[test]
    fn a_lease_expires_after_its_duration() {
        let at = Timestamp::from_second(1_000).unwrap();
        let later = |s: i64| Timestamp::from_second(1_000 + s).unwrap();
        assert!(expired(None, 15, at));
        assert!(!expired(Some(at), 15, later(15)));
        assert!(expired(Some(at), 15, later(16)));
    }

    #[test]
    fn the_holder_fences_a_margin_before_anyone_may_take_over() {
        let lease = primary_lease("orders", &cluster("orders", serde_json::json!({})).spec);
        assert_eq!(lease.name, "orders-primary");
        assert_eq!(holds_for(&lease), Duration::from_secs(2));
        assert!(!must_fence(&lease, Duration::from_millis(1999)));
        assert!(must_fence(&lease, Duration::from_secs(2)));
        // The fence starts before the Lease can expire for anyone else, with the margin to
        // spare for the fence itself and clock rates.
        let expiry = Duration::from_secs(lease.duration_seconds as u64);
        assert!(holds_for(&lease) + Duration::from_millis(900) < expiry);
    }

    #[test]
    fn an_outage_is_reported_whole_even_when_the_api_server_stumbles_back() {
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_millis(s);
        let lease = Duration::from_secs(3);
        // Renewed in time: no outage.
        assert_eq!(outage_ended(None, at(0), at(3_000), lease), None);
        // A minute without the API.
        let minute = outage_ended(None, at(0), at(60_000), lease);
        assert_eq!(minute, Some((at(0), at(60_000))));
        // One renewal gets through, then 3.2 s more without: the same outage, 63.2 s.
        assert_eq!(
            outage_ended(minute, at(59_800), at(63_200), lease),
            Some((at(0), at(63_200)))
        );
        // A new one long after is its own.
        assert_eq!(
            outage_ended(minute, at(70_000), at(74_000), lease),
            Some((at(70_000), at(74_000)))
        );
    }
}
