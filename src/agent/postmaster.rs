//! The postmaster as a supervised child: started, stopped in escalating modes, and restarted
//! with back-off when it dies on its own. One task owns the child; everyone else sends it
//! commands and reads its state from a watch channel.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};

use super::error::{AgentError, Result};
use super::pgbin;
use super::settings::Settings;
use crate::plan::restart::{self, RestartPolicy};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RunState {
    Stopped,
    Running {
        pid: u32,
    },
    /// Died unexpectedly; started again after the back-off.
    Restarting {
        restart_in_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostmasterStatus {
    #[serde(flatten)]
    pub run: RunState,
    /// Unexpected exits since the agent started.
    pub crashes: u64,
    pub last_crash: Option<String>,
    /// Several crashes in a short time: the instance needs a person or the operator.
    pub crash_loop: bool,
    /// Fenced: stopped, and refuses to start until unfenced.
    pub fenced: bool,
}

/// How to stop.
#[derive(Clone, Copy, Debug)]
enum StopMode {
    /// Smart, then fast after `smart`, then kill after `fast`.
    Graceful { smart: Duration, fast: Duration },
    /// Fast, then kill after `fast`: bounded, for fencing.
    Bounded { fast: Duration },
}

enum Command {
    Start(oneshot::Sender<Result<u32>>),
    Stop(StopMode, oneshot::Sender<()>),
    Fence(Duration, oneshot::Sender<()>),
    Unfence(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Postmaster {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<PostmasterStatus>,
}

impl Postmaster {
    pub fn spawn(settings: Settings) -> Self {
        let (commands, rx) = mpsc::channel(8);
        let (tx, status) = watch::channel(PostmasterStatus {
            run: RunState::Stopped,
            crashes: 0,
            last_crash: None,
            crash_loop: false,
            fenced: false,
        });
        tokio::spawn(Supervisor::new(settings, tx).run(rx));
        Self { commands, status }
    }

    /// Starts the postmaster if it is not running; returns its PID.
    pub async fn start(&self) -> Result<u32> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Start(reply)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Stops the postmaster (smart, then fast, then kill, with the settings' timeouts) and
    /// returns once every process of the instance is gone.
    pub async fn stop(&self, smart: Duration, fast: Duration) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stop(StopMode::Graceful { smart, fast }, reply))
            .await?;
        rx.await.map_err(|_| gone())
    }

    /// Stops every process of the instance within `within` (plus the time the kernel takes to
    /// kill them) and refuses to start again until [`Postmaster::unfence`]. No commit can be
    /// acknowledged once this returns: no backend is left.
    pub async fn fence(&self, within: Duration) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Fence(within, reply)).await?;
        rx.await.map_err(|_| gone())
    }

    /// Allows starting again; does not start.
    pub async fn unfence(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Unfence(reply)).await?;
        rx.await.map_err(|_| gone())
    }

    pub fn status(&self) -> PostmasterStatus {
        self.status.borrow().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        match self.status.borrow().run {
            RunState::Running { pid } => Some(pid),
            _ => None,
        }
    }

    /// A receiver that sees every state change.
    pub fn watch(&self) -> watch::Receiver<PostmasterStatus> {
        self.status.clone()
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands.send(command).await.map_err(|_| gone())
    }
}

fn gone() -> AgentError {
    AgentError::Exited("supervisor task ended".into())
}

struct Supervisor {
    settings: Settings,
    status: watch::Sender<PostmasterStatus>,
    child: Option<Child>,
    restart_at: Option<tokio::time::Instant>,
    crashes: Vec<Instant>,
    /// When the crash loop reported now ends, if nothing crashes again.
    loop_ends: Option<tokio::time::Instant>,
    policy: RestartPolicy,
}

impl Supervisor {
    fn new(settings: Settings, status: watch::Sender<PostmasterStatus>) -> Self {
        Self {
            settings,
            status,
            child: None,
            restart_at: None,
            crashes: Vec::new(),
            loop_ends: None,
            policy: RestartPolicy::default(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start(reply)) => {
                        self.restart_at = None;
                        let _ = reply.send(self.ensure_started());
                    }
                    Some(Command::Stop(mode, reply)) => {
                        self.stop(mode).await;
                        let _ = reply.send(());
                    }
                    Some(Command::Fence(within, reply)) => {
                        self.status.send_modify(|s| s.fenced = true);
                        self.stop(StopMode::Bounded { fast: within }).await;
                        let _ = reply.send(());
                    }
                    Some(Command::Unfence(reply)) => {
                        self.status.send_modify(|s| s.fenced = false);
                        let _ = reply.send(());
                    }
                    None => {
                        self.stop(StopMode::Bounded { fast: self.settings.timeouts.fast_stop }).await;
                        return;
                    }
                },
                exit = wait(&mut self.child) => {
                    self.child = None;
                    self.crashed(exit);
                }
                () = sleep_until(self.loop_ends) => {
                    self.loop_ends = None;
                    tracing::info!("no crash for the crash-loop window: the crash loop is over");
                    self.status.send_modify(|s| s.crash_loop = false);
                }
                () = sleep_until(self.restart_at) => {
                    self.restart_at = None;
                    if self.status.borrow().fenced {
                        continue;
                    }
                    if let Err(e) = self.ensure_started() {
                        tracing::warn!(error = %e, "restarting the postmaster failed");
                        self.crashed(Err(e.to_string()));
                    }
                }
            }
        }
    }

    fn ensure_started(&mut self) -> Result<u32> {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            return Ok(pid);
        }
        if self.status.borrow().fenced {
            return Err(AgentError::Refused(
                "the instance is fenced; unfence it before starting Postgres".into(),
            ));
        }
        let mut cmd = pgbin::command(&self.settings, "postgres");
        cmd.arg("-D").arg(&self.settings.data_dir);
        if let Some(log) = &self.settings.log_file {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(AgentError::io("opening", log))
            };
            cmd.stdout(Stdio::from(open()?))
                .stderr(Stdio::from(open()?));
        }
        let child = cmd.spawn().map_err(AgentError::io(
            "starting",
            self.settings.bin_dir.join("postgres"),
        ))?;
        let pid = child
            .id()
            .ok_or_else(|| AgentError::Exited("at once".into()))?;
        tracing::info!(pid, "postmaster started");
        self.child = Some(child);
        self.status
            .send_modify(|s| s.run = RunState::Running { pid });
        Ok(pid)
    }

    fn crashed(&mut self, exit: std::result::Result<ExitStatus, String>) {
        let how = match exit {
            Ok(status) => status.to_string(),
            Err(e) => e,
        };
        let now = Instant::now();
        let decision = restart::after_crash(&self.policy, &self.crashes, now);
        self.crashes
            .retain(|t| now.duration_since(*t) < self.policy.window);
        self.crashes.push(now);
        self.restart_at = Some(tokio::time::Instant::now() + decision.delay);
        self.loop_ends = restart::crash_loop_ends(&self.policy, &self.crashes, now)
            .map(tokio::time::Instant::from_std);
        tracing::error!(exit = %how, restart_in = ?decision.delay, crash_loop = decision.crash_loop, "postmaster died unexpectedly");
        self.status.send_modify(|s| {
            s.run = RunState::Restarting {
                restart_in_ms: u64::try_from(decision.delay.as_millis()).unwrap_or(u64::MAX),
            };
            s.crashes += 1;
            s.last_crash = Some(how);
            s.crash_loop = decision.crash_loop;
        });
    }

    async fn stop(&mut self, mode: StopMode) {
        self.restart_at = None;
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, mode).await;
        }
        self.status.send_modify(|s| s.run = RunState::Stopped);
    }
}

async fn wait(child: &mut Option<Child>) -> std::result::Result<ExitStatus, String> {
    match child {
        Some(child) => child.wait().await.map_err(|e| e.to_string()),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Postgres's shutdown modes are signals: SIGTERM smart, SIGINT fast. When those do not
/// finish in time, every process of the instance is killed, the postmaster's children first:
/// they outlive a killed postmaster and could otherwise still acknowledge a commit.
async fn terminate(child: &mut Child, mode: StopMode) {
    let Some(raw) = child.id() else { return };
    let pid = Pid::from_raw(i32::try_from(raw).unwrap_or(i32::MAX));
    let steps: &[(Signal, Duration)] = &match mode {
        StopMode::Graceful { smart, fast } => {
            vec![(Signal::SIGTERM, smart), (Signal::SIGINT, fast)]
        }
        StopMode::Bounded { fast } => vec![(Signal::SIGINT, fast)],
    };
    for &(signal, patience) in steps {
        let _ = kill(pid, signal);
        if tokio::time::timeout(patience, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(?signal, ?patience, "postmaster did not stop in time");
    }
    let children = children_of(raw);
    for &c in &children {
        let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
    }
    let _ = child.kill().await;
    while children.iter().any(|&c| alive(c)) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// PIDs whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// A process that exists and is not a zombie.
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// State and parent PID from `/proc/<pid>/stat` (the name in parentheses may hold spaces).
fn proc_stat(pid: i32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}
