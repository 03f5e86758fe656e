//! Roles and databases in YAML (issue "Declarative roles and databases"), on the local
//! cluster with the operator as a pod: roles and PgDatabases come up usable over TLS
//! (`verify-full`), each role can do what its attributes allow and no more, a password changed
//! in its Secret works without a restart, changes made by hand are put back, `ensure: absent`
//! drops what it may and says why not otherwise, a new primary keeps it all after a failover,
//! and deleting a PgDatabase keeps its data unless asked to drop it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pgha::api::{PgCluster, PgDatabase};
use pgha_e2e::{Fault, PodRef};

#[path = "common/eventually.rs"]
mod eventually;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod install;
#[allow(dead_code)]
#[path = "common/writer.rs"]
mod writer;

use eventually::eventually as wait_for;
use install::{create, healthy, installed, primary_of};
use writer::{Target, connect, session};

const NS: &str = "shop";

const CLUSTER: &str = r#"
metadata: {name: books}
spec:
  instances: 2
  storage: {size: 1Gi}
  roles:
    - {name: analyst, generatePassword: true, inRoles: [pg_read_all_data], connectionLimit: 5}
    - {name: migrator, passwordSecret: {name: migrator-pw}}
    - {name: 'Odd "Select" Ünïcødé', login: false, comment: "quotes, a keyword and unicode"}
    - {name: leaver}
    - {name: holder}
"#;

fn database(resource: &str, name: &str, extra: serde_json::Value) -> PgDatabase {
    let mut spec = serde_json::json!({"cluster": "books", "name": name, "owner": "migrator"});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(serde_json::json!({
        "apiVersion": "pgha.dev/v1", "kind": "PgDatabase",
        "metadata": {"name": resource}, "spec": spec,
    }))
    .unwrap()
}

/// The PgDatabase's status message once it is not applied for a reason containing `part`.
async fn refused(databases: &Api<PgDatabase>, name: &str, part: &str) -> String {
    wait_for(
        Duration::from_secs(90),
        &format!("{name} refused: {part}"),
        || async {
            let status = databases.get(name).await.ok()?.status?;
            let message = status.message.filter(|m| m.contains(part))?;
            (status.applied == Some(false)).then_some(message)
        },
    )
    .await
}

/// `target` as another user and database, with the same Service and CA.
fn as_user(target: &Target, user: &str, password: &str, dbname: &str) -> Target {
    Target {
        user: user.into(),
        password: password.into(),
        dbname: dbname.into(),
        ..target.clone()
    }
}

async fn can_connect(target: &Target) -> bool {
    let (host, port) = (target.address.ip().to_string(), target.address.port());
    connect(target, &host, port).await.is_some()
}

/// The SQLSTATE `statement` fails with, or None when it succeeds.
async fn sqlstate(client: &tokio_postgres::Client, statement: &str) -> Option<String> {
    let error = client.batch_execute(statement).await.err()?;
    Some(
        error
            .code()
            .map_or("no code".into(), |c| c.code().to_string()),
    )
}

async fn role_row(su: &tokio_postgres::Client, role: &str) -> Option<(i32, bool)> {
    let row = su
        .query_opt(
            "SELECT rolconnlimit, pg_has_role(rolname, 'pg_read_all_data', 'MEMBER')
             FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get(1)))
}

async fn database_exists(su: &tokio_postgres::Client, name: &str) -> bool {
    su.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_databases_are_kept_as_the_yaml_says() {
    let (cluster, client) = installed(11).await;
    let clusters: Api<PgCluster> = Api::namespaced(client.clone(), NS);
    let databases: Api<PgDatabase> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    let password_secret = |password: &str| -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "migrator-pw"}, "stringData": {"password": password},
        }))
        .unwrap()
    };
    secrets
        .create(&pp, &password_secret("first-pw"))
        .await
        .unwrap();
    create(&clusters, CLUSTER).await;
    let extensions = serde_json::json!({
        "extensions": [{"name": "pgcrypto"}, {"name": "citext"}],
        "schemas": [{"name": "staging"}],
    });
    for d in [
        database("reports", "reports", extensions),
        // A second claim on the same database, and an extension the image lacks.
        database("reports-again", "reports", serde_json::json!({})),
        database(
            "extras",
            "extras",
            serde_json::json!({"extensions": [{"name": "no_such_extension"}]}),
        ),
        database(
            "scratch",
            "scratch",
            serde_json::json!({"databaseReclaimPolicy": "delete"}),
        ),
        // A database of a cluster that does not exist.
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgha.dev/v1", "kind": "PgDatabase", "metadata": {"name": "lost"},
            "spec": {"cluster": "nowhere", "name": "lost", "owner": "app"},
        }))
        .unwrap(),
    ] {
        databases.create(&pp, &d).await.unwrap();
    }
    wait_for(Duration::from_secs(180), "books Healthy", || {
        healthy(&clusters, "books", 2)
    })
    .await;
    wait_for(Duration::from_secs(90), "every role applied", || async {
        let roles = clusters.get("books").await.ok()?.status?.roles;
        (roles.len() == 5 && roles.iter().all(|r| r.applied)).then_some(())
    })
    .await;
    for name in ["reports", "scratch"] {
        wait_for(
            Duration::from_secs(90),
            &format!("{name} applied"),
            || async {
                let status = databases.get(name).await.ok()?.status?;
                (status.applied == Some(true) && status.observed_generation == Some(1))
                    .then_some(())
            },
        )
        .await;
    }
    refused(
        &databases,
        "reports-again",
        "already managed by PgDatabase reports",
    )
    .await;
    refused(&databases, "extras", "no_such_extension").await;
    refused(&databases, "lost", "PgCluster nowhere does not exist").await;

    // The generated Secret connects with verify-full; the role reads everything, writes
    // nothing and may not create roles.
    let analyst = Target::rw(&cluster, &client, NS, "books", "analyst").await;
    assert_eq!(analyst.user, "analyst");
    let superuser = Target::rw(&cluster, &client, NS, "books", "superuser").await;
    let su = session(&superuser).await;
    let migrator = as_user(&analyst, "migrator", "first-pw", "reports");
    let m = session(&migrator).await;
    m.batch_execute(
        "CREATE TABLE staging.shelf (title citext, secret text);
         INSERT INTO staging.shelf VALUES ('Dune', crypt('spice', gen_salt('md5')))",
    )
    .await
    .unwrap();
    let found: i64 = m
        .query_one(
            "SELECT count(*) FROM staging.shelf WHERE title = 'DUNE' AND secret = crypt('spice', secret)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 1, "citext and pgcrypto work in reports");
    let a = session(&as_user(&analyst, "analyst", &analyst.password, "reports")).await;
    let read: i64 = a
        .query_one("SELECT count(*) FROM staging.shelf", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(read, 1);
    assert_eq!(
        sqlstate(&a, "INSERT INTO staging.shelf VALUES ('Emma', '')").await,
        Some("42501".into())
    );
    assert_eq!(
        sqlstate(&a, "CREATE ROLE intruder").await,
        Some("42501".into())
    );
    let odd = su
        .query_one(
            "SELECT rolcanlogin, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&"Odd \"Select\" Ünïcødé"],
        )
        .await
        .unwrap();
    assert!(!odd.get::<_, bool>(0));
    assert_eq!(
        odd.get::<_, Option<String>>(1).as_deref(),
        Some("quotes, a keyword and unicode")
    );

    // A password changed in the user's Secret works at once, without a restart.
    let started = |su: tokio_postgres::Client| async move {
        su.query_one("SELECT pg_postmaster_start_time()::text", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let before = started(session(&superuser).await).await;
    secrets
        .replace("migrator-pw", &pp, &password_secret("second-pw"))
        .await
        .unwrap();
    let second = as_user(&analyst, "migrator", "second-pw", "reports");
    wait_for(
        Duration::from_secs(60),
        "the new password works",
        || async { can_connect(&second).await.then_some(()) },
    )
    .await;
    assert!(
        !can_connect(&migrator).await,
        "the old password still works"
    );
    assert_eq!(started(session(&superuser).await).await, before);

    // Changes made by hand are put back and reported.
    su.batch_execute("ALTER ROLE analyst CONNECTION LIMIT 1; REVOKE pg_read_all_data FROM analyst")
        .await
        .unwrap();
    su.batch_execute("DROP DATABASE scratch WITH (FORCE)")
        .await
        .unwrap();
    wait_for(Duration::from_secs(90), "the drift repaired", || async {
        let row = role_row(&su, "analyst").await?;
        (row == (5, true) && database_exists(&su, "scratch").await).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    for (object, reason) in [
        ("books", "RoleDriftRepaired"),
        ("scratch", "DatabaseDriftRepaired"),
    ] {
        wait_for(Duration::from_secs(30), reason, || async {
            let listed = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
                .await
                .ok()?;
            listed
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason))
                .then_some(())
        })
        .await;
    }
    // The Event goes out before the reconcile that sends it writes the status.
    let what = wait_for(
        Duration::from_secs(30),
        "the repair in the status",
        || async {
            let roles = clusters.get("books").await.ok()?.status?.roles;
            let analyst = roles.into_iter().find(|r| r.name == "analyst")?;
            Some(analyst.repaired?.what)
        },
    )
    .await;
    assert!(what.contains("analyst"), "{what}");

    // ensure: absent drops a role that owns nothing; one that owns a table is reported.
    su.batch_execute("CREATE TABLE held (n int); ALTER TABLE held OWNER TO holder")
        .await
        .unwrap();
    let mut spec = clusters.get("books").await.unwrap().spec;
    for role in spec
        .roles
        .iter_mut()
        .filter(|r| r.name == "leaver" || r.name == "holder")
    {
        role.ensure = pgha::api::managed::Ensure::Absent;
    }
    let patch = serde_json::json!({"spec": {"roles": spec.roles}});
    clusters
        .patch("books", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let message = wait_for(
        Duration::from_secs(90),
        "leaver dropped, holder reported",
        || async {
            let roles = clusters.get("books").await.ok()?.status?.roles;
            let holder = roles.iter().find(|r| r.name == "holder")?;
            let gone = role_row(&su, "leaver").await.is_none();
            (gone && !holder.applied).then(|| holder.message.clone().unwrap_or_default())
        },
    )
    .await;
    assert!(message.contains("owns objects"), "{message}");
    assert!(role_row(&su, "holder").await.is_some());

    // After a failover the new primary keeps the roles: it applies a password change.
    let old = primary_of(&clusters, "books").await;
    let pod = PodRef {
        namespace: NS.into(),
        name: old.clone(),
    };
    cluster.fault(&pod, None, Fault::Kill).unwrap();
    wait_for(Duration::from_secs(120), "a new primary", || async {
        let now = primary_of(&clusters, "books").await;
        (now != old).then_some(())
    })
    .await;
    secrets
        .replace("migrator-pw", &pp, &password_secret("third-pw"))
        .await
        .unwrap();
    let third = as_user(&analyst, "migrator", "third-pw", "reports");
    wait_for(
        Duration::from_secs(90),
        "the new primary sets the password",
        || async { can_connect(&third).await.then_some(()) },
    )
    .await;
    let analyst_again = session(&analyst).await;
    let role: String = analyst_again
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "analyst");

    // Deleting a PgDatabase keeps its data (retain); with delete, the database goes.
    let su = session(&superuser).await;
    let dp = DeleteParams::default();
    databases.delete("reports", &dp).await.unwrap();
    databases.delete("scratch", &dp).await.unwrap();
    wait_for(
        Duration::from_secs(90),
        "scratch dropped and gone",
        || async {
            let gone = databases.get_opt("scratch").await.ok()?.is_none();
            (gone && !database_exists(&su, "scratch").await).then_some(())
        },
    )
    .await;
    assert!(databases.get_opt("reports").await.unwrap().is_none());
    let kept = session(&as_user(&analyst, "migrator", "third-pw", "reports")).await;
    let rows: i64 = kept
        .query_one("SELECT count(*) FROM staging.shelf", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "the retained database kept its data");
}
