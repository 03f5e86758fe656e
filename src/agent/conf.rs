//! The configuration files in the data directory. `postgresql.conf` only includes
//! `user.conf` (defaults and the user's parameters) and then `operator.conf` (what the agent
//! owns); a later setting wins, so no user parameter can override the operator's.

use super::error::{AgentError, Result};
use super::settings::Settings;
use super::{files, pgbin};
use crate::plan::agent::{Endpoint, PostgresConfig};
use crate::plan::config::{self, InstanceSettings, TlsFiles, Upstream};
use crate::plan::tls::Material;

/// The rendered files, checked before anything is written.
pub struct Rendered {
    user: String,
    hba: String,
}

/// Checks the user's part; an owned parameter or a bad rule is an error naming it.
pub fn render(settings: &Settings, config: &PostgresConfig) -> Result<Rendered> {
    Ok(Rendered {
        user: config::render_conf(&config::parameters(&config.parameters)?),
        hba: config::render_hba(&config.pg_hba, tls_files(settings).is_some())?,
    })
}

/// The record of the configuration the files in the data directory were written from: what
/// a restart falls back to when the ordered one is refused.
const WRITTEN: &str = "pgha-config.json";
/// Where `check` stages the files: in the socket directory, which only Postgres's user reads.
const STAGE: &str = "config-check";

/// The certificates as mounted (the pod's start); None until every Secret is there.
pub fn mounted_tls(settings: &Settings) -> Option<Material> {
    let tls = settings.tls.as_ref()?;
    Material::read(&tls.sources, |secret, key| {
        std::fs::read_to_string(tls.dir.join(secret).join(key)).ok()
    })
}

/// Writes the certificates where Postgres reads them: the keys must belong to Postgres's user
/// and be readable by it alone. All six change at once (a new directory, then the `tls`
/// link moved to it), so no reader meets a new certificate beside an old key.
pub fn install_tls(settings: &Settings, material: &Material) -> Result<()> {
    let owner = settings.run_as.as_ref();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let version = format!("tls-{stamp}");
    let dir = settings.run_dir.join(&version);
    files::ensure_dir(&dir, 0o700, owner)?;
    for (name, text) in Material::FILES.iter().zip(material.contents()) {
        files::write(&dir.join(name), text, 0o600, owner)?;
    }
    let link = settings.run_dir.join("tls");
    if link.is_dir() && !link.is_symlink() {
        std::fs::remove_dir_all(&link).map_err(AgentError::io("removing", &link))?;
    }
    let next = settings.run_dir.join("tls.next");
    files::remove_if_present(&next)?;
    std::os::unix::fs::symlink(&version, &next).map_err(AgentError::io("linking", &next))?;
    std::fs::rename(&next, &link).map_err(AgentError::io("moving into place", &link))?;
    // The versions before this one.
    let entries = std::fs::read_dir(&settings.run_dir)
        .map_err(AgentError::io("reading", &settings.run_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tls-") && name != version {
            let old = entry.path();
            std::fs::remove_dir_all(&old).map_err(AgentError::io("removing", &old))?;
        }
    }
    Ok(())
}

/// The installed certificates; None without them (Postgres then serves no TLS).
pub fn tls_files(settings: &Settings) -> Option<TlsFiles> {
    let tls = settings.tls.as_ref()?;
    let dir = settings.run_dir.join("tls");
    if !Material::FILES.iter().all(|n| dir.join(n).exists()) {
        return None;
    }
    Some(TlsFiles::in_dir(
        &dir.display().to_string(),
        &tls.verify_name,
    ))
}

/// How the replication role reaches `primary` (`dbname` for a database connection): by its
/// certificate once installed, else by the password file.
pub fn upstream_conninfo(settings: &Settings, primary: &Endpoint, dbname: Option<&str>) -> String {
    config::replication_conninfo(
        &upstream(settings, primary),
        tls_files(settings).as_ref(),
        dbname,
        None,
    )
}

fn upstream(settings: &Settings, primary: &Endpoint) -> Upstream {
    Upstream {
        host: primary.host.clone(),
        port: primary.port,
        passfile: settings.passfile().display().to_string(),
    }
}

/// The configuration files, by name.
fn files(
    settings: &Settings,
    config: &PostgresConfig,
    rendered: &Rendered,
    upstream: Option<&Endpoint>,
    tls: Option<TlsFiles>,
) -> Vec<(&'static str, String)> {
    let instance = InstanceSettings {
        name: settings.name.clone(),
        listen_address: settings.listen_address.clone(),
        port: settings.port,
        socket_dir: settings.run_dir.display().to_string(),
        synchronous_standby_names: config.synchronous_standby_names.clone(),
        upstream: upstream.map(|e| self::upstream(settings, e)),
        archive: settings.archive.clone(),
        tls,
    };
    let header = "# Managed by pgha; changes here are overwritten.\n";
    let main = format!("{header}include 'user.conf'\ninclude 'operator.conf'\n");
    let operator = config::render_conf(&config::instance_parameters(&instance));
    vec![
        ("postgresql.conf", main),
        ("user.conf", format!("{header}{}", rendered.user)),
        ("operator.conf", format!("{header}{operator}")),
        ("pg_hba.conf", rendered.hba.clone()),
        (
            "pg_ident.conf",
            config::render_ident(&settings.agent_os_user()),
        ),
        // Read after postgresql.conf: ALTER SYSTEM could otherwise override owned settings.
        (
            "postgresql.auto.conf",
            "# pgha does not use ALTER SYSTEM: set spec.postgresql.parameters.\n".to_string(),
        ),
    ]
}

/// The files written from the user's part of the configuration.
const USER_FILES: [&str; 2] = ["user.conf", "pg_hba.conf"];

/// Writes every configuration file, and `standby.signal` exactly when following `upstream`.
pub fn write(
    settings: &Settings,
    config: &PostgresConfig,
    rendered: &Rendered,
    upstream: Option<&Endpoint>,
) -> Result<()> {
    write_files(settings, config, rendered, upstream, true)
}

/// Writes the operator's files and leaves the user's (`user.conf`, `pg_hba.conf`) as they
/// are: for a start whose ordered user configuration Postgres refuses, with no record of the
/// one those files were written from.
pub fn write_operator_files(
    settings: &Settings,
    config: &PostgresConfig,
    upstream: Option<&Endpoint>,
) -> Result<()> {
    write_files(
        settings,
        config,
        &render(settings, config)?,
        upstream,
        false,
    )
}

fn write_files(
    settings: &Settings,
    config: &PostgresConfig,
    rendered: &Rendered,
    upstream: Option<&Endpoint>,
    user: bool,
) -> Result<()> {
    let dir = &settings.data_dir;
    let owner = settings.run_as.as_ref();
    let tls = tls_files(settings);
    for (file, contents) in files(settings, config, rendered, upstream, tls) {
        if user || !USER_FILES.contains(&file) {
            files::write(&dir.join(file), &contents, 0o600, owner)?;
        }
    }
    if user {
        let record = serde_json::to_string(config).unwrap_or_default();
        files::write(&dir.join(WRITTEN), &record, 0o600, owner)?;
    }
    let signal = dir.join("standby.signal");
    match upstream {
        Some(_) => files::write(&signal, "", 0o600, owner),
        None => files::remove_if_present(&signal),
    }
}

/// The configuration the files in the data directory were last written from.
pub fn last_written(settings: &Settings) -> Option<PostgresConfig> {
    let text = std::fs::read_to_string(settings.data_dir.join(WRITTEN)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Has Postgres itself read the configuration before it is written: `postgres -C` parses the
/// staged files as a server start does, and fails on an unknown parameter or a value it does
/// not take (out of range, wrong unit, not one of its choices), which our checks cannot know.
/// `pg_hba.conf` is checked by `hba_errors` once written.
pub async fn check(
    settings: &Settings,
    config: &PostgresConfig,
    rendered: &Rendered,
    upstream: Option<&Endpoint>,
) -> Result<()> {
    let stage = settings.run_dir.join(STAGE);
    let owner = settings.run_as.as_ref();
    files::ensure_dir(&settings.run_dir, 0o700, owner)?;
    files::ensure_dir(&stage, 0o700, owner)?;
    let tls = tls_files(settings);
    for (file, contents) in files(settings, config, rendered, upstream, tls) {
        files::write(&stage.join(file), &contents, 0o600, owner)?;
    }
    let mut postgres = pgbin::command(settings, "postgres");
    postgres
        .args(["-C", "config_file"])
        .arg(format!(
            "--config-file={}",
            stage.join("postgresql.conf").display()
        ))
        .arg("-D")
        .arg(&settings.data_dir);
    let out = postgres
        .output()
        .await
        .map_err(AgentError::io("running", settings.bin_dir.join("postgres")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only a refusal of the files is the configuration's fault; anything else (a missing
    // data directory, a crash) is an ordinary failure.
    if !stderr.contains("contains errors") {
        return Err(AgentError::Command {
            program: "postgres -C".into(),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    let stage = stage.display().to_string();
    let data = settings.data_dir.display().to_string();
    Err(AgentError::ConfigInvalid(
        config::postgres_complaints(&stderr).replace(&stage, &data),
    ))
}

/// `pg_hba.conf` as the running server reads it now: the lines it would refuse.
pub async fn hba_errors(client: &tokio_postgres::Client) -> Result<Option<String>> {
    let rows = client
        .query(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL",
            &[],
        )
        .await
        .map_err(AgentError::sql("reading pg_hba_file_rules"))?;
    let errors: Vec<String> = rows
        .iter()
        .map(|r| {
            let line: Option<i32> = r.get(0);
            let error: String = r.get(1);
            format!("pg_hba.conf line {}: {error}", line.unwrap_or_default())
        })
        .collect();
    Ok((!errors.is_empty()).then(|| errors.join("; ")))
}

/// A libpq password file with the replication role's password, for `primary_conninfo`,
/// `pg_basebackup` and `pg_rewind`.
pub fn write_passfile(settings: &Settings, password: &str) -> Result<()> {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    let line = format!("*:*:*:{}:{escaped}\n", crate::plan::names::REPLICATION_USER);
    files::write(&settings.passfile(), &line, 0o600, settings.run_as.as_ref())
}
