//! A real Kubernetes cluster on loopback for pgha's end-to-end tests and the demo.
//!
//! - [`ControlPlane`]: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built
//!   from the pinned upstream release by `e2e/build-k8s.sh`, each a child process on free
//!   ports with its state in a temporary directory, stopped when dropped.
//! - [`Cluster`]: a control plane plus "proclet" node agents that run every pod scheduled to
//!   their node as local processes (each pod with its own 127.x address and mount
//!   namespace), a local volume provisioner, Service proxies on the loopback cluster IPs, and
//!   fault injection, network partitions included.

mod cluster;
mod control_plane;
mod env;
mod images;
pub mod net;
mod node;
mod partition;
mod pod;
mod probe;
mod process;
mod provisioner;
mod proxy;
mod volumes;

pub use cluster::{
    Cluster, ClusterOptions, Fault, PodRef, client, delete_now, inject, logs, pause_apiserver,
    service_address, set_node_running,
};
pub use control_plane::{ControlPlane, KUBERNETES_VERSION, bin_dir};
pub use images::{Image, ImageTable};
pub use partition::{heal, partition, partition_from_api};

/// What went wrong, in words a person can act on.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub(crate) fn fail(what: impl std::fmt::Display) -> Error {
    Error(what.to_string())
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}
