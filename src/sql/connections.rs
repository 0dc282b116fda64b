//! The operator's connections to clusters: one per cluster and database, kept open and shared
//! by every reconcile, made again when closed. Every statement is counted as a read or a write
//! in `tusk_sql_statements_total`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use tokio_postgres::{Client, Row, Statement, types::ToSql};

use super::endpoint::{Endpoint, EndpointError};
use crate::facts::cluster::SUPERUSER;

/// Why SQL failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// No endpoint is known for the cluster.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The superuser password could not be read.
    #[error("{0}")]
    Password(String),
    /// The CA to verify the cluster's server certificate with could not be had.
    #[error("TLS: {0}")]
    Tls(String),
    /// The cluster did not answer, or refused the superuser.
    #[error("connecting to {endpoint} (database {database}) as {SUPERUSER}: {message}")]
    Connect {
        /// Where.
        endpoint: Endpoint,
        /// Which database.
        database: String,
        /// What went wrong.
        message: String,
    },
    /// PostgreSQL refused a statement.
    #[error("{statement}: {message}")]
    Statement {
        /// The statement, with any password verifier left out.
        statement: String,
        /// PostgreSQL's message (and detail).
        message: String,
        /// The SQLSTATE, such as `42704` (undefined object).
        code: Option<String>,
    },
}

/// PostgreSQL's words for `error`, with the detail and hint when it gave them.
fn message(error: &tokio_postgres::Error) -> (String, Option<String>) {
    match error.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_owned();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            (text, Some(db.code().code().to_owned()))
        }
        None => (error.to_string(), None),
    }
}

/// `statement` with the literal after `PASSWORD` left out, for logs and conditions.
pub fn redact(statement: &str) -> String {
    match statement.find(" PASSWORD '") {
        Some(at) => {
            let rest = &statement[at + " PASSWORD '".len()..];
            let end = rest.find('\'').map_or(rest.len(), |i| i + 1);
            format!("{} PASSWORD '…'{}", &statement[..at], &rest[end..])
        }
        None => statement.to_owned(),
    }
}

/// A connection to one database of one cluster.
pub struct Session {
    client: Client,
    statements: Family<Vec<(String, String)>, Counter>,
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

impl Session {
    fn count(&self, kind: &str) {
        self.statements
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
    }

    fn error(statement: &str, e: &tokio_postgres::Error) -> SqlError {
        let (message, code) = message(e);
        SqlError::Statement {
            statement: redact(statement),
            message,
            code,
        }
    }

    /// A read-only query, prepared once per connection.
    pub async fn read(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, SqlError> {
        let cached = self.prepared.lock().expect("never poisoned").get(sql).cloned();
        let statement = match cached {
            Some(s) => s,
            None => {
                let s = self.client.prepare(sql).await.map_err(|e| Self::error(sql, &e))?;
                self.prepared
                    .lock()
                    .expect("never poisoned")
                    .insert(sql, s.clone());
                s
            }
        };
        self.count("read");
        self.client
            .query(&statement, params)
            .await
            .map_err(|e| Self::error(sql, &e))
    }

    /// One statement that changes something, sent as it is (DDL takes no parameters).
    pub async fn write(&self, sql: &str) -> Result<(), SqlError> {
        self.count("write");
        tracing::info!(statement = %redact(sql), "sql");
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| Self::error(sql, &e))
    }
}

/// What the operator logs in to a cluster with.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The superuser's password.
    pub password: String,
    /// The CA the server's certificate must chain to (PEM); `None` for a cluster without TLS.
    pub ca: Option<Vec<u8>>,
}

/// A cluster endpoint and a database.
type SessionKey = (Endpoint, String);

/// Open connections, by cluster endpoint and database.
#[derive(Clone)]
pub struct Connections {
    open: Arc<Mutex<HashMap<SessionKey, Arc<Session>>>>,
    statements: Family<Vec<(String, String)>, Counter>,
}

impl Connections {
    /// No connection yet; statements are counted in `statements`.
    pub fn new(statements: Family<Vec<(String, String)>, Counter>) -> Self {
        Self {
            open: Arc::default(),
            statements,
        }
    }

    /// The open connection to `database` at `endpoint`, or a new one made with the superuser's
    /// [`Credentials`] (only asked for when connecting).
    pub async fn get<F, Fut>(
        &self,
        endpoint: &Endpoint,
        database: &str,
        credentials: F,
    ) -> Result<Arc<Session>, SqlError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credentials, SqlError>>,
    {
        let key = (endpoint.clone(), database.to_owned());
        if let Some(session) = self.open.lock().expect("never poisoned").get(&key)
            && !session.client.is_closed()
        {
            return Ok(session.clone());
        }
        let credentials = credentials().await?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(SUPERUSER)
            .password(&credentials.password)
            .dbname(database)
            .application_name(crate::facts::operator::NAME)
            .connect_timeout(Duration::from_secs(5));
        // verify-full with TLS: only the cluster's CA is trusted, and the certificate must name
        // the server.
        let client = super::tls::connect(
            config,
            &endpoint.host,
            endpoint.port,
            &endpoint.server_name,
            credentials.ca.as_deref(),
        )
        .await
        .map_err(|e| match e {
            super::tls::ConnectError::Tls(message) => SqlError::Tls(message),
            super::tls::ConnectError::Postgres(e) => SqlError::Connect {
                endpoint: endpoint.clone(),
                database: database.to_owned(),
                message: message(&e).0,
            },
        })?;
        let session = Arc::new(Session {
            client,
            statements: self.statements.clone(),
            prepared: Mutex::default(),
        });
        self.open
            .lock()
            .expect("never poisoned")
            .insert(key, session.clone());
        Ok(session)
    }

    /// Closes the connection to `database` at `endpoint` (before dropping that database).
    pub fn forget(&self, endpoint: &Endpoint, database: &str) {
        self.open
            .lock()
            .expect("never poisoned")
            .remove(&(endpoint.clone(), database.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_logs_or_conditions() {
        assert_eq!(
            super::redact("ALTER ROLE \"a\" LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc' VALID UNTIL 'infinity'"),
            "ALTER ROLE \"a\" LOGIN PASSWORD '…' VALID UNTIL 'infinity'"
        );
        assert_eq!(super::redact("DROP ROLE \"a\""), "DROP ROLE \"a\"");
    }
}
