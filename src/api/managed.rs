//! What an application team keeps inside Postgres: roles (`PgCluster.spec.roles`) and
//! databases (`PgDatabase`). The primary's agent makes Postgres match them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest name Postgres keeps (NAMEDATALEN - 1), in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// CEL: a Postgres name of at most 63 bytes (`size()` of a string counts characters).
fn name_bytes_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("size(bytes(self)) <= {MAX_NAME_BYTES}")).message(
        kube::core::Message::Message(format!(
            "{field} may be at most {MAX_NAME_BYTES} bytes: Postgres would cut a longer name"
        )),
    )
}

/// Role names whose generated Secret `<cluster>-<name>` would be one of the cluster's own.
pub const TAKEN_SECRET_SUFFIXES: [&str; 6] = [
    "superuser",
    "app",
    "replication",
    "ca",
    "server",
    "replication-tls",
];

fn generated_secret_rule() -> kube::core::Rule {
    let taken = TAKEN_SECRET_SUFFIXES.map(|s| format!("'{s}'")).join(", ");
    kube::core::Rule::new(format!(
        "!has(self.generatePassword) || !self.generatePassword || !(self.name in [{taken}])"
    ))
    .message(kube::core::Message::Message(format!(
        "roles[].name: with generatePassword the Secret <cluster>-<name> would be one the cluster has already ({}); bring the Secret with passwordSecret or choose another name",
        TAKEN_SECRET_SUFFIXES.join(", ")
    )))
}

fn role_name_rule() -> kube::core::Rule {
    name_bytes_rule("roles[].name")
}

fn database_name_rule() -> kube::core::Rule {
    name_bytes_rule("name")
}

/// Whether something is to exist.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Ensure {
    /// Created when missing, put back when changed by hand.
    #[default]
    Present,
    /// Dropped when it exists (a role that still owns objects is reported, not dropped).
    Absent,
}

impl Ensure {
    fn is_present(&self) -> bool {
        *self == Self::Present
    }
}

/// A Secret in the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Its name (example: `orders-analyst-password`).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
}

/// A role the operator keeps in Postgres.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.replication) || !self.replication").message("roles[].replication must be false: replication connections use the operator's own role"))]
#[x_kube(validation = Rule::new("!(has(self.passwordSecret) && has(self.generatePassword) && self.generatePassword)").message("roles[]: set passwordSecret or generatePassword, not both"))]
#[x_kube(validation = Rule::new("!has(self.generatePassword) || !self.generatePassword || self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("roles[].name: a role with generatePassword gets the Secret <cluster>-<name>, so its name may only hold lowercase letters, digits and '-' (or bring the Secret with passwordSecret)"))]
#[x_kube(validation = generated_secret_rule())]
pub struct RoleSpec {
    /// The role's name, as Postgres spells it (example: `analyst`). `postgres`,
    /// `streaming_replica` and names starting with `pg_` are reserved.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = role_name_rule())]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'streaming_replica', 'public', 'none', 'current_user', 'session_user', 'current_role']) && !self.startsWith('pg_')").message("roles[].name must not be postgres, streaming_replica, public, none, current_user, session_user, current_role or start with pg_: those names are reserved"))]
    pub name: String,
    /// `present` (default) or `absent`: dropped, when it owns nothing.
    #[serde(default)]
    pub ensure: Ensure,
    /// May log in.
    #[serde(default = "yes")]
    pub login: bool,
    /// A superuser; refused unless the cluster sets `allowSuperuserRoles`.
    #[serde(default)]
    pub superuser: bool,
    /// May create databases.
    #[serde(default)]
    pub createdb: bool,
    /// May create, alter and drop other roles.
    #[serde(default)]
    pub createrole: bool,
    /// Uses the privileges of the roles it is a member of without `SET ROLE`.
    #[serde(default = "yes")]
    pub inherit: bool,
    /// Always false: replication is the operator's.
    #[serde(default)]
    pub replication: bool,
    /// How many connections it may hold at once; -1 (default) is no limit.
    #[serde(default = "unlimited")]
    #[schemars(range(min = -1))]
    pub connection_limit: i32,
    /// When its password stops working (RFC 3339, example: `2027-01-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
    /// Roles it is a member of (example: `[pg_read_all_data]`); memberships not listed are
    /// revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub in_roles: Vec<String>,
    /// `COMMENT ON ROLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
    /// A Secret you own with the role's `password` (and, if it has one, a `username` equal to
    /// the role's name). A change takes effect without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretRef>,
    /// The operator makes the Secret `<cluster>-<name>` with `username`, `password`, `dbname`
    /// and a `uri` that verifies the server (`sslmode=verify-full`).
    #[serde(default)]
    pub generate_password: bool,
}

fn yes() -> bool {
    true
}

fn unlimited() -> i32 {
    -1
}

impl RoleSpec {
    pub fn is_present(&self) -> bool {
        self.ensure.is_present()
    }
}

/// A database of a PgCluster, its extensions and schemas, kept by the cluster's primary.
// clippy reads the repeated `type_ = …` of printcolumn(...) as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "pgha.dev",
    version = "v1",
    kind = "PgDatabase",
    namespaced,
    derive = "PartialEq",
    shortname = "pgdb",
    category = "pgha",
    status = "PgDatabaseStatus",
    doc = "A database in a PgCluster, with its extensions and schemas",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Applied", type_ = "boolean", json_path = ".status.applied"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PgDatabaseSpec {
    /// The PgCluster in the same namespace (example: `orders`). Immutable.
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), length(max = 50))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cluster is immutable: create a PgDatabase for the other cluster"))]
    pub cluster: String,
    /// The database's name in Postgres (example: `reports`). Immutable.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = database_name_rule())]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable: a PgDatabase keeps one database; create another PgDatabase"))]
    #[x_kube(validation = Rule::new("!(self in ['postgres', 'template0', 'template1'])").message("name must not be postgres, template0 or template1: those databases are Postgres's own"))]
    pub name: String,
    /// The role that owns it (one of the cluster's roles, or its application role).
    #[schemars(length(min = 1, max = 63))]
    pub owner: String,
    /// Character encoding (example: `UTF8`); unset: the template's. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]{1,32}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("encoding is immutable: Postgres cannot change a database's encoding"))]
    pub encoding: Option<String>,
    /// Collation and character type (example: `en_US.UTF-8`); unset: the template's. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.@-]{1,64}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("locale is immutable: Postgres cannot change a database's locale"))]
    pub locale: Option<String>,
    /// The database it is copied from (default `template1`; `template0` when encoding or
    /// locale differ from the server's). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("template is immutable: it is only used when the database is created"))]
    pub template: Option<String>,
    /// How many connections it may hold at once; -1 (default) is no limit.
    #[serde(default = "unlimited")]
    #[schemars(range(min = -1))]
    pub connection_limit: i32,
    /// Extensions to install; each must be available in the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub extensions: Vec<ExtensionSpec>,
    /// Schemas to create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub schemas: Vec<SchemaSpec>,
    /// `present` (default) or `absent`: dropped (its data is gone).
    #[serde(default)]
    pub ensure: Ensure,
    /// What deleting this PgDatabase does to the database: `retain` (default) keeps it and
    /// its data; `delete` drops it.
    #[serde(default)]
    pub database_reclaim_policy: DatabaseReclaimPolicy,
}

impl PgDatabaseSpec {
    pub fn is_present(&self) -> bool {
        self.ensure.is_present()
    }
}

/// What deleting a PgDatabase does to its database.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseReclaimPolicy {
    /// The database stays, no longer managed.
    #[default]
    Retain,
    /// The database is dropped before the PgDatabase goes.
    Delete,
}

/// An extension in a database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionSpec {
    /// As `pg_available_extensions` names it (example: `pg_stat_statements`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// A version (example: `1.10`); unset: the default version when created, never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub version: Option<String>,
    /// The schema its objects go to; unset: the first in the search path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub schema: Option<String>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: Ensure,
}

/// A schema in a database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaSpec {
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("!self.startsWith('pg_') && self != 'information_schema'").message("schemas[].name must not start with pg_ or be information_schema: those are Postgres's own"))]
    pub name: String,
    /// The role that owns it; unset: the database's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub owner: Option<String>,
    /// `present` (default) or `absent` (dropped only when empty).
    #[serde(default)]
    pub ensure: Ensure,
}

/// Whether the database is as its PgDatabase says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgDatabaseStatus {
    /// True once the primary made the database match `observedGeneration`'s spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    /// The `metadata.generation` `applied` speaks of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why it is not applied (the Postgres error, a missing extension, another PgDatabase
    /// claiming the same database, a cluster that does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How one managed role or database fared on the primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// The role's name, or the PgDatabase's.
    pub name: String,
    /// Whether Postgres matches the spec now.
    pub applied: bool,
    /// The PgDatabase's `metadata.generation` that was applied (databases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Why not (the Postgres error, or what is in the way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last time a change made by hand was put back, and what was put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repair>,
}

/// A change made by hand, undone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    pub at: Time,
    /// What was done, in words ("alter role analyst …; grant …").
    pub what: String,
}

/// The roles and databases the operator hands an instance's agent (PgInstance
/// `spec.managed`): what the primary keeps in Postgres.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSpec {
    /// `PgCluster.spec.roles`; a role's password is in `passwordSecret`, filled in for
    /// generated ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleSpec>,
    /// The cluster's PgDatabases that claim their database (the oldest of two for one name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<ManagedDatabase>,
}

/// One PgDatabase as the agent gets it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDatabase {
    /// The PgDatabase's name.
    pub resource: String,
    /// Its `metadata.generation`.
    pub generation: i64,
    pub spec: PgDatabaseSpec,
}

/// What the primary's agent reports of `spec.managed` (PgInstance `status.managed`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Applied>,
    /// By PgDatabase name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<Applied>,
}
