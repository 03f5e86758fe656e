//! `PgInstance`: one Postgres server, created and owned by the cluster controller.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::BackupResult;
use super::cluster::{PlacementSpec, RecoverySpec, RetentionSpec, TlsSpec};
use super::common::{ArchiveOwner, S3Spec, StorageSpec, resources_schema};
use super::managed::{ManagedSpec, ManagedStatus};

/// One Postgres server of a PgCluster. Written by the operator, never by users.
// clippy reads the repeated `type_ = …` of printcolumn(...) as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgha.dev",
    version = "v1",
    kind = "PgInstance",
    namespaced,
    derive = "PartialEq",
    shortname = "pgi",
    category = "pgha",
    status = "PgInstanceStatus",
    doc = "One Postgres server of a PgCluster (managed by the operator)",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(name = "Timeline", type_ = "integer", json_path = ".status.timeline"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lagBytes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PgInstanceSpec {
    /// Name of the PgCluster this instance belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable"))]
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// Position of the instance in its cluster, from 1; part of its name. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("ordinal is immutable"))]
    #[schemars(range(min = 1, max = 999))]
    pub ordinal: i32,
    /// PostgreSQL major version.
    #[schemars(range(min = 13, max = 17))]
    pub postgres_version: i32,
    /// Container image with the Postgres server and the pgha agent.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// The instance's data volume.
    pub storage: StorageSpec,
    /// CPU and memory of the Postgres container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// The role the operator orders the instance's agent to hold.
    #[serde(default)]
    pub role: OrderedRole,
    /// The primary a replica follows; unset until the primary serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<Endpoint>,
    /// Stop accepting writes: set when this instance may no longer be primary.
    #[serde(default)]
    pub fenced: bool,
    /// Postgres configuration, from the cluster's spec.
    #[serde(default)]
    pub config: PostgresConfig,
    /// Raised by one when Postgres must restart for a setting to take effect (the cluster
    /// controller rolls this through the replicas first, the primary last).
    #[serde(default)]
    pub restart: i64,
    /// The cluster's primary Lease: a primary holds it, renews it and fences itself when it
    /// cannot. Unset: the agent runs without one (only outside Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<PrimaryLease>,
    /// The cluster's object store (`spec.backup.s3`, path filled in): the primary archives
    /// WAL there, replicas fetch what streaming no longer has. Unset: no archiving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<S3Spec>,
    /// Set on the first instance of a cluster bootstrapped from a backup: its init pod
    /// restores from here (source path filled in) instead of running initdb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
    /// A base backup the agent is to take (set by the backup controller, one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRequest>,
    /// The cluster's `spec.placement`, for the instance's pods.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// The cluster's `spec.tls`: where the server certificate comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// The cluster's instances and their pods' addresses, for the members' promises to
    /// their primary over the pod network when the Kubernetes API does not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// The roles and databases the primary keeps in Postgres (validated where users write
    /// them: PgCluster `spec.roles` and PgDatabase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "unchecked_object")]
    pub managed: Option<ManagedSpec>,
}

/// An object the operator writes and the schema does not look into: the rules of its parts
/// (immutable fields, reserved names) are for the resources users write, and would be
/// meaningless (and too costly for the API server) here.
fn unchecked_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A stretch of time a primary served without renewing its Lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseOutage {
    /// When the Lease was renewed again.
    pub ended: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// How long it went unrenewed.
    pub seconds: f64,
}

/// A member of the cluster and where its agent listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Peer {
    pub name: String,
    /// Its pod's address.
    pub host: String,
}

/// A PgBackup assigned to an instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// The PgBackup's name; the agent reports on it under `status.backup`.
    pub name: String,
    /// Applied to the archive after the backup completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
}

/// Where the primary Lease is and how it is kept (from the cluster's `spec.failover`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrimaryLease {
    /// The Lease's name, in the instance's namespace.
    pub name: String,
    /// How long a renewal is valid.
    pub duration_seconds: i32,
    /// How often the holder renews.
    pub renew_millis: i32,
    /// The holder fences itself this long before its last renewal could expire.
    pub fence_margin_millis: i32,
}

/// Observed state of an instance, written by its agent and the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgInstanceStatus {
    /// `Pending` → `Initializing` → `Running`, or `Failed` with a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InstancePhase>,
    /// Why the instance is in its phase, in one CamelCase word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a person should know about the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failed attempts to initialise the data directory; retries back off by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_failures: Option<i32>,
    /// What the server is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<InstanceRole>,
    /// Whether the server accepts the connections its role should.
    #[serde(default)]
    pub ready: bool,
    /// Postgres timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Where the instance's Postgres listens (its pod's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// Postgres system identifier; equal on every instance of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// WAL written (primary) or replayed (replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_lsn: Option<String>,
    /// The host of the primary this replica has streamed WAL from since its agent started;
    /// only such a replica may be promoted when that primary is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamed_from: Option<String>,
    /// The postmaster crashed three times within two minutes.
    #[serde(default)]
    pub crash_loop: bool,
    /// The last time this primary served on its members' promises because its Lease could
    /// not be renewed (the Kubernetes API did not answer it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lease_outage: Option<LeaseOutage>,
    /// WAL received from the primary (replica only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_lsn: Option<String>,
    /// Bytes of WAL behind the primary (replica only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// A changed parameter needs a restart to take effect.
    #[serde(default)]
    pub pending_restart: bool,
    /// The highest `spec.restart` the agent has carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted: Option<i64>,
    /// The image of the server pod once it is ready (written by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The `metadata.generation` whose configuration the agent has applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_generation: Option<i64>,
    /// WAL archiving (`pg_stat_archiver`), when the instance archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiver: Option<ArchiverStatus>,
    /// When the agent (as primary) last set the passwords of the cluster's `-superuser` and
    /// `-app` Secrets in Postgres: at its start, after a promotion, and when a Secret changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwords_set_at: Option<Time>,
    /// The last backup the agent was asked to take, and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<InstanceBackup>,
    /// How `spec.managed` fared (the primary only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedStatus>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `pg_stat_archiver` and the WAL still waiting for the archive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiverStatus {
    /// The newest WAL file archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<String>,
    /// The last WAL file whose archiving failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    /// When that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<String>,
    /// Failed attempts since the server started.
    #[serde(default)]
    pub failed_count: i64,
    /// WAL files waiting to be archived; Postgres keeps them on the volume until they are.
    #[serde(default)]
    pub pending: i64,
    /// What the last failed attempt said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The owner record of the archive while pushes are refused because it belongs to
    /// another database (gone after a successful push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_owner: Option<ArchiveOwner>,
}

/// A backup as the agent that takes it reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceBackup {
    /// The PgBackup's name.
    pub name: String,
    #[serde(flatten)]
    pub result: BackupResult,
    /// The backups in the archive after retention ran (their ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<String>>,
    /// The earliest time the archive can restore to, after retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable_from: Option<Time>,
}

/// Lifecycle phase of an instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InstancePhase {
    /// Waiting for its volume.
    Pending,
    /// The init pod is creating the data directory.
    Initializing,
    /// The instance pod runs Postgres.
    Running,
    /// Initialisation failed; see reason and message.
    Failed,
}

/// Role of a running server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InstanceRole {
    /// Accepts writes.
    Primary,
    /// Streams WAL from the primary and serves reads.
    Replica,
    /// A primary that stopped accepting writes because it may no longer be primary.
    Fenced,
    /// Postgres is not running.
    Stopped,
}

/// The cluster-wide configuration an instance is given (what the cluster's ConfigMap holds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PostgresConfig {
    /// `spec.postgresql.parameters`, before defaults are applied.
    pub parameters: BTreeMap<String, String>,
    /// `spec.postgresql.pgHba`.
    pub pg_hba: Vec<String>,
    /// Rendered from `spec.replication.synchronous` over the current replicas.
    pub synchronous_standby_names: String,
    /// The other instances; a primary keeps a replication slot for each.
    pub members: Vec<String>,
}

/// Where a primary can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    /// The primary pod's address.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The role an instance is told to hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OrderedRole {
    /// Accepts writes.
    Primary,
    /// Follows the primary; what an instance is until the operator says otherwise.
    #[default]
    Replica,
}
