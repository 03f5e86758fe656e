//! A dynamic provisioner for the default StorageClass `local`: a claim that the scheduler has
//! placed on a node (WaitForFirstConsumer) gets a `local` PersistentVolume — a directory in
//! that node's state directory, pinned to the node — and a released volume is deleted with
//! its directory. Binding claims to volumes is the controller-manager's PV controller.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::node::node_dir;

pub(crate) const STORAGE_CLASS: &str = "local";
const PROVISIONER: &str = "proclet.pgha.dev/local";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Installs the StorageClass, then provisions and deletes volumes until dropped.
pub(crate) async fn run(client: Client, state: PathBuf) {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    let apply = PatchParams::apply("proclet").force();
    while classes
        .patch(STORAGE_CLASS, &apply, &Patch::Apply(&class))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let _ = pass(&client, &state).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn pass(client: &Client, state: &std::path::Path) -> Result<(), kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let existing = volumes.list(&ListParams::default()).await?;
    for claim in claims.list(&ListParams::default()).await? {
        let spec = claim.spec.clone().unwrap_or_default();
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        let Some(node) = annotations.get(SELECTED_NODE) else {
            continue;
        };
        let ours = spec.storage_class_name.as_deref() == Some(STORAGE_CLASS);
        let pending = spec.volume_name.is_none() && claim.metadata.deletion_timestamp.is_none();
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let name = format!("pvc-{uid}");
        let exists = existing
            .iter()
            .any(|pv| pv.metadata.name.as_deref() == Some(&name));
        if !(ours && pending) || exists {
            continue;
        }
        let dir = node_dir(state, node).join("volumes").join(&name);
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let size = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map_or_else(|| "1Gi".to_string(), |q| q.0);
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": "Filesystem",
                "local": {"path": dir},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": claim.metadata.namespace,
                    "name": claim.metadata.name,
                    "uid": uid,
                },
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                ]}]}},
            }
        }))
        .map_err(kube::Error::SerdeError)?;
        volumes.create(&PostParams::default(), &volume).await?;
    }
    for pv in existing {
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .is_some_and(|p| p == PROVISIONER);
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Delete");
        if !(ours && released && delete) {
            continue;
        }
        if let Some(path) = pv
            .spec
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .map(|l| &l.path)
        {
            let _ = std::fs::remove_dir_all(path);
        }
        let name = pv.metadata.name.unwrap_or_default();
        volumes.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(())
}
