//! Run history: a SQLite file in the state folder (`catalog.db`, through sqlx), one row per
//! run of backup, prune, verify and drill, whether the daemon or a person started it, and the
//! snapshots this host made and removed. `coffer status`, the metrics file and the verify
//! job's audit read it; `job::run` writes it. It imports neither alerts nor drills.
//!
//! It is only history: the store holds everything a restore needs, so a deleted or damaged
//! catalog costs the record of past runs and nothing else, and a catalog that cannot be
//! written never fails a job (it is logged). The schema lives in `migrations/`, applied by
//! sqlx's migrator when the file is opened.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row, SqlSafeStr};

use crate::schedule::Trigger;

/// The catalog's file name in the state folder.
pub const FILE_NAME: &str = "catalog.db";

/// What an interrupted run's error says.
const ABANDONED: &str =
    "the coffer process ended before this run did (killed, or the host went down)";

/// How long a writer waits for another process's write to end.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "runs".into(),
            MigrationType::Simple,
            include_str!("../migrations/0001_runs.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "alerts".into(),
            MigrationType::Simple,
            include_str!("../migrations/0002_alerts.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "run reports".into(),
            MigrationType::Simple,
            include_str!("../migrations/0003_run_reports.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "made snapshots".into(),
            MigrationType::Simple,
            include_str!("../migrations/0004_made_snapshots.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "run audit".into(),
            MigrationType::Simple,
            include_str!("../migrations/0005_run_audit.sql").into_sql_str(),
            false,
        ),
    ])
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("run history {path}: {why}")]
    Sql { path: PathBuf, why: String },
    #[error("run history {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a run ended (or that it is still running). Stored, listed and printed as the
/// lowercase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Still running (a recorded run only; a finish is never this).
    Running,
    Success,
    Failure,
    /// Stopped by a shutdown (no snapshot was written).
    Stopped,
    /// Not run: the same job, or another holding the lock, was still running.
    Skipped,
    /// The process died mid-run (killed, a crash, the host went down), or the run panicked.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Stopped => "stopped",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The outcome a history row names; a word this version does not know (a newer coffer
    /// wrote it) reads as a failure, so it is never taken for a success.
    fn from_word(word: &str) -> Outcome {
        [
            Outcome::Running,
            Outcome::Success,
            Outcome::Failure,
            Outcome::Stopped,
            Outcome::Skipped,
            Outcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == word)
        .unwrap_or(Outcome::Failure)
    }
}

/// Ordered by the word, so totals list (and metrics print) alphabetically as they always did.
impl Ord for Outcome {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Outcome {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct Finish {
    pub outcome: Outcome,
    pub snapshot: Option<String>,
    pub bytes: Option<u64>,
    pub snapshots: Option<u64>,
    pub error: Option<String>,
    /// The run's own report (JSON), e.g. a drill's timings and checks.
    pub report: Option<serde_json::Value>,
    /// Where it wrote what it read from the backups: a restore's folder or redacted database
    /// url.
    pub target: Option<String>,
    /// What went wrong without failing the run (a bench's site gone): alerted as warnings,
    /// not stored.
    pub warnings: Vec<String>,
}

impl Finish {
    pub fn success() -> Finish {
        Finish {
            outcome: Outcome::Success,
            snapshot: None,
            bytes: None,
            snapshots: None,
            error: None,
            report: None,
            target: None,
            warnings: Vec::new(),
        }
    }

    /// A run that ended as `outcome` (a failure, a stop, a skip) with `error`, its chain.
    pub fn failed(outcome: Outcome, error: String) -> Finish {
        Finish {
            outcome,
            error: Some(error),
            ..Finish::success()
        }
    }
}

/// One recorded run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: i64,
    pub job: String,
    pub trigger: String,
    pub pid: i64,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    pub snapshot: Option<String>,
    pub bytes: Option<u64>,
    pub snapshots: Option<u64>,
    pub error: Option<String>,
    /// The run's own report (JSON), e.g. a drill's timings and checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// Who ran it (`who()`); absent in runs recorded before coffer kept it.
    pub user: Option<String>,
    /// Where it wrote what it read from the backups (a restore's folder or database).
    pub target: Option<String>,
}

/// Who is running this process: `login (uid N)`, and `, via sudo from NAME` under sudo.
pub fn who() -> String {
    let uid = rustix::process::getuid().as_raw();
    let login = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".into());
    match std::env::var("SUDO_USER") {
        Ok(by) if !by.is_empty() => format!("{login} (uid {uid}), via sudo from {by}"),
        _ => format!("{login} (uid {uid})"),
    }
}

impl Run {
    /// How long it took (finished runs).
    pub fn seconds(&self) -> Option<f64> {
        self.finished
            .map(|f| (f - self.started).num_milliseconds() as f64 / 1000.0)
    }
}

/// A snapshot this host made, and when this host removed it (if it did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeSnapshot {
    pub id: String,
    pub made: DateTime<Utc>,
    pub removed: Option<DateTime<Utc>>,
}

/// One job's history, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobHistory {
    pub last: Option<Run>,
    pub last_success: Option<Run>,
    pub last_failure: Option<Run>,
    pub running: Option<Run>,
    /// Runs per outcome.
    pub totals: BTreeMap<Outcome, u64>,
}

/// An open catalog. Its calls block (it runs its own small runtime), like every other
/// database session of coffer's.
pub struct Catalog {
    rt: tokio::runtime::Runtime,
    conn: SqliteConnection,
    path: PathBuf,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_stamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Catalog {
    /// Opens (creating it, mode 0600, and bringing its schema up to date) the catalog in
    /// `state_dir`.
    ///
    /// # Errors
    /// When the file cannot be created or opened, or its schema is not one this coffer knows.
    pub fn open(state_dir: &Path) -> Result<Catalog, CatalogError> {
        let path = state_dir.join(FILE_NAME);
        let io = |source| CatalogError::Io {
            path: path.clone(),
            source,
        };
        // The state folder also holds the Drive token: private, as the lock makes it.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(state_dir)
            .map_err(io)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        Self::connect(path, true)
    }

    /// Opens the catalog if there is one (for readers: `status`).
    ///
    /// # Errors
    /// As `open`.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Catalog>, CatalogError> {
        let path = state_dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        Self::connect(path, false).map(Some)
    }

    fn connect(path: PathBuf, migrate: bool) -> Result<Catalog, CatalogError> {
        let sql = |e: &dyn std::fmt::Display| CatalogError::Sql {
            path: path.clone(),
            why: e.to_string(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| sql(&e))?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT);
        let conn = rt.block_on(async {
            let mut conn = SqliteConnection::connect_with(&options).await?;
            if migrate {
                migrator()
                    .run(&mut conn)
                    .await
                    .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
            }
            Ok::<_, sqlx::Error>(conn)
        });
        let conn = conn.map_err(|e| {
            sql(&format!(
                "{e} (it is only history: move it aside and coffer starts a new one)"
            ))
        })?;
        let mut catalog = Catalog { rt, conn, path };
        catalog.close_abandoned();
        Ok(catalog)
    }

    fn error(&self, e: sqlx::Error) -> CatalogError {
        CatalogError::Sql {
            path: self.path.clone(),
            why: e.to_string(),
        }
    }

    /// Records the start of a run; returns its id.
    ///
    /// # Errors
    /// When the row cannot be written.
    pub fn begin(&mut self, job: &str, trigger: Trigger) -> Result<i64, CatalogError> {
        let pid = i64::from(std::process::id());
        let started = stamp(Utc::now());
        let conn = &mut self.conn;
        let id = self.rt.block_on(async {
            // This process runs one job at a time: a row of its pid still running is a run
            // of an earlier process that had the same pid (before a reboot).
            sqlx::query(
                "UPDATE runs SET outcome = 'interrupted', error = ? \
                 WHERE outcome = 'running' AND pid = ?",
            )
            .bind(ABANDONED)
            .bind(pid)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "INSERT INTO runs (job, trigger, pid, started, outcome, user) \
                 VALUES (?, ?, ?, ?, 'running', ?) RETURNING id",
            )
            .bind(job)
            .bind(trigger.as_str())
            .bind(pid)
            .bind(started)
            .bind(who())
            .fetch_one(&mut *conn)
            .await
            .map(|r| r.get::<i64, _>(0))
        });
        id.map_err(|e| self.error(e))
    }

    /// Records how run `id` ended.
    ///
    /// # Errors
    /// When the row cannot be written.
    pub fn finish(&mut self, id: i64, f: &Finish) -> Result<(), CatalogError> {
        let conn = &mut self.conn;
        let done = self.rt.block_on(async {
            sqlx::query(
                "UPDATE runs SET finished = ?, outcome = ?, snapshot = ?, bytes = ?, \
                 snapshots = ?, error = ?, report = ?, target = ? WHERE id = ?",
            )
            .bind(stamp(Utc::now()))
            .bind(f.outcome.as_str())
            .bind(f.snapshot.as_deref())
            .bind(f.bytes.map(|b| b as i64))
            .bind(f.snapshots.map(|b| b as i64))
            .bind(f.error.as_deref())
            .bind(f.report.as_ref().map(ToString::to_string))
            .bind(f.target.as_deref())
            .bind(id)
            .execute(&mut *conn)
            .await
        });
        done.map(drop).map_err(|e| self.error(e))
    }

    /// Records a snapshot this host made (a backup committed it) in `store`
    /// (`StoreConfig::identity`).
    ///
    /// # Errors
    /// When the row cannot be written.
    pub fn record_made(&mut self, id: &str, store: &str) -> Result<(), CatalogError> {
        let conn = &mut self.conn;
        let done = self.rt.block_on(async {
            sqlx::query("INSERT OR IGNORE INTO made_snapshots (id, store, made) VALUES (?, ?, ?)")
                .bind(id)
                .bind(store)
                .bind(stamp(Utc::now()))
                .execute(&mut *conn)
                .await
        });
        done.map(drop).map_err(|e| self.error(e))
    }

    /// Records that this host removed snapshot `id` (`by`: prune, forget).
    ///
    /// # Errors
    /// When the row cannot be written.
    pub fn record_removed(&mut self, id: &str, by: &str) -> Result<(), CatalogError> {
        let conn = &mut self.conn;
        let done = self.rt.block_on(async {
            sqlx::query("UPDATE made_snapshots SET removed = ?, removed_by = ? WHERE id = ?")
                .bind(stamp(Utc::now()))
                .bind(by)
                .bind(id)
                .execute(&mut *conn)
                .await
        });
        done.map(drop).map_err(|e| self.error(e))
    }

    /// Every snapshot this host made in `store`, oldest first.
    ///
    /// # Errors
    /// When the table cannot be read.
    pub fn made_snapshots(&mut self, store: &str) -> Result<Vec<MadeSnapshot>, CatalogError> {
        let conn = &mut self.conn;
        let rows = self.rt.block_on(async {
            sqlx::query("SELECT id, made, removed FROM made_snapshots WHERE store = ? ORDER BY id")
                .bind(store)
                .fetch_all(&mut *conn)
                .await
        });
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(MadeSnapshot {
                    id: r.get::<String, _>(0),
                    made: parse_stamp(&r.get::<String, _>(1))?,
                    removed: r
                        .get::<Option<String>, _>(2)
                        .as_deref()
                        .and_then(parse_stamp),
                })
            })
            .collect())
    }

    /// Records a run that did not happen, and why.
    ///
    /// # Errors
    /// When the row cannot be written.
    pub fn skipped(
        &mut self,
        job: &str,
        trigger: Trigger,
        at: DateTime<Utc>,
        why: &str,
    ) -> Result<(), CatalogError> {
        let conn = &mut self.conn;
        let done = self.rt.block_on(async {
            sqlx::query(
                "INSERT INTO runs (job, trigger, pid, started, finished, outcome, error) \
                 VALUES (?, ?, ?, ?, ?, 'skipped', ?)",
            )
            .bind(job)
            .bind(trigger.as_str())
            .bind(i64::from(std::process::id()))
            .bind(stamp(at))
            .bind(stamp(Utc::now()))
            .bind(why)
            .execute(&mut *conn)
            .await
        });
        done.map(drop).map_err(|e| self.error(e))
    }

    /// When each job last started a run that ran its course (a success or a failure; not one
    /// skipped, stopped by a shutdown or cut off by a crash), for catch-up.
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn last_started(&mut self) -> Result<HashMap<String, DateTime<Utc>>, CatalogError> {
        let conn = &mut self.conn;
        let rows = self.rt.block_on(async {
            sqlx::query(
                "SELECT job, max(started) FROM runs \
                 WHERE outcome IN ('success', 'failure') GROUP BY job",
            )
            .fetch_all(&mut *conn)
            .await
        });
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let job: String = r.get(0);
                let at: Option<String> = r.get(1);
                Some((job, parse_stamp(&at?)?))
            })
            .collect())
    }

    /// When `job` first started a run (any outcome).
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn first_started(&mut self, job: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let conn = &mut self.conn;
        let row = self.rt.block_on(async {
            sqlx::query("SELECT min(started) FROM runs WHERE job = ?")
                .bind(job)
                .fetch_one(&mut *conn)
                .await
        });
        let row = row.map_err(|e| self.error(e))?;
        let at: Option<String> = row.get(0);
        Ok(at.as_deref().and_then(parse_stamp))
    }

    /// The names of the jobs with recorded runs.
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn jobs(&mut self) -> Result<Vec<String>, CatalogError> {
        let conn = &mut self.conn;
        let rows = self.rt.block_on(async {
            sqlx::query("SELECT DISTINCT job FROM runs ORDER BY job")
                .fetch_all(&mut *conn)
                .await
        });
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every run since `since`, newest first: the audit trail (`coffer history`).
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn runs_since(&mut self, since: DateTime<Utc>) -> Result<Vec<Run>, CatalogError> {
        let conn = &mut self.conn;
        let rows = self.rt.block_on(async {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE started >= ? ORDER BY started DESC, id DESC"
            )))
            .bind(stamp(since))
            .fetch_all(&mut *conn)
            .await
        });
        rows.map(|rows| rows.iter().map(run_of).collect())
            .map_err(|e| self.error(e))
    }

    /// `job`'s last run, last success, last failure, the run going now, and totals.
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn history(&mut self, job: &str) -> Result<JobHistory, CatalogError> {
        const COLUMNS: &str = RUN_COLUMNS;
        let conn = &mut self.conn;
        let result = self.rt.block_on(async {
            let one = |condition: &str| {
                format!(
                    "SELECT {COLUMNS} FROM runs WHERE job = ? {condition} \
                     ORDER BY started DESC, id DESC LIMIT 1"
                )
            };
            let mut found = Vec::new();
            for condition in [
                "AND outcome NOT IN ('skipped', 'running')",
                "AND outcome = 'success'",
                "AND outcome IN ('failure', 'interrupted')",
                "AND outcome = 'running'",
            ] {
                let row = sqlx::query(sqlx::AssertSqlSafe(one(condition)))
                    .bind(job)
                    .fetch_optional(&mut *conn)
                    .await?;
                found.push(row.map(|r| run_of(&r)));
            }
            let totals = sqlx::query("SELECT outcome, count(*) FROM runs WHERE job = ? GROUP BY 1")
                .bind(job)
                .fetch_all(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>((found, totals))
        });
        let (mut found, totals) = result.map_err(|e| self.error(e))?;
        let running = found.pop().flatten();
        let last_failure = found.pop().flatten();
        let last_success = found.pop().flatten();
        let last = found.pop().flatten();
        Ok(JobHistory {
            last,
            last_success,
            last_failure,
            running,
            totals: totals.iter().fold(BTreeMap::new(), |mut all, r| {
                let outcome = Outcome::from_word(&r.get::<String, _>(0));
                *all.entry(outcome).or_default() += r.get::<i64, _>(1) as u64;
                all
            }),
        })
    }

    /// When an alert of `kind` about `job` was last sent (to `channel`, or to any).
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn last_alert(
        &mut self,
        job: &str,
        kind: &str,
        channel: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let conn = &mut self.conn;
        let row = self.rt.block_on(async {
            sqlx::query(
                "SELECT max(sent) FROM alerts WHERE job = ? AND kind = ? \
                 AND (? IS NULL OR instr(',' || delivered || ',', ',' || ? || ',') > 0)",
            )
            .bind(job)
            .bind(kind)
            .bind(channel)
            .bind(channel)
            .fetch_one(&mut *conn)
            .await
        });
        let row = row.map_err(|e| self.error(e))?;
        let sent: Option<String> = row.get(0);
        Ok(sent.as_deref().and_then(parse_stamp))
    }

    /// Records an alert sent.
    ///
    /// # Errors
    /// When the row cannot be written.
    pub fn record_alert(
        &mut self,
        job: &str,
        kind: &str,
        delivered: &[&str],
    ) -> Result<(), CatalogError> {
        let conn = &mut self.conn;
        let done = self.rt.block_on(async {
            sqlx::query("INSERT INTO alerts (job, kind, sent, delivered) VALUES (?, ?, ?, ?)")
                .bind(job)
                .bind(kind)
                .bind(stamp(Utc::now()))
                .bind(delivered.join(","))
                .execute(&mut *conn)
                .await
        });
        done.map(drop).map_err(|e| self.error(e))
    }

    /// The outcomes of `job`'s last `n` runs that ran their course (newest first; skipped,
    /// stopped and interrupted runs left out).
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub fn recent_outcomes(&mut self, job: &str, n: u32) -> Result<Vec<Outcome>, CatalogError> {
        let conn = &mut self.conn;
        let rows = self.rt.block_on(async {
            sqlx::query(
                "SELECT outcome FROM runs WHERE job = ? \
                 AND outcome IN ('success', 'failure') \
                 ORDER BY started DESC, id DESC LIMIT ?",
            )
            .bind(job)
            .bind(i64::from(n))
            .fetch_all(&mut *conn)
            .await
        });
        let rows = rows.map_err(|e| self.error(e))?;
        Ok(rows
            .iter()
            .map(|r| Outcome::from_word(&r.get::<String, _>(0)))
            .collect())
    }

    /// Marks runs left `running` by a process that no longer exists (killed, or the host went
    /// down) as interrupted, so they show as such.
    fn close_abandoned(&mut self) {
        let conn = &mut self.conn;
        let result = self.rt.block_on(async {
            let rows = sqlx::query("SELECT id, pid FROM runs WHERE outcome = 'running'")
                .fetch_all(&mut *conn)
                .await?;
            for r in rows {
                let (id, pid): (i64, i64) = (r.get(0), r.get(1));
                if process_alive(pid) {
                    continue;
                }
                sqlx::query(
                    "UPDATE runs SET outcome = 'interrupted', error = ? \
                     WHERE id = ? AND outcome = 'running'",
                )
                .bind(ABANDONED)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<_, sqlx::Error>(())
        });
        if let Err(e) = result {
            tracing::warn!("run history {}: {e}", self.path.display());
        }
    }
}

/// The columns `run_of` reads, in its order.
const RUN_COLUMNS: &str = "id, job, trigger, pid, started, finished, outcome, snapshot, bytes, \
                           snapshots, error, report, user, target";

fn run_of(r: &sqlx::sqlite::SqliteRow) -> Run {
    let started: String = r.get(4);
    let finished: Option<String> = r.get(5);
    Run {
        id: r.get(0),
        job: r.get(1),
        trigger: r.get(2),
        pid: r.get(3),
        started: parse_stamp(&started).unwrap_or_default(),
        finished: finished.as_deref().and_then(parse_stamp),
        outcome: Outcome::from_word(&r.get::<String, _>(6)),
        snapshot: r.get(7),
        bytes: r.get::<Option<i64>, _>(8).map(|b| b as u64),
        snapshots: r.get::<Option<i64>, _>(9).map(|b| b as u64),
        error: r.get(10),
        report: r
            .try_get::<Option<String>, _>(11)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok()),
        user: r.try_get(12).ok().flatten(),
        target: r.try_get(13).ok().flatten(),
    }
}

fn process_alive(pid: i64) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    let exists = match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    };
    // After a reboot the pid may belong to some other program: only a coffer counts.
    exists
        && std::fs::read_to_string(format!("/proc/{}/comm", pid.as_raw_nonzero()))
            .map_or(true, |comm| comm.trim_end().starts_with("coffer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn records_runs_and_answers_for_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let a = c.begin("backup", Trigger::Schedule).unwrap();
        c.finish(
            a,
            &Finish {
                snapshot: Some("20261123T020000Z-000000".into()),
                bytes: Some(1234),
                snapshots: Some(7),
                ..Finish::success()
            },
        )
        .unwrap();
        let b = c.begin("backup", Trigger::Manual).unwrap();
        c.finish(b, &Finish::failed(Outcome::Failure, "store full".into()))
            .unwrap();
        c.skipped("backup", Trigger::Schedule, Utc::now(), "still running")
            .unwrap();
        let _running = c.begin("backup", Trigger::Schedule).unwrap();
        let h = c.history("backup").unwrap();
        let ok = h.last_success.unwrap();
        assert_eq!(ok.bytes, Some(1234));
        assert_eq!(ok.snapshots, Some(7));
        assert_eq!(h.last_failure.unwrap().error.as_deref(), Some("store full"));
        assert_eq!(h.last.unwrap().outcome, Outcome::Failure);
        assert_eq!(h.running.unwrap().trigger, "schedule");
        assert_eq!(h.totals[&Outcome::Skipped], 1);
        assert_eq!(c.last_started().unwrap().len(), 1);
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        drop(c);
        // A second open keeps the history (the migration is applied once).
        let mut c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.history("backup").unwrap().totals[&Outcome::Failure], 1);
    }

    #[test]
    fn a_run_left_running_by_a_dead_process_reads_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let id = c.begin("backup", Trigger::Schedule).unwrap();
        // Pretend a process that is gone started it.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = i64::from(child.id());
        child.wait().unwrap();
        c.rt.block_on(
            sqlx::query("UPDATE runs SET pid = ? WHERE id = ?")
                .bind(dead)
                .bind(id)
                .execute(&mut c.conn),
        )
        .unwrap();
        drop(c);
        let mut c = Catalog::open_existing(dir.path()).unwrap().unwrap();
        let h = c.history("backup").unwrap();
        assert!(h.running.is_none());
        let failed = h.last_failure.unwrap();
        assert_eq!(failed.outcome, Outcome::Interrupted);
        assert!(failed.error.unwrap().contains("ended before this run did"));
        // An interrupted run does not count as having run, for catch-up.
        assert!(c.last_started().unwrap().is_empty());
    }
}
