//! The objects a cluster should have: PgInstances, Services, Secrets and a ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, Secret, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use thiserror::Error;

use crate::api::common::S3Spec;
use crate::api::instance::Peer;
use crate::api::managed::{ManagedDatabase, ManagedSpec, SecretRef};
use crate::api::{PgInstance, PgInstanceSpec};
use crate::plan::agent::{Endpoint, OrderedRole, PostgresConfig};
use crate::plan::names::{self, SecretKind, ServiceKind};
use crate::plan::validation::ValidCluster;
use crate::plan::{config, lease, tls};

/// Why the children of a cluster cannot be computed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("metadata.uid is missing: children need an owner reference to the PgCluster")]
    NoUid,
}

/// Passwords freshly drawn by the caller. The plan uses one only where no Secret holds a
/// password yet, so a reconcile never changes a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshPasswords {
    pub superuser: String,
    pub app: String,
    pub replication: String,
    /// One for each role of `spec.roles` with `generatePassword`, by name.
    pub roles: BTreeMap<String, String>,
}

/// The primary as the cluster controller knows it: the instance it chose, and where that
/// instance serves once it does (replicas are told to follow only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub name: String,
    pub endpoint: Option<Endpoint>,
    /// Instances told to fence: a lost primary until its successor serves.
    pub fenced: Vec<String>,
    /// Every instance whose pod has an address, for the members' promises to the primary.
    pub peers: Vec<Peer>,
}

/// Everything a cluster's reconcile applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub instances: Vec<PgInstance>,
    pub services: Vec<Service>,
    pub secrets: Vec<Secret>,
    pub config_map: ConfigMap,
    /// With more than one instance the primary's pod may not be evicted (a drain moves the
    /// primary first); with more than one replica, only one replica's at a time.
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// Each instance pod's identity: a ServiceAccount whose Role lets its agent read its own
    /// orders, write its own status and renew the primary Lease, and nothing else.
    pub identities: Vec<Identity>,
}

/// One instance's ServiceAccount, Role and RoleBinding, all named like the instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

/// The image used when the spec names none.
pub fn default_image(postgres_version: i32) -> String {
    format!("pgha/postgres:{postgres_version}")
}

/// What a rollout (`plan::rollout`) keeps for one instance from one reconcile to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rolling {
    /// `spec.restart`.
    pub restart: i64,
    /// The image the instance keeps until its turn comes; None takes the cluster's.
    pub image: Option<String>,
}

/// Computes the children of a valid cluster. `existing` maps the names of the cluster's
/// Secrets that already exist to their data; `rolling` what each instance keeps while a
/// rollout goes through.
pub fn children(
    valid: &ValidCluster<'_>,
    existing: &BTreeMap<String, BTreeMap<String, ByteString>>,
    fresh: &FreshPasswords,
    primary: &Primary,
    rolling: &BTreeMap<String, Rolling>,
    databases: &[ManagedDatabase],
) -> Result<Children, PlanError> {
    let owner = valid
        .cluster
        .controller_owner_ref(&())
        .ok_or(PlanError::NoUid)?;
    let managed = managed(valid, databases);
    Ok(Children {
        instances: instances(valid, &owner, primary, rolling, managed),
        services: ServiceKind::ALL
            .iter()
            .map(|kind| service(valid, &owner, *kind))
            .collect(),
        secrets: secrets(valid, &owner, existing, fresh),
        config_map: config_map(valid, &owner),
        disruption_budgets: disruption_budgets(valid, &owner),
        identities: (1..=valid.cluster.spec.instances)
            .map(|ordinal| identity(valid, &owner, &names::instance(valid.name, ordinal)))
            .collect(),
    })
}

fn meta(
    valid: &ValidCluster<'_>,
    owner: &OwnerReference,
    name: String,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(valid.namespace.to_string()),
        labels: Some(names::labels(valid.name, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// What the primary keeps in Postgres: `spec.roles` (a generated password's Secret named)
/// and the PgDatabases; None when there is nothing.
fn managed(valid: &ValidCluster<'_>, databases: &[ManagedDatabase]) -> Option<ManagedSpec> {
    let roles: Vec<_> = valid
        .cluster
        .spec
        .roles
        .iter()
        .map(|role| {
            let mut role = role.clone();
            if role.generate_password {
                role.password_secret = Some(SecretRef {
                    name: names::role_secret(valid.name, &role.name),
                });
            }
            role
        })
        .collect();
    (!roles.is_empty() || !databases.is_empty()).then(|| ManagedSpec {
        roles,
        databases: databases.to_vec(),
    })
}

fn instances(
    valid: &ValidCluster<'_>,
    owner: &OwnerReference,
    primary: &Primary,
    rolling: &BTreeMap<String, Rolling>,
    managed: Option<ManagedSpec>,
) -> Vec<PgInstance> {
    let spec = &valid.cluster.spec;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| default_image(spec.postgres_version));
    let all: Vec<String> = (1..=spec.instances)
        .map(|ordinal| names::instance(valid.name, ordinal))
        .collect();
    (1..=spec.instances)
        .map(|ordinal| {
            let name = names::instance(valid.name, ordinal);
            let is_primary = name == primary.name;
            let fenced = primary.fenced.contains(&name);
            let kept = rolling.get(&name).cloned().unwrap_or_default();
            let config = PostgresConfig {
                parameters: spec.postgresql.parameters.clone(),
                pg_hba: spec.postgresql.pg_hba.clone(),
                synchronous_standby_names: config::synchronous_standby_names(valid.name, spec),
                members: all.iter().filter(|m| **m != name).cloned().collect(),
            };
            let mut metadata = meta(valid, owner, name.clone(), "instance");
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(names::LABEL_PG_INSTANCE.to_string(), name);
            PgInstance {
                metadata,
                spec: PgInstanceSpec {
                    cluster: valid.name.to_string(),
                    ordinal,
                    postgres_version: spec.postgres_version,
                    image: kept.image.unwrap_or_else(|| image.clone()),
                    storage: spec.storage.clone(),
                    resources: spec.resources.clone(),
                    role: if is_primary {
                        OrderedRole::Primary
                    } else {
                        OrderedRole::Replica
                    },
                    primary: (!is_primary).then(|| primary.endpoint.clone()).flatten(),
                    fenced,
                    config,
                    restart: kept.restart,
                    lease: Some(lease::primary_lease(valid.name, spec)),
                    archive: spec
                        .backup
                        .as_ref()
                        .map(|backup| archive_location(valid, &backup.s3)),
                    // The first instance is the first primary; the others clone it.
                    recovery: (ordinal == 1)
                        .then(|| spec.bootstrap.recovery.clone())
                        .flatten(),
                    backup: None,
                    placement: spec.placement,
                    tls: spec.tls.clone(),
                    peers: primary.peers.clone(),
                    managed: managed.clone(),
                },
                status: None,
            }
        })
        .collect()
}

/// The cluster's object store with its path filled in: `<namespace>/<cluster>` by default,
/// so two clusters never share an archive unless told to.
pub fn archive_location(valid: &ValidCluster<'_>, s3: &S3Spec) -> S3Spec {
    S3Spec {
        path: Some(
            s3.path
                .clone()
                .unwrap_or_else(|| format!("{}/{}", valid.namespace, valid.name)),
        ),
        ..s3.clone()
    }
}

/// `s3://<bucket>/<path>` of an object store with its path filled in, as the archive commands
/// name it (`Store::location`): the key PgBackups and retention match archives by.
pub fn archive_url(s3: &S3Spec) -> String {
    let path = s3.path.as_deref().unwrap_or_default().trim_matches('/');
    format!("s3://{}/{path}", s3.bucket)
        .trim_end_matches('/')
        .to_string()
}

fn disruption_budgets(
    valid: &ValidCluster<'_>,
    owner: &OwnerReference,
) -> Vec<PodDisruptionBudget> {
    if valid.cluster.spec.instances < 2 {
        // Nothing to move the primary to: a drain takes it, as it would without us.
        return Vec::new();
    }
    let budget = |role: &str, min_available: i32| {
        let selector = BTreeMap::from([
            (names::LABEL_CLUSTER.to_string(), valid.name.to_string()),
            (names::LABEL_ROLE.to_string(), role.to_string()),
        ]);
        PodDisruptionBudget {
            metadata: meta(
                valid,
                owner,
                format!("{}-{role}", valid.name),
                "disruption-budget",
            ),
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels: Some(selector),
                    ..LabelSelector::default()
                }),
                min_available: Some(IntOrString::Int(min_available)),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        }
    };
    // Counts, not maxUnavailable: the disruption controller can only size a budget in
    // percentages or maxUnavailable for pods of a workload with a scale subresource, and ours
    // belong to PgInstances.
    let replicas = valid.cluster.spec.instances - 1;
    let mut budgets = vec![budget(names::ROLE_PRIMARY, 1)];
    if replicas > 1 {
        budgets.push(budget(names::ROLE_REPLICA, replicas - 1));
    }
    budgets
}

fn service(valid: &ValidCluster<'_>, owner: &OwnerReference, kind: ServiceKind) -> Service {
    let mut selector = BTreeMap::from([(names::LABEL_CLUSTER.to_string(), valid.name.to_string())]);
    if let Some(role) = kind.role() {
        selector.insert(names::LABEL_ROLE.to_string(), role.to_string());
    }
    Service {
        metadata: meta(valid, owner, names::service(valid.name, kind), "service"),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: names::POSTGRES_PORT,
                target_port: Some(IntOrString::Int(names::POSTGRES_PORT)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn secrets(
    valid: &ValidCluster<'_>,
    owner: &OwnerReference,
    existing: &BTreeMap<String, BTreeMap<String, ByteString>>,
    fresh: &FreshPasswords,
) -> Vec<Secret> {
    let bootstrap = &valid.cluster.spec.bootstrap;
    let app_database = bootstrap
        .initdb
        .as_ref()
        .map(|i| i.database.as_str())
        .or(bootstrap
            .recovery
            .as_ref()
            .and_then(|r| r.database.as_deref()))
        .unwrap_or("postgres");
    let kept = |name: &str, fresh: &String| {
        existing
            .get(name)
            .and_then(|data| data.get("password"))
            .and_then(|p| String::from_utf8(p.0.clone()).ok())
            .unwrap_or_else(|| fresh.clone())
    };
    let roles = valid
        .cluster
        .spec
        .roles
        .iter()
        .filter(|r| r.generate_password && r.is_present())
        .filter_map(|role| {
            let name = names::role_secret(valid.name, &role.name);
            let password = kept(&name, fresh.roles.get(&role.name)?);
            Some(Secret {
                metadata: meta(valid, owner, name, "credentials"),
                type_: Some("kubernetes.io/basic-auth".into()),
                data: Some(credentials(
                    valid,
                    &role.name,
                    &password,
                    Some(app_database),
                )),
                ..Secret::default()
            })
        });
    SecretKind::ALL
        .iter()
        .filter_map(|kind| {
            let name = names::secret(valid.name, *kind);
            let (user, fresh_password, database) = match kind {
                SecretKind::Superuser => (names::SUPERUSER, &fresh.superuser, None),
                SecretKind::Replication => (names::REPLICATION_USER, &fresh.replication, None),
                // A restored cluster's application role comes with its data: it gets a Secret
                // (and a new password) only when the spec names it.
                SecretKind::App => match (&bootstrap.initdb, &bootstrap.recovery) {
                    (Some(initdb), _) => (
                        initdb.owner.as_str(),
                        &fresh.app,
                        Some(initdb.database.as_str()),
                    ),
                    (None, Some(recovery)) => (
                        recovery.owner.as_deref()?,
                        &fresh.app,
                        Some(recovery.database.as_deref()?),
                    ),
                    (None, None) => return None,
                },
            };
            let password = kept(&name, fresh_password);
            let data = credentials(valid, user, &password, database);
            Some(Secret {
                metadata: meta(valid, owner, name, "credentials"),
                type_: Some("kubernetes.io/basic-auth".into()),
                data: Some(data),
                ..Secret::default()
            })
        })
        .chain(roles)
        .collect()
}

/// The keys of a credentials Secret: `username`, `password`, and for the application database
/// also where to connect (`host`, `port`, `dbname`, `uri`).
fn credentials(
    valid: &ValidCluster<'_>,
    user: &str,
    password: &str,
    database: Option<&str>,
) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        ("username".to_string(), user.to_string()),
        ("password".to_string(), password.to_string()),
    ]);
    if let Some(database) = database {
        let host = format!(
            "{}.{}",
            names::service(valid.name, ServiceKind::ReadWrite),
            valid.namespace
        );
        let port = names::POSTGRES_PORT;
        data.insert(
            "uri".into(),
            format!(
                "postgresql://{user}:{}@{host}:{port}/{database}?sslmode=verify-full",
                percent_encode(password)
            ),
        );
        data.insert("host".into(), host);
        data.insert("port".into(), port.to_string());
        data.insert("dbname".into(), database.to_string());
    }
    data.into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect()
}

/// Percent-encodes everything but unreserved URI characters, so any password fits in a URI.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn identity(valid: &ValidCluster<'_>, owner: &OwnerReference, instance: &str) -> Identity {
    let name = names::instance_account(instance);
    let rule = |group: &str, resources: &str, named: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resources.into()]),
        resource_names: Some(vec![named.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    // Its own PgInstance only (a list or watch must then select it by metadata.name), the
    // cluster's primary Lease, which it may renew but never create or delete, the two
    // Secrets whose passwords it sets when they change and the certificates it reloads when
    // they change (never the replication password Secret, the CA's key, nor any other).
    let mut secrets: Vec<String> = [SecretKind::Superuser, SecretKind::App]
        .iter()
        .map(|kind| names::secret(valid.name, *kind))
        .collect();
    secrets.extend(tls::Sources::of(valid.name, valid.cluster.spec.tls.as_ref()).names());
    // The password Secrets of `spec.roles`, whose passwords the primary sets.
    for role in managed(valid, &[]).iter().flat_map(|m| m.roles.iter()) {
        if let Some(secret) = &role.password_secret
            && !secrets.contains(&secret.name)
        {
            secrets.push(secret.name.clone());
        }
    }
    let rules = vec![
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(secrets),
            verbs: ["get", "list", "watch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        },
        rule(
            "pgha.dev",
            "pginstances",
            instance,
            &["get", "list", "watch"],
        ),
        rule(
            "pgha.dev",
            "pginstances/status",
            instance,
            &["get", "patch"],
        ),
        rule(
            "coordination.k8s.io",
            "leases",
            &names::primary_lease(valid.name),
            &["get", "update"],
        ),
    ];
    Identity {
        service_account: ServiceAccount {
            metadata: meta(valid, owner, name.clone(), "instance"),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(valid, owner, name.clone(), "instance"),
            rules: Some(rules),
        },
        role_binding: RoleBinding {
            metadata: meta(valid, owner, name.clone(), "instance"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name,
                namespace: Some(valid.namespace.to_string()),
                ..Subject::default()
            }]),
        },
    }
}

fn config_map(valid: &ValidCluster<'_>, owner: &OwnerReference) -> ConfigMap {
    let spec = &valid.cluster.spec;
    let mut operator = BTreeMap::new();
    operator.insert(
        "synchronous_standby_names".to_string(),
        config::synchronous_standby_names(valid.name, spec),
    );
    let data = BTreeMap::from([
        ("operator.conf".to_string(), config::render_conf(&operator)),
        (
            "user.conf".to_string(),
            config::render_conf(&valid.parameters),
        ),
        ("pg_hba.conf".to_string(), valid.pg_hba.clone()),
    ]);
    ConfigMap {
        metadata: meta(valid, owner, names::config_map(valid.name), "config"),
        data: Some(data),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PgCluster;
    use crate::api::cluster::SynchronousMode;
    use crate::api::fixtures::cluster;
    use crate::plan::validation::validate;
    use proptest::prelude::*;

    fn fresh() -> FreshPasswords {
        FreshPasswords {
            superuser: "su-new".into(),
            app: "app-new".into(),
            replication: "repl-new".into(),
            roles: BTreeMap::from([("analyst".to_string(), "analyst-new".to_string())]),
        }
    }

    fn first_primary() -> Primary {
        Primary {
            name: "orders-1".into(),
            endpoint: None,
            fenced: Vec::new(),
            peers: Vec::new(),
        }
    }

    fn plan(c: &PgCluster, existing: &BTreeMap<String, BTreeMap<String, ByteString>>) -> Children {
        let valid = validate(c).expect("valid");
        children(
            &valid,
            existing,
            &fresh(),
            &first_primary(),
            &BTreeMap::new(),
            &[],
        )
        .expect("plan")
    }

    fn secret_value(children: &Children, name: &str, key: &str) -> String {
        let secret = children
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .expect(name);
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn instances_follow_the_spec() {
        let c = cluster(
            "orders",
            serde_json::json!({"instances": 2, "postgresVersion": 16,
            "storage": {"size": "20Gi", "storageClassName": "fast"},
            "resources": {"requests": {"cpu": "1"}}}),
        );
        let out = plan(&c, &BTreeMap::new());
        let names: Vec<_> = out
            .instances
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["orders-1", "orders-2"]);
        let second = &out.instances[1];
        assert_eq!(second.spec.ordinal, 2);
        assert_eq!(second.spec.cluster, "orders");
        assert_eq!(second.spec.postgres_version, 16);
        assert_eq!(second.spec.image, "pgha/postgres:16");
        assert_eq!(second.spec.storage, c.spec.storage);
        assert_eq!(second.spec.resources, c.spec.resources);
        let labels = second.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[names::LABEL_CLUSTER], "orders");
        assert_eq!(labels[names::LABEL_PG_INSTANCE], "orders-2");
        assert_eq!(labels[names::LABEL_MANAGED_BY], "pgha");
    }

    #[test]
    fn the_chosen_primary_leads_and_replicas_follow_once_it_serves() {
        let c = cluster(
            "orders",
            serde_json::json!({"instances": 3, "replication": {"synchronous": {"mode": "quorum", "number": 1}},
            "postgresql": {"parameters": {"work_mem": "8MB"}}}),
        );
        let valid = validate(&c).unwrap();
        let endpoint = Endpoint {
            host: "127.1.0.9".into(),
            port: 5432,
        };
        let mut primary = Primary {
            name: "orders-2".into(),
            endpoint: None,
            fenced: vec!["orders-1".into()],
            peers: Vec::new(),
        };
        let waiting = children(
            &valid,
            &BTreeMap::new(),
            &fresh(),
            &primary,
            &BTreeMap::new(),
            &[],
        )
        .unwrap();
        assert!(waiting.instances.iter().all(|i| i.spec.primary.is_none()));
        primary.endpoint = Some(endpoint.clone());
        let kept = Rolling {
            restart: 2,
            image: Some("pgha/postgres:old".into()),
        };
        let rolling = BTreeMap::from([("orders-3".to_string(), kept)]);
        let out = children(&valid, &BTreeMap::new(), &fresh(), &primary, &rolling, &[]).unwrap();
        let counters: Vec<i64> = out.instances.iter().map(|i| i.spec.restart).collect();
        assert_eq!(counters, [0, 0, 2]);
        let images: Vec<&str> = out
            .instances
            .iter()
            .map(|i| i.spec.image.as_str())
            .collect();
        assert_eq!(
            images,
            ["pgha/postgres:15", "pgha/postgres:15", "pgha/postgres:old"]
        );
        let roles: Vec<_> = out.instances.iter().map(|i| i.spec.role).collect();
        use OrderedRole::{Primary as P, Replica as R};
        assert_eq!(roles, [R, P, R]);
        assert_eq!(out.instances[0].spec.primary, Some(endpoint.clone()));
        assert_eq!(out.instances[1].spec.primary, None);
        let config = &out.instances[0].spec.config;
        assert_eq!(config.members, ["orders-2", "orders-3"]);
        assert_eq!(config.parameters["work_mem"], "8MB");
        assert_eq!(
            config.synchronous_standby_names,
            "ANY 1 (\"orders-1\", \"orders-2\", \"orders-3\")"
        );
        // The lost primary is told to fence; every instance knows the primary Lease.
        let fenced: Vec<bool> = out.instances.iter().map(|i| i.spec.fenced).collect();
        assert_eq!(fenced, [true, false, false]);
        assert!(
            out.instances.iter().all(|i| {
                i.spec.lease.as_ref().map(|l| l.name.as_str()) == Some("orders-primary")
            })
        );
    }

    #[test]
    fn image_overrides_the_default() {
        let c = cluster(
            "orders",
            serde_json::json!({"image": "registry.example/pg:15.8"}),
        );
        assert!(
            plan(&c, &BTreeMap::new())
                .instances
                .iter()
                .all(|i| i.spec.image == "registry.example/pg:15.8")
        );
    }

    #[test]
    fn every_child_is_owned_by_the_cluster_and_namespaced() {
        let out = plan(&cluster("orders", serde_json::json!({})), &BTreeMap::new());
        let metas = out
            .instances
            .iter()
            .map(|i| &i.metadata)
            .chain(out.services.iter().map(|s| &s.metadata))
            .chain(out.secrets.iter().map(|s| &s.metadata))
            .chain([&out.config_map.metadata]);
        for meta in metas {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("PgCluster", "orders")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
        }
    }

    #[test]
    fn services_select_roles() {
        let out = plan(&cluster("orders", serde_json::json!({})), &BTreeMap::new());
        let selectors: Vec<_> = out
            .services
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap(),
                    s.spec.as_ref().unwrap().selector.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(selectors[0].0, "orders-rw");
        assert_eq!(selectors[0].1[names::LABEL_ROLE], "primary");
        assert_eq!(selectors[1].0, "orders-ro");
        assert_eq!(selectors[1].1[names::LABEL_ROLE], "replica");
        assert_eq!(selectors[2].0, "orders-r");
        assert!(!selectors[2].1.contains_key(names::LABEL_ROLE));
        assert!(
            selectors
                .iter()
                .all(|(_, s)| s[names::LABEL_CLUSTER] == "orders")
        );
        assert!(
            out.services
                .iter()
                .all(|s| s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port == 5432)
        );
    }

    #[test]
    fn new_secrets_take_fresh_passwords() {
        let c = cluster(
            "orders",
            serde_json::json!({"bootstrap": {"initdb": {"database": "shop", "owner": "clerk"}}}),
        );
        let out = plan(&c, &BTreeMap::new());
        assert_eq!(secret_value(&out, "orders-superuser", "password"), "su-new");
        assert_eq!(
            secret_value(&out, "orders-superuser", "username"),
            "postgres"
        );
        assert_eq!(
            secret_value(&out, "orders-replication", "username"),
            "streaming_replica"
        );
        assert_eq!(secret_value(&out, "orders-app", "username"), "clerk");
        assert_eq!(secret_value(&out, "orders-app", "dbname"), "shop");
        assert_eq!(secret_value(&out, "orders-app", "host"), "orders-rw.shop");
        assert_eq!(
            secret_value(&out, "orders-app", "uri"),
            "postgresql://clerk:app-new@orders-rw.shop:5432/shop?sslmode=verify-full"
        );
    }

    #[test]
    fn existing_passwords_are_never_regenerated() {
        let c = cluster("orders", serde_json::json!({}));
        let existing = BTreeMap::from([
            (
                "orders-app".to_string(),
                BTreeMap::from([("password".to_string(), ByteString(b"p@ss word".to_vec()))]),
            ),
            (
                "orders-superuser".to_string(),
                BTreeMap::from([("password".to_string(), ByteString(b"kept".to_vec()))]),
            ),
        ]);
        let out = plan(&c, &existing);
        assert_eq!(secret_value(&out, "orders-app", "password"), "p@ss word");
        assert_eq!(
            secret_value(&out, "orders-app", "uri"),
            "postgresql://app:p%40ss%20word@orders-rw.shop:5432/app?sslmode=verify-full"
        );
        assert_eq!(secret_value(&out, "orders-superuser", "password"), "kept");
        // The replication Secret does not exist yet, so it is the only one with a new password.
        assert_eq!(
            secret_value(&out, "orders-replication", "password"),
            "repl-new"
        );
    }

    #[test]
    fn a_restored_cluster_gets_an_app_secret_only_when_it_names_the_role() {
        let c = cluster(
            "copy",
            serde_json::json!({"bootstrap": {"recovery": {"source": {"s3": {
            "bucket": "b-1", "path": "shop/orders", "credentialsSecret": "c", "region": "us-east-1"}}}}}),
        );
        let out = plan(&c, &BTreeMap::new());
        let names: Vec<_> = out
            .secrets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["copy-superuser", "copy-replication"]);
        let named = cluster(
            "copy",
            serde_json::json!({"bootstrap": {"recovery": {"database": "orders", "owner": "shop",
            "source": {"s3": {"bucket": "b-1", "path": "shop/orders", "credentialsSecret": "c",
            "region": "us-east-1"}}}}}),
        );
        let out = plan(&named, &BTreeMap::new());
        assert_eq!(secret_value(&out, "copy-app", "username"), "shop");
        assert_eq!(secret_value(&out, "copy-app", "dbname"), "orders");
        // Only the first instance restores; the others clone it.
        let recovering: Vec<_> = out
            .instances
            .iter()
            .filter(|i| i.spec.recovery.is_some())
            .map(|i| i.spec.ordinal)
            .collect();
        assert_eq!(recovering, [1]);
    }

    #[test]
    fn config_map_renders_parameters_hba_and_synchronous_names() {
        let c = cluster(
            "orders",
            serde_json::json!({
                "postgresql": {"parameters": {"work_mem": "16MB", "max_connections": "300", "search_path": "'$user', public"},
                               "pgHba": ["host all all 10.0.0.0/8 scram-sha-256"]},
                "replication": {"synchronous": {"mode": "quorum", "number": 1}},
            }),
        );
        let data = plan(&c, &BTreeMap::new()).config_map.data.unwrap();
        let user = &data["user.conf"];
        assert!(user.contains("work_mem = '16MB'\n"));
        assert!(
            user.contains("max_connections = '300'\n"),
            "user value overrides the default"
        );
        assert!(!user.contains("max_connections = '100'"));
        assert!(
            user.contains("search_path = '''$user'', public'\n"),
            "quotes are escaped"
        );
        assert!(user.contains("wal_level = 'replica'\n"), "defaults stay");
        let hba: Vec<&str> = data["pg_hba.conf"].lines().collect();
        let user_rule = hba
            .iter()
            .position(|l| *l == "host all all 10.0.0.0/8 scram-sha-256")
            .unwrap();
        let replication = hba
            .iter()
            .position(|l| l.starts_with("hostssl replication streaming_replica"))
            .unwrap();
        assert!(
            replication < user_rule,
            "no user rule can shadow replication"
        );
        assert_eq!(hba.last(), Some(&"hostssl all all all scram-sha-256"));
        assert_eq!(
            data["operator.conf"],
            "synchronous_standby_names = 'ANY 1 (\"orders-1\", \"orders-2\", \"orders-3\")'\n"
        );
    }

    #[test]
    fn synchronous_modes() {
        for (mode, expected) in [
            (SynchronousMode::Off, ""),
            (
                SynchronousMode::Quorum,
                "ANY 2 (\"db-1\", \"db-2\", \"db-3\")",
            ),
            (
                SynchronousMode::Priority,
                "FIRST 2 (\"db-1\", \"db-2\", \"db-3\")",
            ),
        ] {
            let mut c = cluster("db", serde_json::json!({}));
            c.spec.replication.synchronous.mode = mode;
            c.spec.replication.synchronous.number = 2;
            assert_eq!(config::synchronous_standby_names("db", &c.spec), expected);
        }
    }

    #[test]
    fn disruption_budgets_hold_the_primary_and_all_but_one_replica() {
        let budgets = |instances: i32| {
            let c = cluster("db", serde_json::json!({"instances": instances}));
            plan(&c, &BTreeMap::new())
                .disruption_budgets
                .iter()
                .map(|b| {
                    let spec = b.spec.clone().unwrap();
                    let role =
                        spec.selector.unwrap().match_labels.unwrap()[names::LABEL_ROLE].clone();
                    (b.metadata.name.clone().unwrap(), role, spec.min_available)
                })
                .collect::<Vec<_>>()
        };
        assert!(
            budgets(1).is_empty(),
            "a lone primary cannot move: a drain takes it"
        );
        assert_eq!(
            budgets(2),
            [(
                "db-primary".into(),
                "primary".into(),
                Some(IntOrString::Int(1))
            )]
        );
        assert_eq!(
            budgets(5)[1],
            (
                "db-replica".into(),
                "replica".into(),
                Some(IntOrString::Int(3))
            )
        );
    }

    #[test]
    fn roles_get_their_secrets_and_the_agents_may_read_them() {
        let c = cluster(
            "orders",
            serde_json::json!({"roles": [
                {"name": "analyst", "generatePassword": true},
                {"name": "reader", "passwordSecret": {"name": "reader-pw"}},
                {"name": "nologin", "login": false},
            ]}),
        );
        let out = plan(&c, &BTreeMap::new());
        assert_eq!(secret_value(&out, "orders-analyst", "username"), "analyst");
        assert_eq!(
            secret_value(&out, "orders-analyst", "password"),
            "analyst-new"
        );
        assert!(
            secret_value(&out, "orders-analyst", "uri")
                .ends_with("@orders-rw.shop:5432/app?sslmode=verify-full")
        );
        // A Secret the user brings is never written.
        assert!(
            out.secrets
                .iter()
                .all(|s| s.metadata.name.as_deref() != Some("reader-pw"))
        );
        let managed = out.instances[0].spec.managed.clone().expect("managed");
        let secrets: Vec<Option<&str>> = managed
            .roles
            .iter()
            .map(|r| r.password_secret.as_ref().map(|s| s.name.as_str()))
            .collect();
        assert_eq!(secrets, [Some("orders-analyst"), Some("reader-pw"), None]);
        let readable = out.identities[0].role.rules.as_ref().unwrap()[0]
            .resource_names
            .clone()
            .unwrap();
        for name in ["orders-analyst", "reader-pw"] {
            assert!(readable.iter().any(|n| n == name), "{readable:?}");
        }
        // Nothing to keep: no orders for it.
        let bare = plan(&cluster("orders", serde_json::json!({})), &BTreeMap::new());
        assert!(bare.instances.iter().all(|i| i.spec.managed.is_none()));
    }

    #[test]
    fn a_cluster_without_uid_is_refused() {
        let mut c = cluster("orders", serde_json::json!({}));
        c.metadata.uid = None;
        let valid = validate(&c).expect("valid");
        assert_eq!(
            children(
                &valid,
                &BTreeMap::new(),
                &fresh(),
                &first_primary(),
                &BTreeMap::new(),
                &[]
            ),
            Err(PlanError::NoUid)
        );
    }

    /// A DNS-1123 label: what names of Services, Pods and label values must be.
    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    proptest! {
        #[test]
        fn names_are_dns_labels_and_planning_is_deterministic(
            name in "[a-z]([-a-z0-9]{0,48}[a-z0-9])?",
            instances in 1i32..=32,
        ) {
            let c = cluster(&name, serde_json::json!({"instances": instances}));
            let first = plan(&c, &BTreeMap::new());
            prop_assert_eq!(&first, &plan(&c, &BTreeMap::new()));
            prop_assert_eq!(first.instances.len(), instances as usize);
            let mut all_names: Vec<String> = first.instances.iter().map(|i| i.metadata.name.clone().unwrap()).collect();
            all_names.extend(first.services.iter().map(|s| s.metadata.name.clone().unwrap()));
            all_names.extend(first.secrets.iter().map(|s| s.metadata.name.clone().unwrap()));
            all_names.push(first.config_map.metadata.name.clone().unwrap());
            all_names.push(format!("{}-init", names::instance(&name, instances)));
            for n in &all_names {
                prop_assert!(is_dns_label(n), "{} is not a DNS-1123 label", n);
            }
            for instance in &first.instances {
                for value in instance.metadata.labels.as_ref().unwrap().values() {
                    prop_assert!(is_dns_label(value), "label value {} is not valid", value);
                }
            }
        }
    }
}
