//! `pgha validate -f FILE`: the operator's own spec checks, before anything reaches a cluster.

use std::path::Path;

use crate::api::PgCluster;
use crate::plan::validation::validate;

pub fn run(file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let mut cluster: PgCluster = serde_saphyr::from_str(&text)
        .map_err(|e| format!("{}: not a PgCluster: {e}", file.display()))?;
    // kubectl puts an object without a namespace into "default"; so do we.
    cluster
        .metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    match validate(&cluster) {
        Ok(valid) => {
            println!(
                "{}: PgCluster {}/{} is valid",
                file.display(),
                valid.namespace,
                valid.name
            );
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", file.display());
            }
            Err(format!("{} problem(s) in {}", errors.len(), file.display()).into())
        }
    }
}
