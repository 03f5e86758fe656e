//! Server-side apply of a status, for the operator's controllers and the agent alike.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Applies `status` (all of it, or the fields `manager` owns) to the status of the object
/// `name`, taking over conflicting fields. The agent writes its PgInstance's status with it
/// too.
pub async fn apply_status<K>(
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
