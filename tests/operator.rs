//! The operator on the local cluster (issue "Operator controllers"): `pgha operator` runs the
//! controllers, the instance pods run `pgha agent` as the pgha/postgres image, and a
//! PgCluster becomes a primary with streaming replicas behind its Services.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use pgha::api::cluster::ClusterPhase;
use pgha::api::instance::InstanceRole;
use pgha::api::{PgCluster, PgInstance};
use pgha_e2e::{Cluster, ClusterOptions, ImageTable};

#[path = "common/eventually.rs"]
mod eventually;
#[path = "common/kube.rs"]
mod kube_support;

use eventually::eventually as wait_for;

/// The operator as a local process with the admin kubeconfig; killed when dropped.
async fn operator(cluster: &Cluster) -> tokio::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(cluster.state_dir().join("operator.log")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_pgha"))
        .arg("operator")
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("POD_NAMESPACE", "pgha-system")
        .env("POD_NAME", "operator-test")
        .env("PGHA_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info,kube=warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn namespace(client: &Client, name: &str) {
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

fn secret_value(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

async fn connect(address: SocketAddr, app: &Secret) -> Option<tokio_postgres::Client> {
    let config = format!(
        "host={} port={} user={} password={} dbname={} connect_timeout=3",
        address.ip(),
        address.port(),
        secret_value(app, "username"),
        secret_value(app, "password"),
        secret_value(app, "dbname"),
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

async fn healthy(clusters: &Api<PgCluster>, name: &str, instances: i32) -> Option<PgCluster> {
    let cluster = clusters.get(name).await.ok()?;
    let status = cluster.status.as_ref()?;
    (status.phase == Some(ClusterPhase::Healthy) && status.ready_instances == instances)
        .then_some(cluster)
}

#[tokio::test]
async fn a_minimal_cluster_comes_up_replicates_and_keeps_a_replica_across_pod_loss() {
    let pgha = Path::new(env!("CARGO_BIN_EXE_pgha"));
    let cluster = Cluster::start(ClusterOptions {
        index: 4,
        images: ImageTable::default().with_pgha(pgha),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = cluster.client();
    kube_support::install_crds(&client).await;
    namespace(&client, "pgha-system").await;
    namespace(&client, "shop").await;
    let _operator = operator(&cluster).await;

    // What an application team applies.
    let minimal: PgCluster = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/examples/minimal.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), "shop");
    let applied = Instant::now();
    clusters
        .create(&PostParams::default(), &minimal)
        .await
        .unwrap();
    let log =
        || std::fs::read_to_string(cluster.state_dir().join("operator.log")).unwrap_or_default();
    let ready = wait_for(
        Duration::from_secs(180),
        "orders Healthy with 3 ready",
        || healthy(&clusters, "orders", 3),
    )
    .await;
    let took = applied.elapsed();
    println!("minimal.yaml → 3 instances ready in {took:.1?}");
    let status = ready.status.unwrap();
    assert_eq!(
        status.current_primary.as_deref(),
        Some("orders-1"),
        "{}",
        log()
    );
    let roles: Vec<_> = status
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("orders-1", Some(InstanceRole::Primary)),
            ("orders-2", Some(InstanceRole::Replica)),
            ("orders-3", Some(InstanceRole::Replica)),
        ]
    );
    assert!(status.instances[1..].iter().all(|i| i.lag_bytes.is_some()));

    // Writes through -rw, with the generated credentials, are read through -ro.
    let app = Api::<Secret>::namespaced(client.clone(), "shop")
        .get("orders-app")
        .await
        .unwrap();
    let rw = cluster
        .service_address("shop", "orders-rw", None)
        .await
        .unwrap();
    let ro = cluster
        .service_address("shop", "orders-ro", None)
        .await
        .unwrap();
    let writer = connect(rw, &app).await.expect("connect through orders-rw");
    writer
        .batch_execute(
            "CREATE TABLE marks (n int); INSERT INTO marks SELECT generate_series(1, 100)",
        )
        .await
        .unwrap();
    let reader = connect(ro, &app).await.expect("connect through orders-ro");
    let in_recovery: bool = reader
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "orders-ro reached the primary");
    wait_for(Duration::from_secs(10), "rows on a replica", || async {
        let row = reader
            .query_one("SELECT count(*) FROM marks", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 100).then_some(())
    })
    .await;

    // A replica's pod is deleted: it comes back on its volume, without a new initdb or clone.
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), "shop");
    let before = instances.get("orders-2").await.unwrap().status.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let old_uid = pods.get("orders-2").await.unwrap().uid();
    pods.delete("orders-2", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(120),
        "orders-2 back and ready",
        || async {
            let pod = pods.get_opt("orders-2").await.ok()??;
            let ip = pod.status.clone()?.pod_ip?;
            let status = instances.get("orders-2").await.ok()?.status?;
            let reported_by_new_pod = status.endpoint.as_ref().is_some_and(|e| e.host == ip);
            (pod.uid() != old_uid
                && reported_by_new_pod
                && status.ready
                && status.role == Some(InstanceRole::Replica))
            .then_some(())
        },
    )
    .await;
    let after = instances.get("orders-2").await.unwrap().status.unwrap();
    assert_eq!(after.system_identifier, before.system_identifier);
    assert_eq!(after.init_failures, Some(0));
    writer
        .batch_execute("INSERT INTO marks VALUES (101)")
        .await
        .unwrap();
    let replica_ip = after.endpoint.unwrap().host;
    let direct: SocketAddr = format!("{replica_ip}:5432").parse().unwrap();
    let replica = connect(direct, &app).await.expect("connect to orders-2");
    wait_for(Duration::from_secs(10), "orders-2 caught up", || async {
        let row = replica
            .query_one("SELECT count(*) FROM marks", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 101).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(15), "orders Healthy again", || {
        healthy(&clusters, "orders", 3)
    })
    .await;
}
