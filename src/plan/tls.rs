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
