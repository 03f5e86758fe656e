//! `pgha crd`: the CRDs as YAML.

use std::path::Path;

use crate::api::crd;

pub fn run(out_dir: Option<&Path>) -> Result<(), Box<dyn std::error::Error>> {
    for def in crd::all() {
        let yaml = crd::to_yaml(&def)?;
        match out_dir {
            Some(dir) => {
                let path = dir.join(crd::file_name(&def));
                std::fs::write(&path, yaml)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
