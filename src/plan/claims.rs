//! Which PgDatabases a cluster's primary keeps, and what each one's status says: the operator's
//! half of `plan::managed`.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::managed::{
    Applied, DatabaseReclaimPolicy, Ensure, ManagedDatabase, PgDatabase, PgDatabaseStatus,
};

/// Keeps a PgDatabase with `databaseReclaimPolicy: delete` until its database is dropped.
pub const FINALIZER: &str = "pgha.dev/drop-database";

/// The PgDatabases of one cluster, sorted out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims {
    /// What the primary is told to keep (a PgDatabase being deleted with `delete`: absent).
    pub managed: Vec<ManagedDatabase>,
    /// PgDatabases that lost their database to an older one, with the message that says so.
    pub conflicts: BTreeMap<String, String>,
}

/// The cluster's PgDatabases: the oldest claims a database name (then the name of the
/// resource decides), later ones are refused. A PgDatabase being deleted with `retain` is
/// no longer kept (its database stays as it is); with `delete` its database is dropped.
pub fn claims(databases: &[&PgDatabase]) -> Claims {
    let mut sorted: Vec<&PgDatabase> = databases.to_vec();
    sorted.sort_by_key(|d| (d.creation_timestamp(), d.name_any()));
    let mut owners: BTreeMap<&str, String> = BTreeMap::new();
    let mut out = Claims::default();
    for database in sorted {
        let resource = database.name_any();
        let name = database.spec.name.as_str();
        if let Some(owner) = owners.get(name) {
            out.conflicts.insert(
                resource,
                format!("database {name:?} is already managed by PgDatabase {owner}; give this one another name or delete it"),
            );
            continue;
        }
        let deleting = database.metadata.deletion_timestamp.is_some();
        // Being deleted, it keeps a database it had, but takes none: one that lost its claim
        // and was deleted meanwhile must never drop the database of the one that had it.
        if deleting && database.status.as_ref().and_then(|s| s.applied) != Some(true) {
            continue;
        }
        owners.insert(name, resource.clone());
        let mut spec = database.spec.clone();
        if deleting {
            if spec.database_reclaim_policy == DatabaseReclaimPolicy::Retain {
                continue;
            }
            spec.ensure = Ensure::Absent;
        }
        out.managed.push(ManagedDatabase {
            resource,
            generation: database.metadata.generation.unwrap_or_default(),
            spec,
        });
    }
    out
}

/// A PgDatabase's status from the claims and the primary's report (None: no report yet).
pub fn status(
    database: &PgDatabase,
    claims: &Claims,
    report: Option<&[Applied]>,
) -> PgDatabaseStatus {
    let resource = database.name_any();
    let generation = database.metadata.generation;
    if let Some(conflict) = claims.conflicts.get(&resource) {
        return PgDatabaseStatus {
            applied: Some(false),
            observed_generation: generation,
            message: Some(conflict.clone()),
        };
    }
    let applied = report.and_then(|r| r.iter().find(|a| a.name == resource));
    match applied {
        Some(a) if a.generation == generation => PgDatabaseStatus {
            applied: Some(a.applied),
            observed_generation: generation,
            message: a.message.clone(),
        },
        // Not applied yet: what the primary said last stays, with the generation it said it
        // of; nothing from the primary yet (or only that the cluster was missing): waiting.
        _ => match &database.status {
            Some(said) if said.observed_generation.is_some() => said.clone(),
            _ => PgDatabaseStatus {
                applied: Some(false),
                observed_generation: None,
                message: Some("waiting for the cluster's primary".into()),
            },
        },
    }
}

/// The status of a PgDatabase whose cluster does not exist.
pub fn without_cluster(cluster: &str, namespace: &str) -> PgDatabaseStatus {
    PgDatabaseStatus {
        applied: Some(false),
        observed_generation: None,
        message: Some(format!(
            "PgCluster {cluster} does not exist in namespace {namespace}: the database is made once it does"
        )),
    }
}

/// What to do with a PgDatabase's finalizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finalizer {
    Add,
    Remove,
    Keep,
}

/// `delete` PgDatabases that hold their database carry the finalizer until the primary
/// reports it dropped at the generation the deletion made; others never carry it (one that
/// lost its claim to an older one would wait for a drop that never comes).
pub fn finalizer(database: &PgDatabase, claims: &Claims, report: Option<&[Applied]>) -> Finalizer {
    let has = database.finalizers().iter().any(|f| f == FINALIZER);
    let wants = database.spec.database_reclaim_policy == DatabaseReclaimPolicy::Delete
        && !claims.conflicts.contains_key(&database.name_any());
    let deleting = database.metadata.deletion_timestamp.is_some();
    let dropped = || {
        report
            .and_then(|r| r.iter().find(|a| a.name == database.name_any()))
            .is_some_and(|a| a.applied && a.generation == database.metadata.generation)
    };
    match (has, wants, deleting) {
        (false, true, false) => Finalizer::Add,
        (true, false, _) => Finalizer::Remove,
        (true, true, true) if dropped() => Finalizer::Remove,
        _ => Finalizer::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(resource: &str, name: &str, created: &str, policy: &str) -> PgDatabase {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgha.dev/v1", "kind": "PgDatabase",
            "metadata": {"name": resource, "namespace": "shop", "generation": 1,
                         "creationTimestamp": created},
            "spec": {"cluster": "orders", "name": name, "owner": "app",
                     "databaseReclaimPolicy": policy},
        }))
        .unwrap()
    }

    fn deleting(mut d: PgDatabase, finalizer: bool) -> PgDatabase {
        d.metadata.deletion_timestamp = d.metadata.creation_timestamp.clone();
        d.metadata.generation = Some(2);
        if finalizer {
            d.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
        d
    }

    fn applied(name: &str, generation: i64, ok: bool) -> Applied {
        Applied {
            name: name.into(),
            applied: ok,
            generation: Some(generation),
            message: (!ok).then(|| "boom".into()),
            repaired: None,
        }
    }

    #[test]
    fn the_oldest_claim_keeps_a_database_name() {
        let old = database("reports", "reports", "2026-01-01T00:00:00Z", "retain");
        let new = database("reports-2", "reports", "2026-02-01T00:00:00Z", "retain");
        let other = database("billing", "billing", "2026-03-01T00:00:00Z", "retain");
        let claims = claims(&[&new, &other, &old]);
        let kept: Vec<&str> = claims.managed.iter().map(|m| m.resource.as_str()).collect();
        assert_eq!(kept, ["reports", "billing"]);
        let message = &claims.conflicts["reports-2"];
        assert!(message.contains("PgDatabase reports"), "{message}");
        let status = status(&new, &claims, Some(&[applied("reports-2", 1, true)]));
        assert_eq!(status.applied, Some(false));
    }

    #[test]
    fn deletion_drops_the_database_only_when_asked() {
        let retain = deleting(database("a", "a", "2026-01-01T00:00:00Z", "retain"), false);
        let mut delete = deleting(database("b", "b", "2026-01-01T00:00:00Z", "delete"), true);
        delete.status = Some(PgDatabaseStatus {
            applied: Some(true),
            observed_generation: Some(1),
            message: None,
        });
        let claims = claims(&[&retain, &delete]);
        assert_eq!(claims.managed.len(), 1);
        assert_eq!(claims.managed[0].resource, "b");
        assert_eq!(claims.managed[0].spec.ensure, Ensure::Absent);
        assert_eq!(claims.managed[0].generation, 2);
    }

    #[test]
    fn the_finalizer_goes_once_the_drop_is_reported_at_the_deletion_generation() {
        let none = Claims::default();
        let live = database("b", "b", "2026-01-01T00:00:00Z", "delete");
        assert_eq!(finalizer(&live, &none, None), Finalizer::Add);
        let retain = database("a", "a", "2026-01-01T00:00:00Z", "retain");
        assert_eq!(finalizer(&retain, &none, None), Finalizer::Keep);
        let gone = deleting(live, true);
        let table = [
            (None, Finalizer::Keep),
            (Some(vec![applied("b", 1, true)]), Finalizer::Keep),
            (Some(vec![applied("b", 2, false)]), Finalizer::Keep),
            (Some(vec![applied("b", 2, true)]), Finalizer::Remove),
        ];
        for (report, want) in table {
            assert_eq!(
                finalizer(&gone, &none, report.as_deref()),
                want,
                "{report:?}"
            );
        }
        let mut changed_mind = gone.clone();
        changed_mind.spec.database_reclaim_policy = DatabaseReclaimPolicy::Retain;
        assert_eq!(finalizer(&changed_mind, &none, None), Finalizer::Remove);
    }

    #[test]
    fn a_claim_lost_or_never_held_drops_nothing() {
        let holder = database("reports", "reports", "2026-01-01T00:00:00Z", "retain");
        let loser = database("reports-2", "reports", "2026-02-01T00:00:00Z", "delete");
        let both = claims(&[&holder, &loser]);
        // The loser never gets the finalizer, and loses one it had.
        assert_eq!(finalizer(&loser, &both, None), Finalizer::Keep);
        let mut had = loser.clone();
        had.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert_eq!(finalizer(&had, &both, None), Finalizer::Remove);
        // Deleted while it held nothing, it takes nothing once the holder is gone.
        let after = claims(&[&deleting(loser, false)]);
        assert_eq!(after.managed, []);
    }

    #[test]
    fn status_follows_the_report_of_the_current_generation() {
        let d = database("a", "a", "2026-01-01T00:00:00Z", "retain");
        let claims = claims(&[&d]);
        let waiting = status(&d, &claims, None);
        assert_eq!(waiting.applied, Some(false));
        assert_eq!(
            waiting.message.as_deref(),
            Some("waiting for the cluster's primary")
        );
        let failed = status(&d, &claims, Some(&[applied("a", 1, false)]));
        assert_eq!(
            (failed.applied, failed.message.as_deref()),
            (Some(false), Some("boom"))
        );
        let done = status(&d, &claims, Some(&[applied("a", 1, true)]));
        assert_eq!(
            (done.applied, done.observed_generation),
            (Some(true), Some(1))
        );
    }
}
