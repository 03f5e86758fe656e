//! What the primary runs to make Postgres's roles and databases match `spec.managed`: the
//! agent reads the catalogs, these functions compare, the agent runs the steps and reports
//! each item. Only what the spec names is touched; everything else in Postgres is left alone.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};

use super::quote::{ident, literal};
use crate::api::managed::{Ensure, ManagedDatabase, PgDatabaseSpec, RoleSpec};

/// What a managed item is: a role by name, or a PgDatabase by its resource name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    Role(String),
    Database(String),
}

/// A role as pg_roles / pg_auth_members / pg_shdescription / pg_shdepend show it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObservedRole {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub inherit: bool,
    pub replication: bool,
    pub connection_limit: i32,
    /// rolvaliduntil; None is NULL or 'infinity'.
    pub valid_until: Option<DateTime<Utc>>,
    pub member_of: Vec<String>,
    pub comment: Option<String>,
    /// Databases in which it owns objects or holds privileges (pg_shdepend), "" for shared
    /// objects: whatever makes DROP ROLE fail.
    pub owns_in: Vec<String>,
}

/// A database as pg_database shows it, and what is inside.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObservedDatabase {
    pub name: String,
    pub owner: String,
    pub connection_limit: i32,
    /// None when the agent could not look inside (just created, connections refused): then
    /// the inside is planned as for an empty database, which `IF NOT EXISTS` makes safe.
    pub inside: Option<Inside>,
}

/// What the agent saw connected to the database itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Inside {
    pub extensions: Vec<ObservedExtension>,
    pub schemas: Vec<ObservedSchema>,
}

/// An installed extension (pg_extension), its schema by name.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObservedExtension {
    pub name: String,
    pub version: String,
    pub schema: String,
}

/// A schema (pg_namespace).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ObservedSchema {
    pub name: String,
    pub owner: String,
    /// Whether it holds no object (pg_class, pg_proc, pg_type...): only then is it dropped.
    pub empty: bool,
}

/// pg_available_extension_versions: the versions of each extension the image has, and the
/// default version of each (named when a requested version is missing).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Available {
    pub versions: BTreeMap<String, Vec<String>>,
    pub default_version: BTreeMap<String, String>,
}

/// Statements run together for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub item: Item,
    /// The database to run in; None: `postgres`.
    pub database: Option<String>,
    pub statements: Vec<String>,
    /// Whether the statements run in one transaction; false for CREATE and DROP DATABASE,
    /// which Postgres refuses in a transaction block (each then runs on its own).
    pub transactional: bool,
    /// What it does, for a person: "create role analyst, grant pg_read_all_data to analyst".
    pub what: String,
}

/// An item left as it is, and why: the person has to act first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub item: Item,
    pub message: String,
}

/// Steps in the order they are to run. An item may have steps and refusals both (an
/// unavailable extension does not hold back the rest of its database): it is applied only
/// when it has no refusal and all its steps succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub refused: Vec<Refusal>,
}

impl Plan {
    fn refuse(&mut self, item: &Item, message: String) {
        let item = item.clone();
        self.refused.push(Refusal { item, message });
    }

    /// The refusals met, and a step for the changes when there are any.
    fn add(&mut self, item: &Item, database: Option<&str>, transactional: bool, changes: Changes) {
        for message in changes.refused {
            self.refuse(item, message);
        }
        if !changes.statements.is_empty() {
            self.steps.push(Step {
                item: item.clone(),
                database: database.map(str::to_string),
                statements: changes.statements,
                transactional,
                what: changes.what.join(", "),
            });
        }
    }
}

/// Statements and, for each, what it does; and what could not be planned.
#[derive(Default)]
struct Changes {
    statements: Vec<String>,
    what: Vec<String>,
    refused: Vec<String>,
}

impl Changes {
    fn push(&mut self, statement: String, what: String) {
        self.statements.push(statement);
        self.what.push(what);
    }
}

/// The role as Postgres shows it once `role` is applied (owning nothing).
fn as_applied(role: &RoleSpec) -> ObservedRole {
    ObservedRole {
        name: role.name.clone(),
        login: role.login,
        superuser: role.superuser,
        createdb: role.createdb,
        createrole: role.createrole,
        inherit: role.inherit,
        replication: role.replication,
        connection_limit: role.connection_limit,
        // Postgres keeps microseconds: finer would never compare equal.
        valid_until: role
            .valid_until
            .as_ref()
            .and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond())),
        member_of: role.in_roles.clone(),
        comment: role.comment.clone(),
        owns_in: Vec::new(),
    }
}

/// What `CREATE ROLE` and `ALTER ROLE` set. Roles are compared by it too: one `ALTER ROLE`
/// then restores all that differs.
fn attributes_sql(r: &ObservedRole) -> String {
    let flag = |on: bool, name: &str| format!("{}{name}", if on { "" } else { "NO" });
    let until = r.valid_until.map_or("infinity".into(), |t| {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    });
    format!(
        "{} {} {} {} {} {} CONNECTION LIMIT {} VALID UNTIL {}",
        flag(r.login, "LOGIN"),
        flag(r.superuser, "SUPERUSER"),
        flag(r.createdb, "CREATEDB"),
        flag(r.createrole, "CREATEROLE"),
        flag(r.inherit, "INHERIT"),
        flag(r.replication, "REPLICATION"),
        r.connection_limit,
        literal(&until),
    )
}

/// Steps making the roles of `desired` match; `observed` is all of pg_roles (built-in roles
/// such as `pg_read_all_data` included, so that memberships in them can be checked).
pub fn roles(desired: &[RoleSpec], observed: &[ObservedRole]) -> Plan {
    let seen: BTreeMap<&str, &ObservedRole> =
        observed.iter().map(|r| (r.name.as_str(), r)).collect();
    let (present, absent): (Vec<&RoleSpec>, Vec<_>) = desired.iter().partition(|r| r.is_present());
    let (ordered, circle) = by_membership(present);
    let circle_names = list(circle.iter().map(|r| r.name.as_str()));
    let circle_message = format!(
        "the inRoles of {circle_names} go round in a circle (or wait on one): Postgres does not \
         let a role be a member of itself, even through others; break the circle"
    );
    let mut plan = Plan::default();
    for role in &circle {
        plan.refuse(&Item::Role(role.name.clone()), circle_message.clone());
    }
    // The roles there once the steps before have run.
    let mut there: BTreeSet<&str> = seen
        .keys()
        .copied()
        .filter(|name| !absent.iter().any(|r| r.name == *name))
        .chain(ordered.iter().map(|r| r.name.as_str()))
        .collect();
    for role in ordered {
        let item = Item::Role(role.name.clone());
        let missing: Vec<&str> = role
            .in_roles
            .iter()
            .map(String::as_str)
            .filter(|m| !there.contains(m))
            .collect();
        if missing.is_empty() {
            let changes = role_changes(role, seen.get(role.name.as_str()).copied());
            plan.add(&item, None, true, changes);
            continue;
        }
        if !seen.contains_key(role.name.as_str()) {
            there.remove(role.name.as_str());
        }
        let message = format!(
            "role {} is to be a member of roles that do not exist: {}; add them to spec.roles or \
             remove them from its inRoles",
            role.name,
            list(missing)
        );
        plan.refuse(&item, message);
    }
    // Last: the roles kept may first have to leave them.
    for role in absent {
        let (item, x) = (Item::Role(role.name.clone()), &role.name);
        let Some(have) = seen.get(x.as_str()) else {
            continue;
        };
        if have.owns_in.is_empty() {
            let mut drop = Changes::default();
            drop.push(format!("DROP ROLE {}", ident(x)), format!("drop role {x}"));
            plan.add(&item, None, true, drop);
        } else {
            let places = have.owns_in.iter().map(|d| match d.as_str() {
                "" => "(shared objects)",
                d => d,
            });
            let message = format!(
                "role {x} owns objects or holds privileges in databases {}: REASSIGN OWNED BY / \
                 DROP OWNED BY there first, then it is dropped",
                list(places)
            );
            plan.refuse(&item, message);
        }
    }
    plan
}

/// The present roles, each after the desired roles it is to be a member of; then those whose
/// memberships go round in a circle (or wait on one), which cannot be ordered.
fn by_membership(mut rest: Vec<&RoleSpec>) -> (Vec<&RoleSpec>, Vec<&RoleSpec>) {
    let names: BTreeSet<&str> = rest.iter().map(|r| r.name.as_str()).collect();
    let mut placed = BTreeSet::new();
    let mut ordered = Vec::new();
    loop {
        let (ready, waiting): (Vec<&RoleSpec>, Vec<_>) = rest.into_iter().partition(|r| {
            r.in_roles
                .iter()
                .all(|m| !names.contains(m.as_str()) || placed.contains(m.as_str()))
        });
        if ready.is_empty() {
            return (ordered, waiting);
        }
        placed.extend(ready.iter().map(|r| r.name.as_str()));
        ordered.extend(ready);
        rest = waiting;
    }
}

fn role_changes(role: &RoleSpec, seen: Option<&ObservedRole>) -> Changes {
    let (name, x, want) = (ident(&role.name), &role.name, as_applied(role));
    let mut changes = Changes::default();
    let (comment, member_of) = match seen {
        None => {
            let create = format!("CREATE ROLE {name} WITH {}", attributes_sql(&want));
            changes.push(create, format!("create role {x}"));
            (None, &[][..])
        }
        Some(r) => {
            if attributes_sql(r) != attributes_sql(&want) {
                let alter = format!("ALTER ROLE {name} WITH {}", attributes_sql(&want));
                changes.push(alter, format!("set the attributes of role {x}"));
            }
            (r.comment.as_deref(), r.member_of.as_slice())
        }
    };
    if want.comment.as_deref() != comment {
        let text = want.comment.as_deref().map_or("NULL".into(), literal);
        changes.push(
            format!("COMMENT ON ROLE {name} IS {text}"),
            format!("comment on role {x}"),
        );
    }
    for r in want.member_of.iter().filter(|r| !member_of.contains(r)) {
        changes.push(
            format!("GRANT {} TO {name}", ident(r)),
            format!("grant {r} to {x}"),
        );
    }
    for r in member_of.iter().filter(|r| !want.member_of.contains(r)) {
        changes.push(
            format!("REVOKE {} FROM {name}", ident(r)),
            format!("revoke {r} from {x}"),
        );
    }
    changes
}

/// Steps making the databases of `desired` match. `roles_known` is pg_roles as it is after
/// the roles' steps ran.
pub fn databases(
    desired: &[ManagedDatabase],
    observed: &[ObservedDatabase],
    roles_known: &BTreeSet<String>,
    available: &Available,
) -> Plan {
    let seen: BTreeMap<&str, &ObservedDatabase> =
        observed.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    let empty = Inside::default();
    let mut plan = Plan::default();
    for managed in desired {
        let (item, spec) = (Item::Database(managed.resource.clone()), &managed.spec);
        let (name, d, have) = (ident(&spec.name), &spec.name, seen.get(spec.name.as_str()));
        if let Some(first) = claimed.get(d.as_str()) {
            plan.refuse(
                &item,
                format!("database {d} is claimed by PgDatabase {first}"),
            );
            continue;
        }
        claimed.insert(d, &managed.resource);
        let mut own = Changes::default();
        if !spec.is_present() {
            if have.is_some() {
                own.push(
                    format!("DROP DATABASE {name}"),
                    format!("drop database {d}"),
                );
            }
            plan.add(&item, None, false, own);
            continue;
        }
        if !roles_known.contains(&spec.owner) {
            plan.refuse(&item, not_a_role(&spec.owner, &format!("database {d}")));
            continue;
        }
        match have {
            None => own.push(create_database(spec), format!("create database {d}")),
            Some(have) => {
                if have.owner != spec.owner {
                    let alter = format!("ALTER DATABASE {name} OWNER TO {}", ident(&spec.owner));
                    own.push(alter, format!("set the owner of {d} to {}", spec.owner));
                }
                if have.connection_limit != spec.connection_limit {
                    let n = spec.connection_limit;
                    let alter = format!("ALTER DATABASE {name} CONNECTION LIMIT {n}");
                    own.push(alter, format!("set connection limit of {d} to {n}"));
                }
            }
        }
        // CREATE DATABASE cannot run in a transaction; ALTER DATABASE OWNER and CONNECTION
        // LIMIT can, and then apply together or not at all.
        plan.add(&item, None, have.is_some(), own);
        let inside = have.and_then(|o| o.inside.as_ref()).unwrap_or(&empty);
        let mut changes = Changes::default();
        schema_changes(spec, inside, roles_known, &mut changes);
        extension_changes(spec, inside, available, &mut changes);
        plan.add(&item, Some(d), true, changes);
    }
    plan
}

fn create_database(spec: &PgDatabaseSpec) -> String {
    let (name, owner) = (ident(&spec.name), ident(&spec.owner));
    let mut sql = format!("CREATE DATABASE {name} OWNER {owner}");
    // The default template1 only serves the server's own encoding and locale.
    let other = spec.encoding.is_some() || spec.locale.is_some();
    if let Some(t) = spec.template.as_deref().or(other.then_some("template0")) {
        sql += &format!(" TEMPLATE {}", ident(t));
    }
    if let Some(e) = &spec.encoding {
        sql += &format!(" ENCODING {}", literal(e));
    }
    if let Some(l) = &spec.locale {
        sql += &format!(" LOCALE {}", literal(l));
    }
    sql + &format!(" CONNECTION LIMIT {}", spec.connection_limit)
}

fn not_a_role(owner: &str, of: &str) -> String {
    format!("owner {owner} of {of} is not a role; add it to spec.roles")
}

fn schema_changes(
    spec: &PgDatabaseSpec,
    inside: &Inside,
    roles_known: &BTreeSet<String>,
    changes: &mut Changes,
) {
    let d = &spec.name;
    for schema in &spec.schemas {
        let (name, s) = (ident(&schema.name), &schema.name);
        let owner = schema.owner.as_ref().unwrap_or(&spec.owner);
        let (authorization, o) = (ident(owner), owner);
        let have = inside.schemas.iter().find(|have| have.name == *s);
        match (schema.ensure, have) {
            (Ensure::Present, _) if !roles_known.contains(owner) => {
                changes
                    .refused
                    .push(not_a_role(owner, &format!("schema {s} in {d}")));
            }
            (Ensure::Present, None) => changes.push(
                format!("CREATE SCHEMA IF NOT EXISTS {name} AUTHORIZATION {authorization}"),
                format!("create schema {s} in {d}"),
            ),
            (Ensure::Present, Some(have)) if have.owner != *owner => changes.push(
                format!("ALTER SCHEMA {name} OWNER TO {authorization}"),
                format!("set the owner of schema {s} in {d} to {o}"),
            ),
            (Ensure::Absent, Some(have)) if have.empty => {
                changes.push(
                    format!("DROP SCHEMA {name}"),
                    format!("drop schema {s} from {d}"),
                );
            }
            (Ensure::Absent, Some(_)) => changes.refused.push(format!(
                "schema {s} in {d} is not empty; move or drop what it holds, then it is dropped"
            )),
            _ => {}
        }
    }
}

fn extension_changes(
    spec: &PgDatabaseSpec,
    inside: &Inside,
    available: &Available,
    changes: &mut Changes,
) {
    let d = &spec.name;
    for extension in &spec.extensions {
        let (name, x) = (ident(&extension.name), &extension.name);
        let version = extension.version.as_deref();
        let have = inside.extensions.iter().find(|have| have.name == *x);
        match (extension.ensure, have) {
            (Ensure::Absent, Some(_)) => {
                changes.push(
                    format!("DROP EXTENSION {name}"),
                    format!("drop extension {x} from {d}"),
                );
            }
            (Ensure::Absent, None) => {}
            (Ensure::Present, None) => match unavailable(x, version, d, available) {
                Some(why) => changes.refused.push(why),
                None => {
                    let schema = extension
                        .schema
                        .as_deref()
                        .map(|s| format!(" SCHEMA {}", ident(s)));
                    let version = version.map(|v| format!(" VERSION {}", literal(v)));
                    let with: String = [schema, version].into_iter().flatten().collect();
                    let with = if with.is_empty() {
                        with
                    } else {
                        format!(" WITH{with}")
                    };
                    let create = format!("CREATE EXTENSION IF NOT EXISTS {name}{with}");
                    changes.push(create, format!("install extension {x} in {d}"));
                }
            },
            (Ensure::Present, Some(have)) => {
                if let Some(v) = version.filter(|v| *v != have.version) {
                    match unavailable(x, Some(v), d, available) {
                        Some(why) => changes.refused.push(why),
                        None => changes.push(
                            format!("ALTER EXTENSION {name} UPDATE TO {}", literal(v)),
                            format!("update extension {x} in {d} to {v}"),
                        ),
                    }
                }
                if let Some(s) = extension.schema.as_ref().filter(|s| **s != have.schema) {
                    changes.push(
                        format!("ALTER EXTENSION {name} SET SCHEMA {}", ident(s)),
                        format!("move extension {x} in {d} to schema {s}"),
                    );
                }
            }
        }
    }
}

/// Why the image cannot install `version` (or any version) of extension `name` in database
/// `d`, naming what it has instead; None when it can.
fn unavailable(
    name: &str,
    version: Option<&str>,
    d: &str,
    available: &Available,
) -> Option<String> {
    let Some(versions) = available.versions.get(name) else {
        let mut close: Vec<(usize, &String)> = available
            .versions
            .keys()
            .map(|n| (distance(name, n), n))
            .filter(|(far, n)| *far <= 3 || n.contains(name) || name.contains(n.as_str()))
            .collect();
        close.sort();
        let names: Vec<&str> = close.iter().take(10).map(|(_, n)| n.as_str()).collect();
        let there = match names.is_empty() {
            true => "it is not there".to_string(),
            false => format!("pg_available_extensions lists {}", list(names)),
        };
        return Some(format!(
            "extension {name} for database {d} is not available in the image: {there}"
        ));
    };
    let version = version.filter(|v| !versions.iter().any(|have| have == v))?;
    let default = available
        .default_version
        .get(name)
        .map(|v| format!(" (default {v})"))
        .unwrap_or_default();
    let versions = list(versions.iter().map(String::as_str));
    Some(format!(
        "extension {name} version {version} for database {d} is not available in the image: \
         it has {versions}{default}"
    ))
}

/// Levenshtein distance in characters: how far a misspelt extension name is from each
/// available one.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn role(spec: Value) -> RoleSpec {
        serde_json::from_value(spec).unwrap()
    }

    /// As a role with the spec's defaults shows in pg_roles.
    fn seen(name: &str) -> ObservedRole {
        let (name, login, inherit) = (name.to_string(), true, true);
        ObservedRole {
            name,
            login,
            inherit,
            connection_limit: -1,
            ..Default::default()
        }
    }

    fn statements(plan: &Plan) -> Vec<&str> {
        let all = plan.steps.iter().flat_map(|s| &s.statements);
        all.map(String::as_str).collect()
    }

    fn messages(plan: &Plan) -> Vec<&str> {
        plan.refused.iter().map(|r| r.message.as_str()).collect()
    }

    fn at(rfc3339: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc())
    }

    const ATTRIBUTES: &str =
        "NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION CONNECTION LIMIT -1";

    #[test]
    fn missing_roles_are_created_with_all_their_attributes_in_one_step() {
        let observed = [seen("pg_read_all_data"), seen("Ünïcødé")];
        #[rustfmt::skip]
        let cases = [
            (json!({"name": "analyst"}),
                vec![format!(r#"CREATE ROLE "analyst" WITH LOGIN {ATTRIBUTES} VALID UNTIL 'infinity'"#)]),
            (json!({"name": "a\"b c", "login": false, "createdb": true, "createrole": true, "inherit": false,
                    "connectionLimit": 5, "comment": "it's", "validUntil": "2027-01-01T00:00:00Z"}),
                vec![r#"CREATE ROLE "a""b c" WITH NOLOGIN NOSUPERUSER CREATEDB CREATEROLE NOINHERIT NOREPLICATION CONNECTION LIMIT 5 VALID UNTIL '2027-01-01T00:00:00Z'"#.into(),
                     r#"COMMENT ON ROLE "a""b c" IS 'it''s'"#.into()]),
            // Postgres keeps microseconds.
            (json!({"name": "select", "inRoles": ["pg_read_all_data", "Ünïcødé"],
                    "validUntil": "2027-01-01T00:00:00.1234567Z"}),
                vec![format!(r#"CREATE ROLE "select" WITH LOGIN {ATTRIBUTES} VALID UNTIL '2027-01-01T00:00:00.123456Z'"#),
                     r#"GRANT "pg_read_all_data" TO "select""#.into(), r#"GRANT "Ünïcødé" TO "select""#.into()]),
        ];
        for (spec, expected) in cases {
            let spec = role(spec);
            let plan = roles(std::slice::from_ref(&spec), &observed);
            assert_eq!(statements(&plan), expected, "{}", spec.name);
            let [step] = &plan.steps[..] else {
                panic!("{plan:?}")
            };
            assert_eq!(
                (&step.item, &step.database),
                (&Item::Role(spec.name.clone()), &None)
            );
            assert!(step.transactional);
            assert!(step.what.starts_with(&format!("create role {}", spec.name)));
            // Once applied, nothing is left to do.
            let applied = [&observed[..], &[as_applied(&spec)]].concat();
            assert_eq!(roles(&[spec], &applied), Plan::default());
        }
    }

    #[test]
    fn roles_as_desired_plan_nothing() {
        let desired = [
            role(
                json!({"name": "a\"b c", "comment": "c", "inRoles": ["select"],
                        "validUntil": "2027-01-01T00:00:00.1234567Z"}),
            ),
            role(json!({"name": "select", "login": false, "connectionLimit": 3})),
            role(json!({"name": "gone", "ensure": "absent"})),
        ];
        let observed = [
            ObservedRole {
                comment: Some("c".into()),
                member_of: vec!["select".into()],
                valid_until: at("2027-01-01T00:00:00.123456Z"),
                ..seen("a\"b c")
            },
            ObservedRole {
                login: false,
                connection_limit: 3,
                ..seen("select")
            },
        ];
        assert_eq!(roles(&desired, &observed), Plan::default());
    }

    type Change = fn(&mut ObservedRole);

    #[test]
    fn existing_roles_change_only_where_they_differ() {
        let desired = role(json!({"name": "a\"b c", "comment": "c", "inRoles": ["r"]}));
        let base = ObservedRole {
            comment: Some("c".into()),
            member_of: vec!["r".into()],
            ..seen("a\"b c")
        };
        let alter =
            format!(r#"ALTER ROLE "a""b c" WITH LOGIN {ATTRIBUTES} VALID UNTIL 'infinity'"#);
        let comment = r#"COMMENT ON ROLE "a""b c" IS 'c'"#;
        #[rustfmt::skip]
        let cases: [(Change, Vec<&str>); 7] = [
            (|r| r.login = false, vec![&alter]),
            (|r| r.connection_limit = 3, vec![&alter]),
            (|r| r.valid_until = at("2020-01-01T00:00:00Z"), vec![&alter]),
            (|r| r.comment = None, vec![comment]),
            (|r| r.member_of.clear(), vec![r#"GRANT "r" TO "a""b c""#]),
            (|r| r.member_of.push("select".into()), vec![r#"REVOKE "select" FROM "a""b c""#]),
            (|r| (r.superuser, r.comment) = (true, Some("x".into())), vec![&alter, comment]),
        ];
        for (change, expected) in cases {
            let mut observed = base.clone();
            change(&mut observed);
            let plan = roles(std::slice::from_ref(&desired), &[observed, seen("r")]);
            assert_eq!(statements(&plan), expected);
            assert_eq!(plan.steps.len(), 1);
        }
        let uncommented = RoleSpec {
            comment: None,
            ..desired
        };
        let plan = roles(&[uncommented], &[base, seen("r")]);
        assert_eq!(statements(&plan), [r#"COMMENT ON ROLE "a""b c" IS NULL"#]);
    }

    #[test]
    fn absent_roles_are_dropped_last_unless_they_own_something() {
        let gone = role(json!({"name": "Ünïcødé", "ensure": "absent"}));
        let kept = role(json!({"name": "analyst"}));
        let member = ObservedRole {
            member_of: vec!["Ünïcødé".into()],
            ..seen("analyst")
        };
        let plan = roles(&[gone.clone(), kept], &[seen("Ünïcødé"), member]);
        let expected = [
            r#"REVOKE "Ünïcødé" FROM "analyst""#,
            r#"DROP ROLE "Ünïcødé""#,
        ];
        assert_eq!(statements(&plan), expected);
        assert_eq!(plan.steps[1].what, "drop role Ünïcødé");
        assert_eq!(roles(std::slice::from_ref(&gone), &[]), Plan::default());

        let owner = ObservedRole {
            owns_in: vec!["my db".into(), "".into()],
            ..seen("Ünïcødé")
        };
        let plan = roles(&[gone], &[owner]);
        assert_eq!(plan.steps, []);
        assert_eq!(plan.refused[0].item, Item::Role("Ünïcødé".into()));
        assert_eq!(
            messages(&plan),
            [
                "role Ünïcødé owns objects or holds privileges in databases my db, (shared objects): \
              REASSIGN OWNED BY / DROP OWNED BY there first, then it is dropped"
            ]
        );
    }

    #[test]
    fn memberships_need_existing_roles_created_first_and_no_circle() {
        let r = |name: &str, in_roles: &[&str]| role(json!({"name": name, "inRoles": in_roles}));
        let old = role(json!({"name": "old", "ensure": "absent"}));
        // (desired, observed, roles with a step in order, refused roles)
        #[rustfmt::skip]
        let cases = [
            (vec![r("b", &["a"]), r("a", &[])], vec![], vec!["a", "b"], vec![]),
            (vec![r("c", &["b"]), r("b", &["a"]), r("a", &[])], vec![], vec!["a", "b", "c"], vec![]),
            // Refusing b refuses who needs it created, not who finds it there already.
            (vec![r("b", &["ghost"]), r("c", &["b"])], vec![], vec![], vec!["b", "c"]),
            (vec![r("c", &["b"]), r("b", &["ghost"])], vec!["b"], vec!["c"], vec!["b"]),
            (vec![r("b", &["old"]), old], vec!["old"], vec!["old"], vec!["b"]),
            (vec![r("p", &["q"]), r("q", &["p"]), r("ok", &[])], vec![], vec!["ok"], vec!["p", "q"]),
            (vec![r("self", &["self"])], vec![], vec![], vec!["self"]),
        ];
        let items = |names: Vec<&str>| -> Vec<Item> {
            names.into_iter().map(|n| Item::Role(n.into())).collect()
        };
        for (desired, observed, stepped, refusing) in cases {
            let observed: Vec<_> = observed.into_iter().map(seen).collect();
            let plan = roles(&desired, &observed);
            let got: Vec<_> = plan.steps.into_iter().map(|s| s.item).collect();
            assert_eq!(got, items(stepped), "{desired:?}");
            let mut got: Vec<_> = plan.refused.into_iter().map(|r| r.item).collect();
            got.sort();
            assert_eq!(got, items(refusing), "{desired:?}");
        }
        let plan = roles(&[r("b", &["ghost", "a"])], &[seen("a")]);
        assert!(messages(&plan)[0].contains("roles that do not exist: ghost;"));
        let plan = roles(&[r("p", &["q"]), r("q", &["p"])], &[]);
        assert!(messages(&plan)[1].starts_with("the inRoles of p, q go round in a circle"));
    }

    fn observed_db(name: &str, owner: &str, inside: Option<Inside>) -> ObservedDatabase {
        let (name, owner) = (name.into(), owner.into());
        ObservedDatabase {
            name,
            owner,
            connection_limit: -1,
            inside,
        }
    }

    /// The plan for PgDatabases `(resource, spec)` of cluster `orders`, where the roles are
    /// `select`, `Ünïcødé` and `app` and the image has a few extensions.
    fn plan_for(desired: &[(&str, Value)], observed: &[ObservedDatabase]) -> Plan {
        let desired: Vec<_> = desired
            .iter()
            .map(|(resource, spec)| {
                let mut spec = spec.clone();
                spec["cluster"] = json!("orders");
                let (resource, spec) =
                    (resource.to_string(), serde_json::from_value(spec).unwrap());
                ManagedDatabase {
                    resource,
                    generation: 1,
                    spec,
                }
            })
            .collect();
        let known = ["select", "Ünïcødé", "app"].map(String::from).into();
        let versions = [
            ("pg_stat_statements", "1.10 1.11"),
            ("pg_trgm", "1.6"),
            ("postgis", "3.5.0"),
            ("postgis_raster", "3.5.0"),
            ("vector", "0.8.0"),
        ];
        let available = Available {
            versions: versions
                .iter()
                .map(|(n, v)| (n.to_string(), v.split(' ').map(String::from).collect()))
                .collect(),
            default_version: [("pg_stat_statements".into(), "1.11".into())].into(),
        };
        databases(&desired, observed, &known, &available)
    }

    #[test]
    fn missing_databases_are_created_outside_a_transaction() {
        let create = r#"CREATE DATABASE "my db" OWNER "select""#;
        #[rustfmt::skip]
        let cases = [
            (json!({}), " CONNECTION LIMIT -1"),
            (json!({"connectionLimit": 10}), " CONNECTION LIMIT 10"),
            (json!({"encoding": "UTF8"}), r#" TEMPLATE "template0" ENCODING 'UTF8' CONNECTION LIMIT -1"#),
            (json!({"locale": "en_US.UTF-8"}), r#" TEMPLATE "template0" LOCALE 'en_US.UTF-8' CONNECTION LIMIT -1"#),
            (json!({"template": "a\"b", "encoding": "LATIN1"}), r#" TEMPLATE "a""b" ENCODING 'LATIN1' CONNECTION LIMIT -1"#),
        ];
        for (mut spec, tail) in cases {
            (spec["name"], spec["owner"]) = (json!("my db"), json!("select"));
            let plan = plan_for(&[("mine", spec)], &[]);
            assert_eq!(statements(&plan), [format!("{create}{tail}")]);
            let [step] = &plan.steps[..] else {
                panic!("{plan:?}")
            };
            assert_eq!((step.transactional, &step.database), (false, &None));
            assert_eq!(step.item, Item::Database("mine".into()));
            assert_eq!(step.what, "create database my db");
        }
    }

    #[test]
    fn existing_databases_get_their_owner_and_limit_back_together() {
        let desired = [(
            "mine",
            json!({"name": "my db", "owner": "Ünïcødé", "connectionLimit": 10}),
        )];
        let plan = plan_for(&desired, &[observed_db("my db", "app", None)]);
        assert_eq!(
            statements(&plan),
            [
                r#"ALTER DATABASE "my db" OWNER TO "Ünïcødé""#,
                r#"ALTER DATABASE "my db" CONNECTION LIMIT 10"#
            ]
        );
        assert_eq!((plan.steps.len(), plan.steps[0].transactional), (1, true));
        let as_desired = ObservedDatabase {
            connection_limit: 10,
            ..observed_db("my db", "Ünïcødé", None)
        };
        assert_eq!(plan_for(&desired, &[as_desired]), Plan::default());
    }

    #[test]
    fn refused_databases_get_no_step() {
        let desired = [
            ("first", json!({"name": "my db", "owner": "select"})),
            ("second", json!({"name": "my db", "owner": "app"})),
            (
                "orphan",
                json!({"name": "other", "owner": "nobody", "schemas": [{"name": "s"}]}),
            ),
        ];
        let plan = plan_for(&desired, &[]);
        let stepped: Vec<_> = plan.steps.iter().map(|s| &s.item).collect();
        assert_eq!(stepped, [&Item::Database("first".into())]);
        let refused: Vec<_> = plan.refused.iter().map(|r| &r.item).collect();
        let items = ["second", "orphan"].map(|r| Item::Database(r.into()));
        assert_eq!(refused, items.iter().collect::<Vec<_>>());
        assert_eq!(
            messages(&plan),
            [
                "database my db is claimed by PgDatabase first",
                "owner nobody of database other is not a role; add it to spec.roles"
            ]
        );
    }

    #[test]
    fn absent_databases_are_dropped_outside_a_transaction() {
        let desired = [(
            "mine",
            json!({"name": "my db", "owner": "nobody", "ensure": "absent"}),
        )];
        let plan = plan_for(&desired, &[observed_db("my db", "app", None)]);
        assert_eq!(statements(&plan), [r#"DROP DATABASE "my db""#]);
        assert!(!plan.steps[0].transactional);
        assert_eq!(plan_for(&desired, &[]), Plan::default());
    }

    /// The plan for database `my db` of `select` with these schemas and extensions, when it
    /// holds `inside`.
    fn inside_plan(schemas: Value, extensions: Value, inside: Inside) -> Plan {
        let spec = json!({"name": "my db", "owner": "select", "schemas": schemas,
                          "extensions": extensions});
        plan_for(
            &[("mine", spec)],
            &[observed_db("my db", "select", Some(inside))],
        )
    }

    #[test]
    fn schemas_are_created_given_back_and_dropped_only_when_empty() {
        let schema = |name: &str, owner: &str, empty| {
            let (name, owner) = (name.into(), owner.into());
            Some(ObservedSchema { name, owner, empty })
        };
        let absent = json!({"name": "user", "ensure": "absent"});
        #[rustfmt::skip]
        let cases = [
            (json!({"name": "user"}), None,
                Ok(r#"CREATE SCHEMA IF NOT EXISTS "user" AUTHORIZATION "select""#)),
            (json!({"name": "a\"b", "owner": "Ünïcødé"}), None,
                Ok(r#"CREATE SCHEMA IF NOT EXISTS "a""b" AUTHORIZATION "Ünïcødé""#)),
            (json!({"name": "user"}), schema("user", "app", false), Ok(r#"ALTER SCHEMA "user" OWNER TO "select""#)),
            (absent.clone(), schema("user", "app", true), Ok(r#"DROP SCHEMA "user""#)),
            (json!({"name": "user", "owner": "nobody"}), None,
                Err("owner nobody of schema user in my db is not a role; add it to spec.roles")),
            (absent.clone(), schema("user", "app", false),
                Err("schema user in my db is not empty; move or drop what it holds, then it is dropped")),
        ];
        for (spec, have, expected) in cases {
            let inside = Inside {
                schemas: have.into_iter().collect(),
                ..Inside::default()
            };
            let plan = inside_plan(json!([spec]), json!([]), inside);
            let outcome = [statements(&plan), messages(&plan)].concat();
            assert_eq!(outcome, [expected.unwrap_or_else(|e| e)], "{spec}");
            assert_eq!(plan.refused.is_empty(), expected.is_ok(), "{spec}");
        }
        for (spec, have) in [
            (json!({"name": "user"}), schema("user", "select", false)),
            (absent, None),
        ] {
            let inside = Inside {
                schemas: have.into_iter().collect(),
                ..Inside::default()
            };
            assert_eq!(
                inside_plan(json!([spec]), json!([]), inside),
                Plan::default()
            );
        }
    }

    #[test]
    fn extensions_are_installed_updated_moved_and_dropped() {
        let ext = |name: &str, version: &str, schema: &str| {
            let (name, version, schema) = (name.into(), version.into(), schema.into());
            Some(ObservedExtension {
                name,
                version,
                schema,
            })
        };
        let stats = "pg_stat_statements";
        #[rustfmt::skip]
        let cases = [
            (json!({"name": "pg_trgm"}), None, vec![r#"CREATE EXTENSION IF NOT EXISTS "pg_trgm""#]),
            (json!({"name": stats, "version": "1.10", "schema": "my s"}), None,
                vec![r#"CREATE EXTENSION IF NOT EXISTS "pg_stat_statements" WITH SCHEMA "my s" VERSION '1.10'"#]),
            // Unset, the version is whatever was installed.
            (json!({"name": "pg_trgm"}), ext("pg_trgm", "1.5", "public"), vec![]),
            (json!({"name": "pg_trgm", "version": "1.5"}), ext("pg_trgm", "1.5", "public"), vec![]),
            (json!({"name": stats, "version": "1.11"}), ext(stats, "1.10", "public"),
                vec![r#"ALTER EXTENSION "pg_stat_statements" UPDATE TO '1.11'"#]),
            (json!({"name": "pg_trgm", "schema": "select"}), ext("pg_trgm", "1.6", "public"),
                vec![r#"ALTER EXTENSION "pg_trgm" SET SCHEMA "select""#]),
            // Gone from the image, and dropped without asking it.
            (json!({"name": "old", "ensure": "absent"}), ext("old", "1", "public"), vec![r#"DROP EXTENSION "old""#]),
            (json!({"name": "old", "ensure": "absent"}), None, vec![]),
        ];
        for (spec, have, expected) in cases {
            let inside = Inside {
                extensions: have.into_iter().collect(),
                ..Inside::default()
            };
            let plan = inside_plan(json!([]), json!([spec]), inside);
            assert_eq!(statements(&plan), expected, "{spec}");
            assert_eq!(plan.refused, [], "{spec}");
        }
    }

    #[test]
    fn unavailable_extensions_are_refused_and_the_rest_still_planned() {
        let extensions = json!([
            {"name": "postgi"}, {"name": "timescaledb"}, {"name": "pg_stat_statements", "version": "9"},
            {"name": "vector", "version": "0.9.0", "schema": "s"}, {"name": "pg_trgm"},
        ]);
        let vector = ObservedExtension {
            name: "vector".into(),
            version: "0.7.0".into(),
            schema: "public".into(),
        };
        let inside = Inside {
            extensions: vec![vector],
            ..Inside::default()
        };
        let plan = inside_plan(json!([]), extensions, inside);
        assert_eq!(
            statements(&plan),
            [
                r#"ALTER EXTENSION "vector" SET SCHEMA "s""#,
                r#"CREATE EXTENSION IF NOT EXISTS "pg_trgm""#
            ]
        );
        let missing = "for database my db is not available in the image";
        assert_eq!(
            messages(&plan),
            [
                format!(
                    "extension postgi {missing}: pg_available_extensions lists postgis, postgis_raster"
                ),
                format!("extension timescaledb {missing}: it is not there"),
                format!(
                    "extension pg_stat_statements version 9 {missing}: it has 1.10, 1.11 (default 1.11)"
                ),
                format!("extension vector version 0.9.0 {missing}: it has 0.8.0"),
            ]
        );
    }

    #[test]
    fn inside_steps_run_in_the_database_once_it_is_made() {
        let spec = json!({"name": "my db", "owner": "select", "schemas": [{"name": "Ünïcødé"}],
                          "extensions": [{"name": "pg_trgm", "schema": "Ünïcødé"}]});
        let plan = plan_for(&[("mine", spec)], &[]);
        let [create, inside] = &plan.steps[..] else {
            panic!("{plan:?}")
        };
        assert_eq!((create.transactional, &create.database), (false, &None));
        assert_eq!(
            (inside.transactional, inside.database.as_deref()),
            (true, Some("my db"))
        );
        assert_eq!(
            inside.statements,
            [
                r#"CREATE SCHEMA IF NOT EXISTS "Ünïcødé" AUTHORIZATION "select""#,
                r#"CREATE EXTENSION IF NOT EXISTS "pg_trgm" WITH SCHEMA "Ünïcødé""#,
            ]
        );
        let what = "create schema Ünïcødé in my db, install extension pg_trgm in my db";
        assert_eq!(inside.what, what);
    }
}
