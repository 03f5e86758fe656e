//! `PgBackup`: one base backup, on demand or from a cluster's schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One base backup of a PgCluster to its object store.
// clippy reads the repeated `type_ = …` of printcolumn(...) as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgha.dev",
    version = "v1",
    kind = "PgBackup",
    namespaced,
    derive = "PartialEq",
    shortname = "pgb",
    category = "pgha",
    status = "PgBackupStatus",
    doc = "One base backup of a PgCluster",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Completed", type_ = "date", json_path = ".status.completedAt"),
    printcolumn(name = "Archive", type_ = "string", json_path = ".status.archive"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a PgBackup's spec is immutable: create a new PgBackup instead"))]
pub struct PgBackupSpec {
    /// Name of the PgCluster to back up, in the same namespace (example: `orders`).
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), length(max = 50))]
    pub cluster: String,
    /// Which instance reads the data: `preferStandby` (a ready replica if there is one, which
    /// keeps the load off the primary) or `primary`.
    #[serde(default)]
    pub target: BackupTarget,
}

/// Which instance a backup is taken from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackupTarget {
    /// A ready replica if there is one, else the primary.
    #[default]
    PreferStandby,
    /// Always the primary.
    Primary,
}

/// Progress and result of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBackupStatus {
    /// What its agent reported (phase, times, LSNs, sizes, id, message).
    #[serde(flatten)]
    pub result: BackupResult,
    /// The instance the backup was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Where the backup is: `s3://<bucket>/<path>/base/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How a backup went, as the agent that takes it reports it (in its PgInstance's
/// `status.backup`) and the PgBackup repeats it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// `Pending` → `Running` → `Completed`, or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the backup completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// WAL location where the backup starts; recovery replays from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_lsn: Option<String>,
    /// WAL location where the backup becomes consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
    /// Timeline the backup was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Bytes of data read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Bytes stored after compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,
    /// The backup's id in the object store (`pgha archive catalog` lists it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The archive the backup is in, `s3://<bucket>/<path>`: a cluster whose
    /// `spec.backup.s3` moved keeps the PgBackups of its old archive, and retention in the new
    /// one never removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
    /// How far a running backup is, updated every few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgress>,
    /// Why a backup waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How far a running backup is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    /// Bytes of the data directory read so far.
    pub bytes_done: i64,
    /// Bytes of the data directory when the backup started (an estimate: files change).
    pub bytes_total: i64,
    /// Bytes read per second since the backup started.
    pub bytes_per_second: i64,
    /// The WAL segment the backup waits for in the archive once its data is read: the one its
    /// end is in. A standby's backup asks the primary to switch to the next segment, so that
    /// an idle primary archives it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_wal: Option<String>,
}

/// Lifecycle phase of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting to start.
    Pending,
    /// Data is being copied.
    Running,
    /// The backup can be restored.
    Completed,
    /// The backup cannot be restored; see message.
    Failed,
}
