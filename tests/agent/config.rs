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

/// A configuration Postgres refuses (a value out of range, which our checks cannot know; a
/// pg_hba method that does not exist) is never loaded: the agent says why, Postgres keeps
/// running on the last files it loaded, and a restart with the refused configuration still
/// ordered starts on those files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_postgres_refuses_is_never_loaded() {
    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    let show = |name: &'static str| {
        let ws = &ws;
        async move {
            let client = ws.client("a").await;
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    let mut good = ws.config();
    good.parameters = BTreeMap::from([("work_mem".into(), "12MB".into())]);
    a.apply_config(good.clone()).await.unwrap();
    let pid = a.postmaster_pid();
    let dir = a.settings().data_dir.clone();
    let files =
        || ["user.conf", "pg_hba.conf"].map(|f| std::fs::read_to_string(dir.join(f)).unwrap());
    let loaded = files();

    let mut bad = good.clone();
    bad.parameters
        .insert("work_mem".into(), "99999999999GB".into());
    bad.parameters
        .insert("maintenance_work_mem".into(), "100MB".into());
    let err = a.apply_config(bad.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid value for parameter \"work_mem\": \"99999999999GB\""),
        "{err}"
    );
    assert_eq!(files(), loaded, "nothing written");
    assert_eq!(show("work_mem").await, "12MB");
    assert_eq!(
        show("maintenance_work_mem").await,
        "64MB",
        "nothing of it applied"
    );
    let status = a.status().await;
    assert_eq!(
        status.config.refused.as_deref(),
        Some(&err["Postgres refuses the configuration: ".len()..])
    );

    let mut bad_hba = good.clone();
    bad_hba.pg_hba = vec!["host all all 10.0.0.0/8 bogusmethod".into()];
    let err = a.apply_config(bad_hba).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid authentication method \"bogusmethod\""),
        "{err}"
    );
    assert_eq!(files(), loaded, "the refused pg_hba.conf was put back");
    assert_eq!(a.postmaster_pid(), pid, "Postgres ran throughout");

    // The pod restarts with the refused configuration still ordered: Postgres starts on the
    // files it loaded last, and the refusal stands.
    a.stop().await.unwrap();
    drop(a);
    let again = pgha::agent::Agent::new(
        ws.settings("a"),
        crate::cluster::credentials(),
        Desired::Primary,
        bad.clone(),
    );
    again.start().await.unwrap();
    assert!(again.status().await.ready);
    assert_eq!(show("work_mem").await, "12MB");
    assert_eq!(files(), loaded);
    let refused = again.status().await.config.refused.unwrap_or_default();
    assert!(refused.contains("work_mem"), "{refused}");
    assert_eq!(again.rejected_config(), Some(bad));
    // Fixed orders: loaded, and the refusal is gone.
    good.parameters.insert("work_mem".into(), "16MB".into());
    again.ordered_config(&good);
    again.apply_config(good.clone()).await.unwrap();
    assert_eq!(show("work_mem").await, "16MB");
    assert_eq!(again.status().await.config.refused, None);

    // A restart with a pg_hba rule ordered that it has not loaded: only a running server
    // checks rules, so they wait for it; Postgres comes up, and the rule is then refused.
    again.stop().await.unwrap();
    drop(again);
    let mut bad_hba = good;
    bad_hba.pg_hba = vec!["host all all 10.0.0.0/8 bogusmethod".into()];
    let third = pgha::agent::Agent::new(
        ws.settings("a"),
        crate::cluster::credentials(),
        Desired::Primary,
        bad_hba.clone(),
    );
    third.start().await.unwrap();
    assert!(third.status().await.ready);
    let hba = std::fs::read_to_string(dir.join("pg_hba.conf")).unwrap();
    assert!(!hba.contains("bogusmethod"), "{hba}");
    let err = third.apply_config(bad_hba).await.unwrap_err().to_string();
    assert!(err.contains("invalid authentication method"), "{err}");
}

/// Every parameter value our checks accept reaches Postgres unchanged: values from every
/// class a YAML string can hold go through our rendering into a real Postgres, and each is
/// either refused by our checks or loaded with no error and read back by `SHOW` as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_our_checks_accept_reaches_postgres_unchanged() {
    let mut values: Vec<String> = vec![
        String::new(),
        " ".into(),
        "  padded  ".into(),
        "'".into(),
        "''".into(),
        "it's".into(),
        "\\".into(),
        "\\\\".into(),
        "a\\nb".into(),
        "C:\\temp\\new".into(),
        "\\'".into(),
        "'\\".into(),
        "# not a comment".into(),
        "a = b".into(),
        "tab\there".into(),
        "\"double\"".into(),
        "é日本🐘".into(),
        "x".repeat(10_000),
        "line\nbreak".into(),
        "carriage\rreturn".into(),
        "nul\0byte".into(),
    ];
    // Every ASCII punctuation mark alone and inside a word, and every control character.
    for c in (0x21u8..0x7f)
        .map(char::from)
        .filter(|c| c.is_ascii_punctuation())
    {
        values.push(c.to_string());
        values.push(format!("a{c}b"));
    }
    for c in (0u8..0x20).chain([0x7f]).map(char::from) {
        values.push(format!("a{c}b"));
    }
    // Names of every shape the API's pattern takes: `[a-z_][a-z0-9_]*`, twice with a dot.
    let shapes = ["_probe.v", "pgha_probe._v", "p2_.v_", "pgha_probe.v"];
    let name = |i: usize| format!("{}{i}", shapes[i % shapes.len()]);
    let mut accepted = BTreeMap::new();
    let mut refused = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let one = BTreeMap::from([(name(i), value.clone())]);
        match pgha::plan::config::parameters(&one) {
            Ok(_) => {
                accepted.insert(name(i), value.clone());
            }
            Err(e) => refused.push(format!("{value:?}: {e}")),
        }
    }
    println!("refused by our checks:\n{}", refused.join("\n"));
    assert!(accepted.len() > 100, "{} accepted", accepted.len());

    let ws = Workspace::new(&["a"]);
    let a = ws.start("a", Desired::Primary).await;
    let mut config = ws.config();
    config.parameters = accepted.clone();
    a.apply_config(config)
        .await
        .unwrap_or_else(|e| panic!("accepted values refused by Postgres: {e}"));
    let client = ws.client("a").await;
    let errors = client
        .query(
            "SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let errors: Vec<(String, String)> = errors.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut changed = Vec::new();
    for (name, value) in &accepted {
        let row = client
            .query_one("SELECT current_setting($1)", &[name])
            .await
            .unwrap();
        let read: String = row.get(0);
        if &read != value {
            changed.push(format!("{value:?} read back as {read:?}"));
        }
    }
    assert!(
        changed.is_empty(),
        "changed on the way:\n{}",
        changed.join("\n")
    );
}

/// The parameter names the API accepts for Postgres 15 (src/api/parameters/15.txt) are the
/// ones the installed server lets postgresql.conf set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_knows_the_parameters_of_the_installed_server() {
    let ws = Workspace::new(&["a"]);
    let _a = ws.start("a", Desired::Primary).await;
    let rows = ws
        .client("a")
        .await
        .query(
            "SELECT lower(name) FROM pg_settings WHERE context <> 'internal' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let server: std::collections::BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let known: std::collections::BTreeSet<String> = pgha::api::postgres::known_parameters(15)
        .unwrap()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        known, server,
        "regenerate src/api/parameters/15.txt with scripts/pg-parameters.sh 15"
    );
}
