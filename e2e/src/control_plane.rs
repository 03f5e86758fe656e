use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use tempfile::TempDir;

use crate::net;

/// The pinned Kubernetes release; `e2e/build-k8s.sh` builds it.
pub const KUBERNETES_VERSION: &str = "v1.33.13";

/// Where `e2e/build-k8s.sh` puts the binaries.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("PGHA_E2E_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/pgha-e2e")
        }
    }
    .join(KUBERNETES_VERSION)
}

use crate::{Error, fail};

/// A running etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
pub struct ControlPlane {
    dir: TempDir,
    children: Vec<Child>,
    port: u16,
}

/// The bearer token of the admin user (group `system:masters`).
const ADMIN_TOKEN: &str = "pgha-e2e-admin";

impl ControlPlane {
    /// [`ControlPlane::start_at`] with address block 0.
    pub fn start() -> Result<Self, Error> {
        Self::start_at(0)
    }

    /// Starts etcd and kube-apiserver, waits until the API server reports ready, then starts
    /// the controller-manager and the scheduler. Service cluster IPs come from the loopback
    /// block of `index` (see [`net`]), so that the Service proxies can listen on them.
    ///
    /// Ports are picked free and then handed to the processes, so a cluster starting at the
    /// same moment can take one first; a start whose process exits is tried again, twice.
    pub fn start_at(index: u8) -> Result<Self, Error> {
        let mut attempt = 1;
        loop {
            match Self::try_start(index) {
                Err(e) if attempt < 3 => {
                    eprintln!("pgha-e2e: the control plane did not start ({e}); trying again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn try_start(index: u8) -> Result<Self, Error> {
        let bin = bin_dir();
        for name in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            if !bin.join(name).is_file() {
                return Err(fail(format!(
                    "{} is missing: run e2e/build-k8s.sh (make test does)",
                    bin.join(name).display()
                )));
            }
        }
        let dir = tempfile::tempdir().map_err(fail)?;
        let mut plane = Self {
            port: free_port()?,
            children: Vec::new(),
            dir,
        };
        let d = plane.dir.path().to_path_buf();
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(d.join("sa.key"))
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(d.join("sa.key"))
            .arg("-out")
            .arg(d.join("sa.pub")))?;
        std::fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,1,\"system:masters\"\n"),
        )
        .map_err(fail)?;

        let (client, peer) = (free_port()?, free_port()?);
        let etcd = Command::new(bin.join("etcd"))
            .arg("--data-dir")
            .arg(d.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(log(&d, "etcd")?)
            .spawn()
            .map_err(fail)?;
        plane.children.push(etcd);
        let apiserver = Command::new(bin.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={}", plane.port))
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg(format!(
                "--service-cluster-ip-range={}",
                net::service_cidr(index)
            ))
            .stdout(Stdio::null())
            .stderr(log(&d, "kube-apiserver")?)
            .spawn()
            .map_err(fail)?;
        plane.children.push(apiserver);
        plane.wait_ready(Duration::from_secs(60))?;
        plane.write_kubeconfig()?;
        // Garbage collection, namespaces, service-account tokens, PV binding, node lifecycle
        // and the rest of the built-in controllers; no leader election with one instance, no
        // serving port. Not the endpoint controllers: the API refuses the loopback pod
        // addresses they would store, and their warning Events would bury the others (the
        // Service proxies compute endpoints themselves). A node whose agent stops renewing
        // its Lease is NotReady after 10 s instead of 50 s, so that node-loss scenarios run in
        // seconds.
        let controller_manager = Command::new(bin.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", plane.kubeconfig().display()))
            .args(["--leader-elect=false", "--secure-port=0"])
            .arg(
                "--controllers=*,-endpoints-controller,-endpointslice-controller,\
                 -endpointslice-mirroring-controller",
            )
            .args([
                "--node-monitor-grace-period=10s",
                "--node-monitor-period=1s",
            ])
            .arg("--use-service-account-credentials=false")
            .arg(format!(
                "--root-ca-file={}",
                d.join("certs/apiserver.crt").display()
            ))
            .arg(format!(
                "--service-account-private-key-file={}",
                d.join("sa.key").display()
            ))
            .stdout(Stdio::null())
            .stderr(log(&d, "kube-controller-manager")?)
            .spawn()
            .map_err(fail)?;
        plane.children.push(controller_manager);
        let scheduler = Command::new(bin.join("kube-scheduler"))
            .arg(format!("--kubeconfig={}", plane.kubeconfig().display()))
            .args(["--leader-elect=false", "--secure-port=0"])
            .stdout(Stdio::null())
            .stderr(log(&d, "kube-scheduler")?)
            .spawn()
            .map_err(fail)?;
        plane.children.push(scheduler);
        Ok(plane)
    }

    /// The kube-apiserver's process ID.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.children.get(1).map(std::process::Child::id)
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// An admin kubeconfig that verifies the API server's certificate (embedded, so that the
    /// file can be copied elsewhere).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The API server's serving certificate chain (PEM), embedded in the kubeconfig.
    fn ca_pem(&self) -> Result<String, Error> {
        std::fs::read_to_string(self.dir.path().join("certs/apiserver.crt")).map_err(fail)
    }

    /// The API server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end of a component's log, for failure messages.
    pub fn log(&self, component: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{component}.log")))
            .unwrap_or_default();
        text[text.len().saturating_sub(4000)..].to_string()
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + within;
        let cert = self.dir.path().join("certs/apiserver.crt");
        loop {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(fail(format!(
                        "a control-plane process exited ({status}):\n{}\n{}",
                        self.log("etcd"),
                        self.log("kube-apiserver")
                    )));
                }
            }
            // The API server writes its self-signed certificate before it serves.
            let ready = cert.is_file()
                && Command::new("curl")
                    .args(["-sf", "--max-time", "2", "--cacert"])
                    .arg(&cert)
                    .arg("-H")
                    .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
                    .arg(format!("{}/readyz", self.server()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "kube-apiserver not ready within {within:?}:\n{}",
                    self.log("kube-apiserver")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn write_kubeconfig(&self) -> Result<(), Error> {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem()?);
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
             contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\n\
             current-context: e2e\n",
            self.server(),
        );
        std::fs::write(self.kubeconfig(), kubeconfig).map_err(fail)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The API server first, so it does not log etcd's disappearance.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(fail)?;
    Ok(listener.local_addr().map_err(fail)?.port())
}

fn log(dir: &Path, component: &str) -> Result<std::fs::File, Error> {
    std::fs::File::create(dir.join(format!("{component}.log"))).map_err(fail)
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    let out = cmd.output().map_err(fail)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{:?}: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}
