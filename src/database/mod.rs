//! sqlx connections to the databases coffer dumps and restores into: pre-flight checks, server
//! versions, table lists and row counts, and what a staging restore needs (exists / empty /
//! create / drop, and a fingerprint telling whether two addresses reach the same server).
//!
//! The dump tools do the dumping; sqlx does what they cannot. Passwords go into connect
//! options, never into a url string, and statement logging is off. Everything here is
//! synchronous for its callers: a session owns a small current-thread tokio runtime.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

mod url;

pub use url::{DbUrl, check_postgres_url, redact_url};

use crate::snapshot::TableRows;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Tables with more (estimated) rows than this get the server's estimate, not `count(*)`.
pub const DEFAULT_EXACT_COUNT_LIMIT: u64 = 1_000_000;

/// Which kind of server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
    Sqlite,
}

impl Engine {
    /// The source kind name of this engine's dumps (`postgres`, `mysql`, `sqlite`).
    pub fn kind(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }
}

/// Where a database is, without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A libpq url, checked to hold no password and to name a database.
    Postgres(String),
    Mysql(DbUrl),
    Sqlite(PathBuf),
}

impl Address {
    /// Parses a `--db-url`: `postgres://user@host:port/db`, `mysql://user@host:port/db`
    /// (or `mariadb://`), `sqlite:///abs/path.db` or `sqlite:relative/path.db`.
    ///
    /// # Errors
    /// A message saying what is wrong, never echoing a password.
    pub fn parse(url: &str) -> Result<Address, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            check_postgres_url(url)?;
            return Ok(Address::Postgres(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("mariadb://") {
            return DbUrl::parse(&format!("mysql://{rest}"), "mysql", 3306).map(Address::Mysql);
        }
        if url.starts_with("mysql://") {
            return DbUrl::parse(url, "mysql", 3306).map(Address::Mysql);
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!(
                    "url '{url}' names no file (sqlite:///path/to/file.db)"
                ));
            }
            // Absolute, so that the sqlite3 shell never takes it for a `file:` URI.
            let path = std::env::current_dir()
                .map_err(|e| format!("cannot resolve '{path}': {e}"))?
                .join(path);
            return Ok(Address::Sqlite(path));
        }
        Err(format!(
            "url '{}' is not a database url: use postgres://user@host:5432/db, \
             mysql://user@host:3306/db or sqlite:///path/to/file.db",
            redact_url(url)
        ))
    }

    pub fn engine(&self) -> Engine {
        match self {
            Address::Postgres(_) => Engine::Postgres,
            Address::Mysql(_) => Engine::Mysql,
            Address::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// The database name (the file for SQLite).
    pub fn database(&self) -> String {
        match self {
            Address::Postgres(url) => PgConnectOptions::from_str(url)
                .ok()
                .and_then(|o| o.get_database().map(str::to_string))
                .unwrap_or_default(),
            Address::Mysql(u) => u.database.clone(),
            Address::Sqlite(p) => p.display().to_string(),
        }
    }

    /// `(host, port)` of a network server; `None` for SQLite.
    pub fn host_port(&self) -> Option<(String, u16)> {
        match self {
            Address::Postgres(url) => PgConnectOptions::from_str(url).ok().map(|o| {
                // A socket folder (?host=/run/postgresql) is this machine.
                let host = o
                    .get_socket()
                    .map_or_else(|| o.get_host().to_string(), |s| s.display().to_string());
                (host, o.get_port())
            }),
            // A socket is this machine: same_host takes a path for "local".
            Address::Mysql(u) => Some(match &u.socket {
                Some(socket) => (socket.display().to_string(), u.port),
                None => (u.host.clone(), u.port),
            }),
            Address::Sqlite(_) => None,
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Postgres(url) => write!(f, "{}", redact_url(url)),
            Address::Mysql(u) => {
                write!(f, "mysql://{}@{}:{}/{}", u.user, u.host, u.port, u.database)?;
                match &u.socket {
                    Some(socket) => write!(f, " (socket {})", socket.display()),
                    None => Ok(()),
                }
            }
            Address::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
        }
    }
}

/// Why a database could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to {what}: {why}{hint}")]
    Connect {
        what: String,
        why: String,
        hint: &'static str,
    },
    #[error("{what}: {doing} failed: {why}")]
    Query {
        what: String,
        doing: String,
        why: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// A database to connect to: its address and, if it needs one, its password.
pub struct Database {
    pub address: Address,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("address", &self.address.to_string())
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

enum Conn {
    Pg(PgConnection),
    My(MySqlConnection),
    Lite(SqliteConnection),
}

/// An open connection (and the runtime that drives it).
pub struct Session {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    what: String,
}

/// A server's identity as far as its clients can see it (not which database), to tell whether
/// two addresses reach one server (`localhost` and the host's own name or IP, a DNS alias, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// What must be equal (port, data folder, host name as the server reports them).
    pub label: String,
    /// When the server started (seconds since the epoch; MariaDB's is exact to a second).
    pub started: f64,
}

impl Fingerprint {
    pub fn same_as(&self, other: &Fingerprint) -> bool {
        self.label == other.label && (self.started - other.started).abs() <= 2.0
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, DbError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DbError::Setup(format!("cannot start the database runtime: {e}")))
}

/// What to tell the user about a failed connection.
fn connect_hint(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(db) => {
            // MySQL's SQLSTATE is too coarse (42000 for most): use its error number.
            let code = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map_or_else(
                    || db.code().map(|c| c.to_string()),
                    |m| Some(m.number().to_string()),
                );
            connect_hint_for(code.as_deref())
        }
        sqlx::Error::Io(_) => {
            "; is the server running and reachable at that host and port (firewall, bind \
             address)?"
        }
        sqlx::Error::Tls(_) => "; TLS failed: check sslmode / the server's certificate",
        _ => "",
    }
}

fn connect_hint_for(code: Option<&str>) -> &'static str {
    match code {
        Some("28P01" | "28000" | "1045") => {
            "; check the user and the password (password_file / password_env; the \
                 password is never shown)"
        }
        Some("3D000" | "1049") => "; the database does not exist: check the database name",
        Some("1044" | "42501") => "; the user may not use this database: grant it access",
        _ => "",
    }
}

impl Database {
    /// Connects, within `CONNECT_TIMEOUT`.
    ///
    /// # Errors
    /// `Connect`, with a hint at what to check.
    pub fn connect(&self) -> Result<Session, DbError> {
        self.connect_to(None)
    }

    /// Connects to the server's maintenance database instead (`postgres` for PostgreSQL, none
    /// for MySQL), to create or drop the database itself.
    ///
    /// # Errors
    /// As `connect`.
    pub fn connect_server(&self) -> Result<Session, DbError> {
        self.connect_to(Some(()))
    }

    fn connect_to(&self, server: Option<()>) -> Result<Session, DbError> {
        let rt = runtime()?;
        let what = self.address.to_string();
        let fail = |why: String, hint: &'static str| DbError::Connect {
            what: what.clone(),
            why,
            hint,
        };
        let password = self
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_string());
        let attempt = async {
            match &self.address {
                Address::Postgres(url) => {
                    let mut o = PgConnectOptions::from_str(url)
                        .map_err(|e| (e.to_string(), ""))?
                        .application_name("coffer")
                        .disable_statement_logging();
                    if let Some(p) = &password {
                        o = o.password(p);
                    }
                    if server.is_some() {
                        o = o.database("postgres");
                    }
                    o.connect()
                        .await
                        .map(Conn::Pg)
                        .map_err(|e| (e.to_string(), connect_hint(&e)))
                }
                Address::Mysql(u) => {
                    let mut o = MySqlConnectOptions::new()
                        .host(&u.host)
                        .port(u.port)
                        .username(&u.user)
                        .charset("utf8mb4")
                        .disable_statement_logging();
                    if let Some(socket) = &u.socket {
                        o = o.socket(socket);
                    }
                    if server.is_none() {
                        o = o.database(&u.database);
                    }
                    if let Some(p) = &password {
                        o = o.password(p);
                    }
                    o.connect()
                        .await
                        .map(Conn::My)
                        .map_err(|e| (e.to_string(), connect_hint(&e)))
                }
                Address::Sqlite(path) => {
                    if !path.is_file() {
                        return Err((
                            format!("database file {} does not exist", path.display()),
                            "",
                        ));
                    }
                    SqliteConnectOptions::new()
                        .filename(path)
                        .read_only(true)
                        .create_if_missing(false)
                        .busy_timeout(Duration::from_secs(30))
                        .disable_statement_logging()
                        .connect()
                        .await
                        .map(Conn::Lite)
                        .map_err(|e| (e.to_string(), connect_hint(&e)))
                }
            }
        };
        let conn = rt
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, attempt).await })
            .map_err(|_| {
                fail(
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    "; is the server running and reachable at that host and port?",
                )
            })?
            .map_err(|(why, hint)| fail(why, hint))?;
        Ok(Session { rt, conn, what })
    }
}

/// How long one drill probe may run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(300);

/// The verdict on a probe's first row: its first value judged as `Session::probe` says.
fn truthy<'r, R: Row>(row: &'r R) -> Result<(bool, String), sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    if row.columns().is_empty() {
        return Ok((false, "no column".into()));
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(0) {
        return Ok(v.map_or((false, "NULL".into()), |n| (n > 0, n.to_string())));
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(0) {
        return Ok(v.map_or((false, "NULL".into()), |n| (n > 0, n.to_string())));
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(0) {
        return Ok(v.map_or((false, "NULL".into()), |b| (b, b.to_string())));
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(0) {
        return Ok(v.map_or((false, "NULL".into()), |n| (n > 0.0, n.to_string())));
    }
    match row.try_get::<Option<String>, _>(0) {
        Ok(None) => Ok((false, "NULL".into())),
        Ok(Some(text)) => {
            let t = text.trim();
            let ok = t.eq_ignore_ascii_case("t")
                || t.eq_ignore_ascii_case("true")
                || t.parse::<f64>().is_ok_and(|n| n > 0.0);
            Ok((ok, text))
        }
        Err(_) => Err(sqlx::Error::Protocol(
            "its first value is of a type coffer cannot judge; make it a number or a boolean \
             (e.g. count(*), or CAST(... AS BIGINT), or a comparison like ... > 0)"
                .into(),
        )),
    }
}

/// Quotes an identifier for the engine (`"a""b"` or `` `a``b` ``).
fn quote(engine: Engine, name: &str) -> String {
    match engine {
        Engine::Mysql => format!("`{}`", name.replace('`', "``")),
        Engine::Postgres | Engine::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// A table as the catalog lists it, with the server's row estimate if it keeps one.
struct Listed {
    schema: Option<String>,
    name: String,
    estimate: Option<u64>,
}

impl Listed {
    fn display(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    fn quoted(&self, engine: Engine) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote(engine, s), quote(engine, &self.name)),
            None => quote(engine, &self.name),
        }
    }
}

impl Session {
    fn engine(&self) -> Engine {
        match self.conn {
            Conn::Pg(_) => Engine::Postgres,
            Conn::My(_) => Engine::Mysql,
            Conn::Lite(_) => Engine::Sqlite,
        }
    }

    fn query_err(&self, doing: &str, e: sqlx::Error) -> DbError {
        DbError::Query {
            what: self.what.clone(),
            doing: doing.to_string(),
            why: e.to_string(),
        }
    }

    /// Runs one statement that returns nothing.
    fn execute(&mut self, sql: String, doing: &str) -> Result<(), DbError> {
        let Session { rt, conn, .. } = self;
        let result = rt.block_on(async {
            let q = AssertSqlSafe(sql);
            match conn {
                Conn::Pg(c) => sqlx::raw_sql(q).execute(c).await.map(|_| ()),
                Conn::My(c) => sqlx::raw_sql(q).execute(c).await.map(|_| ()),
                Conn::Lite(c) => sqlx::raw_sql(q).execute(c).await.map(|_| ()),
            }
        });
        result.map_err(|e| self.query_err(doing, e))
    }

    /// Runs a query whose first row's first column is text.
    fn text(&mut self, sql: &'static str, doing: &str) -> Result<String, DbError> {
        let Session { rt, conn, .. } = self;
        let result = rt.block_on(async {
            match conn {
                Conn::Pg(c) => sqlx::query_scalar::<_, String>(sql).fetch_one(c).await,
                Conn::My(c) => sqlx::query_scalar::<_, String>(sql).fetch_one(c).await,
                Conn::Lite(c) => sqlx::query_scalar::<_, String>(sql).fetch_one(c).await,
            }
        });
        result.map_err(|e| self.query_err(doing, e))
    }

    /// The value column of a one-row `SHOW … STATUS` (MySQL).
    fn status_value(&mut self, sql: &'static str) -> Result<String, DbError> {
        let Session { rt, conn, .. } = self;
        let result = rt.block_on(async {
            match conn {
                Conn::My(c) => {
                    let row = sqlx::query(sql).fetch_one(c).await?;
                    let v: Vec<u8> = row.try_get(1)?;
                    Ok(String::from_utf8_lossy(&v).into_owned())
                }
                _ => Err(sqlx::Error::Protocol("SHOW STATUS is MySQL's".into())),
            }
        });
        result.map_err(|e| self.query_err("reading the server's start time", e))
    }

    /// Runs a `count(*)`-like query.
    fn count(&mut self, sql: String, doing: &str) -> Result<u64, DbError> {
        let Session { rt, conn, .. } = self;
        let result = rt.block_on(async {
            let q = AssertSqlSafe(sql);
            match conn {
                Conn::Pg(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
                Conn::My(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
                Conn::Lite(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
            }
        });
        result
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.query_err(doing, e))
    }

    /// The server's version.
    ///
    /// # Errors
    /// `Query`.
    pub fn server_version(&mut self) -> Result<String, DbError> {
        match self.engine() {
            Engine::Postgres => self.text("SHOW server_version", "reading the server version"),
            Engine::Mysql => self.text("SELECT CAST(VERSION() AS CHAR)", "reading the version"),
            Engine::Sqlite => self
                .text("SELECT sqlite_version()", "reading the SQLite version")
                .map(|v| format!("SQLite {v}")),
        }
    }

    /// Starts a read-only repeatable-read transaction and exports its snapshot, for
    /// `pg_dump --snapshot`: counts read afterwards in this session see exactly what the dump
    /// sees. `None` where the server cannot export one (a standby, an old server, another
    /// engine).
    pub fn export_snapshot(&mut self) -> Option<String> {
        if self.engine() != Engine::Postgres {
            return None;
        }
        let begun = self.execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".into(),
            "starting a snapshot",
        );
        if begun.is_err() {
            return None;
        }
        match self.text("SELECT pg_export_snapshot()", "exporting the snapshot") {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::info!("no exported snapshot, counting before the dump instead: {e}");
                let _ = self.execute("ROLLBACK".into(), "ending the snapshot");
                None
            }
        }
    }

    /// Base tables with the server's row estimates, sorted by displayed name.
    fn list_tables(&mut self) -> Result<Vec<Listed>, DbError> {
        let Session { rt, conn, .. } = self;
        let result: Result<Vec<Listed>, sqlx::Error> = rt.block_on(async {
            match conn {
                Conn::Pg(c) => {
                    let rows = sqlx::query(
                        "SELECT n.nspname::text, c.relname::text, c.reltuples::float8 \
                         FROM pg_catalog.pg_class c \
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' \
                         AND n.nspname NOT LIKE 'pg\\_%'",
                    )
                    .fetch_all(c)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            let estimate: f64 = r.try_get(2)?;
                            Ok(Listed {
                                schema: Some(r.try_get(0)?),
                                name: r.try_get(1)?,
                                // -1: never analysed, so no estimate.
                                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                                estimate: (estimate >= 0.0).then_some(estimate as u64),
                            })
                        })
                        .collect()
                }
                Conn::My(c) => {
                    let rows = sqlx::query(
                        "SELECT CAST(TABLE_NAME AS CHAR), TABLE_ROWS FROM information_schema.TABLES \
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
                    )
                    .fetch_all(c)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(Listed {
                                schema: None,
                                name: r.try_get(0)?,
                                estimate: r.try_get::<Option<u64>, _>(1)?,
                            })
                        })
                        .collect()
                }
                Conn::Lite(c) => {
                    let rows = sqlx::query(
                        "SELECT name FROM sqlite_master WHERE type = 'table' \
                         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                         AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'",
                    )
                    .fetch_all(c)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(Listed {
                                schema: None,
                                name: r.try_get(0)?,
                                estimate: None,
                            })
                        })
                        .collect()
                }
            }
        });
        let mut tables = result.map_err(|e| self.query_err("listing the tables", e))?;
        tables.sort_by_key(Listed::display);
        Ok(tables)
    }

    /// How many base tables the database holds (reading the catalog only).
    ///
    /// # Errors
    /// `Query`.
    pub fn table_count(&mut self) -> Result<usize, DbError> {
        self.list_tables().map(|t| t.len())
    }

    /// Every base table's row count: exact (`count(*)`) where the server estimates at most
    /// `exact_limit` rows or keeps no estimate, the estimate above that.
    ///
    /// # Errors
    /// `Query` naming the table.
    pub fn row_counts(&mut self, exact_limit: u64) -> Result<Vec<TableRows>, DbError> {
        let engine = self.engine();
        let mut out = Vec::new();
        for t in self.list_tables()? {
            let name = t.display();
            match t.estimate {
                Some(estimate) if estimate > exact_limit => out.push(TableRows {
                    name,
                    rows: estimate,
                    exact: false,
                    rows_after: None,
                }),
                _ => {
                    let sql = format!("SELECT count(*) FROM {}", t.quoted(engine));
                    let rows = self.count(sql, &format!("counting the rows of {name}"))?;
                    out.push(TableRows {
                        name,
                        rows,
                        exact: true,
                        rows_after: None,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Runs an operator's probe query and judges its first row's first value: true, or a
    /// number above 0, or text reading `t`/`true`/a number above 0, passes; false, 0, NULL,
    /// no row, or anything else fails. `Ok` carries the verdict and the value as text.
    ///
    /// # Errors
    /// `Query` when the statement fails or its value is of a type coffer cannot read.
    pub fn probe(&mut self, sql: &str) -> Result<(bool, String), DbError> {
        let Session { rt, conn, .. } = self;
        let q = || AssertSqlSafe(sql.to_string());
        let result = rt.block_on(async {
            let run = async {
                match conn {
                    Conn::Pg(c) => {
                        let row = sqlx::query(q()).fetch_optional(c).await?;
                        row.as_ref().map(truthy).transpose()
                    }
                    Conn::My(c) => {
                        let row = sqlx::query(q()).fetch_optional(c).await?;
                        row.as_ref().map(truthy).transpose()
                    }
                    Conn::Lite(c) => {
                        let row = sqlx::query(q()).fetch_optional(c).await?;
                        row.as_ref().map(truthy).transpose()
                    }
                }
            };
            tokio::time::timeout(PROBE_TIMEOUT, run)
                .await
                .unwrap_or_else(|_| {
                    Err(sqlx::Error::Protocol(format!(
                        "no answer within {} s",
                        PROBE_TIMEOUT.as_secs()
                    )))
                })
        });
        match result {
            Ok(Some(verdict)) => Ok(verdict),
            Ok(None) => Ok((false, "no row".into())),
            Err(e) => Err(self.query_err("the probe", e)),
        }
    }

    /// How many tables, views, sequences and routines the database holds (0: empty).
    ///
    /// # Errors
    /// `Query`.
    pub fn object_count(&mut self) -> Result<u64, DbError> {
        let sql = match self.engine() {
            Engine::Postgres => {
                "SELECT (SELECT count(*) FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relkind IN ('r','p','v','m','S','f') \
                   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%') \
                 + (SELECT count(*) FROM pg_catalog.pg_proc p \
                   JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                   WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                     WHERE d.objid = p.oid AND d.deptype = 'e'))"
            }
            Engine::Mysql => {
                "SELECT CAST((SELECT count(*) FROM information_schema.TABLES \
                   WHERE TABLE_SCHEMA = DATABASE()) \
                 + (SELECT count(*) FROM information_schema.ROUTINES \
                   WHERE ROUTINE_SCHEMA = DATABASE()) AS SIGNED)"
            }
            Engine::Sqlite => "SELECT count(*) FROM sqlite_master",
        };
        self.count(sql.to_string(), "looking for existing tables")
    }

    /// Whether database `name` exists on this (maintenance) connection's server.
    ///
    /// # Errors
    /// `Query`.
    pub fn database_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let engine = self.engine();
        let Session { rt, conn, .. } = self;
        let result =
            rt.block_on(async {
                match conn {
                    Conn::Pg(c) => {
                        sqlx::query_scalar::<_, i64>(
                            "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = $1",
                        )
                        .bind(name)
                        .fetch_one(c)
                        .await
                    }
                    Conn::My(c) => sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    )
                    .bind(name)
                    .fetch_one(c)
                    .await,
                    Conn::Lite(_) => Ok(0),
                }
            });
        debug_assert!(engine != Engine::Sqlite);
        result
            .map(|n| n > 0)
            .map_err(|e| self.query_err("looking up the database", e))
    }

    /// Creates database `name` (UTF-8: `utf8mb4_unicode_ci` for MariaDB, as Frappe uses).
    ///
    /// # Errors
    /// `Query` (no privilege, …).
    pub fn create_database(&mut self, name: &str) -> Result<(), DbError> {
        let engine = self.engine();
        let sql = match engine {
            Engine::Postgres => format!("CREATE DATABASE {}", quote(engine, name)),
            Engine::Mysql => format!(
                "CREATE DATABASE {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                quote(engine, name)
            ),
            Engine::Sqlite => return Ok(()),
        };
        self.execute(sql, &format!("creating database {name}"))
    }

    /// Drops database `name` (PostgreSQL: disconnecting its sessions).
    ///
    /// # Errors
    /// `Query` (no privilege, …).
    pub fn drop_database(&mut self, name: &str) -> Result<(), DbError> {
        let engine = self.engine();
        match engine {
            Engine::Postgres => {
                let q = quote(engine, name);
                // WITH (FORCE) needs PostgreSQL 13; older servers get the plain form.
                self.execute(
                    format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)"),
                    &format!("dropping database {name}"),
                )
                .or_else(|_| {
                    self.execute(
                        format!("DROP DATABASE IF EXISTS {q}"),
                        &format!("dropping database {name}"),
                    )
                })
            }
            Engine::Mysql => self.execute(
                format!("DROP DATABASE IF EXISTS {}", quote(engine, name)),
                &format!("dropping database {name}"),
            ),
            Engine::Sqlite => Ok(()),
        }
    }

    /// This server's fingerprint (see `Fingerprint`); `None` for SQLite.
    ///
    /// # Errors
    /// `Query`.
    pub fn fingerprint(&mut self) -> Result<Option<Fingerprint>, DbError> {
        let (label_sql, started_sql): (&'static str, &'static str) = match self.engine() {
            Engine::Postgres => (
                "SELECT current_setting('port')",
                "SELECT extract(epoch FROM pg_postmaster_start_time())::float8::text",
            ),
            Engine::Mysql => (
                "SELECT CAST(CONCAT(@@hostname, '|', @@port, '|', @@datadir) AS CHAR)",
                // SHOW GLOBAL STATUS works on MariaDB and MySQL 8 alike (MySQL 8 has no
                // information_schema.GLOBAL_STATUS).
                "SHOW GLOBAL STATUS LIKE 'Uptime'",
            ),
            Engine::Sqlite => return Ok(None),
        };
        let label = self.text(label_sql, "reading the server's identity")?;
        let started = if self.engine() == Engine::Mysql {
            let now = self.text("SELECT CAST(UNIX_TIMESTAMP() AS CHAR)", "reading the time")?;
            let uptime = self.status_value(started_sql)?;
            let now: f64 = now.trim().parse().unwrap_or(f64::NAN);
            let uptime: f64 = uptime.trim().parse().unwrap_or(f64::NAN);
            (now - uptime).to_string()
        } else {
            self.text(started_sql, "reading the server's start time")?
        };
        Ok(Some(Fingerprint {
            label,
            started: started.trim().parse().unwrap_or(f64::NAN),
        }))
    }

    /// Ends the session (rolling back any open transaction).
    pub fn close(self) {
        let Session { rt, conn, .. } = self;
        rt.block_on(async {
            let _ = match conn {
                Conn::Pg(c) => c.close().await,
                Conn::My(c) => c.close().await,
                Conn::Lite(c) => c.close().await,
            };
        });
    }
}

/// Whether two SQLite paths are one file (same device and inode), or name the same path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => match (
            a.parent().and_then(|p| p.canonicalize().ok()),
            b.parent().and_then(|p| p.canonicalize().ok()),
        ) {
            (Some(pa), Some(pb)) => pa == pb && a.file_name() == b.file_name(),
            _ => a == b,
        },
    }
}

/// Whether two host names reach the same machine as far as names tell: both this machine
/// (loopback, a socket, its own host name), or sharing a resolved address.
pub fn same_host(a: &str, b: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    // `[::1]` as urls write it.
    let unbracket = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_string();
    let (a, b) = (unbracket(a), unbracket(b));
    let (a, b) = (a.as_str(), b.as_str());
    let own = gethostname::gethostname().to_string_lossy().into_owned();
    let resolve = |h: &str| -> Vec<std::net::IpAddr> {
        (h, port)
            .to_socket_addrs()
            .map(|it| it.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    let own_addresses = resolve(&own);
    let local = |h: &str| {
        h.is_empty()
            || h.starts_with('/')
            || h.eq_ignore_ascii_case("localhost")
            || h.eq_ignore_ascii_case(&own)
            || resolve(h)
                .iter()
                .any(|ip| ip.is_loopback() || ip.is_unspecified() || own_addresses.contains(ip))
    };
    if a.eq_ignore_ascii_case(b) || (local(a) && local(b)) {
        return true;
    }
    let (ra, rb) = (resolve(a), resolve(b));
    ra.iter().any(|x| rb.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_urls_and_refuses_passwords() {
        assert_eq!(
            Address::parse("sqlite:///tmp/x.db").unwrap(),
            Address::Sqlite("/tmp/x.db".into())
        );
        // Relative paths become absolute (never a sqlite3 `file:` URI).
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            Address::parse("sqlite:rel/x.db").unwrap(),
            Address::Sqlite(cwd.join("rel/x.db"))
        );
        assert_eq!(
            Address::parse("sqlite:file:prod.db").unwrap(),
            Address::Sqlite(cwd.join("file:prod.db"))
        );
        let my = Address::parse("mariadb://root@127.0.0.1/staging").unwrap();
        assert_eq!(my.engine(), Engine::Mysql);
        assert_eq!(my.database(), "staging");
        let pg = Address::parse("postgres://coffer@db:5433/drill").unwrap();
        assert_eq!(pg.database(), "drill");
        assert_eq!(pg.host_port(), Some(("db".into(), 5433)));
        for bad in [
            "postgres://u:hunter2@db/x",
            "mysql://u:hunter2@db/x",
            "postgres://u@db/x?password=hunter2",
        ] {
            let err = Address::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(Address::parse("ftp://x").is_err());
        assert!(Address::parse("postgres://u@db").is_err(), "no database");
    }

    #[test]
    fn host_names_of_this_machine_are_one_host() {
        assert!(same_host("localhost", "127.0.0.1", 5432));
        assert!(same_host("", "localhost", 5432));
        assert!(same_host("/var/run/postgresql", "127.0.0.1", 5432));
        assert!(same_host("[::1]", "127.0.0.1", 5432));
        assert!(same_host("0.0.0.0", "localhost", 5432));
        assert!(!same_host("192.0.2.1", "127.0.0.1", 5432));
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote(Engine::Postgres, "tab\"X"), "\"tab\"\"X\"");
        assert_eq!(quote(Engine::Mysql, "tab`X"), "`tab``X`");
    }
}
