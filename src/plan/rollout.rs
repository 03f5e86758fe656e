//! Rolling changes: restarts for settings that wait for one, and new images. Instances are
//! changed one at a time, the replicas first and the primary last. A change starts only when
//! every instance is ready and no other change is under way, so the cluster never loses
//! more than one member at once.

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
}
