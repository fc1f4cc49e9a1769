//! `coffer restore ID|latest --to DIR [--source NAME] [--force]`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};

use super::{human_bytes, load_config, load_identities};
use crate::cli::RestoreArgs;
use crate::pipeline::{find_part_problem, open_stream, read_ahead};
use crate::progress::Progress;
use crate::restore::{self, TarSummary};
use crate::snapshot::{Manifest, SourceRecord};
use crate::store::{self, Store};
use crate::verify::check_stream;

/// Fails unless `dir` is missing, or a folder this user owns that no one else can write to
/// and that is empty (or `force`); creates it (0700) if missing. A folder someone else owns
/// or can write to would let them read what is restored (site_config.json, private files)
/// or swap parts of it while coffer writes.
pub(crate) fn prepare_target(dir: &Path, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                bail!(
                    "restore target {} is not a folder (coffer does not follow a symlink there); \
                     name a new folder",
                    dir.display()
                );
            }
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me {
                bail!(
                    "restore target {} belongs to uid {}, not to the restoring user (uid {me}): \
                     its owner could read or change what is restored. Restore into a new \
                     folder (coffer creates it, mode 0700), then move it into place",
                    dir.display(),
                    meta.uid()
                );
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                bail!(
                    "restore target {} is mode {mode:04o}: others can write to it and swap what \
                     is restored. chmod go-w it, or restore into a new folder (coffer creates \
                     it, mode 0700)",
                    dir.display()
                );
            }
            if fs::read_dir(dir)
                .with_context(|| format!("reading restore target {}", dir.display()))?
                .next()
                .is_some()
                && !force
            {
                bail!(
                    "restore target {} is not empty; restore into an empty folder, or pass \
                     --force to write over what is there",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir(dir),
        Err(e) => Err(e).with_context(|| format!("reading restore target {}", dir.display())),
    }
}

/// Creates `dir` and its missing parents, mode 0700.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating restore target {}", dir.display()))
}

/// Checks up front, from a listing, that every part exists with its recorded size, so a
/// missing part is named before anything is written.
fn precheck(store: &dyn Store, m: &Manifest, source: &SourceRecord) -> anyhow::Result<()> {
    let prefix = m.id.prefix();
    let listed = store.list(&prefix)?;
    let mut problems = Vec::new();
    for part in &source.parts {
        match listed
            .iter()
            .find(|o| o.key == format!("{prefix}{}", part.name))
        {
            None => problems.push(format!("part {} is missing from the store", part.name)),
            Some(o) if o.size != part.size => problems.push(format!(
                "part {} has {} bytes, the manifest says {}",
                part.name, o.size, part.size
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "snapshot {} cannot be restored: {}; nothing was written. Restore an older snapshot \
             ('coffer list')",
            m.id,
            problems.join("; ")
        )
    }
}

pub fn run(config_path: &Path, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let store = store::from_config(&config.store)?;
    let (identities, identity_file) = load_identities(&config, args.identity.as_deref())?;
    let m = super::resolve_snapshot(&config, store.as_ref(), &args.snapshot, args.allow_unsigned)?;
    let to = match (&args.db_url, &args.to) {
        (Some(url), _) => {
            return restore_to_database(
                &config,
                store.as_ref(),
                &m,
                args,
                url,
                &identities,
                &identity_file,
            );
        }
        (None, Some(to)) => to.clone(),
        (None, None) => bail!("give --to DIR (or --db-url URL with --source NAME)"),
    };
    if let (Some(site), Some(name)) = (&args.bench, &args.source) {
        let files = super::bench::write_bench_layout(
            store.as_ref(),
            &m,
            name,
            site,
            &to,
            args.force,
            &crate::verify::DeepKeys {
                identities: &identities,
                identity_file: &identity_file,
            },
        )?;
        if args.json {
            let out = serde_json::json!({
                "id": m.id,
                "database": files.database,
                "public_files": files.public_files,
                "private_files": files.private_files,
                "site_config": files.site_config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "restored {} '{name}' for bench into {}:",
                m.id,
                to.display()
            );
            for f in [&files.database, &files.public_files, &files.private_files] {
                println!("  {}", f.display());
            }
            if let Some(f) = &files.site_config {
                println!("  {}", f.display());
            }
            println!(
                "then, in the bench folder:\n  bench --site {site} restore {} \\\n    \
                 --with-public-files {} \\\n    --with-private-files {}",
                files.database.display(),
                files.public_files.display(),
                files.private_files.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let sources: Vec<&SourceRecord> = match &args.source {
        Some(name) => vec![m.source(name)?],
        None => m.sources.iter().collect(),
    };
    for s in &sources {
        precheck(store.as_ref(), &m, s)?;
    }
    // Database dumps are written as DIR/<source>.sql files.
    let (dumps, sources): (Vec<&SourceRecord>, Vec<&SourceRecord>) =
        sources.into_iter().partition(|s| s.kind != "directory");
    let mut dump_files = Vec::new();
    for s in &dumps {
        let file = to.join(format!("{}.sql", s.name));
        if file.exists() && !args.force {
            bail!(
                "{} exists; choose another --to folder, or pass --force to replace it",
                file.display()
            );
        }
        dump_files.push((*s, file));
    }
    if !dumps.is_empty() {
        // Files land in it one by one (each refused if it exists): its owner is checked.
        prepare_target(&to, true)?;
    }
    // A lone directory source restores into DIR itself; otherwise each goes to DIR/<source>.
    let targets: Vec<(&SourceRecord, PathBuf)> = sources
        .iter()
        .map(|s| {
            let dir = if sources.len() == 1 && dumps.is_empty() {
                to.clone()
            } else {
                to.join(&s.name)
            };
            (*s, dir)
        })
        .collect();
    for (_, dir) in &targets {
        prepare_target(dir, args.force)?;
    }
    let started = Instant::now();
    let mut dumped = Vec::new();
    for (s, file) in &dump_files {
        let bytes = restore_dump(store.as_ref(), &m, s, file, &identities, &identity_file)?;
        dumped.push((*s, file, bytes));
    }
    let mut results = Vec::new();
    for (s, dir) in &targets {
        let summary = restore_one(store.as_ref(), &m, s, dir, &identities, &identity_file)?;
        results.push((*s, dir, summary));
    }
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(s, dir, sum)| {
                serde_json::json!({
                    "source": s.name,
                    "target": dir,
                    "files": sum.counts.files,
                    "directories": sum.counts.directories,
                    "symlinks": sum.counts.symlinks,
                    "file_bytes": sum.file_bytes,
                    "owners_not_restored": sum.owners_not_restored,
                })
            })
            .collect();
        let dumps: Vec<_> = dumped
            .iter()
            .map(|(s, file, bytes)| {
                serde_json::json!({"source": s.name, "kind": s.kind, "file": file, "bytes": bytes})
            })
            .collect();
        let out = serde_json::json!({
            "id": m.id,
            "seconds": seconds,
            "sources": rows,
            "dumps": dumps,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (s, file, bytes) in &dumped {
            println!(
                "restored {} '{}' ({} dump) to {}: {}",
                m.id,
                s.name,
                s.kind,
                file.display(),
                human_bytes(*bytes)
            );
        }
        for (s, dir, sum) in &results {
            println!(
                "restored {} '{}' to {}: {} files, {} directories, {} symlinks, {} in {seconds:.1} s",
                m.id,
                s.name,
                dir.display(),
                sum.counts.files,
                sum.counts.directories,
                sum.counts.symlinks,
                human_bytes(sum.file_bytes)
            );
            if sum.owners_not_restored > 0 {
                println!(
                    "note: the target refused to take the original owners of {} entries; \
                     they belong to the restoring user",
                    sum.owners_not_restored
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The configured database sources, frappe presets expanded where their site can be read (a
/// staging host may not have the site: it is then left out of the guard, with a note).
pub(crate) fn configured_databases(
    config: &crate::config::Config,
) -> Vec<crate::config::SourceConfig> {
    let mut out = Vec::new();
    for s in &config.sources {
        match &s.kind {
            crate::config::SourceKind::Frappe { path } => {
                match crate::source::frappe::expand(&s.name, path, s.exact_count_limit) {
                    Ok(parts) => out.extend(parts),
                    Err(e) => eprintln!(
                        "note: cannot tell whether the target is source '{}''s database: {e}",
                        s.name
                    ),
                }
            }
            _ => out.push(s.clone()),
        }
    }
    out
}

/// `restore ID --source NAME --db-url URL`: guards, prepare, load, compare.
fn restore_to_database(
    config: &crate::config::Config,
    store: &dyn Store,
    m: &Manifest,
    args: &RestoreArgs,
    url: &str,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<ExitCode> {
    use crate::database::{Address, Database};
    use crate::staging::{self, StagingOptions, TableStatus};
    let name = args
        .source
        .as_deref()
        .ok_or_else(|| anyhow!("--db-url needs --source NAME (the database source)"))?;
    let s = m.source(name)?;
    let address = Address::parse(url).map_err(|e| anyhow!("--db-url: {e}"))?;
    let password = match (&args.db_password_file, &args.db_password_env) {
        (Some(f), _) => Some(crate::config::SecretRef::File(f.clone())),
        (None, Some(v)) => Some(crate::config::SecretRef::Env(v.clone())),
        (None, None) => None,
    }
    .map(|r| r.load())
    .transpose()
    .map_err(|e| anyhow!("cannot read the staging database's password: {e}"))?;
    let target = Database { address, password };
    let opts = StagingOptions {
        create: args.create,
        force: args.force,
        overwrite_source: args.overwrite_source_database,
        client: args.client.clone(),
    };
    let LoadedDatabase {
        prepared,
        bytes,
        seconds,
        comparison: cmp,
        ..
    } = load_database(
        config,
        store,
        m,
        s,
        &target,
        &opts,
        identities,
        identity_file,
    )?;
    let failures = cmp.failures();
    if args.json {
        let out = serde_json::json!({
            "id": m.id,
            "source": s.name,
            "target": target.address.to_string(),
            "prepared": prepared,
            "bytes": bytes,
            "seconds": seconds,
            "counted": s.database.as_ref().map(|d| d.counted.clone()),
            "ok": failures.is_empty(),
            "tables": cmp.tables,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "restored {} '{}' into {} ({}): {} of SQL in {seconds:.1} s",
            m.id,
            s.name,
            target.address,
            match prepared {
                staging::Prepared::Empty => "it was empty",
                staging::Prepared::Created => "created",
                staging::Prepared::Recreated => "dropped and re-created",
            },
            human_bytes(bytes)
        );
        let show_all = cmp.tables.len() <= 50;
        let width = cmp
            .tables
            .iter()
            .map(|t| crate::text::printable(&t.table).chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let shown: Vec<_> = cmp
            .tables
            .iter()
            .filter(|t| show_all || t.status != TableStatus::Match)
            .collect();
        if !shown.is_empty() {
            println!(
                "  {:width$}  {:>12}  {:>12}",
                "table", "backed up", "restored"
            );
            for t in shown {
                let backed = match (t.backed_up, t.backed_up_after) {
                    (Some(n), Some(a)) if a != n => format!("{n}..{a}"),
                    (Some(n), _) if t.backed_up_exact => n.to_string(),
                    (Some(n), _) => format!("~{n}"),
                    (None, _) => "-".into(),
                };
                let restored = t.restored.map_or_else(|| "-".into(), |n| n.to_string());
                let status = match t.status {
                    TableStatus::Match => "ok",
                    TableStatus::Mismatch => "MISMATCH",
                    TableStatus::Changed => "ok (written to during the backup)",
                    TableStatus::Differs => "differs",
                    TableStatus::Estimated => "estimate",
                    TableStatus::Missing => "MISSING",
                    TableStatus::Extra => "not in backup",
                };
                println!(
                    "  {:width$}  {backed:>12}  {restored:>12}  {status}",
                    crate::text::printable(&t.table)
                );
            }
        }
        let matched = cmp.count(TableStatus::Match) + cmp.count(TableStatus::Changed);
        if !cmp.recorded {
            println!(
                "the snapshot records no row counts (made by an older coffer): {} tables restored",
                cmp.tables.len()
            );
        } else {
            println!(
                "{matched} of {} tables match the backup's row counts{}",
                cmp.tables.len(),
                if show_all {
                    ""
                } else {
                    " (--json lists every table)"
                }
            );
        }
        if cmp.count(TableStatus::Differs) > 0 {
            println!(
                "note: 'differs' marks tables that were being written to while the backup ran \
                 and came back with a count outside what was seen before and after the dump \
                 (rows added and removed again); check them if that is not expected"
            );
        }
    }
    if !failures.is_empty() {
        let names: Vec<String> = failures
            .iter()
            .map(|t| {
                let why = if t.status == TableStatus::Missing {
                    "missing".to_string()
                } else {
                    format!(
                        "{} rows instead of {}",
                        t.restored.unwrap_or(0),
                        t.backed_up.unwrap_or(0)
                    )
                };
                format!("{} ({why})", crate::text::Printable(&t.table))
            })
            .collect();
        eprintln!(
            "error: the restored database does not match snapshot {}: {}. It is left as it is for inspection; restore an older snapshot to compare",
            m.id,
            names.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The checks of a staging database that need no data: not a system database, not a
/// configured source's database (unless `opts.overwrite_source`), and a client that runs.
///
/// # Errors
/// Naming what is wrong and what to give instead.
pub(crate) fn guard_target(
    config: &crate::config::Config,
    target: &crate::database::Database,
    opts: &crate::staging::StagingOptions,
) -> anyhow::Result<()> {
    use crate::staging;
    staging::check_not_system(&target.address)?;
    if !opts.overwrite_source {
        // A target that does not exist yet (--create) may not answer at all; any other
        // failure to identify it stops the restore.
        let fingerprint = match staging::target_fingerprint(target) {
            Ok(fp) => fp,
            Err(crate::database::DbError::Connect { .. }) if opts.create => None,
            Err(e) => return Err(e.into()),
        };
        staging::guard_sources(
            &target.address,
            fingerprint.as_ref(),
            &configured_databases(config),
        )?;
    }
    staging::check_client(target, opts)?;
    Ok(())
}

/// What loading a database source into a staging database did.
pub struct LoadedDatabase {
    pub prepared: crate::staging::Prepared,
    /// SQL bytes fed to the client.
    pub bytes: u64,
    /// From the first byte loaded to the client's end.
    pub seconds: f64,
    /// Of `seconds`, the time spent decrypting and decompressing (on another thread).
    pub decode_seconds: f64,
    /// Counting the restored tables and comparing them with the manifest.
    pub check_seconds: f64,
    pub comparison: crate::staging::Comparison,
}

/// Loads database source `s` of snapshot `m` into the staging database `target`: the guards
/// (never a configured source's database unless `opts.overwrite_source`), then everything
/// that can fail without touching the target (client, parts, key), then prepare, load, and
/// compare every table's row count with the manifest's. Used by `restore --db-url` and drills.
///
/// # Errors
/// A guard, the client, the parts, the key, or the load failed (the message says what to do
/// next); a comparison that finds differences is not an error.
#[allow(clippy::too_many_arguments)]
pub fn load_database(
    config: &crate::config::Config,
    store: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    target: &crate::database::Database,
    opts: &crate::staging::StagingOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<LoadedDatabase> {
    use crate::staging;
    staging::check_engine(s, &target.address)?;
    guard_target(config, target, opts)?;
    // Everything that can fail without touching the target fails first: the client, the
    // parts, the key (the stream is opened and its header decrypted).
    precheck(store, m, s)?;
    let stream = open_checked(store, m, s, identities, identity_file)?;
    let prepared = staging::prepare(target, opts)?;
    let started = Instant::now();
    let bar = Progress::bytes(&format!("restore {}", s.name), Some(s.plaintext_bytes));
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = crate::drill::Timed::new(CountingRead::new(stream, &bar), busy.clone());
    let loaded =
        std::thread::scope(|scope| staging::load(target, opts, &mut read_ahead(scope, counted)));
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let loaded = loaded.map_err(|e| {
        let next = match &e {
            crate::source::FeedError::Input(io) => match find_part_problem(io) {
                Some(p) if !p.is_damage() => {
                    "the load was stopped; check that the store is reachable, then run it again (a restore with --force)"
                }
                _ => "the load was stopped; the snapshot's stream is damaged: use an older snapshot ('coffer list')",
            },
            crate::source::FeedError::Tool(_) => {
                "fix what the client reports (privileges, roles, the server's version) and run it again (a restore with --force)"
            }
        };
        anyhow!(e).context(format!(
            "loading '{}' of snapshot {} into {} failed ({next})",
            s.name, m.id, target.address
        ))
    })?;
    if !loaded.stderr.is_empty() {
        tracing::warn!(source = s.name, "the client said: {}", loaded.stderr);
    }
    let counting = Instant::now();
    let restored = staging::restored_counts(target)?;
    let cmp = staging::compare(s.database.as_ref(), &restored);
    Ok(LoadedDatabase {
        prepared,
        bytes: loaded.bytes,
        seconds,
        decode_seconds: crate::drill::busy_seconds(&busy),
        check_seconds: counting.elapsed().as_secs_f64(),
        comparison: cmp,
    })
}

/// Opens a stream for reading; when that fails, rules out a damaged or unreadable first part
/// (its recipient stanzas can make damage look like a wrong key) before blaming the key.
pub(crate) fn open_checked<'a>(
    store: &'a dyn Store,
    m: &'a Manifest,
    s: &'a SourceRecord,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<crate::pipeline::DecodedStream<'a>> {
    let prefix = m.id.prefix();
    let stream = match open_stream(store, &prefix, s, &m.recipients, identities, identity_file) {
        Ok(stream) => stream,
        Err(e) => {
            // A damaged first part can look like a wrong key (the recipient stanzas are in
            // it): rule that out before blaming the key.
            let mut first = s.clone();
            first.parts.truncate(1);
            let report = check_stream(store, &prefix, &first, &|_| {});
            if let Some(p) = report.problems.iter().find(|p| !p.is_damage()) {
                bail!(
                    "snapshot {} cannot be read from the store: {p}; nothing was written. Check \
                     that the store is reachable and readable, then retry",
                    m.id
                );
            }
            if let Some(p) = report.problems.iter().find(|p| p.part().is_some()) {
                bail!(
                    "snapshot {} cannot be restored: {p}; nothing was written. Restore an older \
                     snapshot ('coffer list')",
                    m.id
                );
            }
            return Err(e.into());
        }
    };
    Ok(stream)
}

/// Writes a database stream's decrypted dump to `file` (0600), removing it if the stream fails.
fn restore_dump(
    store: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    file: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let stream = open_checked(store, m, s, identities, identity_file)?;
    let bar = Progress::bytes(&format!("restore {}", s.name), Some(s.plaintext_bytes));
    let counted = CountingRead {
        inner: stream,
        bar: &bar,
    };
    // A replaced file is removed first, so the new one is created 0600 whatever the old mode.
    let _ = fs::remove_file(file);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    let copied = std::thread::scope(|scope| {
        std::io::copy(&mut read_ahead(scope, counted), &mut out).and_then(|n| {
            out.sync_all()?;
            Ok(n)
        })
    });
    bar.finish();
    copied.map_err(|e| {
        let _ = fs::remove_file(file);
        let next = match find_part_problem(&e) {
            Some(p) if !p.is_damage() => {
                "check that the store is reachable and readable, then retry"
            }
            _ => "restore an older snapshot ('coffer list')",
        };
        anyhow!(e).context(format!(
            "restore of '{}' from snapshot {} failed and the partial dump was removed: {next}",
            s.name, m.id
        ))
    })
}

fn restore_one(
    store: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    dir: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<TarSummary> {
    let prefix = m.id.prefix();
    let stream = open_checked(store, m, s, identities, identity_file)?;
    let bar = Progress::bytes(&format!("restore {}", s.name), Some(s.plaintext_bytes));
    let counted = CountingRead {
        inner: stream,
        bar: &bar,
    };
    // Two cores: fetch + verify + decrypt + gunzip on one thread, extract on this one.
    let result = std::thread::scope(|scope| restore::extract(read_ahead(scope, counted), dir));
    bar.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let problem = find_part_problem(&e).cloned();
            let named = problem.is_some();
            let store_access = problem.as_ref().is_some_and(|p| !p.is_damage());
            let stream_damaged = matches!(e, restore::RestoreError::Read(_)) && !store_access;
            let hostile = matches!(e, restore::RestoreError::Unsafe { .. });
            let mut err = anyhow!(e);
            if stream_damaged && !named {
                // Decryption or decompression failed without naming a part: find it by hash.
                let report = check_stream(store, &prefix, s, &|_| {});
                if !report.problems.is_empty() {
                    let bad: Vec<String> =
                        report.problems.iter().map(ToString::to_string).collect();
                    err = err.context(bad.join("; "));
                }
            }
            let next = if hostile {
                "coffer never writes such entries, so treat the store as tampered with and \
                 restore an older snapshot"
            } else if store_access {
                "check that the store is reachable and readable, then restore again"
            } else if stream_damaged {
                "restore an older snapshot ('coffer list') and back up again soon"
            } else {
                "fix the problem with the target folder and restore again"
            };
            return Err(err.context(format!(
                "restore of '{}' from snapshot {} failed; {} holds a partial restore: {next}",
                s.name,
                m.id,
                dir.display()
            )));
        }
    };
    if let Some(expected) = s.entries
        && expected != summary.counts
    {
        bail!(
            "restored {} files, {} directories, {} symlinks of '{}', but the manifest records {}, {} and {}",
            summary.counts.files,
            summary.counts.directories,
            summary.counts.symlinks,
            s.name,
            expected.files,
            expected.directories,
            expected.symlinks
        );
    }
    Ok(summary)
}

/// A reader that moves a progress bar.
pub(crate) struct CountingRead<'a, R> {
    inner: R,
    bar: &'a Progress,
}

impl<'a, R> CountingRead<'a, R> {
    pub(crate) fn new(inner: R, bar: &'a Progress) -> Self {
        CountingRead { inner, bar }
    }
}

impl<R: std::io::Read> std::io::Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
