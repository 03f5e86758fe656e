//! The cluster controller: PgCluster → PgInstances, Services, Secrets, ConfigMap and the
//! instances' ServiceAccount, Role and RoleBinding (server-side applied as `pgha/cluster`),
//! pruned when no longer wanted, and the cluster's status from its instances.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::try_join_all;
use futures::{StreamExt, try_join};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use super::apply::{apply, prune};
use super::switchover::{self, under_way as switchover_under_way};
use super::{Context, Error};
use super::{agents, backups, databases, drains, drills, failover, lease_watch, tls, wakes};
use crate::api::cluster::{PrimaryUpdateMethod, SWITCHOVER_ANNOTATION};
use crate::api::instance::{InstanceRole, Peer};
use crate::api::{PgBackup, PgCluster, PgClusterStatus, PgInstance};
use crate::k8s::apply_status;
use crate::plan::children::{FreshPasswords, Primary, Rolling, children, default_image};
use crate::plan::rollout::{
    Member, Turn, next_image, next_restart, refused_lately, scale_down_target, turn,
};
use crate::plan::validation::validate;
use crate::plan::{names, status};

pub const FIELD_MANAGER: &str = "pgha/cluster";

/// Runs the controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let ours = watcher::Config::default().labels(&format!("{}=pgha", names::LABEL_MANAGED_BY));
    let (reader, writer) = reflector::store();
    let clusters = reflector::reflector(
        writer,
        watcher(Api::<PgCluster>::all(client.clone()), Default::default()),
    )
    .backoff(crate::k8s::watch::backoff())
    .applied_objects()
    .predicate_filter(wakes::cluster, PredicateConfig::default());
    // An agent's report of WAL positions alone does not wake its cluster (`wakes::instance`).
    let instances = watcher(Api::<PgInstance>::all(client.clone()), ours.clone())
        .backoff(crate::k8s::watch::backoff())
        .touched_objects()
        .predicate_filter(wakes::instance, PredicateConfig::default());
    Controller::for_stream(clusters, reader)
        .owns_stream(instances)
        .owns(Api::<Service>::all(client.clone()), ours.clone())
        .owns(Api::<Secret>::all(client.clone()), ours.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), ours.clone())
        .watches(
            Api::<PgBackup>::all(client.clone()),
            watcher::Config::default(),
            |backup| {
                let namespace = backup.namespace()?;
                Some(ObjectRef::new(&backup.spec.cluster).within(&namespace))
            },
        )
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            ours.clone(),
        )
        // A primary Lease that runs out changes nothing the watches see: wake its cluster then.
        .reconcile_on(lease_watch::expiries(client.clone()))
        .reconcile_on(databases::watch(&ctx))
        // A cordoned node (a drain) may run a primary that must move.
        .reconcile_all_on(drains::cordons(client))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(cluster: Arc<PgCluster>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// 24 random bytes as 48 hex characters.
fn password() -> Result<String, Error> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::Random)?;
    Ok(hex::encode(bytes))
}

async fn reconcile(cluster: Arc<PgCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = converge(cluster, ctx.clone()).await;
    ctx.metrics
        .reconciled("cluster", started.elapsed(), result.is_ok());
    result
}

#[tracing::instrument(skip_all, fields(cluster = %cluster.name_any()))]
async fn converge(cluster: Arc<PgCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references take everything with it.
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().ok_or_else(|| Error::NoNamespace {
        kind: "PgCluster",
        name: name.clone(),
    })?;
    let client = &ctx.client;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), &namespace);
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let reference = cluster.object_ref(&());

    let valid = match validate(&cluster) {
        Ok(valid) => valid,
        Err(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let refused = status::refused(
                &previous,
                generation,
                "InvalidSpec",
                message.clone(),
                &now(),
            );
            if refused != previous {
                ctx.event(&reference, true, "InvalidSpec", message).await;
                apply_status(&clusters, &name, FIELD_MANAGER, &refused).await?;
            }
            // Nothing is touched until the spec changes.
            return Ok(Action::await_change());
        }
    };

    let selector = format!("{}={name}", names::LABEL_CLUSTER);
    let list = ListParams::default().labels(&selector);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let instances_api: Api<PgInstance> = Api::namespaced(client.clone(), &namespace);
    let (secrets, instances) = try_join!(secrets.list(&list), instances_api.list(&list))?;
    // A Secret is applied with the version it was read at: a password a person changed in
    // between makes the apply fail (409) and the next reconcile read it, instead of the
    // apply putting the old one back.
    let versions: BTreeMap<String, Option<String>> = secrets
        .iter()
        .map(|s| (s.name_any(), s.resource_version()))
        .collect();
    let certificates: tls::Seen = secrets
        .iter()
        .map(|s| {
            let data = s.data.clone().unwrap_or_default();
            let annotations = s.metadata.annotations.clone().unwrap_or_default();
            (s.name_any(), (data, annotations))
        })
        .collect();
    let existing: BTreeMap<_, _> = secrets
        .into_iter()
        .map(|s| (s.name_any(), s.data.unwrap_or_default()))
        .collect();
    let observed = instances.items;

    // Who is primary, who fences, and the failover under way (`failover`).
    let decision = failover::decide(&ctx, &cluster, &namespace, &observed).await?;
    let primary_name = decision.primary.clone();
    if previous.current_primary.is_none() {
        ctx.event(
            &reference,
            false,
            "PrimaryChosen",
            format!("{primary_name} is the first primary"),
        )
        .await;
    }
    // Replicas follow the primary once it serves; during a failover they follow the target
    // at once (streaming from it as a standby until it is promoted), which saves a round
    // trip and lets synchronous commits resume as soon as it is.
    let promoting = decision.failover.is_some();
    let endpoint = observed
        .iter()
        .find(|i| i.name_any() == primary_name)
        .and_then(|i| i.status.clone())
        .filter(|s| s.ready && (promoting || s.role == Some(InstanceRole::Primary)))
        .and_then(|s| s.endpoint);
    let fresh = FreshPasswords {
        superuser: password()?,
        app: password()?,
        replication: password()?,
        roles: cluster
            .spec
            .roles
            .iter()
            .filter(|r| r.generate_password)
            .map(|r| Ok((r.name.clone(), password()?)))
            .collect::<Result<_, Error>>()?,
    };
    let kept = observed
        .iter()
        .find_map(|i| i.spec.managed.as_ref())
        .map(|m| m.databases.clone())
        .unwrap_or_default();
    let (pg_databases, claims) = databases::of(&ctx, &namespace, &name, &kept);
    let peers = observed
        .iter()
        .filter_map(|i| {
            let endpoint = i.status.as_ref()?.endpoint.as_ref()?;
            Some(Peer {
                name: i.name_any(),
                host: endpoint.host.clone(),
            })
        })
        .collect();
    let primary = Primary {
        name: primary_name.clone(),
        endpoint,
        fenced: decision.fenced.clone(),
        peers,
    };
    // New images, then settings waiting for a restart, roll through the instances one at a
    // time; an instance keeps what it has until its turn.
    let image = cluster
        .spec
        .image
        .clone()
        .unwrap_or_else(|| default_image(cluster.spec.postgres_version));
    let mut rolling: BTreeMap<String, Rolling> = observed
        .iter()
        .map(|i| {
            let kept = Rolling {
                restart: i.spec.restart,
                image: Some(i.spec.image.clone()),
            };
            (i.name_any(), kept)
        })
        .collect();
    // While the primary changes hands, the orders of the existing instances go out first:
    // every other read and write of this reconcile would delay the fence or the promotion.
    // (Rollout turns and backups come later; here each instance keeps what it has.)
    let plan = |rolling: &BTreeMap<String, Rolling>| {
        children(
            &valid,
            &existing,
            &fresh,
            &primary,
            rolling,
            &claims.managed,
        )
    };
    if !decision.fenced.is_empty() || decision.failover.is_some() {
        let early = plan(&rolling)?;
        let orders = early.instances.into_iter().filter_map(|mut wanted| {
            let now = observed
                .iter()
                .find(|o| o.name_any() == wanted.name_any())?;
            wanted.spec.backup = now.spec.backup.clone();
            Some(wanted)
        });
        let orders: Vec<PgInstance> = orders.collect();
        try_join_all(orders.iter().map(|o| apply(client, FIELD_MANAGER, o))).await?;
        if decision.orders_only {
            return Ok(Action::requeue(
                decision.requeue.unwrap_or(Duration::from_millis(500)),
            ));
        }
    }
    let members: Vec<Member> = observed
        .iter()
        .map(|i| {
            let s = i.status.clone().unwrap_or_default();
            Member {
                name: i.name_any(),
                primary: i.name_any() == primary_name,
                ready: s.ready,
                pending_restart: s.pending_restart,
                ordered: i.spec.restart,
                done: s.restarted.unwrap_or(0),
                config_current: s.config_generation.is_some()
                    && s.config_generation == i.metadata.generation,
                image_changing: s.image.as_deref() != Some(i.spec.image.as_str()),
                image_stale: i.spec.image != image,
            }
        })
        .collect();
    // The primary's turn moves the primary first (primaryUpdateMethod: switchover), unless a
    // switchover was just refused: then it restarts in place rather than asking again.
    let move_primary = cluster.spec.primary_update_method == PrimaryUpdateMethod::Switchover
        && !refused_lately(&previous, Utc::now());
    let (turn, what) = match next_image(&members) {
        Some(next) => (turn(Some(next), &members, move_primary), "ImageRollout"),
        None => (
            turn(next_restart(&members), &members, move_primary),
            "RollingRestart",
        ),
    };
    match turn {
        Some(Turn::Change(next)) => {
            let kept = rolling.entry(next.to_string()).or_default();
            let note = if what == "ImageRollout" {
                kept.image = Some(image.clone());
                format!("moving {next} to image {image}")
            } else {
                kept.restart += 1;
                format!("restarting {next} for settings that need a restart")
            };
            ctx.event(&reference, false, what, note).await;
        }
        Some(Turn::MovePrimary) => {
            let why = format!("{what}: the replicas are done; the primary moves before its turn");
            request_switchover(&ctx, &cluster, &previous, "", why).await?;
        }
        None => {}
    }
    // A drain of the primary's node moves the primary first (its PodDisruptionBudget holds
    // the eviction meanwhile).
    if cluster.spec.instances > 1
        && let Some(node) = drains::cordoned_node(client, &namespace, &primary_name).await?
    {
        let why =
            format!("node {node} is cordoned (a drain): the primary {primary_name} moves off it");
        request_switchover(&ctx, &cluster, &previous, "", why).await?;
    }
    // Scale-down that takes the primary's instance moves the primary to one that stays.
    if let Some(to) = scale_down_target(&observed, &primary_name, cluster.spec.instances) {
        let to = to.to_string();
        let why = format!(
            "scaling down to {} instances removes the primary {primary_name}",
            cluster.spec.instances
        );
        request_switchover(&ctx, &cluster, &previous, &to, why).await?;
    }
    let mut wanted = plan(&rolling)?;
    let certificates = tls::secrets(&cluster, &certificates, Utc::now())?;
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let server_ca = tls::server_ca(&secrets_api, &cluster, &certificates).await?;
    wanted.secrets.extend(certificates);
    // Applications verify the server with the CA their Secret carries: the application
    // role's and each generated role's.
    let mut clients = vec![names::secret(&name, names::SecretKind::App)];
    clients.extend(
        cluster
            .spec
            .roles
            .iter()
            .filter(|r| r.generate_password)
            .map(|r| names::role_secret(&name, &r.name)),
    );
    if let Ok(ca) = &server_ca {
        for secret in wanted
            .secrets
            .iter_mut()
            .filter(|s| clients.contains(&s.name_any()))
        {
            let data = secret.data.get_or_insert_default();
            data.insert(
                "ca.crt".into(),
                k8s_openapi::ByteString(ca.clone().into_bytes()),
            );
        }
    }
    for secret in &mut wanted.secrets {
        secret.metadata.resource_version = versions.get(&secret.name_any()).cloned().flatten();
    }
    // The backup under way is part of its instance's orders.
    let backup = backups::step(&ctx, &cluster, &valid, &observed, &primary_name).await?;
    if let Some((instance, request)) = &backup.assigned
        && let Some(wanted) = wanted
            .instances
            .iter_mut()
            .find(|i| i.name_any() == *instance)
    {
        wanted.spec.backup = Some(request.clone());
    }
    // The writes below do not depend on each other; each group goes out at once.
    try_join_all(wanted.identities.iter().map(|identity| async {
        apply(client, FIELD_MANAGER, &identity.service_account).await?;
        apply(client, FIELD_MANAGER, &identity.role).await?;
        apply(client, FIELD_MANAGER, &identity.role_binding).await
    }))
    .await?;
    // Identities of removed instances (and the shared one older versions made) go.
    let identities: Vec<String> = wanted
        .identities
        .iter()
        .map(|i| i.service_account.name_any())
        .collect();
    try_join!(
        prune::<RoleBinding>(client, &namespace, &selector, &identities),
        prune::<Role>(client, &namespace, &selector, &identities),
        prune::<ServiceAccount>(client, &namespace, &selector, &identities),
        try_join_all(
            wanted
                .secrets
                .iter()
                .map(|s| apply(client, FIELD_MANAGER, s))
        ),
        apply(client, FIELD_MANAGER, &wanted.config_map),
        try_join_all(
            wanted
                .disruption_budgets
                .iter()
                .map(|b| apply(client, FIELD_MANAGER, b))
        ),
        try_join_all(
            wanted
                .services
                .iter()
                .map(|s| apply(client, FIELD_MANAGER, s))
        ),
    )?;
    let budgets: Vec<String> = wanted
        .disruption_budgets
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    prune::<PodDisruptionBudget>(client, &namespace, &selector, &budgets).await?;
    let mut applied = Vec::new();
    for instance in &wanted.instances {
        let fresh = !observed.iter().any(|i| i.name_any() == instance.name_any());
        applied.push(apply(client, FIELD_MANAGER, instance).await?);
        if fresh {
            let note = format!("created instance {}", instance.name_any());
            ctx.event(&reference, false, "InstanceCreated", note).await;
        }
    }

    // Instances beyond `instances` go, the primary never (it would be switched over first).
    let mut keep: Vec<String> = applied.iter().map(ResourceExt::name_any).collect();
    keep.push(primary_name.clone());
    keep.push(decision.current.clone());
    for gone in prune::<PgInstance>(client, &namespace, &selector, &keep).await? {
        ctx.event(
            &reference,
            false,
            "InstanceRemoved",
            format!("removed instance {gone}"),
        )
        .await;
    }

    let mut current: Vec<PgInstance> = applied;
    current.sort_by_key(|i| i.spec.ordinal);
    // Every ready agent's report of this moment, read in parallel.
    let reads = current.iter().filter_map(|i| {
        let status = i.status.as_ref().filter(|s| s.ready)?;
        let endpoint = status.endpoint.clone()?;
        let name = i.name_any();
        Some(async move { agents::detail(&endpoint).await.map(|d| (name, d)) })
    });
    let details: BTreeMap<_, _> = futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    let drill = drills::step(&ctx, &cluster, &valid, backup.backed_up_here).await?;
    let mut next = status::observed(
        &previous,
        generation,
        cluster.spec.instances,
        &primary_name,
        &current,
        &details,
        &now(),
    );
    decision.record(&mut next);
    // What the primary made of the roles and databases (kept while it has not said yet).
    let managed = current
        .iter()
        .find(|i| i.name_any() == primary_name)
        .and_then(|i| i.status.as_ref()?.managed.clone());
    if let Some(report) = &managed {
        next.roles = report.roles.clone();
    }
    next.roles
        .retain(|r| cluster.spec.roles.iter().any(|s| s.name == r.name));
    for role in &next.roles {
        let before = previous.roles.iter().find(|r| r.name == role.name);
        if let Some(message) = role.message.as_ref()
            && before.and_then(|b| b.message.as_ref()) != Some(message)
        {
            let note = format!("role {}: {message}", role.name);
            ctx.event(&reference, true, "RoleNotApplied", note).await;
        }
        if let Some(repair) = &role.repaired
            && ctx
                .repairs
                .first_seen(&format!("{namespace}/{name}/role/{}", role.name), repair)
        {
            let note = format!("role {}: {}", role.name, repair.what);
            ctx.event(&reference, true, "RoleDriftRepaired", note).await;
        }
    }
    ctx.metrics.managed_failed(
        &namespace,
        &name,
        next.roles.iter().filter(|r| !r.applied).count(),
        pg_databases
            .iter()
            .filter(|d| d.status.as_ref().is_some_and(|s| s.applied == Some(false)))
            .count(),
    );
    databases::publish(
        &ctx,
        &pg_databases,
        &claims,
        managed.as_ref().map(|m| m.databases.as_slice()),
    )
    .await?;
    next.last_backup = backup.last_backup.clone();
    next.last_backup_at = backup.last_backup_at.clone();
    if let Some(at) = &backup.recoverable_from {
        next.first_recoverability_point = Some(at.clone());
    }
    if let Some(finished) = drill.finished {
        next.last_verified_restore = Some(finished);
    }
    if cluster
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| b.verify.is_some())
    {
        status::drills(&mut next, &previous, generation, &now());
    }
    if cluster.spec.backup.is_some() {
        let archiver = current
            .iter()
            .find(|i| i.name_any() == primary_name)
            .and_then(|i| i.status.as_ref())
            .and_then(|s| s.archiver.clone());
        status::archiving(&mut next, &previous, archiver.as_ref(), generation, &now());
    }
    status::certificates(&mut next, &previous, server_ca.err(), generation, &now());
    let outage = current
        .iter()
        .find(|i| i.name_any() == primary_name)
        .and_then(|i| i.status.as_ref()?.last_lease_outage.clone())
        .or(previous.last_lease_outage.clone());
    status::primary_lease(
        &mut next,
        &previous,
        decision.vouched.clone(),
        outage,
        generation,
        &now(),
    );
    ctx.metrics
        .lease_outage(&namespace, &name, next.last_lease_outage.as_ref());
    if let Some(outage) = &next.last_lease_outage
        && previous.last_lease_outage.as_ref() != Some(outage)
    {
        let note = format!(
            "{primary_name} served {:.1} s without renewing its primary Lease (the Kubernetes API did not answer it); no failover",
            outage.seconds
        );
        ctx.event(&reference, true, "PrimaryLeaseOutage", note)
            .await;
    }
    if let Some((reason, message)) = &decision.blocked {
        status::not_ready(
            &mut next,
            &previous,
            reason,
            message.clone(),
            generation,
            &now(),
        );
    }
    if next != previous {
        let archiving = |s: &PgClusterStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "ContinuousArchiving")
                .map(|c| (c.status.clone(), c.message.clone()))
        };
        if let Some((state, message)) = archiving(&next)
            && archiving(&previous).map(|(s, _)| s) != Some(state.clone())
        {
            let (warning, reason) = match state.as_str() {
                "True" => (false, "ArchivingResumed"),
                _ => (true, "ArchivingFailing"),
            };
            ctx.event(&reference, warning, reason, message).await;
        }
        if next.phase != previous.phase {
            let note = format!("phase {:?}: {}", next.phase, next.conditions[0].message);
            ctx.event(&reference, false, "PhaseChanged", note).await;
        }
        apply_status(&clusters, &name, FIELD_MANAGER, &next).await?;
    }
    let settled = next.ready_instances == cluster.spec.instances;
    let every = Duration::from_secs(if settled { 60 } else { 5 });
    let soonest = [decision.requeue, backup.requeue, drill.requeue]
        .into_iter()
        .flatten()
        .fold(every, Duration::min);
    Ok(Action::requeue(soonest))
}

/// Asks for a switchover the way a DBA does (the `pgha.dev/switchover-to` annotation, `to`
/// empty for the most caught-up replica), unless one is asked for, under way, or was just
/// refused; the switchover step takes it at the next reconcile.
async fn request_switchover(
    ctx: &Context,
    cluster: &PgCluster,
    previous: &PgClusterStatus,
    to: &str,
    why: String,
) -> Result<(), Error> {
    let asked = cluster.annotations().contains_key(SWITCHOVER_ANNOTATION);
    let busy = switchover_under_way(previous).is_some() || previous.failover.is_some();
    if asked || busy || refused_lately(previous, Utc::now()) {
        return Ok(());
    }
    switchover::annotate(ctx, cluster, Some(to)).await?;
    ctx.event(&cluster.object_ref(&()), false, "SwitchoverRequested", why)
        .await;
    Ok(())
}
