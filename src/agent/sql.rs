//! Connections to the local instance: the superuser over the Unix socket, authenticated by
//! the agent's OS user (peer), so no password is needed or sent.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use super::error::{AgentError, Result};
use super::settings::Settings;
use crate::plan::agent::Endpoint;
use crate::plan::names;
pub use crate::plan::quote::{ident, literal};

pub async fn connect(settings: &Settings) -> Result<Client> {
    connect_to(settings, "postgres").await
}

/// [`connect`] to another database of the instance.
pub async fn connect_to(settings: &Settings, database: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(&settings.run_dir)
        .port(settings.port)
        .user(names::SUPERUSER)
        .dbname(database)
        .application_name("pgha-agent")
        // Maintenance must not wait for a synchronous standby that may be gone.
        // Literals are quoted for standard strings (`plan::quote`), whatever
        // spec.postgresql sets.
        .options("-c synchronous_commit=local -c statement_timeout=30s -c standard_conforming_strings=on")
        .connect_timeout(Duration::from_secs(1))
        .connect(NoTls)
        .await
        .map_err(AgentError::sql("connecting to the local instance"))?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; either is reported by the
        // next query on the client.
        let _ = connection.await;
    });
    Ok(client)
}

/// The connection the status and metrics reads share: opening one costs more than the reads
/// (a backend fork), and they run every second and on every scrape.
#[derive(Default)]
pub struct KeptConnection {
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl KeptConnection {
    /// The kept connection; a new one when there is none or the server closed it.
    pub async fn get(&self, settings: &Settings) -> Result<Arc<Client>> {
        let mut kept = self.client.lock().await;
        if let Some(client) = kept.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(connect(settings).await?);
        *kept = Some(client.clone());
        Ok(client)
    }

    /// Drops the kept connection: the next `get` opens a new one.
    pub async fn forget(&self) {
        *self.client.lock().await = None;
    }
}

/// A connection to another instance's `postgres` database as the replication role: by its
/// certificate over TLS verified as the cluster's name once installed, else by password.
pub async fn connect_replication(
    settings: &Settings,
    primary: &Endpoint,
    password: &str,
) -> Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .port(primary.port)
        .user(names::REPLICATION_USER)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let what = "connecting to the primary as the replication role";
    let client = match super::conf::tls_files(settings) {
        Some(files) => {
            let read = |path: &str| {
                std::fs::read_to_string(path).map_err(AgentError::io("reading", Path::new(path)))
            };
            let (ca, cert, key) = (
                read(&files.paths.server_ca)?,
                read(&files.paths.client_cert)?,
                read(&files.paths.client_key)?,
            );
            let tls = crate::pg::tls(&ca, Some((&cert, &key))).map_err(AgentError::Refused)?;
            config.ssl_mode(SslMode::Require);
            match primary.host.parse::<IpAddr>() {
                Ok(address) => config.host(&files.verify_name).hostaddr(address),
                Err(_) => config.host(&primary.host),
            };
            let (client, connection) = config.connect(tls).await.map_err(AgentError::sql(what))?;
            tokio::spawn(connection);
            client
        }
        None => {
            config.host(&primary.host).password(password);
            let (client, connection) =
                config.connect(NoTls).await.map_err(AgentError::sql(what))?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}

/// Waits until the instance accepts connections; gives up early if `alive` says the
/// postmaster is gone.
pub async fn wait_ready(
    settings: &Settings,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        match connect(settings).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(error = %e, "instance not ready");
                return Err(AgentError::NotReady(timeout));
            }
            Err(_) if !alive() => {
                return Err(AgentError::Exited("while starting".into()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
