//! The backup engine: every source → one stream each (gzip, age, parts, sha256) → the
//! signed manifest last. Called by `coffer backup` and by the daemon's backup job. A folder
//! source is a full or a differential against its last full (`folder.rs`).

mod folder;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use anyhow::anyhow;
use chrono::Utc;

use crate::config::{Config, SecretRef, SourceConfig, SourceKind};
use crate::database::{Database, Session};
use crate::pipeline::{EncodeError, EncodeOptions, encode_stream};
use crate::process::{DumpError, DumpOutcome};
use crate::snapshot::{
    self, BenchRecord, ChecksumsRecord, DatabaseInfo, DifferentialRecord, FORMAT_NAME, Manifest,
    SnapshotId, SourceRecord,
};
use crate::source::index::PendingIndex;
use crate::source::{
    Against, DirectorySource, Excludes, MysqlSource, PostgresSource, SqliteSource, Warning,
};

use crate::store::Store;
pub use folder::FolderChoice;

/// Where a backup failed: the context of its error, read by alerts.
#[derive(Debug)]
pub struct Failed {
    pub source: Option<String>,
    pub stage: &'static str,
    /// The id the snapshot would have had.
    pub snapshot: String,
    message: String,
}

impl Failed {
    fn committing(id: &SnapshotId) -> Failed {
        Failed {
            source: None,
            stage: "committing the snapshot",
            snapshot: id.to_string(),
            message: format!("no snapshot was written ({id})"),
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a finished backup did.
#[derive(Debug)]
pub struct BackupReport {
    pub manifest: Manifest,
    /// Per source, the paths that had problems (not in the manifest, which names no file).
    pub warnings: Vec<(String, Warning)>,
    pub seconds: f64,
    /// Unfinished snapshots of earlier runs removed after this one.
    pub swept: Vec<String>,
    /// The signing key this backup made (the first backup without `[signing]`): its public
    /// half must reach `trusted_signers` on the hosts that restore.
    pub new_signing_key: Option<crate::signing::Signer>,
    /// Seconds spent signing the manifest.
    pub signing_seconds: f64,
    /// Each folder source: full or differential, and why.
    pub folders: Vec<FolderChoice>,
    /// Sites of a `frappe-bench` source that the previous snapshot holds and this one does
    /// not: no longer under `sites/` (and not excluded). Reported and alerted, once.
    pub gone_sites: Vec<GoneSite>,
}

/// A site of a bench that the previous snapshot holds and the bench no longer does.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GoneSite {
    pub bench: String,
    pub site: String,
    /// The newest snapshot that holds it.
    pub last_snapshot: String,
}

impl std::fmt::Display for GoneSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "site '{}' of frappe-bench '{}' is no longer in the bench, so it was not backed \
             up; snapshot {} is its newest backup (kept by retention like any other). If it \
             was removed on purpose, add it to exclude_sites to say so",
            self.site, self.bench, self.last_snapshot
        )
    }
}

/// The sites of each `frappe-bench` source that the newest trusted snapshot holds and
/// `expanded` does not (excluded sites are left out on purpose, not gone). A store that
/// cannot be read for it only costs the comparison (logged).
fn gone_sites(config: &Config, store: &dyn Store, expanded: &[SourceConfig]) -> Vec<GoneSite> {
    let benches: Vec<(&str, &[String])> = config
        .sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceKind::FrappeBench { exclude_sites, .. } => {
                Some((s.name.as_str(), exclude_sites.as_slice()))
            }
            _ => None,
        })
        .collect();
    if benches.is_empty() {
        return Vec::new();
    }
    let previous = match snapshot::newest_trusted(store, &config.trusted()) {
        Ok(Some(m)) => m,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(
                "could not read the previous snapshot to compare the benches' sites: {e}"
            );
            return Vec::new();
        }
    };
    let sites_of = |records: &mut dyn Iterator<Item = &BenchRecord>, bench: &str| {
        records
            .filter(|b| b.bench == bench)
            .filter_map(|b| b.site.clone())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let mut gone = Vec::new();
    for (bench, excluded) in benches {
        let now = sites_of(&mut expanded.iter().filter_map(|s| s.bench.as_ref()), bench);
        let before = sites_of(
            &mut previous.sources.iter().filter_map(|s| s.bench.as_ref()),
            bench,
        );
        for site in before.difference(&now) {
            if !excluded.contains(site) {
                gone.push(GoneSite {
                    bench: bench.to_string(),
                    site: site.clone(),
                    last_snapshot: previous.id.to_string(),
                });
            }
        }
    }
    for g in &gone {
        tracing::warn!(bench = g.bench, site = g.site, "{g}");
    }
    gone
}

/// The sources to back up, with presets (frappe) expanded into their parts.
///
/// # Errors
/// When a preset cannot be read, or an expanded name clashes with another source.
pub fn expand_sources(
    configured: &[crate::config::SourceConfig],
) -> anyhow::Result<Vec<crate::config::SourceConfig>> {
    let mut out: Vec<crate::config::SourceConfig> = Vec::new();
    for s in configured {
        let parts = s.expanded()?;
        for p in parts {
            if out.iter().any(|o| o.name == p.name) {
                anyhow::bail!(
                    "source name '{}' is used twice once the frappe preset '{}' is expanded; \
                     rename one of them",
                    p.name,
                    s.name
                );
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// What a source reports besides its bytes.
struct SourceExtras {
    entries: Option<crate::snapshot::EntryCounts>,
    file_bytes: Option<u64>,
    /// Directory sources: every file's sha256, stored as a stream of its own.
    checksums: Option<crate::checksums::ChecksumList>,
    warnings: Vec<Warning>,
    /// The dump tool and its version, for database sources.
    tool: Option<(String, Option<String>)>,
    /// What a dump that counted its own rows recorded (the built-in SQLite dump).
    database: Option<DatabaseInfo>,
    /// A folder's stream: full or differential, and the new full's index to commit.
    folder: Option<FolderOutcome>,
}

/// What became of a folder source's stream.
struct FolderOutcome {
    choice: FolderChoice,
    differential: Option<DifferentialRecord>,
    index: Option<PendingIndex>,
}

/// The extras of a finished database dump; the tool's stderr notices are logged.
fn dumped(
    source: &str,
    tool: &str,
    version: &Option<String>,
    done: DumpOutcome,
) -> anyhow::Result<SourceExtras> {
    if !done.stderr.is_empty() {
        tracing::warn!(source, "{tool} said: {}", done.stderr);
    }
    Ok(SourceExtras {
        entries: None,
        file_bytes: None,
        checksums: None,
        warnings: Vec::new(),
        tool: Some((tool.to_string(), version.clone())),
        database: None,
        folder: None,
    })
}

/// A database source's pre-flight: its server version and row counts, read through sqlx.
struct Preflight {
    /// Held open through the dump when it exported the snapshot the dump reads.
    session: Session,
    snapshot: Option<String>,
    info: DatabaseInfo,
}

impl Preflight {
    /// Ends the session once the dump is done (releasing the snapshot it exported). After a
    /// good dump, counts read before it are read again, to tell quiet tables (which a restore
    /// must match exactly) from tables written to meanwhile.
    fn finish(self, source: &SourceConfig, dumped: bool) -> DatabaseInfo {
        let Preflight {
            mut session,
            mut info,
            ..
        } = self;
        if info.counted == "before-dump" && dumped {
            match session.row_counts(source.exact_count_limit) {
                Ok(after) => {
                    for t in info.tables.iter_mut().filter(|t| t.exact) {
                        t.rows_after = after
                            .iter()
                            .find(|a| a.name == t.name && a.exact)
                            .map(|a| a.rows);
                    }
                }
                Err(e) => tracing::warn!(
                    source = source.name,
                    "could not count the rows again after the dump: {e}"
                ),
            }
        }
        session.close();
        info
    }
}

/// Connects to a database source (a wrong password or an unreachable server fails here, with
/// sqlx's clear message, before any dump starts) and reads what the manifest records of it.
fn preflight(source: &SourceConfig) -> anyhow::Result<Option<Preflight>> {
    if let SourceKind::Sqlite {
        dump_tool: None, ..
    } = source.kind
    {
        // The built-in dump counts rows inside its own read transaction.
        return Ok(None);
    }
    let Some((address, password)) = source.kind.database() else {
        return Ok(None);
    };
    let password = password
        .map(SecretRef::load)
        .transpose()
        .map_err(|e| anyhow!(DumpError::Secret(e)))?;
    let mut session = Database { address, password }.connect()?;
    let server_version = session.server_version()?;
    let snapshot = session.export_snapshot();
    let tables = session.row_counts(source.exact_count_limit)?;
    let counted = if snapshot.is_some() {
        "snapshot"
    } else {
        "before-dump"
    };
    tracing::info!(
        source = source.name,
        tables = tables.len(),
        counted,
        "{server_version}"
    );
    Ok(Some(Preflight {
        session,
        snapshot,
        info: DatabaseInfo {
            server_version,
            counted: counted.to_string(),
            tables,
        },
    }))
}

/// An `anyhow::Error` as a `std::error::Error`, so any source can run in the pipeline.
#[derive(Debug)]
struct AnyError(anyhow::Error);

impl std::fmt::Display for AnyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::error_chain(&self.0))
    }
}

impl std::error::Error for AnyError {}

impl From<std::io::Error> for AnyError {
    fn from(e: std::io::Error) -> Self {
        AnyError(e.into())
    }
}

/// Backs up every configured source into one new snapshot of `store`.
///
/// # Errors
/// Any source or store failure; then no manifest is written, so no snapshot exists, and the
/// parts already stored are removed (or swept by a later run if even that fails).
pub fn backup(
    config: &Config,
    store: &dyn Store,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<BackupReport> {
    backup_waiting(config, store, progress, std::time::Duration::ZERO, false)
}

/// As `backup`, waiting up to `wait` for another job to release the lock; `force_full`
/// makes every folder source a full (`coffer backup --full`).
///
/// # Errors
/// As `backup`.
pub fn backup_waiting(
    config: &Config,
    store: &dyn Store,
    progress: &(dyn Fn(u64) + Sync),
    wait: std::time::Duration,
    force_full: bool,
) -> anyhow::Result<BackupReport> {
    if config.sources.is_empty() {
        anyhow::bail!(
            "no [[source]] is configured in {}: nothing to back up (a config without sources \
             serves restores and drills only)",
            config.path.display()
        );
    }
    let _lock = crate::lock::lock_state_for(&config.state_dir, "backup", wait)?;
    // The key first: a backup that could not be signed would be refused by every reader.
    let (signing_key, made) = crate::signing::SigningKey::load_or_create(&config.signing_key)
        .map_err(|e| {
            anyhow!(e).context(
                "the backup cannot sign its snapshot, so no reader would trust it; nothing was \
                 backed up",
            )
        })?;
    let new_signing_key = made.then(|| signing_key.public());
    let started = Instant::now();
    let created = Utc::now();
    // Another host sharing the store could (rarely) draw the same id: never write into a
    // folder that already holds anything.
    let mut id = SnapshotId::new(created);
    // A differential's id must sort after its full's (ids within one second sort by their
    // random tail): a backup right after a full waits for the next second.
    let newest_full = folder::newest_index(&config.state_dir);
    while !store.list(&id.prefix())?.is_empty() || newest_full.as_ref().is_some_and(|f| *f >= id) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        id = SnapshotId::new(Utc::now());
    }
    let streaming = Streaming {
        config,
        store,
        id: &id,
        prefix: id.prefix(),
        opts: EncodeOptions {
            part_size: config.store.part_size,
            compress: config.compression,
        },
        progress,
        trusted: config.trusted(),
        force_full,
    };
    let expanded = expand_sources(&config.sources)?;
    let gone_sites = gone_sites(config, store, &expanded);
    let mut sources = Vec::new();
    let mut warnings = Vec::new();
    let mut folders = Vec::new();
    let mut indexes = Vec::new();
    for source in &expanded {
        // Earlier sources may be uploading still: every failure goes through discard.
        let (record, source_warnings, folder) = streaming
            .source(source)
            .map_err(|e| discard(store, &id, e))?;
        warnings.extend(
            source_warnings
                .into_iter()
                .map(|w| (source.name.clone(), w)),
        );
        sources.push(record);
        if let Some(f) = folder {
            folders.push(f.choice);
            indexes.extend(f.index.map(|i| (source.name.clone(), i)));
        }
    }
    let manifest = Manifest {
        format: FORMAT_NAME.to_string(),
        format_version: Manifest::version_for(&sources),
        id: id.clone(),
        created,
        // From the monotonic clock: a wall clock stepped back during the backup (NTP at boot)
        // must not make `finished` precede `created`, which readers refuse.
        finished: created + chrono::TimeDelta::from_std(started.elapsed()).unwrap_or_default(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        coffer_version: env!("CARGO_PKG_VERSION").to_string(),
        recipients: config
            .encryption
            .recipients
            .iter()
            .map(ToString::to_string)
            .collect(),
        sources,
    };
    let signing = commit(store, &manifest, &signing_key).map_err(|e| discard(store, &id, e))?;
    // Only now may a new full's index be what the next differential is made against: a
    // backup killed before this point leaves the index of the previous full current.
    for (source, index) in indexes {
        folder::commit_index(&config.state_dir, &source, index);
    }
    // Stopping: the snapshot is written; the sweep can wait for the next backup.
    let swept = if crate::shutdown::requested() {
        Vec::new()
    } else {
        snapshot::sweep_orphans(store, config.store.orphan_grace, SystemTime::now()).unwrap_or_else(
            |e| {
                tracing::warn!("could not sweep unfinished snapshots: {e}");
                Vec::new()
            },
        )
    };
    Ok(BackupReport {
        manifest,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
        swept,
        new_signing_key,
        signing_seconds: signing.as_secs_f64(),
        folders,
        gone_sites,
    })
}

/// Where a backup's streams go: the new snapshot's folder in the store.
struct Streaming<'a> {
    config: &'a Config,
    store: &'a dyn Store,
    id: &'a SnapshotId,
    prefix: String,
    opts: EncodeOptions,
    progress: &'a (dyn Fn(u64) + Sync),
    /// Who signs this host's snapshots: a differential's base must be one of them.
    trusted: crate::signing::Trusted,
    force_full: bool,
}

impl Streaming<'_> {
    /// A failure of `source` at `stage`, as alerts and the history read it.
    fn failed(&self, source: &SourceConfig, stage: &'static str, before_dump: bool) -> Failed {
        // A bench's site is named as the operator knows it, not only by its source name.
        let what = match &source.bench {
            Some(BenchRecord {
                bench,
                site: Some(site),
            }) => format!(
                "site '{site}' of frappe-bench '{bench}' (source '{}')",
                source.name
            ),
            _ => format!("source '{}'", source.name),
        };
        Failed {
            source: Some(source.name.clone()),
            stage,
            snapshot: self.id.to_string(),
            message: if before_dump {
                format!("backup of {what} failed before its dump; no snapshot was written")
            } else {
                format!("backup of {what} failed; no snapshot was written")
            },
        }
    }

    /// Streams one source into the snapshot (and a folder's checksum list beside it); its
    /// record for the manifest, the paths that had problems, and for a folder, full or
    /// differential and the new full's index.
    ///
    /// # Errors
    /// With a `Failed` context; the caller discards the snapshot.
    fn source(
        &self,
        source: &SourceConfig,
    ) -> anyhow::Result<(SourceRecord, Vec<Warning>, Option<FolderOutcome>)> {
        let mut pre = preflight(source)
            .map_err(|e| e.context(self.failed(source, "connecting to the database", true)))?;
        let snapshot = pre.as_ref().and_then(|p| p.snapshot.clone());
        let result = self.encode_source(source, snapshot);
        // The exported snapshot (if any) is released only now that the dump has read it.
        let preflight = pre.take().map(|p| p.finish(source, result.is_ok()));
        let (encoded, mut extras) = result.map_err(|e| {
            let (err, stage) = match e {
                EncodeError::Source(AnyError(e)) => (e, "reading the source"),
                sink @ EncodeError::Sink { .. } => (anyhow!(sink), "storing the parts"),
            };
            err.context(self.failed(source, stage, false))
        })?;
        // A folder's file list with each file's sha256, encrypted as a stream of its own
        // (the manifest never names a file): what a drill checks restored files against.
        let checksums = match extras.checksums.take() {
            None => None,
            Some(list) => Some(
                self.checksums(source, list)
                    .map_err(|e| e.context(self.failed(source, "storing the parts", false)))?,
            ),
        };
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for w in &extras.warnings {
            *counts.entry(w.kind.as_str().to_string()).or_default() += 1;
        }
        let (dump_tool, dump_tool_version) = match extras.tool {
            Some((tool, version)) => (Some(tool), version),
            None => (None, None),
        };
        let record = SourceRecord {
            name: source.name.clone(),
            kind: crate::snapshot::StreamKind::of_source(source.kind_name())
                .expect("presets are expanded before a backup streams a source"),
            stream: source.stream_name(),
            plaintext_bytes: encoded.plaintext_bytes,
            compressed_bytes: encoded.compressed_bytes,
            encrypted_bytes: encoded.encrypted_bytes,
            sha256: encoded.sha256,
            parts: encoded.parts,
            entries: extras.entries,
            file_bytes: extras.file_bytes,
            checksums,
            warnings: counts,
            dump_tool,
            dump_tool_version,
            database: extras.database.or(preflight),
            differential: extras.folder.as_mut().and_then(|f| f.differential.take()),
            bench: source.bench.clone(),
        };
        Ok((record, extras.warnings, extras.folder))
    }

    /// Encodes one stream of this snapshot from what `produce` writes.
    fn encode<T>(
        &self,
        stream: &str,
        progress: &(dyn Fn(u64) + Sync),
        produce: impl FnOnce(&mut crate::pipeline::BlockWriter<'_>) -> Result<T, AnyError>,
    ) -> Result<(crate::pipeline::EncodedStream, T), EncodeError<AnyError>> {
        encode_stream(
            self.store,
            &self.prefix,
            stream,
            &self.config.encryption.recipients,
            &self.opts,
            progress,
            produce,
        )
    }

    /// Writes the source's tar or dump through the pipeline.
    fn encode_source(
        &self,
        source: &SourceConfig,
        pg_snapshot: Option<String>,
    ) -> Result<(crate::pipeline::EncodedStream, SourceExtras), EncodeError<AnyError>> {
        let stream = source.stream_name();
        let encode = |produce: &mut dyn FnMut(
            &mut crate::pipeline::BlockWriter<'_>,
        ) -> anyhow::Result<SourceExtras>| {
            self.encode(&stream, self.progress, |w| produce(w).map_err(AnyError))
        };
        match &source.kind {
            SourceKind::Frappe { .. } | SourceKind::FrappeBench { .. } => {
                Err(EncodeError::Source(AnyError(anyhow!(
                    "source '{}': a frappe preset left unexpanded",
                    source.name
                ))))
            }
            SourceKind::Directory {
                path,
                exclude,
                only,
                generated,
            } => {
                let excludes = Excludes::new(exclude)
                    .map_err(|e| EncodeError::Source(AnyError(anyhow!(e))))?;
                let dir = DirectorySource::new(path, excludes)
                    .with_only(only.clone())
                    .with_generated(generated.clone());
                let plan = folder::plan(
                    self.config,
                    self.store,
                    &self.trusted,
                    &folder::Folder {
                        name: &source.name,
                        path,
                        exclude,
                        only,
                        full_every: source.full_every,
                    },
                    self.id,
                    self.force_full,
                )
                .map_err(|e| EncodeError::Source(AnyError(e)))?;
                let mut plan = Some(plan);
                encode(&mut |w| {
                    let plan = plan.take().expect("a stream is produced once");
                    folder_stream(&source.name, &dir, plan, w)
                })
            }
            SourceKind::Postgres {
                url,
                password,
                no_owner,
                dump_tool,
            } => {
                let pg = PostgresSource {
                    url: url.clone(),
                    password: password.clone(),
                    no_owner: *no_owner,
                    dump_tool: dump_tool.clone(),
                    snapshot: pg_snapshot,
                };
                let version = pg.tool_version();
                encode(&mut |w| dumped(&source.name, "pg_dump", &version, pg.write_dump(w)?))
            }
            SourceKind::Sqlite { path, dump_tool } => {
                let db = SqliteSource {
                    path: path.clone(),
                    dump_tool: dump_tool.clone(),
                };
                let (tool, version) = db.tool_version();
                match dump_tool {
                    Some(shell) => encode(&mut |w| {
                        dumped(&source.name, &tool, &version, db.write_dump(shell, w)?)
                    }),
                    None => encode(&mut |w| {
                        let (_, info) = crate::source::sqlite_dump(path, w)?;
                        Ok(SourceExtras {
                            entries: None,
                            file_bytes: None,
                            checksums: None,
                            warnings: Vec::new(),
                            tool: Some((tool.clone(), version.clone())),
                            database: Some(info),
                            folder: None,
                        })
                    }),
                }
            }
            SourceKind::Mysql {
                url,
                password,
                dump_tool,
            } => {
                let my = MysqlSource {
                    url: url.clone(),
                    password: password.clone(),
                    dump_tool: dump_tool.clone(),
                };
                let version = my.tool_version();
                let tool = my.tool();
                let tool = tool.file_name().map_or_else(
                    || tool.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                encode(&mut |w| dumped(&source.name, &tool, &version, my.write_dump(w)?))
            }
        }
    }

    /// Stores a folder's checksum list as its own stream.
    fn checksums(
        &self,
        source: &SourceConfig,
        mut list: crate::checksums::ChecksumList,
    ) -> anyhow::Result<ChecksumsRecord> {
        let stream = format!("{}.sha256.gz.age", source.name);
        let (c, ()) = self
            .encode(&stream, &|_| {}, |w| {
                list.write_to(w).map_err(AnyError::from)
            })
            .map_err(|e| anyhow!(e))?;
        Ok(ChecksumsRecord {
            stream,
            files: list.lines(),
            plaintext_bytes: c.plaintext_bytes,
            compressed_bytes: c.compressed_bytes,
            encrypted_bytes: c.encrypted_bytes,
            sha256: c.sha256,
            parts: c.parts,
        })
    }
}

/// Walks a folder into `out` as `plan` says: a full (writing its index) or a differential.
fn folder_stream(
    name: &str,
    dir: &DirectorySource,
    plan: folder::Plan,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<SourceExtras> {
    let (walk, choice, differential, index) = match plan {
        folder::Plan::Full { why, mut index } => {
            let walk = dir.write_tar_against(out, Against::Full(index.as_deref_mut()))?;
            let pending = index.map(|i| (*i).finish()).transpose()?;
            let choice = FolderChoice {
                source: name.to_string(),
                kind: "full",
                base: None,
                why,
            };
            (walk, choice, None, pending)
        }
        folder::Plan::Differential {
            base,
            base_sha256,
            mut index,
        } => {
            let walk = dir.write_tar_against(out, Against::Differential(&mut index))?;
            let changed_files = walk.counts.files - walk.unchanged_files;
            let changed_bytes = walk.file_bytes - walk.unchanged_bytes;
            let choice = FolderChoice {
                source: name.to_string(),
                kind: "differential",
                base: Some(base.to_string()),
                why: format!(
                    "{changed_files} new or changed files ({}) since the full {base}",
                    crate::units::human_bytes(changed_bytes)
                ),
            };
            let record = DifferentialRecord {
                base,
                base_sha256,
                changed_files,
                changed_bytes,
            };
            (walk, choice, Some(record), None)
        }
    };
    tracing::info!(source = name, kind = choice.kind, "{}", choice.why);
    Ok(SourceExtras {
        entries: Some(walk.counts),
        file_bytes: Some(walk.file_bytes),
        checksums: Some(walk.checksums),
        warnings: walk.warnings,
        tool: None,
        database: None,
        folder: Some(FolderOutcome {
            choice,
            differential,
            index,
        }),
    })
}

/// Commits a snapshot: every part handed to the store stored (uploads may still be running)
/// and listed with its size (a store that lost a part, or a sweep from another host, must
/// not produce a manifest naming missing parts), no stop requested, the manifest as every
/// reader will check it, then its signature and the manifest itself. How long signing took.
///
/// # Errors
/// With a `Failed` context; the caller discards the snapshot.
fn commit(
    store: &dyn Store,
    manifest: &Manifest,
    key: &crate::signing::SigningKey,
) -> anyhow::Result<std::time::Duration> {
    let id = &manifest.id;
    store
        .sync()
        .map_err(|e| anyhow!(e).context(Failed::committing(id)))?;
    confirm_parts(store, &id.prefix(), &manifest.sources)
        .map_err(|e| e.context(Failed::committing(id)))?;
    // A stop requested while the last parts were stored: it never becomes a snapshot.
    crate::shutdown::check().map_err(|e| anyhow!(e).context(Failed::committing(id)))?;
    // Refused here, the backup fails loudly instead of leaving a snapshot nobody can restore.
    if let Err(why) = manifest.check_at(Utc::now()) {
        return Err(anyhow!(
            "the manifest of snapshot {id} would be refused by every reader: {why}; is this \
             host's clock right?"
        )
        .context(Failed::committing(id)));
    }
    snapshot::write_manifest(store, manifest, key).map_err(|e| {
        anyhow!(e).context(Failed {
            message: format!(
                "writing the manifest of snapshot {id} failed; no snapshot was written"
            ),
            ..Failed::committing(id)
        })
    })
}

/// Checks by listing that every part of every stream is stored with its recorded size.
fn confirm_parts(store: &dyn Store, prefix: &str, sources: &[SourceRecord]) -> anyhow::Result<()> {
    let listed = store.list(prefix)?;
    for s in sources.iter().flat_map(SourceRecord::streams) {
        for p in &s.parts {
            let key = format!("{prefix}{}", p.name);
            match listed.iter().find(|o| o.key == key) {
                Some(o) if o.size == p.size => {}
                Some(o) => anyhow::bail!(
                    "{store} holds {} bytes for {key} just after it stored {}",
                    o.size,
                    p.size
                ),
                None => anyhow::bail!("{store} lost {key} just after storing it"),
            }
        }
    }
    Ok(())
}

/// Removes a failed backup's objects, the manifest first, so a half-removed snapshot is never
/// visible, and returns `err` (the cause) — with a warning attached only if a manifest is
/// still there afterwards. Parts that cannot be removed are left to the sweep.
fn discard(store: &dyn Store, id: &SnapshotId, err: anyhow::Error) -> anyhow::Error {
    // Stopping (SIGTERM): the process must exit within its grace, so the parts get a few
    // seconds of clean-up; what is left is swept by a later backup. No manifest exists.
    let stopping = crate::shutdown::requested();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    // Uploads still running would store parts after the clean-up: let them end first
    // (stopping, they end at their next chunk).
    let _ = store.sync();
    let manifest = id.manifest_key();
    if let Err(e) = store.delete(&manifest) {
        tracing::warn!("could not remove {manifest} of the failed backup: {e}");
        if store.get(&manifest).is_ok() {
            return err.context(format!(
                "snapshot {id} may be visible but incomplete and could not be removed; run \
                 'coffer verify {id}' and delete snapshots/{id}/ by hand if it fails"
            ));
        }
    }
    if let Ok(objects) = store.list(&id.prefix()) {
        for o in objects {
            if stopping && Instant::now() > deadline {
                tracing::warn!(
                    "stopping: left the rest of {id}'s parts for a later backup to sweep"
                );
                break;
            }
            if let Err(e) = store.delete(&o.key) {
                tracing::warn!("could not remove {} of the failed backup: {e}", o.key);
            }
        }
    }
    err
}

/// What to tell the operator once, when the first backup made the host's signing key.
pub fn new_key_notice(config: &Config, key: &crate::signing::Signer) -> String {
    format!(
        "note: this backup made the host's signing key {} ({}), which signs every snapshot.\n\
         \x20 Keep a copy of it beside the age identity (off this host), and put this line in\n\
         \x20 encryption.trusted_signers on every host that restores or drills:\n\
         \x20   \"{}\"\n\
         \x20 Those hosts restore only snapshots signed by a key they trust.",
        config.signing_key,
        key.fingerprint(),
        key.openssh()
    )
}

/// What the run history keeps of a backup.
pub fn finish_of(report: &BackupReport) -> crate::catalog::Finish {
    crate::catalog::Finish {
        snapshot: Some(report.manifest.id.to_string()),
        bytes: Some(report.manifest.stored_bytes()),
        warnings: report.gone_sites.iter().map(ToString::to_string).collect(),
        ..crate::catalog::Finish::success()
    }
}
