//! A `sqlite` source: a plain-SQL dump in the form of the `sqlite3` shell's `.dump`, made by
//! coffer itself through sqlx's bundled SQLite (no tool to install), or by the `sqlite3` shell
//! when `dump_tool` names one.
//!
//! Either way the dump runs inside one read transaction, so it is a consistent snapshot even
//! while another process writes (in WAL mode writers are not even blocked), and nothing is
//! copied to disk first. The built-in dump counts every table's rows as it writes them, so the
//! manifest's counts are exactly the dump's. The shell's dump fails if it does not end with
//! `COMMIT;` or the shell says anything.
//!
//! The dump loads with stock `sqlite3 new.db < dump.sql`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use crate::process::{DumpCommand, DumpError, DumpOutcome};
use crate::snapshot::{DatabaseInfo, TableRows};

/// A SQLite database file to dump.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    pub path: PathBuf,
    /// The `sqlite3` shell to dump with; `None`: coffer's built-in dump.
    pub dump_tool: Option<PathBuf>,
}

/// Why the built-in dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SqliteDumpError {
    #[error("database file {0} does not exist: check the source's path in the config")]
    Missing(PathBuf),
    #[error("reading {path}: {doing}: {why}")]
    Read {
        path: PathBuf,
        doing: String,
        why: String,
    },
    #[error(
        "{path} holds virtual table '{table}' ({module}), which the built-in dump does not \
         write: set dump_tool = \"sqlite3\" for this source to dump it with the sqlite3 shell"
    )]
    Virtual {
        path: PathBuf,
        table: String,
        module: String,
    },
    #[error("writing the dump: {0}")]
    Write(#[source] std::io::Error),
}

/// Quotes an identifier: `"a""b"`.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A schema statement with its terminating `;`: on a line of its own when the stored SQL may
/// end inside a comment (SQLite keeps a trailing `-- note` in the schema, which would swallow
/// a `;` on the same line).
fn statement(sql: &str) -> String {
    let open_block = sql
        .rfind("/*")
        .is_some_and(|open| sql.rfind("*/").is_none_or(|close| close < open));
    if sql.contains("--") || open_block {
        format!("{sql}\n;")
    } else {
        format!("{sql};")
    }
}

/// Quotes a string literal: `'it''s'`.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Dumps `path` into `out` as plain SQL in one read transaction, returning the bytes written
/// and what the manifest records (every table's exact row count, read in that transaction).
///
/// # Errors
/// `Missing`, `Read` (busy past 30 s, not a database, …), `Virtual`, `Write`.
pub fn builtin_dump(
    path: &Path,
    out: &mut dyn Write,
) -> Result<(u64, DatabaseInfo), SqliteDumpError> {
    if !path.is_file() {
        return Err(SqliteDumpError::Missing(path.to_path_buf()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SqliteDumpError::Write)?;
    rt.block_on(dump_async(path, out))
}

/// Counts what passes through.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Counted<'_> {
    fn line(&mut self, text: &str) -> Result<(), SqliteDumpError> {
        self.raw_line(text.as_bytes())
    }

    fn raw_line(&mut self, bytes: &[u8]) -> Result<(), SqliteDumpError> {
        self.inner
            .write_all(bytes)
            .and_then(|()| self.inner.write_all(b"\n"))
            .map_err(SqliteDumpError::Write)?;
        self.bytes += bytes.len() as u64 + 1;
        Ok(())
    }
}

/// A schema object as `sqlite_master` lists it: (type, name, sql).
type SchemaObject = (String, String, String);

/// Names what failed while reading `path`.
fn read_error(path: &Path, doing: &str, e: sqlx::Error) -> SqliteDumpError {
    SqliteDumpError::Read {
        path: path.to_path_buf(),
        doing: doing.to_string(),
        why: e.to_string(),
    }
}

/// The built-in dump, step by step: the schema, every table's rows, `sqlite_sequence`, the
/// other schema objects (indexes, views, triggers), the header's pragmas.
async fn dump_async(
    path: &Path,
    out: &mut dyn Write,
) -> Result<(u64, DatabaseInfo), SqliteDumpError> {
    let mut db = Snapshot::open(path).await?;
    let version = db.version().await?;
    let objects = db.schema().await?;
    refuse_virtual_tables(path, &objects)?;
    let mut w = Counted {
        inner: out,
        bytes: 0,
    };
    w.line("PRAGMA foreign_keys=OFF;")?;
    w.line("BEGIN TRANSACTION;")?;
    let mut tables = Vec::new();
    for (kind, name, sql) in &objects {
        // sqlite_sequence goes after the tables (write_sequence); sqlite_stat1 and friends
        // are statistics, rebuilt by ANALYZE.
        if kind != "table" || name.starts_with("sqlite_") {
            continue;
        }
        w.line(&statement(sql))?;
        tables.push(db.write_rows(name, &mut w).await?);
    }
    db.write_sequence(&objects, &mut w).await?;
    for (kind, _, sql) in &objects {
        if kind != "table" {
            w.line(&statement(sql))?;
        }
    }
    db.write_header_pragmas(&mut w).await?;
    w.line("COMMIT;")?;
    db.close().await;
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((
        w.bytes,
        DatabaseInfo {
            server_version: format!("SQLite {version}"),
            counted: "snapshot".into(),
            tables,
        },
    ))
}

/// Refuses a virtual table: the built-in dump cannot write one.
fn refuse_virtual_tables(path: &Path, objects: &[SchemaObject]) -> Result<(), SqliteDumpError> {
    for (kind, name, sql) in objects {
        if kind == "table"
            && sql
                .as_bytes()
                .get(..20)
                .is_some_and(|b| b.eq_ignore_ascii_case(b"CREATE VIRTUAL TABLE"))
        {
            let module = sql
                .to_ascii_lowercase()
                .split(" using ")
                .nth(1)
                .map(|m| m.split('(').next().unwrap_or("").trim().to_string())
                .unwrap_or_default();
            return Err(SqliteDumpError::Virtual {
                path: path.to_path_buf(),
                table: name.clone(),
                module,
            });
        }
    }
    Ok(())
}

/// The `INSERT` prefix of table `name`'s rows, and the query that writes each row as one
/// whole `INSERT` line (the prefix bound as `?1`), so a row costs no formatting here.
fn row_query(name: &str, columns: &[String]) -> (String, String) {
    let prefix = format!(
        "INSERT INTO {}({}) VALUES(",
        ident(name),
        columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(",")
    );
    // quote() stops a text at its first NUL byte: such texts go as hex, cast back.
    let values = columns
        .iter()
        .map(|c| {
            let c = ident(c);
            format!(
                "CASE WHEN typeof({c}) = 'text' AND instr({c}, char(0)) > 0 \
                 THEN 'CAST(X''' || hex({c}) || ''' AS TEXT)' ELSE quote({c}) END"
            )
        })
        .collect::<Vec<_>>()
        .join(" || ',' || ");
    // As bytes: a text that is not valid UTF-8 is kept as it is.
    let select = format!(
        "SELECT CAST(?1 || {values} || ');' AS BLOB) FROM {}",
        ident(name)
    );
    (prefix, select)
}

/// The one connection the dump reads through. INVARIANT: every read goes through `conn`
/// inside the transaction `open` began, so the whole dump is one consistent snapshot.
struct Snapshot<'p> {
    conn: SqliteConnection,
    path: &'p Path,
}

impl<'p> Snapshot<'p> {
    /// Opens `path` read-only and begins the read transaction.
    async fn open(path: &'p Path) -> Result<Self, SqliteDumpError> {
        let mut conn: SqliteConnection = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(30))
            .disable_statement_logging()
            .connect()
            .await
            .map_err(|e| read_error(path, "opening it", e))?;
        // The read transaction starts with the first read; everything after sees one snapshot.
        sqlx::raw_sql("BEGIN")
            .execute(&mut conn)
            .await
            .map_err(|e| read_error(path, "starting a read transaction", e))?;
        Ok(Snapshot { conn, path })
    }

    async fn version(&mut self) -> Result<String, SqliteDumpError> {
        sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| read_error(self.path, "reading the SQLite version", e))
    }

    /// Every schema object with SQL, in the order they were made.
    async fn schema(&mut self) -> Result<Vec<SchemaObject>, SqliteDumpError> {
        let path = self.path;
        let err = |e| read_error(path, "reading the schema", e);
        let schema = sqlx::query(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(err)?;
        schema
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(err)?,
                    row.try_get(1).map_err(err)?,
                    row.try_get(2).map_err(err)?,
                ))
            })
            .collect()
    }

    /// Writes table `name`'s rows as `INSERT` lines and counts them.
    async fn write_rows(
        &mut self,
        name: &str,
        w: &mut Counted<'_>,
    ) -> Result<TableRows, SqliteDumpError> {
        let path = self.path;
        // Generated columns (hidden 2 and 3) are computed, not inserted.
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0")
                .bind(name)
                .fetch_all(&mut self.conn)
                .await
                .map_err(|e| read_error(path, &format!("reading the columns of {name}"), e))?;
        let (prefix, select) = row_query(name, &columns);
        let mut rows = sqlx::query_scalar::<_, Vec<u8>>(AssertSqlSafe(select))
            .bind(&prefix)
            .fetch(&mut self.conn);
        let mut count = 0u64;
        while let Some(line) = rows
            .try_next()
            .await
            .map_err(|e| read_error(path, &format!("reading table {name}"), e))?
        {
            w.raw_line(&line)?;
            count += 1;
        }
        Ok(TableRows {
            name: name.to_string(),
            rows: count,
            exact: true,
            rows_after: None,
        })
    }

    /// Writes `sqlite_sequence`'s rows (the AUTOINCREMENT counters) when the dump needs them.
    async fn write_sequence(
        &mut self,
        objects: &[SchemaObject],
        w: &mut Counted<'_>,
    ) -> Result<(), SqliteDumpError> {
        let sequence = objects
            .iter()
            .any(|(kind, name, _)| kind == "table" && name == "sqlite_sequence");
        // sqlite_sequence exists only while an AUTOINCREMENT table does; a leftover one would
        // make the load fail.
        let autoincrement = objects.iter().any(|(kind, name, sql)| {
            kind == "table"
                && !name.starts_with("sqlite_")
                && sql.to_ascii_uppercase().contains("AUTOINCREMENT")
        });
        if !(sequence && autoincrement) {
            return Ok(());
        }
        w.line("DELETE FROM sqlite_sequence;")?;
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT name, seq FROM sqlite_sequence")
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| read_error(self.path, "reading sqlite_sequence", e))?;
        for (name, seq) in rows {
            w.line(&format!(
                "INSERT INTO sqlite_sequence(name,seq) VALUES({},{seq});",
                literal(&name)
            ))?;
        }
        Ok(())
    }

    /// Writes what applications keep in the header (migration versions, file type), when set.
    async fn write_header_pragmas(&mut self, w: &mut Counted<'_>) -> Result<(), SqliteDumpError> {
        for pragma in ["user_version", "application_id"] {
            let value: i64 = sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| read_error(self.path, &format!("reading PRAGMA {pragma}"), e))?;
            if value != 0 {
                w.line(&format!("PRAGMA {pragma}={value};"))?;
            }
        }
        Ok(())
    }

    /// Ends the read transaction. The dump is written by then: a failure here changes nothing.
    async fn close(mut self) {
        let _ = sqlx::raw_sql("COMMIT").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

impl SqliteSource {
    /// The dump tool's name and version, for the manifest.
    pub fn tool_version(&self) -> (String, Option<String>) {
        match &self.dump_tool {
            // sqlite3 prints "3.40.1 2022-12-28 …": keep the version number.
            Some(tool) => (
                "sqlite3".into(),
                crate::process::tool_version(tool)
                    .map(|v| format!("sqlite3 {}", v.split_whitespace().next().unwrap_or(""))),
            ),
            None => (
                "coffer".into(),
                Some(format!(
                    "coffer {} built-in dump",
                    env!("CARGO_PKG_VERSION")
                )),
            ),
        }
    }

    /// Dumps the database into `out`.
    ///
    /// # Errors
    /// When the file is missing (a dump of nothing must not pass for a backup), when the
    /// shell reports anything or its dump does not end with `COMMIT;`, and as
    /// `DumpCommand::run_into`.
    pub fn write_dump(
        &self,
        dump_tool: &Path,
        out: &mut dyn std::io::Write,
    ) -> Result<DumpOutcome, DumpError> {
        let tool = dump_tool.display().to_string();
        let fail = |why: String| DumpError::Failed {
            tool: tool.clone(),
            status: "did not finish the dump".into(),
            stderr: why,
        };
        if !self.path.is_file() {
            return Err(DumpError::Missing(format!(
                "database file {} does not exist",
                self.path.display()
            )));
        }
        // `.dump` alone can meet a busy database (another connection recovering the WAL)
        // while reading the schema and then emits an empty dump with exit status 0. So take
        // the read transaction first, with a query that fails loudly (.bail) when busy; the
        // dump then reads inside that snapshot.
        let script = b".bail on\n.timeout 30000\nBEGIN;\n.output /dev/null\n\
SELECT count(*) FROM sqlite_master;\n.output\n.dump\nCOMMIT;\n";
        let mut tail = Tail {
            inner: out,
            last: Vec::new(),
        };
        let done = DumpCommand {
            program: dump_tool.as_os_str().to_os_string(),
            // -init /dev/null: never run the user's ~/.sqliterc.
            args: vec![
                OsString::from("-batch"),
                OsString::from("-init"),
                OsString::from("/dev/null"),
                self.path.clone().into_os_string(),
            ],
            env: Vec::new(),
            stdin: Some(script.to_vec()),
            remove_after_start: None,
        }
        .run_into(&mut tail)?;
        if !done.stderr.is_empty() {
            return Err(fail(done.stderr));
        }
        if !tail.last.ends_with(b"COMMIT;\n") {
            return Err(fail(format!(
                "the dump ends with {:?} instead of COMMIT;",
                String::from_utf8_lossy(&tail.last)
            )));
        }
        Ok(done)
    }
}

/// Passes bytes on, keeping the last few to check how the dump ended.
struct Tail<'a> {
    inner: &'a mut dyn std::io::Write,
    last: Vec<u8>,
}

impl std::io::Write for Tail<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.last.extend_from_slice(&buf[..n]);
        if self.last.len() > 64 {
            self.last.drain(..self.last.len() - 32);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
