//! The instance agent: owns one Postgres server beside it in the pod. It bootstraps the data
//! directory, writes the configuration, supervises the postmaster, reports status and carries
//! out role changes. Who tells it what to do is outside this module: [`Agent`] is the interface.

pub mod backup;
mod bootstrap;
pub mod conf;
pub(crate) mod error;
mod files;
pub mod http;
pub mod kube;
pub mod lease;
pub mod managed;
pub mod metrics;
pub mod peers;
pub mod pgbin;
pub mod postmaster;
pub mod restore;
mod roles;
pub mod run;
pub mod settings;
mod sql;
pub mod status;
pub mod stores;

use std::sync::Mutex;

use k8s_openapi::jiff::Timestamp;

use crate::api::instance::InstanceRole;
pub use crate::plan::agent::{Endpoint, PostgresConfig};
pub use bootstrap::Bootstrapped;
pub use error::{AgentError, Result};
use postmaster::{Postmaster, RunState};
pub use roles::Rejoined;
pub use settings::{Credentials, RunAs, Secret, Settings, Timeouts};
use status::Status;

/// The role the agent is told to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    Primary,
    Replica(Endpoint),
}

impl Desired {
    fn upstream(&self) -> Option<&Endpoint> {
        match self {
            Self::Primary => None,
            Self::Replica(primary) => Some(primary),
        }
    }
}

pub struct Agent {
    settings: Settings,
    /// From the mounted Secrets, then from the password watch.
    credentials: Mutex<Credentials>,
    postmaster: Postmaster,
    /// One state change at a time; status reads do not take it.
    ops: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    /// The status and metrics reads' connection.
    kept: sql::KeptConnection,
    /// The promises this member made to its primary, and its part in vouching.
    peers: peers::Peers,
}

/// How long the status and metrics reads may take: a frozen server must not hold up the
/// agent's loop or a scrape.
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

struct State {
    desired: Desired,
    /// Set once a start has finished (roles, slots); until then the instance is not ready.
    serving: bool,
    config: PostgresConfig,
    last_error: Option<String>,
    notes: Vec<String>,
    /// The host this instance last streamed WAL from since the agent started.
    streamed_from: Option<String>,
    /// The newest timeline it received WAL on: the control file's lags until a restartpoint,
    /// and the WAL receiver's row is gone while its primary is.
    received_timeline: Option<u32>,
    /// The ordered configuration Postgres refused; `config` is what it runs on instead.
    rejected: Option<(PostgresConfig, String)>,
    /// When the configuration last went from loaded to refused or back.
    config_since: Timestamp,
    /// The passwords last set in Postgres by this agent (as primary).
    passwords_set: Option<Credentials>,
    /// When a password was last set, for the status.
    passwords_set_at: Option<Timestamp>,
    /// The certificates installed where Postgres reads them.
    tls: Option<crate::plan::tls::Material>,
    /// The last certificates refused (see `servable`).
    tls_refused: Option<crate::plan::tls::Material>,
}

/// Whether Postgres runs on the ordered configuration, for the `ConfigInvalid` condition.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigState {
    /// Postgres's messages about the ordered configuration it refused.
    pub refused: Option<String>,
    pub since: Timestamp,
}

/// Outcome of a configuration change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigApplied {
    /// Parameters whose new value needs a restart; empty when a reload applied everything.
    pub pending_restart: Vec<String>,
}

impl Agent {
    /// An agent for a stopped instance. Must be called inside a Tokio runtime.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        desired: Desired,
        config: PostgresConfig,
    ) -> Self {
        Self {
            postmaster: Postmaster::spawn(settings.clone()),
            settings,
            credentials: Mutex::new(credentials),
            ops: tokio::sync::Mutex::new(()),
            kept: sql::KeptConnection::default(),
            peers: peers::Peers::default(),
            state: Mutex::new(State {
                desired,
                serving: false,
                config,
                last_error: None,
                notes: Vec::new(),
                streamed_from: None,
                received_timeline: None,
                rejected: None,
                config_since: Timestamp::now(),
                passwords_set: None,
                passwords_set_at: None,
                tls: None,
                tls_refused: None,
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Its part in the members' vouching for their primary.
    pub fn peers(&self) -> &peers::Peers {
        &self.peers
    }

    /// The role the agent holds (or is bringing the instance to).
    pub fn desired(&self) -> Desired {
        self.lock().desired.clone()
    }

    /// Sets the role to start in, before the first start (orders may change while an agent
    /// waits to bring its instance up).
    pub fn set_desired(&self, desired: Desired) {
        self.lock().desired = desired;
    }

    /// The configuration last applied.
    pub fn config(&self) -> PostgresConfig {
        self.lock().config.clone()
    }

    /// The ordered configuration Postgres refused, if the orders still say it.
    pub fn rejected_config(&self) -> Option<PostgresConfig> {
        self.lock()
            .rejected
            .as_ref()
            .map(|(config, _)| config.clone())
    }

    /// The orders now say `wanted`: a refusal of another configuration no longer stands.
    pub fn ordered_config(&self, wanted: &PostgresConfig) {
        let mut state = self.lock();
        if state.rejected.as_ref().is_some_and(|(c, _)| c != wanted) {
            state.rejected = None;
            state.config_since = Timestamp::now();
        }
    }

    /// Records that Postgres refused `config`, and says so as an error.
    fn reject(&self, config: PostgresConfig, why: String) -> AgentError {
        let mut state = self.lock();
        if state.rejected.as_ref().map(|(c, _)| c) != Some(&config) {
            state.config_since = Timestamp::now();
        }
        tracing::error!(reason = %why, "Postgres refuses the ordered configuration; keeping the last one it loaded");
        state.rejected = Some((config, why.clone()));
        AgentError::ConfigInvalid(why)
    }

    /// `config` is loaded: it is the configuration now, and no refusal stands.
    fn accept(&self, config: PostgresConfig) {
        let mut state = self.lock();
        if state.rejected.take().is_some() {
            state.config_since = Timestamp::now();
        }
        state.config = config;
    }

    fn credentials(&self) -> Credentials {
        self.credentials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The passwords of the cluster's Secrets now (from the password watch; None: not seen
    /// yet). A primary sets changed ones in Postgres at once, as SCRAM verifiers, without a
    /// restart; a replica keeps them for when it starts as primary.
    pub async fn sync_passwords(&self, superuser: Option<String>, app: Option<String>) {
        let wanted = {
            let mut credentials = self
                .credentials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(password) = superuser {
                credentials.superuser = Secret::new(password);
            }
            if let (Some(password), Some(user)) = (app, credentials.app.as_mut()) {
                user.password = Secret::new(password);
            }
            credentials.clone()
        };
        let due = || {
            let mut state = self.lock();
            if state.desired != Desired::Primary {
                // Whatever it set as a primary, the next promotion sets again.
                state.passwords_set = None;
            }
            state.desired == Desired::Primary
                && state.serving
                && state.passwords_set.as_ref() != Some(&wanted)
        };
        if !due() || self.postmaster.pid().is_none() {
            return;
        }
        let _op = self.ops.lock().await;
        if !due() {
            return;
        }
        let set = async {
            let client = sql::connect(&self.settings).await?;
            roles::set_passwords(&client, &wanted).await
        };
        match set.await {
            Ok(()) => {
                tracing::info!("passwords set from the cluster's Secrets");
                let mut state = self.lock();
                state.passwords_set = Some(wanted);
                state.passwords_set_at = Some(Timestamp::now());
            }
            Err(e) => tracing::warn!(error = %e, "passwords not set; retrying"),
        }
    }

    /// Installs the mounted certificates if none are installed yet: before the first start or
    /// clone (later changes come from the watch, `sync_tls`).
    fn install_mounted_tls(&self) -> Result<()> {
        if self.lock().tls.is_some() {
            return Ok(());
        }
        if let Some(material) = conf::mounted_tls(&self.settings).filter(|m| self.servable(m)) {
            conf::install_tls(&self.settings, &material)?;
            self.lock().tls = Some(material);
        }
        Ok(())
    }

    /// Whether Postgres may serve `material`: a key that is not the certificate's, or a
    /// certificate its clients would refuse, stops every login over TLS (and a restart), so
    /// such material is refused once, loudly, and the installed one kept.
    fn servable(&self, material: &crate::plan::tls::Material) -> bool {
        let name = self
            .settings
            .tls
            .as_ref()
            .map_or("", |t| t.verify_name.as_str());
        let check = crate::pg::check_server_certificate(
            &material.server_cert,
            &material.server_key,
            &material.server_ca,
            name,
        );
        let mut state = self.lock();
        match check {
            Ok(()) => true,
            Err(_) if state.tls_refused.as_ref() == Some(material) => false,
            Err(why) => {
                tracing::error!(%why, "the server certificate is refused; keeping the one installed");
                state.tls_refused = Some(material.clone());
                false
            }
        }
    }

    /// The certificates in the cluster's Secrets now (from the watch; None: not all seen).
    /// Changed ones are installed and Postgres reloads them without a restart: new
    /// connections, and a replica's next connection to its primary, use them.
    pub async fn sync_tls(&self, watched: Option<crate::plan::tls::Material>) {
        let changed = |state: &State| {
            watched.is_some() && state.tls != watched && state.tls_refused != watched
        };
        if !changed(&self.lock()) {
            return;
        }
        let _op = self.ops.lock().await;
        let Some(material) = watched.as_ref().filter(|_| changed(&self.lock())) else {
            return;
        };
        if !self.servable(material) {
            return;
        }
        let installed = async {
            conf::install_tls(&self.settings, material)?;
            if self.postmaster.pid().is_none() {
                return Ok(());
            }
            // The first certificates also change the files: `ssl` first (Postgres reports
            // `hostssl` rules as errors while it is off), then the rules, checked as always.
            let (config, desired) = {
                let state = self.lock();
                (state.config.clone(), state.desired.clone())
            };
            conf::write_operator_files(&self.settings, &config, desired.upstream())?;
            roles::reload(&self.settings, &sql::connect(&self.settings).await?).await?;
            self.apply_config_locked(config).await.map(drop)
        };
        // Recorded only once in force: a failed reload is tried again on the next pass.
        match installed.await {
            Ok(()) => {
                tracing::info!("certificates installed from the cluster's Secrets");
                self.lock().tls = Some(material.clone());
            }
            Err(e) => tracing::warn!(error = %e, "certificates not installed; retrying"),
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.postmaster.status().fenced
    }

    /// The running postmaster's PID.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster.pid()
    }

    /// A receiver that sees every change of the postmaster's state (start, crash, stop).
    pub fn watch_postmaster(&self) -> tokio::sync::watch::Receiver<postmaster::PostmasterStatus> {
        self.postmaster.watch()
    }

    /// Writes the configuration for the desired role, starts Postgres and waits until it
    /// accepts connections. A primary then gets its roles, database and slots.
    pub async fn start(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        self.record(self.start_locked().await)
    }

    /// Stops Postgres: smart, then fast, then kill, with the settings' timeouts.
    pub async fn stop(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        self.stop_locked().await
    }

    /// A smart shutdown waits for every session to end: the agent's kept read connection is
    /// closed first (a new one is refused while Postgres shuts down).
    async fn stop_locked(&self) -> Result<()> {
        self.kept.forget().await;
        let t = self.settings.timeouts;
        self.postmaster.stop(t.smart_stop, t.fast_stop).await
    }

    /// Stops and starts Postgres, to apply parameters that need a restart.
    pub async fn restart(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        self.stop_locked().await?;
        self.record(self.start_locked().await)
    }

    /// Applies a new configuration: refused as a whole (nothing written) if the user's part
    /// is invalid; otherwise written, and reloaded if Postgres runs.
    pub async fn apply_config(&self, config: PostgresConfig) -> Result<ConfigApplied> {
        let _op = self.ops.lock().await;
        let result = self.apply_config_locked(config).await;
        self.record(result)
    }

    async fn apply_config_locked(&self, config: PostgresConfig) -> Result<ConfigApplied> {
        let rendered = conf::render(&self.settings, &config)?;
        let (desired, previous) = {
            let state = self.lock();
            (state.desired.clone(), state.config.clone())
        };
        let upstream = desired.upstream();
        match conf::check(&self.settings, &config, &rendered, upstream).await {
            Err(AgentError::ConfigInvalid(why)) => return Err(self.reject(config, why)),
            checked => checked?,
        }
        if self.postmaster.pid().is_none() {
            // The next start writes it, its pg_hba rules once the server can check them.
            self.accept(config);
            return Ok(ConfigApplied {
                pending_restart: Vec::new(),
            });
        }
        conf::write(&self.settings, &config, &rendered, upstream)?;
        let members = config.members.clone();
        let client = sql::connect(&self.settings).await?;
        // Read from the file before the server reloads it: a refused file is put back at once.
        if let Some(why) = conf::hba_errors(&client).await? {
            conf::write(
                &self.settings,
                &previous,
                &conf::render(&self.settings, &previous)?,
                upstream,
            )?;
            return Err(self.reject(config, why));
        }
        self.accept(config);
        if desired == Desired::Primary {
            roles::ensure_slots(&client, &self.settings.name, &members).await?;
        }
        let pending_restart = roles::reload(&self.settings, &client).await?;
        Ok(ConfigApplied { pending_restart })
    }

    /// On a serving primary: creates missing slots and drops those of departed members that
    /// were still in use when the members last changed.
    pub async fn tidy_slots(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        let (primary, serving, members) = {
            let state = self.lock();
            let primary = state.desired == Desired::Primary;
            (primary, state.serving, state.config.members.clone())
        };
        if !primary || !serving || self.postmaster.pid().is_none() {
            return Ok(());
        }
        let client = sql::connect(&self.settings).await?;
        roles::ensure_slots(&client, &self.settings.name, &members).await
    }

    /// Everything the agent knows, read fresh from Postgres when it runs.
    pub async fn status(&self) -> Status {
        self.observe(false).await.0
    }

    /// `/metrics`: the status and the database counters, read over one connection.
    pub async fn metrics(&self) -> String {
        let (status, counters) = self.observe(true).await;
        metrics::render(&status, counters.as_ref())
    }

    /// The status, and with `counters` what only the metrics show.
    async fn observe(&self, counters: bool) -> (Status, Option<metrics::Counters>) {
        let postmaster = self.postmaster.status();
        let (desired, serving, last_error, notes, config, passwords_set_at) = {
            let state = self.lock();
            (
                state.desired.clone(),
                state.serving,
                state.last_error.clone(),
                state.notes.clone(),
                ConfigState {
                    refused: state.rejected.as_ref().map(|(_, why)| why.clone()),
                    since: state.config_since,
                },
                state.passwords_set_at,
            )
        };
        let mut status = Status {
            name: self.settings.name.clone(),
            role: if postmaster.fenced {
                InstanceRole::Fenced
            } else {
                InstanceRole::Stopped
            },
            ready: false,
            server: None,
            postmaster,
            last_error,
            notes,
            streamed_from: None,
            config,
            passwords_set_at,
            promises: self.peers.running(),
        };
        if !matches!(status.postmaster.run, RunState::Running { .. }) {
            return (status, None);
        }
        let (server, read) = match self.read_server(counters).await {
            Ok((server, read)) => (Ok(server), read),
            Err(e) => (Err(e), None),
        };
        match server {
            Ok(mut server) => {
                if let (Some(archiver), Some(archive)) =
                    (server.archiver.as_mut(), &self.settings.archive)
                {
                    let error_file = crate::plan::config::push_error_file(&archive.store);
                    archiver.last_error = std::fs::read_to_string(error_file).ok();
                    let owner_file = crate::plan::config::foreign_owner_file(&archive.store);
                    archiver.foreign_owner = std::fs::read(owner_file)
                        .ok()
                        .and_then(|json| serde_json::from_slice(&json).ok());
                }
                status.role = if server.in_recovery {
                    InstanceRole::Replica
                } else {
                    InstanceRole::Primary
                };
                status.ready =
                    serving && server.in_recovery == matches!(desired, Desired::Replica(_));
                let streaming = server
                    .upstream
                    .as_ref()
                    .filter(|u| u.status == "streaming")
                    .and_then(|u| u.host.clone());
                let received = server.upstream.as_ref().and_then(|u| u.received_timeline);
                let mut state = self.lock();
                if streaming.is_some() {
                    state.streamed_from = streaming;
                }
                state.received_timeline = state.received_timeline.max(received);
                status.streamed_from = state.streamed_from.clone();
                if server.in_recovery {
                    server.timeline = server.timeline.max(state.received_timeline);
                }
                status.server = Some(server);
            }
            Err(e) => {
                status.last_error = Some(format!("status: {e}"));
            }
        }
        (status, read)
    }

    /// The server's status (and counters) over the kept connection, within `READ_WITHIN`. A
    /// read that fails is tried once more on a new connection, so a server restarted since the
    /// last read does not show as a failed read; a read that runs out of time drops the
    /// connection, so a frozen server is not waited on twice.
    async fn read_server(
        &self,
        counters: bool,
    ) -> Result<(status::ServerStatus, Option<metrics::Counters>)> {
        let attempt = async {
            let kept = self.kept.get(&self.settings).await?;
            if let Ok(read) = reads(&kept, counters).await {
                return Ok(read);
            }
            self.kept.forget().await;
            reads(&*self.kept.get(&self.settings).await?, counters).await
        };
        let outcome = match tokio::time::timeout(READ_WITHIN, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AgentError::Refused(format!(
                "the local instance did not answer within {READ_WITHIN:?}"
            ))),
        };
        if outcome.is_err() {
            self.kept.forget().await;
        }
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the last error for the status report and logs it; passes the result on.
    fn record<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            tracing::error!(instance = %self.settings.name, error = %e, "operation failed");
            self.lock().last_error = Some(e.to_string());
        }
        result
    }

    fn note(&self, note: String) {
        tracing::warn!(instance = %self.settings.name, "{note}");
        self.lock().notes.push(note);
    }

    /// What a start writes, so that it never meets a file that does not load: the ordered
    /// configuration, except that its pg_hba rules wait until Postgres is up (only a running
    /// server checks them; the run loop then applies them) unless they are the ones last
    /// written; and when Postgres refuses its parameters, the configuration last written
    /// (`Some`), or the user's files as they are when there is no record of it (`None`).
    async fn loadable(
        &self,
        ordered: PostgresConfig,
        upstream: Option<&Endpoint>,
    ) -> Result<Option<PostgresConfig>> {
        let recorded = conf::last_written(&self.settings);
        let pg_hba = match &recorded {
            Some(r) if r.pg_hba == ordered.pg_hba => ordered.pg_hba.clone(),
            _ => Vec::new(),
        };
        let candidate = PostgresConfig {
            pg_hba,
            ..ordered.clone()
        };
        let rendered = conf::render(&self.settings, &candidate)?;
        let why = match conf::check(&self.settings, &candidate, &rendered, upstream).await {
            Ok(()) => return Ok(Some(candidate)),
            Err(AgentError::ConfigInvalid(why)) => why,
            Err(e) => return Err(e),
        };
        drop(self.reject(ordered.clone(), why));
        Ok(recorded.map(|loaded| PostgresConfig {
            parameters: loaded.parameters,
            pg_hba: loaded.pg_hba,
            ..ordered
        }))
    }

    async fn start_locked(&self) -> Result<()> {
        let (config, desired) = {
            let mut state = self.lock();
            state.serving = false;
            (state.config.clone(), state.desired.clone())
        };
        files::ensure_dir(&self.settings.run_dir, 0o700, self.settings.run_as.as_ref())?;
        conf::write_passfile(&self.settings, self.credentials().replication.expose())?;
        self.install_mounted_tls()?;
        let upstream = desired.upstream();
        let config = match self.loadable(config.clone(), upstream).await? {
            Some(loadable) => {
                conf::write(
                    &self.settings,
                    &loadable,
                    &conf::render(&self.settings, &loadable)?,
                    upstream,
                )?;
                self.lock().config = loadable.clone();
                loadable
            }
            None => {
                conf::write_operator_files(&self.settings, &config, upstream)?;
                config
            }
        };
        self.postmaster.start().await?;
        let client = sql::wait_ready(&self.settings, self.settings.timeouts.start, || {
            self.postmaster.pid().is_some()
        })
        .await?;
        if desired == Desired::Primary {
            let credentials = self.credentials();
            roles::ensure_roles(&client, &credentials).await?;
            self.lock().passwords_set = Some(credentials);
            roles::ensure_slots(&client, &self.settings.name, &config.members).await?;
        }
        self.lock().serving = true;
        Ok(())
    }
}

async fn reads(
    client: &tokio_postgres::Client,
    counters: bool,
) -> Result<(status::ServerStatus, Option<metrics::Counters>)> {
    let server = status::server(client).await?;
    let read = match counters {
        true => metrics::counters(client).await.ok(),
        false => None,
    };
    Ok((server, read))
}
