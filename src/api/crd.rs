//! The CustomResourceDefinitions, generated from the Rust types. `crds/` holds their output.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{PgBackup, PgCluster, PgDatabase, PgInstance};

/// Every CRD of the API, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        PgCluster::crd(),
        PgInstance::crd(),
        PgBackup::crd(),
        PgDatabase::crd(),
    ]
}

/// The file in `crds/` that holds a CRD: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// A CRD as the YAML document `pgha crd` prints.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}
