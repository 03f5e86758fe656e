//! `pgha report CLUSTER` (`kubectl pgha report`): a .tar.gz for a support ticket with the
//! cluster's objects, its Events, every agent's `/status` and the recent log of every pod.
//! Secrets are listed by name and keys: no value leaves the cluster.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::kubectl::{Failure, KubeArgs, agent_status, get_cluster, of_cluster};
use crate::api::{PgBackup, PgInstance};

/// Log lines kept per container.
const LOG_LINES: i64 = 2000;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The PgCluster.
    cluster: String,
    /// Where to write the report; `report-<namespace>-<cluster>-<UTC time>.tar.gz` when not given.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    kube: KubeArgs,
}

pub fn run(args: ReportArgs) -> Result<(), Failure> {
    tokio::runtime::Runtime::new()?.block_on(report(args))
}

/// What goes into the tarball: a path in it and the bytes.
type Entry = (String, Vec<u8>);

async fn report(args: ReportArgs) -> Result<(), Failure> {
    let (client, namespace) = args.kube.connect().await?;
    let name = &args.cluster;
    let cluster = get_cluster(&client, &namespace, name).await?;
    let ours = of_cluster(name);
    let ns = namespace.as_str();
    let mut entries: Vec<Entry> = vec![("pgcluster.yaml".into(), yaml(&[cluster])?)];
    // Every object of the cluster by name, for its Events.
    let mut names = BTreeSet::from([name.clone()]);
    for (entry, listed_names) in [
        listed::<PgInstance>(&client, ns, &ours, "pginstances").await?,
        listed::<PgBackup>(&client, ns, &ours, "pgbackups").await?,
        listed::<Pod>(&client, ns, &ours, "pods").await?,
        listed::<Service>(&client, ns, &ours, "services").await?,
        listed::<PersistentVolumeClaim>(&client, ns, &ours, "pvcs").await?,
        listed::<ConfigMap>(&client, ns, &ours, "configmaps").await?,
        listed::<PodDisruptionBudget>(&client, ns, &ours, "pdbs").await?,
        listed::<Lease>(&client, ns, &ours, "leases").await?,
    ] {
        entries.push(entry);
        names.extend(listed_names);
    }

    let secrets = Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ours)
        .await?;
    names.extend(secrets.iter().map(ResourceExt::name_any));
    let secrets: Vec<SecretSummary> = secrets.iter().map(summary).collect();
    entries.push(("secrets.yaml".into(), yaml(&secrets)?));

    let instances: Vec<String> = Api::<PgInstance>::namespaced(client.clone(), ns)
        .list(&ours)
        .await?
        .iter()
        .map(|i| i.name_any())
        .collect();
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let events = about(events, &names);
    entries.push(("events.yaml".into(), yaml(&events)?));

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    for pod in pods.list(&ours).await?.items {
        let pod_name = pod.name_any();
        if instances.contains(&pod_name) {
            let said = agent_status(&client, ns, &pod_name)
                .await
                .unwrap_or_else(|e| serde_json::json!({"error": e}));
            let said = serde_json::to_vec_pretty(&said)?;
            entries.push((format!("agents/{pod_name}.json"), said));
        }
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for container in containers.map(|c| c.name.clone()).collect::<Vec<_>>() {
            let params = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(LOG_LINES),
                timestamps: true,
                ..LogParams::default()
            };
            let log = pods
                .logs(&pod_name, &params)
                .await
                .unwrap_or_else(|e| format!("(no log: {e})\n"));
            entries.push((format!("logs/{pod_name}/{container}.log"), log.into_bytes()));
        }
    }

    let file = args.file.clone().unwrap_or_else(|| {
        let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        PathBuf::from(format!("report-{ns}-{name}-{now}.tar.gz"))
    });
    let top = format!("{ns}-{name}");
    write_tarball(&file, &top, &entries).map_err(|e| format!("writing {}: {e}", file.display()))?;
    println!("{} ({} files)", file.display(), entries.len());
    Ok(())
}

/// The Events whose object is one of `names`, exactly: a cluster `orders-x` is not `orders`'s.
fn about(mut events: Vec<Event>, names: &BTreeSet<String>) -> Vec<Event> {
    events.retain(|e| {
        e.involved_object
            .name
            .as_ref()
            .is_some_and(|n| names.contains(n))
    });
    events
}

/// The objects of kind `K` that `params` select, as a file of the report, and their names.
async fn listed<K>(
    client: &Client,
    namespace: &str,
    params: &ListParams,
    file: &str,
) -> Result<(Entry, Vec<String>), Failure>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    // One kind this account may not list does not cost the rest of the report.
    let mut items = match Api::<K>::namespaced(client.clone(), namespace)
        .list(params)
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            let note = format!("# not listed: {e}\n").into_bytes();
            return Ok(((format!("{file}.yaml"), note), Vec::new()));
        }
    };
    // Who wrote which field is noise in a support ticket.
    items
        .iter_mut()
        .for_each(|o| o.meta_mut().managed_fields = None);
    let names = items.iter().map(|o| o.name_any()).collect();
    Ok(((format!("{file}.yaml"), yaml(&items)?), names))
}

fn yaml<T: Serialize>(items: &[T]) -> Result<Vec<u8>, Failure> {
    Ok(serde_saphyr::to_string(&items)?.into_bytes())
}

/// What a support ticket may know of a Secret: that it exists, its type, labels and keys.
#[derive(Serialize)]
struct SecretSummary {
    name: String,
    #[serde(rename = "type")]
    type_: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    keys: Vec<String>,
}

fn summary(secret: &Secret) -> SecretSummary {
    let data = secret.data.iter().flat_map(|d| d.keys());
    let strings = secret.string_data.iter().flat_map(|d| d.keys());
    SecretSummary {
        name: secret.name_any(),
        type_: secret.type_.clone(),
        labels: secret.labels().clone(),
        keys: data.chain(strings).cloned().collect(),
    }
}

fn write_tarball(file: &std::path::Path, top: &str, entries: &[Entry]) -> std::io::Result<()> {
    let out = std::fs::File::create(file)?;
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now);
        tar.append_data(&mut header, format!("{top}/{path}"), bytes.as_slice())?;
    }
    tar.into_inner()?.finish()?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_a_cluster_whose_name_starts_alike_are_not_reported() {
        let event = |name: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}.1")},
                "involvedObject": {"kind": "PgCluster", "name": name},
            }))
            .unwrap()
        };
        let names = BTreeSet::from(["orders".to_string(), "orders-1".to_string()]);
        let kept = about(
            vec![
                event("orders"),
                event("orders-x"),
                event("orders-1"),
                event("orders-x-1"),
            ],
            &names,
        );
        let kept: Vec<_> = kept
            .iter()
            .filter_map(|e| e.involved_object.name.clone())
            .collect();
        assert_eq!(kept, ["orders", "orders-1"]);
    }

    #[test]
    fn a_secret_is_reported_by_its_keys_alone() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "orders-app", "labels": {"pgha.dev/cluster": "orders"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                    "{\"data\":{\"password\":\"czNjcjN0\"}}"}},
            "data": {"password": "czNjcjN0", "username": "YXBw"},
            "stringData": {"uri": "postgresql://app:s3cr3t@x/app"},
        }))
        .unwrap();
        let text = serde_saphyr::to_string(&summary(&secret)).unwrap();
        assert!(
            !text.contains("czNjcjN0") && !text.contains("s3cr3t"),
            "{text}"
        );
        assert_eq!(summary(&secret).keys, ["password", "username", "uri"]);
    }
}
