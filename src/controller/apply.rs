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
