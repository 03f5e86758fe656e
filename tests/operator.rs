//! The operator on the local cluster (issue "Operator controllers"): `pgha operator` runs the
//! controllers, the instance pods run `pgha agent` as the pgha/postgres image, and a
//! PgCluster becomes a primary with streaming replicas behind its Services.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pgha::api::instance::InstanceRole;
use pgha::api::instance::PgInstanceStatus;
use pgha::api::{PgCluster, PgInstance};

#[path = "common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use install::{create, healthy, installed, leader, ready_because};

use eventually::eventually as wait_for;

/// The `orders-app` credentials and a connection with them through a Service, retried: the
/// Services follow the role labels, which follow the agents' reports.
async fn through(
    cluster: &pgha_e2e::Cluster,
    client: &Client,
    service: &str,
) -> (Secret, SocketAddr, tokio_postgres::Client) {
    let app = Api::<Secret>::namespaced(client.clone(), "shop")
        .get("orders-app")
        .await
        .unwrap();
    let address = cluster
        .service_address("shop", service, None)
        .await
        .unwrap();
    let connection = wait_for(Duration::from_secs(10), service, || connect(address, &app)).await;
    (app, address, connection)
}

fn secret_value(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// With the `-app` Secret: its credentials, and its CA to verify the server as `orders-rw`.
async fn connect(address: SocketAddr, app: &Secret) -> Option<tokio_postgres::Client> {
    let target = writer::Target {
        address,
        user: secret_value(app, "username"),
        password: secret_value(app, "password"),
        dbname: secret_value(app, "dbname"),
        tls: Some(writer::Verify {
            ca: secret_value(app, "ca.crt"),
            name: "orders-rw".into(),
        }),
    };
    writer::connect(&target, &address.ip().to_string(), address.port()).await
}

#[tokio::test]
async fn a_cluster_comes_up_replicates_survives_pod_loss_scales_and_goes_away() {
    let (cluster, client) = installed(4).await;

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
    let ready = wait_for(
        Duration::from_secs(180),
        "orders Healthy with 3 ready",
        || healthy(&clusters, "orders", 3),
    )
    .await;
    let took = applied.elapsed();
    println!("minimal.yaml → 3 instances ready in {took:.1?}");
    let status = ready.status.unwrap();
    assert_eq!(status.current_primary.as_deref(), Some("orders-1"));
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
    let (app, _, writer) = through(&cluster, &client, "orders-rw").await;
    writer
        .batch_execute(
            "CREATE TABLE marks (n int); INSERT INTO marks SELECT generate_series(1, 100)",
        )
        .await
        .unwrap();
    let (_, _, reader) = through(&cluster, &client, "orders-ro").await;
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

    // A drain of the primary's node: the PodDisruptionBudgets hold the primary's eviction
    // until the operator has moved the primary off the cordoned node, the drain completes,
    // and -rw takes writes on the new primary. Uncordoned, the evicted instance comes back.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "shop");
    let mut names: Vec<String> = budgets
        .list(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    assert_eq!(names, ["orders-primary", "orders-replica"]);
    let node = pods
        .get("orders-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .node_name
        .unwrap();
    let kubectl = |args: Vec<String>| {
        let mut cmd = tokio::process::Command::new(pgha_e2e::bin_dir().join("kubectl"));
        cmd.arg("--kubeconfig").arg(cluster.kubeconfig()).args(args);
        cmd
    };
    // Async: this process runs the nodes' agents, which carry out the evictions.
    let drained = kubectl(
        [
            "drain",
            &node,
            "--pod-selector=pgha.dev/cluster=orders",
            "--delete-emptydir-data",
            "--timeout=120s",
        ]
        .map(String::from)
        .to_vec(),
    )
    .output()
    .await
    .unwrap();
    if !drained.status.success() {
        let status = clusters.get("orders").await.unwrap().status;
        let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), "shop")
            .list(&Default::default())
            .await
            .unwrap();
        let said: Vec<_> = events.iter().map(|e| (&e.reason, &e.message)).collect();
        panic!(
            "kubectl drain {node}: {}\n{status:#?}\n{said:#?}",
            String::from_utf8_lossy(&drained.stderr)
        );
    }
    // The eviction goes through once the old primary is a replica; the switchover completes
    // when the new primary serves.
    let moved = wait_for(Duration::from_secs(60), "the primary moved", || async {
        let moved = clusters.get("orders").await.ok()?.status?.last_switchover?;
        moved.completed.is_some().then_some(moved)
    })
    .await;
    assert_eq!(moved.from, "orders-1");
    wait_for(
        Duration::from_secs(30),
        "a write after the drain",
        || async {
            let (_, _, rw) = through(&cluster, &client, "orders-rw").await;
            rw.batch_execute("INSERT INTO marks VALUES (102)")
                .await
                .ok()
        },
    )
    .await;
    let uncordoned = kubectl(vec!["uncordon".into(), node.clone()])
        .status()
        .await
        .unwrap();
    assert!(uncordoned.success());
    wait_for(
        Duration::from_secs(120),
        "orders Healthy after the drain",
        || healthy(&clusters, "orders", 3),
    )
    .await;
    let old_primary = moved.to;

    // A new image rolls through the replicas, then the primary, each pod re-created on its
    // volume; the data stays.
    patch_spec(
        &clusters,
        serde_json::json!({"image": "pgha/postgres:15.99"}),
    )
    .await;
    every_instance(
        &instances,
        Duration::from_secs(180),
        "the new image everywhere",
        |s| s.image.as_deref() == Some("pgha/postgres:15.99") && s.ready,
    )
    .await;
    let created = |name: String| {
        let pods = pods.clone();
        async move {
            pods.get(&name)
                .await
                .unwrap()
                .metadata
                .creation_timestamp
                .unwrap()
                .0
        }
    };
    let primary_pod = created(old_primary.clone()).await;
    for other in ["orders-1", "orders-2", "orders-3"] {
        if other != old_primary {
            assert!(
                created(other.into()).await < primary_pod,
                "{other} after {old_primary}"
            );
        }
    }
    let rolled = wait_for(
        Duration::from_secs(60),
        "orders Healthy on the new image",
        || healthy(&clusters, "orders", 3),
    )
    .await
    .status
    .unwrap();
    // The primary moved to an updated replica before its own turn (primaryUpdateMethod
    // switchover, the default), and the old primary was updated as a replica.
    let moved = rolled.last_switchover.clone().expect("a switchover");
    assert_eq!(moved.from, old_primary);
    assert!(moved.completed.is_some(), "{moved:?}");
    assert_eq!(rolled.current_primary, Some(moved.to));
    let (_, _, after_roll) = through(&cluster, &client, "orders-rw").await;
    let count: i64 = after_roll
        .query_one("SELECT count(*) FROM marks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 102);

    // 3 → 5: the status says so while it happens, the new replicas clone and join.
    let generation = patch_spec(&clusters, serde_json::json!({"instances": 5})).await;
    wait_for(
        Duration::from_secs(10),
        "status of the new generation, not ready",
        || async {
            let status = clusters.get("orders").await.ok()?.status?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            (status.observed_generation == Some(generation) && ready.status == "False")
                .then_some(())
        },
    )
    .await;
    wait_for(Duration::from_secs(120), "orders Healthy with 5", || {
        healthy(&clusters, "orders", 5)
    })
    .await;
    let (_, _, primary) = through(&cluster, &client, "orders-rw").await;
    let slots = |primary: tokio_postgres::Client| async move {
        let rows = primary
            .query("SELECT slot_name FROM pg_replication_slots ORDER BY 1", &[])
            .await
            .unwrap();
        (
            rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(),
            primary,
        )
    };
    let (five, primary) = slots(primary).await;
    assert_eq!(five.len(), 4, "{five:?}");

    // 5 → 2 with the primary on orders-5: the primary moves to an instance that stays, then
    // instances 3–5 go with their pods and volumes, and their slots are dropped.
    drop(primary);
    let to_five =
        serde_json::json!({"metadata": {"annotations": {"pgha.dev/switchover-to": "orders-5"}}});
    clusters
        .patch("orders", &PatchParams::default(), &Patch::Merge(&to_five))
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "orders-5 primary", || async {
        let status = clusters.get("orders").await.ok()?.status?;
        let done = status.last_switchover?;
        (done.to == "orders-5" && done.completed.is_some() && status.ready_instances == 5)
            .then_some(())
    })
    .await;
    patch_spec(&clusters, serde_json::json!({"instances": 2})).await;
    wait_for(Duration::from_secs(60), "orders Healthy with 2", || {
        healthy(&clusters, "orders", 2)
    })
    .await;
    wait_for(Duration::from_secs(60), "instances 3–5 gone", || async {
        let names: Vec<String> = instances
            .list(&Default::default())
            .await
            .ok()?
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "shop");
        let pvcs = claims.list(&Default::default()).await.ok()?.items.len();
        let pod_count = pods.list(&Default::default()).await.ok()?.items.len();
        (names == ["orders-1", "orders-2"] && pvcs == 2 && pod_count == 2).then_some(())
    })
    .await;
    let status = clusters.get("orders").await.unwrap().status.unwrap();
    let moved = status.last_switchover.unwrap();
    assert_eq!(moved.from, "orders-5");
    assert!(
        ["orders-1", "orders-2"].contains(&moved.to.as_str()),
        "{moved:?}"
    );
    wait_for(
        Duration::from_secs(15),
        "the primary keeps one slot",
        || async {
            let (_, _, primary) = through(&cluster, &client, "orders-rw").await;
            let rows = primary
                .query("SELECT slot_name FROM pg_replication_slots", &[])
                .await
                .ok()?;
            (rows.len() == 1).then_some(())
        },
    )
    .await;

    // Deleting the cluster deletes everything it created.
    clusters
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "nothing of orders left",
        || async {
            let left = leftovers(&client, "shop").await;
            left.is_empty().then_some(())
        },
    )
    .await;
}

/// Merges `spec` into the spec of `orders`; returns the new generation.
async fn patch_spec(clusters: &Api<PgCluster>, spec: serde_json::Value) -> i64 {
    let patch = serde_json::json!({ "spec": spec });
    let patched = clusters
        .patch("orders", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    patched.metadata.generation.unwrap()
}

/// Waits until `check` holds for the status of every instance.
async fn every_instance(
    instances: &Api<PgInstance>,
    within: Duration,
    what: &str,
    check: impl Fn(&PgInstanceStatus) -> bool,
) {
    wait_for(within, what, || async {
        let list = instances.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|i| check(&i.status.clone().unwrap_or_default()))
            .then_some(())
    })
    .await;
}

/// Every object of every kind the operator creates that is still in `namespace`.
async fn leftovers(client: &Client, namespace: &str) -> Vec<String> {
    async fn names<K>(client: &Client, namespace: &str, kind: &str, labels: &str) -> Vec<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(labels);
        api.list(&params)
            .await
            .unwrap()
            .iter()
            .map(|o| format!("{kind}/{}", o.name_any()))
            .collect()
    }
    const OURS: &str = "app.kubernetes.io/managed-by=pgha";
    let c = client;
    let mut all = names::<PgCluster>(c, namespace, "pgcluster", "").await;
    all.extend(names::<PgInstance>(c, namespace, "pginstance", OURS).await);
    all.extend(names::<Pod>(c, namespace, "pod", OURS).await);
    all.extend(names::<PersistentVolumeClaim>(c, namespace, "pvc", OURS).await);
    all.extend(names::<Service>(c, namespace, "service", OURS).await);
    all.extend(names::<Secret>(c, namespace, "secret", OURS).await);
    all.extend(names::<ConfigMap>(c, namespace, "configmap", OURS).await);
    all.extend(names::<ServiceAccount>(c, namespace, "serviceaccount", OURS).await);
    all.extend(names::<Role>(c, namespace, "role", OURS).await);
    all.extend(names::<RoleBinding>(c, namespace, "rolebinding", OURS).await);
    all.extend(names::<PodDisruptionBudget>(c, namespace, "poddisruptionbudget", OURS).await);
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    for pv in volumes.list(&Default::default()).await.unwrap() {
        all.push(format!("persistentvolume/{}", pv.name_any()));
    }
    all
}

#[tokio::test]
async fn bad_specs_a_killed_operator_sync_commits_and_parameter_changes() {
    let (cluster, client) = installed(5).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), "shop");

    // Accepted by the schema, refused by the operator's checks: Ready=False saying why, and
    // nothing created.
    create(
        &clusters,
        "metadata: {name: broken}\nspec:\n  storage: {size: 1Gi}\n  backup:\n    s3: {bucket: backups, credentialsSecret: c}\n    schedule: '99 * * * *'\n",
    )
    .await;
    let ready = wait_for(Duration::from_secs(30), "broken refused", || {
        ready_because(&clusters, "broken", "InvalidSpec")
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("spec.backup.schedule '99 * * * *' is not a cron expression"),
        "{}",
        ready.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(leftovers(&client, "shop").await, ["pgcluster/broken"]);
    clusters
        .delete("broken", &DeleteParams::default())
        .await
        .unwrap();

    // The leader is killed while it creates a cluster: the other replica takes over and
    // finishes, with nothing duplicated or left behind.
    create(
        &clusters,
        "metadata: {name: orders}\nspec:\n  instances: 2\n  storage: {size: 1Gi}\n  replication: {synchronous: {mode: quorum, number: 1}}\n",
    )
    .await;
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), "shop");
    wait_for(Duration::from_secs(30), "creation under way", || async {
        let list = instances.list(&Default::default()).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await;
    let killed = leader(&client).await;
    let operator = pgha_e2e::PodRef {
        namespace: "pgha-system".into(),
        name: killed.clone(),
    };
    cluster.delete_now(&operator).await.unwrap();
    wait_for(Duration::from_secs(60), "a new leader", || async {
        let now = leader(&client).await;
        (now != killed).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(120), "orders Healthy with 2", || {
        healthy(&clusters, "orders", 2)
    })
    .await;
    let mut left = leftovers(&client, "shop").await;
    left.retain(|o| !o.starts_with("persistentvolume/"));
    left.sort();
    assert_eq!(
        left,
        [
            "configmap/orders-config",
            "pgcluster/orders",
            "pginstance/orders-1",
            "pginstance/orders-2",
            "pod/orders-1",
            "pod/orders-2",
            "poddisruptionbudget/orders-primary",
            "pvc/orders-1",
            "pvc/orders-2",
            "role/orders-1",
            "role/orders-2",
            "rolebinding/orders-1",
            "rolebinding/orders-2",
            "secret/orders-app",
            "secret/orders-ca",
            "secret/orders-replication",
            "secret/orders-replication-tls",
            "secret/orders-server",
            "secret/orders-superuser",
            "service/orders-r",
            "service/orders-ro",
            "service/orders-rw",
            "serviceaccount/orders-1",
            "serviceaccount/orders-2",
        ]
    );

    // A graceful stop hands the Lease back: the standby takes it before it would have run
    // out (4 s after the last renewal).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "pgha-system");
    let before = leases.get("pgha-operator").await.unwrap().spec.unwrap();
    let stopping = before.holder_identity.clone().unwrap();
    Api::<Pod>::namespaced(client.clone(), "pgha-system")
        .delete(&stopping, &DeleteParams::default())
        .await
        .unwrap();
    let after = wait_for(Duration::from_secs(30), "another holder", || async {
        let spec = leases.get("pgha-operator").await.ok()?.spec?;
        let holder = spec.holder_identity.as_deref()?;
        (holder != stopping).then_some(spec)
    })
    .await;
    let handover = after
        .acquire_time
        .unwrap()
        .0
        .duration_since(before.renew_time.unwrap().0);
    println!("the standby took the Lease {handover:#} after the leader's last seen renewal");
    assert!(
        handover.as_secs_f64() < 3.5,
        "the Lease ran out instead: {handover:#}"
    );

    // synchronous.number 1 with one replica: a commit waits for it. Frozen, commits block;
    // thawed, they complete.
    let (_, _, writer) = through(&cluster, &client, "orders-rw").await;
    writer
        .batch_execute("CREATE TABLE t (n int)")
        .await
        .unwrap();
    let replica: pgha_e2e::PodRef = "shop/orders-2".parse().unwrap();
    cluster
        .fault(&replica, None, pgha_e2e::Fault::Freeze)
        .unwrap();
    let commit = tokio::spawn(async move {
        writer
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        Instant::now()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !commit.is_finished(),
        "a commit returned while the only standby was frozen"
    );
    let thawed = Instant::now();
    cluster
        .fault(&replica, None, pgha_e2e::Fault::Thaw)
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), commit)
        .await
        .expect("the commit completes after the thaw")
        .unwrap();
    println!("commit completed {:?} after the thaw", done - thawed);

    // A parameter that a reload applies, then one that needs a restart: rolled through the
    // replica first, the primary last, and the status says so meanwhile.
    set_parameter(&clusters, "work_mem", "8MB").await;
    wait_for(Duration::from_secs(20), "work_mem reloaded", || async {
        let (_, _, primary) = through(&cluster, &client, "orders-rw").await;
        let row = primary.query_one("SHOW work_mem", &[]).await.ok()?;
        (row.get::<_, String>(0) == "8MB").then_some(())
    })
    .await;
    set_parameter(&clusters, "shared_buffers", "64MB").await;
    wait_for(
        Duration::from_secs(30),
        "a rolling restart under way",
        || async {
            let status = clusters.get("orders").await.ok()?.status?;
            let progressing = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Progressing")?;
            (progressing.reason == "RollingRestart").then_some(())
        },
    )
    .await;
    let instances: Api<PgInstance> = Api::namespaced(client.clone(), "shop");
    // The replica restarts, takes over by switchover, and the old primary restarts last (as
    // it becomes a replica, which the switchover does anyway).
    wait_for(
        Duration::from_secs(120),
        "orders-2 primary after the restarts",
        || async {
            let c = healthy(&clusters, "orders", 2).await?;
            (c.status?.current_primary.as_deref() == Some("orders-2")).then_some(())
        },
    )
    .await;
    every_instance(
        &instances,
        Duration::from_secs(60),
        "no restart pending",
        |s| !s.pending_restart && s.ready,
    )
    .await;
    let (app, _, primary) = through(&cluster, &client, "orders-rw").await;
    let replica_host = instances
        .get("orders-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .endpoint
        .unwrap()
        .host;
    let replica = connect(format!("{replica_host}:5432").parse().unwrap(), &app)
        .await
        .unwrap();
    let started = |c: tokio_postgres::Client| async move {
        let buffers: String = c
            .query_one("SHOW shared_buffers", &[])
            .await
            .unwrap()
            .get(0);
        let at: std::time::SystemTime = c
            .query_one("SELECT pg_postmaster_start_time()", &[])
            .await
            .unwrap()
            .get(0);
        (buffers, at)
    };
    let (primary_buffers, primary_started) = started(primary).await;
    let (replica_buffers, replica_started) = started(replica).await;
    assert_eq!(
        (primary_buffers.as_str(), replica_buffers.as_str()),
        ("64MB", "64MB")
    );
    assert!(
        primary_started < replica_started,
        "the old primary (orders-1) restarted before the instance that took over"
    );

    // A value Postgres refuses, which our checks cannot know (out of its range): the cluster
    // says ConfigInvalid with Postgres's message, the instances keep serving on the files they
    // loaded, and a deleted pod comes back up on them.
    set_parameter(&clusters, "work_mem", "99999999999GB").await;
    let refused = |c: PgCluster| {
        let status = c.status?;
        let condition = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "ConfigInvalid")?;
        (condition.status == "True").then_some(condition.message)
    };
    let message = wait_for(Duration::from_secs(60), "ConfigInvalid", || async {
        refused(clusters.get("orders").await.ok()?)
    })
    .await;
    println!("ConfigInvalid: {message}");
    assert!(
        message.contains("invalid value for parameter \"work_mem\": \"99999999999GB\""),
        "{message}"
    );
    let work_mem = || async {
        let (_, _, primary) = through(&cluster, &client, "orders-rw").await;
        let row = primary.query_one("SHOW work_mem", &[]).await.unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(work_mem().await, "8MB");
    cluster
        .delete_now(&pgha_e2e::PodRef {
            namespace: "shop".into(),
            name: "orders-1".into(),
        })
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(120),
        "orders-1 back after its pod was deleted",
        || async {
            let i = instances.get("orders-1").await.ok()?;
            let s = i.status?;
            let invalid = s
                .conditions
                .iter()
                .any(|c| c.type_ == "ConfigInvalid" && c.status == "True");
            (s.ready && invalid).then_some(())
        },
    )
    .await;
    wait_for(
        Duration::from_secs(60),
        "healthy on the loaded configuration",
        || healthy(&clusters, "orders", 2),
    )
    .await;
    set_parameter(&clusters, "work_mem", "16MB").await;
    wait_for(Duration::from_secs(60), "ConfigInvalid cleared", || async {
        let c = clusters.get("orders").await.ok()?;
        refused(c).is_none().then_some(())
    })
    .await;
    assert_eq!(work_mem().await, "16MB");

    // Required spreading: four instances on three nodes run three, on three nodes, and leave
    // the fourth unscheduled with the scheduler's reason.
    create(
        &clusters,
        "metadata: {name: spread}\nspec:\n  instances: 4\n  storage: {size: 1Gi}\n  \
         placement: {spreadNodes: required}\n",
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let (nodes, waiting) = wait_for(
        Duration::from_secs(120),
        "three spread instances and one unschedulable",
        || async {
            let list = pods
                .list(&ListParams::default().labels("pgha.dev/cluster=spread"))
                .await
                .ok()?;
            let mut nodes = std::collections::BTreeSet::new();
            let mut waiting = Vec::new();
            for pod in &list.items {
                let status = pod.status.clone()?;
                let unschedulable = status.conditions.iter().flatten().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                });
                if unschedulable {
                    waiting.push(pod.name_any());
                } else if status.phase.as_deref() == Some("Running")
                    && pod
                        .labels()
                        .get("app.kubernetes.io/component")
                        .map(String::as_str)
                        == Some("instance")
                {
                    nodes.insert(pod.spec.clone()?.node_name?);
                }
            }
            (nodes.len() == 3 && waiting.len() == 1).then_some((nodes, waiting))
        },
    )
    .await;
    println!("spread over {nodes:?}; unschedulable: {waiting:?}");
    clusters
        .delete("spread", &DeleteParams::default())
        .await
        .unwrap();

    // With reclaimPolicy Retain, deleting the cluster keeps the volumes and nothing else.
    patch_spec(
        &clusters,
        serde_json::json!({"storage": {"reclaimPolicy": "Retain"}}),
    )
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "shop");
    wait_for(
        Duration::from_secs(30),
        "volumes no longer owned",
        || async {
            let list = claims.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .all(|c| {
                    c.metadata
                        .owner_references
                        .as_ref()
                        .is_none_or(Vec::is_empty)
                })
                .then_some(())
        },
    )
    .await;
    clusters
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "only the volumes left", || async {
        let mut left = leftovers(&client, "shop").await;
        left.retain(|o| !o.starts_with("persistentvolume/"));
        left.sort();
        (left == ["pvc/orders-1", "pvc/orders-2"]).then_some(())
    })
    .await;
}

async fn set_parameter(clusters: &Api<PgCluster>, name: &str, value: &str) {
    let parameters = serde_json::json!({"postgresql": {"parameters": {name: value}}});
    patch_spec(clusters, parameters).await;
}
