//! What users may set in `spec.postgresql`: the parameters the operator owns, and the schema
//! rules that keep users away from them.

use kube::core::Rule;

/// Parameters the operator sets itself. Setting one of them would break replication, archiving,
/// failover or the pod's file layout, so the API rejects them.
pub const OWNED_PARAMETERS: &[(&str, &str)] = &[
    ("listen_addresses", "the agent listens on the pod address"),
    ("port", "Services and probes use port 5432"),
    (
        "data_directory",
        "the data directory is the persistent volume",
    ),
    ("config_file", "the agent writes the configuration files"),
    ("hba_file", "set access rules in spec.postgresql.pgHba"),
    ("ident_file", "the agent writes the configuration files"),
    ("external_pid_file", "the agent supervises the postmaster"),
    (
        "unix_socket_directories",
        "the agent connects through its own socket directory",
    ),
    (
        "archive_mode",
        "WAL archiving is configured from spec.backup",
    ),
    (
        "archive_command",
        "WAL archiving is configured from spec.backup",
    ),
    (
        "archive_library",
        "WAL archiving is configured from spec.backup",
    ),
    (
        "restore_command",
        "recovery is configured from spec.bootstrap and spec.backup",
    ),
    (
        "archive_cleanup_command",
        "retention is configured from spec.backup.retention",
    ),
    (
        "recovery_target",
        "recovery targets are set in spec.bootstrap.recovery.target",
    ),
    (
        "recovery_target_lsn",
        "recovery targets are set in spec.bootstrap.recovery.target",
    ),
    (
        "recovery_target_name",
        "recovery targets are set in spec.bootstrap.recovery.target",
    ),
    (
        "recovery_target_time",
        "recovery targets are set in spec.bootstrap.recovery.target",
    ),
    (
        "recovery_target_xid",
        "recovery targets are set in spec.bootstrap.recovery.target",
    ),
    (
        "recovery_target_timeline",
        "the operator follows the primary's timeline",
    ),
    (
        "primary_conninfo",
        "replicas follow the primary the operator chooses",
    ),
    (
        "primary_slot_name",
        "replication slots are managed per replica",
    ),
    (
        "promote_trigger_file",
        "promotion is decided by the operator",
    ),
    ("hot_standby", "replicas always serve reads"),
    (
        "cluster_name",
        "standbys are named after their instance for synchronous replication",
    ),
    (
        "synchronous_standby_names",
        "set spec.replication.synchronous instead",
    ),
    ("wal_log_hints", "pg_rewind needs it on"),
    (
        "full_page_writes",
        "turning it off risks corruption after a crash",
    ),
    ("fsync", "turning it off risks losing committed data"),
];

/// Values `wal_level` may take: streaming replication and archiving need at least `replica`.
pub const WAL_LEVELS: &[&str] = &["replica", "logical"];

/// The CEL list literal of the owned parameter names.
fn owned_list() -> String {
    let names: Vec<String> = OWNED_PARAMETERS
        .iter()
        .map(|(n, _)| format!("'{n}'"))
        .collect();
    format!("[{}]", names.join(", "))
}

/// Rule on `spec.postgresql.parameters`: no owned parameter may appear.
pub fn owned_parameters_rule() -> Rule {
    let list = owned_list();
    Rule::new(format!("self.all(k, !(k in {list}))")).message(kube::core::Message::Expression(format!(
        "'parameter ' + self.filter(k, k in {list})[0] + ' is managed by the operator and cannot be set: remove it from spec.postgresql.parameters'"
    )))
}

/// Rule on `spec.postgresql.parameters`: `wal_level` may not go below `replica`.
pub fn wal_level_rule() -> Rule {
    let levels: Vec<String> = WAL_LEVELS.iter().map(|l| format!("'{l}'")).collect();
    Rule::new(format!(
        "!('wal_level' in self) || self['wal_level'] in [{}]",
        levels.join(", ")
    ))
    .message("wal_level must be 'replica' or 'logical': streaming replication and WAL archiving need at least 'replica'")
}

/// Rule on `spec.postgresql.parameters`: names look like Postgres parameter names.
pub fn parameter_names_rule() -> Rule {
    Rule::new("self.all(k, k.matches('^[a-z_][a-z0-9_]*(\\\\.[a-z_][a-z0-9_]*)?$'))").message(
        "parameter names are lowercase Postgres settings such as work_mem or pg_stat_statements.max",
    )
}

/// Rule on `spec.postgresql.parameters`: a value is one line of text (Postgres would end it
/// at a NUL).
pub fn parameter_values_rule() -> Rule {
    Rule::new(
        "self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r') && !self[k].contains('\\u0000'))",
    )
    .message("parameter values may not contain line breaks or NUL characters")
}

/// The parameters each Postgres major lets `postgresql.conf` set, for the majors whose list
/// is generated (`scripts/pg-parameters.sh`): the only ones the API accepts for that major,
/// besides extension parameters (`pg_stat_statements.max`), which have a dot.
pub const KNOWN_PARAMETERS: &[(i32, &str)] = &[(15, include_str!("parameters/15.txt"))];

/// The names of `major`'s parameters, or None when its list is not generated.
pub fn known_parameters(major: i32) -> Option<Vec<&'static str>> {
    let (_, text) = KNOWN_PARAMETERS.iter().find(|(m, _)| *m == major)?;
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect(),
    )
}

/// Rule on the cluster spec: every parameter name without a dot is one the cluster's major
/// knows (`work_mme` is refused).
pub fn known_parameters_rule() -> Rule {
    let unknown: Vec<String> = KNOWN_PARAMETERS
        .iter()
        .filter_map(|(major, _)| {
            // A map literal: looking a key up in it costs the API server's CEL budget little,
            // where a list of 300 names is compared one by one.
            let names: Vec<String> = known_parameters(*major)?
                .iter()
                .map(|n| format!("'{n}': true"))
                .collect();
            Some(format!(
                "(self.postgresVersion == {major} && !(k in {{{}}}))",
                names.join(", ")
            ))
        })
        .collect();
    let unknown = format!("!k.contains('.') && ({})", unknown.join(" || "));
    let parameters = "self.postgresql.parameters";
    Rule::new(format!(
        "!has(self.postgresql) || !has({parameters}) || !{parameters}.exists(k, {unknown})"
    ))
    // A message naming the name would be estimated over the API server's CEL budget (map
    // keys have no length limit); the rule itself is cheap.
    .message(kube::core::Message::Message(
        "spec.postgresql.parameters: a name without a dot that is not a parameter of the \
         cluster's PostgreSQL major: check its spelling against `SELECT name FROM pg_settings` \
         (extensions' parameters have a dot, as in pg_stat_statements.max)"
            .into(),
    ))
}
