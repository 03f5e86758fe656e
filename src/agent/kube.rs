//! The agent's side of the Kubernetes API: its orders are the spec of its PgInstance, watched
//! with the pod's ServiceAccount, and what it observes goes to that PgInstance's status —
//! server-side applied under its own field manager, and only when it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::ConfigState;
use super::error::{AgentError, Result};
use super::managed::Password;
use super::status::Status;
use crate::api::PgInstance;
use crate::api::common::ClusterIdentity;
use crate::api::instance::{InstanceBackup, InstanceRole, LeaseOutage};
use crate::api::managed::{ManagedSpec, ManagedStatus};
use crate::k8s::apply_status;
use crate::plan::agent::{Endpoint, Orders};
use crate::plan::names::{self, SecretKind};
use crate::plan::status::condition;
use crate::plan::tls::{Material, Sources};

/// The PgInstance `name` as the watch has it (the watch sees no other).
fn instance_in(store: &Store<PgInstance>, name: &str) -> Option<Arc<PgInstance>> {
    store
        .state()
        .into_iter()
        .find(|i| i.metadata.name.as_deref() == Some(name))
}

/// The orders in the PgInstance named `name`, if the store has it.
fn orders_in(store: &Store<PgInstance>, name: &str) -> Option<Orders> {
    let instance = instance_in(store, name)?;
    let mut orders = Orders::from_spec(&instance.spec);
    orders.generation = instance.metadata.generation;
    Some(orders)
}

/// The field manager of what the agent writes.
pub const FIELD_MANAGER: &str = "pgha-agent";

/// Orders from the PgInstance named like the agent, kept current by a watch.
pub struct ApiOrders {
    store: Store<PgInstance>,
    namespace: String,
    name: String,
    watch: JoinHandle<()>,
    /// Signalled on every change the watch sees.
    changed: Arc<Notify>,
}

impl Drop for ApiOrders {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> AgentError {
    move |e| AgentError::Kubernetes(format!("{what}: {e}"))
}

impl ApiOrders {
    /// Starts watching and waits for the first list.
    pub async fn start(client: Client, namespace: &str, name: &str) -> Result<Self> {
        let api: Api<PgInstance> = Api::namespaced(client, namespace);
        let (store, writer) = reflector::store();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let changed = Arc::new(Notify::new());
        let events = reflector::reflector(writer, watcher(api, config))
            .backoff(crate::k8s::watch::backoff())
            .applied_objects()
            .for_each({
                let changed = changed.clone();
                move |_| {
                    changed.notify_one();
                    async {}
                }
            });
        let watch = tokio::spawn(events);
        store
            .wait_until_ready()
            .await
            .map_err(|e| AgentError::Kubernetes(format!("watching PgInstance {name}: {e}")))?;
        Ok(Self {
            store,
            namespace: namespace.to_string(),
            name: name.to_string(),
            watch,
            changed,
        })
    }

    /// Returns at the next change of the orders (at once if one came since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn read(&self) -> Result<Orders> {
        let orders = orders_in(&self.store, &self.name).ok_or_else(|| {
            AgentError::Refused(format!(
                "PgInstance {}/{} does not exist (or this ServiceAccount may not watch it)",
                self.namespace, self.name
            ))
        })?;
        super::run::desired(&orders)?;
        Ok(orders)
    }

    /// Reads the orders as the watch has them at each call (for the members' vouching,
    /// which must not wait for the agent's loop).
    pub fn now(&self) -> super::peers::OrdersNow {
        let (store, name) = (self.store.clone(), self.name.clone());
        Box::new(move || orders_in(&store, &name))
    }

    /// Where the instance's certificates come from now (its cluster's `spec.tls`).
    pub fn tls(&self) -> Option<Sources> {
        let instance = instance_in(&self.store, &self.name)?;
        Some(Sources::of(
            &instance.spec.cluster,
            instance.spec.tls.as_ref(),
        ))
    }

    /// The conditions of the PgInstance's status as stored now.
    pub fn conditions(&self) -> Vec<Condition> {
        instance_in(&self.store, &self.name)
            .and_then(|i| i.status.clone())
            .map(|s| s.conditions)
            .unwrap_or_default()
    }

    /// `ready` and `role` of the PgInstance's status as the watch has them at each call.
    pub fn stored_status(&self) -> StoredStatus {
        let (store, name) = (self.store.clone(), self.name.clone());
        Box::new(move || {
            let status = instance_in(&store, &name)?.status.clone()?;
            Some((status.ready, status.role))
        })
    }

    /// The PgCluster the instance belongs to.
    pub fn cluster(&self) -> Option<String> {
        Some(instance_in(&self.store, &self.name)?.spec.cluster.clone())
    }

    /// The PgCluster the instance belongs to, with its uid (from the instance's controller
    /// reference), for the archive's owner record.
    pub fn cluster_identity(&self) -> Option<ClusterIdentity> {
        let instance = instance_in(&self.store, &self.name)?;
        let owner = instance
            .owner_references()
            .iter()
            .find(|o| o.kind == "PgCluster" && o.name == instance.spec.cluster)?;
        Some(ClusterIdentity {
            namespace: self.namespace.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
        })
    }
}

/// The cluster's `-superuser` and `-app` Secrets and the instance's certificate Secrets, kept
/// current by a watch of each (the instance's Role names exactly these), so that a password
/// or certificate changed there reaches Postgres without a restart. The mounted copies are
/// read at the pod's start.
pub struct SecretWatch {
    client: Client,
    namespace: String,
    seen: Arc<Mutex<SeenSecrets>>,
    superuser: String,
    app: String,
    tls: Option<Sources>,
    passwords: Vec<JoinHandle<()>>,
    certificates: Vec<JoinHandle<()>>,
    /// The password Secrets of `spec.roles`, by name.
    roles: BTreeMap<String, JoinHandle<()>>,
}

/// Secret name → its data.
type SeenSecrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.passwords.iter().for_each(JoinHandle::abort);
        self.certificates.iter().for_each(JoinHandle::abort);
        self.roles.values().for_each(JoinHandle::abort);
    }
}

impl SecretWatch {
    pub fn start(client: Client, namespace: &str, cluster: &str, tls: Option<Sources>) -> Self {
        let superuser = names::secret(cluster, SecretKind::Superuser);
        let app = names::secret(cluster, SecretKind::App);
        let mut watch = Self {
            client,
            namespace: namespace.to_string(),
            seen: Arc::default(),
            superuser: superuser.clone(),
            app: app.clone(),
            tls: None,
            passwords: Vec::new(),
            certificates: Vec::new(),
            roles: BTreeMap::new(),
        };
        watch.passwords = [superuser, app]
            .into_iter()
            .map(|n| watch.watch(n))
            .collect();
        watch.follow_tls(tls);
        watch
    }

    /// Watches the certificates of `tls` from now on (the cluster's `spec.tls` changed: the
    /// instance's Role names the new Secrets).
    pub fn follow_tls(&mut self, tls: Option<Sources>) {
        if tls == self.tls {
            return;
        }
        self.certificates.drain(..).for_each(|w| w.abort());
        let names = tls.iter().flat_map(Sources::names).collect::<Vec<_>>();
        self.certificates = names.into_iter().map(|name| self.watch(name)).collect();
        self.tls = tls;
    }

    fn watch(&self, name: String) -> JoinHandle<()> {
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let seen = self.seen.clone();
        let events = watcher(api, config)
            .backoff(crate::k8s::watch::backoff())
            .applied_objects()
            .for_each(move |secret| {
                if let Ok(secret) = secret {
                    let data = secret.data.unwrap_or_default();
                    let data = data.into_iter().map(|(k, v)| (k, v.0)).collect();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.insert(name.clone(), data);
                }
                async {}
            });
        tokio::spawn(events)
    }

    fn text(&self, secret: &str, key: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = seen.get(secret)?.get(key)?;
        String::from_utf8(bytes.clone()).ok()
    }

    /// A Secret's password as the mounted copy is read: without a trailing line break, and
    /// never empty.
    fn password(&self, secret: &str) -> Option<String> {
        let text = self.text(secret, "password")?;
        let text = text.trim_end_matches(['\n', '\r']);
        (!text.is_empty()).then(|| text.to_string())
    }

    /// The superuser's and the application's passwords, once the watch has seen them.
    pub fn passwords(&self) -> (Option<String>, Option<String>) {
        (self.password(&self.superuser), self.password(&self.app))
    }

    /// The certificates, once the watch has seen every Secret they are in.
    pub fn tls(&self) -> Option<Material> {
        Material::read(self.tls.as_ref()?, |secret, key| self.text(secret, key))
    }

    /// Watches the password Secrets of `managed`'s roles from now on (the instance's Role
    /// names them), and no others.
    pub fn follow_roles(&mut self, managed: Option<&ManagedSpec>) {
        let wanted: BTreeSet<String> = managed
            .iter()
            .flat_map(|m| m.roles.iter())
            .filter_map(|r| Some(r.password_secret.as_ref()?.name.clone()))
            .collect();
        self.roles.retain(|name, watch| {
            let keep = wanted.contains(name);
            if !keep {
                watch.abort();
            }
            keep
        });
        for name in wanted {
            if !self.roles.contains_key(&name) {
                let watch = self.watch(name.clone());
                self.roles.insert(name, watch);
            }
        }
    }

    /// The password of each present role that has a password Secret.
    pub fn role_passwords(&self, managed: &ManagedSpec) -> BTreeMap<String, Password> {
        managed
            .roles
            .iter()
            .filter(|r| r.is_present())
            .filter_map(|role| {
                let secret = &role.password_secret.as_ref()?.name;
                let password = match self.password(secret) {
                    Some(password) => Password::Given {
                        username: self.text(secret, "username"),
                        password: super::Secret::new(password),
                    },
                    None => Password::Missing(format!(
                        "waiting for the Secret {secret} with a non-empty password key"
                    )),
                };
                Some((role.name.clone(), password))
            })
            .collect()
    }
}

/// What of its orders the agent has carried out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The highest restart order carried out.
    pub restarted: i64,
    /// The generation of the orders whose configuration is in force.
    pub config_generation: Option<i64>,
    /// The backup ordered last, and how it went.
    pub backup: Option<InstanceBackup>,
    /// The last time the primary Lease went unrenewed while this agent served on.
    pub lease_outage: Option<LeaseOutage>,
    /// How the roles and databases fared (the primary only).
    pub managed: Option<ManagedStatus>,
}

/// Writes the agent's observations to its PgInstance's status when they change.
pub struct StatusWriter {
    api: Api<PgInstance>,
    name: String,
    endpoint: Endpoint,
    /// What was written last, and when.
    last: Mutex<Option<(serde_json::Value, std::time::Instant)>>,
    /// The conditions as last written (at the start, as the PgInstance had them).
    conditions: Mutex<Vec<Condition>>,
    /// `ready` and `role` as the PgInstance has them now (the orders' watch).
    stored: StoredStatus,
}

/// `ready` and `role` of the PgInstance's status as stored now, if it has one.
pub type StoredStatus = Box<dyn Fn() -> Option<(bool, Option<InstanceRole>)> + Send + Sync>;

/// When the agent writes its status again with nothing of note changed: WAL positions that
/// moved at most every [`POSITIONS_EVERY`] (under writes they change every second; every
/// decision that needs them fresh asks the agents directly), `ready` or `role` that someone
/// else changed (the instance controller sets `ready` false while the pod is not ready) at
/// most every [`REPAIR_EVERY`], and everything again every [`REWRITE_EVERY`]. An idle
/// instance thus costs the API server a write a minute, not one every five seconds.
const POSITIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
const REPAIR_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const REWRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `fields` are written now, after `last` was written `ago`; `stored_agrees`: the
/// PgInstance as watched still has the `ready` and `role` written last.
fn due(
    last: Option<(&serde_json::Value, std::time::Duration)>,
    fields: &serde_json::Value,
    stored_agrees: bool,
) -> bool {
    let Some((last, ago)) = last else {
        return true;
    };
    settled(last) != settled(fields)
        || (!stored_agrees && ago >= REPAIR_EVERY)
        || (last != fields && ago >= POSITIONS_EVERY)
        || ago >= REWRITE_EVERY
}

/// Status fields that change with every write on the primary.
const WAL_POSITIONS: [&str; 3] = ["currentLsn", "receivedLsn", "lagBytes"];

/// `fields` without the WAL positions.
fn settled(fields: &serde_json::Value) -> serde_json::Value {
    let mut fields = fields.clone();
    if let Some(map) = fields.as_object_mut() {
        for key in WAL_POSITIONS {
            map.remove(key);
        }
    }
    fields
}

/// `ConfigInvalid`: True while Postgres refuses the ordered configuration (and runs on the
/// last one it loaded), with its messages.
/// Its `lastTransitionTime` is the one in `previous` (what the PgInstance says now, also
/// across restarts of the agent) while the status is the same.
fn config_condition(config: &ConfigState, previous: &[Condition]) -> Condition {
    let (refused, reason, message) = match &config.refused {
        Some(why) => (true, "PostgresRefused", why.clone()),
        None => (
            false,
            "Loaded",
            "Postgres runs on the ordered configuration".to_string(),
        ),
    };
    condition(
        previous,
        "ConfigInvalid",
        refused,
        reason,
        message,
        None,
        &Time(config.since),
    )
}

impl StatusWriter {
    /// `conditions` are the PgInstance's as the agent finds them at its start.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        endpoint: Endpoint,
        conditions: Vec<Condition>,
        stored: StoredStatus,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            endpoint,
            last: Mutex::new(None),
            conditions: Mutex::new(conditions),
            stored,
        }
    }

    /// The status fields the agent owns, from a status report.
    fn fields(&self, status: &Status, applied: &Applied) -> serde_json::Value {
        let server = status.server.as_ref();
        json!({
            "role": status.role,
            "ready": status.ready,
            "endpoint": self.endpoint,
            "timeline": server.and_then(|s| s.timeline),
            "systemIdentifier": server.map(|s| &s.system_identifier),
            "currentLsn": server.and_then(|s| s.current_lsn.as_ref().or(s.replayed_lsn.as_ref())),
            "receivedLsn": server.and_then(|s| s.received_lsn.as_ref()),
            "lagBytes": server.and_then(|s| s.lag_bytes),
            "streamedFrom": status.streamed_from,
            "crashLoop": status.postmaster.crash_loop,
            "pendingRestart": server.is_some_and(|s| !s.pending_restart.is_empty()),
            "restarted": applied.restarted,
            "configGeneration": applied.config_generation,
            "archiver": server.and_then(|s| s.archiver.as_ref()).map(|a| json!({
                "lastArchivedWal": a.last_archived_wal,
                "lastArchivedAt": a.last_archived_at,
                "lastFailedWal": a.last_failed_wal,
                "lastFailedAt": a.last_failed_at,
                "failedCount": a.failed_count,
                "pending": a.pending,
                "lastError": a.last_error,
                "foreignOwner": a.foreign_owner,
            })),
            "backup": applied.backup,
            "lastLeaseOutage": applied.lease_outage,
            "managed": applied.managed,
            "conditions": [config_condition(&status.config, &self.conditions.lock().unwrap_or_else(|e| e.into_inner()))],
            "passwordsSetAt": status.passwords_set_at.map(Time),
        })
    }

    pub async fn publish(&self, status: &Status, applied: &Applied) -> Result<()> {
        let mut fields = self.fields(status, applied);
        // Absent rather than null: a field the agent stops reporting is removed.
        if let Some(map) = fields.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        let written = |key: &str| fields.get(key).cloned().unwrap_or_default();
        let stored_agrees = (self.stored)().is_none_or(|(ready, role)| {
            written("ready") == json!(ready) && written("role") == json!(role)
        });
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let last = last.as_ref().map(|(last, at)| (last, at.elapsed()));
        if !due(last, &fields, stored_agrees) {
            return Ok(());
        }
        apply_status(&self.api, &self.name, FIELD_MANAGER, &fields)
            .await
            .map_err(api_error(format!(
                "writing the status of PgInstance {}",
                self.name
            )))?;
        if let Some(written) = fields
            .get("conditions")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
        {
            *self.conditions.lock().unwrap_or_else(|e| e.into_inner()) = written;
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((fields, std::time::Instant::now()));
        Ok(())
    }

    /// Writes from a task of its own, so that an API server that is slow or away never holds
    /// up the agent's loop (restarting Postgres, following orders): the loop hands over its
    /// newest observations and goes on; the task writes the newest it has. A write that hangs
    /// past [`WRITE_PATIENCE`] (a partition drops packets instead of refusing them) is given
    /// up and the newest tried again, on a fresh connection.
    pub fn spawn(self) -> tokio::sync::watch::Sender<Option<(Status, Applied)>> {
        let (tx, mut rx) = tokio::sync::watch::channel(None::<(Status, Applied)>);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some((status, applied)) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let written =
                    tokio::time::timeout(WRITE_PATIENCE, self.publish(&status, &applied)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "status not written; retrying"),
                    Err(_) => tracing::warn!("writing the status timed out; retrying"),
                }
            }
        });
        tx
    }
}

/// How long one status write may take before it is given up.
const WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn an_idle_instance_writes_its_status_rarely_and_a_change_at_once() {
        let s = std::time::Duration::from_secs;
        let idle = json!({"role": "replica", "ready": true, "currentLsn": "0/3000000"});
        let moved = json!({"role": "replica", "ready": true, "currentLsn": "0/3000100"});
        let unready = json!({"role": "replica", "ready": false, "currentLsn": "0/3000000"});
        assert!(due(None, &idle, true));
        // Nothing new: written again only after a minute.
        assert!(!due(Some((&idle, s(1))), &idle, true));
        assert!(!due(Some((&idle, s(59))), &idle, true));
        assert!(due(Some((&idle, s(60))), &idle, true));
        // WAL positions alone: every 30 s.
        assert!(!due(Some((&idle, s(29))), &moved, true));
        assert!(due(Some((&idle, s(30))), &moved, true));
        // Anything else at once.
        assert!(due(Some((&idle, s(0))), &unready, true));
        // `ready` changed under the agent: put back after 5 s, not in a tight loop.
        assert!(!due(Some((&idle, s(4))), &idle, false));
        assert!(due(Some((&idle, s(5))), &idle, false));
    }

    #[test]
    fn a_restarted_agent_keeps_the_transition_time_of_an_unchanged_condition() {
        let then = Timestamp::from_second(1_000).unwrap();
        let now = Timestamp::from_second(2_000).unwrap();
        let loaded = ConfigState {
            refused: None,
            since: now,
        };
        let before = config_condition(
            &ConfigState {
                refused: None,
                since: then,
            },
            &[],
        );
        assert_eq!(before.last_transition_time, Time(then));
        // The agent restarted (its state says `now`); the status it finds is unchanged.
        let kept = config_condition(&loaded, std::slice::from_ref(&before));
        assert_eq!(kept.last_transition_time, Time(then));
        // A refusal is a transition.
        let refused = ConfigState {
            refused: Some("work_mem: invalid value".into()),
            since: now,
        };
        let moved = config_condition(&refused, &[kept]);
        assert_eq!(moved.status, "True");
        assert_eq!(moved.last_transition_time, Time(now));
    }
}
