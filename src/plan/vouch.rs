//! Members vouching for their primary (shared/DESIGN.md §4 rule 7; the argument is in
//! docs/failover.md, "When the Kubernetes API is away"). A primary that cannot renew its
//! Lease keeps serving while a majority of the members, itself included, promise over the pod
//! network not to be promoted for a while; a replica is promoted only once a majority of the
//! members say they make no such promise to anyone else. Pure: times are parameters, each
//! measured on the clock of the member that makes the promise or keeps the hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The majority of a cluster of `members` instances.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// What a member's orders say, as far as vouching goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stance<'a> {
    /// Ordered to be primary (fenced or not): it vouches for nobody.
    pub ordered_primary: bool,
    /// The address of the primary its orders say to follow.
    pub follows: Option<&'a str>,
}

/// Whether a member with `stance` vouches for the primary at `host`: only for the primary its
/// orders say to follow. Once the operator re-points it, it vouches for the old one no more.
pub fn vouches_for(stance: &Stance<'_>, host: &str) -> bool {
    !stance.ordered_primary && stance.follows == Some(host)
}

/// The promises a member has made: primary address → until when it will not be promoted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Promises(BTreeMap<String, Instant>);

impl Promises {
    /// Promises `host` not to be promoted for `lasting` from `now` (never shortening one).
    pub fn make(&mut self, host: &str, now: Instant, lasting: Duration) {
        let until = now + lasting;
        let kept = self.0.entry(host.to_string()).or_insert(until);
        *kept = (*kept).max(until);
        self.forget_ended(now);
    }

    fn forget_ended(&mut self, now: Instant) {
        self.0.retain(|_, until| *until > now);
    }

    /// The promises still running at `now`, with how long each has left.
    pub fn running(&self, now: Instant) -> Vec<PromiseReport> {
        self.0
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(primary, until)| PromiseReport {
                primary: primary.clone(),
                remaining_millis: u64::try_from((*until - now).as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// When the last promise to anyone but `host` runs out; None when none runs at `now`.
    pub fn to_others_until(&self, host: &str, now: Instant) -> Option<Instant> {
        self.0
            .iter()
            .filter(|(primary, until)| primary.as_str() != host && **until > now)
            .map(|(_, until)| *until)
            .max()
    }
}

/// A running promise, as a member reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromiseReport {
    /// The address of the primary it was made to.
    pub primary: String,
    pub remaining_millis: u64,
}

/// Until when a primary may act on a round of vouches it sent at `sent`, in which `granted`
/// other members promised not to be promoted for the Lease time: for `hold`, the time its
/// Lease would hold it (`plan::lease::holds_for`: the Lease time less the margin for the
/// members' clocks running at other rates than its own), if a majority of `members` stands
/// behind it; a cluster of one needs nobody's word.
pub fn held_until(
    sent: Instant,
    granted: usize,
    members: usize,
    hold: Duration,
) -> Option<Instant> {
    (granted + 1 >= majority(members)).then(|| sent + hold)
}

/// A member as it answers a replica about to be promoted (`GET /peer`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// Postgres runs on it as a primary (not fenced, not in recovery).
    pub serving_primary: bool,
    pub ordered_primary: bool,
    /// The primary its orders say to follow (its address).
    #[serde(default)]
    pub follows: Option<String>,
    #[serde(default)]
    pub promises: Vec<PromiseReport>,
}

/// Whether the member at `me` may be promoted, given what the others answered: half of the
/// `members` or more, `me` included, must stand where no other primary can count on them —
/// serving as primary nowhere, vouching for nobody but `me`, and keeping no promise to anyone
/// else. Any other instance then finds too few members left to make a majority with it, now or
/// later (their promises to others have run out, and they make no new ones).
pub fn may_take_over(me: &str, members: usize, answers: &[PeerReport]) -> Result<(), String> {
    let behind = answers
        .iter()
        .filter(|a| !a.serving_primary)
        .filter(|a| !a.ordered_primary || a.follows.is_none())
        .filter(|a| a.follows.as_deref().is_none_or(|f| f == me))
        .filter(|a| a.promises.iter().all(|p| p.primary == me))
        .count();
    let needed = members - members / 2;
    if behind + 1 >= needed {
        Ok(())
    } else {
        Err(format!(
            "{} of {members} members stand behind this promotion, {needed} must: the others \
             may still vouch for another primary, or did not answer",
            behind + 1
        ))
    }
}

/// The operator's side: a primary whose Lease ran out that a majority of the members still
/// stand behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vouched {
    /// The other members that promised it (none in a cluster of one).
    pub by: Vec<String>,
    /// Until when the promises seen keep a majority behind it: until then, no replica can be
    /// promoted anyway, so a member that does not answer for a moment changes nothing.
    pub until: Instant,
}

/// Whether the members' `reports` (each other member that answered: its name and running
/// promises, as of `now`) make a majority of `members` with the primary at `host`.
pub fn vouched(
    host: &str,
    members: usize,
    reports: &[(&str, &[PromiseReport])],
    now: Instant,
) -> Option<Vouched> {
    let mut promised: Vec<(&str, u64)> = reports
        .iter()
        .filter_map(|(name, promises)| {
            let left = promises.iter().filter(|p| p.primary == host);
            Some((*name, left.map(|p| p.remaining_millis).max()?))
        })
        .collect();
    // The majority lasts as long as the shortest of its longest promises.
    promised.sort_by_key(|(_, left)| std::cmp::Reverse(*left));
    let needed = majority(members) - 1;
    let lasts = match needed {
        0 => 0,
        n => promised.get(n - 1)?.1,
    };
    Some(Vouched {
        by: promised.iter().map(|(name, _)| name.to_string()).collect(),
        until: now + Duration::from_millis(lasts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instance::PrimaryLease;
    use crate::plan::lease::holds_for;
    use proptest::prelude::*;

    const P: &str = "127.1.0.2";
    const T: &str = "127.2.0.2";

    fn report(follows: Option<&str>, promised: &[&str]) -> PeerReport {
        PeerReport {
            serving_primary: false,
            ordered_primary: false,
            follows: follows.map(String::from),
            promises: promised
                .iter()
                .map(|p| PromiseReport {
                    primary: p.to_string(),
                    remaining_millis: 100,
                })
                .collect(),
        }
    }

    #[test]
    fn majorities() {
        let m: Vec<usize> = (1..=6).map(majority).collect();
        assert_eq!(m, [1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn a_member_vouches_only_for_the_primary_it_follows() {
        let following = Stance {
            ordered_primary: false,
            follows: Some(P),
        };
        assert!(vouches_for(&following, P));
        assert!(!vouches_for(&following, T));
        let promoted = Stance {
            ordered_primary: true,
            follows: None,
        };
        assert!(!vouches_for(&promoted, P));
    }

    #[test]
    fn a_primary_holds_on_a_majority_of_vouches_less_the_margin() {
        let sent = Instant::now();
        // A 3 s Lease less a 1 s margin.
        let hold = holds_for(&PrimaryLease {
            name: "orders-primary".into(),
            duration_seconds: 3,
            renew_millis: 500,
            fence_margin_millis: 1000,
        });
        assert_eq!(
            held_until(sent, 0, 1, hold),
            Some(sent + Duration::from_secs(2))
        );
        assert_eq!(held_until(sent, 0, 3, hold), None);
        assert!(held_until(sent, 1, 3, hold).is_some());
        assert!(held_until(sent, 1, 4, hold).is_none());
        assert!(held_until(sent, 2, 5, hold).is_some());
    }

    #[test]
    fn promises_run_out_and_never_shrink() {
        let now = Instant::now();
        let mut p = Promises::default();
        p.make(P, now, Duration::from_secs(3));
        p.make(P, now, Duration::from_secs(1));
        assert_eq!(p.running(now)[0].remaining_millis, 3000);
        assert_eq!(
            p.to_others_until(T, now),
            Some(now + Duration::from_secs(3))
        );
        assert_eq!(p.to_others_until(P, now), None);
        assert!(p.running(now + Duration::from_secs(3)).is_empty());
    }

    #[test]
    fn a_promotion_needs_a_majority_that_vouches_for_nobody_else() {
        // Three members: the target and one other suffice.
        assert!(may_take_over(T, 3, &[report(Some(T), &[])]).is_ok());
        // The other still follows the old primary, or keeps a promise to it.
        assert!(may_take_over(T, 3, &[report(Some(P), &[])]).is_err());
        assert!(may_take_over(T, 3, &[report(Some(T), &[P])]).is_err());
        // The old primary itself, fenced and following the target, stands behind it.
        let fenced = PeerReport {
            ordered_primary: true,
            ..PeerReport::default()
        };
        assert!(may_take_over(T, 3, &[fenced]).is_ok());
        let serving = PeerReport {
            serving_primary: true,
            ..PeerReport::default()
        };
        assert!(may_take_over(T, 3, &[serving]).is_err());
        // Nobody answered: only a cluster of one or two may go on (the other of two needs
        // this one's vouch).
        assert!(may_take_over(T, 3, &[]).is_err());
        assert!(may_take_over(T, 2, &[]).is_ok());
        assert!(may_take_over(T, 5, &[report(None, &[]), report(Some(T), &[T])]).is_ok());
    }

    #[test]
    fn the_operator_sees_a_vouched_primary_until_the_majority_s_promises_run_out() {
        let now = Instant::now();
        let to = |host: &str, ms: u64| PromiseReport {
            primary: host.into(),
            remaining_millis: ms,
        };
        let (a, b, none) = ([to(P, 3000)], [to(P, 1000), to(T, 5000)], []);
        let until = |members, reports: &[(&str, &[PromiseReport])]| {
            vouched(P, members, reports, now).map(|v| (v.by, v.until - now))
        };
        let ms = Duration::from_millis;
        let by = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            until(3, &[("a", &a), ("c", &none)]),
            Some((by(&["a"]), ms(3000)))
        );
        assert_eq!(until(3, &[("c", &none), ("d", &none)]), None);
        // A promise to another primary is none to this one.
        assert_eq!(until(3, &[("t", &[to(T, 3000)])]), None);
        assert_eq!(until(1, &[]), Some((vec![], ms(0))));
        assert_eq!(until(5, &[("a", &a), ("c", &none)]), None);
        // Two of four others needed: the majority ends when the second-longest promise does.
        assert_eq!(
            until(5, &[("b", &b), ("a", &a), ("c", &none)]),
            Some((by(&["a", "b"]), ms(1000)))
        );
    }

    proptest! {
        /// Whatever the members answer, a primary holding a majority's vouches and a target
        /// cleared for promotion never coexist: every majority of vouchers contains a member
        /// the target's majority counted as standing behind it, which vouches for no one else.
        #[test]
        fn a_vouched_primary_and_a_cleared_target_exclude_each_other(
            members in 2usize..8,
            follows_p in proptest::collection::vec(any::<bool>(), 8),
        ) {
            // Members other than P and T: each follows P (and may vouch for it) or T.
            let others = members - 2;
            let stances: Vec<bool> = follows_p[..others].to_vec();
            // The target counts as vouching for nobody else; P's vouchers are those that follow P.
            let vouchers = stances.iter().filter(|f| **f).count();
            let answers: Vec<PeerReport> = stances
                .iter()
                .map(|f| if *f { report(Some(P), &[P]) } else { report(Some(T), &[]) })
                .collect();
            let p_holds = held_until(Instant::now(), vouchers, members, Duration::from_secs(2)).is_some();
            let t_cleared = may_take_over(T, members, &answers).is_ok();
            prop_assert!(!(p_holds && t_cleared), "members {members}, vouchers {vouchers}");
        }
    }
}
