//! Types shared by several resources: storage, object stores, schema helpers.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The regular expression Kubernetes itself uses for a resource quantity.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Schema of a quantity such as `10Gi`: an int-or-string, as structural schemas require.
pub fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

/// Schema of container resources: `requests` and `limits` maps of quantities. Shorter than the
/// upstream `ResourceRequirements` schema, whose `claims` do not apply to Postgres pods.
pub fn resources_schema(generator: &mut SchemaGenerator) -> Schema {
    let quantities = json_schema!({
        "type": "object",
        "additionalProperties": quantity_schema(generator),
    });
    json_schema!({
        "type": "object",
        "properties": {"requests": quantities, "limits": quantities},
    })
}

/// Persistent storage of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message("storage.storageClassName is immutable: volumes cannot move between storage classes; create a new cluster from a backup to change it"))]
#[x_kube(validation = Rule::new(
    "!isQuantity(string(self.size)) || !isQuantity(string(oldSelf.size)) || quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0"
).message("storage.size may grow but not shrink: Kubernetes cannot shrink a volume"))]
pub struct StorageSpec {
    /// Size of each instance's data volume, a Kubernetes quantity of at least `1Gi`
    /// (example: `10Gi`). It may grow later, never shrink.
    #[schemars(schema_with = "quantity_schema")]
    #[x_kube(validation = Rule::new(
        "isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('1Gi')) >= 0"
    ).message("storage.size must be a quantity of at least 1Gi, for example 10Gi"))]
    pub size: Quantity,
    /// StorageClass of the data volumes (example: `fast-ssd`). Unset uses the cluster's default
    /// class. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to an instance's volume when the instance goes (scale down, cluster
    /// deleted): `Delete` removes the volume and its data with it; `Retain` keeps the PVC
    /// (named like the instance) for a person, or for a later instance of the same name,
    /// which then starts on that data.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// What happens to a volume whose instance goes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// The volume is deleted with its instance.
    #[default]
    Delete,
    /// The volume stays.
    Retain,
}

/// An S3-compatible object store location.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Bucket name (example: `pg-backups`).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix inside the bucket under which this cluster's WAL and base backups live
    /// (example: `prod/orders`). Unset uses the cluster's namespace and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$"),
        length(max = 512)
    )]
    pub path: Option<String>,
    /// Endpoint URL of an S3-compatible service (example: `https://minio.storage:9000`).
    /// Unset uses AWS S3 for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"), length(max = 2048))]
    pub endpoint: Option<String>,
    /// Region of the bucket (example: `eu-west-1`).
    #[serde(default = "default_region")]
    #[schemars(regex(pattern = r"^[a-z0-9-]+$"), length(min = 1, max = 64))]
    pub region: String,
    /// Name of a Secret in the cluster's namespace with the keys `ACCESS_KEY_ID` and
    /// `SECRET_ACCESS_KEY` (example: `pg-backup-credentials`).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub credentials_secret: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Whose archive an object-store path is: written once, by the first push or backup of a
/// cluster, to `<path>/owner.json`; pushes and backups of any other database are refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveOwner {
    /// The database system (`pg_control_system()`), kept by every replica and every restore.
    pub system_identifier: String,
    /// The PgCluster that claimed the archive; absent when `pgha` ran outside Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterIdentity>,
    /// When the archive was claimed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// A PgCluster, unmistakably: a cluster deleted and created again under its name has a new uid.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}
