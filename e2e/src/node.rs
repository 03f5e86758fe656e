//! A node agent ("proclet"): registers its Node, renews its Lease so that the node lifecycle
//! controller sees it alive, and runs every pod the scheduler binds to it (see [`crate::pod`]).
//! A file `stopped` in the node's state directory stops it — no heartbeats, no pod handling,
//! while the processes it started run on — exactly as a dead kubelet looks to the cluster.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::images::ImageTable;
use crate::net;
use crate::pod;
use crate::process::Registry;

/// How long a node's Lease is valid, and how often it is renewed.
const LEASE_SECONDS: i32 = 10;
const RENEW: Duration = Duration::from_secs(1);

/// What the pods of one node share.
pub(crate) struct NodeCtx {
    pub client: Client,
    pub name: String,
    pub index: u8,
    pub number: u8,
    pub ip: Ipv4Addr,
    pub state: PathBuf,
    pub images: ImageTable,
    pub processes: Arc<Registry>,
    /// The `kubernetes` Service's address, for in-cluster clients.
    pub api_service: (String, u16),
    ips: Mutex<BTreeSet<u16>>,
}

impl NodeCtx {
    pub(crate) fn new(
        client: Client,
        index: u8,
        number: u8,
        state: PathBuf,
        images: ImageTable,
        processes: Arc<Registry>,
        api_service: (String, u16),
    ) -> Self {
        Self {
            client,
            name: node_name(number),
            index,
            number,
            ip: net::node_ip(index, number),
            state,
            images,
            processes,
            api_service,
            ips: Mutex::new(BTreeSet::new()),
        }
    }

    fn node_dir(&self) -> PathBuf {
        node_dir(&self.state, &self.name)
    }

    pub(crate) fn stopped(&self) -> bool {
        self.node_dir().join("stopped").exists()
    }

    /// Where a pod's logs, PID files and volumes live.
    pub(crate) fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        pod_dir(&self.state, namespace, name)
    }

    /// The lowest free pod address of this node.
    pub(crate) fn allocate_ip(&self) -> Option<(u16, Ipv4Addr)> {
        let mut used = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (0..net::PODS_PER_NODE).find(|n| !used.contains(n))?;
        used.insert(slot);
        Some((slot, net::pod_ip(self.index, self.number, slot)))
    }

    pub(crate) fn release_ip(&self, slot: u16) {
        self.ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
    }

    /// `KUBERNETES_SERVICE_HOST` and friends, as the kubelet sets them.
    pub(crate) fn kubernetes_env(&self) -> Vec<(String, String)> {
        let (host, port) = &self.api_service;
        vec![
            ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
            ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
        ]
    }
}

pub(crate) fn node_name(number: u8) -> String {
    format!("node-{number}")
}

pub(crate) fn node_dir(state: &std::path::Path, node: &str) -> PathBuf {
    state.join("nodes").join(node)
}

pub(crate) fn pod_dir(state: &std::path::Path, namespace: &str, name: &str) -> PathBuf {
    state.join("pods").join(namespace).join(name)
}

/// Runs one node until the task is dropped; dropping it ends every pod worker, which kill
/// their processes.
pub(crate) async fn run(ctx: Arc<NodeCtx>) {
    let _ = std::fs::create_dir_all(ctx.node_dir());
    tokio::join!(heartbeat(ctx.clone()), run_pods(ctx));
}

async fn run_pods(ctx: Arc<NodeCtx>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.name));
    let mut events = watcher::watcher(pods, config).boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listed: Option<BTreeSet<String>> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            // The watcher retries by itself; a failed call only delays it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        match event {
            Event::Apply(pod) | Event::InitApply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                if let Some(seen) = &mut listed {
                    seen.insert(uid.clone());
                }
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.send(Some(pod));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(Some(pod));
                        tokio::spawn(pod::run(ctx.clone(), rx));
                        workers.insert(uid, tx);
                    }
                }
            }
            Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.and_then(|uid| workers.remove(&uid)) {
                    let _ = tx.send(None);
                }
            }
            Event::Init => listed = Some(BTreeSet::new()),
            Event::InitDone => {
                // Pods that vanished while the watch was down are gone.
                let seen = listed.take().unwrap_or_default();
                workers.retain(|uid, tx| {
                    let keep = seen.contains(uid);
                    if !keep {
                        let _ = tx.send(None);
                    }
                    keep
                });
            }
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
}

/// Registers the Node and keeps its Lease and Ready condition fresh, unless stopped.
async fn heartbeat(ctx: Arc<NodeCtx>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let apply = PatchParams::apply("proclet").force();
    let mut registered = false;
    let mut beats = 0u64;
    loop {
        if !ctx.stopped() {
            if !registered {
                registered = nodes
                    .patch(&ctx.name, &apply, &Patch::Apply(node_object(&ctx)))
                    .await
                    .is_ok();
            }
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(ctx.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(ctx.name.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            let mut lease = serde_json::to_value(lease).unwrap_or_default();
            lease["apiVersion"] = json!("coordination.k8s.io/v1");
            lease["kind"] = json!("Lease");
            let _ = leases.patch(&ctx.name, &apply, &Patch::Apply(lease)).await;
            // The Ready condition every 5 s: the lifecycle controller sets it Unknown when
            // the Lease lapses, and only the node sets it back.
            if registered && beats.is_multiple_of(5) {
                let _ = nodes
                    .patch_status(&ctx.name, &apply, &Patch::Apply(node_status(&ctx)))
                    .await;
            }
            beats += 1;
        } else {
            beats = 0;
        }
        tokio::time::sleep(RENEW).await;
    }
}

fn node_object(ctx: &NodeCtx) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": ctx.name,
            "labels": {
                "kubernetes.io/hostname": ctx.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "topology.kubernetes.io/zone": format!("zone-{}", ctx.number),
                "pgha.dev/proclet": "true",
            }
        }
    })
}

fn node_status(ctx: &NodeCtx) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    // Generous, fixed capacity: pods are processes and nothing enforces their requests.
    let capacity =
        json!({"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": ctx.name},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": ctx.ip.to_string()},
                {"type": "Hostname", "address": ctx.name},
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "proclet is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "machineID": format!("proclet-{}", ctx.name),
                "systemUUID": format!("proclet-{}", ctx.name),
                "bootID": format!("proclet-{}", ctx.name),
                "kernelVersion": "",
                "osImage": "proclet (pods are local processes)",
                "containerRuntimeVersion": "proclet://0.1.0",
                "kubeletVersion": crate::KUBERNETES_VERSION,
                "kubeProxyVersion": crate::KUBERNETES_VERSION,
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
            },
        }
    })
}
