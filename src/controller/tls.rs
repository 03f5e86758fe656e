//! The cluster's CA and server certificate as Secrets: made once, renewed when
//! `plan::tls::due` says so, otherwise applied unchanged every reconcile.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::Error;
use crate::api::PgCluster;
use crate::plan::names;
use crate::plan::tls::{self, CA_VALID, Issued, NAMES_ANNOTATION, NOT_AFTER_ANNOTATION};

/// Secrets' data and annotations as the reconcile read them, by name.
pub type Seen = BTreeMap<String, (BTreeMap<String, ByteString>, BTreeMap<String, String>)>;

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    String::from_utf8(data.get(key)?.0.clone()).ok()
}

/// Valid from the start of `from`'s day (UTC) to the start of `until`'s.
fn validity(params: &mut CertificateParams, from: DateTime<Utc>, until: DateTime<Utc>) {
    let ymd = |at: DateTime<Utc>| rcgen::date_time_ymd(at.year(), at.month() as u8, at.day() as u8);
    params.not_before = ymd(from);
    params.not_after = ymd(until);
}

/// The CA's parameters; the same every time, so that an issuer rebuilt from them and the
/// CA's key signs certificates that chain to the stored CA certificate.
fn ca_params(cluster: &PgCluster) -> CertificateParams {
    let mut params = CertificateParams::default();
    let name = format!(
        "pgha {}/{} CA",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn secret(
    cluster: &PgCluster,
    name: String,
    data: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
) -> Secret {
    let cluster_name = cluster.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: cluster.namespace(),
            labels: Some(names::labels(&cluster_name, "tls")),
            annotations,
            owner_references: cluster.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The CA Secret, the server Secret (unless the user brings one) and the replication role's
/// client certificate Secret to apply: what exists, or new ones where none is usable or a
/// certificate is due.
pub fn secrets(cluster: &PgCluster, seen: &Seen, now: DateTime<Utc>) -> Result<Vec<Secret>, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let (ca_name, server_name) = (tls::ca_secret(&name), tls::server_secret(&name));
    let existing_ca = seen.get(&ca_name).and_then(|(data, _)| {
        let cert = text(data, "tls.crt")?;
        let key = KeyPair::from_pem(&text(data, "tls.key")?).ok()?;
        Some((cert, key))
    });
    let fresh = existing_ca.is_none();
    let (cert, key) = match existing_ca {
        Some(ca) => ca,
        None => {
            let key = KeyPair::generate()?;
            let mut params = ca_params(cluster);
            validity(&mut params, now, now + CA_VALID);
            (params.self_signed(&key)?.pem(), key)
        }
    };
    let ca_secret = secret(
        cluster,
        ca_name,
        BTreeMap::from([
            ("tls.crt".to_string(), cert.clone()),
            ("tls.key".to_string(), key.serialize_pem()),
        ]),
        None,
    );
    let ca = Ca { cert, key, fresh };

    let mut out = vec![ca_secret];
    if cluster.spec.tls.is_none() {
        let wanted = tls::server_names(&name, &namespace);
        out.push(leaf(
            cluster,
            seen,
            server_name,
            wanted,
            Leaf::Server,
            &ca,
            now,
        )?);
    }
    let client = vec![names::REPLICATION_USER.to_string()];
    let replication = tls::replication_secret(&name);
    out.push(leaf(
        cluster,
        seen,
        replication,
        client,
        Leaf::Client,
        &ca,
        now,
    )?);
    Ok(out)
}

/// The CA a leaf certificate is signed with.
struct Ca {
    cert: String,
    key: KeyPair,
    /// Made in this reconcile: every leaf is then made again.
    fresh: bool,
}

#[derive(Clone, Copy)]
enum Leaf {
    /// Names the Services; Postgres serves it.
    Server,
    /// Names a role (its common name); a client logs in with it.
    Client,
}

/// The Secret of a certificate for `wanted` names: the one seen while it is valid for them
/// and signed by `ca`, else a new one.
fn leaf(
    cluster: &PgCluster,
    seen: &Seen,
    secret_name: String,
    wanted: Vec<String>,
    kind: Leaf,
    ca: &Ca,
    now: DateTime<Utc>,
) -> Result<Secret, Error> {
    let current = seen.get(&secret_name).and_then(|(data, annotations)| {
        let issued = Issued::from_annotations(
            annotations.get(NAMES_ANNOTATION).map(String::as_str),
            annotations.get(NOT_AFTER_ANNOTATION).map(String::as_str),
        )?;
        let keys = ["tls.crt", "tls.key", "ca.crt"];
        let data: Option<BTreeMap<String, String>> = keys
            .iter()
            .map(|k| Some((k.to_string(), text(data, k)?)))
            .collect();
        Some((issued, data?))
    });
    let kept = current.filter(|(issued, data)| {
        !ca.fresh && !tls::due(now, Some(issued), &wanted) && data["ca.crt"] == ca.cert
    });
    let (issued, data) = match kept {
        Some(kept) => kept,
        None => {
            let key = KeyPair::generate()?;
            let mut params = match kind {
                Leaf::Server => CertificateParams::new(wanted.clone())?,
                Leaf::Client => CertificateParams::default(),
            };
            // Postgres maps a client certificate to a role by its common name.
            params
                .distinguished_name
                .push(DnType::CommonName, wanted[0].clone());
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![match kind {
                Leaf::Server => ExtendedKeyUsagePurpose::ServerAuth,
                Leaf::Client => ExtendedKeyUsagePurpose::ClientAuth,
            }];
            let not_after = now + tls::SERVER_VALID;
            validity(&mut params, now, not_after);
            let issuer = Issuer::new(ca_params(cluster), &ca.key);
            let cert = params.signed_by(&key, &issuer)?;
            let issued = Issued {
                names: wanted,
                not_after: day_start(not_after),
            };
            let data = BTreeMap::from([
                ("tls.crt".to_string(), cert.pem()),
                ("tls.key".to_string(), key.serialize_pem()),
                ("ca.crt".to_string(), ca.cert.clone()),
            ]);
            (issued, data)
        }
    };
    let annotations = BTreeMap::from([
        (NAMES_ANNOTATION.to_string(), issued.names_annotation()),
        (
            NOT_AFTER_ANNOTATION.to_string(),
            issued.not_after.to_rfc3339(),
        ),
    ]);
    Ok(secret(cluster, secret_name, data, Some(annotations)))
}

/// The CA clients verify the server with: the one in the server Secret made here, or the
/// `ca.crt` of the Secret the user names. Err: what is missing from the user's Secrets,
/// naming the field (the instances serve no TLS until they are complete).
pub async fn server_ca(
    secrets: &kube::Api<Secret>,
    cluster: &PgCluster,
    made: &[Secret],
) -> Result<Result<String, String>, Error> {
    let sources = tls::Sources::of(&cluster.name_any(), cluster.spec.tls.as_ref());
    let namespace = cluster.namespace().unwrap_or_default();
    let read = async |name: &str| -> Result<Option<BTreeMap<String, ByteString>>, Error> {
        Ok(match made.iter().find(|s| s.name_any() == name) {
            Some(secret) => secret.data.clone(),
            None => secrets
                .get_opt(name)
                .await?
                .map(|s| s.data.unwrap_or_default()),
        })
    };
    let mut wanted = vec![("spec.tls.serverSecret", &sources.server, "tls.crt")];
    wanted.push(("spec.tls.serverSecret", &sources.server, "tls.key"));
    wanted.push(match &sources.server_ca {
        Some(ca) => ("spec.tls.caSecret", ca, "ca.crt"),
        None => ("spec.tls.serverSecret", &sources.server, "ca.crt"),
    });
    let mut pem = BTreeMap::new();
    for (field, name, key) in wanted {
        let missing = match read(name).await? {
            None => "does not exist",
            Some(data) => match text(&data, key) {
                Some(value) => {
                    pem.insert(key, value);
                    continue;
                }
                None => &format!("has no `{key}`"),
            },
        };
        return Ok(Err(format!(
            "{field}: Secret {namespace}/{name} {missing}; the instances serve no TLS (and \
             take passwords without it) until it is complete"
        )));
    }
    // What the agents would refuse to serve (they keep the certificate they have).
    let check = || {
        let name = tls::verify_name(&cluster.name_any());
        crate::pg::check_server_certificate(&pem["tls.crt"], &pem["tls.key"], &pem["ca.crt"], &name)
    };
    if let Some(Err(why)) = cluster.spec.tls.as_ref().map(|_| check()) {
        return Ok(Err(format!(
            "spec.tls.serverSecret: Secret {namespace}/{}: {why}; the instances keep the \
             certificate they serve",
            sources.server
        )));
    }
    Ok(Ok(pem.remove("ca.crt").unwrap_or_default()))
}

/// The start of `at`'s day: when a certificate made with `validity` ends.
fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;

    fn seen(secrets: &[Secret]) -> Seen {
        secrets
            .iter()
            .map(|s| {
                let data = s.data.clone().unwrap_or_default();
                let annotations = s.metadata.annotations.clone().unwrap_or_default();
                (s.name_any(), (data, annotations))
            })
            .collect()
    }

    #[test]
    fn made_once_then_kept_and_renewed_near_the_end() {
        let cluster = fixtures::cluster("orders", serde_json::json!({}));
        let now = Utc::now();
        let first = secrets(&cluster, &Seen::new(), now).unwrap();
        let names: Vec<String> = first.iter().map(|s| s.name_any()).collect();
        assert_eq!(
            names,
            ["orders-ca", "orders-server", "orders-replication-tls"]
        );
        let again = secrets(&cluster, &seen(&first), now).unwrap();
        assert_eq!(again, first, "nothing rewritten while valid");
        let late = now + tls::SERVER_VALID;
        let renewed = secrets(&cluster, &seen(&first), late).unwrap();
        assert_eq!(renewed[0], first[0], "the CA stays");
        assert_ne!(renewed[1].data, first[1].data, "a new server certificate");
        let server = renewed[1].data.as_ref().unwrap();
        assert_eq!(server["ca.crt"], first[0].data.as_ref().unwrap()["tls.crt"]);
        let client = &renewed[2];
        assert_ne!(client.data, first[2].data, "a new client certificate");
        let annotations = client.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[NAMES_ANNOTATION], "streaming_replica");
    }

    #[test]
    fn a_server_certificate_brought_by_the_user_is_not_made() {
        let spec = serde_json::json!({"tls": {"serverSecret": "orders-cert-manager"}});
        let cluster = fixtures::cluster("orders", spec);
        let made = secrets(&cluster, &Seen::new(), Utc::now()).unwrap();
        let names: Vec<String> = made.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["orders-ca", "orders-replication-tls"]);
    }
}
