//! Monitoring with Prometheus itself (Debian's `prometheus` package; scripts/install-deps.sh
//! installs it): a real Prometheus server scrapes the agents and the operator on the local
//! cluster, and the alert rules in deploy/monitoring/ are loaded and unit-tested by promtool —
//! every rule parses, every alert says what happened and what to do, and each fires on the
//! series it is for and not on healthy ones (tests/monitoring/alerts_test.yaml).
//!
//! The same cluster serves `kubectl pgha` (the `pgha` binary): `status` shows the primary and
//! both replicas streaming, then the frozen replica as not streaming; `psql` reaches the
//! primary and a replica; `report` writes a tarball without a Secret's value.

#[path = "common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use pgha::api::PgCluster;
use pgha_e2e::{Fault, PodRef};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use eventually::eventually;
use install::{create, healthy, installed, pgha};
use writer::{Target, connect};

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/install-deps.sh installs it)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn alert_rules_load_and_fire_on_what_they_are_for() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/monitoring/alerts.yaml")).unwrap();
    let resource: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(resource["kind"], "PrometheusRule");
    let groups = resource["spec"]["groups"].clone();
    let dir = tempfile::tempdir().unwrap();

    let full = serde_json::json!({ "groups": groups });
    std::fs::write(dir.path().join("full.json"), full.to_string()).unwrap();
    let checked = promtool(&["check", "rules", "full.json"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");

    // The tests compare annotations exactly; they spell out the summaries, and the longer
    // descriptions are checked here instead: each alert has both.
    let mut tested = groups.clone();
    let mut alerts = Vec::new();
    for group in tested.as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let annotations = rule["annotations"].as_object_mut().unwrap();
            for key in ["summary", "description"] {
                let said = annotations.get(key).and_then(|v| v.as_str()).unwrap_or("");
                assert!(said.len() > 20, "{name}: {key} {said:?}");
            }
            annotations.remove("description");
            alerts.push(name);
        }
    }
    let rules = serde_json::json!({ "groups": tested });
    std::fs::write(dir.path().join("rules.json"), rules.to_string()).unwrap();
    let cases = std::fs::read_to_string(root.join("tests/monitoring/alerts_test.yaml")).unwrap();
    for alert in &alerts {
        assert!(
            cases.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
    std::fs::write(dir.path().join("alerts_test.yaml"), cases).unwrap();
    promtool(&["test", "rules", "alerts_test.yaml"], dir.path());
}

#[test]
fn the_dashboard_loads_and_every_panel_expression_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/monitoring/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    // Each expression as a recording rule: promtool parses it as Prometheus would, with the
    // dashboard's variables filled in.
    let mut rules = Vec::new();
    for panel in panels {
        let id = panel["id"].as_i64().unwrap();
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(
            panel["gridPos"]["w"].as_i64().is_some(),
            "panel {id} has no place"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {id} shows nothing");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            rules.push(serde_json::json!({
                "record": format!("dashboard:panel_{id}_{}", target["refId"].as_str().unwrap()),
                "expr": expr.replace("$namespace", "shop").replace("$cluster", "orders"),
            }));
        }
    }
    assert!(rules.len() >= 10, "{} expressions", rules.len());
    let dir = tempfile::tempdir().unwrap();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.path().join("dashboard.json"), file.to_string()).unwrap();
    let checked = promtool(&["check", "rules", "dashboard.json"], dir.path());
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// A Prometheus server on loopback with file-based discovery; stopped on drop.
struct Prometheus {
    child: tokio::process::Child,
    address: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [{
                "job_name": "pgha",
                "file_sd_configs": [{"files": [dir.path().join("targets.json")], "refresh_interval": "1s"}],
            }],
        });
        std::fs::write(dir.path().join("prometheus.yml"), config.to_string()).unwrap();
        std::fs::write(dir.path().join("targets.json"), "[]").unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect(
                "prometheus (Debian's prometheus package; scripts/install-deps.sh installs it)",
            );
        let mut prometheus = Self {
            child,
            address: ([127, 0, 0, 1], port).into(),
            dir,
        };
        let address = prometheus.address;
        let ready = async {
            loop {
                if let Ok(mut stream) = tokio::net::TcpStream::connect(address).await {
                    let _ = stream.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").await;
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer).await;
                    if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .is_err()
        {
            let exited = prometheus.child.try_wait();
            let log = std::fs::read_to_string(prometheus.dir.path().join("prometheus.log"));
            panic!("prometheus not ready within 60 s ({exited:?}): {log:?}");
        }
        prometheus
    }

    /// The targets to scrape, each with its labels.
    fn discover(&self, targets: &[(String, Value)]) {
        let groups: Vec<Value> = targets
            .iter()
            .map(|(target, labels)| json!({"targets": [target], "labels": labels}))
            .collect();
        let path = self.dir.path().join("targets.json");
        let fresh = self.dir.path().join("targets.json.new");
        std::fs::write(&fresh, Value::from(groups).to_string()).unwrap();
        std::fs::rename(fresh, path).unwrap();
    }

    /// An instant PromQL query: the result vector as (labels, value).
    async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut stream = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let request = format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let body: Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1)
            .unwrap_or_else(|e| panic!("{promql}: {e}: {response}"));
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// The single value `promql` returns, if it returns one.
    async fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).await.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Every running pod of `namespace` selected by `selector`, as a scrape target on `port`.
async fn targets(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    port: u16,
) -> Vec<(String, Value)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap();
    list.items
        .iter()
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            let labels = json!({
                "namespace": namespace,
                "pod": pod.name_any(),
                "cluster": pod.labels().get("pgha.dev/cluster").cloned().unwrap_or_default(),
            });
            Some((format!("{ip}:{port}"), labels))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_kubectl_pgha_status_see_a_frozen_replica() {
    let (cluster, client) = installed(12).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), "shop");
    create(
        &clusters,
        "metadata: {name: orders}\nspec:\n  instances: 3\n  storage: {size: 1Gi}\n",
    )
    .await;
    let orders = eventually(Duration::from_secs(180), "orders Healthy", || {
        healthy(&clusters, "orders", 3)
    })
    .await;
    let primary = orders.status.unwrap().current_primary.unwrap();
    let prometheus = Prometheus::start().await;
    // Three instances and both operator replicas, once every pod has its address.
    let all = eventually(
        Duration::from_secs(60),
        "five pods with addresses",
        || async {
            let mut all = targets(
                &client,
                "shop",
                "app.kubernetes.io/managed-by=pgha,app.kubernetes.io/component=instance",
                8000,
            )
            .await;
            let operators = "app.kubernetes.io/component=operator";
            all.extend(targets(&client, "pgha-system", operators, 8080).await);
            (all.len() == 5).then_some(all)
        },
    )
    .await;
    prometheus.discover(&all);

    // A primary and two replicas, each seen by Prometheus; one operator leads.
    let roles = "count by (role) (pgha_role{cluster=\"orders\"} == 1)";
    eventually(
        Duration::from_secs(60),
        "a primary and two replicas scraped",
        || async {
            let by_role = prometheus.query(roles).await;
            let count = |role: &str| {
                by_role
                    .iter()
                    .find(|(m, _)| m["role"] == role)
                    .map(|(_, v)| *v)
            };
            (count("primary") == Some(1.0) && count("replica") == Some(2.0)).then_some(())
        },
    )
    .await;
    // Both operator replicas scraped: one leads.
    eventually(Duration::from_secs(30), "one leading operator", || async {
        let operators = prometheus.value("count(pgha_leader)").await;
        let leading = prometheus.value("sum(pgha_leader)").await;
        (operators == Some(2.0) && leading == Some(1.0)).then_some(())
    })
    .await;
    let on_primary = format!("pgha_role{{pod=\"{primary}\",role=\"primary\"}}");
    assert_eq!(prometheus.value(&on_primary).await, Some(1.0));
    let standbys = format!("count(pgha_standby_info{{pod=\"{primary}\"}})");
    eventually(
        Duration::from_secs(30),
        "two standbys seen from the primary",
        || async { (prometheus.value(&standbys).await == Some(2.0)).then_some(()) },
    )
    .await;
    assert!(
        prometheus
            .value("sum(pgha_reconciles_total{controller=\"cluster\"})")
            .await
            .is_some_and(|n| n > 0.0)
    );

    // `pgha status`: the primary and two streaming replicas, as the primary sees them.
    let status = |screen: Value, name: &str| {
        let rows = screen["instances"].as_array().unwrap();
        let row = rows.iter().find(|r| r["name"] == name).unwrap();
        row["replication"].as_str().unwrap().to_string()
    };
    let screen = status_json(&cluster).await;
    for name in ["orders-1", "orders-2", "orders-3"] {
        let want = if name == primary {
            "primary"
        } else {
            "streaming"
        };
        assert_eq!(status(screen.clone(), name), want, "{screen:#}");
    }
    println!(
        "{}",
        pgha(&cluster, &["status", "orders", "-n", "shop"])
            .await
            .unwrap()
    );

    // `pgha psql`: the primary through -rw, a replica through -ro; no password shown.
    let app = Target::rw(&cluster, &client, "shop", "orders", "app").await;
    let psql = |replica: bool| {
        let mut args = vec!["psql", "orders", "-n", "shop"];
        if replica {
            args.push("--replica");
        }
        args.extend(["--", "-tAc", "SELECT pg_is_in_recovery()"]);
        let cluster = &cluster;
        async move { pgha(cluster, &args).await.unwrap() }
    };
    assert_eq!(psql(false).await.trim(), "f");
    let on_replica = psql(true).await;
    assert_eq!(on_replica.trim(), "t");
    assert!(!on_replica.contains(&app.password));

    // `pgha report`: the objects, each agent's report, logs; Secrets without their values.
    let report = tempfile::tempdir().unwrap();
    let file = report.path().join("orders.tar.gz");
    pgha(
        &cluster,
        &[
            "report",
            "orders",
            "-n",
            "shop",
            "-f",
            file.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let files = untar(&file);
    let names: Vec<&String> = files.keys().collect();
    for want in [
        "pgcluster.yaml",
        "pginstances.yaml",
        "secrets.yaml",
        "events.yaml",
    ] {
        assert!(
            files.contains_key(&format!("shop-orders/{want}")),
            "{names:?}"
        );
    }
    let agent = &files[&format!("shop-orders/agents/{primary}.json")];
    let agent: Value = serde_json::from_str(agent).unwrap();
    assert_eq!(agent["role"], "primary");
    assert!(
        names.iter().any(|n| n.starts_with("shop-orders/logs/")),
        "{names:?}"
    );
    for (name, text) in &files {
        assert!(!text.contains(&app.password), "{name} has the app password");
    }
    assert!(files["shop-orders/secrets.yaml"].contains("orders-app"));

    // A frozen replica falls behind while the primary takes writes.
    let frozen = ["orders-1", "orders-2", "orders-3"]
        .into_iter()
        .find(|n| *n != primary)
        .unwrap();
    let pod = PodRef {
        namespace: "shop".into(),
        name: frozen.into(),
    };
    cluster.fault(&pod, None, Fault::Freeze).unwrap();
    let frozen_at = Instant::now();
    let target = Target::rw(&cluster, &client, "shop", "orders", "app").await;
    // Heard from no more, it leaves -ro: from then on every new connection through -ro reads
    // on the other replica (six in a row: three would have reached the frozen one in turn).
    // Meanwhile the primary's metrics see it fall behind, before wal_sender_timeout (5 s)
    // drops its walsender.
    let ro = cluster
        .service_address("shop", "orders-ro", None)
        .await
        .unwrap();
    let out_of_ro = async {
        let mut streak = (0, Instant::now());
        while streak.0 < 6 {
            assert!(
                frozen_at.elapsed() < Duration::from_secs(30),
                "-ro still sends reads to the frozen {frozen}"
            );
            let read = match connect(&target, &ro.ip().to_string(), ro.port()).await {
                Some(c) => c.query_one("SELECT 1", &[]).await.is_ok(),
                None => false,
            };
            streak = match (read, streak.0) {
                (false, _) => (0, Instant::now()),
                (true, 0) => (1, Instant::now()),
                (true, n) => (n + 1, streak.1),
            };
        }
        streak.1.duration_since(frozen_at)
    };
    let lag = format!(
        "pgha_standby_lag_bytes{{pod=\"{primary}\",application_name=\"{frozen}\",stage=\"replay\"}}"
    );
    let lag_growing = async {
        let rw = connect(
            &target,
            &target.address.ip().to_string(),
            target.address.port(),
        )
        .await
        .unwrap();
        rw.batch_execute("CREATE TABLE filler (n int)")
            .await
            .unwrap();
        eventually(
            Duration::from_secs(60),
            "the frozen replica's lag growing",
            || async {
                rw.batch_execute("INSERT INTO filler SELECT generate_series(1, 50000)")
                    .await
                    .ok()?;
                (prometheus.value(&lag).await? > 4_000_000.0).then_some(())
            },
        )
        .await;
    };
    // The cluster is Degraded, and says which instance does not serve.
    let degraded = async {
        let condition = eventually(
            Duration::from_secs(30),
            "Degraded naming the frozen replica",
            || async {
                let status = clusters.get("orders").await.ok()?.status?;
                let c = status
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Degraded")?;
                (c.status == "True" && c.message.contains(frozen)).then_some(c)
            },
        )
        .await;
        (condition, frozen_at.elapsed())
    };
    let (out_of_ro, (degraded, degraded_after), ()) =
        tokio::join!(out_of_ro, degraded, lag_growing);
    println!(
        "frozen {frozen}: out of -ro after {out_of_ro:?}, Degraded after {degraded_after:?}: {}",
        degraded.message
    );
    // The primary drops it after wal_sender_timeout: `pgha status` says it is not streaming.
    eventually(
        Duration::from_secs(30),
        "the frozen replica not streaming",
        || async { (status(status_json(&cluster).await, frozen) == "notStreaming").then_some(()) },
    )
    .await;
    println!(
        "{}",
        pgha(&cluster, &["status", "orders", "-n", "shop"])
            .await
            .unwrap()
    );
    // The replica's own agent is frozen with it: Prometheus sees it down.
    let up = format!("up{{pod=\"{frozen}\"}}");
    eventually(
        Duration::from_secs(30),
        "the frozen pod's scrapes failing",
        || async { (prometheus.value(&up).await? == 0.0).then_some(()) },
    )
    .await;
    cluster.fault(&pod, None, Fault::Thaw).unwrap();
    eventually(Duration::from_secs(60), "the replica caught up", || async {
        (prometheus.value(&lag).await? == 0.0).then_some(())
    })
    .await;
    // Back by itself: ready, and the cluster no longer Degraded.
    let back = eventually(Duration::from_secs(60), "orders Healthy again", || {
        healthy(&clusters, "orders", 3)
    })
    .await;
    let degraded = back.status.unwrap().conditions;
    let degraded = degraded.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "False", "{degraded:?}");
}

async fn status_json(cluster: &pgha_e2e::Cluster) -> Value {
    let out = pgha(cluster, &["status", "orders", "-n", "shop", "-o", "json"])
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Path → text of every file in a .tar.gz.
fn untar(file: &Path) -> std::collections::BTreeMap<String, String> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap());
    let mut archive = tar::Archive::new(gz);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            (path, text)
        })
        .collect()
}
