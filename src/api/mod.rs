//! The pgha API: the `pgha.dev/v1` custom resources and their schemas.
//!
//! Everything the API server can check lives in the schema (OpenAPI ranges, patterns, enums and
//! CEL `x-kubernetes-validations`); `plan::validation` holds the checks it cannot make.

pub mod backup;
pub mod cluster;
pub mod common;
pub mod crd;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod instance;
pub mod managed;
pub mod postgres;

pub use backup::{PgBackup, PgBackupSpec, PgBackupStatus};
pub use cluster::{PgCluster, PgClusterSpec, PgClusterStatus};
pub use instance::{PgInstance, PgInstanceSpec, PgInstanceStatus};
pub use managed::{PgDatabase, PgDatabaseSpec, PgDatabaseStatus};

/// The API group of every pgha resource.
pub const GROUP: &str = "pgha.dev";
