//! A cluster's TLS: the names its server certificate covers and when a certificate is due.
//! The controller makes the keys and certificates (controller/tls.rs); this decides.

use chrono::{DateTime, Duration, Utc};

use super::names::{self, ServiceKind};

/// The cluster's CA Secret (`tls.crt`, `tls.key`) and server Secret (`tls.crt`, `tls.key`,
/// `ca.crt`: the shape cert-manager writes).
pub fn ca_secret(cluster: &str) -> String {
    format!("{cluster}-ca")
}

pub fn server_secret(cluster: &str) -> String {
    format!("{cluster}-server")
}

/// The client certificate of the replication role (`tls.crt`, `tls.key`, and `ca.crt`: the
/// cluster CA, which Postgres verifies client certificates with).
pub fn replication_secret(cluster: &str) -> String {
    format!("{cluster}-replication-tls")
}

/// The name replicas verify their primary's certificate as (`sslmode=verify-full`): every
/// instance serves the same certificate, which names the `-rw` Service.
pub fn verify_name(cluster: &str) -> String {
    names::service(cluster, ServiceKind::ReadWrite)
}

/// Which Secrets hold an instance's certificates: the operator's own, or the server
/// certificate (and its CA) the user brings in `spec.tls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// `tls.crt`, `tls.key` and, unless `server_ca` is set, `ca.crt`.
    pub server: String,
    /// A Secret whose `ca.crt` signed the server certificate.
    pub server_ca: Option<String>,
    /// The replication role's client certificate.
    pub replication: String,
}

impl Sources {
    pub fn of(cluster: &str, spec: Option<&crate::api::cluster::TlsSpec>) -> Self {
        Self {
            server: spec.map_or_else(|| server_secret(cluster), |t| t.server_secret.clone()),
            server_ca: spec.and_then(|t| t.ca_secret.clone()),
            replication: replication_secret(cluster),
        }
    }

    /// Every Secret named, once each.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.server.clone()];
        names.extend(self.server_ca.clone());
        names.push(self.replication.clone());
        names.dedup();
        names
    }
}

/// Everything an instance needs for TLS: as PEM text, or (in `config::TlsFiles`) where the
/// files are.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    pub server_cert: String,
    pub server_key: String,
    /// What clients (replicas included) verify the server certificate with.
    pub server_ca: String,
    pub client_cert: String,
    pub client_key: String,
    /// What Postgres verifies client certificates with: the cluster CA.
    pub client_ca: String,
}

/// Never the keys.
impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { .. }")
    }
}

impl Material {
    /// The file names an instance keeps its material under, in field order.
    pub const FILES: [&str; 6] = [
        "server.crt",
        "server.key",
        "server-ca.crt",
        "client.crt",
        "client.key",
        "client-ca.crt",
    ];

    /// From the Secrets `sources` names, read through `key(secret, key)`; None until all of
    /// it is there (an instance then serves no TLS rather than half of it).
    pub fn read(sources: &Sources, key: impl Fn(&str, &str) -> Option<String>) -> Option<Self> {
        let (server, replication) = (sources.server.as_str(), sources.replication.as_str());
        let ca_from = sources.server_ca.as_deref().unwrap_or(server);
        let parts = [
            (server, "tls.crt"),
            (server, "tls.key"),
            (ca_from, "ca.crt"),
            (replication, "tls.crt"),
            (replication, "tls.key"),
            (replication, "ca.crt"),
        ];
        let read: Option<Vec<String>> = parts.iter().map(|(s, k)| key(s, k)).collect();
        Some(Self::from_parts(read?.try_into().ok()?))
    }

    /// From the parts in the order of [`Self::FILES`].
    pub fn from_parts(parts: [String; 6]) -> Self {
        let [
            server_cert,
            server_key,
            server_ca,
            client_cert,
            client_key,
            client_ca,
        ] = parts;
        Self {
            server_cert,
            server_key,
            server_ca,
            client_cert,
            client_key,
            client_ca,
        }
    }

    /// The contents in the order of [`Self::FILES`].
    pub fn contents(&self) -> [&str; 6] {
        [
            &self.server_cert,
            &self.server_key,
            &self.server_ca,
            &self.client_cert,
            &self.client_key,
            &self.client_ca,
        ]
    }
}

/// On a certificate's Secret: the names it covers, comma-separated, and when it expires
/// (RFC 3339), so that renewal is decided without parsing X.509.
pub const NAMES_ANNOTATION: &str = "pgha.dev/tls-names";
pub const NOT_AFTER_ANNOTATION: &str = "pgha.dev/tls-not-after";

pub const CA_VALID: Duration = Duration::days(3650);
pub const SERVER_VALID: Duration = Duration::days(365);
/// A certificate is renewed this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The names a client may verify (`sslmode=verify-full`): each Service, short and qualified.
pub fn server_names(cluster: &str, namespace: &str) -> Vec<String> {
    ServiceKind::ALL
        .iter()
        .flat_map(|kind| {
            let service = names::service(cluster, *kind);
            [
                service.clone(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ]
        })
        .collect()
}

/// A certificate as its Secret's annotations describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub names: Vec<String>,
    pub not_after: DateTime<Utc>,
}

impl Issued {
    /// From a Secret's annotations; None when they are missing or unreadable.
    pub fn from_annotations(names: Option<&str>, not_after: Option<&str>) -> Option<Self> {
        let not_after = DateTime::parse_from_rfc3339(not_after?)
            .ok()?
            .with_timezone(&Utc);
        let names = names?.split(',').map(String::from).collect();
        Some(Self { names, not_after })
    }

    pub fn names_annotation(&self) -> String {
        self.names.join(",")
    }
}

/// Whether a new certificate is needed: none yet, other names wanted, or expiring soon.
pub fn due(now: DateTime<Utc>, issued: Option<&Issued>, wanted: &[String]) -> bool {
    match issued {
        None => true,
        Some(issued) => issued.names != wanted || issued.not_after - RENEW_BEFORE <= now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 0, 0, 0).unwrap()
    }

    #[test]
    fn every_service_short_and_qualified() {
        let names = server_names("orders", "shop");
        assert_eq!(names.len(), 12);
        assert!(names.contains(&"orders-rw".to_string()));
        assert!(names.contains(&"orders-ro.shop.svc".to_string()));
        assert!(names.contains(&"orders-r.shop.svc.cluster.local".to_string()));
    }

    #[test]
    fn material_needs_every_secret_and_takes_the_ca_from_where_the_spec_says() {
        let spec = crate::api::cluster::TlsSpec {
            server_secret: "mine".into(),
            ca_secret: Some("my-ca".into()),
        };
        let byo = Sources::of("orders", Some(&spec));
        assert_eq!(byo.names(), ["mine", "my-ca", "orders-replication-tls"]);
        let own = Sources::of("orders", None);
        assert_eq!(own.names(), ["orders-server", "orders-replication-tls"]);
        let all = |secret: &str, key: &str| Some(format!("{secret}/{key}"));
        let read = Material::read(&byo, all).unwrap();
        assert_eq!(read.server_ca, "my-ca/ca.crt");
        assert_eq!(read.client_ca, "orders-replication-tls/ca.crt");
        assert_eq!(
            Material::read(&own, all).unwrap().server_ca,
            "orders-server/ca.crt"
        );
        let no_client = |secret: &str, key: &str| {
            (!secret.ends_with("replication-tls")).then(|| format!("{secret}/{key}"))
        };
        assert_eq!(Material::read(&own, no_client), None);
    }

    #[test]
    fn a_certificate_is_due_when_missing_renamed_or_near_its_end() {
        let wanted = server_names("orders", "shop");
        let issued = Issued {
            names: wanted.clone(),
            not_after: at(1) + SERVER_VALID,
        };
        assert!(due(at(1), None, &wanted));
        assert!(!due(at(1), Some(&issued), &wanted));
        assert!(due(at(1), Some(&issued), &server_names("payments", "shop")));
        let late = issued.not_after - RENEW_BEFORE;
        assert!(!due(late - Duration::seconds(1), Some(&issued), &wanted));
        assert!(due(late, Some(&issued), &wanted));
        let read = Issued::from_annotations(
            Some(&issued.names_annotation()),
            Some(&issued.not_after.to_rfc3339()),
        );
        assert_eq!(read, Some(issued));
        assert_eq!(Issued::from_annotations(Some("a"), Some("soon")), None);
    }
}
