//! `crds/` is exactly what `pgha crd` prints, and every schema is structural.

use std::path::Path;

use serde_json::Value;

#[test]
fn crds_directory_matches_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for crd in pgha::api::crd::all() {
        let file = dir.join(pgha::api::crd::file_name(&crd));
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        let generated = pgha::api::crd::to_yaml(&crd).expect("CRD serializes");
        assert!(
            on_disk == generated,
            "{} differs from the code: run `make crds` and commit the result",
            file.display()
        );
    }
    let kustomization =
        std::fs::read_to_string(dir.join("kustomization.yaml")).expect("crds/kustomization.yaml");
    for crd in pgha::api::crd::all() {
        let name = pgha::api::crd::file_name(&crd);
        assert!(
            kustomization.contains(&name),
            "crds/kustomization.yaml does not list {name}"
        );
    }
}

/// The API server accepts only structural schemas: every node has a type (or is an
/// int-or-string / preserve-unknown-fields node), and there are no references.
fn structural_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        return;
    };
    if node.contains_key("$ref") {
        out.push(format!("{path}: $ref"));
    }
    let typed = node.contains_key("type")
        || node.contains_key("x-kubernetes-int-or-string")
        || node.contains_key("x-kubernetes-preserve-unknown-fields");
    if !typed {
        out.push(format!("{path}: no type"));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = node.get(key).and_then(Value::as_array)
            && (!node.contains_key("x-kubernetes-int-or-string")
                || branches.iter().any(|b| b.get("properties").is_some()))
        {
            out.push(format!("{path}: {key} outside an int-or-string"));
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            structural_violations(child, &format!("{path}.{key}"), out);
        }
    }
}

#[test]
fn schemas_are_structural() {
    for crd in pgha::api::crd::all() {
        let schema = crd.spec.versions[0]
            .schema
            .clone()
            .and_then(|s| s.open_api_v3_schema);
        let schema = serde_json::to_value(schema.expect("schema")).expect("JSON");
        let mut violations = Vec::new();
        structural_violations(&schema, &crd.spec.names.plural, &mut violations);
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

#[test]
fn structural_check_catches_an_untyped_node() {
    let mut violations = Vec::new();
    let schema =
        serde_json::json!({"type": "object", "properties": {"x": {"description": "no type"}}});
    structural_violations(&schema, "t", &mut violations);
    assert_eq!(violations, vec!["t.x: no type".to_string()]);
}

#[test]
fn every_resource_has_status_subresource_and_printer_columns() {
    let expected = [
        (
            "pgclusters",
            "pgc",
            vec![
                "Instances",
                "Ready",
                "Primary",
                "Phase",
                "Last Backup",
                "Recoverable From",
                "WAL Waiting",
                "Age",
            ],
        ),
        (
            "pginstances",
            "pgi",
            vec!["Cluster", "Role", "Ready", "Timeline", "Lag", "Age"],
        ),
        (
            "pgbackups",
            "pgb",
            vec!["Cluster", "Phase", "Size", "Completed", "Archive", "Age"],
        ),
    ];
    for (crd, (plural, short, columns)) in pgha::api::crd::all().iter().zip(expected) {
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let names: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, columns);
    }
    // `kubectl get pgc` shows the last backup's age and the start of the recoverability window.
    let clusters = pgha::api::crd::all().remove(0);
    let columns = clusters.spec.versions[0].additional_printer_columns.clone();
    let column = |name: &str| {
        let c = columns.iter().flatten().find(|c| c.name == name).unwrap();
        (c.type_.clone(), c.json_path.clone())
    };
    assert_eq!(
        column("Last Backup"),
        ("date".into(), ".status.lastBackupAt".into())
    );
    assert_eq!(
        column("Recoverable From"),
        ("date".into(), ".status.firstRecoverabilityPoint".into())
    );
}
