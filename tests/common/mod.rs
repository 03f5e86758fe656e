//! What the tests share: the API server's admission checks, run offline.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use serde_json::Value;

/// The openAPIV3Schema of a CRD as JSON.
pub fn schema_of(crd: CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .and_then(|s| s.open_api_v3_schema);
    serde_json::to_value(schema.expect("CRD has a schema")).expect("schema is JSON")
}

/// Errors the API server would report for `object` (an update when `old` is given), as
/// `path: message` strings: OpenAPI rules through a JSON Schema validator, CEL rules through
/// kube's client-side evaluator, both after the schema's defaults are applied.
pub fn admit(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    let defaulted = kube::core::cel::apply_defaults(schema, object);
    let openapi = jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("schema compiles");
    let mut errors: Vec<String> = openapi
        .iter_errors(&defaulted)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect();
    if let Err(cel) = Validator::new().validate(schema, &defaulted, old) {
        errors.extend(cel.iter().map(|e| e.to_string()));
    }
    errors
}
