//! A client that inserts a row through a Service every few milliseconds and remembers every
//! row whose commit was acknowledged, with the time of the acknowledgement: what a failover
//! may not lose, and the gap it leaves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// Where and as whom the writer connects.
#[derive(Clone, Debug)]
pub struct Target {
    pub address: SocketAddr,
    pub user: String,
    pub password: String,
    pub dbname: String,
    /// Over TLS, verifying the server with this CA as this name (`sslmode=verify-full`,
    /// whatever address it is reached at); None: no TLS (a peer's cluster).
    pub tls: Option<Verify>,
}

#[derive(Clone, Debug)]
pub struct Verify {
    pub ca: String,
    pub name: String,
}

impl Target {
    /// The `-rw` Service of PgCluster `name` in `namespace`, as the user of its Secret
    /// `<name>-<secret>` (`app`, `superuser`), in the Secret's database or `postgres`.
    pub async fn rw(
        cluster: &pgha_e2e::Cluster,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        secret: &str,
    ) -> Self {
        use k8s_openapi::api::core::v1::Secret;
        let secret = kube::Api::<Secret>::namespaced(client.clone(), namespace)
            .get(&format!("{name}-{secret}"))
            .await
            .unwrap();
        let data = secret.data.unwrap_or_default();
        let value = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8(v.0.clone()).unwrap())
        };
        // The CA the `-app` Secret carries (a restored cluster may have none: the server
        // Secret's then).
        let secrets = kube::Api::<Secret>::namespaced(client.clone(), namespace);
        let mut ca = None;
        for holder in ["app", "server"] {
            let held = secrets.get_opt(&format!("{name}-{holder}")).await.unwrap();
            ca = ca.or_else(|| {
                let data = held?.data?;
                String::from_utf8(data.get("ca.crt")?.0.clone()).ok()
            });
        }
        let ca = ca.expect("a CA in the -app or -server Secret");
        Self {
            address: cluster
                .service_address(namespace, &format!("{name}-rw"), None)
                .await
                .unwrap(),
            user: value("username").unwrap(),
            password: value("password").unwrap(),
            dbname: value("dbname").unwrap_or_else(|| "postgres".into()),
            tls: Some(Verify {
                ca,
                name: format!("{name}-rw"),
            }),
        }
    }

    /// For libpq (pgbench): over TLS when the target has it, not verified (pgbench takes no
    /// CA from here; `connect` verifies).
    pub fn conninfo(&self, host: &str, port: u16) -> String {
        let ssl = if self.tls.is_some() {
            "require"
        } else {
            "prefer"
        };
        format!(
            "host={host} port={port} user={} password={} dbname={} connect_timeout=2 sslmode={ssl}",
            self.user, self.password, self.dbname
        )
    }
}

/// Connects to `host:port` (an address) as the target's user; None when it cannot.
pub async fn connect(target: &Target, host: &str, port: u16) -> Option<tokio_postgres::Client> {
    let within = Duration::from_secs(3);
    let mut config = tokio_postgres::Config::new();
    config
        .port(port)
        .user(&target.user)
        .password(&target.password)
        .dbname(&target.dbname)
        .connect_timeout(Duration::from_secs(2));
    match &target.tls {
        Some(verify) => {
            let tls = pgha::pg::tls(&verify.ca, None).unwrap();
            config
                .host(&verify.name)
                .hostaddr(host.parse().ok()?)
                .ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = tokio::time::timeout(within, config.connect(tls))
                .await
                .ok()?
                .ok()?;
            tokio::spawn(connection);
            Some(client)
        }
        None => {
            config.host(host);
            let connecting = config.connect(tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(within, connecting).await.ok()?.ok()?;
            tokio::spawn(connection);
            Some(client)
        }
    }
}

/// A connection to the target through its Service, waiting up to 30 s for one.
pub async fn session(target: &Target) -> tokio_postgres::Client {
    let (host, port) = (target.address.ip().to_string(), target.address.port());
    crate::eventually::eventually(Duration::from_secs(30), "a connection", || {
        connect(target, &host, port)
    })
    .await
}

#[derive(Default)]
struct Log {
    /// Acknowledged rows, with when their commit returned.
    acked: Vec<(i64, Instant)>,
    next: i64,
}

pub struct Writer {
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Writer {
    /// Creates the table `acked (n bigint primary key)` and starts inserting every `every`.
    /// A statement that does not return within a second is given up (not acknowledged) and
    /// the connection dropped, as a client with a timeout does.
    pub async fn start(target: Target, every: Duration) -> Self {
        let host = target.address.ip().to_string();
        let port = target.address.port();
        let setup = loop {
            if let Some(c) = connect(&target, &host, port).await {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        setup
            .batch_execute("CREATE TABLE IF NOT EXISTS acked (n bigint PRIMARY KEY)")
            .await
            .unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                let mut client: Option<tokio_postgres::Client> = None;
                loop {
                    tokio::time::sleep(every).await;
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = connect(&target, &host, port).await;
                    }
                    let Some(c) = &client else { continue };
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.next += 1;
                        log.next
                    };
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&n];
                    let insert = c.execute("INSERT INTO acked VALUES ($1)", &params);
                    let done = tokio::time::timeout(Duration::from_secs(1), insert).await;
                    match done {
                        Ok(Ok(_)) => log.lock().unwrap().acked.push((n, Instant::now())),
                        _ => client = None,
                    }
                }
            }
        });
        Self { log, task }
    }

    /// Every acknowledged row so far.
    pub fn acked(&self) -> Vec<i64> {
        self.log
            .lock()
            .unwrap()
            .acked
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }

    /// The first acknowledgement after `since`, if any.
    pub fn first_ack_after(&self, since: Instant) -> Option<Instant> {
        let log = self.log.lock().unwrap();
        log.acked.iter().map(|(_, at)| *at).find(|at| *at > since)
    }

    /// The longest time without an acknowledgement after `since` until now or `until`: the
    /// write outage a fault caused.
    pub fn longest_gap(&self, since: Instant, until: Instant) -> Duration {
        self.longest_gap_from(since, until).1
    }

    /// The longest gap as [`Writer::longest_gap`] has it, and when it began.
    pub fn longest_gap_from(&self, since: Instant, until: Instant) -> (Instant, Duration) {
        let log = self.log.lock().unwrap();
        let mut last = since;
        let mut longest = (since, Duration::ZERO);
        let acks = log.acked.iter().map(|(_, at)| *at);
        for at in acks.filter(|at| *at > since && *at <= until).chain([until]) {
            if at.saturating_duration_since(last) > longest.1 {
                longest = (last, at.saturating_duration_since(last));
            }
            last = at;
        }
        longest
    }
}

/// The acknowledged rows missing from the server `client` is connected to.
pub async fn missing(client: &tokio_postgres::Client, acked: &[i64]) -> Vec<i64> {
    let rows = client.query("SELECT n FROM acked", &[]).await.unwrap();
    let present: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    acked
        .iter()
        .copied()
        .filter(|n| !present.contains(n))
        .collect()
}

/// pgbench (scale 1) through `target`, two clients, until dropped. Async: the Service
/// proxies run in this process and must keep serving while pgbench connects.
pub async fn pgbench(target: &Target) -> tokio::process::Child {
    let bin = "/usr/lib/postgresql/15/bin/pgbench";
    let conninfo = target.conninfo(&target.address.ip().to_string(), target.address.port());
    let init = tokio::process::Command::new(bin)
        .args(["-i", "-q", "-s", "1", &conninfo])
        .output()
        .await
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    tokio::process::Command::new(bin)
        .args(["-c", "2", "-T", "3600", "-n", &conninfo])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Every instance of `cluster`, probed at its own address: the names of those that accept a
/// write.
pub async fn writable(
    instances: &kube::Api<pgha::api::PgInstance>,
    cluster: &str,
    target: &Target,
) -> Vec<String> {
    let mut out = Vec::new();
    let mine = kube::api::ListParams::default().labels(&format!("pgha.dev/cluster={cluster}"));
    for instance in instances.list(&mine).await.unwrap() {
        let Some(endpoint) = instance.status.as_ref().and_then(|s| s.endpoint.clone()) else {
            continue;
        };
        let Some(c) = connect(target, &endpoint.host, endpoint.port).await else {
            continue;
        };
        let read_only: Option<String> = c
            .query_one("SHOW transaction_read_only", &[])
            .await
            .ok()
            .map(|r| r.get(0));
        if read_only.as_deref() == Some("off") {
            out.push(kube::ResourceExt::name_any(&instance));
        }
    }
    out
}
