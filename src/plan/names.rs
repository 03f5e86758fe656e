//! Names and labels of everything the operator creates for a cluster.

use std::collections::BTreeMap;

/// Label keys (DESIGN.md §7).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_CLUSTER: &str = "pgha.dev/cluster";
pub const LABEL_PG_INSTANCE: &str = "pgha.dev/instance";
pub const LABEL_ROLE: &str = "pgha.dev/role";

/// Values of `pgha.dev/role` on instance pods; the Services select on them.
pub const ROLE_PRIMARY: &str = "primary";
pub const ROLE_REPLICA: &str = "replica";

/// The port Postgres listens on in every pod and Service.
pub const POSTGRES_PORT: i32 = 5432;

/// Roles the operator creates in every cluster.
pub const SUPERUSER: &str = "postgres";
pub const REPLICATION_USER: &str = "streaming_replica";

/// Name of the instance with this ordinal; also its PVC's and pod's name.
pub fn instance(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// The Services of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Always the primary.
    ReadWrite,
    /// Only replicas.
    ReadOnly,
    /// Any ready instance.
    Read,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 3] = [Self::ReadWrite, Self::ReadOnly, Self::Read];

    fn suffix(self) -> &'static str {
        match self {
            Self::ReadWrite => "rw",
            Self::ReadOnly => "ro",
            Self::Read => "r",
        }
    }

    /// The `pgha.dev/role` the Service selects, if any.
    pub fn role(self) -> Option<&'static str> {
        match self {
            Self::ReadWrite => Some(ROLE_PRIMARY),
            Self::ReadOnly => Some(ROLE_REPLICA),
            Self::Read => None,
        }
    }
}

pub fn service(cluster: &str, kind: ServiceKind) -> String {
    format!("{cluster}-{}", kind.suffix())
}

/// The credential Secrets of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// The `postgres` superuser; used by the agent over the local socket.
    Superuser,
    /// The application database's owner; what app teams connect with.
    App,
    /// The replication role replicas stream with.
    Replication,
}

impl SecretKind {
    pub const ALL: [SecretKind; 3] = [Self::Superuser, Self::App, Self::Replication];
}

pub fn secret(cluster: &str, kind: SecretKind) -> String {
    let suffix = match kind {
        SecretKind::Superuser => "superuser",
        SecretKind::App => "app",
        SecretKind::Replication => "replication",
    };
    format!("{cluster}-{suffix}")
}

/// The Secret the operator makes for a role of `spec.roles` with `generatePassword`.
pub fn role_secret(cluster: &str, role: &str) -> String {
    format!("{cluster}-{role}")
}

pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// Labels every child of a cluster carries; `component` says what the child is.
pub fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    [
        (LABEL_NAME, "postgresql"),
        (LABEL_INSTANCE, cluster),
        (LABEL_COMPONENT, component),
        (LABEL_MANAGED_BY, "pgha"),
        (LABEL_CLUSTER, cluster),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The ServiceAccount an instance's pods run as (and its Role and RoleBinding): named like
/// the instance, so that its Role can name exactly what that one instance may touch.
pub fn instance_account(instance: &str) -> String {
    instance.to_string()
}

/// The Lease the primary of a cluster holds.
pub fn primary_lease(cluster: &str) -> String {
    format!("{cluster}-primary")
}

/// The pod that creates an instance's data directory.
pub fn init_pod(instance: &str) -> String {
    format!("{instance}-init")
}
