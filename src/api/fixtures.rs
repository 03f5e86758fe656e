//! Test fixtures shared by the unit tests of `api` and `plan`.

use super::PgCluster;

/// A PgCluster `name` in namespace `shop` with a 10Gi volume, its spec extended by `spec`,
/// as the API server would hand it to the operator (with a uid).
pub fn cluster(name: &str, spec: serde_json::Value) -> PgCluster {
    let mut object = serde_json::json!({
        "apiVersion": "pgha.dev/v1", "kind": "PgCluster",
        "metadata": {"name": name, "namespace": "shop", "uid": "0e6b1c3a-1111-2222-3333-444455556666"},
        "spec": {"storage": {"size": "10Gi"}},
    });
    if let (Some(base), Some(extra)) = (object["spec"].as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(object).expect("valid PgCluster")
}
