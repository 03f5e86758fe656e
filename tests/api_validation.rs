//! Every validation rule of the API, exercised with a bad value: OpenAPI rules through a JSON
//! Schema validator, CEL rules through kube's client-side CEL evaluator (with the schema's
//! defaults applied first, as the API server does). The e2e suite repeats these against a real
//! API server.

mod common;

use common::{admit, schema_of};
use kube::CustomResourceExt;
use kube::core::cel::compile_schema;
use pgha::api::{PgBackup, PgCluster, PgInstance};
use serde_json::{Value, json};

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "pgha.dev/v1",
        "kind": "PgCluster",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": spec,
    })
}

/// Merges `patch` into `base` (objects recursively, everything else replaced).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn minimal() -> Value {
    cluster(json!({"storage": {"size": "10Gi"}}))
}

fn with(patch: Value) -> Value {
    let mut object = minimal();
    merge(&mut object, &patch);
    object
}

fn s3() -> Value {
    json!({"bucket": "pg-backups", "path": "shop/orders", "credentialsSecret": "s3-creds"})
}

#[track_caller]
fn assert_rejected(object: Value, old: Option<Value>, expected: &str) {
    let errors = admit(&schema_of(PgCluster::crd()), &object, old.as_ref());
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:#?}"
    );
}

#[test]
fn every_cel_rule_compiles() {
    for crd in pgha::api::crd::all() {
        let compiled = compile_schema(&schema_of(crd));
        assert!(
            !compiled.has_errors(),
            "{:#?}",
            compiled.compilation_errors()
        );
    }
}

#[test]
fn minimal_cluster_is_accepted_and_defaulted() {
    let schema = schema_of(PgCluster::crd());
    assert_eq!(admit(&schema, &minimal(), None), Vec::<String>::new());
    let defaulted = kube::core::cel::apply_defaults(&schema, &minimal());
    let spec = &defaulted["spec"];
    assert_eq!(spec["instances"], 3);
    assert_eq!(spec["postgresVersion"], 15);
    assert_eq!(
        spec["replication"]["synchronous"],
        json!({"mode": "off", "number": 1})
    );
    assert_eq!(
        spec["bootstrap"],
        json!({"initdb": {"database": "app", "owner": "app"}})
    );
    assert_eq!(
        spec["failover"],
        json!({"maxLagBytes": 16777216, "delaySeconds": 0})
    );
}

#[test]
fn backup_defaults_fill_schedule_region_and_retention() {
    let schema = schema_of(PgCluster::crd());
    let object = with(json!({"spec": {"backup": {"s3": s3()}}}));
    assert_eq!(admit(&schema, &object, None), Vec::<String>::new());
    let backup = &kube::core::cel::apply_defaults(&schema, &object)["spec"]["backup"];
    assert_eq!(backup["schedule"], "0 0 * * *");
    assert_eq!(backup["s3"]["region"], "us-east-1");
    assert_eq!(backup["retention"], json!({"window": "30d"}));
}

#[test]
fn instances_range() {
    assert_rejected(
        with(json!({"spec": {"instances": 0}})),
        None,
        "/spec/instances: 0 is less than the minimum of 1",
    );
    assert_rejected(
        with(json!({"spec": {"instances": 33}})),
        None,
        "/spec/instances: 33 is greater than the maximum of 32",
    );
}

#[test]
fn postgres_version_range_and_no_downgrade() {
    assert_rejected(
        with(json!({"spec": {"postgresVersion": 12}})),
        None,
        "less than the minimum of 13",
    );
    assert_rejected(
        with(json!({"spec": {"postgresVersion": 15}})),
        Some(with(json!({"spec": {"postgresVersion": 16}}))),
        "postgresVersion may not go down",
    );
    let schema = schema_of(PgCluster::crd());
    let upgrade = with(json!({"spec": {"postgresVersion": 16}}));
    assert_eq!(
        admit(&schema, &upgrade, Some(&minimal())),
        Vec::<String>::new()
    );
}

#[test]
fn storage_size_is_a_quantity_of_at_least_1gi() {
    assert_rejected(
        with(json!({"spec": {"storage": {"size": "ten gigs"}}})),
        None,
        "/spec/storage/size: \"ten gigs\" does not match",
    );
    assert_rejected(
        with(json!({"spec": {"storage": {"size": "ten gigs"}}})),
        None,
        "storage.size must be a quantity of at least 1Gi",
    );
    assert_rejected(
        with(json!({"spec": {"storage": {"size": "512Mi"}}})),
        None,
        "storage.size must be a quantity of at least 1Gi",
    );
}

#[test]
fn storage_may_grow_but_not_shrink_or_change_class() {
    assert_rejected(
        with(json!({"spec": {"storage": {"size": "5Gi"}}})),
        Some(minimal()),
        "storage.size may grow but not shrink",
    );
    assert_rejected(
        with(json!({"spec": {"storage": {"storageClassName": "fast"}}})),
        Some(with(
            json!({"spec": {"storage": {"storageClassName": "slow"}}}),
        )),
        "storage.storageClassName is immutable",
    );
    assert_rejected(
        with(json!({"spec": {"storage": {"storageClassName": "fast"}}})),
        Some(minimal()),
        "storage.storageClassName is immutable",
    );
    let schema = schema_of(PgCluster::crd());
    let grown = with(json!({"spec": {"storage": {"size": "20Gi"}}}));
    assert_eq!(
        admit(&schema, &grown, Some(&minimal())),
        Vec::<String>::new()
    );
}

#[test]
fn synchronous_replication() {
    assert_rejected(
        with(json!({"spec": {"replication": {"synchronous": {"mode": "sometimes"}}}})),
        None,
        "/spec/replication/synchronous/mode: \"sometimes\" is not one of",
    );
    assert_rejected(
        with(json!({"spec": {"replication": {"synchronous": {"mode": "quorum", "number": 0}}}})),
        None,
        "less than the minimum of 1",
    );
    assert_rejected(
        with(json!({"spec": {"replication": {"synchronous": {"mode": "quorum", "number": 3}}}})),
        None,
        "replication.synchronous.number must be less than instances",
    );
    let schema = schema_of(PgCluster::crd());
    let ok =
        with(json!({"spec": {"replication": {"synchronous": {"mode": "priority", "number": 2}}}}));
    assert_eq!(admit(&schema, &ok, None), Vec::<String>::new());
}

#[test]
fn owned_parameters_are_rejected_by_name() {
    for (name, _) in pgha::api::postgres::OWNED_PARAMETERS {
        assert_rejected(
            with(json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB", *name: "x"}}}})),
            None,
            &format!("parameter {name} is managed by the operator and cannot be set"),
        );
    }
}

#[test]
fn parameter_rules() {
    assert_rejected(
        with(json!({"spec": {"postgresql": {"parameters": {"wal_level": "minimal"}}}})),
        None,
        "wal_level must be 'replica' or 'logical'",
    );
    assert_rejected(
        with(json!({"spec": {"postgresql": {"parameters": {"Work-Mem": "8MB"}}}})),
        None,
        "parameter names are lowercase Postgres settings",
    );
    assert_rejected(
        with(json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB\nfsync = off"}}}})),
        None,
        "parameter values may not contain line breaks",
    );
    assert_rejected(
        with(json!({"spec": {"postgresql": {"parameters": {"max_connections": 200}}}})),
        None,
        "/spec/postgresql/parameters/max_connections: 200 is not of type \"string\"",
    );
    let schema = schema_of(PgCluster::crd());
    let ok = with(
        json!({"spec": {"postgresql": {"parameters": {"wal_level": "logical", "pg_stat_statements.max": "5000"}}}}),
    );
    assert_eq!(admit(&schema, &ok, None), Vec::<String>::new());
}

#[test]
fn pg_hba_lines_must_be_rules() {
    assert_rejected(
        with(json!({"spec": {"postgresql": {"pgHba": ["allow everyone"]}}})),
        None,
        "/spec/postgresql/pgHba/0: \"allow everyone\" does not match",
    );
}

#[test]
fn bootstrap_rules() {
    let recovery = json!({"source": {"s3": s3()}});
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"initdb": {}, "recovery": recovery}}})),
        None,
        "bootstrap: set exactly one of initdb or recovery",
    );
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"initdb": {"owner": "postgres"}}}})),
        None,
        "bootstrap.initdb.owner must not be postgres",
    );
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"initdb": {"owner": "pg_monitor"}}}})),
        None,
        "bootstrap.initdb.owner must not be postgres, streaming_replica or start with pg_",
    );
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"initdb": {"database": "template1"}}}})),
        None,
        "bootstrap.initdb.database must not be postgres, template0 or template1",
    );
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"initdb": {"database": "Orders-DB"}}}})),
        None,
        "/spec/bootstrap/initdb/database: \"Orders-DB\" does not match",
    );
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"initdb": {"database": "orders"}}}})),
        Some(minimal()),
        "bootstrap is immutable",
    );
}

#[test]
fn recovery_rules() {
    let mut no_path = s3();
    no_path.as_object_mut().map(|o| o.remove("path"));
    assert_rejected(
        with(json!({"spec": {"bootstrap": {"recovery": {"source": {"s3": no_path}}}}})),
        None,
        "bootstrap.recovery.source.s3.path is required",
    );
    let target = |t: Value| {
        with(json!({"spec": {"bootstrap": {"recovery": {"source": {"s3": s3()}, "target": t}}}}))
    };
    assert_rejected(
        target(json!({"lsn": "0/3000060", "immediate": true})),
        None,
        "bootstrap.recovery.target: set exactly one of time, lsn, name or immediate",
    );
    assert_rejected(
        target(json!({})),
        None,
        "set exactly one of time, lsn, name or immediate",
    );
    assert_rejected(
        target(json!({"immediate": false})),
        None,
        "immediate can only be true",
    );
    assert_rejected(
        target(json!({"time": "yesterday"})),
        None,
        "/spec/bootstrap/recovery/target/time: \"yesterday\" is not a \"date-time\"",
    );
    assert_rejected(
        target(json!({"lsn": "3000060"})),
        None,
        "/spec/bootstrap/recovery/target/lsn: \"3000060\" does not match",
    );
    let schema = schema_of(PgCluster::crd());
    for ok in [
        json!({"time": "2026-11-20T14:03:00Z"}),
        json!({"lsn": "0/3000060"}),
        json!({"name": "before-migration"}),
        json!({"immediate": true}),
    ] {
        assert_eq!(admit(&schema, &target(ok), None), Vec::<String>::new());
    }
}

#[test]
fn backup_rules() {
    let backup = |b: Value| {
        let mut spec = json!({"s3": s3()});
        merge(&mut spec, &b);
        with(json!({"spec": {"backup": spec}}))
    };
    assert_rejected(
        backup(json!({"schedule": "every day"})),
        None,
        "/spec/backup/schedule: \"every day\" does not match",
    );
    assert_rejected(
        backup(json!({"retention": {"window": "30 days"}})),
        None,
        "/spec/backup/retention/window: \"30 days\" does not match",
    );
    assert_rejected(
        backup(json!({"retention": {"count": 0}})),
        None,
        "/spec/backup/retention/count: 0 is less than the minimum of 1",
    );
    assert_rejected(
        backup(json!({"s3": {"bucket": "Pg_Backups"}})),
        None,
        "/spec/backup/s3/bucket: \"Pg_Backups\" does not match",
    );
    assert_rejected(
        backup(json!({"s3": {"endpoint": "ftp://store"}})),
        None,
        "/spec/backup/s3/endpoint: \"ftp://store\" does not match",
    );
    assert_rejected(
        backup(json!({"s3": {"path": "/leading/slash"}})),
        None,
        "/spec/backup/s3/path: \"/leading/slash\" does not match",
    );
    let mut no_secret = s3();
    no_secret
        .as_object_mut()
        .map(|o| o.remove("credentialsSecret"));
    let object = with(json!({"spec": {"backup": {"s3": no_secret}}}));
    assert_rejected(object, None, "\"credentialsSecret\" is a required property");
}

#[test]
fn failover_rules() {
    assert_rejected(
        with(json!({"spec": {"failover": {"delaySeconds": -1}}})),
        None,
        "/spec/failover/delaySeconds: -1 is less than the minimum of 0",
    );
    assert_rejected(
        with(json!({"spec": {"failover": {"maxLagBytes": -1}}})),
        None,
        "/spec/failover/maxLagBytes: -1 is less than the minimum of 0",
    );
}

#[test]
fn cluster_names_fit_every_child() {
    let named = |name: &str| {
        let mut object = minimal();
        object["metadata"]["name"] = json!(name);
        object
    };
    assert_rejected(
        named("Orders"),
        None,
        "metadata.name must start with a lowercase letter",
    );
    assert_rejected(
        named("1orders"),
        None,
        "metadata.name must start with a lowercase letter",
    );
    assert_rejected(
        named(&"a".repeat(51)),
        None,
        "metadata.name may be at most 50 characters",
    );
    let schema = schema_of(PgCluster::crd());
    assert_eq!(
        admit(&schema, &named(&"a".repeat(50)), None),
        Vec::<String>::new()
    );
}

#[test]
fn instance_identity_is_immutable() {
    let schema = schema_of(PgInstance::crd());
    let instance = |cluster: &str, ordinal: i32| {
        json!({
            "apiVersion": "pgha.dev/v1", "kind": "PgInstance",
            "metadata": {"name": "orders-1", "namespace": "shop"},
            "spec": {"cluster": cluster, "ordinal": ordinal, "postgresVersion": 15,
                     "image": "pgha/postgres:15", "storage": {"size": "10Gi"}},
        })
    };
    assert_eq!(
        admit(&schema, &instance("orders", 1), None),
        Vec::<String>::new()
    );
    let moved = admit(
        &schema,
        &instance("billing", 1),
        Some(&instance("orders", 1)),
    );
    assert!(
        moved.iter().any(|e| e.contains("cluster is immutable")),
        "{moved:?}"
    );
    let renumbered = admit(
        &schema,
        &instance("orders", 2),
        Some(&instance("orders", 1)),
    );
    assert!(
        renumbered
            .iter()
            .any(|e| e.contains("ordinal is immutable")),
        "{renumbered:?}"
    );
}

#[test]
fn backup_spec_is_immutable() {
    let schema = schema_of(PgBackup::crd());
    let backup = |target: &str| {
        json!({
            "apiVersion": "pgha.dev/v1", "kind": "PgBackup",
            "metadata": {"name": "orders-manual", "namespace": "shop"},
            "spec": {"cluster": "orders", "target": target},
        })
    };
    assert_eq!(
        admit(&schema, &backup("primary"), None),
        Vec::<String>::new()
    );
    let changed = admit(&schema, &backup("primary"), Some(&backup("preferStandby")));
    assert!(
        changed
            .iter()
            .any(|e| e.contains("a PgBackup's spec is immutable")),
        "{changed:?}"
    );
    let bad = admit(&schema, &backup("replica"), None);
    assert!(
        bad.iter()
            .any(|e| e.contains("/spec/target: \"replica\" is not one of")),
        "{bad:?}"
    );
}
