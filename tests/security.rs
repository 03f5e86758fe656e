//! Security on the local cluster with the operator as a pod: what each ServiceAccount may do
//! is exactly the table in docs/security.md (`kubectl auth can-i --list`); a password changed
//! in the `-app` Secret takes effect without a restart; and no password appears in any pod's
//! log, any Event or any status; Postgres serves the certificate the user brings (as
//! cert-manager would), verified by name (`sslmode=verify-full`) through `-rw` with the CA the
//! `-app` Secret carries, and reloads it when the user's Secret changes; a password login
//! without TLS is refused; replicas stream over TLS with client certificates.

#[path = "common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pgha::api::{PgCluster, PgInstance};

use eventually::eventually;
use install::{create, healthy, installed, kubectl};
use writer::{Target, connect};

/// One line of `kubectl auth can-i --list`: resource, non-resource URLs, resource names, verbs.
type Grant = (String, String, String, String);

/// The rows of `kubectl auth can-i --list`, cut at the header's column starts.
fn grants(listing: &str) -> BTreeSet<Grant> {
    let mut lines = listing.lines();
    let header = lines.next().unwrap_or_default();
    let starts: Vec<usize> = ["Resources", "Non-Resource URLs", "Resource Names", "Verbs"]
        .iter()
        .map(|h| header.find(h).unwrap_or_else(|| panic!("{h} in {header}")))
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cell = |i: usize| {
                let end = starts
                    .get(i + 1)
                    .copied()
                    .unwrap_or(line.len())
                    .min(line.len());
                let text = line.get(starts[i].min(line.len())..end).unwrap_or_default();
                text.trim().trim_matches(['[', ']']).to_string()
            };
            (cell(0), cell(1), cell(2), cell(3))
        })
        .collect()
}

/// The rows of the docs/security.md table for `account`: `| account | resource | URLs |
/// names | verbs |`, cells in backticks.
fn documented(account: &str) -> BTreeSet<Grant> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<String> = line
                .trim()
                .strip_prefix('|')?
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            (cells.len() >= 5 && cells[0] == account).then(|| {
                let dash = |c: &str| {
                    if c == "-" {
                        String::new()
                    } else {
                        c.to_string()
                    }
                };
                (
                    dash(&cells[1]),
                    dash(&cells[2]),
                    dash(&cells[3]),
                    cells[4].clone(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_password_rotation_and_no_password_in_logs_events_or_status() {
    let (cluster, client) = installed(13).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), "shop");
    // The server certificate comes from the user, in the shape cert-manager writes, and
    // later than the cluster: until it exists the cluster says which field names what is
    // missing, and the instances come up without TLS; then they take it without a restart.
    create(
        &clusters,
        "metadata: {name: orders}\nspec:\n  instances: 2\n  storage: {size: 1Gi}\n  \
         tls: {serverSecret: orders-tls}\n",
    )
    .await;
    let condition = |wanted: &'static str| {
        let clusters = clusters.clone();
        async move {
            let status = clusters.get("orders").await.ok()?.status?;
            let c = status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "CertificatesReady" && c.status == wanted)?;
            Some(c.message)
        }
    };
    let missing = eventually(Duration::from_secs(60), "CertificatesReady False", || {
        condition("False")
    })
    .await;
    assert!(
        missing.starts_with("spec.tls.serverSecret: Secret shop/orders-tls does not exist"),
        "{missing}"
    );
    eventually(Duration::from_secs(180), "orders Healthy", || {
        healthy(&clusters, "orders", 2)
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let first = Certificate::new();
    secrets
        .create(&PostParams::default(), &first.secret())
        .await
        .unwrap();
    eventually(Duration::from_secs(90), "CertificatesReady True", || {
        condition("True")
    })
    .await;

    // Each ServiceAccount may do exactly what docs/security.md says, in the cluster's
    // namespace (the instance's) and cluster-wide rules included (the operator's).
    let mut differences = Vec::new();
    for (account, documented_as) in [
        (
            "system:serviceaccount:pgha-system:pgha-operator",
            "operator",
        ),
        ("system:serviceaccount:shop:orders-1", "instance"),
    ] {
        let listing = kubectl(
            &cluster,
            &["auth", "can-i", "--list", "-n", "shop", "--as", account],
        );
        let granted = grants(&listing);
        let mut doc = documented(documented_as);
        doc.extend(documented("everyone"));
        let extra: Vec<&Grant> = granted.difference(&doc).collect();
        let missing: Vec<&Grant> = doc.difference(&granted).collect();
        if !extra.is_empty() || !missing.is_empty() {
            let rows: Vec<String> = granted
                .iter()
                .map(|(r, u, n, v)| {
                    let cell = |c: &str| {
                        if c.is_empty() {
                            "-".to_string()
                        } else {
                            format!("`{c}`")
                        }
                    };
                    format!(
                        "| {documented_as} | {} | {} | {} | {v} |",
                        cell(r),
                        cell(u),
                        cell(n)
                    )
                })
                .collect();
            differences.push(format!(
                "{account}: granted but not in docs/security.md: {extra:?}\n\
                 documented but not granted: {missing:?}\nas table rows:\n{}",
                rows.join("\n")
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n\n"));

    // A password changed in the -app Secret is set in Postgres without a restart: the new
    // one works through -rw, the old one no longer does, the primary's status says when.
    let old = Target::rw(&cluster, &client, "shop", "orders", "app").await;
    let (host, port) = (old.address.ip().to_string(), old.address.port());
    // Over TLS, which the agents take up within a second of the Secret's creation.
    let session = eventually(Duration::from_secs(30), "the old password works", || {
        connect(&old, &host, port)
    })
    .await;
    let started = |c: tokio_postgres::Client| async move {
        let row = c
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await;
        row.unwrap().get::<_, String>(0)
    };
    let postmaster = started(session).await;
    let asked = k8s_openapi::jiff::Timestamp::now();
    let rotated = format!("rotated-{}", asked.as_nanosecond());
    let patch = serde_json::json!({"stringData": {"password": rotated}});
    secrets
        .patch("orders-app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let new = Target {
        password: rotated.clone(),
        ..old.clone()
    };
    let session = eventually(Duration::from_secs(60), "the new password works", || {
        connect(&new, &host, port)
    })
    .await;
    println!(
        "new password in force {:?} after the Secret changed",
        asked.until(k8s_openapi::jiff::Timestamp::now()).ok()
    );
    assert!(
        connect(&old, &host, port).await.is_none(),
        "the old password still works"
    );
    assert_eq!(started(session).await, postmaster, "Postgres restarted");
    let primary = install::primary_of(&clusters, "orders").await;
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), "shop");
    let set_at = eventually(
        Duration::from_secs(10),
        "passwordsSetAt reported",
        || async {
            let status = instances.get(&primary).await.ok()?.status?;
            // Status times are whole seconds.
            status
                .passwords_set_at
                .filter(|t| t.0.as_second() >= asked.as_second())
        },
    )
    .await;
    println!("passwordsSetAt {}", set_at.0);

    // TLS: a client with the CA of the -app Secret connects through -rw verifying the server
    // as orders-rw.shop.svc (sslmode=verify-full); without TLS, a password login is refused.
    let app = secrets.get("orders-app").await.unwrap().data.unwrap();
    let app_ca = String::from_utf8(app["ca.crt"].0.clone()).unwrap();
    assert_eq!(app_ca, first.ca, "the -app Secret carries the user's CA");
    let uri = String::from_utf8(app["uri"].0.clone()).unwrap();
    assert!(uri.ends_with("?sslmode=verify-full"), "{uri}");
    let said = psql(&new, &host, port, Some(&app_ca), SSL_IN_USE)
        .await
        .unwrap();
    assert!(said.starts_with("t|TLSv1."), "{said}");
    let clear = psql(&new, &host, port, None, "SELECT 1").await.unwrap_err();
    assert!(clear.contains("no encryption"), "{clear}");

    // Replicas stream over TLS, logged in by their client certificate.
    let session = connect(&new, &host, port).await.unwrap();
    let superuser = Target::rw(&cluster, &client, "shop", "orders", "superuser").await;
    let replication = "SELECT count(*) FILTER (WHERE s.ssl AND s.client_dn = '/CN=streaming_replica'), \
         count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)";
    let streams = psql(&superuser, &host, port, Some(&app_ca), replication).await;
    assert_eq!(
        streams.unwrap(),
        "1|1",
        "streams over TLS with a certificate | streams"
    );

    // The user renews the certificate with a new CA: new connections get it, Postgres keeps
    // running (reloaded, not restarted), and the operator never writes the user's Secret.
    let second = Certificate::new();
    let renewed = secrets
        .replace("orders-tls", &PostParams::default(), &{
            let mut secret = second.secret();
            secret.metadata.resource_version = secrets
                .get("orders-tls")
                .await
                .unwrap()
                .metadata
                .resource_version;
            secret
        })
        .await
        .unwrap();
    let renewed_at = std::time::Instant::now();
    eventually(
        Duration::from_secs(30),
        "the renewed certificate served",
        || {
            let served = psql(&new, &host, port, Some(&second.ca), SSL_IN_USE);
            async { served.await.ok() }
        },
    )
    .await;
    println!(
        "renewed certificate served after {:?}",
        renewed_at.elapsed()
    );
    assert!(
        psql(&new, &host, port, Some(&first.ca), SSL_IN_USE)
            .await
            .is_err()
    );
    assert_eq!(started(session).await, postmaster, "Postgres restarted");
    let streams = psql(&superuser, &host, port, Some(&second.ca), replication).await;
    assert_eq!(streams.unwrap(), "1|1", "replication after the renewal");
    let user_secret = secrets.get("orders-tls").await.unwrap();
    assert_eq!(
        user_secret.metadata.resource_version, renewed.metadata.resource_version,
        "the operator wrote the user's Secret"
    );

    // A key that is not the certificate's is never served: the cluster says so, naming the
    // field, and Postgres goes on serving the renewed certificate.
    let mut mismatched = second.secret();
    mismatched
        .string_data
        .as_mut()
        .unwrap()
        .insert("tls.key".into(), first.key.clone());
    mismatched.metadata.resource_version = user_secret.metadata.resource_version;
    secrets
        .replace("orders-tls", &PostParams::default(), &mismatched)
        .await
        .unwrap();
    let refused = eventually(Duration::from_secs(90), "CertificatesReady False", || {
        condition("False")
    })
    .await;
    assert!(
        refused.contains("tls.key is not the key of tls.crt"),
        "{refused}"
    );
    assert!(
        psql(&new, &host, port, Some(&second.ca), SSL_IN_USE)
            .await
            .is_ok()
    );

    // No password in any log of the run, any Event, or any object's status.
    let mut passwords = vec![
        ("orders-app (rotated)", rotated),
        ("orders-app (before)", old.password.clone()),
    ];
    for name in ["orders-app", "orders-superuser", "orders-replication"] {
        let secret = secrets.get(name).await.unwrap();
        let data = secret.data.unwrap_or_default();
        let password = String::from_utf8(data["password"].0.clone()).unwrap();
        assert!(password.len() >= 16, "{name}");
        passwords.push((name, password));
    }
    let mut seen = vec![
        kubectl(&cluster, &["get", "events", "-A", "-o", "yaml"]),
        kubectl(
            &cluster,
            &[
                "get",
                "pgclusters,pginstances,pgbackups",
                "-A",
                "-o",
                "yaml",
            ],
        ),
    ];
    let mut logs = 0;
    read_logs(cluster.state_dir(), &mut seen, &mut logs);
    assert!(logs > 4, "{logs} log files read");
    for text in &seen {
        for (name, password) in &passwords {
            assert!(
                !text.contains(password.as_str()),
                "{name}'s password in:\n{text}"
            );
        }
    }
}

const SSL_IN_USE: &str = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// `query`'s rows through psql as `target`'s user at `host:port`: with `ca`, verifying the
/// server as `orders-rw.shop.svc` (`sslmode=verify-full`; the local cluster has no DNS, so
/// `hostaddr` gives the address); without, with no TLS at all. Err: psql's message.
async fn psql(
    target: &Target,
    host: &str,
    port: u16,
    ca: Option<&str>,
    query: &str,
) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let ssl = match ca {
        Some(ca) => {
            let file = dir.path().join("ca.crt");
            std::fs::write(&file, ca).unwrap();
            format!("sslmode=verify-full sslrootcert={}", file.display())
        }
        None => "sslmode=disable".to_string(),
    };
    let conninfo = format!(
        "host=orders-rw.shop.svc hostaddr={host} port={port} user={} dbname={} {ssl} \
         connect_timeout=5",
        target.user, target.dbname,
    );
    let out = tokio::process::Command::new("psql")
        .arg(&conninfo)
        .args(["-tAc", query])
        .env("PGPASSWORD", &target.password)
        .output()
        .await
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// A CA and a server certificate signed by it for the Services of `orders` in `shop`, as a
/// user (or cert-manager) makes them.
struct Certificate {
    ca: String,
    cert: String,
    key: String,
}

impl Certificate {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // OpenSSL takes a certificate whose subject is its issuer's for a self-signed one.
        ca.distinguished_name
            .push(DnType::CommonName, "a user's CA for orders");
        let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names = pgha::plan::tls::server_names("orders", "shop");
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "orders-rw");
        let cert = params.signed_by(&key, &Issuer::new(ca, &ca_key)).unwrap();
        Self {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// The Secret cert-manager would write: `tls.crt`, `tls.key`, `ca.crt`.
    fn secret(&self) -> Secret {
        let data = [
            ("tls.crt", &self.cert),
            ("tls.key", &self.key),
            ("ca.crt", &self.ca),
        ];
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("orders-tls".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            string_data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }
}

/// Every `*.log` under `dir` (the pods' containers, the control plane).
fn read_logs(dir: &Path, into: &mut Vec<String>, count: &mut usize) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_logs(&path, into, count);
        } else if path.extension().is_some_and(|e| e == "log") {
            into.push(String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into());
            *count += 1;
        }
    }
}
