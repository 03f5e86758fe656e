//! Postgres configuration from the cluster spec: defaults, then the user's parameters, with the
//! operator's own settings kept out of the user's reach.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    // A replica re-pointed at a new primary (or whose primary came back) reconnects within a
    // quarter second instead of the default 5 s.
    ("wal_retrieve_retry_interval", "250ms"),
    // With archiving, the newest commit reaches the archive within a minute even when little
    // is written, and a backup taken on a standby (which waits for its last segment to be
    // archived) ends within a minute on an idle cluster. Without archiving it does nothing.
    ("archive_timeout", "60s"),
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
        "spec.postgresql.parameters.{name}: the value contains a line break or a NUL character; a parameter value is one line of text"
    )]
    MultiLine { name: String },
    #[error(
        "spec.postgresql.pgHba[{index}]: '{line}' is not a pg_hba.conf rule; expected '<type> <database> <user> [<address>] <method>', for example 'host all all 10.0.0.0/8 scram-sha-256'"
    )]
    HbaLine { index: usize, line: String },
}

/// Defaults overlaid with the user's parameters, or the first parameter that may not be set.
pub fn parameters(
    user: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut merged: BTreeMap<String, String> = DEFAULT_PARAMETERS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (name, value) in user {
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
        // Postgres ends a value at a NUL, and a line break would start a new setting.
        if value.contains(['\n', '\r', '\0']) {
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

/// A `postgresql.conf` file: one `name = 'value'` line per parameter. Inside quotes
/// Postgres reads a backslash as the start of an escape and `''` as a quote, so backslashes
/// and quotes are doubled: the value it reads is the value given.
pub fn render_conf(parameters: &BTreeMap<String, String>) -> String {
    parameters
        .iter()
        .map(|(name, value)| {
            let quoted = value.replace('\\', "\\\\").replace('\'', "''");
            format!("{name} = '{quoted}'\n")
        })
        .collect()
}

/// What Postgres said on stderr when it refused its configuration files: the messages
/// and hints of its `LOG`/`ERROR` lines, without the log prefix and the closing "contains
/// errors" line.
pub fn postgres_complaints(stderr: &str) -> String {
    let mut said: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let text = ["LOG:  ", "ERROR:  ", "FATAL:  ", "HINT:  ", "DETAIL:  "]
            .iter()
            .find_map(|marker| line.split_once(marker).map(|(_, rest)| (*marker, rest)));
        match text {
            Some(("FATAL:  ", rest)) if rest.contains("contains errors") => {}
            Some(("HINT:  " | "DETAIL:  ", rest)) => match said.last_mut() {
                Some(last) => *last = format!("{last} ({rest})"),
                None => said.push(rest.to_string()),
            },
            Some((_, rest)) => said.push(rest.to_string()),
            None => {}
        }
    }
    if said.is_empty() {
        said.push(stderr.trim().to_string());
    }
    said.join("; ")
}

/// The pg_ident map that lets the agent's operating-system user in as the superuser over the
/// local socket, whatever that user is called in the image.
pub const AGENT_IDENT_MAP: &str = "pgha-agent";

/// `pg_ident.conf` for an agent running as `os_user`.
pub fn render_ident(os_user: &str) -> String {
    format!(
        "# Managed by pgha.\n{AGENT_IDENT_MAP} {os_user} {}\n",
        names::SUPERUSER
    )
}

/// `pg_hba.conf`: the agent's local superuser and the replication role first (so no user rule
/// can lock them out), then the user's rules, then password authentication for everyone else.
/// With `tls`, the replication role logs in with its certificate and passwords only over TLS
/// (a client without it matches no rule and is refused).
pub fn render_hba(rules: &[String], tls: bool) -> Result<String, ConfigError> {
    let mut out = String::from("# Managed by pgha: edit spec.postgresql.pgHba instead.\n");
    out.push_str(&format!(
        "local all {} peer map={AGENT_IDENT_MAP}\n",
        names::SUPERUSER
    ));
    let repl = names::REPLICATION_USER;
    match tls {
        // Streaming, and the slot lookup and pg_rewind's connection to a database.
        true => out.push_str(&format!(
            "hostssl replication {repl} all cert\nhostssl all {repl} all cert\n"
        )),
        false => out.push_str(&format!("host replication {repl} all scram-sha-256\n")),
    }
    for (index, line) in rules.iter().enumerate() {
        if !is_hba_rule(line) {
            return Err(ConfigError::HbaLine {
                index,
                line: line.clone(),
            });
        }
        out.push_str(line.trim());
        out.push('\n');
    }
    let host = if tls { "hostssl" } else { "host" };
    out.push_str(&format!("{host} all all all scram-sha-256\n"));
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

/// The primary a replica streams from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// A libpq password file holding the replication role's password, so that no password is
    /// written into the configuration.
    pub passfile: String,
}

/// What the agent knows about its own instance: the settings no user may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSettings {
    pub name: String,
    pub listen_address: String,
    pub port: u16,
    pub socket_dir: String,
    pub synchronous_standby_names: String,
    /// `Some` for a replica.
    pub upstream: Option<Upstream>,
    /// `Some` when the cluster archives WAL.
    pub archive: Option<ArchiveCommands>,
    /// `Some` when Postgres serves TLS.
    pub tls: Option<TlsFiles>,
}

/// Where an instance's TLS files are, and the name it verifies its primary's certificate as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Each part's path.
    pub paths: crate::plan::tls::Material,
    pub verify_name: String,
}

impl TlsFiles {
    /// The files of `plan::tls::Material::FILES` in `dir`.
    pub fn in_dir(dir: &str, verify_name: &str) -> Self {
        let paths = crate::plan::tls::Material::FILES.map(|file| format!("{dir}/{file}"));
        Self {
            paths: crate::plan::tls::Material::from_parts(paths),
            verify_name: verify_name.to_string(),
        }
    }
}

/// How the replication role reaches `upstream`: with TLS by its certificate, verifying the
/// server as `verify_name` (the address then goes in `hostaddr`); without, by the password
/// file. `dbname` for a connection to a database rather than the replication protocol.
pub fn replication_conninfo(
    upstream: &Upstream,
    tls: Option<&TlsFiles>,
    dbname: Option<&str>,
    application_name: Option<&str>,
) -> String {
    let port = upstream.port.to_string();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    match tls {
        Some(tls) => {
            let address = upstream.host.parse::<std::net::IpAddr>().is_ok();
            match address {
                true => fields.extend([
                    ("host", tls.verify_name.as_str()),
                    ("hostaddr", upstream.host.as_str()),
                ]),
                false => fields.push(("host", upstream.host.as_str())),
            }
            fields.extend([
                ("port", port.as_str()),
                ("user", names::REPLICATION_USER),
                ("sslmode", "verify-full"),
                ("sslrootcert", tls.paths.server_ca.as_str()),
                ("sslcert", tls.paths.client_cert.as_str()),
                ("sslkey", tls.paths.client_key.as_str()),
            ]);
        }
        None => fields.extend([
            ("host", upstream.host.as_str()),
            ("port", port.as_str()),
            ("user", names::REPLICATION_USER),
            ("passfile", upstream.passfile.as_str()),
        ]),
    }
    fields.extend(dbname.map(|d| ("dbname", d)));
    fields.extend(application_name.map(|a| ("application_name", a)));
    fields
        .iter()
        .map(|(key, value)| format!("{key}={}", conninfo_value(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How WAL reaches and comes back from the archive: `pgha wal-push` / `wal-fetch` with the
/// store's configuration, without the `%p` / `%f %p` Postgres appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveCommands {
    pub push: String,
    pub fetch: String,
    /// The `pgha` binary and the store file the commands use (backups use them too).
    pub pgha: PathBuf,
    pub store: PathBuf,
}

impl ArchiveCommands {
    /// The commands of the `pgha` binary at `pgha` with the store file `store`, both absolute:
    /// Postgres runs them from the data directory.
    pub fn new(pgha: &Path, store: &Path) -> Self {
        let command = |verb: &str| format!("{} {verb} --store {}", pgha.display(), store.display());
        Self {
            push: command("wal-push"),
            fetch: command("wal-fetch"),
            pgha: pgha.to_path_buf(),
            store: store.to_path_buf(),
        }
    }
}

/// Where `pgha wal-push` with the store file `store` leaves its last failure.
pub fn push_error_file(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".error");
    PathBuf::from(name)
}

/// Where `pgha wal-push` with the store file `store` leaves the archive's owner record while
/// the archive belongs to another database.
pub fn foreign_owner_file(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".foreign-owner");
    PathBuf::from(name)
}

/// The replication slot the primary keeps for an instance (slot names allow `[a-z0-9_]`).
pub fn slot_name(instance: &str) -> String {
    format!("pgha_{}", instance.replace('-', "_"))
}

/// `operator.conf` of one instance. It is included after `user.conf`, so it wins.
pub fn instance_parameters(instance: &InstanceSettings) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (
            "listen_addresses".to_string(),
            instance.listen_address.clone(),
        ),
        ("port".to_string(), instance.port.to_string()),
        (
            "unix_socket_directories".to_string(),
            instance.socket_dir.clone(),
        ),
        // Standbys report it as application_name, which synchronous_standby_names matches.
        ("cluster_name".to_string(), instance.name.clone()),
        ("hot_standby".to_string(), "on".to_string()),
        ("wal_log_hints".to_string(), "on".to_string()),
        ("recovery_target_timeline".to_string(), "latest".to_string()),
        (
            "synchronous_standby_names".to_string(),
            instance.synchronous_standby_names.clone(),
        ),
    ]);
    if let Some(upstream) = &instance.upstream {
        let conninfo =
            replication_conninfo(upstream, instance.tls.as_ref(), None, Some(&instance.name));
        out.insert("primary_conninfo".to_string(), conninfo);
        out.insert("primary_slot_name".to_string(), slot_name(&instance.name));
    }
    if let Some(tls) = &instance.tls {
        for (name, value) in [
            ("ssl", "on"),
            ("ssl_cert_file", &tls.paths.server_cert),
            ("ssl_key_file", &tls.paths.server_key),
            // Client certificates (the replication role's) are verified with the cluster CA.
            ("ssl_ca_file", &tls.paths.client_ca),
            ("ssl_min_protocol_version", "TLSv1.2"),
        ] {
            out.insert(name.to_string(), value.to_string());
        }
    }
    if let Some(archive) = &instance.archive {
        out.insert("archive_mode".to_string(), "on".to_string());
        out.insert(
            "archive_command".to_string(),
            format!("{} %p", archive.push),
        );
        // A replica that falls behind its slot reads the archive. `--standby`: an unreachable
        // store must send it back to streaming, not stop it (see `pgha wal-fetch --help`).
        out.insert(
            "restore_command".to_string(),
            format!("{} --standby %f %p", archive.fetch),
        );
    }
    out
}

/// A libpq connection-string value, quoted when it has to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica() -> InstanceSettings {
        InstanceSettings {
            name: "db-2".into(),
            listen_address: "127.0.0.2".into(),
            port: 5432,
            socket_dir: "/run/pgha".into(),
            synchronous_standby_names: String::new(),
            upstream: Some(Upstream {
                host: "db-1.ns".into(),
                port: 5433,
                passfile: "/run/pgha/my pass".into(),
            }),
            archive: Some(ArchiveCommands::new(
                Path::new("/pgha"),
                Path::new("/s.yaml"),
            )),
            tls: None,
        }
    }

    #[test]
    fn with_a_certificate_postgres_serves_tls_1_2_and_up_and_replicas_verify_it() {
        let with = InstanceSettings {
            tls: Some(TlsFiles::in_dir("/run/pgha/tls", "db-rw")),
            upstream: Some(Upstream {
                host: "127.0.0.3".into(),
                port: 5432,
                passfile: "/run/pgha/pgpass".into(),
            }),
            ..replica()
        };
        let p = instance_parameters(&with);
        assert_eq!(p["ssl"], "on");
        assert_eq!(p["ssl_key_file"], "/run/pgha/tls/server.key");
        assert_eq!(p["ssl_ca_file"], "/run/pgha/tls/client-ca.crt");
        assert_eq!(p["ssl_min_protocol_version"], "TLSv1.2");
        assert_eq!(
            p["primary_conninfo"],
            "host=db-rw hostaddr=127.0.0.3 port=5432 user=streaming_replica sslmode=verify-full \
             sslrootcert=/run/pgha/tls/server-ca.crt sslcert=/run/pgha/tls/client.crt \
             sslkey=/run/pgha/tls/client.key application_name=db-2"
        );
        assert!(!instance_parameters(&replica()).contains_key("ssl"));
    }

    #[test]
    fn with_tls_no_password_crosses_the_network_in_clear() {
        let rules = ["host all app 10.0.0.0/8 scram-sha-256".to_string()];
        let hba = render_hba(&rules, true).unwrap();
        let lines: Vec<&str> = hba.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "local all postgres peer map=pgha-agent",
                "hostssl replication streaming_replica all cert",
                "hostssl all streaming_replica all cert",
                "host all app 10.0.0.0/8 scram-sha-256",
                "hostssl all all all scram-sha-256",
            ]
        );
        let without = render_hba(&[], false).unwrap();
        assert!(without.contains("host replication streaming_replica all scram-sha-256"));
        assert!(without.ends_with("host all all all scram-sha-256\n"));
    }

    #[test]
    fn archiving_sets_mode_and_both_commands() {
        let params = instance_parameters(&replica());
        assert_eq!(params["archive_mode"], "on");
        assert_eq!(
            params["archive_command"],
            "/pgha wal-push --store /s.yaml %p"
        );
        assert_eq!(
            params["restore_command"],
            "/pgha wal-fetch --store /s.yaml --standby %f %p"
        );
        let without = InstanceSettings {
            archive: None,
            ..replica()
        };
        assert!(!instance_parameters(&without).contains_key("archive_mode"));
    }

    #[test]
    fn replica_streams_from_its_upstream_under_its_own_name_and_slot() {
        let p = instance_parameters(&replica());
        assert_eq!(
            p["primary_conninfo"],
            "host=db-1.ns port=5433 user=streaming_replica passfile='/run/pgha/my pass' application_name=db-2"
        );
        assert_eq!(p["primary_slot_name"], "pgha_db_2");
        assert_eq!(p["cluster_name"], "db-2");
        assert_eq!(p["recovery_target_timeline"], "latest");
    }

    #[test]
    fn primary_has_no_upstream() {
        let mut settings = replica();
        settings.upstream = None;
        let p = instance_parameters(&settings);
        assert!(!p.contains_key("primary_conninfo"));
        assert!(!p.contains_key("primary_slot_name"));
    }

    #[test]
    fn conninfo_values_are_quoted_when_needed() {
        assert_eq!(conninfo_value("plain"), "plain");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(conninfo_value(r"it's a\b"), r"'it\'s a\\b'");
    }

    #[test]
    fn every_instance_setting_is_owned() {
        // A user parameter may never shadow what the agent sets per instance.
        for name in instance_parameters(&replica()).keys() {
            assert!(
                OWNED_PARAMETERS.iter().any(|(owned, _)| owned == name),
                "{name} is set by the agent but not in OWNED_PARAMETERS"
            );
        }
    }

    #[test]
    fn ident_maps_the_agent_user_to_the_superuser() {
        assert!(render_ident("root").contains("pgha-agent root postgres"));
        assert!(
            render_hba(&[], true)
                .unwrap()
                .contains("local all postgres peer map=pgha-agent")
        );
    }
}
