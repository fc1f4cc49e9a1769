//! The drill's restore stages: download every part into the spool (each checked as it
//! lands), extract folders, hash every restored file against the backup's list, load
//! databases and compare them with the manifest.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use anyhow::{Context, anyhow};
use sha2::{Digest, Sha256};

use crate::config::{Config, DrillDatabase, FileCheck};
use crate::pipeline::{PartProblem, Timed, busy_seconds, read_ahead};
use crate::progress::Progress;
use crate::snapshot::{Manifest, SourceRecord};
use crate::staging::TableStatus;
use crate::store::LocalStore;
use crate::store::Store;

use super::*;

/// Copies every part of `s` into the spool, checking sizes and sha256 (each part's and the
/// whole stream's) as `verify` does. Problems with parts are returned; a spool that cannot be
/// written is an error.
pub(super) fn download(
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
pub(super) struct SpoolSink<'a> {
    pub(super) spool: &'a LocalStore,
    pub(super) prefix: &'a str,
    pub(super) current: Option<Box<dyn crate::store::ObjectWriter>>,
}

impl SpoolSink<'_> {
    pub(super) fn failed(&self, e: impl std::fmt::Display) -> anyhow::Error {
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

/// Extracts a folder source into `dir` (emptied first) from its `layers` (its full, then a
/// differential's own stream) and compares it with the manifest.
pub(super) fn extract_folder(
    spool: &dyn Store,
    layers: &[(&Manifest, &SourceRecord)],
    dir: &Path,
    keys: &Keys<'_>,
    result: &mut SourceResult,
) -> anyhow::Result<()> {
    remove_tree(dir).with_context(|| format!("emptying {} for the drill", dir.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let busy = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut summary = crate::archive::TarSummary::default();
    for &(m, s) in layers {
        let stream =
            crate::restore::open_checked(spool, m, s, keys.identities, keys.identity_file)?;
        let bar = Progress::bytes(&format!("extract {}", s.name), Some(s.plaintext_bytes));
        let timed = Timed::new(
            crate::pipeline::CountingRead::new(stream, &bar),
            busy.clone(),
        );
        let extracted =
            std::thread::scope(|scope| crate::restore::extract(read_ahead(scope, timed), dir));
        bar.finish();
        summary = extracted.map_err(|e| {
            anyhow!(e).context(format!(
                "the drill could not extract '{}' of snapshot {} into {}",
                s.name,
                m.id,
                dir.display()
            ))
        })?;
    }
    result.restore_seconds = t.elapsed().as_secs_f64();
    result.decrypt_decompress_seconds = busy_seconds(&busy);
    let &(m, s) = layers.last().expect("a folder has a stream");
    result.restored = "extracted";
    let t = Instant::now();
    // A differential: its folders list the files kept from the full; its own bytes are
    // the changed files' (the whole tree is checked file by file against the checksums).
    let mut expected_bytes = s.file_bytes;
    if let Some(d) = &s.differential {
        summary.counts.files += summary.unchanged;
        expected_bytes = Some(d.changed_bytes);
        if summary.unchanged_missing > 0 {
            result.failures.push(format!(
                "'{}': {} files the differential of snapshot {} lists as unchanged are not in \
                 its full {}",
                s.name, summary.unchanged_missing, m.id, d.base
            ));
        }
    }
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
    if let Some(expected) = expected_bytes
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
        expected_file_bytes: expected_bytes,
        restored_file_bytes: summary.file_bytes,
        hashed: 0,
        hash_failures: 0,
        hash_check: "none",
    });
    Ok(())
}

/// Hashes the restored file `rel` below `dir` without following a symlink anywhere on the
/// way (a forged list could point through a restored link out of the folder).
pub(super) fn hash_beneath(
    dir: &Path,
    rel: &Path,
    buf: &mut [u8],
    bar: &Progress,
) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(Some(rel)) = crate::archive::safe_relative(rel.as_os_str().as_bytes()) else {
        return Err("is named outside the folder by the list".into());
    };
    crate::archive::check_parents(dir, &rel)
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
pub(super) fn check_file_sums(
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
pub(super) fn load_database(
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
pub(super) fn read_through(
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
