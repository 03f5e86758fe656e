//! What the commands a person runs against a cluster share (`status`, `psql`, `backup`,
//! `restore`, `switchover`, `report`): kubectl's `-n` and `--kubeconfig`, and the client.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::api::PgCluster;
use crate::controller::agents;
use crate::plan::instance::STATUS_PORT;
use crate::plan::names::LABEL_CLUSTER;

pub type Failure = Box<dyn std::error::Error>;

#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// The namespace; the kubeconfig context's when not given.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The kubeconfig to use, like kubectl's (else KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl KubeArgs {
    /// A client and the namespace the command works in.
    pub async fn connect(&self) -> Result<(Client, String), Failure> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
            }
            None => Config::infer().await?,
        };
        let client = Client::try_from(config)?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Ok((client, namespace))
    }
}

/// PgCluster `name`, or an error that says how to find the right one.
pub async fn get_cluster(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<PgCluster, Failure> {
    Api::<PgCluster>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| not_found("PgCluster", namespace, name, e))
}

/// Selects the objects of PgCluster `name` (its instances, pods, backups, Secrets, ...).
pub fn of_cluster(name: &str) -> ListParams {
    ListParams::default().labels(&format!("{LABEL_CLUSTER}={name}"))
}

/// "not found" said the way a person fixes it.
pub fn not_found(kind: &str, namespace: &str, name: &str, err: kube::Error) -> Failure {
    match err {
        kube::Error::Api(ref status) if status.code == 404 => format!(
            "{kind} {namespace}/{name} not found (list them with `kubectl get {} -n {namespace}`)",
            kind.to_lowercase()
        )
        .into(),
        other => format!("reading {kind} {namespace}/{name}: {other}").into(),
    }
}

/// A pod's agent `/status`: through the API server's pod proxy, which reaches it from
/// anywhere the API server is reachable; else straight at the pod's address, which works
/// inside the cluster's network (and where the API server will not proxy, as to the loopback
/// addresses of the local test cluster).
pub async fn agent_status(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<serde_json::Value, String> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{STATUS_PORT}/proxy/status");
    let proxied = async {
        let request = hyper::Request::get(path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let text = tokio::time::timeout(Duration::from_secs(3), client.request_text(request))
            .await
            .map_err(|_| "no answer through the API server within 3 s".to_string())?
            .map_err(|e| format!("through the API server: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("unexpected answer: {e}"))
    };
    let through_api = match proxied.await {
        Ok(report) => return Ok(report),
        Err(e) => e,
    };
    let ip = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await
        .ok()
        .and_then(|p| p.status?.pod_ip);
    match ip {
        Some(ip) => agents::get_json(&ip, "/status")
            .await
            .ok_or_else(|| format!("{pod}'s agent: {through_api}; and not at {ip} either")),
        None => Err(format!(
            "{pod}'s agent: {through_api}; the pod has no address"
        )),
    }
}
