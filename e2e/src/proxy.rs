//! Service proxies, as kube-proxy's old userspace mode: every TCP port of every Service with a
//! cluster IP gets a listener on that (loopback) IP, which forwards each new connection to a
//! ready endpoint, taking turns. Endpoints are the ready pods that the Service selects (the
//! API refuses loopback addresses in EndpointSlices, so they are computed here); the
//! `kubernetes` Service forwards to the API server.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Endpoints = Arc<RwLock<Vec<SocketAddr>>>;

struct Listener {
    task: JoinHandle<()>,
    endpoints: Endpoints,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps one listener per Service port until dropped.
pub(crate) async fn run(client: Client, api_server: SocketAddr) {
    let (services, services_writer) = reflector::store::<Service>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let service_events = reflector::reflector(
        services_writer,
        watcher(Api::<Service>::all(client.clone()), Default::default()),
    )
    .applied_objects()
    .for_each(|_| async {});
    let pod_events = reflector::reflector(
        pods_writer,
        watcher(Api::<Pod>::all(client), Default::default()),
    )
    .applied_objects()
    .for_each(|_| async {});
    let _watches = (
        AbortOnDrop(tokio::spawn(service_events)),
        AbortOnDrop(tokio::spawn(pod_events)),
    );
    let mut listeners: HashMap<SocketAddr, Listener> = HashMap::new();
    loop {
        let desired = desired(&services, &pods, api_server);
        listeners.retain(|addr, _| desired.contains_key(addr));
        for (addr, endpoints) in desired {
            if let Some(listener) = listeners.get(&addr) {
                *listener
                    .endpoints
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = endpoints;
                continue;
            }
            // A port still held by a listener of a Service that was just deleted is retried.
            if let Ok(socket) = TcpListener::bind(addr).await {
                let endpoints = Arc::new(RwLock::new(endpoints));
                let task = tokio::spawn(serve(socket, endpoints.clone()));
                listeners.insert(addr, Listener { task, endpoints });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cluster IP and port → where connections go now.
fn desired(
    services: &Store<Service>,
    pods: &Store<Pod>,
    api_server: SocketAddr,
) -> BTreeMap<SocketAddr, Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    let pods = pods.state();
    for service in services.state() {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let is_api =
            namespace == "default" && service.metadata.name.as_deref() == Some("kubernetes");
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let endpoints = if is_api {
                vec![api_server]
            } else {
                let selector = spec.selector.clone().unwrap_or_default();
                if selector.is_empty() {
                    continue;
                }
                let target = port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port));
                let publish_unready = spec.publish_not_ready_addresses.unwrap_or(false);
                pods.iter()
                    .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
                    .filter(|pod| selects(&selector, pod.metadata.labels.as_ref()))
                    .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                    .filter(|pod| publish_unready || ready(pod))
                    .filter_map(|pod| endpoint(pod, &target))
                    .collect()
            };
            out.insert(SocketAddr::new(ip, number), endpoints);
        }
    }
    out
}

fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let labels = labels.cloned().unwrap_or_default();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether the API says the pod is Ready.
pub(crate) fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn endpoint(pod: &Pod, target: &IntOrString) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let port = match target {
        IntOrString::Int(n) => u16::try_from(*n).ok()?,
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())?,
    };
    Some(SocketAddr::new(ip, port))
}

async fn serve(socket: TcpListener, endpoints: Endpoints) {
    let turn = Arc::new(AtomicUsize::new(0));
    while let Ok((mut client, _)) = socket.accept().await {
        let candidates = endpoints.read().unwrap_or_else(|e| e.into_inner()).clone();
        let first = turn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Taking turns; an endpoint that refuses is skipped for the next one.
            for i in 0..candidates.len() {
                let target = candidates[(first + i) % candidates.len()];
                if let Ok(mut upstream) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
        });
    }
}
