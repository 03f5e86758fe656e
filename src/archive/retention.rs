//! Applies retention to the archive: `plan::retention` decides, this deletes.

use chrono::{DateTime, Utc};

use super::catalog;
use super::error::Result;
use super::store::Store;
use super::wal;
use crate::plan::retention::{self, Policy, Selection};

/// Deletes what `policy` no longer keeps at `now` (nothing with `dry_run`) and returns it.
/// A backup's manifest goes first, so a backup half deleted is never taken for complete.
pub async fn apply(
    store: &Store,
    policy: &Policy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Selection> {
    let catalog = catalog::read(store).await?;
    let selection = retention::select(
        policy,
        &catalog.points(),
        &catalog.wal_names(),
        now,
        catalog.segment_size,
    );
    if dry_run {
        return Ok(selection);
    }
    for id in &selection.backups {
        store.delete(&[super::manifest::manifest_key(id)]).await?;
        let prefix = format!("base/{id}/");
        let keys: Vec<String> = store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        store.delete(&keys).await?;
    }
    let wal_keys: Vec<String> = selection.wal.iter().map(|n| wal::key(n)).collect();
    store.delete(&wal_keys).await?;
    Ok(selection)
}
