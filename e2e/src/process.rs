//! Container processes: each runs in a mount namespace of its own, where the pod's volumes are
//! bind-mounted at their `mountPath`s, as the leader of its own process group so that a signal
//! reaches everything it started.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, chdir};
use tokio::process::{Child, Command};

/// A volume as one container sees it.
#[derive(Clone, Debug)]
pub(crate) struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What to run and how.
pub(crate) struct Spec<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub working_dir: &'a Path,
    pub mounts: &'a [Mount],
    pub log: &'a Path,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn command(spec: &Spec<'_>) -> io::Result<Command> {
    let log = File::options().create(true).append(true).open(spec.log)?;
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Starts a container's first process.
pub(crate) fn spawn(spec: &Spec<'_>) -> io::Result<Child> {
    // Mount points are created on the host, as a runtime creates them in the image.
    let mut mounts = Vec::new();
    for m in spec.mounts {
        std::fs::create_dir_all(&m.target)?;
        mounts.push((c_path(&m.source)?, c_path(&m.target)?, m.read_only));
    }
    std::fs::create_dir_all(spec.working_dir)?;
    let cwd = c_path(spec.working_dir)?;
    let mut cmd = command(spec)?;
    // SAFETY: between fork and exec only system calls on memory prepared above.
    unsafe {
        cmd.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            // Nothing mounted here may leak back to the host.
            mount(
                None::<&std::ffi::CStr>,
                c"/",
                None::<&std::ffi::CStr>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&std::ffi::CStr>,
            )?;
            for (source, target, read_only) in &mounts {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(
                    Some(source.as_c_str()),
                    target.as_c_str(),
                    None::<&std::ffi::CStr>,
                    flags,
                    None::<&std::ffi::CStr>,
                )?;
                if *read_only {
                    mount(
                        None::<&std::ffi::CStr>,
                        target.as_c_str(),
                        None::<&std::ffi::CStr>,
                        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&std::ffi::CStr>,
                    )?;
                }
            }
            chdir(cwd.as_c_str())?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// Starts a command inside the mount namespace of a running container (exec probes).
pub(crate) fn spawn_in(container_pid: u32, spec: &Spec<'_>) -> io::Result<Child> {
    let namespace = File::open(format!("/proc/{container_pid}/ns/mnt"))?;
    let cwd = c_path(spec.working_dir)?;
    let mut cmd = command(spec)?;
    // SAFETY: between fork and exec only system calls on memory prepared above.
    unsafe {
        cmd.pre_exec(move || {
            setns(&namespace, CloneFlags::CLONE_NEWNS)?;
            chdir(cwd.as_c_str())?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to a container's process group; a group that is gone is not an error.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    // 0 would be our own group, 1 init's.
    if pid <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

/// Every container process group a cluster started, so that dropping the cluster leaves
/// nothing running.
#[derive(Default)]
pub(crate) struct Registry(Mutex<HashSet<u32>>);

impl Registry {
    pub(crate) fn add(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
    }

    pub(crate) fn remove(&self, pid: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    pub(crate) fn kill_all(&self) {
        for pid in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            signal_group(pid, Signal::SIGKILL);
        }
    }
}
