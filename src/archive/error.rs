//! What can go wrong while archiving or restoring. Every error names the object or file it is
//! about and the operation; none carries a credential.

use std::path::PathBuf;

use thiserror::Error;

use crate::plan::recovery::TargetError;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("{operation} s3://{bucket}/{key}: {message}")]
    Store {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store configuration: {0}")]
    Config(String),
    #[error(
        "s3://{bucket}/{key} already holds different content than {path} (sha256 {stored} in the archive, {local} here); \
         two clusters may be archiving to one prefix — the archived file is left untouched"
    )]
    Conflict {
        bucket: String,
        key: String,
        path: PathBuf,
        stored: String,
        local: String,
    },
    #[error("s3://{bucket}/{key} is corrupt: {why}; it was not used")]
    Corrupt {
        bucket: String,
        key: String,
        why: String,
    },
    #[error("{context}: {message}")]
    Sql {
        context: &'static str,
        message: String,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Refused(String),
    #[error("{}", crate::plan::ownership::refusal(location, owner, writer))]
    OwnedByOther {
        location: String,
        owner: Box<crate::api::common::ArchiveOwner>,
        writer: Box<crate::api::common::ArchiveOwner>,
    },
}

impl ArchiveError {
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

    pub(crate) fn sql(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |e| Self::Sql {
            context,
            message: crate::pg::db_message(&e),
        }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
