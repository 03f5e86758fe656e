//! Parameter changes: reload when possible, pending restart when not, owned ones refused.

use std::collections::BTreeMap;

use pgha::agent::Desired;

use crate::cluster::Workspace;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restart_and_refusal() {
    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    let show = |name: &'static str| {
        let ws = &ws;
        async move {
            let row = ws
                .client("a")
                .await
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    let pid = a.postmaster_pid();

    let mut config = ws.config();
    config.parameters = BTreeMap::from([("work_mem".into(), "12MB".into())]);
    let applied = a.apply_config(config.clone()).await.unwrap();
    assert!(applied.pending_restart.is_empty(), "{applied:?}");
    assert_eq!(show("work_mem").await, "12MB");
    assert_eq!(a.postmaster_pid(), pid, "a reload, not a restart");

    config
        .parameters
        .insert("shared_buffers".into(), "64MB".into());
    let applied = a.apply_config(config.clone()).await.unwrap();
    assert_eq!(applied.pending_restart, ["shared_buffers"]);
    let status = a.status().await;
    assert_eq!(status.server.unwrap().pending_restart, ["shared_buffers"]);
    assert_eq!(show("shared_buffers").await, "128MB");
    a.restart().await.unwrap();
    assert_eq!(show("shared_buffers").await, "64MB");
    assert!(a.status().await.server.unwrap().pending_restart.is_empty());

    let user_conf = a.settings().data_dir.join("user.conf");
    let before = std::fs::read_to_string(&user_conf).unwrap();
    let mut owned = config.clone();
    owned.parameters.insert("port".into(), "6000".into());
    owned.parameters.insert("work_mem".into(), "99MB".into());
    let err = a.apply_config(owned).await.unwrap_err().to_string();
    assert!(
        err.contains("parameter port is managed by the operator") && err.contains("remove it"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&user_conf).unwrap(),
        before,
        "nothing written"
    );
    assert_eq!(show("work_mem").await, "12MB");
    assert_eq!(a.status().await.last_error.as_deref(), Some(err.as_str()));

    // A user rule is added; the operator's rules stay first.
    config.pg_hba = vec!["host all app 10.0.0.0/8 scram-sha-256".into()];
    a.apply_config(config).await.unwrap();
    let hba = std::fs::read_to_string(a.settings().data_dir.join("pg_hba.conf")).unwrap();
    let user_rule = hba.find("10.0.0.0/8").unwrap();
    assert!(hba.find("streaming_replica").unwrap() < user_rule);
}
