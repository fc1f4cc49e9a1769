//! A folder source's stream in a backup: a full (with the index the next differentials are
//! made against) or a differential against the source's last full, and why. The index lives
//! on this host (`state_dir/index/<source>/<full id>.idx.gz`), since this host cannot read
//! what it stored; a new full's index becomes current only once its snapshot is committed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::signing::Trusted;
use crate::snapshot::{SnapshotError, SnapshotId, read_checked};
use crate::source::index::{IndexHeader, IndexReader, IndexWriter, index_path};
use crate::store::Store;

/// What a folder source's stream will be in this backup.
pub(crate) enum Plan {
    Full {
        /// Why not a differential (said in the backup's output).
        why: String,
        /// The index to write beside it (none when `full_every` is `0s`).
        index: Option<Box<IndexWriter>>,
    },
    Differential {
        base: SnapshotId,
        /// The whole-stream sha256 of the base's stream of this source.
        base_sha256: String,
        index: Box<IndexReader>,
    },
}

/// What a backup did with one folder source: `full` or `differential`, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FolderChoice {
    pub source: String,
    pub kind: &'static str,
    /// Differentials: the full they build on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub why: String,
}

/// What a folder source is planned from.
pub(crate) struct Folder<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub exclude: &'a [String],
    pub only: &'a [PathBuf],
    pub full_every: Duration,
}

impl Folder<'_> {
    /// A fingerprint of what the source selects (path, excludes, selection): an index made
    /// under another configuration is not used.
    pub(crate) fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.path.as_os_str().as_encoded_bytes());
        for e in self.exclude {
            h.update(b"\0x");
            h.update(e.as_bytes());
        }
        for o in self.only {
            h.update(b"\0o");
            h.update(o.as_os_str().as_encoded_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// The folder of the source's indexes.
fn index_dir(state_dir: &Path, source: &str) -> PathBuf {
    index_path(state_dir, source, "x")
        .parent()
        .expect("an index path has a folder")
        .to_path_buf()
}

/// The newest committed index of `source` (its full's id and path), if any.
fn current_index(state_dir: &Path, source: &str) -> Option<(String, PathBuf)> {
    let dir = index_dir(state_dir, source);
    let mut newest: Option<(String, PathBuf)> = None;
    for entry in fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".idx.gz")) else {
            continue;
        };
        if id.parse::<SnapshotId>().is_err() {
            continue;
        }
        if newest.as_ref().is_none_or(|(n, _)| id > n.as_str()) {
            newest = Some((id.to_string(), entry.path()));
        }
    }
    newest
}

/// The newest full any folder source of this host has an index of.
pub(crate) fn newest_index(state_dir: &Path) -> Option<SnapshotId> {
    fs::read_dir(state_dir.join("index"))
        .ok()?
        .flatten()
        .filter_map(|e| current_index(state_dir, &e.file_name().to_string_lossy()))
        .filter_map(|(id, _)| id.parse().ok())
        .max()
}

/// Decides whether `folder` is backed up as a full or a differential in snapshot `id`.
/// Whatever keeps a differential from being taken is not an error: it is a full, and why.
///
/// # Errors
/// Only when a full's index cannot be created, or the store cannot be asked about the base.
pub(crate) fn plan(
    config: &Config,
    store: &dyn Store,
    trusted: &Trusted,
    folder: &Folder<'_>,
    id: &SnapshotId,
    force_full: bool,
) -> anyhow::Result<Plan> {
    if folder.full_every.is_zero() {
        return Ok(Plan::Full {
            why: "full_every is 0s: every backup is a full".into(),
            index: None,
        });
    }
    let why = match differential(config, store, trusted, folder, id, force_full)? {
        Ok(plan) => return Ok(plan),
        Err(why) => why,
    };
    let dir = index_dir(&config.state_dir, folder.name);
    // A killed backup's unfinished index goes now.
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().as_encoded_bytes().ends_with(b".partial") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let root = fs::metadata(folder.path).map_err(|e| {
        anyhow::anyhow!(e).context(format!("reading source folder {}", folder.path.display()))
    })?;
    let header = IndexHeader {
        snapshot: id.to_string(),
        config: folder.fingerprint(),
        root_dev: root.dev(),
        root_ino: root.ino(),
    };
    let index = Box::new(IndexWriter::create(
        &index_path(&config.state_dir, folder.name, id.as_str()),
        &header,
    )?);
    Ok(Plan::Full {
        why,
        index: Some(index),
    })
}

/// A differential against the source's current index, or why not.
fn differential(
    config: &Config,
    store: &dyn Store,
    trusted: &Trusted,
    folder: &Folder<'_>,
    id: &SnapshotId,
    force_full: bool,
) -> anyhow::Result<Result<Plan, String>> {
    if force_full {
        return Ok(Err("--full was asked".into()));
    }
    let Some((base_id, path)) = current_index(&config.state_dir, folder.name) else {
        return Ok(Err(format!(
            "no index of an earlier full of '{}' on this host (its first backup here)",
            folder.name
        )));
    };
    let header = match IndexReader::check(&path) {
        Ok((header, _)) => header,
        Err(e) => {
            return Ok(Err(format!(
                "the index of its last full cannot be used ({e})"
            )));
        }
    };
    if header.snapshot != base_id {
        return Ok(Err(format!(
            "the index {} names another snapshot ({})",
            path.display(),
            header.snapshot
        )));
    }
    if header.config != folder.fingerprint() {
        return Ok(Err(format!(
            "its path, excludes or selection changed since its last full {base_id}"
        )));
    }
    match fs::metadata(folder.path) {
        Ok(m) if m.dev() == header.root_dev && m.ino() == header.root_ino => {}
        Ok(_) => {
            return Ok(Err(format!(
                "{} is another folder than at its last full {base_id} (another device or \
                 inode: restored, moved or on a new disk)",
                folder.path.display()
            )));
        }
        // The walk reports it.
        Err(_) => return Ok(Err("its folder cannot be read".into())),
    }
    let base: SnapshotId = base_id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let age = (id.time() - base.time()).to_std().unwrap_or_default();
    if age >= folder.full_every {
        return Ok(Err(format!(
            "its last full {base} is {} old (full_every = {})",
            crate::units::human_seconds(age.as_secs_f64()),
            crate::units::human_seconds(folder.full_every.as_secs_f64())
        )));
    }
    let manifest = match read_checked(store, &base, trusted) {
        Ok(c) if c.trust.is_trusted() => c.manifest,
        Ok(_) => {
            return Ok(Err(format!(
                "its last full {base} is not signed by a trusted key"
            )));
        }
        Err(SnapshotError::NotFound { .. }) => {
            return Ok(Err(format!(
                "its last full {base} is no longer in the store"
            )));
        }
        Err(e @ SnapshotError::BadManifest { .. }) => {
            return Ok(Err(format!("its last full {base} cannot be read ({e})")));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(record) = manifest.sources.iter().find(|s| s.name == folder.name) else {
        return Ok(Err(format!(
            "its last full {base} has no source '{}'",
            folder.name
        )));
    };
    if record.differential.is_some() || !record.kind.is_folder() {
        return Ok(Err(format!(
            "snapshot {base} does not hold a full of '{}'",
            folder.name
        )));
    }
    let index = match IndexReader::open(&path) {
        Ok(index) => index,
        Err(e) => {
            return Ok(Err(format!(
                "the index of its last full cannot be used ({e})"
            )));
        }
    };
    Ok(Ok(Plan::Differential {
        base,
        base_sha256: record.sha256.clone(),
        index: Box::new(index),
    }))
}

/// After the snapshot is committed: makes a new full's index current and removes the older
/// ones of the source (a differential is always made against the newest full).
pub(crate) fn commit_index(
    state_dir: &Path,
    source: &str,
    pending: crate::source::index::PendingIndex,
) {
    match pending.commit() {
        Ok(current) => {
            let Ok(entries) = fs::read_dir(index_dir(state_dir, source)) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p != current && p.to_string_lossy().ends_with(".idx.gz") {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        // The snapshot is committed all the same: the next backup takes a full.
        Err(e) => tracing::warn!(
            source,
            "the snapshot is committed, but its folder index could not be made current ({e}); \
             the next backup of '{source}' will be a full"
        ),
    }
}
