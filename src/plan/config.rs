//! Postgres configuration from the cluster spec: defaults, then the user's parameters, with the
//! operator's own settings kept out of the user's reach.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::api::cluster::{PgClusterSpec, SynchronousMode};
use crate::api::postgres::{OWNED_PARAMETERS, WAL_LEVELS};
use crate::plan::names;

/// Settings pgha starts from; every one of them may be overridden in `spec.postgresql.parameters`.
pub const DEFAULT_PARAMETERS: &[(&str, &str)] = &[
    ("max_connections", "100"),
    ("shared_buffers", "128MB"),
    ("wal_level", "replica"),
    ("max_wal_senders", "40"),
    ("max_replication_slots", "40"),
    ("wal_keep_size", "512MB"),
    ("wal_receiver_timeout", "5s"),
    ("wal_sender_timeout", "5s"),
    ("password_encryption", "scram-sha-256"),
    ("log_destination", "stderr"),
    ("logging_collector", "off"),
    ("log_line_prefix", "%m [%p] %q%u@%d "),
];

/// A user setting the operator cannot accept.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "spec.postgresql.parameters.{name}: parameter {name} is managed by the operator and cannot be set ({why}); remove it"
    )]
    OwnedParameter { name: String, why: &'static str },
    #[error(
        "spec.postgresql.parameters.wal_level: '{value}' is too low; use 'replica' or 'logical' (replication and archiving need at least 'replica')"
    )]
    WalLevel { value: String },
    #[error(
        "spec.postgresql.parameters.{name}: the value contains a line break; a parameter value is one line"
    )]
    MultiLine { name: String },
    #[error(
        "spec.postgresql.pgHba[{index}]: '{line}' is not a pg_hba.conf rule; expected '<type> <database> <user> [<address>] <method>', for example 'host all all 10.0.0.0/8 scram-sha-256'"
    )]
    HbaLine { index: usize, line: String },
}

/// Defaults overlaid with the user's parameters, or the first parameter that may not be set.
pub fn parameters(spec: &PgClusterSpec) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut merged: BTreeMap<String, String> = DEFAULT_PARAMETERS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (name, value) in &spec.postgresql.parameters {
        if let Some((_, why)) = OWNED_PARAMETERS.iter().find(|(owned, _)| owned == name) {
            return Err(ConfigError::OwnedParameter {
                name: name.clone(),
                why,
            });
        }
        if name == "wal_level" && !WAL_LEVELS.contains(&value.as_str()) {
            return Err(ConfigError::WalLevel {
                value: value.clone(),
            });
        }
        if value.contains(['\n', '\r']) {
            return Err(ConfigError::MultiLine { name: name.clone() });
        }
        merged.insert(name.clone(), value.clone());
    }
    Ok(merged)
}

/// `synchronous_standby_names` for the cluster, empty when replication is asynchronous.
///
/// It names every instance: the primary never connects to itself as a standby, so listing it
/// is harmless, and the setting then survives a failover unchanged.
pub fn synchronous_standby_names(cluster: &str, spec: &PgClusterSpec) -> String {
    let sync = &spec.replication.synchronous;
    let method = match sync.mode {
        SynchronousMode::Off => return String::new(),
        SynchronousMode::Quorum => "ANY",
        SynchronousMode::Priority => "FIRST",
    };
    let members: Vec<String> = (1..=spec.instances)
        .map(|ordinal| format!("\"{}\"", names::instance(cluster, ordinal)))
        .collect();
    format!("{method} {} ({})", sync.number, members.join(", "))
}

/// A `postgresql.conf` file: one `name = 'value'` line per parameter, quotes escaped.
pub fn render_conf(parameters: &BTreeMap<String, String>) -> String {
    parameters
        .iter()
        .map(|(name, value)| format!("{name} = '{}'\n", value.replace('\'', "''")))
        .collect()
}

/// `pg_hba.conf`: the agent's local superuser and the replication role first (so no user rule
/// can lock them out), then the user's rules, then password authentication for everyone else.
pub fn render_hba(spec: &PgClusterSpec) -> Result<String, ConfigError> {
    let mut out = String::from("# Managed by pgha: edit spec.postgresql.pgHba instead.\n");
    out.push_str(&format!("local all {} peer\n", names::SUPERUSER));
    out.push_str(&format!(
        "host replication {} all scram-sha-256\n",
        names::REPLICATION_USER
    ));
    for (index, line) in spec.postgresql.pg_hba.iter().enumerate() {
        if !is_hba_rule(line) {
            return Err(ConfigError::HbaLine {
                index,
                line: line.clone(),
            });
        }
        out.push_str(line.trim());
        out.push('\n');
    }
    out.push_str("host all all all scram-sha-256\n");
    Ok(out)
}

/// Whether a line has the fields of a pg_hba rule: `local` takes database, user, method;
/// the `host*` types also an address.
fn is_hba_rule(line: &str) -> bool {
    if line.contains(['\n', '\r']) {
        return false;
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let min_fields = match fields.first() {
        Some(&"local") => 4,
        Some(&("host" | "hostssl" | "hostnossl" | "hostgssenc" | "hostnogssenc")) => 5,
        _ => return false,
    };
    fields.len() >= min_fields
}
