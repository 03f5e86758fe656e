//! Rolling restarts. When instances report settings that wait for a restart, they are
//! restarted one at a time: the replicas first, the primary last. Each restart happens only
//! when every instance is ready and no other restart is under way, so the cluster never
//! loses more than one member at once.

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
}

/// The instance whose restart counter goes up now, if any.
pub fn next_restart(members: &[Member]) -> Option<&str> {
    let under_way = members.iter().any(|m| m.ordered > m.done);
    // Until every agent has applied the new configuration, a replica that needs a restart
    // may not have said so yet, and the primary would go first.
    let settled = members.iter().all(|m| m.ready && m.config_current);
    if under_way || !settled {
        return None;
    }
    let pending = |primary: bool| {
        members
            .iter()
            .find(|m| m.pending_restart && m.primary == primary)
    };
    pending(false)
        .or_else(|| pending(true))
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
    fn nothing_pending_nothing_restarts() {
        let members = vec![member("a-1", true, false), member("a-2", false, false)];
        assert_eq!(next_restart(&members), None);
    }
}
