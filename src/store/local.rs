//! The local directory store: each key is a file under the store root.
//!
//! Writes are atomic: bytes go to a hidden temporary file in the key's folder, which is fsynced
//! and renamed into place, and the folder is fsynced after the rename. A writer dropped without
//! `finish` removes its temporary file; one killed outright leaves it behind, where the orphan
//! sweep (`snapshot::sweep_orphans`) finds it with the rest of the unfinished snapshot.
//!
//! NEVER FOLLOW A LINK BELOW THE ROOT. Whoever can write the store folder (a NAS share) may
//! swap any folder or object for a symlink, even while coffer runs as root. So every operation
//! opens the root once (the operator's own path: a symlink or mount there is followed), then
//! each folder of the key relative to its parent's descriptor with `O_NOFOLLOW|O_DIRECTORY`,
//! and works on the last component relative to that folder's descriptor: objects are opened
//! with `O_NOFOLLOW` and must be regular files, listing skips links and special files, and
//! `unlinkat` removes a link itself, never what it points to. A folder swapped after it was
//! opened changes nothing: the descriptor still names the folder that was checked.
//!
//! Per-component `openat` rather than `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`: it works
//! on every kernel and under seccomp profiles that refuse `openat2`, and every operation needs
//! the descriptor of each folder anyway (to create folders and fsync their parent, to remove
//! empty folders bottom-up after a delete).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{ObjectMeta, ObjectWriter, Store, StoreError, validate_key};

/// A store rooted at a local (or mounted) directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// Flags of every folder opened below the root.
const FOLDER: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Why coffer refuses a link below the root.
const NO_LINKS: &str = "coffer never follows links in a store";
/// Why coffer refuses a FIFO, socket or device where an object should be.
const ONLY_FILES: &str = "coffer reads only regular files in a store";

/// Why the folders of a key could not be opened.
enum Walk {
    /// A folder (or the root) does not exist.
    Missing,
    /// The folder `path` (relative to the root) is a symlink, or not a folder at all.
    Refused {
        path: String,
        link: bool,
    },
    Io(io::Error),
}

impl LocalStore {
    /// A store at `root`; the folder is created on the first write.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_err(&self, op: &'static str, key: &str, source: io::Error) -> StoreError {
        StoreError::Io {
            store: self.to_string(),
            op,
            key: key.to_string(),
            // A local disk fault does not heal by itself; only interrupted calls are worth a retry.
            retryable: source.kind() == io::ErrorKind::Interrupted,
            source,
        }
    }

    /// The error for a key that leads through, or ends in, something coffer does not follow
    /// or read: `what` it is, and why that is refused.
    fn refused(&self, op: &'static str, key: &str, what: &str, why: &str) -> StoreError {
        let msg =
            format!("{what}: {why}; someone with write access to the store may have planted it");
        self.io_err(op, key, io::Error::other(msg))
    }

    fn walk_err(&self, op: &'static str, key: &str, walk: Walk) -> StoreError {
        match walk {
            Walk::Missing => StoreError::NotFound {
                store: self.to_string(),
                key: key.to_string(),
            },
            Walk::Refused { path, link } => {
                let path = escape(path.as_bytes());
                if link {
                    self.refused(op, key, &format!("'{path}' is a symbolic link"), NO_LINKS)
                } else {
                    let what = format!("'{path}' is not a folder");
                    self.refused(op, key, &what, "a key's folders must be folders")
                }
            }
            Walk::Io(e) => self.io_err(op, key, e),
        }
    }

    /// Opens the root (following the operator's own path) and then each of `folders` below
    /// it without following a link; with `create`, makes the missing ones, fsyncing each
    /// parent. Returns the root's descriptor followed by one per folder.
    fn open_folders(&self, folders: &[&str], create: bool) -> Result<Vec<OwnedFd>, Walk> {
        let root = rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => Walk::Missing,
            e => Walk::Io(e.into()),
        })?;
        let mut fds = vec![root];
        for (i, name) in folders.iter().enumerate() {
            let parent = fds.last().expect("the root is first");
            let refused = |link| Walk::Refused {
                path: folders[..=i].join("/"),
                link,
            };
            let mut made = false;
            let fd = loop {
                match rustix::fs::openat(parent, *name, FOLDER, Mode::empty()) {
                    Ok(fd) => break fd,
                    Err(Errno::NOENT) if create && !made => {
                        made = true;
                        match rustix::fs::mkdirat(parent, *name, Mode::from_raw_mode(0o777)) {
                            // A new folder survives a power loss with the parts renamed into it.
                            Ok(()) => rustix::fs::fsync(parent).map_err(|e| Walk::Io(e.into()))?,
                            Err(Errno::EXIST) => {} // made meanwhile by another writer
                            Err(e) => return Err(Walk::Io(e.into())),
                        }
                    }
                    Err(Errno::NOENT) => return Err(Walk::Missing),
                    Err(Errno::LOOP | Errno::NOTDIR) => {
                        return Err(refused(is_link(parent, *name)));
                    }
                    Err(e) => return Err(Walk::Io(e.into())),
                }
            };
            fds.push(fd);
        }
        Ok(fds)
    }

    /// Warns that the entry `key` of a listing is not an object and is skipped.
    fn skipped(&self, key: &[u8], kind: FileType) {
        let (what, why) = match kind {
            FileType::Symlink => ("a symbolic link", NO_LINKS),
            FileType::Fifo => ("a FIFO", ONLY_FILES),
            FileType::Socket => ("a socket", ONLY_FILES),
            FileType::CharacterDevice | FileType::BlockDevice => ("a device", ONLY_FILES),
            _ => ("not a regular file", ONLY_FILES),
        };
        tracing::warn!(
            "{self}: skipped '{}', which is {what}: {why}; someone with write access to the \
             store may have planted it",
            escape(key)
        );
    }
}

/// Whether `name` in `folder` is a symlink. `O_NOFOLLOW|O_DIRECTORY` fails on a link with
/// ENOTDIR (Linux) or ELOOP, as on a file, so the two are told apart by a look at the entry.
fn is_link<P: rustix::path::Arg>(folder: &OwnedFd, name: P) -> bool {
    rustix::fs::statat(folder, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// The folders and the last component of a valid key.
fn split(key: &str) -> (Vec<&str>, &str) {
    let mut folders: Vec<&str> = key.split('/').collect();
    let name = folders.pop().expect("split yields at least one piece");
    (folders, name)
}

/// A name for messages and logs: bytes below 0x20, 0x7f and bytes that are not UTF-8 are
/// written `\xNN`, so a planted name cannot forge log lines or move the terminal's cursor.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c < ' ' || c == '\x7f' {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The size a stat reports.
// The `Stat` fields' types differ between architectures: the conversions are needed elsewhere.
#[allow(clippy::useless_conversion)]
fn size(st: &rustix::fs::Stat) -> u64 {
    u64::try_from(i64::from(st.st_size)).unwrap_or(0)
}

/// The modification time a stat reports.
#[allow(clippy::useless_conversion)]
fn modified(st: &rustix::fs::Stat) -> Option<SystemTime> {
    let secs = i64::from(st.st_mtime);
    let nanos = Duration::from_nanos(u64::from(st.st_mtime_nsec));
    match u64::try_from(secs) {
        Ok(s) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s) + nanos),
        Err(_) => SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(nanos),
    }
}

/// Whether `name` (the last component of a key) is one coffer writes, and so one it may delete:
/// `manifest.json`, `manifest.json.sig`, a part `<source>.<ext>.age.<NNNNN>` (`<source>` one or
/// more ASCII letters, digits, `-`, `_`; `<ext>` `tar.gz`, `sql.gz` or `sha256.gz`; five or
/// more digits, as `snapshot::part_name` writes them), the `coffer check` probe
/// `coffer-check-<16 lowercase hex>`, or the temporary name `.<any of those>.tmp-<8 lowercase
/// hex>` of an upload still running or cut short.
///
/// Anything else in a store was put there by someone else; coffer leaves it alone.
pub fn is_coffer_name(name: &str) -> bool {
    match name.strip_prefix('.') {
        Some(hidden) => hidden
            .rsplit_once(".tmp-")
            .is_some_and(|(base, tag)| is_lower_hex(tag, 8) && is_object_name(base)),
        None => is_object_name(name),
    }
}

fn is_object_name(name: &str) -> bool {
    name == "manifest.json"
        || name == "manifest.json.sig"
        || name
            .strip_prefix("coffer-check-")
            .is_some_and(|tag| is_lower_hex(tag, 16))
        || is_part_name(name)
}

/// `<source>.<ext>.age.<NNNNN>`.
fn is_part_name(name: &str) -> bool {
    let Some((stream, number)) = name.rsplit_once('.') else {
        return false;
    };
    if number.len() < 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(source) = stream.strip_suffix(".age").and_then(|s| {
        ["tar.gz", "sql.gz", "sha256.gz"]
            .iter()
            .find_map(|ext| s.strip_suffix(ext)?.strip_suffix('.'))
    }) else {
        return false;
    };
    !source.is_empty()
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl std::fmt::Display for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "local store {}", self.root.display())
    }
}

struct LocalWriter {
    store: LocalStore,
    key: String,
    /// The key's folder, opened without following a link: the temporary file is renamed
    /// and removed in it, whatever happens to its path meanwhile.
    folder: OwnedFd,
    tmp: String,
    name: String,
    file: Option<File>,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("object writer already finished")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let file = self.file.take().expect("finish is called once");
        let commit = || -> io::Result<ObjectMeta> {
            file.sync_all()?;
            let meta = file.metadata()?;
            drop(file);
            rustix::fs::renameat(&self.folder, &self.tmp, &self.folder, &self.name)?;
            rustix::fs::fsync(&self.folder)?;
            Ok(ObjectMeta {
                key: self.key.clone(),
                size: meta.len(),
                modified: meta.modified().ok(),
                sha256: None,
                etag: None,
            })
        };
        match commit() {
            Ok(meta) => Ok(meta),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.folder, &self.tmp, AtFlags::empty());
                Err(self.store.io_err("committing", &self.key, e))
            }
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned upload: never leave a half-written temporary behind.
            let _ = rustix::fs::unlinkat(&self.folder, &self.tmp, AtFlags::empty());
        }
    }
}

/// `create_dir_all` that also fsyncs the parent of every folder it creates. Only for the
/// root, the operator's own path (links in it are followed); folders below it are made by
/// `LocalStore::open_folders`.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dirs_durably(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => File::open(parent)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

impl Store for LocalStore {
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        validate_key(key)?;
        let (folders, name) = split(key);
        create_dirs_durably(&self.root)
            .map_err(|e| self.io_err("creating the folder for", key, e))?;
        let folder = match self.open_folders(&folders, true) {
            Ok(mut fds) => fds.pop().expect("the root is first"),
            // Made, then removed by someone else before it could be opened: no object is
            // "not found" here, the upload failed.
            Err(Walk::Missing) => {
                let gone = io::Error::new(io::ErrorKind::NotFound, "a folder vanished");
                return Err(self.io_err("creating the folder for", key, gone));
            }
            Err(w) => return Err(self.walk_err("creating the folder for", key, w)),
        };
        let tmp = format!(".{name}.tmp-{:08x}", rand::random::<u32>());
        // O_EXCL: never write through a link or into a file someone planted under this name.
        let fd = rustix::fs::openat(
            &folder,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .map_err(|e| self.io_err("creating", key, e.into()))?;
        Ok(Box::new(LocalWriter {
            store: self.clone(),
            key: key.to_string(),
            folder,
            tmp,
            name: name.to_string(),
            file: Some(File::from(fd)),
        }))
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        validate_key(key)?;
        let (folders, name) = split(key);
        let folder = self
            .open_folders(&folders, false)
            .map_err(|w| self.walk_err("opening", key, w))?
            .pop()
            .expect("the root is first");
        let not_a_file = |kind| match kind {
            FileType::Symlink => self.refused("opening", key, "it is a symbolic link", NO_LINKS),
            _ => self.refused(
                "opening",
                key,
                "it is not a regular file (a folder, FIFO, socket or device)",
                ONLY_FILES,
            ),
        };
        // A look first, so a FIFO or device planted under an object's name is never opened.
        match rustix::fs::statat(&folder, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            Ok(st) => return Err(not_a_file(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => {
                return Err(StoreError::NotFound {
                    store: self.to_string(),
                    key: key.to_string(),
                });
            }
            Err(e) => return Err(self.io_err("opening", key, e.into())),
        }
        // Swapped since that look: O_NOFOLLOW refuses a link, O_NONBLOCK keeps a FIFO from
        // hanging the open, and fstat below judges what was opened. A file under a lease
        // (Samba oplock, NFS delegation) refuses O_NONBLOCK: wait for the lease then.
        let open = |flags: OFlags| {
            rustix::fs::openat(
                &folder,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
                Mode::empty(),
            )
        };
        let fd = match open(OFlags::NONBLOCK) {
            Err(Errno::WOULDBLOCK) => open(OFlags::empty()),
            other => other,
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                return Err(StoreError::NotFound {
                    store: self.to_string(),
                    key: key.to_string(),
                });
            }
            Err(Errno::LOOP) => return Err(not_a_file(FileType::Symlink)),
            // What opening a socket says.
            Err(Errno::NXIO) => return Err(not_a_file(FileType::Socket)),
            Err(e) => return Err(self.io_err("opening", key, e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| self.io_err("opening", key, e.into()))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(not_a_file(kind));
        }
        // A regular file: reads block as they always do.
        rustix::fs::fcntl_getfl(&fd)
            .and_then(|f| rustix::fs::fcntl_setfl(&fd, f - OFlags::NONBLOCK))
            .map_err(|e| self.io_err("opening", key, e.into()))?;
        Ok(Box::new(io::BufReader::with_capacity(
            256 * 1024,
            File::from(fd),
        )))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        // Walk only the folder the prefix points into.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let folders: Vec<&str> = if dir_part.is_empty() {
            Vec::new()
        } else {
            dir_part.split('/').collect()
        };
        // No valid key lies below an empty, `.` or `..` segment; and `..` must never be opened.
        if folders
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Ok(out);
        }
        let start = match self.open_folders(&folders, false) {
            Ok(mut fds) => fds.pop().expect("the root is first"),
            Err(Walk::Missing) => return Ok(out),
            Err(Walk::Refused { path, link: true }) => {
                self.skipped(path.as_bytes(), FileType::Symlink);
                return Ok(out);
            }
            // A file where the prefix's folder would be: no object below it.
            Err(Walk::Refused { link: false, .. }) => return Ok(out),
            Err(Walk::Io(e)) => return Err(self.io_err("listing", prefix, e)),
        };
        let start_rel = if dir_part.is_empty() {
            String::new()
        } else {
            format!("{dir_part}/")
        };
        // Folders still to read: the parent's descriptor (shared by its sub-folders, so only
        // one descriptor per level stays open however wide the tree), the name, and the key
        // prefix of what is inside.
        let mut stack: Vec<(Rc<OwnedFd>, Option<CString>, String)> =
            vec![(Rc::new(start), None, start_rel)];
        while let Some((parent, name, rel)) = stack.pop() {
            let fd = match &name {
                None => parent,
                Some(name) => {
                    match rustix::fs::openat(&*parent, name.as_c_str(), FOLDER, Mode::empty()) {
                        Ok(fd) => Rc::new(fd),
                        Err(Errno::NOENT) => continue, // gone since its parent was read
                        // Swapped since its parent was read: a link is skipped and named, a
                        // file is left out like any other file its parent gained meanwhile.
                        Err(Errno::LOOP | Errno::NOTDIR) => {
                            if is_link(&parent, name.as_c_str()) {
                                let link = rel.strip_suffix('/').unwrap_or(&rel);
                                self.skipped(link.as_bytes(), FileType::Symlink);
                            }
                            continue;
                        }
                        Err(e) => return Err(self.io_err("listing", prefix, e.into())),
                    }
                }
            };
            let dir = match rustix::fs::Dir::read_from(&*fd) {
                Ok(d) => d,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.io_err("listing", prefix, e.into())),
            };
            for entry in dir {
                let entry = entry.map_err(|e| self.io_err("listing", prefix, e.into()))?;
                let name: &CStr = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                let st = match rustix::fs::statat(&*fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => continue, // removed since the folder was read
                    Err(e) => return Err(self.io_err("listing", prefix, e.into())),
                };
                let kind = FileType::from_raw_mode(st.st_mode);
                let Ok(name_str) = name.to_str() else {
                    if kind != FileType::Directory && kind != FileType::RegularFile {
                        let mut key = rel.as_bytes().to_vec();
                        key.extend_from_slice(name.to_bytes());
                        self.skipped(&key, kind);
                    }
                    continue; // not a name coffer writes
                };
                let key = format!("{rel}{name_str}");
                match kind {
                    FileType::Directory => {
                        let inside = format!("{key}/");
                        // Only folders that can hold a key with the prefix.
                        if inside.starts_with(prefix) || prefix.starts_with(&inside) {
                            stack.push((Rc::clone(&fd), Some(name.to_owned()), inside));
                        }
                    }
                    FileType::RegularFile if key.starts_with(prefix) => out.push(ObjectMeta {
                        key,
                        size: size(&st),
                        modified: modified(&st),
                        sha256: None,
                        etag: None,
                    }),
                    FileType::RegularFile => {}
                    _ if key.starts_with(prefix) => self.skipped(key.as_bytes(), kind),
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let (folders, name) = split(key);
        if !is_coffer_name(name) {
            return Err(StoreError::InvalidKey {
                key: key.to_string(),
                why: "coffer deletes only the names it writes",
            });
        }
        let fds = match self.open_folders(&folders, false) {
            Ok(fds) => fds,
            Err(Walk::Missing) => return Ok(()),
            Err(w) => return Err(self.walk_err("deleting", key, w)),
        };
        let folder = fds.last().expect("the root is first");
        // unlinkat removes a link itself, never what it points to.
        match rustix::fs::unlinkat(folder, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(self.io_err("deleting", key, e.into())),
        }
        // Remove folders left empty, up to (not including) the root, each by name in the
        // descriptor of its parent: a folder swapped for a link meanwhile is refused
        // (ENOTDIR), never followed.
        for (i, dir) in folders.iter().enumerate().rev() {
            if rustix::fs::unlinkat(&fds[i], *dir, AtFlags::REMOVEDIR).is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{get_bytes, put_bytes};
    use std::fs;
    use std::os::unix::fs::symlink;

    const PART: &str = "files.tar.gz.age.00001";

    /// A store, and next to it a folder "outside" the store holding a file named like a part
    /// and a manifest: what an attacker points links at.
    fn attacked() -> (tempfile::TempDir, LocalStore, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join(PART), b"root's secret").unwrap();
        fs::write(outside.join("manifest.json"), b"root's config").unwrap();
        let store = LocalStore::new(dir.path().join("store"));
        fs::create_dir_all(store.root().join("snapshots")).unwrap();
        (dir, store, outside)
    }

    /// The outside folder holds exactly what `attacked` put there.
    fn assert_untouched(outside: &Path) {
        let mut names: Vec<_> = fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["files.tar.gz.age.00001", "manifest.json"]);
        assert_eq!(fs::read(outside.join(PART)).unwrap(), b"root's secret");
        assert_eq!(
            fs::read(outside.join("manifest.json")).unwrap(),
            b"root's config"
        );
    }

    fn keys(store: &LocalStore, prefix: &str) -> Vec<String> {
        store
            .list(prefix)
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    }

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn get_refuses_an_object_that_is_a_link() {
        let (_dir, store, outside) = attacked();
        let folder = store.root().join("snapshots/a");
        fs::create_dir(&folder).unwrap();
        symlink(outside.join(PART), folder.join(PART)).unwrap();
        let err = get_bytes(&store, &format!("snapshots/a/{PART}")).unwrap_err();
        assert!(!err.is_not_found());
        let msg = err.to_string();
        assert!(msg.contains("it is a symbolic link"), "{msg}");
        assert!(
            msg.contains("coffer never follows links in a store"),
            "{msg}"
        );
        assert_untouched(&outside);
    }

    #[test]
    fn get_refuses_a_fifo_without_waiting_for_a_writer() {
        let (_dir, store, _outside) = attacked();
        let folder = store.root().join("snapshots/a");
        fs::create_dir(&folder).unwrap();
        mkfifo(&folder.join(PART));
        let msg = store
            .get(&format!("snapshots/a/{PART}"))
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
    }

    #[test]
    fn a_folder_that_is_a_link_is_never_followed() {
        let (_dir, store, outside) = attacked();
        symlink(&outside, store.root().join("snapshots/a")).unwrap();
        let part = format!("snapshots/a/{PART}");
        let msg = store.get(&part).err().unwrap().to_string();
        assert!(msg.contains("'snapshots/a' is a symbolic link"), "{msg}");
        assert!(store.put("snapshots/a/manifest.json").is_err());
        assert!(store.put("snapshots/a/deeper/manifest.json").is_err());
        assert!(store.delete(&part).is_err());
        assert!(store.delete("snapshots/a/manifest.json").is_err());
        assert!(keys(&store, "").is_empty());
        assert!(keys(&store, "snapshots/").is_empty());
        assert!(keys(&store, "snapshots/a/").is_empty());
        assert_untouched(&outside);
        // The same with the link higher up.
        fs::remove_file(store.root().join("snapshots/a")).unwrap();
        fs::remove_dir(store.root().join("snapshots")).unwrap();
        symlink(outside.parent().unwrap(), store.root().join("snapshots")).unwrap();
        assert!(store.get(&format!("snapshots/outside/{PART}")).is_err());
        assert!(store.delete(&format!("snapshots/outside/{PART}")).is_err());
        assert!(store.put("snapshots/outside/manifest.json").is_err());
        assert!(keys(&store, "snapshots/").is_empty());
        assert_untouched(&outside);
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_listing_is_not_followed() {
        // The sweep's race: the listing sees a real part, then its folder becomes a link.
        let (_dir, store, outside) = attacked();
        put_bytes(&store, &format!("snapshots/a/{PART}"), b"mine").unwrap();
        let listed = keys(&store, "snapshots/");
        let snapshots = store.root().join("snapshots");
        fs::rename(snapshots.join("a"), snapshots.join("moved")).unwrap();
        symlink(&outside, snapshots.join("a")).unwrap();
        for key in &listed {
            let msg = store.delete(key).unwrap_err().to_string();
            assert!(msg.contains("'snapshots/a' is a symbolic link"), "{msg}");
        }
        assert_untouched(&outside);
        assert_eq!(
            fs::read(snapshots.join("moved").join(PART)).unwrap(),
            b"mine"
        );
    }

    #[test]
    fn a_writer_whose_folder_is_swapped_commits_in_the_folder_it_opened() {
        let (_dir, store, outside) = attacked();
        let mut w = store.put("snapshots/a/manifest.json").unwrap();
        w.write_all(b"{}").unwrap();
        let snapshots = store.root().join("snapshots");
        fs::rename(snapshots.join("a"), snapshots.join("moved")).unwrap();
        symlink(&outside, snapshots.join("a")).unwrap();
        w.finish().unwrap();
        assert_untouched(&outside);
        assert_eq!(
            fs::read(snapshots.join("moved/manifest.json")).unwrap(),
            b"{}"
        );
        // And a dropped one removes its temporary there too.
        let mut w = store.put("snapshots/b/manifest.json").unwrap();
        w.write_all(b"partial").unwrap();
        fs::rename(snapshots.join("b"), snapshots.join("moved-b")).unwrap();
        symlink(&outside, snapshots.join("b")).unwrap();
        drop(w);
        assert_eq!(fs::read_dir(snapshots.join("moved-b")).unwrap().count(), 0);
        assert_untouched(&outside);
    }

    #[test]
    fn put_replaces_a_planted_link_instead_of_writing_through_it() {
        let (_dir, store, outside) = attacked();
        let folder = store.root().join("snapshots/a");
        fs::create_dir(&folder).unwrap();
        symlink(outside.join("manifest.json"), folder.join("manifest.json")).unwrap();
        put_bytes(&store, "snapshots/a/manifest.json", b"{}").unwrap();
        let meta = fs::symlink_metadata(folder.join("manifest.json")).unwrap();
        assert!(meta.is_file());
        assert_eq!(fs::read(folder.join("manifest.json")).unwrap(), b"{}");
        assert_untouched(&outside);
    }

    #[test]
    fn list_skips_links_fifos_and_sockets() {
        let (_dir, store, outside) = attacked();
        put_bytes(&store, &format!("snapshots/a/{PART}"), b"mine").unwrap();
        let folder = store.root().join("snapshots/a");
        symlink(outside.join(PART), folder.join("files.tar.gz.age.00002")).unwrap();
        symlink("/nonexistent", folder.join("files.tar.gz.age.00003")).unwrap();
        mkfifo(&folder.join("files.tar.gz.age.00004"));
        mkfifo(&folder.join("bad\nname\u{1b}[2J"));
        let _socket =
            std::os::unix::net::UnixListener::bind(folder.join("files.tar.gz.age.00005")).unwrap();
        symlink(&outside, store.root().join("snapshots/b")).unwrap();
        let want = [format!("snapshots/a/{PART}")];
        assert_eq!(keys(&store, ""), want);
        assert_eq!(keys(&store, "snapshots/"), want);
        assert_eq!(keys(&store, "snapshots/a/"), want);
        assert!(keys(&store, "snapshots/b/").is_empty());
        let meta = &store.list("snapshots/a/").unwrap()[0];
        assert_eq!(meta.size, 4);
        assert!(meta.modified.is_some());
        assert_untouched(&outside);
    }

    #[test]
    fn delete_refuses_names_coffer_does_not_write() {
        let (_dir, store, _outside) = attacked();
        let folder = store.root().join("snapshots/a");
        fs::create_dir(&folder).unwrap();
        for name in ["shadow", "x.00001", "manifest.json.bak"] {
            fs::write(folder.join(name), b"theirs").unwrap();
            let key = format!("snapshots/a/{name}");
            match store.delete(&key) {
                Err(StoreError::InvalidKey { why, .. }) => {
                    assert_eq!(why, "coffer deletes only the names it writes");
                }
                other => panic!("{key}: {other:?}"),
            }
            assert_eq!(fs::read(folder.join(name)).unwrap(), b"theirs");
        }
        assert!(matches!(
            store.delete("passwd"),
            Err(StoreError::InvalidKey { .. })
        ));
    }

    #[test]
    fn deleting_a_link_named_like_a_part_removes_the_link_only() {
        let (_dir, store, outside) = attacked();
        let folder = store.root().join("snapshots/a");
        fs::create_dir(&folder).unwrap();
        symlink(outside.join(PART), folder.join(PART)).unwrap();
        store.delete(&format!("snapshots/a/{PART}")).unwrap();
        assert!(fs::symlink_metadata(folder.join(PART)).is_err());
        assert!(!store.root().join("snapshots").exists(), "empty folders go");
        assert!(store.root().exists(), "the root stays");
        assert_untouched(&outside);
    }

    #[test]
    fn escapes_control_and_non_utf8_bytes() {
        assert_eq!(
            escape(b"a\nb\x1b[2J\x7f\xff\xc3\xa9z"),
            "a\\x0ab\\x1b[2J\\x7f\\xff\u{e9}z"
        );
    }

    #[test]
    fn put_is_invisible_until_finished_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut w = store.put("snapshots/a/x.00001").unwrap();
        w.write_all(b"hello").unwrap();
        assert!(
            store
                .get("snapshots/a/x.00001")
                .is_err_and(|e| e.is_not_found())
        );
        let meta = w.finish().unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(get_bytes(&store, "snapshots/a/x.00001").unwrap(), b"hello");
        let keys: Vec<_> = store
            .list("snapshots/")
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["snapshots/a/x.00001"]);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut w = store.put("snapshots/a/x").unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(store.list("").unwrap().is_empty());
    }

    #[test]
    fn delete_removes_empty_folders_and_tolerates_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        put_bytes(&store, "snapshots/a/manifest.json", b"1").unwrap();
        store.delete("snapshots/a/manifest.json").unwrap();
        store.delete("snapshots/a/manifest.json").unwrap();
        assert!(!dir.path().join("snapshots").exists());
    }

    #[test]
    fn knows_the_names_coffer_writes() {
        for name in [
            "manifest.json",
            "manifest.json.sig",
            "files.tar.gz.age.00001",
            "db_main-2.sql.gz.age.00042",
            "files.sha256.gz.age.00001",
            "files.tar.gz.age.123456",
            "coffer-check-0123456789abcdef",
            ".manifest.json.tmp-0a1b2c3d",
            ".manifest.json.sig.tmp-0a1b2c3d",
            ".files.tar.gz.age.00003.tmp-ffffffff",
            ".coffer-check-0123456789abcdef.tmp-00000000",
        ] {
            assert!(is_coffer_name(name), "{name}");
        }
        for name in [
            "",
            "m",
            "x.00001",
            "manifest.json.bak",
            "Manifest.json",
            ".tar.gz.age.00001",
            "files.tar.gz.age.0001",
            "files.tar.gz.age.00001x",
            "files.tar.gz.age.",
            "files.tar.bz2.age.00001",
            "files.tar.gz.00001",
            "a b.tar.gz.age.00001",
            "a.b.tar.gz.age.00001",
            "coffer-check-0123456789ABCDEF",
            "coffer-check-0123456789abcde",
            ".manifest.json.tmp-0A1B2C3D",
            ".manifest.json.tmp-0a1b2c3",
            ".shadow.tmp-0a1b2c3d",
            "manifest.json.tmp-0a1b2c3d",
            "..manifest.json.tmp-0a1b2c3d.tmp-0a1b2c3d",
        ] {
            assert!(!is_coffer_name(name), "{name}");
        }
    }

    #[test]
    fn rejects_escaping_keys() {
        let store = LocalStore::new("/nonexistent");
        for key in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(
                matches!(store.get(key), Err(StoreError::InvalidKey { .. })),
                "{key}"
            );
        }
    }
}
