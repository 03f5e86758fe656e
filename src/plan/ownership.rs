//! Whose archive an object-store path is. The first push or backup of a cluster records its
//! database system and the cluster in the path; every later writer must be that same database
//! *and* that same cluster. Two databases in one path restore neither, and a second cluster
//! restored from the first has the first's system identifier but its own history: its
//! timelines would collide with the original's while both run. A cluster made again under
//! the same namespace and name (on its retained volumes, or restored from this archive) is
//! the same cluster to its archive: one name is one live cluster at a time, and its history
//! goes on here on a timeline of its own.

use crate::api::common::{ArchiveOwner, ClusterIdentity};

/// Whether `writer` may write into the archive `record` describes.
pub fn admits(record: &ArchiveOwner, writer: &ArchiveOwner) -> bool {
    record.system_identifier == writer.system_identifier
        && match (&record.cluster, &writer.cluster) {
            (Some(owner), Some(writer)) => {
                owner.uid == writer.uid
                    || (owner.namespace == writer.namespace && owner.name == writer.name)
            }
            // A record or a writer outside Kubernetes: the database system decides alone.
            _ => true,
        }
}

/// `shop/orders (uid …)`.
pub fn cluster_name(cluster: &ClusterIdentity) -> String {
    format!(
        "{}/{} (uid {})",
        cluster.namespace, cluster.name, cluster.uid
    )
}

/// Who an owner record names, for a person: the cluster first, then the database system.
pub fn describe(owner: &ArchiveOwner) -> String {
    let since = owner
        .created
        .as_deref()
        .map(|at| format!(", claimed {at}"))
        .unwrap_or_default();
    match &owner.cluster {
        Some(cluster) => format!(
            "PgCluster {}, database system {}{since}",
            cluster_name(cluster),
            owner.system_identifier
        ),
        None => format!("database system {}{since}", owner.system_identifier),
    }
}

/// Why `writer` may not write into `location`, owned by `owner`, and what to do instead.
pub fn refusal(location: &str, owner: &ArchiveOwner, writer: &ArchiveOwner) -> String {
    let copy = if owner.system_identifier == writer.system_identifier {
        " (a copy restored from it under another name: the same database system, another \
         history)"
    } else {
        ""
    };
    let theirs = owner.cluster.as_ref().map_or("its owner".to_string(), |c| {
        format!("{}/{}", c.namespace, c.name)
    });
    format!(
        "{location} is the archive of {}; this is {}{copy}. Writing here would mix two \
         histories and neither could be restored: give this cluster its own \
         spec.backup.s3.path (unset, it is <namespace>/<name>). To take over the archive of a \
         cluster that is gone on purpose, delete {location}/owner.json once {theirs} no \
         longer archives there (docs/backup.md)",
        describe(owner),
        // The writer claims nothing: when it tried is no part of who it is.
        describe(&ArchiveOwner {
            created: None,
            ..writer.clone()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(system: &str, uid: Option<&str>) -> ArchiveOwner {
        named(system, uid, "orders")
    }

    fn named(system: &str, uid: Option<&str>, name: &str) -> ArchiveOwner {
        ArchiveOwner {
            system_identifier: system.into(),
            cluster: uid.map(|uid| ClusterIdentity {
                namespace: "shop".into(),
                name: name.into(),
                uid: uid.into(),
            }),
            created: Some("2026-12-07T20:00:00Z".into()),
        }
    }

    #[test]
    fn the_same_database_of_the_same_cluster_is_admitted() {
        let cases = [
            // (record, writer, admitted)
            (owner("7", Some("a")), owner("7", Some("a")), true),
            (owner("7", None), owner("7", Some("a")), true),
            (owner("7", Some("a")), owner("7", None), true),
            (owner("7", None), owner("7", None), true),
            // Another database, with or without a cluster.
            (owner("7", Some("a")), owner("8", Some("a")), false),
            (owner("7", None), owner("8", None), false),
            (owner("7", Some("a")), owner("8", None), false),
            // A copy restored under another name: refused.
            (
                owner("7", Some("a")),
                named("7", Some("b"), "orders-copy"),
                false,
            ),
            // The cluster made again under its name (retained volumes, or restored from here).
            (owner("7", Some("a")), owner("7", Some("b")), true),
            // ... but made by initdb: another database.
            (owner("7", Some("a")), owner("8", Some("b")), false),
        ];
        for (record, writer, admitted) in cases {
            assert_eq!(admits(&record, &writer), admitted, "{record:?} {writer:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_owner_the_writer_and_the_fix() {
        let text = refusal(
            "s3://pg/shop/orders",
            &owner("7", Some("a")),
            &owner("8", Some("b")),
        );
        assert!(
            text.starts_with(
                "s3://pg/shop/orders is the archive of PgCluster shop/orders (uid a), \
                 database system 7, claimed 2026-12-07T20:00:00Z; this is PgCluster \
                 shop/orders (uid b), database system 8. Writing"
            ),
            "{text}"
        );
        assert!(text.contains("give this cluster its own spec.backup.s3.path"));
        assert!(text.contains("delete s3://pg/shop/orders/owner.json once shop/orders"));
        assert!(!text.contains("a copy restored"));
        let copy = refusal("s3://pg/x", &owner("7", None), &named("7", Some("b"), "x"));
        assert!(copy.contains("a copy restored from it"), "{copy}");
        assert!(copy.contains("once its owner no longer"), "{copy}");
    }
}
