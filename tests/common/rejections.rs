//! Every bad input the API refuses, with the message a person gets. One table for two checks:
//! tests/api_validation.rs runs it through the offline validators, tests/apiserver.rs through
//! a real kube-apiserver.

use serde_json::{Value, json};

pub struct Rejection {
    /// The object created, or the new version of `old`.
    pub object: Value,
    /// Set for a rule on updates.
    pub old: Option<Value>,
    /// Part of the message as the offline validators word it.
    pub offline: String,
    /// Part of the API server's message, where it words an OpenAPI rule differently (CEL
    /// messages are the rule's own, the same everywhere).
    pub server: Option<&'static str>,
}

impl Rejection {
    /// What the API server's message contains.
    pub fn server_message(&self) -> &str {
        self.server.unwrap_or(&self.offline)
    }
}

pub fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "pgha.dev/v1",
        "kind": "PgCluster",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": spec,
    })
}

/// Merges `patch` into `base` (objects recursively, everything else replaced).
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

pub fn minimal() -> Value {
    cluster(json!({"storage": {"size": "10Gi"}}))
}

pub fn with(patch: Value) -> Value {
    let mut object = minimal();
    merge(&mut object, &patch);
    object
}

pub fn s3() -> Value {
    json!({"bucket": "pg-backups", "path": "shop/orders", "credentialsSecret": "s3-creds"})
}

/// A recovery bootstrap with this target.
pub fn recovery_target(target: Value) -> Value {
    with(json!({"spec": {"bootstrap": {"recovery": {"source": {"s3": s3()}, "target": target}}}}))
}

/// A cluster named `name`.
pub fn named(name: &str) -> Value {
    let mut object = minimal();
    object["metadata"]["name"] = json!(name);
    object
}

pub fn instance(cluster: &str, ordinal: i32) -> Value {
    json!({
        "apiVersion": "pgha.dev/v1", "kind": "PgInstance",
        "metadata": {"name": "orders-1", "namespace": "shop"},
        "spec": {"cluster": cluster, "ordinal": ordinal, "postgresVersion": 15,
                 "image": "pgha/postgres:15", "storage": {"size": "10Gi"}},
    })
}

pub fn backup(target: &str) -> Value {
    json!({
        "apiVersion": "pgha.dev/v1", "kind": "PgBackup",
        "metadata": {"name": "orders-manual", "namespace": "shop"},
        "spec": {"cluster": "orders", "target": target},
    })
}

pub fn database(spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "pgha.dev/v1", "kind": "PgDatabase",
        "metadata": {"name": "reports", "namespace": "shop"},
        "spec": {"cluster": "orders", "name": "reports", "owner": "app"},
    });
    merge(&mut object, &json!({ "spec": spec }));
    object
}

/// A PgCluster with these `spec.roles`.
fn with_roles(roles: Value) -> Value {
    with(json!({"spec": {"roles": roles}}))
}

fn on_create(object: Value, offline: &str, server: Option<&'static str>) -> Rejection {
    Rejection {
        object,
        old: None,
        offline: offline.to_string(),
        server,
    }
}

fn on_update(object: Value, old: Value, message: &str) -> Rejection {
    Rejection {
        object,
        old: Some(old),
        offline: message.to_string(),
        server: None,
    }
}

/// A PgCluster with this `spec.backup` besides the S3 store.
fn with_backup(patch: Value) -> Value {
    let mut spec = json!({"s3": s3()});
    merge(&mut spec, &patch);
    with(json!({"spec": {"backup": spec}}))
}

pub fn all() -> Vec<Rejection> {
    let mut no_path = s3();
    no_path.as_object_mut().map(|o| o.remove("path"));
    let mut no_secret = s3();
    no_secret
        .as_object_mut()
        .map(|o| o.remove("credentialsSecret"));
    let mut out = vec![
        // Instances.
        on_create(
            with(json!({"spec": {"instances": 0}})),
            "/spec/instances: 0 is less than the minimum of 1",
            Some(
                "spec.instances: Invalid value: 0: spec.instances in body should be greater than or equal to 1",
            ),
        ),
        on_create(
            with(json!({"spec": {"instances": 33}})),
            "/spec/instances: 33 is greater than the maximum of 32",
            Some(
                "spec.instances: Invalid value: 33: spec.instances in body should be less than or equal to 32",
            ),
        ),
        // Postgres version.
        on_create(
            with(json!({"spec": {"postgresVersion": 12}})),
            "less than the minimum of 13",
            Some("spec.postgresVersion in body should be greater than or equal to 13"),
        ),
        on_update(
            with(json!({"spec": {"postgresVersion": 15}})),
            with(json!({"spec": {"postgresVersion": 16}})),
            "postgresVersion may not go down",
        ),
        // Storage.
        on_create(
            with(json!({"spec": {"storage": {"size": "ten gigs"}}})),
            "/spec/storage/size: \"ten gigs\" does not match",
            Some("spec.storage.size in body should match"),
        ),
        on_create(
            with(json!({"spec": {"storage": {"size": "ten gigs"}}})),
            "storage.size must be a quantity of at least 1Gi",
            None,
        ),
        on_create(
            with(json!({"spec": {"storage": {"size": "512Mi"}}})),
            "storage.size must be a quantity of at least 1Gi",
            None,
        ),
        on_update(
            with(json!({"spec": {"storage": {"size": "5Gi"}}})),
            minimal(),
            "storage.size may grow but not shrink",
        ),
        on_update(
            with(json!({"spec": {"storage": {"storageClassName": "fast"}}})),
            with(json!({"spec": {"storage": {"storageClassName": "slow"}}})),
            "storage.storageClassName is immutable",
        ),
        on_update(
            with(json!({"spec": {"storage": {"storageClassName": "fast"}}})),
            minimal(),
            "storage.storageClassName is immutable",
        ),
        // Synchronous replication.
        on_create(
            with(json!({"spec": {"replication": {"synchronous": {"mode": "sometimes"}}}})),
            "/spec/replication/synchronous/mode: \"sometimes\" is not one of",
            Some("spec.replication.synchronous.mode: Unsupported value: \"sometimes\""),
        ),
        on_create(
            with(
                json!({"spec": {"replication": {"synchronous": {"mode": "quorum", "number": 0}}}}),
            ),
            "less than the minimum of 1",
            Some(
                "spec.replication.synchronous.number in body should be greater than or equal to 1",
            ),
        ),
        on_create(
            with(
                json!({"spec": {"replication": {"synchronous": {"mode": "quorum", "number": 3}}}}),
            ),
            "replication.synchronous.number must be less than instances",
            None,
        ),
        // Parameters and pg_hba.
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"wal_level": "minimal"}}}})),
            "wal_level must be 'replica' or 'logical'",
            None,
        ),
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"Work-Mem": "8MB"}}}})),
            "parameter names are lowercase Postgres settings",
            None,
        ),
        on_create(
            with(
                json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB", "work_mme": "8MB"}}}}),
            ),
            "spec.postgresql.parameters: a name without a dot that is not a parameter of the cluster's PostgreSQL major",
            None,
        ),
        // Postgres reads `a.1` as a syntax error: each part of a name starts with a letter.
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"pg_stat_statements.1max": "8"}}}})),
            "parameter names are lowercase Postgres settings",
            None,
        ),
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB\nfsync = off"}}}})),
            "parameter values may not contain line breaks or NUL characters",
            None,
        ),
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB\rfsync"}}}})),
            "parameter values may not contain line breaks or NUL characters",
            None,
        ),
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"cluster_name": "a\0b"}}}})),
            "parameter values may not contain line breaks or NUL characters",
            None,
        ),
        on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"max_connections": 200}}}})),
            "/spec/postgresql/parameters/max_connections: 200 is not of type \"string\"",
            Some(
                "spec.postgresql.parameters.max_connections: Invalid value: \"integer\": spec.postgresql.parameters.max_connections in body must be of type string",
            ),
        ),
        on_create(
            with(json!({"spec": {"postgresql": {"pgHba": ["allow everyone"]}}})),
            "/spec/postgresql/pgHba/0: \"allow everyone\" does not match",
            Some("spec.postgresql.pgHba[0] in body should match"),
        ),
        // Bootstrap.
        on_create(
            with(
                json!({"spec": {"bootstrap": {"initdb": {}, "recovery": {"source": {"s3": s3()}}}}}),
            ),
            "bootstrap: set exactly one of initdb or recovery",
            None,
        ),
        on_create(
            with(json!({"spec": {"bootstrap": {"initdb": {"owner": "postgres"}}}})),
            "bootstrap.initdb.owner must not be postgres",
            None,
        ),
        on_create(
            with(json!({"spec": {"bootstrap": {"initdb": {"owner": "pg_monitor"}}}})),
            "bootstrap.initdb.owner must not be postgres, streaming_replica or start with pg_",
            None,
        ),
        on_create(
            with(json!({"spec": {"bootstrap": {"initdb": {"database": "template1"}}}})),
            "bootstrap.initdb.database must not be postgres, template0 or template1",
            None,
        ),
        on_create(
            with(json!({"spec": {"bootstrap": {"initdb": {"database": "Orders-DB"}}}})),
            "/spec/bootstrap/initdb/database: \"Orders-DB\" does not match",
            Some("spec.bootstrap.initdb.database in body should match"),
        ),
        on_update(
            with(json!({"spec": {"bootstrap": {"initdb": {"database": "orders"}}}})),
            minimal(),
            "bootstrap is immutable",
        ),
        // Recovery.
        on_create(
            with(json!({"spec": {"bootstrap": {"recovery": {"source": {"s3": no_path}}}}})),
            "bootstrap.recovery.source.s3.path is required",
            None,
        ),
        on_create(
            recovery_target(json!({"lsn": "0/3000060", "immediate": true})),
            "bootstrap.recovery.target: set exactly one of time, lsn, name or immediate",
            None,
        ),
        on_create(
            recovery_target(json!({})),
            "set exactly one of time, lsn, name or immediate",
            None,
        ),
        on_create(
            with(
                json!({"spec": {"bootstrap": {"recovery": {"source": {"s3": s3()}, "database": "orders"}}}}),
            ),
            "bootstrap.recovery: set both database and owner",
            None,
        ),
        on_create(
            with(
                json!({"spec": {"bootstrap": {"recovery": {"source": {"s3": s3()}, "database": "orders", "owner": "postgres"}}}}),
            ),
            "bootstrap.recovery.owner must not be postgres",
            None,
        ),
        on_create(
            recovery_target(json!({"immediate": false})),
            "immediate can only be true",
            None,
        ),
        on_create(
            recovery_target(json!({"time": "yesterday"})),
            "/spec/bootstrap/recovery/target/time: \"yesterday\" is not a \"date-time\"",
            Some("spec.bootstrap.recovery.target.time in body must be of type date-time"),
        ),
        on_create(
            recovery_target(json!({"lsn": "3000060"})),
            "/spec/bootstrap/recovery/target/lsn: \"3000060\" does not match",
            Some("spec.bootstrap.recovery.target.lsn in body should match"),
        ),
        // Backups.
        on_create(
            with_backup(json!({"schedule": "every day"})),
            "/spec/backup/schedule: \"every day\" does not match",
            Some("spec.backup.schedule in body should match"),
        ),
        on_create(
            with_backup(json!({"retention": {"window": "30 days"}})),
            "/spec/backup/retention/window: \"30 days\" does not match",
            Some("spec.backup.retention.window in body should match"),
        ),
        on_create(
            with_backup(json!({"retention": {"count": 0}})),
            "/spec/backup/retention/count: 0 is less than the minimum of 1",
            Some("spec.backup.retention.count in body should be greater than or equal to 1"),
        ),
        on_create(
            with_backup(json!({"s3": {"bucket": "Pg_Backups"}})),
            "/spec/backup/s3/bucket: \"Pg_Backups\" does not match",
            Some("spec.backup.s3.bucket in body should match"),
        ),
        on_create(
            with_backup(json!({"s3": {"endpoint": "ftp://store"}})),
            "/spec/backup/s3/endpoint: \"ftp://store\" does not match",
            Some("spec.backup.s3.endpoint in body should match"),
        ),
        on_create(
            with_backup(json!({"s3": {"path": "/leading/slash"}})),
            "/spec/backup/s3/path: \"/leading/slash\" does not match",
            Some("spec.backup.s3.path in body should match"),
        ),
        on_create(
            with(json!({"spec": {"backup": {"s3": no_secret}}})),
            "\"credentialsSecret\" is a required property",
            Some("spec.backup.s3.credentialsSecret: Required value"),
        ),
        // Failover.
        on_create(
            with(json!({"spec": {"failover": {"delaySeconds": -1}}})),
            "/spec/failover/delaySeconds: -1 is less than the minimum of 0",
            Some("spec.failover.delaySeconds in body should be greater than or equal to 0"),
        ),
        on_create(
            with(json!({"spec": {"failover": {"maxLagBytes": -1}}})),
            "/spec/failover/maxLagBytes: -1 is less than the minimum of 0",
            Some("spec.failover.maxLagBytes in body should be greater than or equal to 0"),
        ),
        on_create(
            with(json!({"spec": {"failover": {"leaseSeconds": 1}}})),
            "/spec/failover/leaseSeconds: 1 is less than the minimum of 2",
            Some("spec.failover.leaseSeconds in body should be greater than or equal to 2"),
        ),
        on_create(
            with(json!({"spec": {"failover": {"leaseSeconds": 2, "renewMillis": 600}}})),
            "renewMillis must fit twice into leaseSeconds less fenceMarginMillis",
            None,
        ),
        // Names that every child's name can be made from.
        on_create(
            named("Orders"),
            "metadata.name must start with a lowercase letter",
            // The API server's own name check comes first.
            Some("a lowercase RFC 1123 subdomain must consist of"),
        ),
        on_create(
            named("1orders"),
            "metadata.name must start with a lowercase letter",
            None,
        ),
        on_create(
            named(&"a".repeat(51)),
            "metadata.name may be at most 50 characters",
            None,
        ),
        // PgInstance and PgBackup.
        on_update(
            instance("billing", 1),
            instance("orders", 1),
            "cluster is immutable",
        ),
        on_update(
            instance("orders", 2),
            instance("orders", 1),
            "ordinal is immutable",
        ),
        on_update(
            backup("primary"),
            backup("preferStandby"),
            "a PgBackup's spec is immutable",
        ),
        on_create(
            backup("replica"),
            "/spec/target: \"replica\" is not one of",
            Some("spec.target: Unsupported value: \"replica\""),
        ),
    ];
    // Roles and databases.
    for reserved in ["postgres", "streaming_replica", "pg_monitor2", "public"] {
        out.push(on_create(
            with_roles(json!([{"name": reserved}])),
            "roles[].name must not be postgres, streaming_replica",
            None,
        ));
    }
    out.extend([
        on_create(
            with_roles(json!([{"name": "boss", "superuser": true}])),
            "roles[].superuser needs allowSuperuserRoles: true",
            None,
        ),
        on_create(
            with_roles(json!([{"name": "copier", "replication": true}])),
            "roles[].replication must be false",
            None,
        ),
        on_create(
            with_roles(json!([{"name": "app"}])),
            "roles[].name must not be bootstrap.initdb.owner",
            None,
        ),
        on_create(
            with_roles(json!([{"name": "a"}, {"name": "a"}])),
            "roles[].name must be unique",
            None,
        ),
        on_create(
            with_roles(json!([{"name": "server", "generatePassword": true}])),
            "with generatePassword the Secret <cluster>-<name> would be one the cluster has already",
            None,
        ),
        on_create(
            with_roles(json!([{"name": "Big Boss", "generatePassword": true}])),
            "roles[].name: a role with generatePassword gets the Secret <cluster>-<name>",
            None,
        ),
        on_create(
            with_roles(
                json!([{"name": "a", "generatePassword": true, "passwordSecret": {"name": "a-pw"}}]),
            ),
            "set passwordSecret or generatePassword, not both",
            None,
        ),
        // 32 characters of 2 bytes each: a rule counting characters would let them pass.
        on_create(
            with_roles(json!([{"name": "ü".repeat(32)}])),
            "roles[].name may be at most 63 bytes",
            None,
        ),
        on_create(
            database(json!({"name": "é".repeat(32)})),
            "name may be at most 63 bytes",
            None,
        ),
        on_create(
            database(json!({"name": "template1"})),
            "name must not be postgres, template0 or template1",
            None,
        ),
        on_create(
            database(json!({"schemas": [{"name": "pg_mine"}]})),
            "schemas[].name must not start with pg_",
            None,
        ),
        on_update(
            database(json!({"name": "other"})),
            database(json!({})),
            "name is immutable",
        ),
        on_update(
            database(json!({"encoding": "LATIN1"})),
            database(json!({"encoding": "UTF8"})),
            "encoding is immutable",
        ),
    ]);
    for (name, _) in pgha::api::postgres::OWNED_PARAMETERS {
        out.push(on_create(
            with(json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB", *name: "x"}}}})),
            &format!("parameter {name} is managed by the operator and cannot be set"),
            None,
        ));
    }
    out
}
