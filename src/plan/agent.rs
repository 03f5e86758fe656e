//! The agent's next step: what it is told (orders) against what it is, one step at a time.

use serde::{Deserialize, Serialize};

pub use crate::api::cluster::RecoverySpec;
pub use crate::api::common::S3Spec;
pub use crate::api::instance::{
    BackupRequest, Endpoint, OrderedRole, PostgresConfig, PrimaryLease,
};

/// What the agent is told to be: the spec of its PgInstance (written by the cluster
/// controller), or a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Orders {
    pub role: OrderedRole,
    /// The primary to follow; required for a replica.
    #[serde(default)]
    pub primary: Option<Endpoint>,
    #[serde(default)]
    pub fenced: bool,
    #[serde(default)]
    pub config: PostgresConfig,
    /// Raised by one to have Postgres restarted (for settings that need it).
    #[serde(default)]
    pub restart: i64,
    /// The primary Lease to hold while primary; none when orders come from a file.
    #[serde(default)]
    pub lease: Option<PrimaryLease>,
    /// Where WAL is archived; a change reaches the archive commands at once (the agent
    /// rewrites their store file).
    #[serde(default)]
    pub archive: Option<S3Spec>,
    /// Restore the first data directory from here instead of running initdb.
    #[serde(default)]
    pub recovery: Option<RecoverySpec>,
    /// A base backup to take.
    #[serde(default)]
    pub backup: Option<BackupRequest>,
    /// The cluster's members and their addresses (none when orders come from a file).
    #[serde(default)]
    pub peers: Vec<crate::api::instance::Peer>,
    /// Roles and databases the primary keeps in Postgres.
    #[serde(default)]
    pub managed: Option<crate::api::managed::ManagedSpec>,
    /// The version of these orders (the PgInstance's `metadata.generation`), when known.
    #[serde(skip)]
    pub generation: Option<i64>,
}

impl Orders {
    /// What the agent of `spec` is told.
    pub fn from_spec(spec: &crate::api::PgInstanceSpec) -> Self {
        Self {
            role: spec.role,
            primary: spec.primary.clone(),
            fenced: spec.fenced,
            config: spec.config.clone(),
            restart: spec.restart,
            lease: spec.lease.clone(),
            archive: spec.archive.clone(),
            recovery: spec.recovery.clone(),
            backup: spec.backup.clone(),
            peers: spec.peers.clone(),
            managed: spec.managed.clone(),
            generation: None,
        }
    }

    /// The primary to follow, `None` for a primary.
    pub fn upstream(&self) -> Result<Option<&Endpoint>, OrdersError> {
        match self.role {
            OrderedRole::Primary => Ok(None),
            OrderedRole::Replica => self
                .primary
                .as_ref()
                .map(Some)
                .ok_or(OrdersError::ReplicaWithoutPrimary),
        }
    }
}

/// What the agent is now, as far as orders are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current<'a> {
    /// `None` for a primary, else the primary it follows.
    pub upstream: Option<&'a Endpoint>,
    pub fenced: bool,
    pub config: &'a PostgresConfig,
    /// A configuration Postgres refused: not tried again until the orders change it.
    pub rejected: Option<&'a PostgresConfig>,
    /// The highest `restart` order carried out (or in force when the agent started).
    pub restarted: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Fence,
    Unfence,
    ApplyConfig,
    /// Stop and start Postgres, for settings that only take effect then.
    Restart,
    Promote,
    Follow(Endpoint),
    /// Was a primary (or diverged): rewind or re-clone, then follow.
    Rejoin(Endpoint),
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrdersError {
    #[error("orders: role is replica but no primary is given; set primary: {{host, port}}")]
    ReplicaWithoutPrimary,
}

/// The one step that brings the agent closer to its orders. Fencing comes first (it is the
/// safety rule), a fenced agent does nothing else, and configuration is applied (and Postgres
/// restarted when ordered) before a role change so the new role starts with it.
pub fn next_step(orders: &Orders, current: &Current<'_>) -> Result<Step, OrdersError> {
    let wanted_upstream = orders.upstream()?;
    Ok(match (orders.fenced, current.fenced) {
        (true, false) => Step::Fence,
        (true, true) => Step::Nothing,
        // A fenced primary told to follow rejoins (rewind) without ever starting as a primary.
        (false, true) => match (wanted_upstream, current.upstream) {
            (Some(primary), None) => Step::Rejoin(primary.clone()),
            _ => Step::Unfence,
        },
        (false, false)
            if &orders.config != current.config && Some(&orders.config) != current.rejected =>
        {
            Step::ApplyConfig
        }
        (false, false) if orders.restart > current.restarted => Step::Restart,
        (false, false) => match (wanted_upstream, current.upstream) {
            (None, None) => Step::Nothing,
            (None, Some(_)) => Step::Promote,
            (Some(primary), None) => Step::Rejoin(primary.clone()),
            (Some(primary), Some(now)) if primary != now => Step::Follow(primary.clone()),
            (Some(_), Some(_)) => Step::Nothing,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            port: 5432,
        }
    }

    fn orders(role: OrderedRole, primary: Option<&str>, fenced: bool) -> Orders {
        Orders {
            role,
            primary: primary.map(endpoint),
            fenced,
            config: PostgresConfig::default(),
            restart: 0,
            lease: None,
            archive: None,
            recovery: None,
            backup: None,
            peers: Vec::new(),
            managed: None,
            generation: None,
        }
    }

    #[test]
    fn every_combination_has_one_step() {
        use OrderedRole::*;
        let config = PostgresConfig::default();
        let (a, b) = (endpoint("a"), endpoint("b"));
        let cases = [
            // ordered role, primary, fenced | current upstream, fenced | step
            (Primary, None, false, None, false, Step::Nothing),
            (Primary, None, false, Some(&a), false, Step::Promote),
            (
                Replica,
                Some("a"),
                false,
                None,
                false,
                Step::Rejoin(a.clone()),
            ),
            (Replica, Some("a"), false, Some(&a), false, Step::Nothing),
            (
                Replica,
                Some("b"),
                false,
                Some(&a),
                false,
                Step::Follow(b.clone()),
            ),
            (Primary, None, true, None, false, Step::Fence),
            (Replica, Some("a"), true, Some(&a), false, Step::Fence),
            (Primary, None, true, None, true, Step::Nothing),
            (Primary, None, false, None, true, Step::Unfence),
            (Replica, Some("b"), false, Some(&a), true, Step::Unfence),
            (
                Replica,
                Some("b"),
                false,
                None,
                true,
                Step::Rejoin(b.clone()),
            ),
        ];
        for (role, primary, fenced, upstream, is_fenced, step) in cases {
            let current = Current {
                upstream,
                fenced: is_fenced,
                config: &config,
                rejected: None,
                restarted: 0,
            };
            assert_eq!(
                next_step(&orders(role, primary, fenced), &current).unwrap(),
                step,
                "{role:?} {primary:?} fenced={fenced} / {upstream:?} fenced={is_fenced}"
            );
        }
    }

    #[test]
    fn configuration_goes_before_a_role_change_but_after_fencing() {
        let mut wanted = orders(OrderedRole::Primary, None, false);
        wanted
            .config
            .parameters
            .insert("work_mem".into(), "8MB".into());
        let old = PostgresConfig::default();
        let a = endpoint("a");
        let mut current = Current {
            upstream: Some(&a),
            fenced: false,
            config: &old,
            rejected: None,
            restarted: 0,
        };
        wanted.restart = 1;
        assert_eq!(next_step(&wanted, &current).unwrap(), Step::ApplyConfig);
        current.config = &wanted.config;
        // Restart after the configuration, before the promotion.
        assert_eq!(next_step(&wanted, &current).unwrap(), Step::Restart);
        current.restarted = 1;
        assert_eq!(next_step(&wanted, &current).unwrap(), Step::Promote);
        wanted.fenced = true;
        assert_eq!(next_step(&wanted, &current).unwrap(), Step::Fence);
    }

    #[test]
    fn a_refused_configuration_is_not_tried_again_and_holds_nothing_else_up() {
        let mut wanted = orders(OrderedRole::Primary, None, false);
        wanted
            .config
            .parameters
            .insert("work_mem".into(), "99999999999GB".into());
        let loaded = PostgresConfig::default();
        let a = endpoint("a");
        let mut current = Current {
            upstream: Some(&a),
            fenced: false,
            config: &loaded,
            rejected: Some(&wanted.config),
            restarted: 0,
        };
        assert_eq!(next_step(&wanted, &current).unwrap(), Step::Promote);
        // New orders: tried.
        let mut fixed = wanted.clone();
        fixed
            .config
            .parameters
            .insert("work_mem".into(), "8MB".into());
        assert_eq!(next_step(&fixed, &current).unwrap(), Step::ApplyConfig);
        current.rejected = None;
        assert_eq!(next_step(&wanted, &current).unwrap(), Step::ApplyConfig);
    }

    #[test]
    fn a_replica_needs_a_primary() {
        let config = PostgresConfig::default();
        let current = Current {
            upstream: None,
            fenced: false,
            config: &config,
            rejected: None,
            restarted: 0,
        };
        let err = next_step(&orders(OrderedRole::Replica, None, false), &current).unwrap_err();
        assert!(err.to_string().contains("set primary"));
    }
}
