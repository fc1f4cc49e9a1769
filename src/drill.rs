//! Restore drills: the proof that a snapshot restores, measured.
//!
//! A drill downloads every part of a snapshot into a spool below the staging folder (checking
//! each part's size and sha256 as it lands), then restores from that spool: each database
//! source that has a `[[drill.database]]` is loaded into its staging database (dropped and
//! re-created; never a source's database — the same guards as `restore --db-url`), each
//! directory source is extracted into `<staging_dir>/<source>`, and a database source without
//! a staging database is decrypted and decompressed to its end. Then the checks: every table
//! and its row count against the manifest, the operator's SQL probes, the entry counts and file
//! bytes of every folder, and an optional HTTP probe of the staging application.
//!
//! The report has per-stage timings; the whole drill is the measured recovery time and the
//! snapshot's age the recovery point. Downloading first and restoring from local disk is what
//! a recovery on a fresh server does too, and it keeps the stage timings apart.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, DrillDatabase, DrillHttp, FileCheck};
use crate::pipeline::{PartProblem, Timed, busy_seconds, read_ahead};
use crate::progress::Progress;
use crate::snapshot::{EntryCounts, Manifest, SourceRecord};
use crate::staging::{Prepared, StagingOptions, TableCheck, TableStatus};
use crate::store::LocalStore;
use crate::store::Store;

/// The file that marks a staging folder as coffer's own (a drill empties only such a folder).
pub const MARKER: &str = ".coffer-drill";
/// Where the parts are downloaded to, below the staging folder.
const SPOOL: &str = ".download";

/// Seconds per stage, summed over the sources.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    /// Fetching every part from the store into the spool, each checked against its sha256.
    pub download: f64,
    /// Decrypting and decompressing (it overlaps the load and the extract, on another core).
    pub decrypt_decompress: f64,
    pub database_load: f64,
    pub file_extract: f64,
    /// Row counts, SQL probes, the folders' counts, the HTTP probe.
    pub checks: f64,
}

/// What the drill restored of one folder, against the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct FilesCheck {
    pub target: PathBuf,
    /// The manifest's counts (`None`: an older snapshot that recorded none).
    pub expected: Option<EntryCounts>,
    pub restored: EntryCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_file_bytes: Option<u64>,
    pub restored_file_bytes: u64,
    /// Files hashed against the snapshot's checksum list, and how many differed or were
    /// missing.
    pub hashed: u64,
    pub hash_failures: u64,
    /// `all`, `sample`, `none` (check_files), or `not recorded` (an older snapshot).
    pub hash_check: &'static str,
}

/// One SQL probe's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub sql: String,
    pub ok: bool,
    /// The first value it returned, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the drill loaded of one database, against the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseCheck {
    /// The staging database (no password in it).
    pub target: String,
    pub prepared: Prepared,
    /// SQL bytes fed to the client.
    pub sql_bytes: u64,
    /// Whether the snapshot recorded row counts (older ones did not).
    pub counts_recorded: bool,
    pub tables: Vec<TableCheck>,
    pub probes: Vec<ProbeResult>,
}

/// One source of the snapshot in the drill.
#[derive(Debug, Clone, Serialize)]
pub struct SourceResult {
    pub name: String,
    pub kind: String,
    pub stored_bytes: u64,
    pub plaintext_bytes: u64,
    pub download_seconds: f64,
    pub decrypt_decompress_seconds: f64,
    /// Loading the database, or extracting the folder (or, read only, reading the stream).
    pub restore_seconds: f64,
    pub check_seconds: f64,
    /// `loaded`, `extracted`, or `read` (a database source with no `[[drill.database]]`: its
    /// stream was decrypted and decompressed to its end, not loaded).
    pub restored: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseCheck>,
    pub failures: Vec<String>,
}

/// The HTTP probe's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct HttpResult {
    pub url: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub attempts: u32,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A drill's report.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub snapshot: String,
    pub snapshot_host: String,
    pub snapshot_created: DateTime<Utc>,
    pub started: DateTime<Utc>,
    /// The snapshot's age when the drill started: the data a disaster at that moment loses
    /// (the recovery point).
    pub recovery_point_seconds: f64,
    /// From the first download to the last check: how long a recovery takes (the recovery
    /// time).
    pub recovery_time_seconds: f64,
    pub stored_bytes: u64,
    pub stages: Stages,
    pub sources: Vec<SourceResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpResult>,
    /// Every check that failed, each naming what differed; empty: the drill passed.
    pub failures: Vec<String>,
    /// What the drill did not check, and why.
    pub notes: Vec<String>,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// What the run history keeps (and `coffer status` shows).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "snapshot": self.snapshot,
            "recovery_time_seconds": self.recovery_time_seconds,
            "recovery_point_seconds": self.recovery_point_seconds,
            "stored_bytes": self.stored_bytes,
            "stages": self.stages,
            "failures": self.failures.iter().take(100).collect::<Vec<_>>(),
        })
    }
}

/// A drill that ran its course and found differences (the error of a failed drill run).
#[derive(Debug)]
pub struct DrillFailed {
    pub report: DrillReport,
}

impl std::fmt::Display for DrillFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.report.failures.len();
        let mut named: Vec<&str> = self
            .report
            .failures
            .iter()
            .take(10)
            .map(String::as_str)
            .collect();
        let more = format!("and {} more", n.saturating_sub(10));
        if n > 10 {
            named.push(&more);
        }
        write!(
            f,
            "the restore drill of snapshot {} failed {n} check{}: {}",
            self.report.snapshot,
            if n == 1 { "" } else { "s" },
            named.join("; ")
        )
    }
}

impl std::error::Error for DrillFailed {}

/// What to drill.
pub struct DrillOptions<'a> {
    /// A snapshot id or `latest`.
    pub snapshot: &'a str,
    /// The identity file (default `encryption.identity_file`).
    pub identity: Option<&'a Path>,
    /// How long to wait for another job's lock.
    pub wait: Duration,
    /// Also drill a snapshot without a signature (`--allow-unsigned`; never the daemon).
    pub allow_unsigned: bool,
}

/// Runs a drill: an `Err` for a drill that could not run its course (no key, a damaged
/// part, a staging database that cannot be reached, …), `DrillFailed` inside it for one that
/// ran and found differences.
///
/// # Errors
/// As above; every message names the snapshot, the source or the part, and what to do.
pub fn drill(config: &Config, opts: &DrillOptions<'_>) -> anyhow::Result<DrillReport> {
    check_apart(config)?;
    // The lock every job shares keeps a prune from deleting the snapshot while it downloads;
    // it is released once the parts are local.
    let lock = crate::lock::lock_state_for(&config.state_dir, "drill", opts.wait)?;
    let store = crate::store::from_config(&config.store)?;
    let (identities, identity_file) =
        crate::keys::load_chosen(opts.identity, config.encryption.identity_file.as_deref())
            .context(
                "a drill decrypts the snapshot: run it on a host that holds the private key",
            )?;
    let accept = if opts.allow_unsigned {
        crate::snapshot::Accept::TrustedOrUnsigned
    } else {
        crate::snapshot::Accept::Trusted
    };
    let resolved =
        crate::snapshot::resolve(store.as_ref(), opts.snapshot, &config.trusted(), accept)?;
    let m = resolved.manifest;
    let staging = &config.drill.staging_dir;
    let _staging_lock = prepare_staging(staging)?;
    // Every staging database is checked before hours of downloading: the guards, the
    // client, and that a database holding data is one a drill made.
    let known = known_targets(&config.state_dir);
    let mut targets = Vec::new();
    for d in &config.drill.databases {
        let Some(s) = m.sources.iter().find(|s| s.name == d.source) else {
            let names: Vec<&str> = m.sources.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "[[drill.database]] names source '{}', which snapshot {} does not hold (it holds \
                 {}); fix drill.database.source",
                d.source,
                m.id,
                names.join(", ")
            );
        };
        if s.kind == "directory" {
            bail!(
                "[[drill.database]] names source '{}', a folder; only database sources load into a \
                 staging database (folders go to drill.staging_dir)",
                s.name
            );
        }
        let target = staging_database(d, &s.name)?;
        crate::staging::check_engine(s, &target.address)?;
        crate::restore::guard_target(config, &target, &drill_options()).map_err(|e| {
            match e.downcast_ref::<crate::staging::IsSourceDatabase>() {
                Some(same) => anyhow!(
                    "refusing to drill into {}: it is the database of the configured source '{}' \
                     ({}), and a drill drops and re-creates its staging database. Give \
                     [[drill.database]] source = \"{}\" a separate staging database",
                    same.target,
                    same.source,
                    same.address,
                    s.name
                ),
                None => e.context(format!(
                    "the staging database of '{}' ({}) cannot be used",
                    s.name, d.address
                )),
            }
        })?;
        let shown = target.address.to_string();
        if !known.contains(&shown) && crate::staging::occupied(&target)? {
            bail!(
                "staging database {shown} (for '{}') holds data that no coffer drill put there; \
                 a drill drops and re-creates its staging database, so name a database that does \
                 not exist yet (the drill creates it) or an empty one",
                s.name
            );
        }
        targets.push((d, target));
    }
    // What an earlier drill left is removed before the clock starts.
    for s in m.sources.iter().filter(|s| s.kind == "directory") {
        let dir = staging.join(&s.name);
        remove_tree(&dir).with_context(|| format!("emptying {} for the drill", dir.display()))?;
    }
    let spool = Spool::create(staging.join(SPOOL))?;
    check_space(staging, &m)?;
    let started = Utc::now();
    let clock = Instant::now();
    let mut report = DrillReport {
        snapshot: m.id.to_string(),
        snapshot_host: m.host.clone(),
        snapshot_created: m.created,
        started,
        recovery_point_seconds: (started - m.created).num_milliseconds() as f64 / 1000.0,
        recovery_time_seconds: 0.0,
        stored_bytes: m.stored_bytes(),
        stages: Stages::default(),
        sources: Vec::new(),
        http: None,
        // Newer snapshots that are not trusted: planted, or the backup host signs with a key
        // this host does not trust (a lost state folder makes a new one). Either way the
        // drill is not proving what a restore of `latest` would have to be: it fails.
        failures: resolved
            .passed_over
            .iter()
            .map(|p| format!("a newer snapshot was passed over: {p}"))
            .collect(),
        notes: (resolved.trust == crate::signing::Trust::Unsigned)
            .then(|| {
                format!(
                    "snapshot {} is not signed; drilled because of --allow-unsigned",
                    m.id
                )
            })
            .into_iter()
            .collect(),
    };

    // Download everything first: a damaged part stops the drill before any staging target is
    // touched, naming every bad part.
    let bar = Progress::bytes("download", Some(m.stored_bytes()));
    let mut problems = Vec::new();
    let mut downloads = Vec::new();
    for s in &m.sources {
        let t = Instant::now();
        for stream in s.streams() {
            problems.extend(download(store.as_ref(), &spool.store, &m, &stream, &bar)?);
        }
        downloads.push(t.elapsed().as_secs_f64());
    }
    bar.finish();
    if !problems.is_empty() {
        let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let next = if problems.iter().all(|p| !p.is_damage()) {
            "check that the store is reachable and readable, then run the drill again"
        } else {
            "this snapshot cannot be restored: back up again now, and run 'coffer verify --all' \
             to see which other snapshots are affected"
        };
        bail!(
            "the drill of snapshot {} stopped at the download: {}; {next}",
            m.id,
            listed.join("; ")
        );
    }
    drop(lock);

    let keys = Keys {
        identities: &identities,
        identity_file: &identity_file,
    };
    for (s, download_seconds) in m.sources.iter().zip(downloads) {
        crate::shutdown::check()?;
        let mut result = SourceResult {
            name: s.name.clone(),
            kind: s.kind.clone(),
            stored_bytes: s.streams().iter().map(|st| st.encrypted_bytes).sum(),
            plaintext_bytes: s.plaintext_bytes,
            download_seconds,
            decrypt_decompress_seconds: 0.0,
            restore_seconds: 0.0,
            check_seconds: 0.0,
            restored: "read",
            files: None,
            database: None,
            failures: Vec::new(),
        };
        if s.kind == "directory" {
            let dir = staging.join(&s.name);
            extract_folder(&spool.store, &m, s, &dir, &keys, &mut result)?;
            let t = Instant::now();
            check_file_sums(
                &spool.store,
                &m,
                s,
                &dir,
                config.drill.check_files,
                &keys,
                &mut result,
                &mut report.notes,
            )?;
            result.check_seconds += t.elapsed().as_secs_f64();
            report.stages.file_extract += result.restore_seconds;
        } else if let Some((d, target)) = targets.iter().find(|(d, _)| d.source == s.name) {
            // Recorded before the load: a load cut short leaves tables a drill made, which the
            // next drill must be free to drop.
            remember_target(&config.state_dir, &target.address.to_string());
            load_database(config, &spool.store, &m, s, d, target, &keys, &mut result)?;
            if result
                .database
                .as_ref()
                .is_some_and(|db| !db.counts_recorded)
            {
                report.notes.push(format!(
                    "'{}': snapshot {} records no row counts (an older coffer made it): its \
                     tables were loaded but not compared",
                    s.name, m.id
                ));
            }
            report.stages.database_load += result.restore_seconds;
        } else {
            read_through(&spool.store, &m, s, &keys, &mut result)?;
            report.notes.push(format!(
                "'{}' ({}) was decrypted and decompressed but not loaded: add a \
                 [[drill.database]] with source = \"{}\" to load it into a staging database \
                 and check its tables",
                s.name, s.kind, s.name
            ));
        }
        report.stages.download += result.download_seconds;
        report.stages.decrypt_decompress += result.decrypt_decompress_seconds;
        report.stages.checks += result.check_seconds;
        report.failures.extend(result.failures.iter().cloned());
        report.sources.push(result);
    }
    drop(spool);
    if let Some(http) = &config.drill.http {
        crate::shutdown::check()?;
        let result = http_probe(http);
        report.stages.checks += result.seconds;
        if !result.ok {
            report.failures.push(format!(
                "the HTTP probe of {} failed: {}",
                result.url,
                result.error.as_deref().unwrap_or("no answer")
            ));
        }
        report.http = Some(result);
    }
    report.recovery_time_seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// What `coffer check` says about the drill set-up, without changing anything: the staging
/// folder, and each staging database (password, guards, client, and whether a drill may
/// drop it).
pub fn check_setup(config: &Config) -> Vec<(String, anyhow::Result<String>)> {
    let mut out = Vec::new();
    let staging = &config.drill.staging_dir;
    let folder = check_apart(config).and_then(|()| match fs::read_dir(staging) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(format!(
            "{} (created 0700 by the first drill)",
            staging.display()
        )),
        Err(e) => Err(anyhow!(e).context(format!("reading {}", staging.display()))),
        Ok(mut entries) => {
            if staging.join(MARKER).is_file() {
                Ok(format!("{} (a drill's)", staging.display()))
            } else if entries.next().is_none() {
                Ok(format!("{} (empty)", staging.display()))
            } else {
                Err(anyhow!(
                    "{} holds files that coffer did not put there; a drill empties its staging \
                     folder, so give a new or empty folder",
                    staging.display()
                ))
            }
        }
    });
    out.push(("drill.staging_dir".to_string(), folder));
    let known = known_targets(&config.state_dir);
    for d in &config.drill.databases {
        let result = (|| {
            let target = staging_database(d, &d.source)?;
            crate::restore::guard_target(config, &target, &drill_options())?;
            let shown = target.address.to_string();
            let state = if known.contains(&shown) {
                "a drill's own: each drill drops and re-creates it"
            } else if crate::staging::occupied(&target)? {
                bail!(
                    "{shown} holds data that no coffer drill put there: a drill would refuse it; \
                     name a database that does not exist yet (the drill creates it) or an empty one"
                );
            } else {
                "missing or empty: the first drill creates or fills it"
            };
            Ok(format!("{shown}: {state}"))
        })();
        out.push((format!("drill.database '{}'", d.source), result));
    }
    out
}

/// Runs a drill and turns a report with failures into a `DrillFailed` error.
///
/// # Errors
/// As `drill`, or `DrillFailed`.
pub fn drill_checked(config: &Config, opts: &DrillOptions<'_>) -> anyhow::Result<DrillReport> {
    let report = drill(config, opts)?;
    if report.passed() {
        Ok(report)
    } else {
        Err(DrillFailed { report }.into())
    }
}

/// What the run history keeps of a drill that passed.
pub fn finish_of(report: &DrillReport) -> crate::catalog::Finish {
    crate::catalog::Finish {
        snapshot: Some(report.snapshot.clone()),
        bytes: Some(report.stored_bytes),
        report: Some(report.summary()),
        ..crate::catalog::Finish::success()
    }
}

/// A drill target is disposable by definition: created if missing, emptied if not (the
/// checks before the download make sure a drill made it). The guards still refuse a
/// configured source's database.
fn drill_options() -> StagingOptions {
    StagingOptions {
        create: true,
        force: true,
        overwrite_source: false,
        client: None,
    }
}

/// The staging database of `[[drill.database]]` `d`, its password read.
fn staging_database(d: &DrillDatabase, source: &str) -> anyhow::Result<crate::database::Database> {
    let password = d
        .password
        .as_ref()
        .map(crate::config::SecretRef::load)
        .transpose()
        .map_err(|e| {
            anyhow!("cannot read the password of the staging database for '{source}': {e}")
        })?;
    Ok(crate::database::Database {
        address: d.address.clone(),
        password,
    })
}

/// The file listing the staging databases drills have loaded (one address per line): only
/// those may be dropped when they hold data.
const TARGETS_FILE: &str = "drill-targets";

fn known_targets(state_dir: &Path) -> std::collections::BTreeSet<String> {
    fs::read_to_string(state_dir.join(TARGETS_FILE))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn remember_target(state_dir: &Path, address: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    if known_targets(state_dir).contains(address) {
        return;
    }
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state_dir.join(TARGETS_FILE))
        .and_then(|mut f| writeln!(f, "{address}"));
    if let Err(e) = written {
        tracing::warn!(
            "cannot record {address} as a drill's staging database ({e}); the next drill will \
             refuse to drop it"
        );
    }
}

/// Refuses a staging folder that is, holds, or lies inside a backed-up folder or the local
/// store, comparing real paths (symlinks and `..` resolved).
fn check_apart(config: &Config) -> anyhow::Result<()> {
    // The deepest part that exists, resolved, and the rest as written (a staging folder
    // that does not exist yet may sit under a symlink).
    let real = |p: &Path| {
        let mut rest = Vec::new();
        let mut at = p.to_path_buf();
        loop {
            if let Ok(r) = fs::canonicalize(&at) {
                return rest.iter().rev().fold(r, |acc: PathBuf, c| acc.join(c));
            }
            match (at.file_name().map(ToOwned::to_owned), at.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    at = parent.to_path_buf();
                }
                _ => return p.to_path_buf(),
            }
        }
    };
    let staging = real(&config.drill.staging_dir);
    let mut others: Vec<(String, PathBuf)> = config
        .sources
        .iter()
        .filter_map(|s| match &s.kind {
            crate::config::SourceKind::Directory { path, .. }
            | crate::config::SourceKind::Frappe { path } => {
                Some((format!("source '{}'", s.name), path.clone()))
            }
            _ => None,
        })
        .collect();
    if let crate::config::StoreKind::Local { path } = &config.store.kind {
        others.push(("the store".into(), path.clone()));
    }
    for (what, path) in others {
        let path = real(&path);
        if staging.starts_with(&path) || path.starts_with(&staging) {
            bail!(
                "drill.staging_dir {} overlaps {what} ({}): a drill empties its staging folder \
                 and writes plaintext there, so it must be apart from every backed-up folder and \
                 from the store",
                staging.display(),
                path.display()
            );
        }
    }
    Ok(())
}

struct Keys<'a> {
    identities: &'a [Box<dyn age::Identity + Send + Sync>],
    identity_file: &'a str,
}

/// Makes the staging folder coffer's own (created 0700: it will hold a site's private
/// files), or checks that it already is: a drill only ever empties a folder carrying the
/// marker, so a mistyped `staging_dir` cannot wipe a folder that holds something else.
fn prepare_staging(dir: &Path) -> anyhow::Result<fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let fresh = match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the drill staging folder {}", dir.display()))?;
            true
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading drill.staging_dir {}", dir.display()));
        }
        Ok(mut entries) => {
            if dir.join(MARKER).is_file() {
                false
            } else if entries.next().is_none() {
                true
            } else {
                bail!(
                    "drill.staging_dir {} holds files that coffer did not put there; a drill \
                     empties its staging folder, so give a new or empty folder",
                    dir.display()
                )
            }
        }
    };
    if fresh {
        // It will hold a site's private files.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    let marker = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(MARKER))
        .with_context(|| format!("marking the drill staging folder {}", dir.display()))?;
    if fresh {
        (&marker)
            .write_all(
                b"This folder is coffer's drill staging folder: each drill empties and refills it.\n",
            )
            .with_context(|| format!("marking the drill staging folder {}", dir.display()))?;
    }
    // One drill at a time per staging folder (several sites' configs may share one).
    rustix::fs::flock(
        &marker,
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .map_err(|_| {
        anyhow!(
            "another drill is using the staging folder {}; wait for it to finish",
            dir.display()
        )
    })?;
    Ok(marker)
}

/// Refuses to start a drill that would fill the disk: the parts and the extracted folders
/// must fit (the databases go to their servers).
fn check_space(dir: &Path, m: &Manifest) -> anyhow::Result<()> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let folders: u64 = m
        .sources
        .iter()
        .filter(|s| s.kind == "directory")
        .map(|s| s.plaintext_bytes)
        .sum();
    // What an earlier drill left there is replaced.
    let needed = m.stored_bytes() + folders;
    let reclaimable = m
        .sources
        .iter()
        .filter(|s| s.kind == "directory")
        .map(|s| tree_bytes(&dir.join(&s.name)))
        .sum::<u64>();
    if free + reclaimable < needed {
        bail!(
            "the drill of snapshot {} needs about {} in {} (its parts and its folders), but \
             {} is free; free some space or set drill.staging_dir to a larger disk",
            m.id,
            crate::units::human_bytes(needed),
            dir.display(),
            crate::units::human_bytes(free + reclaimable)
        );
    }
    Ok(())
}

fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| tree_bytes(&e.path()))
            .sum::<u64>()
    })
}

/// Removes a tree a drill restored, read-only folders included.
fn remove_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            fn writable(p: &Path) {
                if let Ok(m) = fs::symlink_metadata(p)
                    && m.is_dir()
                {
                    let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                    if let Ok(entries) = fs::read_dir(p) {
                        for e in entries.flatten() {
                            writable(&e.path());
                        }
                    }
                }
            }
            writable(path);
            fs::remove_dir_all(path)
        }
    }
}

/// The download spool: removed when the drill ends, whatever happened.
struct Spool {
    dir: PathBuf,
    store: LocalStore,
}

impl Spool {
    fn create(dir: PathBuf) -> anyhow::Result<Spool> {
        remove_tree(&dir).with_context(|| format!("removing {}", dir.display()))?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Spool {
            store: LocalStore::new(&dir),
            dir,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.dir) {
            tracing::warn!(
                "cannot remove the drill's download spool {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Copies every part of `s` into the spool, checking sizes and sha256 (each part's and the
/// whole stream's) as `verify` does. Problems with parts are returned; a spool that cannot be
/// written is an error.
fn download(
    store: &dyn Store,
    spool: &LocalStore,
    m: &Manifest,
    s: &SourceRecord,
    bar: &Progress,
) -> anyhow::Result<Vec<PartProblem>> {
    let prefix = m.id.prefix();
    let mut sink = SpoolSink {
        spool,
        prefix: &prefix,
        current: None,
    };
    let report = crate::verify::read_stream(store, &prefix, s, &|n| bar.inc(n), &mut sink)?;
    // A stop request surfaces as a part that could not be read: report it as the stop it is.
    crate::shutdown::check()?;
    Ok(report.problems)
}

/// Writes the parts being checked into the spool.
struct SpoolSink<'a> {
    spool: &'a LocalStore,
    prefix: &'a str,
    current: Option<Box<dyn crate::store::ObjectWriter>>,
}

impl SpoolSink<'_> {
    fn failed(&self, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("writing the drill's download spool ({}): {e}", self.spool)
    }
}

impl crate::verify::PartSink for SpoolSink<'_> {
    type Error = anyhow::Error;

    fn begin(&mut self, part: &crate::snapshot::PartRecord) -> anyhow::Result<()> {
        // A writer left by a part that could not be read is dropped: nothing of it stays.
        self.current = Some(
            self.spool
                .put(&format!("{}{}", self.prefix, part.name))
                .map_err(|e| self.failed(e))?,
        );
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self.current.as_mut() {
            Some(w) => w.write_all(bytes).map_err(|e| anyhow!("{e}")),
            None => Ok(()),
        }
        .map_err(|e| self.failed(e))
    }

    fn end(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.current.take() {
            w.finish().map_err(|e| self.failed(e))?;
        }
        Ok(())
    }
}

/// Extracts a folder source into `dir` (emptied first) and compares it with the manifest.
fn extract_folder(
    spool: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    dir: &Path,
    keys: &Keys<'_>,
    result: &mut SourceResult,
) -> anyhow::Result<()> {
    remove_tree(dir).with_context(|| format!("emptying {} for the drill", dir.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stream = crate::restore::open_checked(spool, m, s, keys.identities, keys.identity_file)?;
    let busy = Arc::new(AtomicU64::new(0));
    let bar = Progress::bytes(&format!("extract {}", s.name), Some(s.plaintext_bytes));
    let t = Instant::now();
    let timed = Timed::new(
        crate::pipeline::CountingRead::new(stream, &bar),
        busy.clone(),
    );
    let extracted =
        std::thread::scope(|scope| crate::restore::extract(read_ahead(scope, timed), dir));
    bar.finish();
    result.restore_seconds = t.elapsed().as_secs_f64();
    result.decrypt_decompress_seconds = busy_seconds(&busy);
    let summary = extracted.map_err(|e| {
        anyhow!(e).context(format!(
            "the drill could not extract '{}' of snapshot {} into {}",
            s.name,
            m.id,
            dir.display()
        ))
    })?;
    result.restored = "extracted";
    let t = Instant::now();
    if let Some(expected) = s.entries
        && expected != summary.counts
    {
        result.failures.push(format!(
            "'{}': {} files, {} directories, {} symlinks were restored, the manifest records {}, \
             {} and {}",
            s.name,
            summary.counts.files,
            summary.counts.directories,
            summary.counts.symlinks,
            expected.files,
            expected.directories,
            expected.symlinks
        ));
    }
    if let Some(expected) = s.file_bytes
        && expected != summary.file_bytes
    {
        result.failures.push(format!(
            "'{}': {} bytes of file content were restored, the manifest records {expected}",
            s.name, summary.file_bytes
        ));
    }
    result.check_seconds = t.elapsed().as_secs_f64();
    result.files = Some(FilesCheck {
        target: fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        expected: s.entries,
        restored: summary.counts,
        expected_file_bytes: s.file_bytes,
        restored_file_bytes: summary.file_bytes,
        hashed: 0,
        hash_failures: 0,
        hash_check: "none",
    });
    Ok(())
}

/// Hashes the restored file `rel` below `dir` without following a symlink anywhere on the
/// way (a forged list could point through a restored link out of the folder).
fn hash_beneath(dir: &Path, rel: &Path, buf: &mut [u8], bar: &Progress) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(Some(rel)) = crate::restore::safe_relative(rel.as_os_str().as_bytes()) else {
        return Err("is named outside the folder by the list".into());
    };
    crate::restore::check_parents(dir, &rel)
        .map_err(|_| "lies below a symlink or a file (not followed)".to_string())?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(dir.join(&rel));
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("is missing".into()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err("is a symlink, not a file".into());
        }
        Err(e) => return Err(format!("cannot be read ({e})")),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err("is not a regular file".into());
    }
    let mut h = Sha256::new();
    loop {
        let n = file
            .read(buf)
            .map_err(|e| format!("cannot be read ({e})"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hashes restored files (all, or a sample spread over the list) against the checksum list
/// the backup stored with the folder.
#[allow(clippy::too_many_arguments)]
fn check_file_sums(
    spool: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    dir: &Path,
    mode: FileCheck,
    keys: &Keys<'_>,
    result: &mut SourceResult,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(files) = result.files.as_mut() else {
        return Ok(());
    };
    if mode == FileCheck::None {
        return Ok(());
    }
    let Some(stream) = s.checksums_stream() else {
        files.hash_check = "not recorded";
        notes.push(format!(
            "'{}': snapshot {} records no file checksums (an older coffer made it): only the \
             counts and bytes of its files were checked",
            s.name, m.id
        ));
        return Ok(());
    };
    let total = s.checksums.as_ref().map_or(0, |c| c.files) as usize;
    let every = match mode {
        FileCheck::None | FileCheck::All => 1,
        FileCheck::Sample(n) => total.div_ceil(n.max(1)).max(1),
    };
    files.hash_check = if every == 1 { "all" } else { "sample" };
    // Read line by line, never more than the manifest says: the list is decrypted data that
    // anyone holding the public key could have forged.
    let stream =
        crate::restore::open_checked(spool, m, &stream, keys.identities, keys.identity_file)?;
    let reader =
        io::BufReader::new(stream.take(s.checksums.as_ref().map_or(0, |c| c.plaintext_bytes) + 1));
    let bar = Progress::bytes(&format!("hash {}", s.name), None);
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut listed = 0u64;
    for (n, line) in io::BufRead::split(reader, b'\n').enumerate() {
        crate::shutdown::check()?;
        let line = line.map_err(|e| {
            anyhow!(e).context(format!(
                "the drill could not read the checksum list of '{}' in snapshot {}",
                s.name, m.id
            ))
        })?;
        let entry = crate::checksums::parse_line(&line).map_err(|why| {
            anyhow!(
                "the checksum list of '{}' in snapshot {} is damaged at line {}: {why}",
                s.name,
                m.id,
                n + 1
            )
        })?;
        listed += 1;
        if n % every != 0 {
            continue;
        }
        files.hashed += 1;
        // Shown escaped: a name may hold any byte.
        let shown = format!("{:?}", entry.path.to_string_lossy());
        match hash_beneath(dir, &entry.path, &mut buf, &bar) {
            Ok(got) if got == entry.sha256 => {}
            Ok(got) => bad.push(format!(
                "{shown} differs (sha256 {}…, the backup recorded {}…)",
                &got[..12],
                &entry.sha256[..12]
            )),
            Err(why) => bad.push(format!("{shown} {why}")),
        }
    }
    if let Some(expected) = s.entries
        && listed != expected.files
    {
        result.failures.push(format!(
            "'{}': the checksum list names {listed} files, the manifest counts {}",
            s.name, expected.files
        ));
    }
    bar.finish();
    files.hash_failures = bad.len() as u64;
    if !bad.is_empty() {
        let n = bad.len();
        let mut named: Vec<String> = bad.into_iter().take(10).collect();
        if n > 10 {
            named.push(format!("and {} more", n - 10));
        }
        result.failures.push(format!(
            "'{}': {n} of {} restored files do not match the backup's checksums: {}",
            s.name,
            files.hashed,
            named.join(", ")
        ));
    }
    Ok(())
}

/// Loads a database source into its staging database, compares the tables, runs the probes.
#[allow(clippy::too_many_arguments)]
fn load_database(
    config: &Config,
    spool: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    d: &DrillDatabase,
    target: &crate::database::Database,
    keys: &Keys<'_>,
    result: &mut SourceResult,
) -> anyhow::Result<()> {
    let loaded = crate::restore::load_database(
        config,
        spool,
        m,
        s,
        target,
        &drill_options(),
        keys.identities,
        keys.identity_file,
    )
    .with_context(|| format!("the drill could not load '{}' into {}", s.name, d.address))?;
    result.restored = "loaded";
    result.restore_seconds = loaded.seconds;
    result.decrypt_decompress_seconds = loaded.decode_seconds;
    let t = Instant::now();
    for c in loaded.comparison.failures() {
        result.failures.push(match c.status {
            TableStatus::Missing => format!(
                "'{}': table {} is missing from the restored database (the backup recorded {} rows)",
                s.name,
                c.table,
                c.backed_up.unwrap_or(0)
            ),
            _ => format!(
                "'{}': table {} has {} rows in the restored database, the backup recorded {}",
                s.name,
                c.table,
                c.restored.unwrap_or(0),
                c.backed_up.unwrap_or(0)
            ),
        });
    }
    let mut probes = Vec::new();
    if !d.probes.is_empty() {
        match target.connect() {
            Err(e) => result
                .failures
                .push(format!("'{}': the probes could not run: {e}", s.name)),
            Ok(mut session) => {
                for sql in &d.probes {
                    let probe = match session.probe(sql) {
                        Ok((ok, value)) => ProbeResult {
                            sql: sql.clone(),
                            ok,
                            value: Some(value),
                            error: None,
                        },
                        Err(e) => ProbeResult {
                            sql: sql.clone(),
                            ok: false,
                            value: None,
                            error: Some(e.to_string()),
                        },
                    };
                    if !probe.ok {
                        result.failures.push(match (&probe.error, &probe.value) {
                            (Some(e), _) => format!("'{}': probe `{sql}` failed: {e}", s.name),
                            (None, v) => format!(
                                "'{}': probe `{sql}` returned {}; it must return true or a number above 0",
                                s.name,
                                v.as_deref().unwrap_or("nothing")
                            ),
                        });
                    }
                    probes.push(probe);
                }
                session.close();
            }
        }
    }
    result.check_seconds = loaded.check_seconds + t.elapsed().as_secs_f64();
    result.database = Some(DatabaseCheck {
        target: d.address.to_string(),
        prepared: loaded.prepared,
        sql_bytes: loaded.bytes,
        counts_recorded: loaded.comparison.recorded,
        tables: loaded.comparison.tables,
        probes,
    });
    Ok(())
}

/// Decrypts and decompresses a database stream to its end (no staging database for it).
fn read_through(
    spool: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    keys: &Keys<'_>,
    result: &mut SourceResult,
) -> anyhow::Result<()> {
    let stream = crate::restore::open_checked(spool, m, s, keys.identities, keys.identity_file)?;
    let busy = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut timed = Timed::new(stream, busy.clone());
    let n = io::copy(&mut timed, &mut io::sink()).map_err(|e| {
        anyhow!(e).context(format!(
            "the drill could not read '{}' of snapshot {} to its end",
            s.name, m.id
        ))
    })?;
    result.restore_seconds = t.elapsed().as_secs_f64();
    result.decrypt_decompress_seconds = busy_seconds(&busy);
    if n != s.plaintext_bytes {
        result.failures.push(format!(
            "'{}': the stream decompressed to {n} bytes, the manifest records {}",
            s.name, s.plaintext_bytes
        ));
    }
    Ok(())
}

/// Asks the staging application, every 2 s until `timeout`, for the expected answer.
fn http_probe(http: &DrillHttp) -> HttpResult {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use secrecy::ExposeSecret;

    // A query string may carry a key: it is not shown.
    let shown = match http.url.split_once('?') {
        Some((base, _)) => format!("{}?…", crate::config::redact_url(base)),
        None => crate::config::redact_url(&http.url),
    };
    let started = Instant::now();
    let mut result = HttpResult {
        url: shown.clone(),
        ok: false,
        status: None,
        attempts: 0,
        seconds: 0.0,
        error: None,
    };
    let token = match http
        .token
        .as_ref()
        .map(crate::config::SecretRef::load)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            result.error = Some(format!("cannot read drill.http's token: {e}"));
            return result;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    rt.block_on(async {
        let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b.https_or_http().enable_http1().build(),
            Err(e) => {
                result.error = Some(format!("no TLS roots: {e}"));
                return;
            }
        };
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let deadline = started + http.timeout;
        loop {
            result.attempts += 1;
            let mut request = hyper::Request::get(http.url.as_str())
                .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")))
                .header("accept", "application/json, text/plain, */*");
            if let Some(t) = &token {
                request = request.header("authorization", format!("token {}", t.expose_secret()));
            }
            let request = match request.body(Empty::new()) {
                Ok(r) => r,
                Err(_) => {
                    result.error =
                        Some("drill.http.url or its token is not valid in a request".into());
                    return;
                }
            };
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match tokio::time::timeout(left, client.request(request)).await {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    result.status = Some(status);
                    let body = tokio::time::timeout(left, response.into_body().collect())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                        .unwrap_or_default();
                    let body_ok = http
                        .expect_body
                        .as_deref()
                        .is_none_or(|want| body.contains(want));
                    if status == http.expect_status && body_ok {
                        result.ok = true;
                        result.error = None;
                        break;
                    }
                    let snippet: String = body.chars().take(200).collect();
                    result.error = Some(if status == http.expect_status {
                        format!(
                            "the answer ({status}) does not contain {:?}; it began {:?}",
                            http.expect_body.as_deref().unwrap_or(""),
                            snippet
                        )
                    } else {
                        format!(
                            "it answered {status}, expected {}; the answer began {snippet:?}",
                            http.expect_status
                        )
                    });
                }
                Ok(Err(e)) => result.error = Some(format!("cannot reach it: {e}")),
                Err(_) => result.error = Some("no answer in time".into()),
            }
            if Instant::now() + Duration::from_secs(2) >= deadline || crate::shutdown::requested() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    result.seconds = started.elapsed().as_secs_f64();
    if let Some(e) = &mut result.error {
        *e = format!(
            "{e} (after {} attempt{} in {:.0} s)",
            result.attempts,
            if result.attempts == 1 { "" } else { "s" },
            result.seconds
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_folder_is_used_only_when_it_is_new_empty_or_marked() {
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("drill");
        prepare_staging(&fresh).unwrap();
        assert!(fresh.join(MARKER).is_file());
        prepare_staging(&fresh).unwrap();
        let foreign = t.path().join("site");
        fs::create_dir_all(&foreign).unwrap();
        fs::write(foreign.join("important.txt"), "x").unwrap();
        let err = prepare_staging(&foreign).unwrap_err().to_string();
        assert!(err.contains("did not put there"), "{err}");
        assert!(foreign.join("important.txt").is_file());
    }

    #[test]
    fn file_checks_never_follow_a_symlink_out_of_the_folder() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("files");
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(dir.join("a/f"), "x").unwrap();
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("l")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), dir.join("s")).unwrap();
        let bar = Progress::bytes("t", None);
        let mut buf = vec![0u8; 1024];
        let got = hash_beneath(&dir, Path::new("a/f"), &mut buf, &bar).unwrap();
        assert_eq!(got, hex::encode(Sha256::digest(b"x")));
        for (path, why) in [
            ("l/secret", "below a symlink"),
            ("s", "is a symlink"),
            ("../outside/secret", "outside the folder"),
            ("a/missing", "is missing"),
        ] {
            let err = hash_beneath(&dir, Path::new(path), &mut buf, &bar).unwrap_err();
            assert!(err.contains(why), "{path}: {err}");
        }
    }

    #[test]
    fn read_only_trees_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), "x").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&t.path().join("a")).unwrap();
        assert!(!t.path().join("a").exists());
    }
}
