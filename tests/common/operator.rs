//! The operator installed on a local cluster, for tests/operator.rs and benches/operator.rs.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use pgha::api::PgCluster;
use pgha::api::cluster::ClusterPhase;
use pgha_e2e::{Cluster, ClusterOptions, ImageTable};

use crate::eventually::eventually;

/// A local cluster with crds/ and the operator installed from deploy/ — its Deployment, its
/// ServiceAccount and exactly the RBAC it ships — and the namespace `shop`.
pub async fn installed(index: u8) -> (Cluster, Client) {
    let pgha = Path::new(env!("CARGO_BIN_EXE_pgha"));
    let cluster = Cluster::start(ClusterOptions {
        index,
        images: ImageTable::default().with_pgha(pgha),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = cluster.client();
    kubectl(
        &cluster,
        &[
            "apply",
            "-k",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy"),
        ],
    );
    namespace(&client, "shop").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "pgha-system");
    eventually(Duration::from_secs(60), "an operator pod ready", || async {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items.iter().any(pod_ready).then_some(())
    })
    .await;
    (cluster, client)
}

pub fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new(pgha_e2e::bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn namespace(client: &Client, name: &str) {
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

/// Creates the PgCluster written in `yaml`.
pub async fn create(clusters: &Api<PgCluster>, yaml: &str) {
    let cluster: PgCluster = serde_saphyr::from_str(yaml).unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
}

/// Creates a PgCluster of `instances` on 1Gi volumes, every other field defaulted.
pub async fn create_plain(clusters: &Api<PgCluster>, name: &str, instances: i32) {
    let yaml = format!(
        "metadata: {{name: {name}}}\nspec: {{instances: {instances}, storage: {{size: 1Gi}}}}\n"
    );
    create(clusters, &yaml).await;
}

/// The cluster when it is Healthy with `instances` ready.
pub async fn healthy(clusters: &Api<PgCluster>, name: &str, instances: i32) -> Option<PgCluster> {
    let cluster = clusters.get(name).await.ok()?;
    let status = cluster.status.as_ref()?;
    (status.phase == Some(ClusterPhase::Healthy) && status.ready_instances == instances)
        .then_some(cluster)
}

/// The cluster's `Ready` condition when its reason is `reason`.
pub async fn ready_because(
    clusters: &Api<PgCluster>,
    name: &str,
    reason: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let status = clusters.get(name).await.ok()?.status?;
    status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready" && c.reason == reason)
}

/// The operator pod that holds the leader Lease.
pub async fn leader(client: &Client) -> String {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "pgha-system");
    let lease = leases.get("pgha-operator").await.unwrap();
    lease.spec.unwrap().holder_identity.unwrap()
}

/// `pgha ARGS` (KUBECONFIG set) against the local cluster, as a DBA runs it; Ok with what it
/// printed when it succeeded, Err with what it printed when it failed. Async: the Service
/// proxies run in this process.
pub async fn pgha(cluster: &Cluster, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgha"))
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("NO_COLOR", "1")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(said)
    } else {
        Err(said)
    }
}

/// `pgha switchover` of PgCluster `name` in `namespace` (to `to`, or to whom the operator
/// picks).
pub async fn pgha_switchover(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    to: Option<&str>,
) -> Result<String, String> {
    let mut args = vec!["switchover", name, "-n", namespace];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    pgha(cluster, &args).await
}

/// The `/metrics` text of every operator pod, one after the other (only the leader's has the
/// per-cluster series).
pub async fn operator_metrics(client: &Client) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pods = Api::<Pod>::namespaced(client.clone(), "pgha-system")
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .unwrap();
    let mut all = String::new();
    for ip in pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
    {
        let Ok(mut stream) = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await else {
            continue;
        };
        let sent = stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
        let mut response = String::new();
        if sent.is_ok() && stream.read_to_string(&mut response).await.is_ok() {
            all += response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        }
    }
    all
}

/// The instance PgCluster `name` reports as its primary now.
pub async fn primary_of(clusters: &Api<PgCluster>, name: &str) -> String {
    let cluster = clusters.get(name).await.unwrap();
    let status = cluster.status.unwrap_or_default();
    status.current_primary.expect("a primary")
}
