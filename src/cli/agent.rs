//! `pgha agent`: PID 1 of a Postgres pod.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::agent::kube::{ApiOrders, SecretWatch, StatusWriter};
use crate::agent::lease::LeaseKeeper;
use crate::agent::run::{self, OrdersFile, OrdersSource};
use crate::agent::settings::ArchiveCommands;
use crate::agent::settings::TlsSettings;
use crate::agent::stores::OrderedStore;
use crate::agent::{Agent, Credentials, Endpoint, RunAs, Settings, Timeouts, http, pgbin};
use crate::plan::agent::Orders;
use crate::plan::instance;
use crate::plan::tls::Sources;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Instance name (the PgInstance's): cluster_name, application_name and slot derive from it.
    #[arg(long, env = "PGHA_INSTANCE")]
    name: String,
    /// The data directory, a folder on the instance's volume.
    #[arg(long, env = "PGDATA")]
    data_dir: PathBuf,
    /// Socket and password file; not on the volume.
    #[arg(long, default_value = "/run/pgha")]
    run_dir: PathBuf,
    /// Mounted Secrets: superuser/password, replication/password, app/{username,password,dbname}.
    #[arg(long, default_value = "/etc/pgha/secrets")]
    secrets_dir: PathBuf,
    /// Where the certificate Secrets are mounted, each at `<dir>/<Secret name>`: with all of
    /// them, Postgres serves TLS and replicas stream with certificates.
    #[arg(long, requires_all = ["tls_server_secret", "tls_replication_secret", "tls_verify_name"])]
    tls_dir: Option<PathBuf>,
    /// The server certificate's Secret (`tls.crt`, `tls.key`, and `ca.crt` unless
    /// --tls-ca-secret).
    #[arg(long, requires = "tls_dir")]
    tls_server_secret: Option<String>,
    /// The Secret whose `ca.crt` signed the server certificate.
    #[arg(long, requires = "tls_dir")]
    tls_ca_secret: Option<String>,
    /// The replication role's client certificate Secret (`tls.crt`, `tls.key`, `ca.crt`: the
    /// CA client certificates are verified with).
    #[arg(long, requires = "tls_dir")]
    tls_replication_secret: Option<String>,
    /// The name a replica verifies its primary's certificate as.
    #[arg(long, requires = "tls_dir")]
    tls_verify_name: Option<String>,
    /// Orders (role, primary, fenced, config) as JSON or YAML; re-read every second.
    #[arg(
        long,
        required_unless_present = "orders_from_api",
        conflicts_with = "orders_from_api"
    )]
    orders: Option<PathBuf>,
    /// Orders from the spec of the PgInstance named --name in --namespace, watched with the
    /// pod's ServiceAccount; the agent writes what it observes to that PgInstance's status.
    #[arg(long)]
    orders_from_api: bool,
    /// The PgInstance's namespace (with --orders-from-api).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Create the data directory (initdb, or a clone of the primary) and exit: the init pod.
    #[arg(long)]
    init_only: bool,
    /// Address Postgres listens on.
    #[arg(long, default_value = "0.0.0.0")]
    listen: String,
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// Address of the read-only status endpoint (/status, /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8000")]
    status_addr: SocketAddr,
    /// Postgres's bin directory; found under /usr/lib/postgresql when not given.
    #[arg(long, env = "PGHA_PG_BIN")]
    pg_bin: Option<PathBuf>,
    /// Run Postgres as this user (only when the agent runs as root; Postgres refuses root).
    #[arg(long)]
    run_as: Option<String>,
    /// Append the postmaster's output to this file instead of the agent's stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Archive WAL to the object store described in this file (see `pgha wal-push --help`).
    /// Without it, the object store in the orders (`archive`) is used.
    #[arg(long)]
    archive_store: Option<PathBuf>,
    /// The mounted Secret with the keys of the orders' object store.
    #[arg(long, default_value = instance::ARCHIVE_CREDENTIALS_DIR)]
    archive_credentials_dir: PathBuf,
    /// The mounted Secret with the keys of a recovery source's object store.
    #[arg(long, default_value = instance::SOURCE_CREDENTIALS_DIR)]
    source_credentials_dir: PathBuf,
}

pub fn run(args: AgentArgs) -> Result<(), Box<dyn std::error::Error>> {
    super::init_tracing();
    let bin_dir = args
        .pg_bin
        .or_else(pgbin::find_bin_dir)
        .ok_or("no PostgreSQL found under /usr/lib/postgresql; pass --pg-bin")?;
    let mut settings = Settings {
        name: args.name,
        data_dir: args.data_dir,
        run_dir: args.run_dir,
        listen_address: args.listen,
        port: args.port,
        bin_dir,
        run_as: args.run_as.as_deref().map(RunAs::user).transpose()?,
        log_file: args.log_file,
        timeouts: Timeouts::default(),
        archive: args
            .archive_store
            .as_deref()
            .map(archive_commands)
            .transpose()?,
        source_credentials_dir: args.source_credentials_dir,
        tls: match (
            args.tls_dir,
            args.tls_server_secret,
            args.tls_replication_secret,
        ) {
            (Some(dir), Some(server), Some(replication)) => Some(TlsSettings {
                dir,
                sources: Sources {
                    server,
                    server_ca: args.tls_ca_secret,
                    replication,
                },
                // `--tls-dir` requires it.
                verify_name: args.tls_verify_name.unwrap_or_default(),
            }),
            _ => None,
        },
    };
    let credentials = Credentials::from_dir(&args.secrets_dir)?;
    let endpoint = Endpoint {
        host: settings.listen_address.clone(),
        port: settings.port,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (orders, status, keeper, secrets, identity) = match args.orders {
            Some(path) => {
                let file = OrdersFile {
                    path,
                    poll: Duration::from_secs(1),
                };
                (OrdersSource::File(file), None, None, None, None)
            }
            None => {
                let client = kube::Client::try_default().await?;
                let orders = ApiOrders::start(client.clone(), &args.namespace, &settings.name);
                let orders = orders.await?;
                let keeper = LeaseKeeper::new(client.clone(), &args.namespace, &settings.name);
                let tls = settings.tls.as_ref().map(|t| t.sources.clone());
                // An init pod reads the mounted copies only.
                let cluster = orders.cluster().filter(|_| !args.init_only);
                let secrets = cluster.map(|cluster| {
                    SecretWatch::start(client.clone(), &args.namespace, &cluster, tls)
                });
                if secrets.is_none() && !args.init_only {
                    tracing::warn!("no PgCluster in the orders: Secrets are not watched");
                }
                let conditions = orders.conditions();
                let identity = orders.cluster_identity();
                let status = StatusWriter::new(
                    client,
                    &args.namespace,
                    &settings.name,
                    endpoint,
                    conditions,
                    orders.stored_status(),
                );
                (
                    OrdersSource::Api(orders),
                    Some(status),
                    Some(keeper),
                    secrets,
                    identity,
                )
            }
        };
        let first = if args.init_only {
            wait_for_orders(&orders).await
        } else {
            orders.read()?
        };
        // The orders' object store, unless `--archive-store` gave one.
        let mut ordered = None;
        if let (None, Some(s3)) = (&settings.archive, &first.archive) {
            let mut store = OrderedStore::new(args.archive_credentials_dir.clone(), identity);
            settings.archive = Some(archive_commands(&store.follow(&settings, s3)?)?);
            ordered = Some(store);
        }
        let replication = credentials.replication.expose().to_string();
        let agent = Arc::new(Agent::new(
            settings,
            credentials,
            run::desired(&first)?,
            first.config.clone(),
        ));
        if args.init_only {
            let done = agent.bootstrap(first.recovery.as_ref()).await?;
            tracing::info!(?done, "data directory ready");
            return Ok(());
        }
        if let OrdersSource::Api(api) = &orders
            && let Some(cluster) = api.cluster()
        {
            let host = agent.settings().listen_address.clone();
            agent
                .peers()
                .attach(api.now(), &cluster, &host, &replication);
        }
        let listener = tokio::net::TcpListener::bind(args.status_addr).await?;
        tokio::spawn(http::serve(agent.clone(), listener));
        run::run(agent, orders, status, keeper, secrets, ordered).await?;
        Ok(())
    })
}

/// An init pod may start before its orders are complete (a replica before its primary
/// serves): it waits for them.
async fn wait_for_orders(orders: &OrdersSource) -> Orders {
    loop {
        match orders.read() {
            Ok(orders) => return orders,
            Err(e) => tracing::info!(error = %e, "waiting for complete orders"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `pgha wal-push` / `wal-fetch` of this binary with the store file.
fn archive_commands(store: &Path) -> Result<ArchiveCommands, Box<dyn std::error::Error>> {
    Ok(ArchiveCommands::new(
        &std::env::current_exe()?,
        &store.canonicalize()?,
    ))
}
