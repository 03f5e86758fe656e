//! `pgha agent` as a process: orders from a file, status over HTTP, SIGTERM stops Postgres
//! with a shutdown checkpoint.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::cluster::{Workspace, wait_for_row};
use crate::eventually::eventually;

/// A GET on the agent's status port: (status code, body).
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn write_secrets(dir: &Path) {
    for (file, value) in [
        ("superuser/password", crate::cluster::SUPERUSER_PASSWORD),
        ("replication/password", "repl-pass"),
        ("app/username", "app"),
        ("app/password", "app-pass"),
        ("app/dbname", "app"),
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, value).unwrap();
    }
}

fn spawn_agent(ws: &Workspace, name: &str, orders: &Path, status_addr: &str) -> Child {
    let settings = ws.settings(name);
    let secrets = ws.dir.path().join("secrets");
    write_secrets(&secrets);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgha"));
    cmd.arg("agent")
        .args(["--name", name, "--listen", &settings.listen_address])
        .arg("--data-dir")
        .arg(&settings.data_dir)
        .arg("--run-dir")
        .arg(&settings.run_dir)
        .arg("--secrets-dir")
        .arg(&secrets)
        .arg("--orders")
        .arg(orders)
        .args(["--status-addr", status_addr])
        .arg("--pg-bin")
        .arg(&settings.bin_dir)
        .arg("--log-file")
        .arg(settings.log_file.as_ref().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(user) = &settings.run_as {
        cmd.args(["--run-as", &user.name]);
    }
    cmd.spawn().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_follows_orders_and_shuts_down_cleanly_on_sigterm() {
    let ws = Workspace::new(&["a"]);
    let orders = ws.dir.path().join("orders.yaml");
    std::fs::write(&orders, "role: primary\nconfig:\n  members: [a]\n").unwrap();
    let status_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = spawn_agent(&ws, "a", &orders, &status_addr);

    eventually(Duration::from_secs(60), "the agent ready", || async {
        (get(&status_addr, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let (code, body) = get(&status_addr, "/status").await.unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["role"], "primary");
    assert_eq!(status["timeline"], 1);
    assert!(
        status["systemIdentifier"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{status}"
    );
    assert_eq!(get(&status_addr, "/healthz").await.unwrap().0, 200);

    ws.client("a")
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // New orders are picked up: fence, then unfence.
    std::fs::write(
        &orders,
        "role: primary\nfenced: true\nconfig:\n  members: [a]\n",
    )
    .unwrap();
    eventually(Duration::from_secs(10), "fenced", || async {
        let (code, body) = get(&status_addr, "/status").await?;
        (code == 200 && body.contains(r#""role":"fenced""#)).then_some(())
    })
    .await;
    assert_eq!(get(&status_addr, "/readyz").await.unwrap().0, 503);
    std::fs::write(&orders, "role: primary\nconfig:\n  members: [a]\n").unwrap();
    wait_for_row(&ws, "a", 1).await;

    kill(Pid::from_raw(agent.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), agent.wait())
        .await
        .expect("the agent exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    let settings = ws.settings("a");
    let control = Command::new(settings.bin_dir.join("pg_controldata"))
        .arg(&settings.data_dir)
        .output()
        .await
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(
        control.contains("Database cluster state:               shut down\n"),
        "a clean shutdown leaves nothing to recover:\n{control}"
    );
}

/// A primary killed after its replica was promoted comes back to orders that already say
/// "follow the new primary, fenced" (what the operator orders a lost primary): once unfenced
/// it is rewound onto the new timeline. Started as a standby on its own history instead, it
/// would replay past the fork and never stream again (seen in tests/failover.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_restarted_fenced_is_rewound_before_it_follows() {
    let ws = Workspace::new(&["a", "b"]);
    let orders = ws.dir.path().join("orders.yaml");
    let members = "config:\n  members: [a, b]\n";
    std::fs::write(&orders, format!("role: primary\n{members}")).unwrap();
    let status_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = spawn_agent(&ws, "a", &orders, &status_addr);
    eventually(Duration::from_secs(60), "a ready as primary", || async {
        (get(&status_addr, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let b = ws
        .start("b", pgha::agent::Desired::Replica(ws.endpoint("a")))
        .await;
    let primary = ws.client("a").await;
    primary
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_for_row(&ws, "b", 1).await;

    // b is promoted; a, cut off from it, takes writes b never sees, then dies with its agent.
    assert_eq!(b.promote().await.unwrap(), 2);
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(100, 2000)")
        .await
        .unwrap();
    drop(primary);
    agent.kill().await.unwrap();
    let settings = ws.settings("a");
    let pid_file = std::fs::read_to_string(settings.data_dir.join("postmaster.pid")).unwrap();
    let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    kill(Pid::from_raw(postmaster), Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(10), "a's Postgres gone", || async {
        (kill(Pid::from_raw(postmaster), None).is_err()
            && crate::cluster::try_client(&ws.endpoint("a")).await.is_err())
        .then_some(())
    })
    .await;

    let b_at = ws.endpoint("b");
    let follow_b = format!(
        "role: replica\nprimary: {{host: \"{}\", port: {}}}\n{members}",
        b_at.host, b_at.port
    );
    std::fs::write(&orders, format!("fenced: true\n{follow_b}")).unwrap();
    let mut agent = spawn_agent(&ws, "a", &orders, &status_addr);
    eventually(Duration::from_secs(30), "a fenced", || async {
        let (code, body) = get(&status_addr, "/status").await?;
        (code == 200 && body.contains(r#""role":"fenced""#)).then_some(())
    })
    .await;
    std::fs::write(&orders, follow_b).unwrap();
    ws.client("b")
        .await
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap();
    wait_for_row(&ws, "a", 2).await;
    let (_, body) = get(&status_addr, "/status").await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["role"], "replica", "{status}");
    assert_eq!(status["timeline"], 2, "{status}");
    let divergent: i64 = ws
        .client("a")
        .await
        .query_one("SELECT count(*) FROM t WHERE id >= 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        divergent, 0,
        "what only the old primary had is rewound away"
    );
    agent.kill().await.unwrap();
}
