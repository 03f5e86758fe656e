//! Files and folders the agent writes for Postgres: owned by the Postgres user, replaced
//! atomically so a crash never leaves half a configuration file behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::error::{AgentError, Result};
use super::settings::RunAs;

pub fn write(path: &Path, contents: &str, mode: u32, owner: Option<&RunAs>) -> Result<()> {
    let tmp = path.with_extension("pgha-tmp");
    std::fs::write(&tmp, contents).map_err(AgentError::io("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(AgentError::io("setting permissions on", &tmp))?;
    give(&tmp, owner)?;
    std::fs::rename(&tmp, path).map_err(AgentError::io("replacing", path))
}

/// Creates `dir` (and its parents) if missing, with `mode`, owned by `owner`.
pub fn ensure_dir(dir: &Path, mode: u32, owner: Option<&RunAs>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(AgentError::io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(AgentError::io("setting permissions on", dir))?;
    give(dir, owner)
}

pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(AgentError::io("removing", path)(e))
        }
        _ => Ok(()),
    }
}

fn give(path: &Path, owner: Option<&RunAs>) -> Result<()> {
    match owner {
        Some(user) => {
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(AgentError::io("changing the owner of", path))
        }
        None => Ok(()),
    }
}
