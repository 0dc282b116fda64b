//! Databases: what a `PostgresDatabase` wants ([`DatabaseSpec`]), what PostgreSQL has
//! ([`DatabaseState`]), and the statements between them ([`plan`], [`plan_extensions`]).

use super::{
    connections::{Session, SqlError},
    ident, literal,
};
use crate::api::postgres_database::v1::{Extension, PostgresDatabase};

/// A database as a `PostgresDatabase` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// Its name.
    pub name: String,
    /// The owner role.
    pub owner: String,
    /// Encoding, when one is asked for.
    pub encoding: Option<String>,
    /// Locale, when one is asked for.
    pub locale: Option<String>,
    /// Extensions to have.
    pub extensions: Vec<Extension>,
}

impl DatabaseSpec {
    /// The database `db` describes.
    pub fn of(db: &PostgresDatabase) -> Self {
        Self {
            name: database_name(db),
            owner: db.spec.owner.clone(),
            encoding: db.spec.encoding.clone(),
            locale: db.spec.locale.clone(),
            extensions: db.spec.extensions.clone().unwrap_or_default(),
        }
    }
}

/// The database's name: `spec.databaseName`, or the object's name.
pub fn database_name(db: &PostgresDatabase) -> String {
    db.spec
        .database_name
        .clone()
        .unwrap_or_else(|| db.metadata.name.clone().expect("a stored object has a name"))
}

/// A database as PostgreSQL has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseState {
    /// The owner's name.
    pub owner: String,
    /// Its encoding, such as `UTF8`.
    pub encoding: String,
    /// Its `LC_COLLATE`.
    pub collate: String,
}

/// An extension as PostgreSQL has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionState {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The schema it lives in.
    pub schema: String,
}

const READ_DATABASE: &str = "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, \
                             datcollate::text, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) \
                             FROM pg_database WHERE datname = $1";

const READ_EXTENSIONS: &str = "SELECT e.extname::text, e.extversion, n.nspname::text \
                               FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1";

/// Reads the database; `None` when it does not exist. The second value says whether the owner
/// role exists.
pub async fn read(session: &Session, spec: &DatabaseSpec) -> Result<(Option<DatabaseState>, bool), SqlError> {
    let rows = session.read(READ_DATABASE, &[&spec.name, &spec.owner]).await?;
    match rows.first() {
        Some(row) => Ok((
            Some(DatabaseState {
                owner: row.get(0),
                encoding: row.get(1),
                collate: row.get(2),
            }),
            row.get(3),
        )),
        None => {
            let owner = session.read(ROLE_EXISTS, &[&spec.owner]).await?;
            Ok((None, !owner.is_empty()))
        }
    }
}

const ROLE_EXISTS: &str = "SELECT 1 FROM pg_roles WHERE rolname = $1";

/// Reads the extensions of the database `session` is connected to.
pub async fn read_extensions(session: &Session) -> Result<Vec<ExtensionState>, SqlError> {
    Ok(session
        .read(READ_EXTENSIONS, &[])
        .await?
        .iter()
        .map(|r| ExtensionState {
            name: r.get(0),
            version: r.get(1),
            schema: r.get(2),
        })
        .collect())
}

/// What cannot be converged: the database exists with another encoding or locale, which
/// PostgreSQL fixes at creation. Tusk never drops a database to change them.
pub fn immutable_mismatch(spec: &DatabaseSpec, state: &DatabaseState) -> Option<String> {
    if let Some(encoding) = &spec.encoding
        && !encoding.eq_ignore_ascii_case(&state.encoding)
        && !encoding.replace('-', "").eq_ignore_ascii_case(&state.encoding)
    {
        return Some(format!(
            "database {} exists with encoding {}, not {encoding}; PostgreSQL cannot change it, and Tusk never drops a database to",
            spec.name, state.encoding
        ));
    }
    if let Some(locale) = &spec.locale
        && locale != &state.collate
    {
        return Some(format!(
            "database {} exists with locale {}, not {locale}; PostgreSQL cannot change it, and Tusk never drops a database to",
            spec.name, state.collate
        ));
    }
    None
}

/// The statements on the `postgres` database that make the database itself what `spec` says.
pub fn plan(spec: &DatabaseSpec, state: Option<&DatabaseState>) -> Vec<String> {
    let name = ident(&spec.name);
    let owner = ident(&spec.owner);
    match state {
        None => {
            let mut create = format!("CREATE DATABASE {name} OWNER {owner}");
            if spec.encoding.is_some() || spec.locale.is_some() {
                // Another encoding or locale than template1's needs the pristine template.
                create.push_str(" TEMPLATE template0");
            }
            if let Some(encoding) = &spec.encoding {
                create.push_str(&format!(" ENCODING {}", literal(encoding)));
            }
            if let Some(locale) = &spec.locale {
                create.push_str(&format!(" LOCALE {}", literal(locale)));
            }
            vec![create]
        }
        Some(state) if state.owner != spec.owner => vec![format!("ALTER DATABASE {name} OWNER TO {owner}")],
        Some(_) => vec![],
    }
}

/// The statements, in the database itself, that give it the extensions `spec` lists. Extensions
/// it has that `spec` does not list are kept: dropping one could drop user data.
pub fn plan_extensions(spec: &DatabaseSpec, have: &[ExtensionState]) -> Vec<String> {
    let mut out = Vec::new();
    for want in &spec.extensions {
        let name = ident(&want.name);
        match have.iter().find(|h| h.name == want.name) {
            None => {
                let mut create = format!("CREATE EXTENSION IF NOT EXISTS {name}");
                if let Some(schema) = &want.schema {
                    out.push(format!(
                        "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                        ident(schema),
                        ident(&spec.owner)
                    ));
                    create.push_str(&format!(" SCHEMA {}", ident(schema)));
                }
                if let Some(version) = &want.version {
                    create.push_str(&format!(" VERSION {}", literal(version)));
                }
                out.push(create);
            }
            Some(h) => {
                if let Some(schema) = want.schema.as_ref().filter(|s| **s != h.schema) {
                    out.push(format!(
                        "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                        ident(schema),
                        ident(&spec.owner)
                    ));
                    out.push(format!("ALTER EXTENSION {name} SET SCHEMA {}", ident(schema)));
                }
                if let Some(version) = want.version.as_ref().filter(|v| **v != h.version) {
                    out.push(format!("ALTER EXTENSION {name} UPDATE TO {}", literal(version)));
                }
            }
        }
    }
    out
}

/// Drops the database, closing its other connections first (`WITH (FORCE)`, PostgreSQL 13+).
pub async fn drop_database(session: &Session, name: &str) -> Result<(), SqlError> {
    session
        .write(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DatabaseSpec {
        DatabaseSpec {
            name: "shop".into(),
            owner: "app".into(),
            encoding: None,
            locale: None,
            extensions: vec![Extension {
                name: "pg_trgm".into(),
                version: None,
                schema: None,
            }],
        }
    }

    #[test]
    fn a_missing_database_is_created_with_its_owner() {
        assert_eq!(plan(&spec(), None), ["CREATE DATABASE \"shop\" OWNER \"app\""]);
        let mut s = spec();
        s.encoding = Some("UTF8".into());
        s.locale = Some("C.UTF-8".into());
        assert_eq!(
            plan(&s, None),
            ["CREATE DATABASE \"shop\" OWNER \"app\" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8'"]
        );
    }

    #[test]
    fn only_the_owner_is_converged_and_encoding_is_never_forced() {
        let state = DatabaseState {
            owner: "someone".into(),
            encoding: "UTF8".into(),
            collate: "C".into(),
        };
        assert_eq!(
            plan(&spec(), Some(&state)),
            ["ALTER DATABASE \"shop\" OWNER TO \"app\""]
        );
        let same = DatabaseState {
            owner: "app".into(),
            ..state.clone()
        };
        assert!(plan(&spec(), Some(&same)).is_empty());
        let mut s = spec();
        s.encoding = Some("LATIN1".into());
        assert!(
            immutable_mismatch(&s, &state)
                .unwrap()
                .contains("encoding UTF8, not LATIN1")
        );
        s.encoding = Some("utf-8".into());
        assert_eq!(immutable_mismatch(&s, &state), None);
    }

    #[test]
    fn extensions_are_added_moved_and_updated_but_never_dropped() {
        let mut s = spec();
        assert_eq!(
            plan_extensions(&s, &[]),
            ["CREATE EXTENSION IF NOT EXISTS \"pg_trgm\""]
        );
        let have = vec![
            ExtensionState {
                name: "pg_trgm".into(),
                version: "1.6".into(),
                schema: "public".into(),
            },
            ExtensionState {
                name: "plpgsql".into(),
                version: "1.0".into(),
                schema: "pg_catalog".into(),
            },
        ];
        assert!(plan_extensions(&s, &have).is_empty());
        s.extensions[0].version = Some("1.5".into());
        s.extensions[0].schema = Some("ext".into());
        assert_eq!(
            plan_extensions(&s, &have),
            [
                "CREATE SCHEMA IF NOT EXISTS \"ext\" AUTHORIZATION \"app\"",
                "ALTER EXTENSION \"pg_trgm\" SET SCHEMA \"ext\"",
                "ALTER EXTENSION \"pg_trgm\" UPDATE TO '1.5'",
            ]
        );
    }
}
