//! Tar archives of directory streams: extracting one into a target folder safely, and reading
//! one to its end (`verify --deep`).
//!
//! Every entry is checked before anything is written: an absolute path, a `..` component, or a
//! path whose existing parent is a symlink (writing through a link) stops the restore with an
//! error naming the entry. Anyone holding a recipient's public key can craft a valid age
//! stream, so the archive is treated as untrusted input. Directory permissions and mtimes are
//! applied last, deepest first, so a read-only directory does not block its own contents.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::snapshot::EntryCounts;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("refusing archive entry '{entry}': {why}; nothing outside {target} was written")]
    Unsafe {
        entry: String,
        why: &'static str,
        target: PathBuf,
    },
    #[error("restoring '{entry}' to {path}: {source}")]
    Write {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
}

/// What a restore or a deep read found in a tar stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TarSummary {
    pub counts: EntryCounts,
    /// Bytes of file content.
    pub file_bytes: u64,
    /// Entries whose owner could not be set (restoring as root onto a target that refuses).
    pub owners_not_restored: u64,
    /// A differential: files its folders list as unchanged (`N` in `GNU.dumpdir`), kept from
    /// the full restored before it.
    pub unchanged: u64,
    /// Of those, files the target did not hold (the full restored before it lacks them).
    pub unchanged_missing: u64,
}

/// Checks an entry path and returns it relative, or why it is refused.
pub(crate) fn safe_relative(raw: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Fails if any existing ancestor of `rel` below `target` is not a real directory.
pub(crate) fn check_parents(target: &Path, rel: &Path) -> Result<(), &'static str> {
    let mut at = target.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err("it would be written through a symlink");
            }
            Ok(m) if !m.is_dir() => return Err("a parent of it is not a directory"),
            Ok(_) => {}
            Err(_) => break, // the rest does not exist yet; it will be created as directories
        }
    }
    Ok(())
}

/// Extracts the tar stream `reader` into `target` (which must exist), then reads the stream to
/// its end so every part is verified.
///
/// # Errors
/// `Unsafe` for an entry that would land outside `target`; `Write` for a local I/O error;
/// `Read` when the stream fails (a bad part is named inside).
pub fn extract(reader: impl Read, target: &Path) -> Result<TarSummary, RestoreError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    // Never create setuid/setgid files from an archive, which anyone holding a public key
    // could have written (a site has no use for them). Directories keep setgid (group
    // inheritance). As root, owners are restored too, as GNU tar does, where the target allows.
    archive.set_mask(0o6000);
    let mut owners = Owners {
        enabled: rustix::process::geteuid().is_root(),
        failed: 0,
    };
    let mut summary = TarSummary::default();
    let mut dirs: Vec<(PathBuf, u32, u64, tar::Header)> = Vec::new();
    for entry in archive.entries().map_err(RestoreError::Read)? {
        let mut entry = entry.map_err(RestoreError::Read)?;
        let raw = entry.path_bytes().into_owned();
        // Shown in errors, logs and alerts: the archive may be hostile, so escaped.
        let name = crate::text::PrintableBytes(&raw).to_string();
        let unsafe_entry = |why| RestoreError::Unsafe {
            entry: name.clone(),
            why,
            target: target.to_path_buf(),
        };
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        // A differential's folders list all their children (GNU tar's `GNU.dumpdir`).
        let dumpdir = if kind == EntryType::Directory {
            dumpdir_of(&mut entry).map_err(RestoreError::Read)?
        } else {
            None
        };
        let Some(rel) = safe_relative(&raw).map_err(unsafe_entry)? else {
            // "./" itself: a differential's root record deletes what is gone below it.
            if let Some(record) = &dumpdir {
                purge(target, record, &mut summary).map_err(|source| RestoreError::Write {
                    entry: name.clone(),
                    path: target.to_path_buf(),
                    source,
                })?;
            }
            continue;
        };
        check_parents(target, &rel).map_err(unsafe_entry)?;
        let dest = target.join(&rel);
        let write_err = |source: io::Error| {
            // A damaged stream surfaces while a file is written: it is a read failure.
            if crate::pipeline::is_stream_error(&source) {
                RestoreError::Read(source)
            } else {
                RestoreError::Write {
                    entry: name.clone(),
                    path: dest.clone(),
                    source,
                }
            }
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(write_err)?;
        }
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => fs::remove_file(&dest).map_err(write_err)?,
                    Err(_) => {}
                }
                fs::create_dir_all(&dest).map_err(write_err)?;
                if let Some(record) = &dumpdir {
                    purge(&dest, record, &mut summary).map_err(write_err)?;
                }
                let h = entry.header();
                let mode = h.mode().map_err(RestoreError::Read)?;
                let mtime = h.mtime().map_err(RestoreError::Read)?;
                dirs.push((dest, mode, mtime, h.clone()));
                summary.counts.directories += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::Symlink => {
                if let Ok(m) = fs::symlink_metadata(&dest)
                    && m.is_dir()
                {
                    return Err(write_err(io::Error::other(
                        "a directory is in the way of a file",
                    )));
                }
                if kind == EntryType::Symlink {
                    // Replace whatever is there; tar would refuse an existing link.
                    let _ = fs::remove_file(&dest);
                    summary.counts.symlinks += 1;
                } else {
                    summary.counts.files += 1;
                    summary.file_bytes += entry.size();
                }
                entry.unpack(&dest).map_err(write_err)?;
                owners.apply(&dest, entry.header());
                if kind == EntryType::Symlink {
                    let mtime = entry.header().mtime().map_err(RestoreError::Read)?;
                    let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
                    filetime::set_symlink_file_times(&dest, t, t).map_err(write_err)?;
                }
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let Some(link_rel) = safe_relative(&link).map_err(unsafe_entry)? else {
                    return Err(unsafe_entry("its hard link target is empty"));
                };
                check_parents(target, &link_rel).map_err(unsafe_entry)?;
                let _ = fs::remove_file(&dest);
                fs::hard_link(target.join(link_rel), &dest).map_err(write_err)?;
                summary.counts.files += 1;
            }
            other => {
                tracing::warn!(entry = %name, kind = ?other, "skipping an entry of a kind coffer does not restore");
            }
        }
    }
    // Read to the end: the trailing blocks belong to the last part, which must verify too.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(RestoreError::Read)?;
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.as_os_str().len()));
    for (dir, mode, mtime, header) in dirs {
        let err = |source| RestoreError::Write {
            entry: dir.display().to_string(),
            path: dir.clone(),
            source,
        };
        // Never chmod or chown through a symlink swapped in during the restore (nor a folder
        // a later dumpdir removed).
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        }
        owners.apply(&dir, &header);
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o3777)).map_err(err)?;
        let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
        filetime::set_file_mtime(&dir, t).map_err(err)?;
    }
    summary.owners_not_restored = owners.failed;
    Ok(summary)
}

/// An entry's `GNU.dumpdir` record, if it has one.
fn dumpdir_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Option<Vec<u8>>> {
    let Some(pax) = entry.pax_extensions()? else {
        return Ok(None);
    };
    for ext in pax {
        let ext = ext?;
        if ext.key_bytes() == b"GNU.dumpdir" {
            return Ok(Some(ext.value_bytes().to_vec()));
        }
    }
    Ok(None)
}

/// What GNU tar's `-G` does with a folder's dumpdir `record` (`<code><name>\0`…, then `\0`):
/// removes from `dir` every entry the record does not list, and one whose kind changed (listed
/// as a folder, `D`, but not one, or the other way round). Links are removed, never followed.
/// Counts the unchanged files (`N`) in `summary`, and those `dir` lacks.
fn purge(dir: &Path, record: &[u8], summary: &mut TarSummary) -> io::Result<()> {
    let mut listed = std::collections::HashMap::new();
    let mut unchanged = 0;
    for item in record.split(|&b| b == 0) {
        let Some((&code, name)) = item.split_first() else {
            break;
        };
        listed.insert(name, code);
        if code == b'N' {
            unchanged += 1;
        }
    }
    summary.unchanged += unchanged;
    let mut present = 0;
    for child in fs::read_dir(dir)? {
        let child = child?;
        let path = child.path();
        let meta = fs::symlink_metadata(&path)?;
        let keep = match listed.get(child.file_name().as_bytes()) {
            Some(b'D') => meta.is_dir(),
            Some(b'N') => {
                present += u64::from(meta.is_file());
                meta.is_file()
            }
            Some(b'Y') => !meta.is_dir(),
            _ => false,
        };
        if !keep {
            if meta.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    summary.unchanged_missing += unchanged - present;
    Ok(())
}

/// Restores owners as root; where the target refuses (NFS root squash, FAT, a user
/// namespace), it warns once and goes on, as GNU tar does.
struct Owners {
    enabled: bool,
    failed: u64,
}

impl Owners {
    fn apply(&mut self, path: &Path, header: &tar::Header) {
        if !self.enabled {
            return;
        }
        let id = |v: io::Result<u64>| v.ok().and_then(|v| u32::try_from(v).ok());
        if let Err(e) = std::os::unix::fs::lchown(path, id(header.uid()), id(header.gid())) {
            if self.failed == 0 {
                tracing::warn!(
                    path = %crate::text::PrintablePath(path),
                    "cannot restore owners ({e}); the files keep the restoring user's"
                );
            }
            self.failed += 1;
        }
    }
}

/// Reads a tar stream to its end without writing anything (`verify --deep`).
///
/// # Errors
/// `Read` when the stream fails.
pub fn scan(reader: impl Read) -> Result<TarSummary, RestoreError> {
    let mut archive = tar::Archive::new(reader);
    let mut summary = TarSummary::default();
    for entry in archive.entries().map_err(RestoreError::Read)? {
        let mut entry = entry.map_err(RestoreError::Read)?;
        let kind = entry.header().entry_type();
        if kind == EntryType::Directory
            && let Some(record) = dumpdir_of(&mut entry).map_err(RestoreError::Read)?
        {
            summary.unchanged += record
                .split(|&b| b == 0)
                .filter(|item| item.first() == Some(&b'N'))
                .count() as u64;
            if safe_relative(&entry.path_bytes()).ok().flatten().is_none() {
                // The root's record ("./"): not an entry of the tree.
                continue;
            }
        }
        match kind {
            EntryType::Directory => summary.counts.directories += 1,
            EntryType::Symlink => summary.counts.symlinks += 1,
            EntryType::Regular | EntryType::Continuous | EntryType::Link => {
                summary.counts.files += 1;
            }
            _ => {}
        }
        summary.file_bytes += io::copy(&mut entry, &mut io::sink()).map_err(RestoreError::Read)?;
    }
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(RestoreError::Read)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_checked() {
        assert_eq!(safe_relative(b"a/b").unwrap().unwrap(), Path::new("a/b"));
        assert_eq!(safe_relative(b"./a/").unwrap().unwrap(), Path::new("a"));
        assert_eq!(safe_relative(b"./").unwrap(), None);
        assert!(safe_relative(b"../x").is_err());
        assert!(safe_relative(b"a/../../x").is_err());
        assert!(safe_relative(b"/etc/passwd").is_err());
    }
}
