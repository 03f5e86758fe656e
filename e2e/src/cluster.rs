//! A whole cluster: the control plane, the node agents, the volume provisioner and the
//! Service proxies, with the fault injection the scenarios use. The CLI (`pgha-e2e`) works on
//! the same state directory, so its commands also reach a cluster started by `make cluster-up`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::DeleteParams;
use kube::{Api, Client, Config};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::control_plane::ControlPlane;
use crate::images::ImageTable;
use crate::node::{self, NodeCtx, node_dir, pod_dir};
use crate::process::{self, Registry};
use crate::{Error, fail, net, partition, provisioner, proxy};

/// How a cluster is laid out.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Node agents (1–15).
    pub nodes: u8,
    /// The loopback address block (0–13, see [`net`]); clusters that run at the same time
    /// need different ones.
    pub index: u8,
    /// Where logs, PID files and volumes go; a temporary directory when None.
    pub state_dir: Option<PathBuf>,
    pub images: ImageTable,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            index: 0,
            state_dir: None,
            images: ImageTable::default(),
        }
    }
}

/// `namespace/name` of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for PodRef {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(Self {
                namespace: namespace.into(),
                name: name.into(),
            }),
            _ => Err(fail(format!("{text:?}: expected NAMESPACE/POD"))),
        }
    }
}

/// What can be done to a pod's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: the container crashed.
    Kill,
    /// SIGSTOP: the container hangs (GC pause, stuck disk).
    Freeze,
    /// SIGCONT after a freeze.
    Thaw,
}

/// A running cluster; dropping it stops every process it started.
pub struct Cluster {
    // Declared first so that the node agents go before the control plane.
    tasks: Vec<JoinHandle<()>>,
    processes: Arc<Registry>,
    client: Client,
    nodes: Vec<String>,
    index: u8,
    state: PathBuf,
    _temp: Option<TempDir>,
    plane: ControlPlane,
}

impl Cluster {
    /// Starts everything and waits until every node is Ready.
    pub async fn start(options: ClusterOptions) -> Result<Self, Error> {
        if !(1..=net::MAX_NODES).contains(&options.nodes) || options.index > net::MAX_INDEX {
            return Err(fail(format!(
                "nodes must be 1–{} and index 0–{}",
                net::MAX_NODES,
                net::MAX_INDEX
            )));
        }
        let index = options.index;
        let plane = tokio::task::spawn_blocking(move || ControlPlane::start_at(index))
            .await
            .map_err(fail)??;
        let (temp, state) = match options.state_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().map_err(fail)?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        std::fs::create_dir_all(&state).map_err(fail)?;
        let client = client(&plane.kubeconfig()).await?;
        let api_service = kubernetes_service(&client).await?;
        let processes = Arc::new(Registry::default());
        let api_server = SocketAddr::from(([127, 0, 0, 1], plane.port()));
        let mut tasks = vec![
            tokio::spawn(provisioner::run(client.clone(), state.clone())),
            tokio::spawn(proxy::run(client.clone(), api_server)),
        ];
        // What a killed earlier run on this block left would cut off this run's pods.
        partition::clear(index);
        let mut nodes = Vec::new();
        for number in 1..=options.nodes {
            let ctx = NodeCtx::new(
                client.clone(),
                index,
                number,
                state.clone(),
                options.images.clone(),
                processes.clone(),
                api_service.clone(),
            );
            nodes.push(ctx.name.clone());
            // A state directory reused from an earlier run starts with every node running.
            let _ = std::fs::remove_file(node_dir(&state, &ctx.name).join("stopped"));
            tasks.push(tokio::spawn(node::run(Arc::new(ctx))));
        }
        if let Some(pid) = plane.apiserver_pid() {
            std::fs::write(state.join(APISERVER_PID), pid.to_string()).map_err(fail)?;
        }
        let cluster = Self {
            tasks,
            processes,
            client,
            nodes,
            index,
            state,
            _temp: temp,
            plane,
        };
        for node in &cluster.nodes {
            cluster
                .wait_node_ready(node, true, Duration::from_secs(60))
                .await?;
        }
        Ok(cluster)
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin kubeconfig (certificate embedded).
    pub fn kubeconfig(&self) -> PathBuf {
        self.plane.kubeconfig()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The node names, `node-1` upwards.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The address of a Service port (by name, or the only port when None): its cluster IP,
    /// where the proxy listens.
    pub async fn service_address(
        &self,
        namespace: &str,
        service: &str,
        port: Option<&str>,
    ) -> Result<SocketAddr, Error> {
        service_address(&self.client, namespace, service, port).await
    }

    /// A container's log so far (all its runs).
    pub fn logs(&self, pod: &PodRef, container: &str) -> String {
        logs(&self.state, pod, container)
    }

    /// Signals a pod's processes (one container, or all); returns how many were signalled.
    pub fn fault(
        &self,
        pod: &PodRef,
        container: Option<&str>,
        fault: Fault,
    ) -> Result<usize, Error> {
        inject(&self.state, pod, container, fault)
    }

    /// Stops or restarts a node agent (see [`crate::node`]).
    pub fn set_node_running(&self, node: &str, running: bool) -> Result<(), Error> {
        set_node_running(&self.state, node, running)
    }

    /// Deletes a pod with grace period 0: gone from the API at once, its processes killed.
    pub async fn delete_now(&self, pod: &PodRef) -> Result<(), Error> {
        delete_now(&self.client, pod).await
    }

    /// Cuts a pod off the network until [`Cluster::heal`] or the pod's end (see
    /// [`crate::partition()`]).
    pub fn partition(&self, pod: &PodRef) -> Result<(), Error> {
        partition::partition(&self.state, pod)
    }

    /// Cuts a pod off the API server only (see [`crate::partition_from_api`]); [`Cluster::heal`]
    /// ends it.
    pub fn partition_from_api(&self, pod: &PodRef) -> Result<(), Error> {
        partition::partition_from_api(&self.state, pod)
    }

    /// Ends a pod's partition.
    pub fn heal(&self, pod: &PodRef) -> Result<(), Error> {
        partition::heal(&self.state, pod)
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the kube-apiserver: every client's requests
    /// hang, as when a control plane stops answering, while pods, nodes and the pod network
    /// go on.
    pub fn pause_apiserver(&self, paused: bool) -> Result<(), Error> {
        pause_apiserver(&self.state, paused)
    }

    /// Waits until a node's Ready condition is True (or, with `ready` false, is not).
    pub async fn wait_node_ready(
        &self,
        node: &str,
        ready: bool,
        within: Duration,
    ) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + within;
        loop {
            let status = nodes
                .get_opt(node)
                .await
                .map_err(fail)?
                .and_then(|n| n.status?.conditions)
                .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status);
            if (status.as_deref() == Some("True")) == ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "node {node}: Ready is {status:?} after {within:?}, wanted {}",
                    if ready { "True" } else { "not True" }
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.processes.kill_all();
        partition::clear(self.index);
        let _ = std::fs::remove_file(self.state.join(APISERVER_PID));
    }
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).map_err(fail)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(fail)?;
    Client::try_from(config).map_err(fail)
}

/// The `kubernetes` Service's cluster IP and port, once the API server has made it.
async fn kubernetes_service(client: &Client) -> Result<(String, u16), Error> {
    let address = async {
        loop {
            if let Ok(address) = service_address(client, "default", "kubernetes", None).await {
                return address;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let address = tokio::time::timeout(Duration::from_secs(30), address)
        .await
        .map_err(|_| fail("the API server made no `kubernetes` Service within 30 s"))?;
    Ok((address.ip().to_string(), address.port()))
}

pub async fn service_address(
    client: &Client,
    namespace: &str,
    service: &str,
    port: Option<&str>,
) -> Result<SocketAddr, Error> {
    let what = format!("service {namespace}/{service}");
    let found = Api::<Service>::namespaced(client.clone(), namespace)
        .get(service)
        .await
        .map_err(|e| fail(format!("{what}: {e}")))?;
    let spec = found.spec.unwrap_or_default();
    let ip: IpAddr = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| fail(format!("{what} has no cluster IP")))?;
    let ports = spec.ports.unwrap_or_default();
    let chosen = match port {
        Some(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
        None if ports.len() == 1 => ports.first(),
        None => None,
    }
    .ok_or_else(|| fail(format!("{what}: name one of its {} ports", ports.len())))?;
    let number = u16::try_from(chosen.port).map_err(fail)?;
    Ok(SocketAddr::new(ip, number))
}

pub fn logs(state: &Path, pod: &PodRef, container: &str) -> String {
    let path = pod_dir(state, &pod.namespace, &pod.name).join(format!("{container}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Signals the process groups of a pod's containers, found through their PID files.
pub fn inject(
    state: &Path,
    pod: &PodRef,
    container: Option<&str>,
    fault: Fault,
) -> Result<usize, Error> {
    let dir = pod_dir(state, &pod.namespace, &pod.name);
    let mut signalled = 0;
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| fail(format!("pod {}/{}: {e}", pod.namespace, pod.name)))?
    {
        let path = entry.map_err(fail)?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
        else {
            continue;
        };
        if container.is_some_and(|c| c != name) {
            continue;
        }
        let pid: u32 = std::fs::read_to_string(&path)
            .map_err(fail)?
            .trim()
            .parse()
            .map_err(fail)?;
        let cgroup = std::fs::read_to_string(dir.join(format!("{name}.cgroup")))
            .ok()
            .map(PathBuf::from);
        let handle = process::Handle { pid, cgroup };
        match fault {
            Fault::Kill => handle.kill(),
            Fault::Freeze => handle.freeze(true),
            Fault::Thaw => handle.freeze(false),
        }
        signalled += 1;
    }
    if signalled == 0 {
        return Err(fail(format!(
            "pod {}/{} has no running container{} on this cluster",
            pod.namespace,
            pod.name,
            container.map(|c| format!(" named {c}")).unwrap_or_default()
        )));
    }
    Ok(signalled)
}

/// The kube-apiserver's PID, in the state directory while the cluster runs.
const APISERVER_PID: &str = "kube-apiserver.pid";

/// SIGSTOP (or SIGCONT) to the kube-apiserver of the cluster running from `state`.
pub fn pause_apiserver(state: &Path, paused: bool) -> Result<(), Error> {
    let path = state.join(APISERVER_PID);
    let pid: i32 = std::fs::read_to_string(&path)
        .map_err(|e| {
            fail(format!(
                "{}: {e} (is a cluster running there?)",
                path.display()
            ))
        })?
        .trim()
        .parse()
        .map_err(fail)?;
    let signal = if paused {
        nix::sys::signal::Signal::SIGSTOP
    } else {
        nix::sys::signal::Signal::SIGCONT
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|e| fail(format!("signalling the kube-apiserver (PID {pid}): {e}")))
}

pub fn set_node_running(state: &Path, node: &str, running: bool) -> Result<(), Error> {
    let dir = node_dir(state, node);
    if !dir.is_dir() {
        return Err(fail(format!("no node {node} in {}", state.display())));
    }
    let flag = dir.join("stopped");
    if running {
        match std::fs::remove_file(flag) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
            _ => Ok(()),
        }
    } else {
        std::fs::write(flag, b"").map_err(fail)
    }
}

pub async fn delete_now(client: &Client, pod: &PodRef) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    pods.delete(&pod.name, &DeleteParams::default().grace_period(0))
        .await
        .map(drop)
        .map_err(|e| fail(format!("pod {}/{}: {e}", pod.namespace, pod.name)))
}
