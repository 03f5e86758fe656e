//! Rolling changes: restarts for settings that wait for one, and new images. Instances are
//! changed one at a time, the replicas first and the primary last. A change starts only when
//! every instance is ready and no other change is under way, so the cluster never loses
//! more than one member at once.

use chrono::{DateTime, TimeDelta, Utc};

use crate::api::{PgClusterStatus, PgInstance};

/// One instance as the rollout sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub primary: bool,
    pub ready: bool,
    /// The agent reports settings waiting for a restart.
    pub pending_restart: bool,
    /// `spec.restart`: restarts ordered so far.
    pub ordered: i64,
    /// `status.restarted`: restarts carried out.
    pub done: i64,
    /// The agent has applied the configuration of its current orders (so it has said whether
    /// that configuration needs a restart).
    pub config_current: bool,
    /// Its pod does not (yet) run the image its spec names.
    pub image_changing: bool,
    /// Its spec names an image other than the cluster's.
    pub image_stale: bool,
}

/// The instance that gets the cluster's image now, if any.
pub fn next_image(members: &[Member]) -> Option<&str> {
    next(members, |m| m.image_stale)
}

/// The instance whose restart counter goes up now, if any.
pub fn next_restart(members: &[Member]) -> Option<&str> {
    next(members, |m| m.pending_restart)
}

fn next(members: &[Member], wants: impl Fn(&Member) -> bool) -> Option<&str> {
    let under_way = members
        .iter()
        .any(|m| m.ordered > m.done || m.image_changing);
    // Until every agent has applied the new configuration, a replica that needs a restart
    // may not have said so yet, and the primary would go first.
    let settled = members.iter().all(|m| m.ready && m.config_current);
    if under_way || !settled {
        return None;
    }
    let first = |primary: bool| members.iter().find(|m| wants(m) && m.primary == primary);
    first(false)
        .or_else(|| first(true))
        .map(|m| m.name.as_str())
}

/// What a rollout does about the instance whose turn it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn<'a> {
    /// Change this instance now.
    Change(&'a str),
    /// The primary's turn: move the primary to a replica first (a switchover); the old
    /// primary is changed once it is a replica.
    MovePrimary,
}

/// The primary's turn becomes a switchover when `move_primary` (the cluster asks for
/// `primaryUpdateMethod: switchover`, a replica is ready, and no switchover was refused a
/// moment ago, which would make this a loop of refusals).
pub fn turn<'a>(next: Option<&'a str>, members: &[Member], move_primary: bool) -> Option<Turn<'a>> {
    let next = next?;
    let primary = members.iter().any(|m| m.primary && m.name == next);
    let replica_ready = members.iter().any(|m| !m.primary && m.ready);
    Some(if primary && move_primary && replica_ready {
        Turn::MovePrimary
    } else {
        Turn::Change(next)
    })
}

/// A switchover the operator asked for (a rollout's or a scale-down's) was refused in the two
/// minutes before `now`.
pub fn refused_lately(status: &PgClusterStatus, now: DateTime<Utc>) -> bool {
    status.last_switchover.as_ref().is_some_and(|s| {
        let started = DateTime::from_timestamp(s.started.0.as_second(), 0).unwrap_or_default();
        s.refused.is_some() && now - started < TimeDelta::minutes(2)
    })
}

/// The instance a scale-down moves the primary to when the primary's own instance goes: the
/// ready one that stays, with the least lag. `None` when the primary stays.
pub fn scale_down_target<'a>(
    instances: &'a [PgInstance],
    primary: &str,
    wanted: i32,
) -> Option<&'a str> {
    let leaving = instances
        .iter()
        .any(|i| i.metadata.name.as_deref() == Some(primary) && i.spec.ordinal > wanted);
    if !leaving {
        return None;
    }
    instances
        .iter()
        .filter(|i| i.spec.ordinal <= wanted)
        .filter(|i| i.status.as_ref().is_some_and(|s| s.ready))
        .min_by_key(|i| {
            let lag = i.status.as_ref().and_then(|s| s.lag_bytes);
            (lag.unwrap_or(i64::MAX), i.spec.ordinal)
        })
        .and_then(|i| i.metadata.name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, primary: bool, pending: bool) -> Member {
        Member {
            name: name.into(),
            primary,
            ready: true,
            pending_restart: pending,
            ordered: 0,
            done: 0,
            config_current: true,
            image_changing: false,
            image_stale: false,
        }
    }

    #[test]
    fn replicas_first_the_primary_last_one_at_a_time() {
        let mut members = vec![
            member("a-1", true, true),
            member("a-2", false, true),
            member("a-3", false, true),
        ];
        assert_eq!(next_restart(&members), Some("a-2"));
        members[1].ordered = 1;
        assert_eq!(next_restart(&members), None, "a-2 is restarting");
        members[1].done = 1;
        members[1].ready = false;
        assert_eq!(next_restart(&members), None, "a-2 is not ready yet");
        members[1].ready = true;
        members[1].pending_restart = false;
        assert_eq!(next_restart(&members), Some("a-3"));
        members[2].pending_restart = false;
        assert_eq!(next_restart(&members), Some("a-1"));
        members[0].pending_restart = false;
        assert_eq!(next_restart(&members), None);
    }

    #[test]
    fn not_before_every_agent_has_applied_the_configuration() {
        let mut members = vec![member("a-1", true, true), member("a-2", false, false)];
        members[1].config_current = false;
        assert_eq!(next_restart(&members), None, "a-2 may need a restart too");
        members[1].config_current = true;
        assert_eq!(next_restart(&members), Some("a-1"));
    }

    #[test]
    fn images_roll_the_same_way_and_one_change_waits_for_the_other() {
        let mut members = vec![member("a-1", true, false), member("a-2", false, false)];
        members[0].image_stale = true;
        members[1].image_stale = true;
        assert_eq!(next_image(&members), Some("a-2"));
        members[1].image_stale = false;
        members[1].image_changing = true;
        assert_eq!(next_image(&members), None, "a-2's pod is being replaced");
        members[1].pending_restart = true;
        assert_eq!(
            next_restart(&members),
            None,
            "no restart during an image change"
        );
        members[1].image_changing = false;
        assert_eq!(next_image(&members), Some("a-1"));
    }

    #[test]
    fn nothing_pending_nothing_restarts() {
        let members = vec![member("a-1", true, false), member("a-2", false, false)];
        assert_eq!(next_restart(&members), None);
    }

    #[test]
    fn the_primary_s_turn_is_a_switchover_unless_told_otherwise() {
        let members = vec![member("a-1", true, true), member("a-2", false, false)];
        let next = next_restart(&members);
        assert_eq!(next, Some("a-1"));
        assert_eq!(turn(next, &members, true), Some(Turn::MovePrimary));
        assert_eq!(turn(next, &members, false), Some(Turn::Change("a-1")));
        // A replica's turn is a change whatever the method.
        let replica_first = vec![member("a-1", true, true), member("a-2", false, true)];
        assert_eq!(
            turn(next_restart(&replica_first), &replica_first, true),
            Some(Turn::Change("a-2"))
        );
        // Alone, the primary restarts in place.
        let alone = vec![member("a-1", true, true)];
        assert_eq!(
            turn(next_restart(&alone), &alone, true),
            Some(Turn::Change("a-1"))
        );
        assert_eq!(turn(None, &members, true), None);
    }

    fn instance(ordinal: i32, ready: bool, lag: i64) -> PgInstance {
        let spec: crate::api::PgInstanceSpec = serde_json::from_value(serde_json::json!({
            "cluster": "a", "ordinal": ordinal, "postgresVersion": 15,
            "image": "pgha/postgres:15", "storage": {"size": "1Gi"},
        }))
        .unwrap();
        let mut i = PgInstance::new(&format!("a-{ordinal}"), spec);
        i.status = Some(crate::api::PgInstanceStatus {
            ready,
            lag_bytes: Some(lag),
            ..Default::default()
        });
        i
    }

    #[test]
    fn scale_down_moves_a_leaving_primary_to_the_best_instance_that_stays() {
        let all = [
            instance(1, true, 900),
            instance(2, true, 10),
            instance(3, true, 0),
            instance(4, false, 0),
        ];
        assert_eq!(scale_down_target(&all, "a-3", 3), None, "the primary stays");
        assert_eq!(scale_down_target(&all, "a-3", 2), Some("a-2"));
        assert_eq!(scale_down_target(&all, "a-3", 1), Some("a-1"));
        let none_ready = [instance(1, false, 0), instance(2, true, 0)];
        assert_eq!(scale_down_target(&none_ready, "a-2", 1), None);
    }

    #[test]
    fn a_refusal_holds_back_new_requests_for_two_minutes() {
        use crate::api::cluster::Switchover;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let mut status = PgClusterStatus {
            last_switchover: Some(Switchover {
                from: "a-1".into(),
                to: "a-2".into(),
                started: Time(k8s_openapi::jiff::Timestamp::from_second(1000).unwrap()),
                completed: None,
                refused: Some("a-2 is behind".into()),
            }),
            ..Default::default()
        };
        assert!(refused_lately(&status, at(1100)));
        assert!(!refused_lately(&status, at(1121)));
        status.last_switchover.as_mut().unwrap().refused = None;
        assert!(!refused_lately(&status, at(1100)));
    }
}
