//! The drill's staging area: the staging folder (made 0700, marked, locked, kept apart from
//! every backed-up folder and the store), the staging databases a drill made, the download
//! spool, and the free space a drill needs.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::config::Config;
use crate::snapshot::{Bases, Manifest};
use crate::store::LocalStore;

use super::*;

/// The file listing the staging databases drills have loaded (one address per line): only
/// those may be dropped when they hold data.
pub(super) const TARGETS_FILE: &str = "drill-targets";

pub(super) fn known_targets(state_dir: &Path) -> std::collections::BTreeSet<String> {
    fs::read_to_string(state_dir.join(TARGETS_FILE))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

pub(super) fn remember_target(state_dir: &Path, address: &str) {
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
pub(super) fn check_apart(config: &Config) -> anyhow::Result<()> {
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
            | crate::config::SourceKind::Frappe { path }
            | crate::config::SourceKind::FrappeBench { path, .. } => {
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

pub(super) struct Keys<'a> {
    pub(super) identities: &'a [Box<dyn age::Identity + Send + Sync>],
    pub(super) identity_file: &'a str,
}

/// Makes the staging folder coffer's own (created 0700: it will hold a site's private
/// files), or checks that it already is: a drill only ever empties a folder carrying the
/// marker, so a mistyped `staging_dir` cannot wipe a folder that holds something else.
pub(super) fn prepare_staging(dir: &Path) -> anyhow::Result<fs::File> {
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
pub(super) fn check_space(dir: &Path, m: &Manifest, bases: &Bases) -> anyhow::Result<()> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let folders: u64 = m
        .sources
        .iter()
        .filter(|s| s.kind.is_folder())
        // A differential's tree is its full's, changed.
        .map(|s| s.plaintext_bytes.max(s.file_bytes.unwrap_or(0)))
        .sum();
    let base_parts: u64 = m
        .sources
        .iter()
        .filter_map(|s| bases.of(s))
        .flat_map(|(_, b)| b.streams())
        .map(|st| st.encrypted_bytes)
        .sum();
    // What an earlier drill left there is replaced.
    let needed = m.stored_bytes() + base_parts + folders;
    let reclaimable = m
        .sources
        .iter()
        .filter(|s| s.kind.is_folder())
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

pub(super) fn tree_bytes(path: &Path) -> u64 {
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
pub(super) fn remove_tree(path: &Path) -> io::Result<()> {
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
pub(super) struct Spool {
    pub(super) dir: PathBuf,
    pub(super) store: LocalStore,
}

impl Spool {
    pub(super) fn create(dir: PathBuf) -> anyhow::Result<Spool> {
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
