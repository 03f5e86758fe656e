//! Running Postgres's own programs (`initdb`, `pg_basebackup`, `pg_rewind`, ...).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::error::{AgentError, Result};
use super::settings::Settings;

/// Postgres's `bin` directory: `$PGHA_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PGHA_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A command for one of Postgres's programs, run as the Postgres user, with libpq's
/// environment cleared so nothing from the agent's environment leaks into a connection.
pub fn command(settings: &Settings, program: &str) -> Command {
    let mut cmd = Command::new(settings.bin_dir.join(program));
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSERVICE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGPASSFILE", settings.passfile());
    if let Some(user) = &settings.run_as {
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a command to completion; a failure carries the end of its stderr.
pub async fn run(mut cmd: Command) -> Result<String> {
    let program = Path::new(cmd.as_std().get_program())
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(AgentError::io("running", &program))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(AgentError::Command {
            program,
            status: out.status.to_string(),
            stderr: tail(&stderr, 2000),
        });
    }
    Ok(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().rev().nth(max) {
        Some((at, _)) => format!("...{}", &text[at..]),
        None => text.to_string(),
    }
}
