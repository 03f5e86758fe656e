//! A plain postmaster on a restored data directory, not under an agent (which would rewrite
//! the recovery settings the restore wrote). Shared with benches/archive.rs.

use pgha::agent::{Settings, pgbin};

use crate::cluster::Workspace;

/// Starts a postmaster on a restored data directory, on the instance's own address.
pub fn start_postgres(ws: &Workspace, settings: &Settings) -> tokio::process::Child {
    std::fs::create_dir_all(&settings.run_dir).unwrap();
    if let Some(user) = &settings.run_as {
        std::os::unix::fs::chown(
            &settings.run_dir,
            Some(user.uid.as_raw()),
            Some(user.gid.as_raw()),
        )
        .unwrap();
    }
    let log =
        std::fs::File::create(ws.dir.path().join(&settings.name).join("postgres.log")).unwrap();
    let mut cmd = pgbin::command(settings, "postgres");
    cmd.arg("-D").arg(&settings.data_dir);
    for setting in [
        format!("listen_addresses={}", settings.listen_address),
        format!("unix_socket_directories={}", settings.run_dir.display()),
        format!("cluster_name={}", settings.name),
        // The copy must not archive into the source's archive.
        "archive_mode=off".into(),
        "primary_conninfo=".into(),
    ] {
        cmd.arg("-c").arg(setting);
    }
    cmd.stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}
