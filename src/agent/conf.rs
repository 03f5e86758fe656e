//! The configuration files in the data directory. `postgresql.conf` only includes
//! `user.conf` (defaults and the user's parameters) and then `operator.conf` (what the agent
//! owns); a later setting wins, so no user parameter can override the operator's.

use super::error::Result;
use super::files;
use super::settings::Settings;
use crate::plan::agent::{Endpoint, PostgresConfig};
use crate::plan::config::{self, InstanceSettings, Upstream};

/// The rendered files, checked before anything is written.
pub struct Rendered {
    user: String,
    hba: String,
}

/// Checks the user's part; an owned parameter or a bad rule is an error naming it.
pub fn render(config: &PostgresConfig) -> Result<Rendered> {
    Ok(Rendered {
        user: config::render_conf(&config::parameters(&config.parameters)?),
        hba: config::render_hba(&config.pg_hba)?,
    })
}

/// Writes every configuration file, and `standby.signal` exactly when following `upstream`.
pub fn write(
    settings: &Settings,
    config: &PostgresConfig,
    rendered: &Rendered,
    upstream: Option<&Endpoint>,
) -> Result<()> {
    let instance = InstanceSettings {
        name: settings.name.clone(),
        listen_address: settings.listen_address.clone(),
        port: settings.port,
        socket_dir: settings.run_dir.display().to_string(),
        synchronous_standby_names: config.synchronous_standby_names.clone(),
        upstream: upstream.map(|e| Upstream {
            host: e.host.clone(),
            port: e.port,
            passfile: settings.passfile().display().to_string(),
        }),
        archive: settings.archive.clone(),
    };
    let dir = &settings.data_dir;
    let owner = settings.run_as.as_ref();
    let header = "# Managed by pgha; changes here are overwritten.\n";
    let main = format!("{header}include 'user.conf'\ninclude 'operator.conf'\n");
    let operator = config::render_conf(&config::instance_parameters(&instance));
    for (file, contents) in [
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
    ] {
        files::write(&dir.join(file), &contents, 0o600, owner)?;
    }
    let signal = dir.join("standby.signal");
    match upstream {
        Some(_) => files::write(&signal, "", 0o600, owner),
        None => files::remove_if_present(&signal),
    }
}

/// A libpq password file with the replication role's password, for `primary_conninfo`,
/// `pg_basebackup` and `pg_rewind`.
pub fn write_passfile(settings: &Settings, password: &str) -> Result<()> {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    let line = format!("*:*:*:{}:{escaped}\n", crate::plan::names::REPLICATION_USER);
    files::write(&settings.passfile(), &line, 0o600, settings.run_as.as_ref())
}
