//! Checking stored snapshots: every part's size and sha256 against the manifest (no key
//! needed), and with `deep` a full decrypt, gunzip and tar read of every stream.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::archive as restore;
use crate::pipeline::{PartProblem, open_stream};
use crate::snapshot::{Bases, Manifest, PartRecord, SourceRecord};
use crate::store::Store;

/// The verdict on one stream.
#[derive(Debug, Default)]
pub struct StreamReport {
    pub source: String,
    pub stream: String,
    pub parts_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<PartProblem>,
    /// Objects in the snapshot folder that the manifest does not list.
    pub extra_objects: Vec<String>,
    /// With `deep`: what reading the whole stream found (`Err` holds the failure).
    pub deep: Option<Result<restore::TarSummary, String>>,
    /// The parts were judged by what the store reports (Drive's sha256, an S3 ETag),
    /// without downloading them.
    pub by_store_checksums: bool,
    /// This is the full stream a differential builds on, in that other snapshot.
    pub base_of: Option<String>,
    /// A differential whose full cannot be used: why (the snapshot cannot be restored).
    pub unrestorable: Option<String>,
}

impl StreamReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
            && !matches!(self.deep, Some(Err(_)))
            && self.unrestorable.is_none()
    }
}

/// What a verify does about the fulls a snapshot's differentials build on.
pub enum BaseCheck<'a> {
    /// They were read: their streams are checked along with the snapshot's.
    Check(&'a Bases),
    /// They were read and are checked on their own in this run (`verify --all`).
    Present,
    /// One cannot be used (gone, not trusted, another stream): why.
    Unusable(String),
}

/// Identities for a deep check.
pub struct DeepKeys<'a> {
    pub identities: &'a [Box<dyn age::Identity + Send + Sync>],
    pub identity_file: &'a str,
}

/// Verifies every stream of `manifest`. `progress` gets the count of bytes read.
///
/// # Errors
/// Only a failure to list the snapshot's folder; part problems are in the reports.
pub fn verify_snapshot(
    store: &dyn Store,
    manifest: &Manifest,
    bases: &BaseCheck<'_>,
    deep: Option<&DeepKeys<'_>>,
    progress: &dyn Fn(u64),
) -> Result<Vec<StreamReport>, crate::store::StoreError> {
    let mut reports = verify_streams(store, manifest, &manifest.sources, deep, progress)?;
    for s in manifest.sources.iter().filter(|s| s.differential.is_some()) {
        match bases {
            BaseCheck::Check(bases) => {
                if let Some((bm, bs)) = bases.of(s) {
                    let mut base =
                        verify_streams(store, bm, std::slice::from_ref(bs), deep, progress)?;
                    for r in &mut base {
                        // The full's checksum list is not needed to restore the differential.
                        r.base_of = Some(bm.id.to_string());
                    }
                    reports.extend(base.into_iter().take(1));
                }
            }
            BaseCheck::Present => {}
            BaseCheck::Unusable(why) => reports.push(StreamReport {
                source: s.name.clone(),
                stream: s.stream.clone(),
                unrestorable: Some(why.clone()),
                ..StreamReport::default()
            }),
        }
    }
    Ok(reports)
}

/// Verifies the streams of `sources` in snapshot `manifest`.
fn verify_streams(
    store: &dyn Store,
    manifest: &Manifest,
    sources: &[SourceRecord],
    deep: Option<&DeepKeys<'_>>,
    progress: &dyn Fn(u64),
) -> Result<Vec<StreamReport>, crate::store::StoreError> {
    let prefix = manifest.id.prefix();
    let listed = store.list(&prefix)?;
    let mut reports = Vec::new();
    for source in &sources
        .iter()
        .flat_map(SourceRecord::streams)
        .collect::<Vec<_>>()
    {
        // A store that reports each object's sha256 (Drive) is asked, not read; a deep check
        // reads everything anyway.
        let mut report = match (deep, check_listed(&prefix, source, &listed)) {
            (None, Some(report)) => report,
            _ => check_stream(store, &prefix, source, progress),
        };
        report.extra_objects = listed
            .iter()
            .filter_map(|o| o.key.strip_prefix(&prefix))
            .filter(|name| {
                name.starts_with(&format!("{}.", source.stream))
                    && !source.parts.iter().any(|p| p.name == *name)
            })
            .map(str::to_string)
            .collect();
        if let Some(keys) = deep
            && report.problems.is_empty()
        {
            report.deep = Some(deep_check(store, manifest, &prefix, source, keys));
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Which part record holds a given checksum (to name a part moved in place of another).
type Holder = fn(&PartRecord) -> Option<&str>;

/// Judges every part of a stream by what the store's listing reports: its size, and the
/// sha256 the store computed (Drive) or the ETag it keeps (S3) against the one recorded at
/// upload. `None` when that cannot be done for every part (then the parts must be read).
pub fn check_listed(
    prefix: &str,
    source: &SourceRecord,
    listed: &[crate::store::ObjectMeta],
) -> Option<StreamReport> {
    let mut report = StreamReport {
        source: source.name.clone(),
        stream: source.stream.clone(),
        by_store_checksums: true,
        ..StreamReport::default()
    };
    for part in &source.parts {
        report.parts_checked += 1;
        let key = format!("{prefix}{}", part.name);
        let Some(meta) = listed.iter().find(|o| o.key == key) else {
            report.problems.push(PartProblem::Missing {
                part: part.name.clone(),
            });
            continue;
        };
        // The store's own sha256, else its ETag where the manifest recorded one.
        let (got, expected, holder): (String, &str, Holder) =
            match (&meta.sha256, &meta.etag, &part.etag) {
                (Some(sha), _, _) => (sha.to_ascii_lowercase(), &part.sha256, |p| {
                    Some(p.sha256.as_str())
                }),
                (None, Some(tag), Some(recorded)) => {
                    (tag.to_ascii_lowercase(), recorded, |p| p.etag.as_deref())
                }
                _ => return None,
            };
        if got == expected.to_ascii_lowercase() && meta.size == part.size {
            continue;
        }
        report.problems.push(
            if let Some(other) = source
                .parts
                .iter()
                .find(|p| holder(p).is_some_and(|h| h.eq_ignore_ascii_case(&got)))
            {
                PartProblem::Misplaced {
                    part: part.name.clone(),
                    holds: other.name.clone(),
                }
            } else if meta.size < part.size {
                PartProblem::Truncated {
                    part: part.name.clone(),
                    got: meta.size,
                    expected: part.size,
                }
            } else if meta.size > part.size {
                PartProblem::TooLong {
                    part: part.name.clone(),
                    expected: part.size,
                }
            } else if meta.sha256.is_some() {
                PartProblem::Corrupted {
                    part: part.name.clone(),
                    got,
                    expected: part.sha256.clone(),
                }
            } else {
                PartProblem::Changed {
                    part: part.name.clone(),
                    got,
                    expected: expected.to_string(),
                }
            },
        );
    }
    Some(report)
}

/// Where the bytes of the parts go while they are checked (`read_stream`): nowhere for a
/// verify, into a local copy for a drill's download.
pub trait PartSink {
    type Error;
    /// A part is about to be read.
    fn begin(&mut self, _part: &PartRecord) -> Result<(), Self::Error> {
        Ok(())
    }
    fn data(&mut self, _bytes: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The part was read to its end (a part that could not be read gets no `end`).
    fn end(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Nowhere;

impl PartSink for Nowhere {
    type Error = std::convert::Infallible;
}

/// Checks every part of one stream (size and sha256) and the whole stream's sha256.
pub fn check_stream(
    store: &dyn Store,
    prefix: &str,
    source: &SourceRecord,
    progress: &dyn Fn(u64),
) -> StreamReport {
    match read_stream(store, prefix, source, progress, &mut Nowhere) {
        Ok(report) => report,
        Err(never) => match never {},
    }
}

/// As `check_stream`, handing every byte read to `sink` too.
///
/// # Errors
/// Only the sink's own; problems with parts are in the report.
pub fn read_stream<S: PartSink>(
    store: &dyn Store,
    prefix: &str,
    source: &SourceRecord,
    progress: &dyn Fn(u64),
    sink: &mut S,
) -> Result<StreamReport, S::Error> {
    let mut report = StreamReport {
        source: source.name.clone(),
        stream: source.stream.clone(),
        ..StreamReport::default()
    };
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    for part in &source.parts {
        report.parts_checked += 1;
        let reader = match store.get(&format!("{prefix}{}", part.name)) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                report.problems.push(PartProblem::Missing {
                    part: part.name.clone(),
                });
                continue;
            }
            Err(e) => {
                report.problems.push(PartProblem::Unreadable {
                    part: part.name.clone(),
                    why: e.to_string(),
                });
                continue;
            }
        };
        // Never more than one byte past the recorded size: a planted "part" of terabytes is
        // named too long, not hashed (or spooled by a drill) to its end.
        let mut reader = reader.take(part.size.saturating_add(1));
        sink.begin(part)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let read = loop {
            if let Err(e) = crate::shutdown::check_io() {
                break Err(e);
            }
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    whole.update(&buf[..n]);
                    size += n as u64;
                    progress(n as u64);
                    sink.data(&buf[..n])?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        report.bytes_checked += size;
        if let Err(e) = read {
            report.problems.push(PartProblem::Unreadable {
                part: part.name.clone(),
                why: e.to_string(),
            });
            continue;
        }
        sink.end()?;
        let got = hex::encode(hasher.finalize());
        let problem = if got == part.sha256 && size == part.size {
            continue;
        } else if let Some(other) = source.parts.iter().find(|p| p.sha256 == got) {
            PartProblem::Misplaced {
                part: part.name.clone(),
                holds: other.name.clone(),
            }
        } else if size < part.size {
            PartProblem::Truncated {
                part: part.name.clone(),
                got: size,
                expected: part.size,
            }
        } else if size > part.size {
            PartProblem::TooLong {
                part: part.name.clone(),
                expected: part.size,
            }
        } else {
            PartProblem::Corrupted {
                part: part.name.clone(),
                got,
                expected: part.sha256.clone(),
            }
        };
        report.problems.push(problem);
    }
    if report.problems.is_empty() {
        let got = hex::encode(whole.finalize());
        if got != source.sha256 {
            report.problems.push(PartProblem::StreamCorrupted {
                got,
                expected: source.sha256.clone(),
            });
        }
    }
    Ok(report)
}

fn deep_check(
    store: &dyn Store,
    manifest: &Manifest,
    prefix: &str,
    source: &SourceRecord,
    keys: &DeepKeys<'_>,
) -> Result<restore::TarSummary, String> {
    let stream = open_stream(
        store,
        prefix,
        source,
        &manifest.recipients,
        keys.identities,
        keys.identity_file,
    )
    .map_err(|e| e.to_string())?;
    if !source.kind.is_folder() {
        // A database dump: decrypt and decompress it to the end (its size is checked there).
        let bytes = std::thread::scope(|scope| {
            std::io::copy(
                &mut crate::pipeline::read_ahead(scope, stream),
                &mut std::io::sink(),
            )
        })
        .map_err(|e| crate::text::error_chain(&anyhow::Error::from(e)))?;
        return Ok(restore::TarSummary {
            file_bytes: bytes,
            ..Default::default()
        });
    }
    let mut summary =
        std::thread::scope(|scope| restore::scan(crate::pipeline::read_ahead(scope, stream)))
            .map_err(|e| crate::text::error_chain(&anyhow::Error::from(e)))?;
    if source.differential.is_some() {
        // Its folders list the files kept from the full.
        summary.counts.files += summary.unchanged;
    }
    if let Some(expected) = source.entries
        && expected != summary.counts
    {
        return Err(format!(
            "the archive holds {} files, {} directories and {} symlinks; the manifest says {}, {} and {}",
            summary.counts.files,
            summary.counts.directories,
            summary.counts.symlinks,
            expected.files,
            expected.directories,
            expected.symlinks
        ));
    }
    Ok(summary)
}
