//! The owner record of an archive, `<path>/owner.json`: written once by the first push or
//! backup, checked by every writer after it (`plan::ownership` decides).

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use std::path::Path;

use super::error::{ArchiveError, Result};
use super::store::Store;
use crate::api::common::{ArchiveOwner, ClusterIdentity};
use crate::plan::ownership;

pub const KEY: &str = "owner.json";
/// Where archives claimed before the owner record named its cluster kept the database system.
const SYSTEM_IDENTIFIER_KEY: &str = "system-identifier";

/// The system identifier in `<data_dir>/global/pg_control` (its first eight bytes).
pub fn system_identifier(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(ArchiveError::io("reading", &path))?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ArchiveError::Refused(format!("{}: too short", path.display())))?;
    Ok(u64::from_le_bytes(first).to_string())
}

/// The database in `data_dir`, of `cluster` when known, as an owner record would name it now.
pub fn this_database(data_dir: &Path, cluster: Option<&ClusterIdentity>) -> Result<ArchiveOwner> {
    Ok(ArchiveOwner {
        system_identifier: system_identifier(data_dir)?,
        cluster: cluster.cloned(),
        created: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)),
    })
}

/// The archive's owner record, if it has one.
pub async fn read(store: &Store) -> Result<Option<ArchiveOwner>> {
    if let Some((body, _)) = store.get_bytes(KEY).await? {
        return serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| store.corrupt(KEY)(format!("it is not an owner record ({e})")));
    }
    Ok(store
        .get_bytes(SYSTEM_IDENTIFIER_KEY)
        .await?
        .map(|(body, _)| ArchiveOwner {
            system_identifier: String::from_utf8_lossy(&body).trim().to_string(),
            cluster: None,
            created: None,
        }))
}

/// Makes sure the archive is `writer`'s: the first writer records itself, any later one must
/// be admitted by that record. Nothing else is written when it is not.
pub async fn claim(store: &Store, writer: &ArchiveOwner) -> Result<()> {
    let body = Bytes::from(serde_json::to_vec_pretty(writer).expect("an owner record serializes"));
    let record = match read(store).await? {
        Some(record) => record,
        None => {
            if store.put(KEY, body.clone(), None, true).await? {
                // Older pgha reads only this one: it then refuses other databases too.
                let system = Bytes::from(writer.system_identifier.clone());
                store.put(SYSTEM_IDENTIFIER_KEY, system, None, true).await?;
                return Ok(());
            }
            // Another writer claimed it between our read and our write.
            read(store).await?.ok_or_else(|| {
                store.corrupt(KEY)("it vanished right after it was written".into())
            })?
        }
    };
    if ownership::admits(&record, writer) {
        if record.cluster.is_none() && writer.cluster.is_some() {
            // An archive claimed by an older pgha (or outside Kubernetes) learns its cluster,
            // so a copy restored under another name is refused from now on.
            store.put(KEY, body, None, true).await?;
        }
        return Ok(());
    }
    Err(ArchiveError::OwnedByOther {
        location: store.location(),
        owner: Box::new(record),
        writer: Box::new(writer.clone()),
    })
}
