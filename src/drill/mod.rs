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

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, DrillDatabase};
use crate::database::Database;
use crate::progress::Progress;
use crate::snapshot::{Bases, EntryCounts, Manifest, Resolved, SourceRecord};
use crate::staging::{Prepared, StagingOptions, TableCheck};
use crate::store::{LocalStore, Store};

mod area;
mod http;
mod restore;

use area::*;
use http::*;
use restore::*;

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
    pub kind: crate::snapshot::StreamKind,
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
    let store = crate::store::open(&config.store)?;
    let (identities, identity_file) =
        crate::keys::load_chosen(opts.identity, config.encryption.identity_file.as_deref())
            .context(
                "a drill decrypts the snapshot: run it on a host that holds the private key",
            )?;
    let resolved = resolve_snapshot(config, store.as_ref(), opts)?;
    let m = &resolved.manifest;
    // A differential's full is restored first: it must be there and trusted.
    let bases =
        crate::snapshot::read_bases(store.as_ref(), m, None, &config.trusted(), accept(opts))?;
    let staging = &config.drill.staging_dir;
    let _staging_lock = prepare_staging(staging)?;
    let targets = staging_targets(config, m)?;
    // What an earlier drill left is removed before the clock starts.
    for s in m.sources.iter().filter(|s| s.kind.is_folder()) {
        let dir = staging.join(&s.name);
        remove_tree(&dir).with_context(|| format!("emptying {} for the drill", dir.display()))?;
    }
    let spool = Spool::create(staging.join(SPOOL))?;
    check_space(staging, m, &bases)?;
    let started = Utc::now();
    let clock = Instant::now();
    let mut report = DrillReport::new(&resolved, started);

    let downloads = download_all(store.as_ref(), &spool.store, m, &bases)?;
    drop(lock);

    let course = Course {
        config,
        m,
        bases: &bases,
        spool: &spool.store,
        keys: Keys {
            identities: &identities,
            identity_file: &identity_file,
        },
        targets: &targets,
    };
    for (s, download_seconds) in m.sources.iter().zip(downloads) {
        crate::shutdown::check()?;
        course.restore_source(s, download_seconds, &mut report)?;
    }
    drop(spool);
    if let Some(http) = &config.drill.http {
        crate::shutdown::check()?;
        report.add_http(http_probe(http));
    }
    report.recovery_time_seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// The snapshot `opts` names, trusted (or, with `--allow-unsigned`, unsigned).
fn resolve_snapshot(
    config: &Config,
    store: &dyn Store,
    opts: &DrillOptions<'_>,
) -> anyhow::Result<Resolved> {
    Ok(crate::snapshot::resolve(
        store,
        opts.snapshot,
        &config.trusted(),
        accept(opts),
    )?)
}

/// Which snapshots (and bases) the drill may use.
fn accept(opts: &DrillOptions<'_>) -> crate::snapshot::Accept {
    if opts.allow_unsigned {
        crate::snapshot::Accept::TrustedOrUnsigned
    } else {
        crate::snapshot::Accept::Trusted
    }
}

/// Every `[[drill.database]]` with its staging database, each checked before hours of
/// downloading: the guards, the client, and that a database holding data is one a drill made.
fn staging_targets(
    config: &Config,
    m: &Manifest,
) -> anyhow::Result<Vec<(DrillDatabase, Database)>> {
    let known = known_targets(&config.state_dir);
    let mut targets = Vec::new();
    for d in drill_databases(config, m)? {
        let target = staging_target(config, m, &d, &known)?;
        targets.push((d, target));
    }
    Ok(targets)
}

/// The `[[drill.database]]` entries for `m`, each `{site}` template of a frappe-bench made
/// into one staging database per site database the snapshot holds (an entry naming a site's
/// own source comes first).
fn drill_databases(config: &Config, m: &Manifest) -> anyhow::Result<Vec<DrillDatabase>> {
    let configured = &config.drill.databases;
    let mut out: Vec<DrillDatabase> = configured
        .iter()
        .filter(|d| d.template.is_none())
        .cloned()
        .collect();
    for d in configured.iter().filter(|d| d.template.is_some()) {
        // A template serves the sites of its own engine (a bench mixing MariaDB and
        // PostgreSQL sites has one of each).
        let engine = d.address.engine().kind();
        let sites: Vec<(&str, &str)> = m
            .sources
            .iter()
            .filter(|s| s.kind.as_str() == engine)
            .filter_map(|s| {
                let b = s.bench.as_ref().filter(|b| b.bench == d.source)?;
                Some((s.name.as_str(), b.site.as_deref()?))
            })
            .collect();
        if sites.is_empty() {
            bail!(
                "[[drill.database]] source = \"{}\" (a {engine} url with {{site}}) names a \
                 frappe-bench, but snapshot {} holds no {engine} site database of a bench so \
                 named (it holds {}); fix drill.database.source or the url",
                d.source,
                m.id,
                m.sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for (source, site) in sites {
            if out.iter().any(|o| o.source == source) {
                continue;
            }
            let concrete = d.for_site(source, site).map_err(|why| {
                anyhow!(
                    "[[drill.database]] of frappe-bench '{}': the url for site '{site}' is not \
                     usable: {why}",
                    d.source
                )
            })?;
            let shown = concrete.address.to_string();
            if let Some(other) = out.iter().find(|o| o.address.to_string() == shown) {
                bail!(
                    "[[drill.database]] of frappe-bench '{}': '{source}' (site '{site}') and \
                     '{}' would both load into {shown}; give one of them a [[drill.database]] \
                     of its own",
                    d.source,
                    other.source
                );
            }
            out.push(concrete);
        }
    }
    Ok(out)
}

/// The staging database of `d`, refused when its source is not a database of `m`, when the
/// guards refuse it, or when it holds data that no drill put there.
fn staging_target(
    config: &Config,
    m: &Manifest,
    d: &DrillDatabase,
    known: &BTreeSet<String>,
) -> anyhow::Result<Database> {
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
    if s.kind.is_folder() {
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
    Ok(target)
}

/// Downloads every part of `m` into the spool and returns each source's download seconds.
/// Everything is downloaded first: a damaged part stops the drill before any staging target
/// is touched, naming every bad part.
fn download_all(
    store: &dyn Store,
    spool: &LocalStore,
    m: &Manifest,
    bases: &Bases,
) -> anyhow::Result<Vec<f64>> {
    let base_bytes: u64 = m
        .sources
        .iter()
        .filter_map(|s| bases.of(s))
        .map(|(_, b)| b.encrypted_bytes)
        .sum();
    let bar = Progress::bytes("download", Some(m.stored_bytes() + base_bytes));
    let mut problems = Vec::new();
    let mut downloads = Vec::new();
    for s in &m.sources {
        let t = Instant::now();
        // A differential's full first (its own stream: the checksums are the differential's).
        if let Some((bm, bs)) = bases.of(s) {
            problems.extend(download(store, spool, bm, bs, &bar)?);
        }
        for stream in s.streams() {
            problems.extend(download(store, spool, m, &stream, &bar)?);
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
        let message = format!(
            "the drill of snapshot {} stopped at the download: {}; {next}",
            m.id,
            listed.join("; ")
        );
        if problems.iter().any(crate::pipeline::PartProblem::is_damage) {
            return Err(crate::exit::Damaged::error(message));
        }
        bail!(message);
    }
    Ok(downloads)
}

impl DrillReport {
    /// A report with no source yet, for the drill of `resolved` that started at `started`.
    fn new(resolved: &Resolved, started: DateTime<Utc>) -> DrillReport {
        let m = &resolved.manifest;
        DrillReport {
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
            // Newer snapshots that are not trusted: planted, or the backup host signs with a
            // key this host does not trust (a lost state folder makes a new one). Either way
            // the drill is not proving what a restore of `latest` would have to be: it fails.
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
        }
    }

    /// Adds a restored source: its seconds to the stages, its failures to the drill's.
    fn add_source(&mut self, result: SourceResult) {
        self.stages.download += result.download_seconds;
        self.stages.decrypt_decompress += result.decrypt_decompress_seconds;
        self.stages.checks += result.check_seconds;
        self.failures.extend(result.failures.iter().cloned());
        self.sources.push(result);
    }

    /// Adds the HTTP probe's verdict.
    fn add_http(&mut self, result: HttpResult) {
        self.stages.checks += result.seconds;
        if !result.ok {
            self.failures.push(format!(
                "the HTTP probe of {} failed: {}",
                result.url,
                result.error.as_deref().unwrap_or("no answer")
            ));
        }
        self.http = Some(result);
    }
}

/// What restoring each source from the spool needs, once the parts are local.
struct Course<'a> {
    config: &'a Config,
    m: &'a Manifest,
    bases: &'a Bases,
    spool: &'a LocalStore,
    keys: Keys<'a>,
    targets: &'a [(DrillDatabase, Database)],
}

impl Course<'_> {
    /// Restores source `s` from the spool (extracted, loaded, or read to its end), checks it,
    /// and adds it to the report.
    fn restore_source(
        &self,
        s: &SourceRecord,
        download_seconds: f64,
        report: &mut DrillReport,
    ) -> anyhow::Result<()> {
        let mut result = SourceResult {
            name: s.name.clone(),
            kind: s.kind,
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
        if s.kind.is_folder() {
            self.restore_folder(s, &mut result, report)?;
        } else if let Some((d, target)) = self.targets.iter().find(|(d, _)| d.source == s.name) {
            self.load_into(s, d, target, &mut result, report)?;
        } else {
            read_through(self.spool, self.m, s, &self.keys, &mut result)?;
            report.notes.push(format!(
                "'{}' ({}) was decrypted and decompressed but not loaded: add a \
                 [[drill.database]] with source = \"{}\" to load it into a staging database \
                 and check its tables",
                s.name, s.kind, s.name
            ));
        }
        report.add_source(result);
        Ok(())
    }

    /// Extracts a folder into `<staging_dir>/<source>` and hashes its files.
    fn restore_folder(
        &self,
        s: &SourceRecord,
        result: &mut SourceResult,
        report: &mut DrillReport,
    ) -> anyhow::Result<()> {
        let dir = self.config.drill.staging_dir.join(&s.name);
        let layers = crate::restore::layers(self.m, s, self.bases)?;
        extract_folder(self.spool, &layers, &dir, &self.keys, result)?;
        let t = Instant::now();
        check_file_sums(
            self.spool,
            self.m,
            s,
            &dir,
            self.config.drill.check_files,
            &self.keys,
            result,
            &mut report.notes,
        )?;
        result.check_seconds += t.elapsed().as_secs_f64();
        report.stages.file_extract += result.restore_seconds;
        Ok(())
    }

    /// Loads a database source into its staging database `target` and compares its tables.
    fn load_into(
        &self,
        s: &SourceRecord,
        d: &DrillDatabase,
        target: &Database,
        result: &mut SourceResult,
        report: &mut DrillReport,
    ) -> anyhow::Result<()> {
        // Recorded before the load: a load cut short leaves tables a drill made, which the
        // next drill must be free to drop.
        remember_target(&self.config.state_dir, &target.address.to_string());
        load_database(
            self.config,
            self.spool,
            self.m,
            s,
            d,
            target,
            &self.keys,
            result,
        )?;
        if result
            .database
            .as_ref()
            .is_some_and(|db| !db.counts_recorded)
        {
            report.notes.push(format!(
                "'{}': snapshot {} records no row counts (an older coffer made it): its \
                 tables were loaded but not compared",
                s.name, self.m.id
            ));
        }
        report.stages.database_load += result.restore_seconds;
        Ok(())
    }
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
            if d.template.is_some() {
                // Which sites there are is known only once a drill reads its snapshot.
                return Ok(format!(
                    "one staging database per site of frappe-bench '{}' ({{site}} in the url: \
                     a site named 'site' gets {}); each is checked when a drill starts",
                    d.source, target.address
                ));
            }
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
fn staging_database(d: &DrillDatabase, source: &str) -> anyhow::Result<Database> {
    let password = d
        .password
        .as_ref()
        .map(crate::config::SecretRef::load)
        .transpose()
        .map_err(|e| {
            anyhow!("cannot read the password of the staging database for '{source}': {e}")
        })?;
    Ok(Database {
        address: d.address.clone(),
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

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
