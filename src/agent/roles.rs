//! Role changes: promote, follow, rejoin (rewind or re-clone), fence and unfence; and the SQL
//! that keeps a primary's roles and slots as the cluster needs them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use postgres_protocol::password::scram_sha_256;
use tokio_postgres::Client;

use super::bootstrap::sibling;
use super::error::{AgentError, Result};
use super::settings::{Credentials, Settings};
use super::sql::{self, ident, literal};
use super::{Agent, Desired, Endpoint, conf, pgbin};
use crate::plan::{config::slot_name, names};

/// How a former primary (or a diverged replica) came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejoined {
    Rewound,
    /// `pg_rewind` could not work; the old data directory was kept at `kept`.
    Recloned {
        kept: PathBuf,
        reason: String,
    },
}

impl Agent {
    /// Promotes a running replica and waits until it accepts writes; returns the new timeline.
    pub async fn promote(&self) -> Result<u32> {
        let _op = self.ops.lock().await;
        let result = self.promote_locked().await;
        self.record(result)
    }

    async fn promote_locked(&self) -> Result<u32> {
        let client = sql::connect(&self.settings).await?;
        // pg_promote(wait => true) checks every 100 ms; polling here sees the end sooner.
        client
            .execute("SELECT pg_promote(wait => false)", &[])
            .await
            .map_err(AgentError::sql("promoting"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let in_recovery: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(AgentError::sql("waiting for the promotion"))?
                .get(0);
            if !in_recovery {
                break;
            }
            if Instant::now() > deadline {
                return Err(AgentError::Refused(
                    "promote: Postgres did not finish promotion within 60 s; see its log".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.lock().desired = Desired::Primary;
        let config = self.lock().config.clone();
        conf::write(
            &self.settings,
            &config,
            &conf::render(&self.settings, &config)?,
            None,
        )?;
        // Slots first, so that replicas re-pointed at this primary find theirs at once.
        ensure_slots(&client, &self.settings.name, &config.members).await?;
        reload(&self.settings, &client).await?;
        // The new timeline reaches the control file only at a checkpoint, and pg_rewind reads
        // it there; start one now without making the caller wait for it.
        let settings = self.settings.clone();
        tokio::spawn(async move {
            if let Ok(client) = sql::connect(&settings).await
                && let Err(e) = client.batch_execute("CHECKPOINT").await
            {
                tracing::warn!(error = %e, "checkpoint after promotion failed");
            }
        });
        let timeline: i32 = client
            .query_one(
                "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
                &[],
            )
            .await
            .map_err(AgentError::sql("reading the new timeline"))?
            .get(0);
        Ok(u32::try_from(timeline).unwrap_or_default())
    }

    /// Re-points a running replica at another primary with a reload: no restart.
    pub async fn follow(&self, primary: Endpoint) -> Result<()> {
        let _op = self.ops.lock().await;
        let result = async {
            let config = self.lock().config.clone();
            conf::write(
                &self.settings,
                &config,
                &conf::render(&self.settings, &config)?,
                Some(&primary),
            )?;
            self.lock().desired = Desired::Replica(primary);
            let client = sql::connect(&self.settings).await?;
            reload(&self.settings, &client).await.map(drop)
        }
        .await;
        self.record(result)
    }

    /// Turns this instance (typically a former primary) into a replica of `primary`: stops
    /// it, rewinds it to the primary's history with `pg_rewind`, and starts it as a standby.
    /// When rewind cannot work, the data directory is moved aside (never deleted) and the
    /// instance is cloned afresh.
    pub async fn rejoin(&self, primary: Endpoint) -> Result<Rejoined> {
        let _op = self.ops.lock().await;
        let result = self.rejoin_locked(primary).await;
        self.record(result)
    }

    async fn rejoin_locked(&self, primary: Endpoint) -> Result<Rejoined> {
        self.stop_locked().await?;
        self.postmaster.unfence().await?;
        self.lock().desired = Desired::Replica(primary.clone());
        conf::write_passfile(&self.settings, self.credentials().replication.expose())?;
        let outcome = match self.rewind(&primary).await {
            Ok(()) => Rejoined::Rewound,
            Err(e) => {
                let kept = self.keep_aside("rewind-failed")?;
                self.note(format!(
                    "pg_rewind could not rejoin {} to {primary} ({e}); the old data directory was kept at {} and the instance was cloned again",
                    self.settings.name,
                    kept.display()
                ));
                self.clone_from(&primary).await?;
                Rejoined::Recloned {
                    kept,
                    reason: e.to_string(),
                }
            }
        };
        self.start_locked().await?;
        Ok(outcome)
    }

    async fn rewind(&self, primary: &Endpoint) -> Result<()> {
        let password = self.credentials().replication;
        checkpoint_source(&self.settings, primary, password.expose()).await?;
        let source = conf::upstream_conninfo(&self.settings, primary, Some("postgres"));
        let mut cmd = pgbin::command(&self.settings, "pg_rewind");
        cmd.arg("--target-pgdata")
            .arg(&self.settings.data_dir)
            .arg("--source-server")
            .arg(source);
        let out = pgbin::run(cmd).await?;
        tracing::info!(instance = %self.settings.name, output = %out.trim(), "pg_rewind finished");
        Ok(())
    }

    /// Moves the data directory to `<data_dir>.<why>-<UTC time>` and returns that path.
    fn keep_aside(&self, why: &str) -> Result<PathBuf> {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let kept = sibling(&self.settings.data_dir, &format!("{why}-{stamp}"));
        std::fs::rename(&self.settings.data_dir, &kept)
            .map_err(AgentError::io("moving the data directory aside to", &kept))?;
        Ok(kept)
    }

    /// Stops every Postgres process within the fence timeout and keeps Postgres down until
    /// [`Agent::unfence`]; returns how long it took. Not behind the operation lock: fencing
    /// must not wait for a rewind or a clone to finish.
    pub async fn fence(&self) -> Result<Duration> {
        let started = Instant::now();
        self.postmaster.fence(self.settings.timeouts.fence).await?;
        tracing::warn!(instance = %self.settings.name, "fenced");
        Ok(started.elapsed())
    }

    /// Kills every Postgres process at once, without a shutdown: the primary Lease ran out
    /// or went to another, and no commit may be acknowledged from now on.
    pub async fn fence_now(&self) {
        if let Err(e) = self.postmaster.fence(Duration::ZERO).await {
            tracing::error!(instance = %self.settings.name, error = %e, "fencing failed");
            return;
        }
        self.note(format!(
            "{} fenced itself: it no longer held the primary Lease",
            self.settings.name
        ));
    }

    /// Whether Postgres runs (or is about to run) here as the primary.
    pub fn runs_as_primary(&self) -> bool {
        !self.is_fenced()
            && self.postmaster.pid().is_some()
            && self.lock().desired == Desired::Primary
    }

    /// Whether Postgres serves here as the primary: started, roles and slots in place.
    pub fn serves_as_primary(&self) -> bool {
        self.runs_as_primary() && self.lock().serving
    }

    /// Whether the data directory is a standby's (it has a `standby.signal`): started as a
    /// primary, it is promoted.
    pub fn is_standby_dir(&self) -> bool {
        self.settings.data_dir.join("standby.signal").exists()
    }

    /// Whether the data directory was last a primary: such a directory must be rewound
    /// before it can follow another primary. A fresh clone carries the primary's control
    /// file (and a `backup_label`), and a replica a `standby.signal`: neither was a primary.
    pub async fn was_primary(&self) -> Result<bool> {
        let data = &self.settings.data_dir;
        if data.join("backup_label").exists() || data.join("standby.signal").exists() {
            return Ok(false);
        }
        let mut cmd = pgbin::command(&self.settings, "pg_controldata");
        cmd.arg("-D")
            .arg(&self.settings.data_dir)
            .env("LC_ALL", "C");
        let out = pgbin::run(cmd).await?;
        let state = out
            .lines()
            .find_map(|l| l.strip_prefix("Database cluster state:"))
            .map(str::trim)
            .unwrap_or_default();
        Ok(matches!(
            state,
            "in production" | "shut down" | "shutting down" | "in crash recovery"
        ))
    }

    /// Lifts the fence and starts Postgres again in its desired role.
    pub async fn unfence(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        self.postmaster.unfence().await?;
        let result = self.start_locked().await;
        self.record(result)
    }
}

impl Agent {
    /// On a replica: asks its primary to switch to a new WAL segment, so that the one a
    /// backup taken here ends in is archived even when the primary is idle. As the replication
    /// role, which the primary lets run `pg_switch_wal` (`ensure_roles`); failures are logged,
    /// the backup waits on.
    pub async fn switch_primary_wal(&self) {
        let Desired::Replica(primary) = self.lock().desired.clone() else {
            return;
        };
        let password = self.credentials().replication;
        let switched = async {
            let client =
                sql::connect_replication(&self.settings, &primary, password.expose()).await?;
            client
                .batch_execute("SELECT pg_switch_wal()")
                .await
                .map_err(AgentError::sql("switching the primary's WAL segment"))
        };
        match switched.await {
            Ok(()) => {
                tracing::info!(%primary, "asked the primary to switch WAL segments for a backup")
            }
            Err(e) => {
                tracing::warn!(%primary, error = %e, "the primary did not switch WAL segments")
            }
        }
    }
}

/// pg_rewind reads the source's timeline from its control file, which a just-promoted primary
/// updates only at its first checkpoint; before that, pg_rewind wrongly finds "no rewind
/// required" (fixed in PostgreSQL 16). A checkpoint on the source first makes it right.
async fn checkpoint_source(settings: &Settings, primary: &Endpoint, password: &str) -> Result<()> {
    let client = sql::connect_replication(settings, primary, password).await?;
    match client.batch_execute("CHECKPOINT").await {
        // Before PostgreSQL 15 there is no pg_checkpoint role; the checkpoint `promote` starts
        // has to do.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!("the replication role may not CHECKPOINT (PostgreSQL < 15)");
            Ok(())
        }
        result => result.map_err(AgentError::sql(
            "checkpoint on the new primary before pg_rewind",
        )),
    }
}

/// Reloads the configuration and waits until the postmaster has read it; returns the
/// parameters whose change waits for a restart.
pub(super) async fn reload(settings: &Settings, client: &Client) -> Result<Vec<String>> {
    let loaded_at = "SELECT pg_conf_load_time()::text";
    let before: String = client
        .query_one(loaded_at, &[])
        .await
        .map_err(AgentError::sql("reading the configuration load time"))?
        .get(0);
    client
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .map_err(AgentError::sql("reloading the configuration"))?;
    // A new backend inherits the postmaster's configuration, so its load time moves once the
    // postmaster has handled the reload.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = sql::connect(settings).await?;
        let now: String = fresh
            .query_one(loaded_at, &[])
            .await
            .map_err(AgentError::sql("reading the configuration load time"))?
            .get(0);
        if now != before {
            let rows = fresh
                .query(
                    "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
                    &[],
                )
                .await
                .map_err(AgentError::sql("reading pending restarts"))?;
            return Ok(rows.iter().map(|r| r.get(0)).collect());
        }
        if Instant::now() > deadline {
            return Err(AgentError::Refused(
                "reload: Postgres did not reread its configuration within 10 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `ALTER ROLE` with the superuser's and the application role's passwords, as SCRAM verifiers.
fn password_statements(credentials: &Credentials) -> Vec<String> {
    let mut statements = vec![format!(
        "ALTER ROLE {} WITH PASSWORD {}",
        ident(names::SUPERUSER),
        literal(&scram_sha_256(credentials.superuser.expose().as_bytes()))
    )];
    if let Some(app) = &credentials.app {
        statements.push(format!(
            "ALTER ROLE {} WITH LOGIN PASSWORD {}",
            ident(&app.user),
            literal(&scram_sha_256(app.password.expose().as_bytes()))
        ));
    }
    statements
}

/// Sets the superuser's and the application role's passwords (changed in their Secrets).
pub(super) async fn set_passwords(client: &Client, credentials: &Credentials) -> Result<()> {
    client
        .batch_execute(&password_statements(credentials).join(";\n"))
        .await
        .map_err(AgentError::sql("setting the passwords"))
}

/// The superuser's and replication role's passwords, the replication role's right to run
/// `pg_rewind` against this server, and the application's role and database. Passwords are
/// sent as SCRAM verifiers, so the server (and its log) never sees them in clear.
pub(super) async fn ensure_roles(client: &Client, credentials: &Credentials) -> Result<()> {
    let repl = names::REPLICATION_USER;
    let mut script = vec![
        create_role_if_missing(repl, "LOGIN REPLICATION"),
        format!(
            "ALTER ROLE {} WITH LOGIN REPLICATION PASSWORD {}",
            ident(repl),
            literal(&scram_sha_256(credentials.replication.expose().as_bytes()))
        ),
    ];
    // The functions pg_rewind needs on its source (PostgreSQL docs, pg_rewind "Notes").
    for function in [
        "pg_ls_dir(text, boolean, boolean)",
        "pg_stat_file(text, boolean)",
        "pg_read_binary_file(text)",
        "pg_read_binary_file(text, bigint, bigint, boolean)",
    ] {
        script.push(format!(
            "GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {}",
            ident(repl)
        ));
    }
    // A backup on a standby waits for the segment it ends in; its agent has the primary
    // switch segments so that it is archived (`switch_primary_wal`).
    script.push(format!(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO {}",
        ident(repl)
    ));
    // CHECKPOINT on a new primary before pg_rewind (see `checkpoint_source`).
    script.push(format!(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_checkpoint') THEN GRANT pg_checkpoint TO {}; END IF; END $$",
        ident(repl)
    ));
    if let Some(app) = &credentials.app {
        script.push(create_role_if_missing(&app.user, "LOGIN"));
    }
    script.extend(password_statements(credentials));
    client
        .batch_execute(&script.join(";\n"))
        .await
        .map_err(AgentError::sql("creating the cluster's roles"))?;
    if let Some(app) = &credentials.app {
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&app.database],
            )
            .await
            .map_err(AgentError::sql("looking up the application database"))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE DATABASE {} OWNER {}",
                    ident(&app.database),
                    ident(&app.user)
                ))
                .await
                .map_err(AgentError::sql("creating the application database"))?;
        }
    }
    Ok(())
}

fn create_role_if_missing(role: &str, options: &str) -> String {
    format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} WITH {options}; END IF; END $$",
        literal(role),
        ident(role)
    )
}

/// One physical slot per other member, reserved at once; slots of members that left are
/// dropped when no one uses them.
pub(super) async fn ensure_slots(client: &Client, me: &str, members: &[String]) -> Result<()> {
    let wanted: Vec<String> = members
        .iter()
        .filter(|m| m.as_str() != me)
        .map(|m| slot_name(m))
        .collect();
    client
        .execute(
            "SELECT pg_create_physical_replication_slot(s, true) FROM unnest($1::text[]) AS s
             WHERE s NOT IN (SELECT slot_name FROM pg_replication_slots)",
            &[&wanted],
        )
        .await
        .map_err(AgentError::sql("creating replication slots"))?;
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_type = 'physical' AND slot_name LIKE 'pgha\\_%' AND NOT active
               AND slot_name <> ALL($1::text[])",
            &[&wanted],
        )
        .await
        .map_err(AgentError::sql(
            "dropping replication slots of departed members",
        ))?;
    Ok(())
}
