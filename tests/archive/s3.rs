//! A real S3-compatible server on loopback: s3s-fs, storing objects as files in a temporary
//! directory, so a test can stop it, start it again, and damage an object on disk.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgha::archive::{Store, StoreConfig};
use tempfile::TempDir;

pub const BUCKET: &str = "pgha-test";
const PREFIX: &str = "clusters/one";

pub struct S3 {
    dir: TempDir,
    port: u16,
    server: Option<Child>,
}

/// `$PGHA_S3S_FS`, else where scripts/install-deps.sh installs it.
fn binary() -> PathBuf {
    std::env::var_os("PGHA_S3S_FS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/pgha-tools/s3s-fs/bin/s3s-fs")
        },
        PathBuf::from,
    )
}

impl S3 {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Postgres's archive_command reads the store file and the keys as the postgres user.
        std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::write(keys.join("ACCESS_KEY_ID"), "test-access\n").unwrap();
        std::fs::write(keys.join("SECRET_ACCESS_KEY"), "test-secret\n").unwrap();
        let port = free_port();
        let mut s3 = Self {
            dir,
            port,
            server: None,
        };
        std::fs::write(
            s3.store_file(),
            format!(
                "bucket: {BUCKET}\npath: {PREFIX}\nendpoint: http://127.0.0.1:{port}\n\
                 credentialsDir: {}\n",
                keys.display()
            ),
        )
        .unwrap();
        s3.resume();
        s3
    }

    /// Starts the server (again) on the same port and data.
    pub fn resume(&mut self) {
        assert!(self.server.is_none());
        let log = std::fs::File::create(self.dir.path().join("s3s-fs.log")).unwrap();
        let server = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", "test-access", "--secret-key", "test-secret"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} ({e}); scripts/install-deps.sh installs it",
                    binary().display()
                )
            });
        self.server = Some(server);
        wait_listening(self.port);
    }

    /// Stops the server as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// The YAML file `--store` takes.
    pub fn store_file(&self) -> PathBuf {
        self.dir.path().join("store.yaml")
    }

    pub fn store(&self) -> Store {
        Store::new(&StoreConfig::from_file(&self.store_file()).unwrap()).unwrap()
    }

    /// The file on disk holding the object at `key` (under the prefix).
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.bucket_dir().join(PREFIX).join(key)
    }

    /// The folder holding the bucket's objects (other tools' archives sit beside ours).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("data").join(BUCKET)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every object under `prefix` of the bucket, by file, with its content: what "wrote
    /// nothing there" is checked against.
    pub fn objects(&self, prefix: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = BTreeMap::new();
        let mut folders = vec![self.bucket_dir().join(prefix)];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else if let Ok(content) = std::fs::read(&path) {
                    all.insert(path, content);
                }
            }
        }
        all
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on at the moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 10 s until something accepts connections on `port`.
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
