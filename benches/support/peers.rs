//! The peer tools of the archive benchmark, on the same s3s-fs server as pgha:
//! - barman-cloud 3.4 with `--snappy` (its fastest mode), run from a venv that has
//!   python-snappy 0.7.3 because Debian's python3-snappy breaks it
//!   (`scripts/install-bench-deps.sh` makes the venv);
//! - pgBackRest 2.45 with lz4, process-max 2 and bundling of small files (its fastest settings), through stunnel because its S3 client only
//!   speaks TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::s3::{free_port, wait_listening};

/// The venv `scripts/install-bench-deps.sh` makes; outside /root so that Postgres's
/// archive_command, which runs as `postgres`, can use it.
const BARMAN_VENV: &str = "/opt/pgha-bench/barman-venv";
pub const STANZA: &str = "bench";
const KEY: &str = "test-access";
const SECRET: &str = "test-secret";

pub struct Peers {
    dir: PathBuf,
    s3_port: u16,
    stunnel: Child,
}

impl Peers {
    /// Writes the peers' configuration into `dir` (readable by `postgres`) for the instance
    /// at `data_dir` / `socket_dir`, and starts the TLS proxy in front of s3s-fs.
    pub fn start(
        dir: &Path,
        s3_port: u16,
        bucket: &str,
        data_dir: &Path,
        socket_dir: &Path,
    ) -> Self {
        std::fs::create_dir_all(dir.join("pgbackrest")).unwrap();
        let shell = |script: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir)
                .status()
                .unwrap();
            assert!(ok.success(), "{script}");
        };
        shell(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 \
             -subj /CN=127.0.0.1 2>/dev/null && chmod -R a+rwX .",
        );
        let tls_port = free_port();
        std::fs::write(
            dir.join("stunnel.conf"),
            format!(
                "foreground = yes\npid =\n[s3]\naccept = 127.0.0.1:{tls_port}\n\
                 connect = 127.0.0.1:{s3_port}\ncert = {0}/cert.pem\nkey = {0}/key.pem\n",
                dir.display()
            ),
        )
        .unwrap();
        let stunnel = Command::new("stunnel4")
            .arg(dir.join("stunnel.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 (scripts/install-bench-deps.sh installs it)");
        wait_listening(tls_port);
        std::fs::write(
            dir.join("pgbackrest.conf"),
            format!(
                "[global]\nrepo1-type=s3\nrepo1-path=/pgbackrest\nrepo1-s3-bucket={bucket}\n\
                 repo1-s3-endpoint=127.0.0.1\nrepo1-s3-port={tls_port}\nrepo1-s3-region=us-east-1\n\
                 repo1-s3-key={KEY}\nrepo1-s3-key-secret={SECRET}\nrepo1-s3-uri-style=path\n\
                 repo1-s3-verify-tls=n\nrepo1-retention-full=9\ncompress-type=lz4\nprocess-max=2\n\
                 start-fast=y\nrepo1-bundle=y\nlog-level-console=warn\nlog-level-file=off\n\
                 lock-path={lock}\narchive-timeout=300\n\n\
                 [{STANZA}]\npg1-path={data}\npg1-socket-path={socket}\npg1-port=5432\npg1-user=postgres\n",
                lock = dir.join("pgbackrest").display(),
                data = data_dir.display(),
                socket = socket_dir.display(),
            ),
        )
        .unwrap();
        shell("chmod -R a+rwX .");
        Self {
            dir: dir.to_path_buf(),
            s3_port,
            stunnel,
        }
    }

    /// A barman-cloud command line (`tool` is `backup`, `restore`, `wal-archive`…) for a
    /// shell, credentials included: Postgres runs archive and restore commands with its own
    /// environment.
    pub fn barman(&self, tool: &str) -> String {
        format!(
            "AWS_ACCESS_KEY_ID={KEY} AWS_SECRET_ACCESS_KEY={SECRET} {BARMAN_VENV}/bin/python \
             /usr/bin/barman-cloud-{tool} --endpoint-url http://127.0.0.1:{}",
            self.s3_port
        )
    }

    /// barman-cloud's archive of this server: `s3://bucket/barman`, server name `bench`.
    pub fn barman_target(&self, bucket: &str) -> String {
        format!("s3://{bucket}/barman {STANZA}")
    }

    /// A pgBackRest command line with this benchmark's configuration.
    pub fn pgbackrest(&self) -> String {
        format!(
            "pgbackrest --config={} --stanza={STANZA}",
            self.dir.join("pgbackrest.conf").display()
        )
    }

    /// archive_command that archives each WAL file with pgha, barman-cloud and pgBackRest in
    /// turn, so that each tool's restore replays the same WAL from its own archive.
    pub fn archive_command(&self, pgha_push: &str, bucket: &str) -> String {
        format!(
            "{pgha_push} %p && {} --snappy {} %p && {} archive-push %p",
            self.barman("wal-archive"),
            self.barman_target(bucket),
            self.pgbackrest()
        )
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = self.stunnel.kill();
        let _ = self.stunnel.wait();
    }
}

/// Runs `script` with `sh -c` and returns how long it took; panics with its output on failure.
pub fn timed(script: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}
