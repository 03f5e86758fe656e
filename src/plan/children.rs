//! The objects a cluster should have: PgInstances, Services, Secrets and a ConfigMap.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use thiserror::Error;

use crate::api::validation::ValidCluster;
use crate::api::{PgInstance, PgInstanceSpec};
use crate::plan::config::{self, ConfigError};
use crate::plan::names::{self, SecretKind, ServiceKind};

/// Why the children of a cluster cannot be computed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("metadata.uid is missing: children need an owner reference to the PgCluster")]
    NoUid,
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// Passwords freshly drawn by the caller. The plan uses one only where no Secret holds a
/// password yet, so a reconcile never changes a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshPasswords {
    pub superuser: String,
    pub app: String,
    pub replication: String,
}

/// Everything a cluster's reconcile applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub instances: Vec<PgInstance>,
    pub services: Vec<Service>,
    pub secrets: Vec<Secret>,
    pub config_map: ConfigMap,
}

/// The image used when the spec names none.
pub fn default_image(postgres_version: i32) -> String {
    format!("pgha/postgres:{postgres_version}")
}

/// Computes the children of a valid cluster. `existing` maps the names of the cluster's
/// Secrets that already exist to their data.
pub fn children(
    valid: &ValidCluster<'_>,
    existing: &BTreeMap<String, BTreeMap<String, ByteString>>,
    fresh: &FreshPasswords,
) -> Result<Children, PlanError> {
    let owner = valid
        .cluster
        .controller_owner_ref(&())
        .ok_or(PlanError::NoUid)?;
    Ok(Children {
        instances: instances(valid, &owner),
        services: ServiceKind::ALL
            .iter()
            .map(|kind| service(valid, &owner, *kind))
            .collect(),
        secrets: secrets(valid, &owner, existing, fresh),
        config_map: config_map(valid, &owner)?,
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

fn instances(valid: &ValidCluster<'_>, owner: &OwnerReference) -> Vec<PgInstance> {
    let spec = &valid.cluster.spec;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| default_image(spec.postgres_version));
    (1..=spec.instances)
        .map(|ordinal| {
            let name = names::instance(valid.name, ordinal);
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
                    image: image.clone(),
                    storage: spec.storage.clone(),
                    resources: spec.resources.clone(),
                },
                status: None,
            }
        })
        .collect()
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
    SecretKind::ALL
        .iter()
        .filter_map(|kind| {
            let name = names::secret(valid.name, *kind);
            let (user, fresh_password, database) = match kind {
                SecretKind::Superuser => (names::SUPERUSER, &fresh.superuser, None),
                SecretKind::Replication => (names::REPLICATION_USER, &fresh.replication, None),
                // A restored cluster's application role comes with its data; there is nothing
                // to create for it.
                SecretKind::App => {
                    let initdb = bootstrap.initdb.as_ref()?;
                    (
                        initdb.owner.as_str(),
                        &fresh.app,
                        Some(initdb.database.as_str()),
                    )
                }
            };
            let password = existing
                .get(&name)
                .and_then(|data| data.get("password"))
                .and_then(|p| String::from_utf8(p.0.clone()).ok())
                .unwrap_or_else(|| fresh_password.clone());
            let data = credentials(valid, user, &password, database);
            Some(Secret {
                metadata: meta(valid, owner, name, "credentials"),
                type_: Some("kubernetes.io/basic-auth".into()),
                data: Some(data),
                ..Secret::default()
            })
        })
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
                "postgresql://{user}:{}@{host}:{port}/{database}",
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

fn config_map(valid: &ValidCluster<'_>, owner: &OwnerReference) -> Result<ConfigMap, ConfigError> {
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
            config::render_conf(&config::parameters(spec)?),
        ),
        ("pg_hba.conf".to_string(), config::render_hba(spec)?),
    ]);
    Ok(ConfigMap {
        metadata: meta(valid, owner, names::config_map(valid.name), "config"),
        data: Some(data),
        ..ConfigMap::default()
    })
}
