//! PgDatabases from the cluster controller's side: which of a cluster's go into its
//! instances' orders (`plan::claims`), and, once the primary has reported, their status,
//! their finalizer and an Event for each change put back.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error};
use crate::api::managed::{Applied, ManagedDatabase};
use crate::api::{PgCluster, PgDatabase};
use crate::plan::claims::{self, Claims, FINALIZER, Finalizer};

pub const FIELD_MANAGER: &str = "pgha/databases";

/// The watch that keeps `ctx.databases`, for the cluster controller to be woken by: a change
/// of a PgDatabase reconciles its cluster.
pub fn watch(ctx: &Context) -> impl Stream<Item = ObjectRef<PgCluster>> + use<> {
    let api = Api::<PgDatabase>::all(ctx.client.clone());
    let writer = ctx
        .databases_writer()
        .expect("the PgDatabase watch runs once");
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .backoff(crate::k8s::watch::backoff())
        .touched_objects()
        .filter_map(|d| async move {
            let d = d.ok()?;
            Some(ObjectRef::new(&d.spec.cluster).within(&d.namespace()?))
        })
}

/// The PgDatabases of a cluster and what its primary is to keep of them. Until the watch
/// has listed them all (just after the operator started), the instances keep the databases
/// their orders have (`kept`), so the orders do not lose them for a moment.
pub fn of(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    kept: &[ManagedDatabase],
) -> (Vec<Arc<PgDatabase>>, Claims) {
    if ctx.databases.wait_until_ready().now_or_never().is_none() {
        let claims = Claims {
            managed: kept.to_vec(),
            ..Claims::default()
        };
        return (Vec::new(), claims);
    }
    let mine: Vec<Arc<PgDatabase>> = ctx
        .databases
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(namespace) && d.spec.cluster == cluster)
        .collect();
    let refs: Vec<&PgDatabase> = mine.iter().map(AsRef::as_ref).collect();
    let claims = claims::claims(&refs);
    (mine, claims)
}

/// Writes each PgDatabase's status and finalizer from the primary's report (None: none yet),
/// and an Event for a change put back.
pub async fn publish(
    ctx: &Context,
    databases: &[Arc<PgDatabase>],
    claims: &Claims,
    report: Option<&[Applied]>,
) -> Result<(), Error> {
    for database in databases {
        let name = database.name_any();
        let namespace = database.namespace().unwrap_or_default();
        let api: Api<PgDatabase> = Api::namespaced(ctx.client.clone(), &namespace);
        let status = claims::status(database, claims, report);
        if database.status.as_ref() != Some(&status)
            && database.metadata.deletion_timestamp.is_none()
        {
            let patch = serde_json::json!({
                "apiVersion": "pgha.dev/v1", "kind": "PgDatabase", "status": status,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch_status(&name, &params, &Patch::Apply(&patch))
                .await?;
            if let Some(message) = status
                .message
                .as_ref()
                .filter(|_| status.applied == Some(false))
            {
                let reference = database.object_ref(&());
                ctx.event(&reference, true, "DatabaseNotApplied", message.clone())
                    .await;
            }
        }
        if let Some(repair) = report
            .and_then(|r| r.iter().find(|a| a.name == name))
            .and_then(|a| a.repaired.as_ref())
            && ctx
                .repairs
                .first_seen(&format!("{namespace}/pgdatabase/{name}"), repair)
        {
            let reference = database.object_ref(&());
            ctx.event(
                &reference,
                true,
                "DatabaseDriftRepaired",
                repair.what.clone(),
            )
            .await;
        }
        set_finalizer(&api, database, claims::finalizer(database, claims, report)).await?;
    }
    Ok(())
}

/// Adds or removes [`FINALIZER`], onto the PgDatabase as read (a 409 waits for the next
/// reconcile).
pub async fn set_finalizer(
    api: &Api<PgDatabase>,
    database: &PgDatabase,
    action: Finalizer,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = database.finalizers().to_vec();
    match action {
        Finalizer::Keep => return Ok(()),
        Finalizer::Add => finalizers.push(FINALIZER.into()),
        Finalizer::Remove => finalizers.retain(|f| f != FINALIZER),
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": database.resource_version(), "finalizers": finalizers},
    });
    match api
        .patch(
            &database.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        other => other.map(drop).map_err(Error::from),
    }
}

/// PgDatabases whose PgCluster does not exist: nothing else would give them a status, and
/// one being deleted with `delete` would wait for its finalizer forever (the database went
/// with its cluster). Looked at again every few minutes, to notice a cluster deleted since.
pub async fn orphans(ctx: Arc<Context>) {
    Controller::new(
        Api::<PgDatabase>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .run(orphan, orphan_error, ctx)
    .for_each(|_| async {})
    .await;
}

const ORPHANS_EVERY: Duration = Duration::from_secs(300);

fn orphan_error(database: Arc<PgDatabase>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(database = %database.name_any(), %error, "checking the cluster of a PgDatabase failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn orphan(database: Arc<PgDatabase>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = database.namespace().unwrap_or_default();
    let clusters: Api<PgCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    if clusters.get_opt(&database.spec.cluster).await?.is_some() {
        return Ok(Action::requeue(ORPHANS_EVERY));
    }
    let api: Api<PgDatabase> = Api::namespaced(ctx.client.clone(), &namespace);
    if database.metadata.deletion_timestamp.is_some() {
        set_finalizer(&api, &database, Finalizer::Remove).await?;
        return Ok(Action::await_change());
    }
    let status = claims::without_cluster(&database.spec.cluster, &namespace);
    if database.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({
            "apiVersion": "pgha.dev/v1", "kind": "PgDatabase", "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&database.name_any(), &params, &Patch::Apply(&patch))
            .await?;
    }
    Ok(Action::requeue(ORPHANS_EVERY))
}
