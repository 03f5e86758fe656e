//! Real Postgres instances on loopback for the agent tests: each instance has its own
//! 127.x.y.z address, its own folder in a temporary directory and its own agent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use pgha::agent::{
    Agent, Credentials, Desired, Endpoint, PostgresConfig, RunAs, Secret, Settings, Timeouts, pgbin,
};
use tempfile::TempDir;

pub use crate::eventually::eventually;
use tokio_postgres::{Client, NoTls};

pub const SUPERUSER_PASSWORD: &str = "su-pass:with\\odd chars";

pub fn credentials() -> Credentials {
    Credentials {
        superuser: Secret::new(SUPERUSER_PASSWORD),
        replication: Secret::new("repl-pass"),
        app: Some(pgha::agent::settings::AppUser {
            user: "app".into(),
            password: Secret::new("app-pass"),
            database: "app".into(),
        }),
    }
}

/// A folder for one test's instances, readable by the Postgres user.
pub struct Workspace {
    pub dir: TempDir,
    subnet: u8,
    members: Vec<String>,
}

static SUBNET: AtomicU8 = AtomicU8::new(1);

impl Workspace {
    /// `members` are the instance names this test will use (the primary keeps slots for them).
    pub fn new(members: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Self {
            dir,
            subnet: SUBNET.fetch_add(1, Ordering::SeqCst),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            members: self.members.clone(),
            ..PostgresConfig::default()
        }
    }

    /// The address of the instance with this name.
    pub fn endpoint(&self, name: &str) -> Endpoint {
        let ordinal = self.members.iter().position(|m| m == name).unwrap() + 1;
        let pid_octet = (std::process::id() % 200) as u8 + 20;
        Endpoint {
            host: format!("127.{pid_octet}.{}.{ordinal}", self.subnet),
            port: 5432,
        }
    }

    pub fn settings(&self, name: &str) -> Settings {
        let home = self.dir.path().join(name);
        let run_as = nix::unistd::geteuid()
            .is_root()
            .then(|| RunAs::user("postgres").expect("a 'postgres' user to run Postgres as"));
        std::fs::create_dir_all(&home).unwrap();
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&home, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .unwrap();
        }
        Settings {
            name: name.to_string(),
            data_dir: home.join("pgdata"),
            run_dir: home.join("run"),
            listen_address: self.endpoint(name).host,
            port: 5432,
            bin_dir: pgbin::find_bin_dir().expect("PostgreSQL binaries (set PGHA_PG_BIN)"),
            run_as,
            log_file: Some(home.join("postgres.log")),
            timeouts: Timeouts {
                start: Duration::from_secs(60),
                ..Timeouts::default()
            },
            source_credentials_dir: "/nonexistent".into(),
            tls: None,
            archive: None,
        }
    }

    /// An agent for `name`, bootstrapped and started in the given role.
    pub async fn start(&self, name: &str, desired: Desired) -> Arc<Agent> {
        self.start_with(self.settings(name), desired).await
    }

    /// `a` as primary and `b`, `c` as its replicas (a workspace of those three).
    pub async fn primary_and_two_replicas(&self) -> [Arc<Agent>; 3] {
        let a = self.start("a", Desired::Primary).await;
        let b = self.start("b", Desired::Replica(self.endpoint("a"))).await;
        let c = self.start("c", Desired::Replica(self.endpoint("a"))).await;
        [a, b, c]
    }

    /// Like [`Self::start`], with settings the caller adjusted.
    pub async fn start_with(&self, settings: Settings, desired: Desired) -> Arc<Agent> {
        let name = settings.name.clone();
        let agent = Agent::new(settings, credentials(), desired, self.config());
        agent
            .bootstrap(None)
            .await
            .unwrap_or_else(|e| panic!("bootstrap {name}: {e}\n{}", self.log(&name)));
        agent
            .start()
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}\n{}", self.log(&name)));
        Arc::new(agent)
    }

    /// pgbench against `name`'s `app` database over TCP as the superuser; killed on drop.
    pub fn pgbench(&self, name: &str, args: &[&str]) -> tokio::process::Command {
        let bin_dir = pgbin::find_bin_dir().expect("PostgreSQL binaries (set PGHA_PG_BIN)");
        let mut cmd = tokio::process::Command::new(bin_dir.join("pgbench"));
        cmd.args([
            "-h",
            &self.endpoint(name).host,
            "-p",
            "5432",
            "-U",
            "postgres",
            "app",
        ])
        .args(args)
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
        cmd
    }

    pub fn log(&self, name: &str) -> String {
        let path: PathBuf = self.dir.path().join(name).join("postgres.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// A client connected over TCP with the superuser's password, as an application would.
    pub async fn client(&self, name: &str) -> Client {
        try_client(&self.endpoint(name)).await.unwrap()
    }
}

impl Drop for Workspace {
    /// A test that fails leaves its postmasters behind (nothing stops them once the runtime
    /// is gone): kill every process started on this workspace's folders.
    fn drop(&mut self) {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The superuser over TCP, with its password.
pub async fn try_client(at: &Endpoint) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&at.host)
        .port(at.port)
        .password(SUPERUSER_PASSWORD);
    superuser(config).await
}

/// The superuser over the instance's Unix socket (peer authentication, no password).
pub async fn socket_client(settings: &Settings) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config.host_path(&settings.run_dir).port(settings.port);
    superuser(config).await
}

async fn superuser(mut config: tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config
        .user("postgres")
        .dbname("app")
        .connect_timeout(Duration::from_secs(2))
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A digest of a table's rows in id order, to compare contents across instances.
pub async fn digest(client: &Client, table: &str) -> String {
    client
        .query_one(
            &format!(
                "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') FROM {table} t"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until `name` has a row with this id in table `t`.
pub async fn wait_for_row(ws: &Workspace, name: &str, id: i32) {
    let at = ws.endpoint(name);
    eventually(
        Duration::from_secs(20),
        &format!("row {id} on {name}"),
        || {
            let at = at.clone();
            async move {
                let client = try_client(&at).await.ok()?;
                let rows = client
                    .query("SELECT 1 FROM t WHERE id = $1", &[&id])
                    .await
                    .ok()?;
                (!rows.is_empty()).then_some(())
            }
        },
    )
    .await;
}
