//! The restore engine: a snapshot's streams back into folders, dump files and staging
//! databases, each part checked before use (`pipeline::PartsReader`) and every archive entry
//! checked before it is written (`tar`). Called by `coffer restore` and by drills.

mod bench;
mod database;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};

use crate::pipeline::{CountingRead, find_part_problem, open_stream, read_ahead};
use crate::progress::Progress;
use crate::snapshot::{Bases, Manifest, SnapshotError, SourceRecord};
use crate::store::Store;
use crate::verify::check_stream;

pub use crate::archive::{RestoreError, TarSummary, extract};
pub use bench::{site_preset, write_bench_layout};
pub use database::{LoadedDatabase, guard_target, load_database};

/// Fails unless `dir` is missing, or a folder this user owns that no one else can write to
/// and that is empty (or `force`); creates it (0700) if missing. A folder someone else owns
/// or can write to would let them read what is restored (site_config.json, private files)
/// or swap parts of it while coffer writes.
pub fn prepare_target(dir: &Path, force: bool) -> anyhow::Result<()> {
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
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating restore target {}", dir.display()))
}

/// Checks up front, from a listing, that every part exists with its recorded size, so a
/// missing part is named before anything is written.
pub fn precheck(store: &dyn Store, m: &Manifest, source: &SourceRecord) -> anyhow::Result<()> {
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
        Err(crate::exit::Damaged::error(format!(
            "snapshot {} cannot be restored: {}; nothing was written. Restore an older snapshot \
             ('coffer list')",
            m.id,
            problems.join("; ")
        )))
    }
}

/// Opens a stream for reading; when that fails, rules out a damaged or unreadable first part
/// (its recipient stanzas can make damage look like a wrong key) before blaming the key.
pub fn open_checked<'a>(
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
                return Err(crate::exit::Damaged::error(format!(
                    "snapshot {} cannot be restored: {p}; nothing was written. Restore an older \
                     snapshot ('coffer list')",
                    m.id
                )));
            }
            return Err(e.into());
        }
    };
    Ok(stream)
}

/// The streams that restore folder source `s` of `m`, in order: its own (a full), or its
/// base's full and then itself (a differential, with deletions applied).
///
/// # Errors
/// `BaseMissing` when `bases` lacks the base of a differential.
pub fn layers<'a>(
    m: &'a Manifest,
    s: &'a SourceRecord,
    bases: &'a Bases,
) -> anyhow::Result<Vec<(&'a Manifest, &'a SourceRecord)>> {
    let Some(d) = &s.differential else {
        return Ok(vec![(m, s)]);
    };
    match bases.of(s) {
        Some(base) => Ok(vec![base, (m, s)]),
        None => Err(SnapshotError::BaseMissing {
            id: m.id.to_string(),
            name: s.name.clone(),
            base: d.base.to_string(),
            why: "was not read".into(),
        }
        .into()),
    }
}

/// What `restore_to_folder` wrote: each dump file with its bytes, each folder with what it
/// holds, and the seconds it took.
pub struct Restored<'m> {
    pub dumps: Vec<(&'m SourceRecord, PathBuf, u64)>,
    pub folders: Vec<(&'m SourceRecord, PathBuf, TarSummary)>,
    pub seconds: f64,
}

/// Restores source `only` (or every source) of `m` under `to`: database dumps as
/// `to/<source>.sql` files, a lone folder into `to` itself, several into `to/<source>`.
/// Every stream's parts are listed first and every target checked (empty, or `force`)
/// before anything is written.
///
/// # Errors
/// An unknown source, a missing part, a target in the way, or a stream that fails (naming
/// the part and what to do).
#[allow(clippy::too_many_arguments)]
pub fn restore_to_folder<'m>(
    store: &dyn Store,
    m: &'m Manifest,
    bases: &Bases,
    only: Option<&str>,
    to: &Path,
    force: bool,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<Restored<'m>> {
    let sources: Vec<&SourceRecord> = match only {
        Some(name) => vec![m.source(name)?],
        None => m.sources.iter().collect(),
    };
    for s in &sources {
        for (lm, ls) in layers(m, s, bases)? {
            precheck(store, lm, ls)?;
        }
    }
    // Database dumps are written as DIR/<source>.sql files.
    let (dumps, sources): (Vec<&SourceRecord>, Vec<&SourceRecord>) =
        sources.into_iter().partition(|s| !s.kind.is_folder());
    let mut dump_files = Vec::new();
    for s in &dumps {
        let file = to.join(format!("{}.sql", s.name));
        if file.exists() && !force {
            bail!(
                "{} exists; choose another --to folder, or pass --force to replace it",
                file.display()
            );
        }
        dump_files.push((*s, file));
    }
    if !dumps.is_empty() {
        // Files land in it one by one (each refused if it exists): its owner is checked.
        prepare_target(to, true)?;
    }
    // A lone directory source restores into DIR itself; otherwise each goes to DIR/<source>.
    let targets: Vec<(&SourceRecord, PathBuf)> = sources
        .iter()
        .map(|s| {
            let dir = if sources.len() == 1 && dumps.is_empty() {
                to.to_path_buf()
            } else {
                to.join(&s.name)
            };
            (*s, dir)
        })
        .collect();
    for (_, dir) in &targets {
        prepare_target(dir, force)?;
    }
    let started = Instant::now();
    let mut dumps = Vec::new();
    for (s, file) in dump_files {
        let bytes = restore_dump(store, m, s, &file, identities, identity_file)?;
        dumps.push((s, file, bytes));
    }
    let mut folders = Vec::new();
    for (s, dir) in targets {
        let summary = restore_one(store, m, s, bases, &dir, identities, identity_file)?;
        folders.push((s, dir, summary));
    }
    Ok(Restored {
        dumps,
        folders,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes a database stream's decrypted dump to `file` (0600), removing it if the stream fails.
pub fn restore_dump(
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
    let counted = CountingRead::new(stream, &bar);
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

/// Restores folder source `s` of `m` into `dir`: its full, then (a differential) itself with
/// deletions applied; checks the whole tree's counts against the manifest. What the tree holds.
///
/// # Errors
/// A stream that fails (naming the snapshot, the part and what to do), a missing base, or
/// counts that differ.
pub fn restore_one(
    store: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    bases: &Bases,
    dir: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<TarSummary> {
    let layers = layers(m, s, bases)?;
    let mut summary = TarSummary::default();
    for (lm, ls) in layers {
        summary = extract_stream(store, lm, ls, dir, identities, identity_file)?;
    }
    tree_summary(m, s, summary)
}

/// What the restored tree holds, from the last stream's summary (a differential's folders
/// list the files kept from its full), checked against the manifest's whole-tree counts.
///
/// # Errors
/// Counts that differ, or unchanged files the full did not hold.
pub fn tree_summary(
    m: &Manifest,
    s: &SourceRecord,
    last: TarSummary,
) -> anyhow::Result<TarSummary> {
    let mut summary = last;
    if s.differential.is_some() {
        if summary.unchanged_missing > 0 {
            return Err(crate::exit::Damaged::error(format!(
                "restored '{}' of snapshot {}: {} files its differential lists as unchanged are \
                 not in the full it was restored over; restore another snapshot ('coffer list')",
                s.name, m.id, summary.unchanged_missing
            )));
        }
        summary.counts.files += summary.unchanged;
        summary.file_bytes = s.file_bytes.unwrap_or(summary.file_bytes);
    }
    if let Some(expected) = s.entries
        && expected != summary.counts
    {
        return Err(crate::exit::Damaged::error(format!(
            "restored {} files, {} directories, {} symlinks of '{}', but the manifest records {}, {} and {}",
            summary.counts.files,
            summary.counts.directories,
            summary.counts.symlinks,
            s.name,
            expected.files,
            expected.directories,
            expected.symlinks
        )));
    }
    Ok(summary)
}

/// Extracts one stream of a folder source into `dir`.
fn extract_stream(
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
    let counted = CountingRead::new(stream, &bar);
    // Two cores: fetch + verify + decrypt + gunzip on one thread, extract on this one.
    let result = std::thread::scope(|scope| extract(read_ahead(scope, counted), dir));
    bar.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let problem = find_part_problem(&e).cloned();
            let named = problem.is_some();
            let store_access = problem.as_ref().is_some_and(|p| !p.is_damage());
            let stream_damaged = matches!(e, RestoreError::Read(_)) && !store_access;
            let hostile = matches!(e, RestoreError::Unsafe { .. });
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
            if stream_damaged && !store_access {
                err = err.context(crate::exit::Damaged(format!(
                    "the stored stream of '{}' in snapshot {} is damaged",
                    s.name, m.id
                )));
            }
            return Err(err.context(format!(
                "restore of '{}' from snapshot {} failed; {} holds a partial restore: {next}",
                s.name,
                m.id,
                dir.display()
            )));
        }
    };
    Ok(summary)
}
