//! Every validation rule of the API, exercised with a bad value: OpenAPI rules through a JSON
//! Schema validator, CEL rules through kube's client-side CEL evaluator (with the schema's
//! defaults applied first, as the API server does). The cases are the table in
//! tests/common/rejections.rs, which tests/apiserver.rs runs against a real API server.

mod common;
// The API server's wording in the table is for tests/apiserver.rs.
#[allow(dead_code)]
#[path = "common/rejections.rs"]
mod rejections;

use common::{admit, schema_of};
use kube::CustomResourceExt;
use kube::core::cel::compile_schema;
use pgha::api::{PgBackup, PgCluster, PgDatabase, PgInstance};
use rejections::{backup, instance, merge, minimal, named, recovery_target, s3, with};
use serde_json::{Value, json};

fn schema_for(object: &Value) -> Value {
    match object["kind"].as_str() {
        Some("PgCluster") => schema_of(PgCluster::crd()),
        Some("PgInstance") => schema_of(PgInstance::crd()),
        Some("PgBackup") => schema_of(PgBackup::crd()),
        Some("PgDatabase") => schema_of(PgDatabase::crd()),
        other => panic!("no schema for {other:?}"),
    }
}

fn assert_accepted(object: &Value, old: Option<&Value>) {
    assert_eq!(
        admit(&schema_for(object), object, old),
        Vec::<String>::new(),
        "{object}"
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
fn every_bad_input_is_rejected_with_its_message() {
    let cases = rejections::all();
    assert!(cases.len() > 70, "{}", cases.len());
    for case in cases {
        let errors = admit(&schema_for(&case.object), &case.object, case.old.as_ref());
        assert!(
            errors.iter().any(|e| e.contains(&case.offline)),
            "expected an error containing {:?} for {}, got {errors:#?}",
            case.offline,
            case.object
        );
    }
}

#[test]
fn minimal_cluster_is_accepted_and_defaulted() {
    let schema = schema_of(PgCluster::crd());
    assert_accepted(&minimal(), None);
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
        json!({"maxLagBytes": 16777216, "delaySeconds": 0, "leaseSeconds": 3,
               "renewMillis": 500, "fenceMarginMillis": 1000})
    );
}

#[test]
fn backup_defaults_fill_schedule_region_and_retention() {
    let schema = schema_of(PgCluster::crd());
    let object = with(json!({"spec": {"backup": {"s3": s3()}}}));
    assert_accepted(&object, None);
    let backup = &kube::core::cel::apply_defaults(&schema, &object)["spec"]["backup"];
    assert_eq!(backup["schedule"], "0 0 * * *");
    assert_eq!(backup["s3"]["region"], "us-east-1");
    assert_eq!(backup["retention"], json!({"window": "30d"}));
}

/// The allowed neighbours of the rejected values: the rules are not too strict.
#[test]
fn valid_variants_are_accepted() {
    let upgrade = with(json!({"spec": {"postgresVersion": 16}}));
    assert_accepted(&upgrade, Some(&minimal()));
    let grown = with(json!({"spec": {"storage": {"size": "20Gi"}}}));
    assert_accepted(&grown, Some(&minimal()));
    let sync =
        with(json!({"spec": {"replication": {"synchronous": {"mode": "priority", "number": 2}}}}));
    assert_accepted(&sync, None);
    let parameters = with(
        json!({"spec": {"postgresql": {"parameters": {"wal_level": "logical", "pg_stat_statements.max": "5000"}}}}),
    );
    assert_accepted(&parameters, None);
    for target in [
        json!({"time": "2026-11-20T14:03:00Z"}),
        json!({"lsn": "0/3000060"}),
        json!({"name": "before-migration"}),
        json!({"immediate": true}),
    ] {
        assert_accepted(&recovery_target(target), None);
    }
    let mut spec = json!({"s3": s3()});
    merge(&mut spec, &json!({"retention": {"count": 3}}));
    assert_accepted(&with(json!({"spec": {"backup": spec}})), None);
    assert_accepted(&named(&"a".repeat(50)), None);
    assert_accepted(&instance("orders", 1), None);
    assert_accepted(&backup("primary"), None);
}
