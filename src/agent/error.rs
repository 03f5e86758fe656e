//! What can go wrong in the agent, each error saying what it was doing and on what.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::plan::agent::OrdersError;
use crate::plan::config::ConfigError;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {message}")]
    Sql {
        context: &'static str,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Postgres itself refuses the configuration (its own messages).
    #[error("Postgres refuses the configuration: {0}")]
    ConfigInvalid(String),
    #[error(transparent)]
    Orders(#[from] OrdersError),
    #[error("postgres did not accept connections within {0:?}; see its log")]
    NotReady(Duration),
    #[error("the postmaster exited {0}; see its log")]
    Exited(String),
    #[error("{0}")]
    Refused(String),
    #[error("credentials: {path}: {why}")]
    Credentials { path: PathBuf, why: String },
    #[error("Kubernetes API: {0}")]
    Kubernetes(String),
}

impl AgentError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    /// A database error with the server's own message, which `tokio_postgres::Error`'s
    /// `Display` leaves out.
    pub(crate) fn sql(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |e| Self::Sql {
            context,
            message: crate::pg::db_message(&e),
        }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
