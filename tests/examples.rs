//! deploy/examples are what users copy: they must be accepted, and full.yaml must show every
//! field. docs/api.md must document every field.

mod common;

use std::path::Path;

use common::{admit, schema_of};
use kube::CustomResourceExt;
use pgha::api::{PgCluster, PgDatabase};
use serde_json::Value;

/// Every property path below `spec` in a schema, such as `spec.storage.size`.
pub fn spec_paths(schema: &Value) -> Vec<String> {
    fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            out.push(child_path.clone());
            walk(child, &child_path, out);
        }
    }
    let mut out = Vec::new();
    walk(&schema["properties"]["spec"], "spec", &mut out);
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

fn load(path: &str) -> (Value, PgCluster) {
    let text = read(path);
    let value: Value = serde_saphyr::from_str(&text).expect("YAML");
    let cluster: PgCluster = serde_saphyr::from_str(&text).expect("PgCluster");
    (value, cluster)
}

#[test]
fn examples_are_accepted_by_schema_and_operator() {
    let schema = schema_of(PgCluster::crd());
    for path in ["deploy/examples/minimal.yaml", "deploy/examples/full.yaml"] {
        let (value, mut cluster) = load(path);
        assert_eq!(admit(&schema, &value, None), Vec::<String>::new(), "{path}");
        cluster
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        assert!(pgha::plan::validation::validate(&cluster).is_ok(), "{path}");
    }
}

#[test]
fn roles_example_is_accepted_document_by_document() {
    let text = read("deploy/examples/roles.yaml");
    let mut kinds = Vec::new();
    for document in text.split("\n---\n") {
        let value: Value = serde_saphyr::from_str(document).expect("YAML");
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let schema = match kind.as_str() {
            "PgCluster" => schema_of(PgCluster::crd()),
            "PgDatabase" => schema_of(PgDatabase::crd()),
            _ => {
                kinds.push(kind);
                continue;
            }
        };
        assert_eq!(admit(&schema, &value, None), Vec::<String>::new(), "{kind}");
        kinds.push(kind);
    }
    assert_eq!(kinds, ["Secret", "PgCluster", "PgDatabase"]);
}

#[test]
fn minimal_example_is_at_most_12_lines() {
    let lines = read("deploy/examples/minimal.yaml").lines().count();
    assert!(lines <= 12, "minimal.yaml has {lines} lines");
}

/// Whether `path` (`spec.a.b`) is set in `value`.
fn is_set(value: &Value, path: &str) -> bool {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .is_some()
}

#[test]
fn full_example_shows_every_field() {
    let (value, _) = load("deploy/examples/full.yaml");
    let text = read("deploy/examples/full.yaml");
    let schema = schema_of(PgCluster::crd());
    for path in spec_paths(&schema) {
        // Fields of the other bootstrap method, and certificates one brings (they name
        // Secrets the example cannot make), are shown in a comment.
        let key = path.rsplit('.').next().unwrap_or_default();
        let commented = path.starts_with("spec.bootstrap.recovery") || path.starts_with("spec.tls");
        let shown = is_set(&value, &path) || (commented && text.contains(&format!("{key}:")));
        let inside_a_map =
            path.starts_with("spec.resources.") || path.starts_with("spec.postgresql.parameters.");
        assert!(shown || inside_a_map, "full.yaml does not show {path}");
    }
}

#[test]
fn api_reference_documents_every_field() {
    let docs = read("docs/api.md");
    for crd in pgha::api::crd::all() {
        let kind = crd.spec.names.kind.clone();
        for path in spec_paths(&schema_of(crd)) {
            assert!(
                docs.contains(&format!("`{path}`")),
                "docs/api.md does not document {kind} `{path}`"
            );
        }
    }
}
