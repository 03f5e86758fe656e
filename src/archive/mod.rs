//! Continuous archiving to an S3-compatible object store: WAL push and fetch, streamed base
//! backups with a manifest, the catalog, restore and retention. The decisions (which backup a
//! target needs, what retention deletes) are pure functions in `plan::recovery` and
//! `plan::retention`; this module moves the bytes.

pub mod backup;
pub mod catalog;
pub mod codec;
pub mod error;
pub mod manifest;
pub mod owner;
pub mod prefetch;
pub mod restore;
pub mod retention;
pub mod store;
pub mod wal;

pub use error::{ArchiveError, Result};
pub use store::{Store, StoreConfig};
