//! Failover decisions (shared/DESIGN.md §4): whether the primary is lost, whether it should be
//! told to fence, and whom to promote. Pure: the Lease's times, the clock and every replica's
//! report are parameters.

use std::collections::BTreeSet;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::cluster::{HighWater, SynchronousMode};
use crate::plan::lease;
use crate::plan::wal::parse_lsn;

/// The primary Lease as read through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    pub duration_seconds: i32,
}

/// What the operator sees of the primary besides its Lease: each is a reason to tell it to
/// fence (a live agent then fences and hands the Lease back), never a reason to promote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// Its pod is gone or terminating.
    pub pod_gone: bool,
    /// Its agent is not running (killed, or waiting for its container to restart).
    pub agent_down: bool,
    /// Its node stopped renewing the node Lease for over half that Lease's duration.
    pub node_lost: bool,
    /// Postgres crashed three times within two minutes although the agent lives.
    pub crash_loop: bool,
    /// The operator is replacing its pod on purpose (a new image): its Lease may lapse for
    /// up to [`REPLACEMENT_GRACE`] before that counts as a loss.
    pub replacing: bool,
}

/// How long a primary whose pod the operator replaces may leave its Lease unrenewed.
pub const REPLACEMENT_GRACE: SignedDuration = SignedDuration::from_secs(30);

/// The primary's state as far as a failover is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Holds its Lease; nothing is wrong.
    Serving,
    /// Holds its Lease, but something says it is lost: tell it to fence.
    Suspect(String),
    /// Its Lease expired (or it handed it back) less than `delaySeconds` ago: wait until then.
    Waiting(Timestamp),
    /// Its Lease expired or was handed back: it cannot acknowledge a commit any more.
    Lost(String),
}

/// Judges the primary `primary` from its Lease and the other signals at `now`.
pub fn verdict(
    primary: &str,
    lease: &LeaseView,
    signals: &Signals,
    delay_seconds: i32,
    now: Timestamp,
) -> Verdict {
    let delay = SignedDuration::from_secs(delay_seconds.into());
    if lease.holder.as_deref() != Some(primary) {
        let who = lease.holder.as_deref().unwrap_or("nobody");
        return Verdict::Lost(format!(
            "{primary} no longer holds the primary Lease ({who} does)"
        ));
    }
    if let Some(end) = lease::expires(lease.renewed, lease.duration_seconds)
        && now > end
    {
        let since = now.duration_since(end);
        let grace = if signals.replacing {
            delay.max(REPLACEMENT_GRACE)
        } else {
            delay
        };
        if since <= grace {
            return Verdict::Waiting(end + grace);
        }
        return Verdict::Lost(format!(
            "the primary Lease of {primary} expired {:.1} s ago",
            since.as_secs_f64()
        ));
    }
    if lease.renewed.is_none() {
        return Verdict::Lost(format!("the primary Lease of {primary} was never renewed"));
    }
    let reasons: Vec<&str> = [
        (signals.pod_gone, "its pod is gone"),
        (signals.agent_down, "its agent is not running"),
        (signals.node_lost, "its node stopped renewing its Lease"),
        (signals.crash_loop, "Postgres is crash-looping"),
    ]
    .into_iter()
    .filter_map(|(on, why)| on.then_some(why))
    .collect();
    if reasons.is_empty() {
        Verdict::Serving
    } else {
        Verdict::Suspect(format!("{primary}: {}", reasons.join(", ")))
    }
}

/// Whether the primary's node is lost: its node Lease went unrenewed for over half its
/// duration (at least two renewals missed; kubelets renew at a quarter of it). Until half
/// its duration after the API server returned to the primary (`api_returned`), a stale node
/// Lease is the outage's doing: every node missed its renewals then, and is still catching up.
pub fn node_lost(
    renewed: Option<Timestamp>,
    duration_seconds: i32,
    api_returned: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    let half = (duration_seconds / 2).max(1);
    let catching_up = api_returned
        .and_then(|at| lease::expires(Some(at), half))
        .is_some_and(|end| now <= end);
    !catching_up && lease::expired(renewed, half, now)
}

/// A replica as the election sees it: its agent's report of this moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Its agent answered now, as a ready replica.
    pub reachable: bool,
    pub system_identifier: Option<String>,
    /// The timeline of the WAL it received.
    pub timeline: Option<i64>,
    /// WAL received and flushed (`pg_last_wal_receive_lsn`).
    pub received_lsn: Option<String>,
    /// It streamed from the lost primary since its agent started.
    pub streamed_from_primary: bool,
    /// The primaries (addresses) it keeps a promise not to be promoted to.
    pub promises: Vec<crate::plan::vouch::PromiseReport>,
}

/// The replication settings and limits an election applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: SynchronousMode,
    /// `replication.synchronous.number`: the acknowledgements a commit waits for.
    pub number: i32,
    /// The standbys a commit may be acknowledged by: every replica of the cluster.
    pub replicas: usize,
    pub max_lag_bytes: i64,
}

/// The lost primary: its system identifier and the highest WAL position it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostPrimary<'a> {
    pub name: &'a str,
    pub system_identifier: Option<&'a str>,
    pub high_water: Option<&'a HighWater>,
}

/// The reasons an election gives when nobody may be promoted.
pub const BLOCKED_REASONS: [&str; 4] = [
    "NoCandidate",
    "QuorumNotReached",
    "CandidatesTooFarBehind",
    "ForcedCandidateUnavailable",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Election {
    /// Promote `name`; `lost_bytes` of WAL the old primary reported it never received.
    Promote { name: String, lost_bytes: u64 },
    /// Nobody qualifies: `reason` (one CamelCase word) and what a person can do.
    Wait {
        reason: &'static str,
        message: String,
    },
}

/// Whom to promote in place of `lost`. `forced` is the DBA's override: that replica is
/// promoted if it is reachable and of the same database, whatever it lacks.
pub fn elect(
    lost: &LostPrimary<'_>,
    candidates: &[Candidate],
    policy: &Policy,
    forced: Option<&str>,
) -> Election {
    let high_water = lost.high_water;
    let high = high_water.and_then(|h| parse_lsn(&h.lsn));
    let same_database = |c: &Candidate| {
        c.reachable
            && c.system_identifier.is_some()
            && c.system_identifier.as_deref() == lost.system_identifier
    };
    let received = |c: &Candidate| c.received_lsn.as_deref().and_then(parse_lsn);
    let lost_bytes = |c: &Candidate| high.unwrap_or(0).saturating_sub(received(c).unwrap_or(0));
    if let Some(forced) = forced {
        return match candidates
            .iter()
            .find(|c| c.name == forced && same_database(c))
        {
            Some(c) => Election::Promote {
                name: c.name.clone(),
                lost_bytes: lost_bytes(c),
            },
            None => Election::Wait {
                reason: "ForcedCandidateUnavailable",
                message: format!(
                    "{forced}, named by the {} annotation, is not a reachable replica of this database",
                    crate::api::cluster::FORCE_PROMOTE_ANNOTATION
                ),
            },
        };
    }
    let timeline = high_water.map(|h| h.timeline);
    // Why each replica that does not qualify does not, for the message a person reads.
    let excluded = |c: &Candidate| -> Option<&'static str> {
        if !c.reachable {
            Some("its agent did not answer as a running replica")
        } else if !same_database(c) {
            Some("another system identifier")
        } else if !c.streamed_from_primary || received(c).is_none() {
            Some("has not streamed since its agent started")
        } else if timeline.is_some() && c.timeline != timeline {
            Some("on another timeline")
        } else {
            None
        }
    };
    let eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| excluded(c).is_none())
        .collect();
    let reasons: Vec<String> = candidates
        .iter()
        .filter_map(|c| excluded(c).map(|why| format!("{}: {why}", c.name)))
        .collect();
    let excluded_note = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    };
    let override_hint = format!(
        "to promote one anyway and accept the loss, annotate the PgCluster with {}=<instance>",
        crate::api::cluster::FORCE_PROMOTE_ANNOTATION
    );
    // Every acknowledged commit is on some replica of any `number` of them; hearing from
    // `replicas - number + 1` means at least one of those is among the heard (R + W > N).
    let pool: Vec<&Candidate> = match policy.mode {
        SynchronousMode::Off => eligible.clone(),
        SynchronousMode::Quorum => {
            let needed = policy
                .replicas
                .saturating_sub(usize::try_from(policy.number).unwrap_or(0))
                + 1;
            if eligible.len() < needed {
                return Election::Wait {
                    reason: "QuorumNotReached",
                    message: format!(
                        "{} lost; synchronous quorum needs reports from {needed} of {} replicas that streamed from it, have {}{excluded_note}: a promoted replica could lack acknowledged commits; {override_hint}",
                        lost.name,
                        policy.replicas,
                        eligible.len()
                    ),
                };
            }
            eligible.clone()
        }
        SynchronousMode::Priority => {
            let sync: BTreeSet<&str> = high_water
                .map(|h| h.synchronous.iter().map(String::as_str).collect())
                .unwrap_or_default();
            eligible
                .iter()
                .copied()
                .filter(|c| sync.contains(c.name.as_str()))
                .collect()
        }
    };
    let best = pool
        .iter()
        .copied()
        .max_by(|a, b| received(a).cmp(&received(b)).then(b.name.cmp(&a.name)));
    let Some(best) = best else {
        let why = match policy.mode {
            SynchronousMode::Priority => "no reachable replica was a synchronous standby of it",
            _ => "no reachable replica of the same database and timeline streamed from it",
        };
        return Election::Wait {
            reason: "NoCandidate",
            message: format!("{} lost; {why}{excluded_note}; {override_hint}", lost.name),
        };
    };
    let behind = lost_bytes(best);
    if policy.mode == SynchronousMode::Off
        && behind > u64::try_from(policy.max_lag_bytes).unwrap_or(0)
    {
        return Election::Wait {
            reason: "CandidatesTooFarBehind",
            message: format!(
                "{} lost; the most advanced replica, {}, is {behind} bytes behind it, more than failover.maxLagBytes ({}); {override_hint}",
                lost.name, best.name, policy.max_lag_bytes
            ),
        };
    }
    Election::Promote {
        name: best.name.clone(),
        lost_bytes: behind,
    }
}

/// The replica a planned switchover moves the primary to: `requested`, or the most
/// caught-up one, and in either case a reachable replica of the database that streamed from
/// the primary and is at most `max_lag_bytes` behind it. Err says why not.
pub fn switchover_target(
    primary: &LostPrimary<'_>,
    candidates: &[Candidate],
    requested: Option<&str>,
    max_lag_bytes: i64,
) -> Result<String, String> {
    let pool: Vec<Candidate> = match requested {
        Some(name) => candidates
            .iter()
            .filter(|c| c.name == name)
            .cloned()
            .collect(),
        None => candidates.to_vec(),
    };
    if let Some(name) = requested.filter(|_| pool.is_empty()) {
        return Err(format!("{name} is not a replica of this cluster"));
    }
    let policy = Policy {
        mode: SynchronousMode::Off,
        number: 0,
        replicas: pool.len(),
        max_lag_bytes,
    };
    match elect(primary, &pool, &policy, None) {
        Election::Promote { name, .. } => Ok(name),
        Election::Wait { message, .. } => Err(message
            .split("; to promote")
            .next()
            .unwrap_or_default()
            .replacen(&format!("{} lost; ", primary.name), "", 1)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_lease_stale_from_an_api_outage_is_no_lost_node() {
        // Renewed at 0, a 10 s node Lease: lost after 5 s.
        assert!(!node_lost(Some(at(0)), 10, None, at(5)));
        assert!(node_lost(Some(at(0)), 10, None, at(6)));
        // The API came back to the primary at 20: the node has until 25 to renew.
        assert!(!node_lost(Some(at(0)), 10, Some(at(20)), at(21)));
        assert!(!node_lost(Some(at(0)), 10, Some(at(20)), at(25)));
        assert!(node_lost(Some(at(0)), 10, Some(at(20)), at(26)));
        // An outage long over changes nothing.
        assert!(node_lost(Some(at(100)), 10, Some(at(20)), at(106)));
        // A node Lease never renewed is lost (once no outage explains it).
        assert!(node_lost(None, 10, None, at(0)));
    }

    use super::*;
    use crate::plan::wal::format_lsn;
    use proptest::prelude::*;

    const SYSID: &str = "7300000000000000001";

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + second).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: i64) -> LeaseView {
        LeaseView {
            holder: holder.map(String::from),
            renewed: Some(at(renewed)),
            duration_seconds: 3,
        }
    }

    fn candidate(name: &str, received: u64) -> Candidate {
        Candidate {
            name: name.into(),
            reachable: true,
            system_identifier: Some(SYSID.into()),
            timeline: Some(1),
            received_lsn: Some(format_lsn(received)),
            streamed_from_primary: true,
            promises: Vec::new(),
        }
    }

    fn high_water(at: u64, synchronous: &[&str]) -> HighWater {
        HighWater {
            primary: "db-1".into(),
            timeline: 1,
            lsn: format_lsn(at),
            system_identifier: Some(SYSID.into()),
            synchronous: synchronous.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn policy(mode: SynchronousMode, number: i32, replicas: usize) -> Policy {
        Policy {
            mode,
            number,
            replicas,
            max_lag_bytes: 1000,
        }
    }

    fn elect_with(hw: &HighWater, candidates: &[Candidate], policy: &Policy) -> Election {
        let lost = LostPrimary {
            name: "db-1",
            system_identifier: Some(SYSID),
            high_water: Some(hw),
        };
        elect(&lost, candidates, policy, None)
    }

    fn promoted(e: &Election) -> Option<&str> {
        match e {
            Election::Promote { name, .. } => Some(name),
            Election::Wait { reason, .. } => {
                assert!(BLOCKED_REASONS.contains(reason), "{reason} is not listed");
                None
            }
        }
    }

    #[test]
    fn the_lease_decides_when_the_primary_is_lost() {
        let quiet = Signals::default();
        // Renewed at 0 for 3 s: valid through 3 s, lost after.
        assert_eq!(
            verdict("db-1", &lease(Some("db-1"), 0), &quiet, 0, at(3)),
            Verdict::Serving
        );
        assert!(matches!(
            verdict("db-1", &lease(Some("db-1"), 0), &quiet, 0, at(4)),
            Verdict::Lost(_)
        ));
        // delaySeconds holds the failover back after the expiry.
        assert_eq!(
            verdict("db-1", &lease(Some("db-1"), 0), &quiet, 5, at(4)),
            Verdict::Waiting(at(8))
        );
        assert!(matches!(
            verdict("db-1", &lease(Some("db-1"), 0), &quiet, 5, at(9)),
            Verdict::Lost(_)
        ));
        // Handed back after a fence, or taken by the operator for another: lost at once.
        assert!(matches!(
            verdict("db-1", &lease(None, 2), &quiet, 5, at(2)),
            Verdict::Lost(_)
        ));
        assert!(matches!(
            verdict("db-1", &lease(Some("db-2"), 2), &quiet, 0, at(2)),
            Verdict::Lost(_)
        ));
    }

    #[test]
    fn a_pod_replaced_on_purpose_gets_time_to_come_back() {
        let replacing = Signals {
            replacing: true,
            ..Default::default()
        };
        assert_eq!(
            verdict("db-1", &lease(Some("db-1"), 0), &replacing, 0, at(10)),
            Verdict::Waiting(at(33))
        );
        assert!(matches!(
            verdict("db-1", &lease(Some("db-1"), 0), &replacing, 0, at(34)),
            Verdict::Lost(_)
        ));
    }

    #[test]
    fn signals_only_ask_a_lease_holder_to_fence() {
        for signals in [
            Signals {
                pod_gone: true,
                ..Default::default()
            },
            Signals {
                agent_down: true,
                ..Default::default()
            },
            Signals {
                node_lost: true,
                ..Default::default()
            },
            Signals {
                crash_loop: true,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                verdict("db-1", &lease(Some("db-1"), 0), &signals, 0, at(1)),
                Verdict::Suspect(_)
            ));
        }
    }

    #[test]
    fn asynchronous_promotes_the_most_advanced_within_max_lag() {
        let p = policy(SynchronousMode::Off, 1, 2);
        let hw = high_water(10_000, &[]);
        let e = elect_with(
            &hw,
            &[candidate("db-2", 9_000), candidate("db-3", 9_500)],
            &p,
        );
        assert_eq!(
            e,
            Election::Promote {
                name: "db-3".into(),
                lost_bytes: 500
            }
        );
        // Exactly maxLagBytes behind still qualifies; one byte more does not.
        let e = elect_with(&hw, &[candidate("db-2", 9_000)], &p);
        assert_eq!(promoted(&e), Some("db-2"));
        let e = elect_with(&hw, &[candidate("db-2", 8_999)], &p);
        assert!(matches!(
            e,
            Election::Wait {
                reason: "CandidatesTooFarBehind",
                ..
            }
        ));
        assert_eq!(promoted(&e), None);
    }

    #[test]
    fn never_a_replica_of_another_database_timeline_or_primary() {
        let p = policy(SynchronousMode::Off, 1, 1);
        let hw = high_water(100, &[]);
        let mut other_db = candidate("db-2", 100);
        other_db.system_identifier = Some("42".into());
        let mut other_timeline = candidate("db-2", 100);
        other_timeline.timeline = Some(2);
        let mut never_streamed = candidate("db-2", 100);
        never_streamed.streamed_from_primary = false;
        let mut unreachable = candidate("db-2", 100);
        unreachable.reachable = false;
        let mut silent = candidate("db-2", 100);
        silent.received_lsn = None;
        for c in [
            other_db,
            other_timeline,
            never_streamed,
            unreachable,
            silent,
        ] {
            let e = elect_with(&hw, std::slice::from_ref(&c), &p);
            assert!(
                matches!(
                    e,
                    Election::Wait {
                        reason: "NoCandidate",
                        ..
                    }
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn quorum_needs_enough_replicas_heard() {
        // ANY 1 of 2 replicas: both must report; ANY 2 of 3: two must.
        let hw = high_water(100, &[]);
        let one_of_two = policy(SynchronousMode::Quorum, 1, 2);
        let e = elect_with(&hw, &[candidate("db-2", 50)], &one_of_two);
        assert!(matches!(
            e,
            Election::Wait {
                reason: "QuorumNotReached",
                ..
            }
        ));
        assert_eq!(promoted(&e), None);
        let e = elect_with(
            &hw,
            &[candidate("db-2", 50), candidate("db-3", 100)],
            &one_of_two,
        );
        assert_eq!(promoted(&e), Some("db-3"));
        let two_of_three = policy(SynchronousMode::Quorum, 2, 3);
        let e = elect_with(
            &hw,
            &[candidate("db-2", 50), candidate("db-4", 60)],
            &two_of_three,
        );
        assert_eq!(promoted(&e), Some("db-4"));
        let e = elect_with(&hw, &[candidate("db-2", 50)], &two_of_three);
        assert!(matches!(e, Election::Wait { .. }));
        // Synchronous: lag beyond maxLagBytes is WAL no commit was acknowledged for.
        let e = elect_with(
            &high_water(1_000_000, &[]),
            &[candidate("db-2", 5), candidate("db-3", 6)],
            &one_of_two,
        );
        assert_eq!(promoted(&e), Some("db-3"));
    }

    #[test]
    fn priority_promotes_only_a_synchronous_standby() {
        let p = policy(SynchronousMode::Priority, 1, 2);
        let hw = high_water(100, &["db-3"]);
        let e = elect_with(&hw, &[candidate("db-2", 100), candidate("db-3", 90)], &p);
        assert_eq!(promoted(&e), Some("db-3"));
        let e = elect_with(&hw, &[candidate("db-2", 100)], &p);
        assert!(matches!(
            e,
            Election::Wait {
                reason: "NoCandidate",
                ..
            }
        ));
    }

    #[test]
    fn the_override_takes_a_reachable_replica_of_the_database() {
        let p = policy(SynchronousMode::Quorum, 1, 2);
        let hw = high_water(100, &[]);
        let mut behind = candidate("db-2", 1);
        behind.streamed_from_primary = false;
        let lost = LostPrimary {
            name: "db-1",
            system_identifier: Some(SYSID),
            high_water: Some(&hw),
        };
        let e = elect(&lost, std::slice::from_ref(&behind), &p, Some("db-2"));
        assert_eq!(
            e,
            Election::Promote {
                name: "db-2".into(),
                lost_bytes: 99
            }
        );
        behind.system_identifier = Some("42".into());
        let e = elect(&lost, &[behind], &p, Some("db-2"));
        assert!(matches!(
            e,
            Election::Wait {
                reason: "ForcedCandidateUnavailable",
                ..
            }
        ));
        assert_eq!(promoted(&e), None);
    }

    #[test]
    fn a_switchover_goes_to_a_caught_up_reachable_replica() {
        let hw = high_water(10_000, &[]);
        let primary = LostPrimary {
            name: "db-1",
            system_identifier: Some(SYSID),
            high_water: Some(&hw),
        };
        let mut frozen = candidate("db-3", 10_000);
        frozen.reachable = false;
        let all = [candidate("db-2", 9_900), frozen];
        assert_eq!(
            switchover_target(&primary, &all, None, 1000),
            Ok("db-2".into())
        );
        assert_eq!(
            switchover_target(&primary, &all, Some("db-2"), 1000),
            Ok("db-2".into())
        );
        let refused = switchover_target(&primary, &all, Some("db-3"), 1000).unwrap_err();
        assert!(refused.contains("did not answer"), "{refused}");
        let refused = switchover_target(&primary, &all, Some("db-2"), 50).unwrap_err();
        assert!(refused.contains("bytes behind"), "{refused}");
        let refused = switchover_target(&primary, &all, Some("db-9"), 1000).unwrap_err();
        assert!(refused.contains("not a replica"), "{refused}");
    }

    proptest! {
        /// Whatever the reports, a promoted replica is reachable, of the database, on the
        /// timeline, streamed from the primary, and no eligible replica has more WAL.
        #[test]
        fn the_promoted_replica_qualifies_and_has_the_most_wal(
            reports in proptest::collection::vec((any::<bool>(), any::<bool>(), 1i64..3, 0u64..2000), 1..6),
            mode in prop_oneof![Just(SynchronousMode::Off), Just(SynchronousMode::Quorum)],
            number in 1i32..3,
        ) {
            let candidates: Vec<Candidate> = reports.iter().enumerate().map(|(i, (reachable, streamed, tl, at))| {
                let mut c = candidate(&format!("db-{}", i + 2), *at);
                c.reachable = *reachable;
                c.streamed_from_primary = *streamed;
                c.timeline = Some(*tl);
                c
            }).collect();
            let hw = high_water(1500, &[]);
            let p = policy(mode, number, candidates.len());
            if let Election::Promote { name, .. } = elect_with(&hw, &candidates, &p) {
                let chosen = candidates.iter().find(|c| c.name == name).unwrap();
                prop_assert!(chosen.reachable && chosen.streamed_from_primary && chosen.timeline == Some(1));
                let best = candidates.iter()
                    .filter(|c| c.reachable && c.streamed_from_primary && c.timeline == Some(1))
                    .map(|c| parse_lsn(c.received_lsn.as_deref().unwrap()).unwrap())
                    .max().unwrap();
                prop_assert_eq!(parse_lsn(chosen.received_lsn.as_deref().unwrap()).unwrap(), best);
                if mode == SynchronousMode::Off {
                    prop_assert!(1500u64.saturating_sub(best) <= 1000);
                }
            }
        }
    }
}
