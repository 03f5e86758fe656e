//! `PgCluster`: the one resource an application team writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{S3Spec, StorageSpec, resources_schema};
use super::managed::{Applied, RoleSpec};
use super::postgres::{
    known_parameters_rule, owned_parameters_rule, parameter_names_rule, parameter_values_rule,
    wal_level_rule,
};

/// The longest cluster name: children add at most 13 characters (`-replication`, `-32-init`)
/// and their names and label values must stay within 63.
pub const MAX_CLUSTER_NAME: usize = 50;

/// A highly available PostgreSQL cluster: one primary, streaming replicas, Services that follow
/// the primary, generated credentials and continuous backups.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgha.dev",
    version = "v1",
    kind = "PgCluster",
    namespaced,
    derive = "PartialEq",
    shortname = "pgc",
    category = "pgha",
    status = "PgClusterStatus",
    doc = "A highly available PostgreSQL cluster",
    printcolumn(name = "Instances", type_ = "integer", json_path = ".spec.instances"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyInstances"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.currentPrimary"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastBackupAt"),
    printcolumn(
        name = "Recoverable From",
        type_ = "date",
        json_path = ".status.firstRecoverabilityPoint"
    ),
    printcolumn(name = "WAL Waiting", type_ = "integer", json_path = ".status.walPendingArchive"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must start with a lowercase letter and contain only lowercase letters, digits and '-': it names Services and Pods"),
    validation = Rule::new(format!("size(self.metadata.name) <= {MAX_CLUSTER_NAME}"))
        .message(kube::core::Message::Message(format!("metadata.name may be at most {MAX_CLUSTER_NAME} characters: the names of instances, Services and Secrets add up to 13 more"))),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.replication.synchronous.mode == 'off' || self.replication.synchronous.number < self.instances"
).message("replication.synchronous.number must be less than instances: synchronous standbys are replicas, and the primary is one of the instances (raise instances or lower the number)"))]
#[x_kube(validation = known_parameters_rule())]
#[x_kube(validation = Rule::new(
    "!has(self.roles) || (has(self.allowSuperuserRoles) && self.allowSuperuserRoles) || self.roles.all(r, !has(r.superuser) || !r.superuser)"
).message("roles[].superuser needs allowSuperuserRoles: true on the cluster: a superuser bypasses every permission check"))]
#[x_kube(validation = Rule::new(
    "!has(self.roles) || !has(self.bootstrap) || !has(self.bootstrap.initdb) || self.roles.all(r, r.name != self.bootstrap.initdb.owner)"
).message("roles[].name must not be bootstrap.initdb.owner: the application role is managed with its <cluster>-app Secret"))]
pub struct PgClusterSpec {
    /// Number of Postgres instances: one primary and `instances - 1` streaming replicas.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 32))]
    pub instances: i32,

    /// PostgreSQL major version. It may go up (a major upgrade), never down.
    #[serde(default = "default_postgres_version")]
    #[schemars(range(min = 13, max = 17))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("postgresVersion may not go down: an older server cannot read newer data files; restore a backup into a new cluster instead"))]
    pub postgres_version: i32,

    /// Container image with the Postgres server and the pgha agent
    /// (example: `registry.example/pgha/postgres:15`). Unset uses `pgha/postgres:<postgresVersion>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// The data volume of each instance.
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of the Postgres container
    /// (example: `{requests: {cpu: "1", memory: 2Gi}, limits: {memory: 2Gi}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,

    /// How replicas receive WAL.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// Postgres settings and client access rules.
    #[serde(default)]
    pub postgresql: PostgresqlSpec,

    /// How the first primary's data comes to be. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bootstrap is immutable: it only applies when the cluster is created; create a new cluster to bootstrap differently"))]
    pub bootstrap: BootstrapSpec,

    /// Continuous archiving and scheduled base backups. Unset means no backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// When and whom the operator promotes after the primary is lost.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// How the primary gets a new image or a restart-needing setting once the replicas have
    /// it: `switchover` (a replica takes over first, a write gap of about a second) or
    /// `restart` (the primary restarts in place: seconds without writes).
    #[serde(default)]
    pub primary_update_method: PrimaryUpdateMethod,

    /// How the instances spread over nodes and zones.
    #[serde(default)]
    pub placement: PlacementSpec,

    /// Certificates you bring (for example from cert-manager). Unset: the operator makes a CA
    /// for the cluster and the server certificate, and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Roles the primary keeps in Postgres besides the application role (example:
    /// `[{name: analyst, inRoles: [pg_read_all_data], generatePassword: true}]`); see
    /// docs/roles.md. Databases are PgDatabase resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(s, s.name == r.name))").message("roles[].name must be unique: each role is listed once"))]
    pub roles: Vec<RoleSpec>,

    /// Lets `roles[].superuser` be true. A superuser role bypasses every permission check,
    /// so it has to be asked for twice.
    #[serde(default)]
    pub allow_superuser_roles: bool,
}

/// A server certificate from Secrets you manage; the operator reads them and never writes
/// them. Replication still authenticates with certificates of the cluster's own CA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret in the cluster's namespace with `tls.crt` and `tls.key` (the shape
    /// cert-manager writes); the certificate must name the `<cluster>-rw` Service, which
    /// replicas verify their primary as, and should name every Service clients use
    /// (example: `orders-server-tls`). Postgres reloads it when it changes.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub server_secret: String,
    /// A Secret whose `ca.crt` is the CA that signed the server certificate. Unset: the
    /// server Secret's own `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub ca_secret: Option<String>,
}

/// Where the instances may run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// One instance per node (`kubernetes.io/hostname`): `preferred` places two on one node
    /// when there are too few nodes; `required` leaves the extra instance Pending instead.
    #[serde(default)]
    pub spread_nodes: Spread,
    /// Instances spread evenly over the zones of the nodes' `topology.kubernetes.io/zone`
    /// label: `preferred` (ignored without zone labels) or `required` (a node without the
    /// label is not used).
    #[serde(default)]
    pub spread_zones: Spread,
}

/// How hard a spread rule is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Spread {
    /// The scheduler tries.
    #[default]
    Preferred,
    /// The scheduler refuses a node that breaks the rule.
    Required,
}

/// How a rollout reaches the primary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PrimaryUpdateMethod {
    /// Switch over to an updated replica, then update the old primary as a replica.
    #[default]
    Switchover,
    /// Restart the primary in place.
    Restart,
}

fn default_instances() -> i32 {
    3
}

fn default_postgres_version() -> i32 {
    15
}

/// Replication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Synchronous replication: how many standbys must confirm a commit before it returns.
    #[serde(default)]
    pub synchronous: SynchronousSpec,
}

/// Synchronous replication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SynchronousSpec {
    /// `off`: commits return without waiting for replicas (asynchronous).
    /// `quorum`: a commit waits for any `number` replicas (`ANY n`).
    /// `priority`: a commit waits for the first `number` replicas in priority order (`FIRST n`).
    #[serde(default)]
    pub mode: SynchronousMode,
    /// How many replicas must confirm each commit; less than `instances`.
    #[serde(default = "default_sync_number")]
    #[schemars(range(min = 1, max = 31))]
    pub number: i32,
}

impl Default for SynchronousSpec {
    fn default() -> Self {
        Self {
            mode: SynchronousMode::Off,
            number: default_sync_number(),
        }
    }
}

fn default_sync_number() -> i32 {
    1
}

/// Synchronous replication mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SynchronousMode {
    /// Asynchronous replication.
    #[default]
    Off,
    /// `ANY n (...)`.
    Quorum,
    /// `FIRST n (...)`.
    Priority,
}

/// Postgres configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// `postgresql.conf` parameters as strings (example: `{max_connections: "200", work_mem: 16MB}`).
    /// Parameters the operator owns (`port`, `archive_command`, `primary_conninfo`, …) are
    /// rejected; see docs/api.md for the list.
    #[serde(default)]
    #[x_kube(validation = owned_parameters_rule())]
    #[x_kube(validation = wal_level_rule())]
    #[x_kube(validation = parameter_names_rule())]
    #[x_kube(validation = parameter_values_rule())]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, String>,

    /// Extra `pg_hba.conf` lines, placed before the operator's own rules
    /// (example: `host all all 10.0.0.0/8 scram-sha-256`).
    #[serde(default)]
    #[schemars(
        length(max = 200),
        inner(
            regex(
                pattern = r"^(local|host|hostssl|hostnossl|hostgssenc|hostnogssenc)[ \t]+[^\n]+$"
            ),
            length(max = 1024)
        )
    )]
    pub pg_hba: Vec<String>,
}

/// Parameters map: bounded, so the API server can bound the cost of its CEL rules.
fn parameters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 200,
        "additionalProperties": {"type": "string", "maxLength": 4096},
    })
}

/// How the cluster's data is created: exactly one of `initdb` or `recovery`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.initdb) != has(self.recovery)").message("bootstrap: set exactly one of initdb or recovery"))]
pub struct BootstrapSpec {
    /// A new, empty database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitdbSpec>,
    /// A point-in-time restore from another cluster's object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        Self {
            initdb: Some(InitdbSpec::default()),
            recovery: None,
        }
    }
}

/// A new database and its owner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitdbSpec {
    /// Name of the application database (example: `orders`).
    #[serde(default = "default_app_name")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'template0', 'template1'])").message("bootstrap.initdb.database must not be postgres, template0 or template1: those databases exist already"))]
    pub database: String,
    /// Role that owns the application database; its password is in the `<cluster>-app` Secret
    /// (example: `orders`).
    #[serde(default = "default_app_name")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'streaming_replica']) && !self.startsWith('pg_')").message("bootstrap.initdb.owner must not be postgres, streaming_replica or start with pg_: those roles are reserved"))]
    pub owner: String,
}

impl Default for InitdbSpec {
    fn default() -> Self {
        Self {
            database: default_app_name(),
            owner: default_app_name(),
        }
    }
}

fn default_app_name() -> String {
    "app".into()
}

/// Restore from an object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.database) == has(self.owner)").message("bootstrap.recovery: set both database and owner (the restored application database and its role), or neither"))]
pub struct RecoverySpec {
    /// Where the base backups and WAL come from.
    pub source: RecoverySource,
    /// How far to replay. Unset replays to the end of the archived WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTarget>,
    /// The application database in the restored data (example: `orders`). With `owner`, the
    /// cluster gets a `<cluster>-app` Secret, and the role's password is reset to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    pub database: Option<String>,
    /// The role that owns `database` in the restored data (example: `orders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_]{0,62}$"))]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'streaming_replica']) && !self.startsWith('pg_')").message("bootstrap.recovery.owner must not be postgres, streaming_replica or start with pg_: those roles are the operator's"))]
    pub owner: Option<String>,
}

/// The archive of the cluster to restore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3.path)").message("bootstrap.recovery.source.s3.path is required: it is the prefix the source cluster backs up to (its spec.backup.s3.path, or <namespace>/<name> when that is unset)"))]
pub struct RecoverySource {
    /// The source cluster's object store, as in its `spec.backup.s3`.
    pub s3: S3Spec,
}

/// Where recovery stops: exactly one of `time`, `lsn`, `name` or `immediate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.time), has(self.lsn), has(self.name), has(self.immediate)].filter(x, x).size() == 1").message("bootstrap.recovery.target: set exactly one of time, lsn, name or immediate (omit target to recover to the end of the archive)"))]
pub struct RecoveryTarget {
    /// Stop after the last transaction committed before this time, RFC 3339
    /// (example: `2026-11-20T14:03:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub time: Option<String>,
    /// Stop at this WAL location (example: `0/3000060`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"))]
    pub lsn: Option<String>,
    /// Stop at a restore point made with `pg_create_restore_point` (example: `before-migration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// `true`: stop as soon as the base backup is consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self").message("bootstrap.recovery.target.immediate can only be true; omit it otherwise"))]
    pub immediate: Option<bool>,
}

/// Continuous archiving and scheduled base backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The object store WAL and base backups go to.
    pub s3: S3Spec,
    /// When base backups run: a five-field cron expression in UTC or a macro such as `@daily`
    /// (example: `30 2 * * *`).
    #[serde(default = "default_schedule")]
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})$"
    ))]
    pub schedule: String,
    /// How long backups and WAL are kept.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// `true` pauses the schedule (WAL archiving goes on; on-demand PgBackups still run).
    #[serde(default)]
    pub suspend: bool,
    /// Restore drills: the newest backup restored into a throwaway pod and checked. Unset: no
    /// drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// When restore drills run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// A five-field cron expression in UTC or a macro such as `@weekly` (example: `0 4 * * 0`).
    /// The first drill runs as soon as the first backup has completed.
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})$"
    ))]
    pub schedule: String,
}

/// The last restore drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedRestore {
    /// `Passed` or `Failed`.
    pub result: DrillResult,
    /// The id of the backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The WAL position replay reached (the end of the archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_to: Option<String>,
    /// When the drill started.
    pub started: Time,
    /// How long restore, replay and checks took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// What was checked, or why it failed.
    pub message: String,
}

/// The outcome of a restore drill.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DrillResult {
    /// The backup restored, the archive replayed, and the checks passed.
    Passed,
    /// See the message.
    Failed,
}

fn default_schedule() -> String {
    "0 0 * * *".into()
}

/// Retention of base backups and WAL. A backup is kept while either rule keeps it; the WAL
/// that kept backups need is kept with them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep at least this many of the newest completed base backups (example: `7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: Option<i32>,
    /// Keep every backup needed to restore to any point in this window, as a number of hours,
    /// days or weeks (example: `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,3}[hdw]$"))]
    pub window: Option<String>,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            count: None,
            window: Some("30d".into()),
        }
    }
}

/// Failover policy: the primary Lease, and when and whom the operator promotes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.renewMillis * 2 <= self.leaseSeconds * 1000 - self.fenceMarginMillis"
).message("failover: renewMillis must fit twice into leaseSeconds less fenceMarginMillis, so that one slow renewal does not fence the primary (raise leaseSeconds or lower renewMillis / fenceMarginMillis)"))]
pub struct FailoverSpec {
    /// With asynchronous replication, a replica further behind the lost primary than this many
    /// bytes of WAL is not promoted (example: `16777216`, 16 MiB).
    #[serde(default = "default_max_lag_bytes")]
    #[schemars(range(min = 0))]
    pub max_lag_bytes: i64,
    /// Seconds to wait after the primary's Lease expired before a failover starts
    /// (example: `0`).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub delay_seconds: i32,
    /// How long a renewal of the primary Lease is valid: a lost primary is replaced at the
    /// earliest this long after its last renewal (example: `3`).
    #[serde(default = "default_lease_seconds")]
    #[schemars(range(min = 2, max = 60))]
    pub lease_seconds: i32,
    /// How often the primary renews its Lease, in milliseconds (example: `500`).
    #[serde(default = "default_renew_millis")]
    #[schemars(range(min = 100, max = 10000))]
    pub renew_millis: i32,
    /// The primary fences itself when its last successful renewal is older than
    /// `leaseSeconds` less this margin, in milliseconds: the fence is complete before anyone
    /// may take the Lease (example: `1000`).
    #[serde(default = "default_fence_margin_millis")]
    #[schemars(range(min = 200, max = 30000))]
    pub fence_margin_millis: i32,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            max_lag_bytes: default_max_lag_bytes(),
            delay_seconds: 0,
            lease_seconds: default_lease_seconds(),
            renew_millis: default_renew_millis(),
            fence_margin_millis: default_fence_margin_millis(),
        }
    }
}

fn default_max_lag_bytes() -> i64 {
    16 * 1024 * 1024
}

fn default_lease_seconds() -> i32 {
    3
}

fn default_renew_millis() -> i32 {
    500
}

fn default_fence_margin_millis() -> i32 {
    1000
}

/// The annotation with which a DBA asks for a planned switchover: the instance to move the
/// primary to, or empty for the most caught-up ready replica. `pgha switchover` sets it; the
/// operator removes it once it has started or refused the switchover (`status.lastSwitchover`).
pub const SWITCHOVER_ANNOTATION: &str = "pgha.dev/switchover-to";

/// The annotation with which a DBA promotes an instance that the election refuses (too far
/// behind, or not enough replicas heard from), accepting the loss of what it lacks. The
/// primary's Lease must still have expired: the override never makes two primaries.
pub const FORCE_PROMOTE_ANNOTATION: &str = "pgha.dev/force-promote";

/// Observed state of a cluster, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgClusterStatus {
    /// Where the cluster stands as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// The instance that is primary now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// The instance the operator wants as primary; differs from `currentPrimary` during a
    /// failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_primary: Option<String>,
    /// How many instances are ready.
    #[serde(default)]
    pub ready_instances: i32,
    /// One entry per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceSummary>,
    /// `Ready`, `Progressing`, `Degraded`, `ConfigInvalid`, `ContinuousArchiving`,
    /// `RestoreVerified`, `CertificatesReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last time the primary served without renewing its Lease, on its members'
    /// promises (the Kubernetes API did not answer it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lease_outage: Option<super::instance::LeaseOutage>,
    /// Name of the newest completed PgBackup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// When the newest completed PgBackup completed (`kubectl get pgc` shows its age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_at: Option<Time>,
    /// The earliest point in time the cluster can be restored to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<Time>,
    /// The last restore drill (`spec.backup.verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_restore: Option<VerifiedRestore>,
    /// The newest WAL file the primary archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<Time>,
    /// WAL files on the primary's volume waiting for the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_pending_archive: Option<i64>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The failover under way, if any: kept here so that a new operator leader resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// The last completed failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<Failover>,
    /// The last switchover asked for: under way, completed or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switchover: Option<Switchover>,
    /// The highest WAL position the primary reported (through its Lease and its agent): the
    /// mark a failover candidate is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_water: Option<HighWater>,
    /// How `spec.roles` fared on the primary: applied, or the Postgres error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Applied>,
}

/// A planned switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Switchover {
    /// The primary when it was asked for.
    pub from: String,
    /// The instance the primary moves to.
    pub to: String,
    /// When the operator took the request.
    pub started: Time,
    /// When the new primary first served writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Time>,
    /// Why it was refused or given up (nothing changed then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A change of primary: a failover from a lost primary, or the promotion step of a
/// switchover (`planned`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// The primary that was lost.
    pub from: String,
    /// The replica promoted in its place.
    pub to: String,
    /// Why (example: `the primary Lease expired 0.4 s ago`).
    pub reason: String,
    /// When the promotion was ordered.
    pub started: Time,
    /// When the new primary first served writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Time>,
    /// WAL the old primary had written (as far as the high-water mark knows) that the new
    /// primary never received: what an asynchronous failover may have discarded.
    #[serde(default)]
    pub lost_bytes: i64,
    /// A planned switchover rather than a failover.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planned: bool,
}

/// The primary's WAL position as last reported.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HighWater {
    /// Who reported it.
    pub primary: String,
    /// Its timeline.
    pub timeline: i64,
    /// The WAL written (example: `0/3000060`).
    pub lsn: String,
    /// The primary's Postgres system identifier: candidates must have the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// The standbys the primary had as synchronous (`sync` or `quorum`) at that moment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synchronous: Vec<String>,
}

/// Phase of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Instances are being created.
    Creating,
    /// Every instance is ready and replicating.
    Healthy,
    /// The primary serves, but some instance is not ready.
    Degraded,
    /// The primary was lost and a replica is being promoted.
    FailingOver,
    /// A planned switchover is under way.
    SwitchingOver,
    /// The spec cannot be carried out; see the Ready condition.
    Failed,
}

/// One instance as the cluster sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    /// PgInstance name.
    pub name: String,
    /// `primary`, `replica`, `fenced` or `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<super::instance::InstanceRole>,
    /// Whether the instance accepts the connections its role should.
    #[serde(default)]
    pub ready: bool,
    /// Postgres timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Current WAL location (written on a primary, replayed on a replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// Bytes of WAL behind the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
}
