//! Patroni 3.0.2, the failover peer: one etcd 3.4 member and three Patroni members on
//! loopback, each with its own Postgres 15 on its own 127.0.0.x address and data directory
//! in a temporary directory. Members run as `postgres` (Postgres refuses root); both come
//! from Debian (`scripts/install-bench-deps.sh`). Replication is asynchronous, Patroni's
//! default (`synchronous_mode: false`).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::writer::Target;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_PORT: u16 = 5432;
const REST_PORT: u16 = 8008;
const ETCD_PORT: u16 = 2379;
const PASSWORD: &str = "bench";
const MEMBERS: u8 = 3;

/// The leader key's settings (Patroni's dynamic configuration).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub name: &'static str,
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    /// `failsafe_mode`: a leader that cannot update its key stays leader while every member
    /// answers it over the REST API (off by default).
    pub failsafe: bool,
}

impl Settings {
    /// Patroni's defaults.
    pub const DEFAULT: Self = Self {
        name: "defaults",
        ttl: 30,
        loop_wait: 10,
        retry_timeout: 10,
        failsafe: false,
    };
    /// Tuned for speed: Patroni's docs require `loop_wait + 2 × retry_timeout ≤ ttl`; 3.0.2
    /// still takes a ttl under the 20 s that its later versions enforce.
    pub const TUNED: Self = Self {
        name: "tuned",
        ttl: 10,
        loop_wait: 1,
        retry_timeout: 4,
        failsafe: false,
    };

    pub const fn with_failsafe(self) -> Self {
        Self {
            failsafe: true,
            ..self
        }
    }

    pub fn label(&self) -> String {
        format!(
            "{}: ttl {}, loop_wait {}, retry_timeout {}, failsafe_mode {}",
            self.name,
            self.ttl,
            self.loop_wait,
            self.retry_timeout,
            if self.failsafe { "on" } else { "off" }
        )
    }
}

struct Member {
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    patroni: Option<Child>,
}

impl Member {
    fn rest(&self) -> SocketAddr {
        SocketAddr::from((self.ip, REST_PORT))
    }

    fn config(&self, settings: Settings, etcd: SocketAddr) -> String {
        let Settings {
            ttl,
            loop_wait,
            retry_timeout,
            failsafe,
            ..
        } = settings;
        format!(
            "scope: bench\nname: {name}\n\
             restapi: {{listen: '{rest}', connect_address: '{rest}'}}\n\
             etcd3: {{hosts: '{etcd}'}}\n\
             bootstrap:\n  dcs:\n    ttl: {ttl}\n    loop_wait: {loop_wait}\n    retry_timeout: {retry_timeout}\n\
             \x20   failsafe_mode: {failsafe}\n\
             \x20   postgresql: {{use_pg_rewind: true, use_slots: true}}\n  initdb: [data-checksums]\n\
             postgresql:\n  listen: '{pg}'\n  connect_address: '{pg}'\n  data_dir: {dir}/data\n\
             \x20 bin_dir: {PG_BIN}\n  pgpass: {dir}/pgpass\n\
             \x20 remove_data_directory_on_rewind_failure: true\n\
             \x20 remove_data_directory_on_diverged_timelines: true\n\
             \x20 authentication:\n\
             \x20   superuser: {{username: postgres, password: {PASSWORD}}}\n\
             \x20   replication: {{username: replicator, password: {PASSWORD}}}\n\
             \x20 parameters: {{unix_socket_directories: '{dir}'}}\n\
             \x20 pg_hba:\n    - local all all trust\n\
             \x20   - host all all 127.0.0.0/8 scram-sha-256\n\
             \x20   - host replication replicator 127.0.0.0/8 scram-sha-256\n",
            name = self.name,
            rest = self.rest(),
            pg = SocketAddr::from((self.ip, PG_PORT)),
            dir = self.dir.display(),
        )
    }

    /// Starts Patroni as `postgres`, logging to `patroni.log` in the member's directory; it
    /// bootstraps, clones or (after a kill) restarts and rejoins its Postgres itself.
    fn start(&mut self) {
        let user = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("the postgres user (Debian's postgresql package)");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("patroni.log"))
            .unwrap();
        let child = Command::new("patroni")
            .arg(self.dir.join("patroni.yml"))
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("patroni (scripts/install-bench-deps.sh installs it)");
        self.patroni = Some(child);
    }

    /// SIGKILL to Patroni and to its Postgres, every process of both: the host died. Patroni
    /// starts the postmaster in a session of its own, so it is found through its pid file.
    fn kill(&mut self) {
        let Some(mut patroni) = self.patroni.take() else {
            return;
        };
        let mut victims = tree(patroni.id() as i32);
        victims.extend(postmaster(&self.dir.join("data")).map_or_else(Vec::new, tree));
        for pid in victims {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = patroni.wait();
    }

    /// The member's own report (`GET /patroni`), None while it does not answer.
    async fn state(&self) -> Option<Value> {
        rest_get(self.rest(), "/patroni").await
    }
}

fn is_primary(state: &Value) -> bool {
    state["state"] == "running" && (state["role"] == "master" || state["role"] == "primary")
}

/// The running postmaster of `data`, from its pid file.
fn postmaster(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // A pid file outlives a killed postmaster; its pid may belong to someone else by now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.starts_with("postgres").then_some(pid)
}

/// `root` and every process below it.
fn tree(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (command) state ppid …"; the command may contain spaces.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out
}

/// A REST API's JSON answer, whatever its status code (Patroni answers 503 with the same
/// body when the role does not match the path).
async fn rest_get(address: SocketAddr, path: &str) -> Option<Value> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()?
}

/// etcd, three members, and the router the writer connects through.
pub struct Patroni {
    members: Vec<Member>,
    etcd: Child,
    router: Router,
    // Last: removed once every process is gone.
    dir: tempfile::TempDir,
}

impl Patroni {
    /// Starts etcd and three members on `127.0.0.{block}0` … `{block}3` with `settings`, and
    /// returns once one leads and both others stream from it.
    pub async fn start(settings: Settings, block: u8) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pgha-bench-patroni")
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        let etcd_address = SocketAddr::from((Ipv4Addr::new(127, 0, 0, block * 10), ETCD_PORT));
        let etcd = start_etcd(dir.path(), etcd_address).await;
        let members: Vec<Member> = (1..=MEMBERS)
            .map(|n| Member {
                name: format!("m{n}"),
                ip: Ipv4Addr::new(127, 0, 0, block * 10 + n),
                dir: dir.path().join(format!("m{n}")),
                patroni: None,
            })
            .collect();
        for member in &members {
            std::fs::create_dir_all(&member.dir).unwrap();
            std::fs::write(
                member.dir.join("patroni.yml"),
                member.config(settings, etcd_address),
            )
            .unwrap();
            chown_postgres(&member.dir);
        }
        let router = Router::start(conninfo(&members)).await;
        let mut patroni = Self {
            members,
            etcd,
            router,
            dir,
        };
        for member in &mut patroni.members {
            member.start();
        }
        crate::eventually::eventually(Duration::from_secs(180), "Patroni bootstrapped", || {
            patroni.healthy_leader()
        })
        .await;
        patroni
    }

    /// Where the writer connects: the router, as the superuser, to `postgres`.
    pub fn target(&self) -> Target {
        Target {
            address: self.router.address,
            user: "postgres".into(),
            password: PASSWORD.into(),
            dbname: "postgres".into(),
            tls: None,
        }
    }

    /// A member's Postgres address.
    pub fn postgres(&self, member: usize) -> (String, u16) {
        (self.members[member].ip.to_string(), PG_PORT)
    }

    pub fn name(&self, member: usize) -> &str {
        &self.members[member].name
    }

    /// The leader when the cluster is whole: it runs as primary and both others run as
    /// replicas on its timeline, streaming from it.
    pub async fn healthy_leader(&self) -> Option<usize> {
        let states = futures::future::join_all(self.members.iter().map(Member::state)).await;
        let states: Vec<Value> = states.into_iter().collect::<Option<_>>()?;
        let leader = states.iter().position(is_primary)?;
        let timeline = &states[leader]["timeline"];
        let streaming = |name: &str| {
            states[leader]["replication"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|s| s["application_name"] == name && s["state"] == "streaming")
            })
        };
        let whole = self
            .members
            .iter()
            .zip(&states)
            .enumerate()
            .all(|(i, (m, s))| {
                i == leader
                    || (s["state"] == "running"
                        && s["role"] == "replica"
                        && &s["timeline"] == timeline
                        && streaming(&m.name))
            });
        whole.then_some(leader)
    }

    /// A member other than `lost` that runs as primary.
    pub async fn new_primary(&self, lost: usize) -> Option<usize> {
        for (i, member) in self.members.iter().enumerate() {
            if i != lost && member.state().await.as_ref().is_some_and(is_primary) {
                return Some(i);
            }
        }
        None
    }

    /// `patronictl switchover` from `leader` to `candidate`, as a DBA runs it; returns what it
    /// printed, Err when it failed.
    pub async fn switchover(&self, leader: usize, candidate: usize) -> Result<String, String> {
        let out = tokio::process::Command::new("patronictl")
            .arg("-c")
            .arg(self.members[leader].dir.join("patroni.yml"))
            .args(["switchover", "--force", "--leader"])
            .arg(&self.members[leader].name)
            .arg("--candidate")
            .arg(&self.members[candidate].name)
            .output()
            .await
            .map_err(|e| format!("patronictl: {e}"))?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() && said.contains("Successfully switched over") {
            Ok(said)
        } else {
            Err(format!("patronictl switchover: {said}"))
        }
    }

    pub fn kill(&mut self, member: usize) {
        self.members[member].kill();
    }

    pub fn restart(&mut self, member: usize) {
        self.members[member].start();
    }

    /// Freezes (SIGSTOP) or thaws etcd: the DCS stops answering while every member and the
    /// network go on, as the Kubernetes API does for pgha in `Cluster::pause_apiserver`.
    pub fn pause_etcd(&self, paused: bool) {
        let signal = if paused {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        let pid = nix::unistd::Pid::from_raw(self.etcd.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        crate::ha::keep_logs_on_panic(self.dir.path(), "patroni");
        for member in &mut self.members {
            member.kill();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// libpq's multi-host connection string for the three members: the first that accepts
/// writes wins.
fn conninfo(members: &[Member]) -> String {
    let hosts: Vec<String> = members.iter().map(|m| m.ip.to_string()).collect();
    format!(
        "host={} port={PG_PORT} user=postgres password={PASSWORD} dbname=postgres \
         target_session_attrs=read-write connect_timeout=2",
        hosts.join(",")
    )
}

async fn start_etcd(dir: &Path, address: SocketAddr) -> Child {
    let peer = SocketAddr::new(address.ip(), address.port() + 1);
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let etcd = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://{address}"))
        .arg(format!("--advertise-client-urls=http://{address}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=bench=http://{peer}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd (Debian's etcd-server; scripts/install-bench-deps.sh installs it)");
    crate::eventually::eventually(Duration::from_secs(30), "etcd listening", || async {
        TcpStream::connect(address).await.ok().map(drop)
    })
    .await;
    etcd
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_postgres(path: &Path) {
    let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
    for entry in std::fs::read_dir(path).unwrap().flatten() {
        std::os::unix::fs::chown(entry.path(), Some(user.uid.as_raw()), None).unwrap();
    }
}

/// The Writer takes one address; this local one hands each of its connections to the member
/// that accepts writes, chosen as libpq chooses: tokio-postgres connects with the
/// multi-host `target_session_attrs=read-write` string and asks the server its address.
struct Router {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Router {
    async fn start(conninfo: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pass(client, conninfo.clone()));
            }
        });
        Self { address, task }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays `client` to the writable member until either side closes; closes at once when no
/// member accepts writes (the client then sees a failed connection and retries).
async fn pass(mut client: TcpStream, conninfo: String) {
    let Some(primary) = writable_member(&conninfo).await else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(primary).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn writable_member(conninfo: &str) -> Option<SocketAddr> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT host(inet_server_addr())", &[])
        .await
        .ok()?;
    let ip: Ipv4Addr = row.get::<_, String>(0).parse().ok()?;
    Some(SocketAddr::from((ip, PG_PORT)))
}
