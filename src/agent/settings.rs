//! Where an instance lives and how it is reached: fixed for the life of the agent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};

use super::error::{AgentError, Result};
pub use crate::plan::config::ArchiveCommands;

/// The operating-system user Postgres runs as when the agent itself runs as root
/// (Postgres refuses to run as root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    pub fn user(name: &str) -> Result<Self> {
        let not_found = |why: String| AgentError::Refused(format!("user {name}: {why}"));
        let user = User::from_name(name)
            .map_err(|e| not_found(e.to_string()))?
            .ok_or_else(|| not_found("no such user".into()))?;
        Ok(Self {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// The instance name: `cluster_name`, `application_name` and the slot name derive from it.
    pub name: String,
    pub data_dir: PathBuf,
    /// Socket and password file; kept out of the data directory so backups never carry them.
    pub run_dir: PathBuf,
    pub listen_address: String,
    pub port: u16,
    /// Postgres's `bin` directory.
    pub bin_dir: PathBuf,
    pub run_as: Option<RunAs>,
    /// The postmaster's stdout and stderr; inherited from the agent when `None`.
    pub log_file: Option<PathBuf>,
    /// Timings, see [`Timeouts`].
    pub timeouts: Timeouts,
    /// WAL archiving, when the cluster has an object store.
    pub archive: Option<ArchiveCommands>,
    /// Where the credentials of a recovery source's object store are mounted.
    pub source_credentials_dir: PathBuf,
    /// Where the certificates come from; Postgres serves TLS once all of them are there.
    pub tls: Option<TlsSettings>,
}

/// The Secrets an instance's certificates are in, mounted at `<dir>/<Secret name>`.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub dir: PathBuf,
    pub sources: crate::plan::tls::Sources,
    /// The name replicas verify their primary's certificate as.
    pub verify_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a start may take before it is reported as failed.
    pub start: Duration,
    /// Smart shutdown waits this long for clients to leave before a fast shutdown.
    pub smart_stop: Duration,
    /// A fast shutdown gets this long before every Postgres process is killed.
    pub fast_stop: Duration,
    /// The whole of `fence()`: fast shutdown for at most this long, then kill.
    pub fence: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            start: Duration::from_secs(60),
            smart_stop: Duration::from_secs(10),
            fast_stop: Duration::from_secs(30),
            fence: Duration::from_secs(2),
        }
    }
}

impl Settings {
    /// The OS user the agent connects as over the local socket.
    pub fn agent_os_user(&self) -> String {
        User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map_or_else(|| "root".to_string(), |u| u.name)
    }

    pub fn passfile(&self) -> PathBuf {
        self.run_dir.join("pgpass")
    }
}

/// A credential. It prints as `<redacted>` so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The application's role and database, created by `initdb` bootstrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppUser {
    pub user: String,
    pub password: Secret,
    pub database: String,
}

/// The passwords the agent needs, read from the mounted Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub superuser: Secret,
    pub replication: Secret,
    pub app: Option<AppUser>,
}

impl Credentials {
    /// Reads `superuser/password`, `replication/password` and, when present,
    /// `app/{username,password,dbname}` under `dir` (one mounted Secret per folder).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        // An optional Secret that does not exist is mounted as an empty folder.
        let app_dir = dir.join("app");
        let app = if app_dir.join("username").exists() {
            Some(AppUser {
                user: read_value(&app_dir.join("username"))?,
                password: Secret(read_value(&app_dir.join("password"))?),
                database: read_value(&app_dir.join("dbname"))?,
            })
        } else {
            None
        };
        Ok(Self {
            superuser: Secret(read_value(&dir.join("superuser/password"))?),
            replication: Secret(read_value(&dir.join("replication/password"))?),
            app,
        })
    }
}

fn read_value(path: &Path) -> Result<String> {
    let value = std::fs::read_to_string(path).map_err(|e| AgentError::Credentials {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(AgentError::Credentials {
            path: path.to_path_buf(),
            why: "the file is empty".into(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let creds = Credentials {
            superuser: Secret::new("hunter2"),
            replication: Secret::new("s3cret"),
            app: None,
        };
        let shown = format!("{creds:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn credentials_come_from_mounted_secret_folders() {
        let dir = tempfile::tempdir().unwrap();
        for (file, value) in [
            ("superuser/password", "su\n"),
            ("replication/password", "rep"),
            ("app/username", "app"),
            ("app/password", "pw"),
            ("app/dbname", "appdb"),
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, value).unwrap();
        }
        let creds = Credentials::from_dir(dir.path()).unwrap();
        assert_eq!(creds.superuser.expose(), "su");
        assert_eq!(creds.app.unwrap().database, "appdb");

        std::fs::write(dir.path().join("replication/password"), "").unwrap();
        let err = Credentials::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("replication/password: the file is empty"),
            "{err}"
        );
    }
}
