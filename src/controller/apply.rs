//! Server-side apply and pruning of a cluster's children.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;

/// Applies `object` (in its namespace) under `manager`, taking over conflicting fields.
pub async fn apply<K>(client: &Client, manager: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = object.name_any();
    let namespace = object.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "child",
        name: name.clone(),
    })?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(object),
        )
        .await?)
}

/// Applies `status` (all of it, or the fields `manager` owns) to the status of the object
/// `name`, taking over conflicting fields. The agent writes its PgInstance's status with it
/// too.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: &impl Serialize,
) -> kube::Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let kind = K::DynamicType::default();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&kind),
        "kind": K::kind(&kind),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
}

/// Deletes the objects carrying `selector` whose names are not in `keep`; returns their names.
pub async fn prune<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    keep: &[String],
) -> Result<Vec<String>, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut pruned = Vec::new();
    for object in api.list(&ListParams::default().labels(selector)).await? {
        let name = object.name_any();
        if !keep.contains(&name) && object.meta().deletion_timestamp.is_none() {
            api.delete(&name, &DeleteParams::background()).await?;
            pruned.push(name);
        }
    }
    Ok(pruned)
}
