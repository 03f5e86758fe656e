//! One pod on one node: its volumes, its init containers in order, its containers with
//! probes and restarts, its status, and its graceful end — what the kubelet does, with local
//! processes in place of containers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::process::Child;
use tokio::sync::watch;

use crate::cluster::PodRef;
use crate::env::{self, Env};
use crate::images::Image;
use crate::node::NodeCtx;
use crate::partition::PodNet;
use crate::probe;
use crate::process::{self, Handle};
use crate::proxy;
use crate::volumes::Volumes;

/// How often a pod is looked at: process exits, probes due, status to publish.
const TICK: Duration = Duration::from_millis(100);
/// Restart back-off: doubles from the first to the last, and starts over after a container
/// ran for `BACKOFF_RESET` (the kubelet's are 10 s, 5 min and 10 min; tests need seconds).
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(20);
const BACKOFF_RESET: Duration = Duration::from_secs(30);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[derive(Default)]
struct ProbeTrack {
    next_at: Option<Instant>,
    successes: i32,
    failures: i32,
}

/// One container (or init container) and its process.
struct Run {
    spec: Container,
    init: bool,
    child: Option<Child>,
    handle: Option<Handle>,
    image: Option<Image>,
    env: Vec<(String, String)>,
    state: ContainerState,
    last: Option<ContainerStateTerminated>,
    restarts: i32,
    not_before: Instant,
    backoff: Duration,
    /// When the latest run started; None until the first.
    started_at: Option<Instant>,
    ready: bool,
    started: bool,
    /// SIGTERM was sent; SIGKILL follows at this time.
    kill_at: Option<Instant>,
    /// Exited for good (completed, or its restart policy says no).
    done: bool,
    /// Exited with a non-zero code and will not run again.
    failed: bool,
    probes: [ProbeTrack; 3],
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

impl Run {
    fn new(spec: Container, init: bool) -> Self {
        Self {
            spec,
            init,
            child: None,
            handle: None,
            image: None,
            env: Vec::new(),
            state: waiting(
                if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
                None,
            ),
            last: None,
            restarts: 0,
            not_before: Instant::now(),
            backoff: BACKOFF_FIRST,
            started_at: None,
            ready: false,
            started: false,
            kill_at: None,
            done: false,
            failed: false,
            probes: Default::default(),
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM now, SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
        if let (Some(handle), None) = (&self.handle, self.kill_at) {
            handle.terminate();
            self.kill_at = Some(Instant::now() + grace);
        }
    }

    fn status(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self
                .image
                .as_ref()
                .map(|i| format!("proclet://{}", i.entrypoint.join(" ")))
                .unwrap_or_default(),
            container_id: self.handle.as_ref().map(|h| format!("proclet://{}", h.pid)),
            ready: self.ready,
            started: Some(self.running() && self.started),
            restart_count: self.restarts,
            state: Some(self.state.clone()),
            last_state: self.last.clone().map(|t| ContainerState {
                terminated: Some(t),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

pub(crate) struct Worker {
    ctx: Arc<NodeCtx>,
    namespace: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    ip_slot: u16,
    /// The pod's cgroup v2 cgroup and address, for partitions; None without cgroup v2.
    net: Option<PodNet>,
    dir: PathBuf,
    volumes: Option<Volumes>,
    volume_error: Option<String>,
    inits: Vec<Run>,
    mains: Vec<Run>,
    init_failed: bool,
    started: Time,
    transitions: HashMap<&'static str, (bool, Time)>,
    published: Option<serde_json::Value>,
}

/// Runs `pod` until it is deleted (gracefully, or from the API) or its node agent goes away.
pub(crate) async fn run(ctx: Arc<NodeCtx>, mut pods: watch::Receiver<Option<Pod>>) {
    let Some(pod) = pods.borrow().clone() else {
        return;
    };
    let Some(mut worker) = Worker::new(ctx.clone(), &pod) else {
        return;
    };
    loop {
        tokio::select! {
            changed = pods.changed() => if changed.is_err() {
                worker.kill_all();
                return;
            },
            _ = tokio::time::sleep(TICK) => {}
        }
        // A stopped node agent does nothing at all; its processes run on.
        if ctx.stopped() {
            continue;
        }
        let Some(pod) = pods.borrow().clone() else {
            worker.kill_all();
            worker.cleanup();
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            if worker.terminate(&pod).await {
                worker.cleanup();
                return;
            }
        } else {
            worker.step(&pod).await;
        }
        worker.publish(&pod).await;
    }
}

impl Worker {
    fn new(ctx: Arc<NodeCtx>, pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let uid = pod.metadata.uid.clone()?;
        let (ip_slot, ip) = ctx.allocate_ip()?;
        let dir = ctx.pod_dir(&namespace, &name);
        let net = PodNet::create(ctx.index, ip, &uid);
        if let Some(net) = &net
            && let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| net.write(&dir))
        {
            note(&dir, &format!("writing the network file: {e}"));
        }
        let inits = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| Run::new(c.clone(), true))
            .collect();
        let mains = spec
            .containers
            .iter()
            .map(|c| Run::new(c.clone(), false))
            .collect();
        Some(Self {
            ctx,
            namespace,
            name,
            uid,
            ip,
            ip_slot,
            net,
            dir,
            volumes: None,
            volume_error: None,
            inits,
            mains,
            init_failed: false,
            started: now(),
            transitions: HashMap::new(),
            published: None,
        })
    }

    fn restart_policy<'a>(&self, pod: &'a Pod) -> &'a str {
        pod.spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    fn grace(&self, pod: &Pod) -> Duration {
        let seconds = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    /// The pod as its containers' environment sees it: with the address it has here.
    fn with_addresses(&self, pod: &Pod) -> Pod {
        let mut pod = pod.clone();
        let status = pod.status.get_or_insert_with(Default::default);
        status.pod_ip = Some(self.ip.to_string());
        status.host_ip = Some(self.ctx.ip.to_string());
        pod
    }

    async fn step(&mut self, pod: &Pod) {
        if self.volumes.is_none() {
            let root = self.dir.join(&self.uid).join("volumes");
            match Volumes::prepare(&self.ctx.client, pod, &root).await {
                Ok(volumes) => {
                    self.volumes = Some(volumes);
                    self.volume_error = None;
                }
                Err(message) => {
                    self.volume_error = Some(message);
                    return;
                }
            }
        }
        if let Some(volumes) = &mut self.volumes
            && let Err(e) = volumes.renew_tokens(&self.ctx.client, pod, false).await
        {
            note(&self.dir, &format!("renewing tokens: {e}"));
        }
        let policy = self.restart_policy(pod).to_string();
        for run in self.inits.iter_mut().chain(self.mains.iter_mut()) {
            reap(run, &policy, &self.ctx, &self.dir);
        }
        if self.inits.iter().any(|r| r.failed) {
            self.init_failed = true;
        }
        if self.init_failed {
            return;
        }
        let pod = self.with_addresses(pod);
        if let Some(index) = self.inits.iter().position(|r| !r.done) {
            let run = &mut self.inits[index];
            if !run.running() && Instant::now() >= run.not_before {
                self.start(&pod, false, index).await;
            }
            return;
        }
        for index in 0..self.mains.len() {
            let run = &self.mains[index];
            if !run.running() && !run.done && Instant::now() >= run.not_before {
                self.start(&pod, true, index).await;
            }
            self.probe(&pod, index).await;
        }
    }

    /// Starts an init container (`main == false`) or a container.
    async fn start(&mut self, pod: &Pod, main: bool, index: usize) {
        let ctx = self.ctx.clone();
        let pod_cgroup = self.net.as_ref().and_then(PodNet::cgroup_dir);
        let Some(volumes) = &self.volumes else { return };
        let run = if main {
            &mut self.mains[index]
        } else {
            &mut self.inits[index]
        };
        let image_name = run.spec.image.clone().unwrap_or_default();
        let Some(image) = ctx.images.resolve(&image_name).cloned() else {
            let known: Vec<&str> = ctx.images.repositories().collect();
            run.state = waiting(
                "ErrImagePull",
                Some(format!(
                    "image {image_name:?} is not in proclet's image table (it has {})",
                    known.join(", ")
                )),
            );
            return;
        };
        let mut base = Env::default();
        base.set("PATH", image.path_env());
        base.set("HOSTNAME", self.name.clone());
        base.set("HOME", "/root".into());
        for (k, v) in ctx.kubernetes_env() {
            base.set(&k, v);
        }
        let prepared = async {
            let env = env::resolve(&ctx.client, pod, &run.spec, base)
                .await
                .map_err(|e| ("CreateContainerConfigError", e))?;
            let mounts = volumes
                .mounts(&run.spec)
                .map_err(|e| ("CreateContainerConfigError", e))?;
            let expand = |list: &Option<Vec<String>>| -> Vec<String> {
                list.iter().flatten().map(|s| env.expand(s)).collect()
            };
            let argv = image
                .argv(&expand(&run.spec.command), &expand(&run.spec.args))
                .map_err(|e| ("RunContainerError", e))?;
            Ok::<_, (&str, String)>((env, mounts, argv))
        };
        let (env, mounts, argv) = match prepared.await {
            Ok(ready) => ready,
            Err((reason, message)) => {
                run.state = waiting(reason, Some(message));
                run.not_before = Instant::now() + BACKOFF_FIRST;
                return;
            }
        };
        let working_dir = match &run.spec.working_dir {
            Some(dir) => PathBuf::from(dir),
            None => self.dir.join(&self.uid).join("rootfs").join(&run.spec.name),
        };
        let log = self.dir.join(format!("{}.log", run.spec.name));
        let spec = process::Spec {
            argv: &argv,
            env: env.vars(),
            working_dir: &working_dir,
            mounts: &mounts,
            log: &log,
        };
        match process::spawn(&spec, pod_cgroup.as_deref()) {
            Ok((child, handle)) => {
                ctx.processes.add(&handle);
                write_handle(&self.dir, &run.spec.name, &handle);
                // Every start after the first is a restart.
                if run.started_at.is_some() {
                    run.restarts += 1;
                }
                run.child = Some(child);
                run.handle = Some(handle);
                run.image = Some(image);
                run.env = env.vars().to_vec();
                run.started_at = Some(Instant::now());
                run.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now()),
                    }),
                    ..Default::default()
                };
                run.started = run.spec.startup_probe.is_none();
                run.ready = false;
                run.kill_at = None;
                let delays = [
                    &run.spec.startup_probe,
                    &run.spec.liveness_probe,
                    &run.spec.readiness_probe,
                ];
                for (track, probe) in run.probes.iter_mut().zip(delays) {
                    let delay = probe.as_ref().and_then(|p| p.initial_delay_seconds);
                    *track = ProbeTrack {
                        next_at: Some(
                            Instant::now() + Duration::from_secs(delay.unwrap_or(0) as u64),
                        ),
                        ..Default::default()
                    };
                }
            }
            Err(e) => {
                run.state = waiting("RunContainerError", Some(format!("{argv:?}: {e}")));
                run.not_before = Instant::now() + BACKOFF_FIRST;
            }
        }
    }

    /// Runs the probes of a running container that are due.
    async fn probe(&mut self, pod: &Pod, index: usize) {
        let grace = self.grace(pod);
        let run = &mut self.mains[index];
        let (Some(pid), Some(image)) = (run.handle.as_ref().map(|h| h.pid), run.image.clone())
        else {
            return;
        };
        if run.kill_at.is_some() {
            return;
        }
        let kinds: [(usize, Option<Probe>); 3] = [
            (0, run.spec.startup_probe.clone()),
            (1, run.spec.liveness_probe.clone()),
            (2, run.spec.readiness_probe.clone()),
        ];
        if run.spec.readiness_probe.is_none() {
            run.ready = run.started;
        }
        for (kind, probe) in kinds {
            let Some(probe) = probe else { continue };
            // The startup probe runs until it succeeds, the others only after.
            if (kind == 0) == run.started {
                continue;
            }
            let track = &mut run.probes[kind];
            if track.next_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            let target = probe::Target {
                pod_ip: IpAddr::V4(self.ip),
                container: &run.spec,
                image: &image,
                pid,
                env: &run.env,
            };
            let result = probe::run(&probe, &target).await;
            let track = &mut run.probes[kind];
            track.next_at = Some(
                Instant::now() + Duration::from_secs(probe.period_seconds.unwrap_or(10) as u64),
            );
            match &result {
                Ok(()) => {
                    track.successes += 1;
                    track.failures = 0;
                }
                Err(_) => {
                    track.failures += 1;
                    track.successes = 0;
                }
            }
            let (successes, failures) = (track.successes, track.failures);
            let failed = failures >= probe.failure_threshold.unwrap_or(3);
            match kind {
                0 if successes >= 1 => run.started = true,
                2 if successes >= probe.success_threshold.unwrap_or(1) => run.ready = true,
                2 if failed => run.ready = false,
                0 | 1 if failed => {
                    let what = if kind == 0 { "startup" } else { "liveness" };
                    let message = format!(
                        "Container {} failed {what} probe, will be restarted: {}",
                        run.spec.name,
                        result.err().unwrap_or_default()
                    );
                    note(&self.dir, &message);
                    run.ready = false;
                    let grace = probe
                        .termination_grace_period_seconds
                        .map_or(grace, |s| Duration::from_secs(s.max(0) as u64));
                    run.stop(grace);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Stops every container for a graceful deletion; true once all have exited and the pod
    /// is gone from the API.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        let grace = self.grace(pod);
        let policy = "Never";
        for run in self.inits.iter_mut().chain(self.mains.iter_mut()) {
            run.stop(grace);
            reap(run, policy, &self.ctx, &self.dir);
            run.ready = false;
        }
        if self.inits.iter().chain(&self.mains).any(Run::running) {
            return false;
        }
        self.publish(pod).await;
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&self.name, &params).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(_) => false,
        }
    }

    fn kill_all(&mut self) {
        for run in self.inits.iter_mut().chain(self.mains.iter_mut()) {
            if let Some(handle) = run.handle.take() {
                handle.release();
                self.ctx.processes.remove(handle.pid);
            }
            run.child = None;
        }
    }

    /// Frees what the pod held on this node; its logs stay for the CLI.
    fn cleanup(&mut self) {
        self.kill_all();
        if let Some(net) = &self.net {
            let pod = PodRef {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            };
            net.remove(&self.dir, &pod);
        }
        self.ctx.release_ip(self.ip_slot);
        let _ = std::fs::remove_dir_all(self.dir.join(&self.uid));
        for run in self.inits.iter().chain(&self.mains) {
            remove_handle(&self.dir, &run.spec.name);
        }
    }

    fn condition(
        &mut self,
        kind: &'static str,
        ok: bool,
        why: Option<(&str, String)>,
    ) -> PodCondition {
        let at = match self.transitions.get(kind) {
            Some((was, at)) if *was == ok => at.clone(),
            _ => {
                let at = now();
                self.transitions.insert(kind, (ok, at.clone()));
                at
            }
        };
        let (reason, message) = match why.filter(|_| !ok) {
            Some((reason, message)) => (Some(reason.to_string()), Some(message)),
            None => (None, None),
        };
        PodCondition {
            type_: kind.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(at),
            reason,
            message,
            ..Default::default()
        }
    }

    fn phase(&self) -> &'static str {
        if self.init_failed
            || self.mains.iter().any(|r| r.failed) && self.mains.iter().all(|r| r.done)
        {
            "Failed"
        } else if !self.mains.is_empty() && self.mains.iter().all(|r| r.done) {
            "Succeeded"
        } else if self.inits.iter().all(|r| r.done)
            && self.mains.iter().any(|r| r.started_at.is_some())
        {
            "Running"
        } else {
            "Pending"
        }
    }

    async fn publish(&mut self, pod: &Pod) {
        let initialized = self.inits.iter().all(|r| r.done);
        let unready: Vec<String> = self
            .mains
            .iter()
            .filter(|r| !r.ready)
            .map(|r| r.spec.name.clone())
            .collect();
        let ready = initialized && unready.is_empty() && pod.metadata.deletion_timestamp.is_none();
        let unready_message = format!("containers with unready status: [{}]", unready.join(" "));
        let mut inits: Vec<ContainerStatus> = self.inits.iter().map(Run::status).collect();
        let mut mains: Vec<ContainerStatus> = self.mains.iter().map(Run::status).collect();
        if let Some(message) = &self.volume_error {
            for status in inits.iter_mut().chain(mains.iter_mut()) {
                status.state = Some(waiting("ContainerCreating", Some(message.clone())));
            }
        }
        let conditions = vec![
            self.condition("PodReadyToStartContainers", self.volumes.is_some(), None),
            self.condition(
                "Initialized",
                initialized,
                Some((
                    "ContainersNotInitialized",
                    "containers with incomplete status".into(),
                )),
            ),
            self.condition(
                "ContainersReady",
                initialized && unready.is_empty(),
                Some(("ContainersNotReady", unready_message.clone())),
            ),
            self.condition(
                "Ready",
                ready,
                Some(("ContainersNotReady", unready_message)),
            ),
        ];
        let status = PodStatus {
            phase: Some(self.phase().into()),
            conditions: Some(conditions),
            host_ip: Some(self.ctx.ip.to_string()),
            host_ips: Some(vec![HostIP {
                ip: self.ctx.ip.to_string(),
            }]),
            pod_ip: Some(self.ip.to_string()),
            pod_ips: Some(vec![PodIP {
                ip: self.ip.to_string(),
            }]),
            start_time: Some(self.started.clone()),
            init_container_statuses: (!inits.is_empty()).then_some(inits),
            container_statuses: Some(mains),
            ..Default::default()
        };
        let patch = serde_json::json!({ "status": status });
        // Others write pod status too (the node lifecycle controller marks the pods of a lost
        // node unready): publish again when the API's Ready differs from ours.
        if self.published.as_ref() == Some(&patch) && proxy::ready(pod) == ready {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = PatchParams::default();
        if pods
            .patch_status(&self.name, &params, &Patch::Strategic(&patch))
            .await
            .is_ok()
        {
            self.published = Some(patch);
        }
    }
}

/// The last 2 KiB of a log, from a line start, as the kubelet's FallbackToLogsOnError gives.
fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let tail = &text[text.len().saturating_sub(2048)..];
    let text = String::from_utf8_lossy(tail);
    match text.find('\n') {
        Some(start) if tail.len() == 2048 => text[start + 1..].to_string(),
        _ => text.into_owned(),
    }
}

/// `<container>.pid` (and `<container>.cgroup`) for the CLI's fault injection.
fn write_handle(dir: &std::path::Path, container: &str, handle: &Handle) {
    let _ = std::fs::write(dir.join(format!("{container}.pid")), handle.pid.to_string());
    if let Some(cgroup) = &handle.cgroup {
        let _ = std::fs::write(
            dir.join(format!("{container}.cgroup")),
            cgroup.display().to_string(),
        );
    }
}

fn remove_handle(dir: &std::path::Path, container: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{container}.pid")));
    let _ = std::fs::remove_file(dir.join(format!("{container}.cgroup")));
}

/// Appends a line to the pod's event log (`proclet.log` beside the container logs).
fn note(dir: &std::path::Path, message: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("proclet.log"))
    {
        let _ = writeln!(file, "{} {message}", k8s_openapi::jiff::Timestamp::now());
    }
}

/// Notes what happened to an exited container and whether it runs again.
fn reap(run: &mut Run, policy: &str, ctx: &NodeCtx, dir: &std::path::Path) {
    if let (Some(at), Some(handle)) = (run.kill_at, &run.handle)
        && Instant::now() >= at
    {
        handle.kill();
    }
    let Some(child) = &mut run.child else { return };
    let Ok(Some(status)) = child.try_wait() else {
        return;
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let pid = run.handle.as_ref().map(|h| h.pid);
    if let Some(handle) = run.handle.take() {
        // Whatever the first process left behind goes with it.
        handle.release();
        ctx.processes.remove(handle.pid);
    }
    // The CLI signals what the PID files name: never a PID that may be reused.
    remove_handle(dir, &run.spec.name);
    run.child = None;
    run.kill_at = None;
    run.ready = false;
    let started_at = run
        .state
        .running
        .as_ref()
        .and_then(|r| r.started_at.clone());
    // A failed container with this policy says why through the end of its log.
    let fallback = run.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    let message =
        (code != 0 && fallback).then(|| log_tail(&dir.join(format!("{}.log", run.spec.name))));
    let terminated = ContainerStateTerminated {
        exit_code: code,
        message,
        signal: status.signal(),
        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
        started_at,
        finished_at: Some(now()),
        container_id: pid.map(|pid| format!("proclet://{pid}")),
    };
    // Init containers always run again until they succeed, unless the policy is Never.
    let again = match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ if run.init => code != 0,
        _ => true,
    };
    if run
        .started_at
        .is_some_and(|at| at.elapsed() >= BACKOFF_RESET)
    {
        run.backoff = BACKOFF_FIRST;
    }
    if again {
        run.not_before = Instant::now() + run.backoff;
        run.state = waiting(
            "CrashLoopBackOff",
            Some(format!(
                "back-off {:?} restarting failed container={}",
                run.backoff, run.spec.name
            )),
        );
        run.backoff = (run.backoff * 2).min(BACKOFF_MAX);
        run.last = Some(terminated);
    } else {
        run.done = true;
        run.failed = code != 0;
        run.state = ContainerState {
            terminated: Some(terminated),
            ..Default::default()
        };
    }
}
