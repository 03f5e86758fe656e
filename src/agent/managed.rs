//! The roles and databases of the orders' `managed` (PgCluster `spec.roles`, PgDatabases),
//! kept by the primary: the catalogs are read, `plan::managed` says what differs, and only
//! that is applied. A pass runs when the orders or a password change, and every
//! [`CHECK_EVERY`] to put back what was changed by hand; never more than one at a time, and
//! beside the agent's loop, which a slow `CREATE DATABASE` must not hold up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use postgres_protocol::password::scram_sha_256;
use tokio_postgres::Client;

use super::error::{AgentError, Result};
use super::{Agent, sql};
use crate::api::managed::{Applied, ManagedSpec, ManagedStatus, Repair};
use crate::plan::managed::{
    Available, Inside, Item, ObservedDatabase, ObservedExtension, ObservedRole, ObservedSchema,
    Plan, Step, databases, roles,
};
use crate::plan::quote::{ident, literal};

/// How often a primary looks for changes made by hand when nothing else happens.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// A role's password as its Secret holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    /// `username` (when the Secret has one) and `password`.
    Given {
        username: Option<String>,
        password: super::Secret,
    },
    /// The Secret is not there (yet), or has no `password`.
    Missing(String),
}

/// What a pass works from: the orders' roles and databases and the roles' passwords.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub managed: ManagedSpec,
    pub passwords: BTreeMap<String, Password>,
}

#[derive(Default)]
pub struct Keeper {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: bool,
    /// When the last pass ended, and what it worked from.
    last: Option<(Instant, Input)>,
    report: Option<ManagedStatus>,
    /// Each item's spec as last applied: a step for it at the same spec undoes a change made
    /// by hand.
    applied: BTreeMap<Item, serde_json::Value>,
    /// The password last set for each role.
    passwords_set: BTreeMap<String, super::Secret>,
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the last pass found (none once this instance is no longer the primary: the next
    /// tick forgets it).
    pub fn report(&self) -> Option<ManagedStatus> {
        self.lock().report.clone()
    }

    /// Starts a pass when one is due: this instance serves as the primary and its input
    /// changed, or [`CHECK_EVERY`] went by. A replica forgets what it set: after a promotion
    /// everything is checked and every password set again.
    pub fn tick(self: &Arc<Self>, agent: &Arc<Agent>, input: Option<Input>) {
        let mut state = self.lock();
        let Some(input) = input.filter(|_| agent.serves_as_primary()) else {
            if !state.running {
                *state = State::default();
            }
            return;
        };
        let due = state
            .last
            .as_ref()
            .is_none_or(|(at, last)| *last != input || at.elapsed() >= CHECK_EVERY);
        if state.running || !due {
            return;
        }
        state.running = true;
        drop(state);
        let (this, agent) = (self.clone(), agent.clone());
        tokio::spawn(async move {
            let report = this.pass(&agent, &input).await;
            let mut state = this.lock();
            state.running = false;
            state.last = Some((Instant::now(), input));
            state.report = Some(report);
        });
    }

    async fn pass(&self, agent: &Agent, input: &Input) -> ManagedStatus {
        let settings = agent.settings();
        let mut outcomes = Outcomes::default();
        let client = match sql::connect(settings).await {
            Ok(client) => client,
            Err(e) => {
                outcomes.fail_roles(input, &e.to_string());
                outcomes.fail_databases(input, &e.to_string());
                return self.outcome(input, outcomes);
            }
        };
        match observe_roles(&client).await {
            Ok(observed) => {
                // A role that is not there (dropped by hand, or never made) is made without a
                // password: set it again after.
                self.lock()
                    .passwords_set
                    .retain(|role, _| observed.iter().any(|o| o.name == *role));
                let plan = roles(&input.managed.roles, &observed);
                self.apply(agent, &plan, &mut outcomes).await;
            }
            Err(e) => outcomes.fail_roles(input, &e.to_string()),
        }
        self.set_passwords(&client, input, &mut outcomes).await;
        let names: Vec<String> = input
            .managed
            .databases
            .iter()
            .map(|d| d.spec.name.clone())
            .collect();
        match observe_databases(agent, &client, &names).await {
            Ok((observed, known, available)) => {
                let plan = databases(&input.managed.databases, &observed, &known, &available);
                self.apply(agent, &plan, &mut outcomes).await;
            }
            Err(e) => outcomes.fail_databases(input, &e.to_string()),
        }
        self.outcome(input, outcomes)
    }

    /// Runs the plan's steps; an item whose step fails is not tried further this pass (a
    /// refusal, such as one missing extension, holds back nothing else of its item).
    async fn apply(&self, agent: &Agent, plan: &Plan, outcomes: &mut Outcomes) {
        for refusal in &plan.refused {
            outcomes.fail(&refusal.item, refusal.message.clone());
        }
        let mut broken = std::collections::BTreeSet::new();
        for step in &plan.steps {
            if broken.contains(&step.item) {
                continue;
            }
            match run(agent, step).await {
                Ok(()) => outcomes.did(&step.item, &step.what),
                Err(e) => {
                    broken.insert(step.item.clone());
                    outcomes.fail(&step.item, format!("{}: {e}", step.what));
                }
            }
        }
    }

    /// Sets a role's password when its Secret's differs from the one set last.
    async fn set_passwords(&self, client: &Client, input: &Input, outcomes: &mut Outcomes) {
        for role in input.managed.roles.iter().filter(|r| r.is_present()) {
            let item = Item::Role(role.name.clone());
            if outcomes.failed.contains_key(&item) {
                continue;
            }
            match input.passwords.get(&role.name) {
                None => {}
                Some(Password::Missing(why)) => outcomes.fail(&item, why.clone()),
                Some(Password::Given {
                    username: Some(username),
                    ..
                }) if *username != role.name => outcomes.fail(
                    &item,
                    format!(
                        "its password Secret's username is {username:?}, not the role's name {:?}",
                        role.name
                    ),
                ),
                Some(Password::Given { password, .. }) => {
                    if self.lock().passwords_set.get(&role.name) == Some(password) {
                        continue;
                    }
                    let statement = format!(
                        "ALTER ROLE {} PASSWORD {}",
                        ident(&role.name),
                        literal(&scram_sha_256(password.expose().as_bytes()))
                    );
                    match client.batch_execute(&statement).await {
                        Ok(()) => {
                            self.lock()
                                .passwords_set
                                .insert(role.name.clone(), password.clone());
                        }
                        Err(e) => outcomes.fail(&item, format!("setting its password: {e}")),
                    }
                }
            }
        }
    }

    /// The status of every item, and a record of what was put back.
    fn outcome(&self, input: &Input, outcomes: Outcomes) -> ManagedStatus {
        let mut state = self.lock();
        let previous = state.report.take().unwrap_or_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut entry = |item: Item, spec: serde_json::Value, generation, before: &[Applied]| {
            let name = match &item {
                Item::Role(name) | Item::Database(name) => name.clone(),
            };
            let mut repaired = before
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.repaired.clone());
            let message = outcomes.failed.get(&item).cloned();
            if message.is_none() {
                if let Some(done) = outcomes.done.get(&item)
                    && state.applied.get(&item) == Some(&spec)
                {
                    repaired = Some(Repair {
                        at: now.clone(),
                        what: done.join("; "),
                    });
                }
                state.applied.insert(item, spec);
            }
            Applied {
                name,
                applied: message.is_none(),
                generation,
                message,
                repaired,
            }
        };
        let roles = input
            .managed
            .roles
            .iter()
            .map(|r| {
                let spec = serde_json::to_value(r).unwrap_or_default();
                entry(Item::Role(r.name.clone()), spec, None, &previous.roles)
            })
            .collect();
        let databases = input
            .managed
            .databases
            .iter()
            .map(|d| {
                let spec = serde_json::to_value(&d.spec).unwrap_or_default();
                let item = Item::Database(d.resource.clone());
                entry(item, spec, Some(d.generation), &previous.databases)
            })
            .collect();
        ManagedStatus { roles, databases }
    }
}

/// What each item's steps did this pass, and the first failure of each.
#[derive(Default)]
struct Outcomes {
    done: BTreeMap<Item, Vec<String>>,
    failed: BTreeMap<Item, String>,
}

impl Outcomes {
    fn did(&mut self, item: &Item, what: &str) {
        self.done
            .entry(item.clone())
            .or_default()
            .push(what.to_string());
    }

    /// Keeps the first failure of `item`, its first line only: Postgres's DETAIL lines (how
    /// many sessions are in the way, …) change from pass to pass, and each change would be a
    /// status write and an Event.
    fn fail(&mut self, item: &Item, message: String) {
        let first = message.lines().next().unwrap_or_default().to_string();
        self.failed.entry(item.clone()).or_insert(first);
    }

    fn fail_roles(&mut self, input: &Input, message: &str) {
        for role in &input.managed.roles {
            self.fail(&Item::Role(role.name.clone()), message.to_string());
        }
    }

    fn fail_databases(&mut self, input: &Input, message: &str) {
        for database in &input.managed.databases {
            self.fail(
                &Item::Database(database.resource.clone()),
                message.to_string(),
            );
        }
    }
}

/// One step: in a transaction when Postgres allows it, else statement by statement
/// (`CREATE DATABASE` refuses to run inside a transaction block, even an implicit one).
async fn run(agent: &Agent, step: &Step) -> Result<()> {
    let database = step.database.as_deref().unwrap_or("postgres");
    let mut client = sql::connect_to(agent.settings(), database).await?;
    let failed = AgentError::sql("running a managed step");
    if step.transactional {
        let transaction = client.transaction().await.map_err(failed)?;
        transaction
            .batch_execute(&step.statements.join(";\n"))
            .await
            .map_err(AgentError::sql("running a managed step"))?;
        transaction
            .commit()
            .await
            .map_err(AgentError::sql("committing a managed step"))
    } else {
        for statement in &step.statements {
            client
                .batch_execute(statement)
                .await
                .map_err(AgentError::sql("running a managed step"))?;
        }
        Ok(())
    }
}

/// Every role: the plan checks memberships against Postgres's own roles too.
async fn observe_roles(client: &Client) -> Result<Vec<ObservedRole>> {
    let rows = client
        .query(
            "SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                    r.rolinherit, r.rolreplication, r.rolconnlimit,
                    CASE WHEN r.rolvaliduntil IS NULL OR r.rolvaliduntil = 'infinity' THEN NULL
                         ELSE to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END,
                    ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                          WHERE m.member = r.oid ORDER BY 1),
                    shobj_description(r.oid, 'pg_authid'),
                    ARRAY(SELECT DISTINCT coalesce(d.datname::text, '') FROM pg_shdepend s
                          LEFT JOIN pg_database d ON d.oid = s.dbid
                          WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = r.oid ORDER BY 1)
             FROM pg_roles r",
            &[],
        )
        .await
        .map_err(AgentError::sql("reading the roles"))?;
    Ok(rows
        .iter()
        .map(|row| ObservedRole {
            name: row.get(0),
            login: row.get(1),
            superuser: row.get(2),
            createdb: row.get(3),
            createrole: row.get(4),
            inherit: row.get(5),
            replication: row.get(6),
            connection_limit: row.get(7),
            valid_until: row
                .get::<_, Option<String>>(8)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.to_utc()),
            member_of: row.get(9),
            comment: row.get(10),
            owns_in: row.get(11),
        })
        .collect())
}

/// The databases named, every role's name, and the extensions the image ships.
async fn observe_databases(
    agent: &Agent,
    client: &Client,
    names: &[String],
) -> Result<(
    Vec<ObservedDatabase>,
    std::collections::BTreeSet<String>,
    Available,
)> {
    let read = AgentError::sql("reading the databases");
    let known = client
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(read)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut available = Available::default();
    for row in client
        .query(
            "SELECT name::text, version, (SELECT default_version FROM pg_available_extensions a WHERE a.name = v.name)
             FROM pg_available_extension_versions v",
            &[],
        )
        .await
        .map_err(AgentError::sql("reading the available extensions"))?
    {
        let name: String = row.get(0);
        if let Some(default) = row.get::<_, Option<String>>(2) {
            available.default_version.insert(name.clone(), default);
        }
        available
            .versions
            .entry(name)
            .or_default()
            .push(row.get(1));
    }
    let rows = client
        .query(
            "SELECT datname::text, pg_get_userbyid(datdba)::text, datconnlimit FROM pg_database
             WHERE datname = ANY($1)",
            &[&names],
        )
        .await
        .map_err(AgentError::sql("reading the databases"))?;
    let mut observed = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        // A database that refuses a connection (datallowconn, its limit) is planned as empty:
        // the steps inside are idempotent and report their own error.
        let inside = look_inside(agent, &name).await.ok();
        observed.push(ObservedDatabase {
            name,
            owner: row.get(1),
            connection_limit: row.get(2),
            inside,
        });
    }
    Ok((observed, known, available))
}

async fn look_inside(agent: &Agent, database: &str) -> Result<Inside> {
    let client = sql::connect_to(agent.settings(), database).await?;
    let extensions = client
        .query(
            "SELECT e.extname::text, e.extversion, n.nspname::text FROM pg_extension e
             JOIN pg_namespace n ON n.oid = e.extnamespace",
            &[],
        )
        .await
        .map_err(AgentError::sql("reading the extensions"))?
        .iter()
        .map(|r| ObservedExtension {
            name: r.get(0),
            version: r.get(1),
            schema: r.get(2),
        })
        .collect();
    let schemas = client
        .query(
            "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text,
                    NOT EXISTS (SELECT FROM pg_class c WHERE c.relnamespace = n.oid)
                    AND NOT EXISTS (SELECT FROM pg_proc p WHERE p.pronamespace = n.oid)
                    AND NOT EXISTS (SELECT FROM pg_type t WHERE t.typnamespace = n.oid)
             FROM pg_namespace n",
            &[],
        )
        .await
        .map_err(AgentError::sql("reading the schemas"))?
        .iter()
        .map(|r| ObservedSchema {
            name: r.get(0),
            owner: r.get(1),
            empty: r.get(2),
        })
        .collect();
    Ok(Inside {
        extensions,
        schemas,
    })
}
