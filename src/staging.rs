//! Restore of a database stream into a (staging) database: the guards, creating or
//! re-creating the database, loading the dump with the server's own client, and comparing the
//! restored tables and row counts with what the manifest recorded at backup time.
//!
//! The guards come first and refuse loudly: a target of another engine, a target that is the
//! database of a configured source (restoring a drill over production is the classic disaster;
//! checked by address and by asking both servers who they are), a missing database without
//! `create`, a non-empty one without `force`.
//!
//! A dump is never trusted (the store may be tampered with; an old pg_dump could write
//! meta-commands from crafted object names, CVE-2025-8715), and the restoring host holds the
//! private key: each client is kept from acting on this host whatever the dump says. sqlite3
//! runs with `-safe`, a MariaDB client with `--sandbox` (and `--local-infile=0`), and psql reads
//! the dump behind `\restrict <fresh key>` (`restrict`). `check_client` refuses a client that
//! cannot be kept so. The load runs as the database role the target's url names; nothing here
//! adds privileges to it.

mod restrict;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use secrecy::SecretString;
use serde::Serialize;

use crate::database::{Address, Database, DbError, Engine, Fingerprint, same_file, same_host};
use crate::process::{DumpCommand, DumpOutcome, FeedError};
use crate::snapshot::{DatabaseInfo, SourceRecord, StreamKind, TableRows};
use crate::source::SourceConfig;

/// What the caller asked for.
#[derive(Debug, Default, Clone)]
pub struct StagingOptions {
    /// Create the database if it does not exist.
    pub create: bool,
    /// Drop and re-create a database that is not empty.
    pub force: bool,
    /// Allow a target that is a configured source's own database.
    pub overwrite_source: bool,
    /// The client to load with (default `psql`, `mariadb`/`mysql`, `sqlite3`).
    pub client: Option<PathBuf>,
}

/// What `prepare` did to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prepared {
    /// It existed and was empty.
    Empty,
    Created,
    /// It held something and was dropped and created again (`force`).
    Recreated,
}

/// The refusal of a target that is a configured source's own database.
#[derive(Debug)]
pub struct IsSourceDatabase {
    pub target: String,
    pub source: String,
    pub address: String,
}

impl std::fmt::Display for IsSourceDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing to restore into {}: it is the database of the configured source '{}' \
             ({}), and restoring there would overwrite it. Restore into a staging database \
             instead; if you really mean to replace that database, pass \
             --overwrite-source-database (with --force)",
            self.target, self.source, self.address
        )
    }
}

impl std::error::Error for IsSourceDatabase {}

/// Refuses a target of another engine than the dump's.
///
/// # Errors
/// Naming both and what to pass instead.
pub fn check_engine(source: &SourceRecord, target: &Address) -> anyhow::Result<()> {
    if source.kind.as_str() != target.engine().kind() {
        let example = match source.kind {
            StreamKind::Postgres => "postgres://user@host:5432/staging",
            StreamKind::Mysql => "mysql://user@host:3306/staging",
            StreamKind::Sqlite => "sqlite:///path/to/staging.db",
            StreamKind::Directory | StreamKind::Checksums => bail!(
                "source '{}' is a {} stream, not a database dump; restore it with --to DIR",
                source.name,
                source.kind
            ),
        };
        bail!(
            "source '{}' is a {} dump but --db-url {} is a {} database; give a url like {example}",
            source.name,
            source.kind,
            target,
            target.engine().kind()
        );
    }
    Ok(())
}

/// Refuses a target that is the database of any configured database source, unless
/// `overwrite_source`. Compares addresses (the same file; the same database name on the same
/// host and port, `localhost` and the host's own names and addresses being one host), and
/// also asks both servers who they are (port, data folder, start time), which catches a
/// server reached by two unrelated names.
///
/// # Errors
/// Naming the source, both addresses, and the flag that overrides.
pub fn guard_sources(
    target: &Address,
    target_server: Option<&Fingerprint>,
    sources: &[SourceConfig],
) -> anyhow::Result<()> {
    for s in sources {
        let Some((address, password)) = s.kind.database() else {
            continue;
        };
        if address.engine() != target.engine() {
            continue;
        }
        let same = match (&address, target) {
            (Address::Sqlite(a), Address::Sqlite(b)) => same_file(a, b),
            _ => {
                // MariaDB/MySQL may fold name case (lower_case_table_names): compare folded
                // there; refusing a little too much is harmless.
                let same_name = if target.engine() == Engine::Mysql {
                    address.database().eq_ignore_ascii_case(&target.database())
                } else {
                    address.database() == target.database()
                };
                same_name
                    && (same_address(&address, target)
                        || same_server(&address, password, target_server))
            }
        };
        if same {
            return Err(IsSourceDatabase {
                target: target.to_string(),
                source: s.name.clone(),
                address: address.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

fn same_address(a: &Address, b: &Address) -> bool {
    match (a.host_port(), b.host_port()) {
        (Some((ha, pa)), Some((hb, pb))) => pa == pb && same_host(&ha, &hb, pa),
        _ => false,
    }
}

/// Asks the configured source's server who it is; a source that cannot be reached now cannot
/// be compared this way (the address comparison still holds).
fn same_server(
    source: &Address,
    password: Option<&crate::secret::SecretRef>,
    target_server: Option<&Fingerprint>,
) -> bool {
    let Some(target) = target_server else {
        return false;
    };
    let password = password.and_then(|p| p.load().ok());
    let db = Database {
        address: source.clone(),
        password,
    };
    match db.connect_server().or_else(|_| db.connect()) {
        Ok(mut session) => {
            let fp = session.fingerprint();
            session.close();
            matches!(fp, Ok(Some(fp)) if fp.same_as(target))
        }
        Err(e) => {
            tracing::info!("could not ask the configured source who it is: {e}");
            false
        }
    }
}

/// The target server's fingerprint, from a maintenance connection (or the database itself).
///
/// # Errors
/// `DbError::Connect` when neither connection works; `Query` when the server will not say.
pub fn target_fingerprint(target: &Database) -> Result<Option<Fingerprint>, DbError> {
    if target.address.engine() == Engine::Sqlite {
        return Ok(None);
    }
    let mut session = target
        .connect_server()
        .or_else(|e| target.connect().map_err(|_| e))?;
    let fp = session.fingerprint();
    session.close();
    fp
}

/// Databases a restore must never replace, whatever the flags: the servers' own.
const SYSTEM_DATABASES: [(Engine, &str); 7] = [
    (Engine::Postgres, "postgres"),
    (Engine::Postgres, "template0"),
    (Engine::Postgres, "template1"),
    (Engine::Mysql, "mysql"),
    (Engine::Mysql, "sys"),
    (Engine::Mysql, "performance_schema"),
    (Engine::Mysql, "information_schema"),
];

/// Refuses a server's own databases as a target.
///
/// # Errors
/// Naming the database.
pub fn check_not_system(target: &Address) -> anyhow::Result<()> {
    let name = target.database();
    if SYSTEM_DATABASES
        .iter()
        .any(|(e, n)| *e == target.engine() && n.eq_ignore_ascii_case(&name))
    {
        bail!(
            "refusing to restore into {target}: {name} is the server's own database; name a \
             staging database of its own (--create makes it)"
        );
    }
    Ok(())
}

/// Runs the client's `--version` and makes sure it can be kept from acting on this host
/// (sqlite3 `-safe`, a MariaDB client's `--sandbox`, psql's `\restrict`), so a missing or
/// unsafe client is found before the target is touched. Returns the client's version line.
///
/// # Errors
/// Naming the client and what to install.
pub fn check_client(target: &Database, opts: &StagingOptions) -> anyhow::Result<String> {
    let (command, _private) = client(target, opts)?;
    let program = PathBuf::from(&command.program);
    let version = crate::process::tool_version(&program).ok_or_else(|| {
        anyhow!(
            "cannot run {} --version: install the database's client ({}) or name one with \
             --client",
            program.display(),
            match target.address.engine() {
                Engine::Postgres => "postgresql-client",
                Engine::Mysql => "mariadb-client",
                Engine::Sqlite => "sqlite3",
            }
        )
    })?;
    match target.address.engine() {
        Engine::Postgres => check_restrict(&program, &version)?,
        Engine::Mysql => check_sandbox(&program, &version)?,
        Engine::Sqlite => check_safe(&program, &version)?,
    }
    Ok(version)
}

/// The first release of each major that knows `\restrict` (August 2025); later majors all do.
const PSQL_RESTRICT: [(u32, u32); 6] = [(13, 22), (14, 19), (15, 14), (16, 10), (17, 6), (18, 0)];

/// Refuses a psql without restricted mode (`\restrict`), read from its version line
/// (`psql (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`). A psql cannot be asked without a
/// server; one that does not know `\restrict` fails the load at its first line anyway.
fn check_restrict(program: &Path, version: &str) -> anyhow::Result<()> {
    if psql_restricts(version) {
        return Ok(());
    }
    bail!(
        "{} ({version}) has no restricted mode (\\restrict), which keeps a dump from running \
         commands on this host: install psql 13.22, 14.19, 15.14, 16.10, 17.6, 18.0 or a later \
         release of its major version (postgresql-client), or name one with --client",
        program.display()
    )
}

/// Whether a psql version line names a release with `\restrict`; `false` when it cannot be
/// read, and for pre-releases of the majors that got it in a minor release.
fn psql_restricts(version: &str) -> bool {
    fn leading(s: &str) -> Option<(u32, &str)> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok().map(|n| (n, &s[end..]))
    }
    let Some((major, rest)) = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .and_then(leading)
    else {
        return false;
    };
    let minor = rest.strip_prefix('.').and_then(leading).map(|(n, _)| n);
    match PSQL_RESTRICT.iter().find(|(m, _)| *m == major) {
        Some((_, first)) => minor.is_some_and(|n| n >= *first),
        None => major > PSQL_RESTRICT[PSQL_RESTRICT.len() - 1].0,
    }
}

/// Refuses a MariaDB/MySQL client without `--sandbox`. Asked, not read from the version: an
/// unknown option does not make `--version` fail, but the client says so on stderr.
fn check_sandbox(program: &Path, version: &str) -> anyhow::Result<()> {
    let understood = Command::new(program)
        .args(["--no-defaults", "--sandbox", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("sandbox")
        });
    if understood {
        return Ok(());
    }
    if version.contains("MariaDB") {
        bail!(
            "{} ({version}) has no --sandbox, which keeps a dump from running commands on this \
             host: install a MariaDB client 10.5.25, 10.6.18, 10.11.8, 11.0.6, 11.1.5, 11.2.4, \
             11.4.2 or later (mariadb-client), or name one with --client",
            program.display()
        );
    }
    bail!(
        "{} ({version}) is not a MariaDB client: a dump is loaded only with a client in sandbox \
         mode (--sandbox), which keeps it from running commands on this host, and Oracle's \
         MySQL client has none. Install mariadb-client (it connects to MySQL servers too), or \
         name a MariaDB client with --client",
        program.display()
    )
}

/// Refuses a sqlite3 without `-safe` (before 3.37, it stops at the unknown option).
fn check_safe(program: &Path, version: &str) -> anyhow::Result<()> {
    let understood = Command::new(program)
        .args(["-safe", "-version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if understood {
        return Ok(());
    }
    bail!(
        "{} ({version}) has no safe mode (-safe), which keeps a dump from running commands and \
         reading or writing files on this host: install sqlite3 3.37 or later, or name one with \
         --client",
        program.display()
    )
}

/// Whether the target exists and holds something (tables, views, sequences, routines).
///
/// # Errors
/// When the server cannot be asked.
pub fn occupied(target: &Database) -> anyhow::Result<bool> {
    if let Address::Sqlite(path) = &target.address {
        return Ok(path.exists() && objects(target)? > 0);
    }
    let mut server = target.connect_server()?;
    let exists = server.database_exists(&target.address.database())?;
    server.close();
    Ok(exists && objects(target)? > 0)
}

/// Makes sure the target exists and is empty: creates it (`create`), or drops and re-creates
/// a non-empty one (`force`).
///
/// # Errors
/// A missing database without `create`, a non-empty one without `force`, or the server
/// refusing to create or drop it.
pub fn prepare(target: &Database, opts: &StagingOptions) -> anyhow::Result<Prepared> {
    let name = target.address.database();
    if let Address::Sqlite(path) = &target.address {
        if !path.exists() {
            if !opts.create {
                bail!(
                    "staging database file {} does not exist; pass --create to make it",
                    path.display()
                );
            }
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent
                && !parent.is_dir()
            {
                bail!(
                    "folder {} (for the staging database file) does not exist",
                    parent.display()
                );
            }
            create_private(path)?;
            return Ok(Prepared::Created);
        }
        if objects(target)? == 0 {
            return Ok(Prepared::Empty);
        }
        if !opts.force {
            bail!(not_empty(&target.address));
        }
        // Side files first: a stale WAL must never meet a new main file.
        for suffix in ["-wal", "-shm", "-journal", ""] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing {}", PathBuf::from(p).display()));
                }
            }
        }
        create_private(path)?;
        return Ok(Prepared::Recreated);
    }
    let mut server = target.connect_server().with_context(|| {
        format!(
            "a staging restore connects to the server itself (PostgreSQL: its 'postgres' \
             database) to check, create or drop {name}"
        )
    })?;
    let exists = server.database_exists(&name)?;
    let prepared = if !exists {
        if !opts.create {
            server.close();
            bail!(
                "database {name} does not exist on {}; pass --create to make it",
                target.address
            );
        }
        server.create_database(&name)?;
        Prepared::Created
    } else if objects(target)? == 0 {
        Prepared::Empty
    } else if !opts.force {
        server.close();
        bail!(not_empty(&target.address));
    } else {
        server.drop_database(&name)?;
        server.create_database(&name)?;
        Prepared::Recreated
    };
    server.close();
    Ok(prepared)
}

/// Creates an empty SQLite file (a valid empty database) readable by its owner only.
fn create_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

fn not_empty(address: &Address) -> String {
    format!(
        "staging database {address} is not empty; restore into an empty database, or pass \
         --force to drop and re-create it"
    )
}

fn objects(target: &Database) -> anyhow::Result<u64> {
    let mut session = target.connect()?;
    let n = session.object_count()?;
    session.close();
    Ok(n)
}

/// The client command that loads a dump into `target`, and the private folder holding its
/// option file (MariaDB), removed when dropped. EVERY CLIENT RUNS IN ITS SAFE MODE: a dump
/// must not run commands or touch files on this host.
///
/// # Errors
/// When the option file cannot be written.
fn client(
    target: &Database,
    opts: &StagingOptions,
) -> anyhow::Result<(DumpCommand, Option<tempfile::TempDir>)> {
    let mut env: Vec<(String, SecretString)> = Vec::new();
    let mut private = None;
    let mut option_file = None;
    let (program, args): (PathBuf, Vec<std::ffi::OsString>) = match &target.address {
        Address::Postgres(url) => {
            env.push(("PGCONNECT_TIMEOUT".into(), SecretString::from("15")));
            if let Some(p) = &target.password {
                env.push(("PGPASSWORD".into(), p.clone()));
            }
            (
                opts.client.clone().unwrap_or_else(|| "psql".into()),
                vec![
                    "--no-psqlrc".into(),
                    "--quiet".into(),
                    "--no-password".into(),
                    "--set=ON_ERROR_STOP=1".into(),
                    // All or nothing: a failed load leaves the database as it was (empty).
                    // psql applies it only to -c/-f input, hence --file=- for stdin.
                    "--single-transaction".into(),
                    "--file=-".into(),
                    format!("--dbname={url}").into(),
                ],
            )
        }
        Address::Mysql(u) => {
            let (dir, cnf) = crate::source::mysql::option_file(target.password.as_ref())
                .context("writing the client's option file")?;
            private = Some(dir);
            option_file = Some(cnf.clone());
            // --defaults-file first: the client reads only coffer's option file.
            let mut args: Vec<std::ffi::OsString> =
                vec![format!("--defaults-file={}", cnf.display()).into()];
            args.extend(crate::source::mysql::connection_args(u));
            for a in [
                "--default-character-set=utf8mb4",
                // In batch mode this also turns off the client's commands but `\C` and
                // DELIMITER; --sandbox refuses `\!`, `system`, `source`, `tee`, … whatever
                // the mode.
                "--binary-mode",
                "--batch",
                "--sandbox",
                // LOAD DATA LOCAL would read a file of this host into the database.
                "--local-infile=0",
            ] {
                args.push(a.into());
            }
            args.push(u.database.clone().into());
            (
                opts.client
                    .clone()
                    .unwrap_or_else(|| crate::source::mysql::first_on_path(&["mariadb", "mysql"])),
                args,
            )
        }
        Address::Sqlite(path) => (
            opts.client.clone().unwrap_or_else(|| "sqlite3".into()),
            vec![
                "-batch".into(),
                "-bail".into(),
                // Refuses .shell, .system, .output, .read, .load, .open, ATTACH, readfile(),
                // writefile(), …
                "-safe".into(),
                "-init".into(),
                "/dev/null".into(),
                path.clone().into_os_string(),
            ],
        ),
    };
    Ok((
        DumpCommand {
            program: program.into_os_string(),
            args,
            env,
            stdin: None,
            remove_after_start: option_file,
        },
        private,
    ))
}

/// Loads a decrypted dump stream into the prepared target with its client, in the client's
/// safe mode (psql reads the dump behind `\restrict <fresh key>`). The outcome's bytes are
/// the dump's.
///
/// # Errors
/// `FeedError::Input` for a stream that breaks (the client is stopped first), or the client's
/// failure with its stderr — also when the dump holds a command the safe mode refuses.
pub fn load(
    target: &Database,
    opts: &StagingOptions,
    input: &mut dyn Read,
) -> Result<DumpOutcome, FeedError> {
    let (command, _private) = client(target, opts).map_err(|e| {
        FeedError::Tool(crate::process::DumpError::Spawn {
            tool: "the database client".into(),
            source: std::io::Error::other(crate::text::error_chain(&e)),
        })
    })?;
    if target.address.engine() == Engine::Postgres {
        let mut restricted = restrict::Restricted::new(input);
        let outcome = command.feed_from(&mut restricted)?;
        return Ok(DumpOutcome {
            bytes: restricted.consumed(),
            ..outcome
        });
    }
    command.feed_from(input)
}

/// How one table compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableStatus {
    /// Same row count.
    Match,
    /// Different, where the backup counted in the dump's own snapshot: the restore is wrong.
    Mismatch,
    /// The table changed during the backup (counted before and after the dump) and the
    /// restored count lies between the two: as expected.
    Changed,
    /// Different, for a table that was being written to during the backup, outside the
    /// counts before and after the dump (a table that grew and shrank again), or with no
    /// count after the dump: shown, not judged.
    Differs,
    /// The backup recorded the server's estimate; shown, judged only when nothing came back.
    Estimated,
    /// In the backup, not in the restored database.
    Missing,
    /// In the restored database, not in the backup's list.
    Extra,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    pub table: String,
    /// Rows the backup recorded (`None`: not in the backup's list).
    pub backed_up: Option<u64>,
    /// Rows counted again right after the dump (`before-dump` counts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backed_up_after: Option<u64>,
    pub backed_up_exact: bool,
    /// Rows in the restored database (`None`: missing).
    pub restored: Option<u64>,
    pub status: TableStatus,
}

/// The comparison of a restored database with its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub tables: Vec<TableCheck>,
    /// `false` when the manifest has no counts to compare with (an older snapshot).
    pub recorded: bool,
}

impl Comparison {
    /// Tables that make the restore fail (missing, or a count that must have matched).
    pub fn failures(&self) -> Vec<&TableCheck> {
        self.tables
            .iter()
            .filter(|t| matches!(t.status, TableStatus::Mismatch | TableStatus::Missing))
            .collect()
    }

    pub fn count(&self, status: TableStatus) -> usize {
        self.tables.iter().filter(|t| t.status == status).count()
    }
}

/// Estimates this large that come back empty are judged lost, not imprecise.
const EMPTY_ESTIMATE_FAILS_ABOVE: u64 = 1000;

/// One table's verdict: `n` rows restored against what the backup recorded.
fn judge(b: &TableRows, n: u64, same_snapshot: bool) -> TableStatus {
    if n == b.rows {
        return TableStatus::Match;
    }
    if !b.exact {
        return if n == 0 && b.rows >= EMPTY_ESTIMATE_FAILS_ABOVE {
            TableStatus::Mismatch
        } else {
            TableStatus::Estimated
        };
    }
    if same_snapshot {
        return TableStatus::Mismatch;
    }
    match b.rows_after {
        // Quiet while it was dumped: the dump holds exactly that many rows.
        Some(after) if after == b.rows => TableStatus::Mismatch,
        Some(after) if (after.min(b.rows)..=after.max(b.rows)).contains(&n) => TableStatus::Changed,
        _ if n == 0 => TableStatus::Mismatch,
        _ => TableStatus::Differs,
    }
}

/// Compares the restored tables with the manifest's record.
pub fn compare(recorded: Option<&DatabaseInfo>, restored: &[TableRows]) -> Comparison {
    let Some(info) = recorded else {
        return Comparison {
            tables: restored
                .iter()
                .map(|r| TableCheck {
                    table: r.name.clone(),
                    backed_up: None,
                    backed_up_after: None,
                    backed_up_exact: false,
                    restored: Some(r.rows),
                    status: TableStatus::Extra,
                })
                .collect(),
            recorded: false,
        };
    };
    let same_snapshot = info.counted == "snapshot";
    let mut tables: Vec<TableCheck> = info
        .tables
        .iter()
        .map(|b| {
            let got = restored.iter().find(|r| r.name == b.name).map(|r| r.rows);
            let status = match got {
                None => TableStatus::Missing,
                Some(n) => judge(b, n, same_snapshot),
            };
            TableCheck {
                table: b.name.clone(),
                backed_up: Some(b.rows),
                backed_up_after: b.rows_after,
                backed_up_exact: b.exact,
                restored: got,
                status,
            }
        })
        .collect();
    for r in restored {
        if !info.tables.iter().any(|b| b.name == r.name) {
            tables.push(TableCheck {
                table: r.name.clone(),
                backed_up: None,
                backed_up_after: None,
                backed_up_exact: false,
                restored: Some(r.rows),
                status: TableStatus::Extra,
            });
        }
    }
    Comparison {
        tables,
        recorded: true,
    }
}

/// Counts every table of the restored database exactly.
///
/// # Errors
/// When it cannot connect or count.
pub fn restored_counts(target: &Database) -> anyhow::Result<Vec<TableRows>> {
    let mut session = target
        .connect()
        .map_err(|e| anyhow!(e).context("connecting to the restored database to count its rows"))?;
    let rows = session.row_counts(u64::MAX)?;
    session.close();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(name: &str, rows: u64, exact: bool) -> TableRows {
        TableRows {
            name: name.into(),
            rows,
            exact,
            rows_after: None,
        }
    }

    #[test]
    fn psql_needs_a_release_with_restricted_mode() {
        for (version, ok) in [
            ("psql (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", true),
            ("psql (PostgreSQL) 15.14", true),
            (
                "psql (PostgreSQL) 15.13 (Ubuntu 15.13-1.pgdg22.04+1)",
                false,
            ),
            ("psql (PostgreSQL) 13.22", true),
            ("psql (PostgreSQL) 13.21", false),
            ("psql (PostgreSQL) 14.19", true),
            ("psql (PostgreSQL) 14.18", false),
            ("psql (PostgreSQL) 16.10", true),
            ("psql (PostgreSQL) 16.9", false),
            ("psql (PostgreSQL) 17.6", true),
            ("psql (PostgreSQL) 17.5", false),
            ("psql (PostgreSQL) 18.0", true),
            ("psql (PostgreSQL) 18beta1", false),
            ("psql (PostgreSQL) 19devel", true),
            ("psql (PostgreSQL) 12.22", false),
            ("psql (PostgreSQL) 9.6.24", false),
            ("psql", false),
            ("", false),
        ] {
            assert_eq!(psql_restricts(version), ok, "{version}");
        }
    }

    /// A fake client: a shell script answering `--version` and the safe-mode probes as an
    /// older or foreign client does.
    fn fake(dir: &std::path::Path, name: &str, script: &str) -> StagingOptions {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        StagingOptions {
            client: Some(path),
            ..StagingOptions::default()
        }
    }

    fn refusal(url: &str, opts: &StagingOptions) -> String {
        let target = Database {
            address: Address::parse(url).unwrap(),
            password: None,
        };
        format!("{:#}", check_client(&target, opts).unwrap_err())
    }

    #[test]
    fn clients_without_a_safe_mode_are_refused_naming_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let psql = fake(dir.path(), "psql", "echo 'psql (PostgreSQL) 15.13'");
        let err = refusal("postgres://u@127.0.0.1:5432/stg", &psql);
        assert!(
            err.contains("(psql (PostgreSQL) 15.13) has no restricted mode")
                && err.contains("15.14")
                && err.contains("--client"),
            "{err}"
        );
        // Oracle's client stops at the unknown option; an older MariaDB client names it on
        // stderr and still prints its version.
        let oracle = fake(
            dir.path(),
            "mysql",
            "case \"$*\" in *--sandbox*) echo \"mysql: [ERROR] unknown option '--sandbox'.\" >&2; \
             exit 7;; esac\necho 'mysql  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)'",
        );
        let err = refusal("mysql://root@127.0.0.1:3306/stg", &oracle);
        assert!(
            err.contains("is not a MariaDB client") && err.contains("Install mariadb-client"),
            "{err}"
        );
        let old = fake(
            dir.path(),
            "mariadb",
            "case \"$*\" in *--sandbox*) echo \"mariadb: unknown option '--sandbox'\" >&2;; esac\n\
             echo 'mariadb  Ver 15.1 Distrib 10.11.7-MariaDB, for debian-linux-gnu (x86_64)'",
        );
        let err = refusal("mysql://root@127.0.0.1:3306/stg", &old);
        assert!(
            err.contains("10.11.7-MariaDB, for debian-linux-gnu (x86_64)) has no --sandbox")
                && err.contains("10.11.8"),
            "{err}"
        );
        let sqlite = fake(
            dir.path(),
            "sqlite3",
            "if [ \"$1\" = -safe ]; then echo 'sqlite3: Error: unknown option: -safe' >&2; exit 1; fi\n\
             echo '3.31.1 2020-01-27 19:55:54'",
        );
        let err = refusal("sqlite:///nonexistent/stg.db", &sqlite);
        assert!(
            err.contains("(3.31.1 2020-01-27 19:55:54) has no safe mode (-safe)")
                && err.contains("3.37"),
            "{err}"
        );
    }

    #[test]
    fn comparison_judges_by_how_the_backup_counted() {
        let info = |counted: &str| DatabaseInfo {
            server_version: "15".into(),
            counted: counted.into(),
            tables: vec![
                rows("a", 10, true),
                rows("b", 5, true),
                rows("big", 9_000_000, false),
                rows("gone", 1, true),
            ],
        };
        let restored = [
            rows("a", 10, true),
            rows("b", 6, true),
            rows("big", 9_100_000, true),
            rows("new", 3, true),
        ];
        let c = compare(Some(&info("snapshot")), &restored);
        let status: Vec<_> = c
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.status))
            .collect();
        assert_eq!(
            status,
            [
                ("a", TableStatus::Match),
                ("b", TableStatus::Mismatch),
                ("big", TableStatus::Estimated),
                ("gone", TableStatus::Missing),
                ("new", TableStatus::Extra),
            ]
        );
        assert_eq!(c.failures().len(), 2);
        // Counted before the dump with no count after it: a different count is a note, a
        // missing table still fails.
        let c = compare(Some(&info("before-dump")), &restored);
        assert_eq!(c.tables[1].status, TableStatus::Differs);
        assert_eq!(c.failures().len(), 1);
        assert!(!compare(None, &restored).recorded);
    }

    #[test]
    fn counts_before_and_after_the_dump_bound_what_a_restore_may_hold() {
        let after = |name: &str, before: u64, after: u64| TableRows {
            rows_after: Some(after),
            ..rows(name, before, true)
        };
        let info = DatabaseInfo {
            server_version: "10.11".into(),
            counted: "before-dump".into(),
            tables: vec![
                after("quiet", 100, 100),
                after("growing", 100, 120),
                after("grew", 100, 120),
                after("shrinking", 50, 0),
                rows("old", 10, true),
                rows("huge", 5_000_000, false),
            ],
        };
        let restored = [
            rows("quiet", 99, true),
            rows("growing", 110, true),
            rows("grew", 130, true),
            rows("shrinking", 0, true),
            rows("old", 0, true),
            rows("huge", 0, true),
        ];
        let c = compare(Some(&info), &restored);
        let status: Vec<_> = c.tables.iter().map(|t| t.status).collect();
        assert_eq!(
            status,
            [
                TableStatus::Mismatch, // quiet during the dump: must match exactly
                TableStatus::Changed,  // between the two counts
                TableStatus::Differs,  // outside: shown, not judged
                TableStatus::Changed,  // emptied during the backup: 0 is possible
                TableStatus::Mismatch, // rows backed up, nothing came back
                TableStatus::Mismatch, // millions estimated, nothing came back
            ]
        );
    }
}
