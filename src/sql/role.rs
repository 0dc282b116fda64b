//! Roles: what a `PostgresUser` wants ([`RoleSpec`]), what PostgreSQL has ([`RoleState`], one
//! read-only query), and the statements between them ([`plan`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    connections::{Session, SqlError},
    ident, literal,
};
use crate::api::postgres_user::v1::{DatabasePrivilege, PostgresUser};

/// The database privileges Tusk manages, as PostgreSQL names them.
const DATABASE_PRIVILEGES: [&str; 3] = ["CONNECT", "CREATE", "TEMPORARY"];

/// A role as a `PostgresUser` describes it, with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    /// The role's name.
    pub name: String,
    /// `LOGIN`.
    pub login: bool,
    /// `CREATEDB`.
    pub createdb: bool,
    /// `CREATEROLE`.
    pub createrole: bool,
    /// `INHERIT`.
    pub inherit: bool,
    /// `CONNECTION LIMIT`; -1 is none.
    pub connection_limit: i32,
    /// `VALID UNTIL`, RFC 3339; `None` is never.
    pub valid_until: Option<String>,
    /// Roles it is a member of.
    pub member_of: BTreeSet<String>,
    /// Database privileges, by database.
    pub privileges: BTreeMap<String, BTreeSet<&'static str>>,
}

impl RoleSpec {
    /// The role `user` describes.
    pub fn of(user: &PostgresUser) -> Self {
        let spec = &user.spec;
        let mut privileges: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        for entry in spec.privileges.iter().flatten() {
            let set = privileges.entry(entry.database.clone()).or_default();
            for p in &entry.privileges {
                match p {
                    DatabasePrivilege::Connect => set.insert("CONNECT"),
                    DatabasePrivilege::Create => set.insert("CREATE"),
                    DatabasePrivilege::Temporary => set.insert("TEMPORARY"),
                    DatabasePrivilege::All => {
                        set.extend(DATABASE_PRIVILEGES);
                        true
                    }
                };
            }
        }
        Self {
            name: role_name(user),
            login: spec.login.unwrap_or(true),
            createdb: spec.createdb.unwrap_or(false),
            createrole: spec.createrole.unwrap_or(false),
            inherit: spec.inherit.unwrap_or(true),
            connection_limit: spec.connection_limit.unwrap_or(-1),
            valid_until: spec.valid_until.clone(),
            member_of: spec
                .member_of
                .iter()
                .flatten()
                .cloned()
                .chain(
                    (spec.client_certificate == Some(true))
                        .then(|| crate::facts::cluster::CLIENT_CERTIFICATE_GROUP.to_owned()),
                )
                .collect(),
            privileges,
        }
    }
}

/// The role's name: `spec.roleName`, or the object's name.
pub fn role_name(user: &PostgresUser) -> String {
    user.spec
        .role_name
        .clone()
        .unwrap_or_else(|| user.metadata.name.clone().expect("a stored object has a name"))
}

/// A role as PostgreSQL has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleState {
    /// `rolcanlogin`.
    pub login: bool,
    /// `rolcreatedb`.
    pub createdb: bool,
    /// `rolcreaterole`.
    pub createrole: bool,
    /// `rolinherit`.
    pub inherit: bool,
    /// `rolconnlimit`.
    pub connection_limit: i32,
    /// Whether `rolvaliduntil` is the wanted time (both never, or the same instant).
    pub valid_until_matches: bool,
    /// `rolpassword`: the stored verifier.
    pub verifier: Option<String>,
    /// Roles it is a member of.
    pub member_of: BTreeSet<String>,
    /// Privileges granted to it on databases it does not own, by database.
    pub privileges: BTreeMap<String, BTreeSet<String>>,
}

/// Everything about one role in one query. `$2` is the wanted `VALID UNTIL`, compared by
/// PostgreSQL so that every spelling of the same instant matches.
const READ_ROLE: &str = "\
SELECT a.rolcanlogin, a.rolcreatedb, a.rolcreaterole, a.rolinherit, a.rolconnlimit,
       coalesce(a.rolvaliduntil, 'infinity') = coalesce(($2::text)::timestamptz, 'infinity'),
       a.rolpassword,
       ARRAY(SELECT DISTINCT g.rolname::text FROM pg_auth_members m JOIN pg_authid g ON g.oid = m.roleid
             WHERE m.member = a.oid ORDER BY 1),
       ARRAY(SELECT d.datname::text || '/' || x.privilege_type
             FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) x
             WHERE x.grantee = a.oid AND d.datdba <> a.oid ORDER BY 1)
FROM pg_authid a WHERE a.rolname = $1";

/// Reads the role `spec` names; `None` when it does not exist.
pub async fn read(session: &Session, spec: &RoleSpec) -> Result<Option<RoleState>, SqlError> {
    let rows = session.read(READ_ROLE, &[&spec.name, &spec.valid_until]).await?;
    let Some(row) = rows.first() else { return Ok(None) };
    let mut privileges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in row.get::<_, Vec<String>>(8) {
        if let Some((database, privilege)) = entry.rsplit_once('/') {
            privileges
                .entry(database.to_owned())
                .or_default()
                .insert(privilege.to_owned());
        }
    }
    Ok(Some(RoleState {
        login: row.get(0),
        createdb: row.get(1),
        createrole: row.get(2),
        inherit: row.get(3),
        connection_limit: row.get(4),
        valid_until_matches: row.get(5),
        verifier: row.get(6),
        member_of: row.get::<_, Vec<String>>(7).into_iter().collect(),
        privileges,
    }))
}

fn flag(on: bool, name: &str) -> String {
    if on { name.to_owned() } else { format!("NO{name}") }
}

fn attributes(spec: &RoleSpec) -> String {
    format!(
        "{} {} {} {} CONNECTION LIMIT {} VALID UNTIL {}",
        flag(spec.login, "LOGIN"),
        flag(spec.createdb, "CREATEDB"),
        flag(spec.createrole, "CREATEROLE"),
        flag(spec.inherit, "INHERIT"),
        spec.connection_limit,
        literal(spec.valid_until.as_deref().unwrap_or("infinity")),
    )
}

/// The statements that make the role what `spec` says. `verifier` is a new password verifier,
/// given when the stored one does not match the wanted password (or there is none). An empty
/// plan means the role is as wanted.
pub fn plan(spec: &RoleSpec, state: Option<&RoleState>, verifier: Option<&str>) -> Vec<String> {
    let role = ident(&spec.name);
    let password = verifier
        .map(|v| format!(" PASSWORD {}", literal(v)))
        .unwrap_or_default();
    let mut out = Vec::new();
    let empty = RoleState {
        login: spec.login,
        createdb: spec.createdb,
        createrole: spec.createrole,
        inherit: spec.inherit,
        connection_limit: spec.connection_limit,
        valid_until_matches: true,
        verifier: None,
        member_of: BTreeSet::new(),
        privileges: BTreeMap::new(),
    };
    let state = match state {
        None => {
            out.push(format!("CREATE ROLE {role} WITH {}{password}", attributes(spec)));
            &empty
        }
        Some(state) => {
            let attributes_match = state.login == spec.login
                && state.createdb == spec.createdb
                && state.createrole == spec.createrole
                && state.inherit == spec.inherit
                && state.connection_limit == spec.connection_limit
                && state.valid_until_matches;
            if !attributes_match || verifier.is_some() {
                out.push(format!("ALTER ROLE {role} WITH {}{password}", attributes(spec)));
            }
            state
        }
    };
    for group in spec.member_of.difference(&state.member_of) {
        out.push(format!("GRANT {} TO {role}", ident(group)));
    }
    for group in state.member_of.difference(&spec.member_of) {
        out.push(format!("REVOKE {} FROM {role}", ident(group)));
    }
    let databases: BTreeSet<&String> = spec.privileges.keys().chain(state.privileges.keys()).collect();
    for database in databases {
        let want: BTreeSet<&str> = spec
            .privileges
            .get(database)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let have: BTreeSet<&str> = state
            .privileges
            .get(database)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|p| DATABASE_PRIVILEGES.contains(p))
            .collect();
        let grant: Vec<&str> = want.difference(&have).copied().collect();
        let revoke: Vec<&str> = have.difference(&want).copied().collect();
        if !grant.is_empty() {
            out.push(format!(
                "GRANT {} ON DATABASE {} TO {role}",
                grant.join(", "),
                ident(database)
            ));
        }
        if !revoke.is_empty() {
            out.push(format!(
                "REVOKE {} ON DATABASE {} FROM {role}",
                revoke.join(", "),
                ident(database)
            ));
        }
    }
    out
}

/// Databases that allow connections, with their owners, for dropping a role.
const DATABASES: &str = "SELECT datname::text, pg_get_userbyid(datdba)::text FROM pg_database \
                         WHERE datallowconn AND NOT datistemplate ORDER BY 1";

/// Whether the role exists.
const ROLE_EXISTS: &str = "SELECT 1 FROM pg_roles WHERE rolname = $1";

/// Drops `role` the way a `Delete` reclaim policy says: databases it owns go to the superuser,
/// then in each database what it owns goes to that database's owner and its privileges are
/// dropped (`REASSIGN OWNED`, `DROP OWNED`), then the role goes. `session` is connected to the
/// `postgres` database; `open` connects to another, and `visited` collects the databases it
/// connected to, even when a statement fails.
pub async fn drop_role<F, Fut>(
    session: &Session,
    role: &str,
    open: F,
    visited: &mut Vec<String>,
) -> Result<(), SqlError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<std::sync::Arc<Session>, SqlError>>,
{
    if session.read(ROLE_EXISTS, &[&role]).await?.is_empty() {
        return Ok(());
    }
    let superuser = crate::facts::cluster::SUPERUSER;
    for row in session.read(DATABASES, &[]).await? {
        let (database, owner): (String, String) = (row.get(0), row.get(1));
        if owner == role {
            session
                .write(&format!(
                    "ALTER DATABASE {} OWNER TO {}",
                    ident(&database),
                    ident(superuser)
                ))
                .await?;
        }
        let heir = if owner == role {
            superuser.to_owned()
        } else {
            owner
        };
        let db = open(database.clone()).await?;
        visited.push(database);
        db.write(&format!("REASSIGN OWNED BY {} TO {}", ident(role), ident(&heir)))
            .await?;
        db.write(&format!("DROP OWNED BY {}", ident(role))).await?;
    }
    session.write(&format!("DROP ROLE {}", ident(role))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RoleSpec {
        RoleSpec {
            name: "app".into(),
            login: true,
            createdb: false,
            createrole: false,
            inherit: true,
            connection_limit: -1,
            valid_until: None,
            member_of: BTreeSet::from(["readers".to_owned()]),
            privileges: BTreeMap::from([("shop".to_owned(), BTreeSet::from(["CONNECT", "TEMPORARY"]))]),
        }
    }

    fn state_of(spec: &RoleSpec) -> RoleState {
        RoleState {
            login: spec.login,
            createdb: spec.createdb,
            createrole: spec.createrole,
            inherit: spec.inherit,
            connection_limit: spec.connection_limit,
            valid_until_matches: true,
            verifier: Some("SCRAM-SHA-256$...".into()),
            member_of: spec.member_of.clone(),
            privileges: spec
                .privileges
                .iter()
                .map(|(d, ps)| (d.clone(), ps.iter().map(|p| (*p).to_owned()).collect()))
                .collect(),
        }
    }

    #[test]
    fn a_missing_role_is_created_with_everything() {
        assert_eq!(
            plan(&spec(), None, Some("SCRAM-SHA-256$4096:s$k:k")),
            [
                "CREATE ROLE \"app\" WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity' PASSWORD 'SCRAM-SHA-256$4096:s$k:k'",
                "GRANT \"readers\" TO \"app\"",
                "GRANT CONNECT, TEMPORARY ON DATABASE \"shop\" TO \"app\"",
            ]
        );
    }

    #[test]
    fn a_converged_role_needs_nothing() {
        assert!(plan(&spec(), Some(&state_of(&spec())), None).is_empty());
    }

    #[test]
    fn drift_is_repaired_and_only_drift() {
        let mut state = state_of(&spec());
        state.createdb = true;
        state.member_of.insert("admins".into());
        state.privileges.get_mut("shop").unwrap().insert("CREATE".into());
        state
            .privileges
            .insert("other".into(), BTreeSet::from(["CONNECT".to_owned()]));
        assert_eq!(
            plan(&spec(), Some(&state), None),
            [
                "ALTER ROLE \"app\" WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity'",
                "REVOKE \"admins\" FROM \"app\"",
                "REVOKE CONNECT ON DATABASE \"other\" FROM \"app\"",
                "REVOKE CREATE ON DATABASE \"shop\" FROM \"app\"",
            ]
        );
        let mut rotated = state_of(&spec());
        rotated.valid_until_matches = true;
        assert_eq!(
            plan(&spec(), Some(&rotated), Some("V")),
            [
                "ALTER ROLE \"app\" WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity' PASSWORD 'V'"
            ]
        );
    }

    #[test]
    fn a_hostile_name_stays_one_identifier() {
        let mut s = spec();
        s.name = r#"x"; DROP TABLE t; --"#.into();
        s.member_of.clear();
        s.privileges.clear();
        let statements = plan(&s, None, None);
        assert_eq!(
            statements,
            [
                r#"CREATE ROLE "x""; DROP TABLE t; --" WITH LOGIN NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity'"#
            ]
        );
    }
}
