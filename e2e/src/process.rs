//! Container processes: each runs in a mount namespace of its own, where the pod's volumes are
//! bind-mounted at their `mountPath`s, as the leader of its own process group so that a signal
//! reaches everything it started.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, chdir, write};
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

const FREEZER: &str = "/sys/fs/cgroup/freezer";

/// A new freezer cgroup for a container, when the machine has the v1 hierarchy.
fn new_cgroup() -> Option<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = Path::new(FREEZER);
    if !root.join("cgroup.procs").is_file() {
        return None;
    }
    let name = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = root.join("proclet").join(name);
    std::fs::create_dir_all(&dir).ok().map(|()| dir)
}

/// A running container: its first process and, when there is one, its cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    pub pid: u32,
    pub cgroup: Option<PathBuf>,
}

impl Handle {
    /// The processes in the container's cgroup (or just the first one).
    fn members(&self) -> Vec<u32> {
        match &self.cgroup {
            Some(dir) => std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            None => vec![self.pid],
        }
    }

    fn set_frozen(&self, frozen: bool) -> bool {
        let Some(dir) = &self.cgroup else {
            return false;
        };
        let state = if frozen { "FROZEN" } else { "THAWED" };
        std::fs::write(dir.join("freezer.state"), state).is_ok()
    }

    /// SIGTERM to the first process only, as a runtime stops a container.
    pub(crate) fn terminate(&self) {
        signal_pid(self.pid, Signal::SIGTERM);
    }

    /// SIGKILL to everything in the container.
    pub(crate) fn kill(&self) {
        if self.cgroup.is_none() {
            signal_group(self.pid, Signal::SIGKILL);
            return;
        }
        // Frozen, nothing can fork away; the kills land when it thaws.
        self.set_frozen(true);
        for pid in self.members() {
            signal_pid(pid, Signal::SIGKILL);
        }
        self.set_frozen(false);
    }

    /// Stops (or resumes) everything in the container.
    pub(crate) fn freeze(&self, frozen: bool) {
        if !self.set_frozen(frozen) {
            let signal = if frozen {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            signal_group(self.pid, signal);
        }
    }

    /// After the first process has exited: kills what it left behind and removes the cgroup.
    pub(crate) fn release(&self) {
        self.kill();
        if let Some(dir) = &self.cgroup {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Starts a container's first process, in a freezer cgroup of its own and in its pod's
/// cgroup v2 cgroup (`pod_cgroup`, see [`crate::partition`]) when there is one.
pub(crate) fn spawn(spec: &Spec<'_>, pod_cgroup: Option<&Path>) -> io::Result<(Child, Handle)> {
    // Mount points are created on the host, as a runtime creates them in the image.
    let mut mounts = Vec::new();
    for m in spec.mounts {
        std::fs::create_dir_all(&m.target)?;
        mounts.push((c_path(&m.source)?, c_path(&m.target)?, m.read_only));
    }
    std::fs::create_dir_all(spec.working_dir)?;
    let cwd = c_path(spec.working_dir)?;
    let cgroup = new_cgroup();
    let procs = cgroup
        .as_deref()
        .into_iter()
        .chain(pod_cgroup)
        .map(|dir| c_path(&dir.join("cgroup.procs")))
        .collect::<io::Result<Vec<_>>>()?;
    let mut cmd = command(spec)?;
    // SAFETY: between fork and exec only system calls on memory prepared above.
    unsafe {
        cmd.pre_exec(move || {
            for procs in &procs {
                // "0" moves the writing process.
                let fd = open(procs.as_c_str(), OFlag::O_WRONLY, Mode::empty())?;
                write(&fd, b"0")?;
            }
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
    let child = cmd.spawn()?;
    let handle = Handle {
        pid: child.id().unwrap_or_default(),
        cgroup,
    };
    Ok((child, handle))
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

/// Sends `signal` to one process; one that is gone is not an error.
fn signal_pid(pid: u32, signal: Signal) {
    // 0 would be our own group, 1 init.
    if pid > 1 {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

/// Sends `signal` to a container's process group.
fn signal_group(pid: u32, signal: Signal) {
    if pid > 1 {
        let _ = killpg(Pid::from_raw(pid as i32), signal);
    }
}

/// Every container a cluster started, so that dropping the cluster leaves nothing running.
#[derive(Default)]
pub(crate) struct Registry(Mutex<HashMap<u32, Handle>>);

impl Registry {
    pub(crate) fn add(&self, handle: &Handle) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(handle.pid, handle.clone());
    }

    pub(crate) fn remove(&self, pid: u32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
    }

    pub(crate) fn kill_all(&self) {
        for (_, handle) in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            handle.release();
        }
    }
}
