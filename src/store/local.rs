//! The local directory store: each key is a file under the store root.
//!
//! Writes are atomic: bytes go to a hidden temporary file in the key's folder, which is fsynced
//! and renamed into place, and the folder is fsynced after the rename. A writer dropped without
//! `finish` removes its temporary file; one killed outright leaves it behind, where the orphan
//! sweep (`snapshot::sweep_orphans`) finds it with the rest of the unfinished snapshot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{ObjectMeta, ObjectWriter, Store, StoreError, validate_key};

/// A store rooted at a local (or mounted) directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
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

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
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
}

/// Whether `name` (the last component of a key) is one coffer writes, and so one it may delete:
/// `manifest.json`, `manifest.json.sig`, a part `<source>.<ext>.age.<NNNNN>` (`<source>` one or
/// more ASCII letters, digits, `-`, `_`; `<ext>` `tar.gz`, `sql.gz` or `sha256.gz`; five or
/// more digits, as `pipeline::part_name` writes them), the `coffer check` probe
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
    tmp: PathBuf,
    dst: PathBuf,
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
            fs::rename(&self.tmp, &self.dst)?;
            sync_dir(self.dst.parent().unwrap_or(&self.store.root))?;
            Ok(ObjectMeta {
                key: self.key.clone(),
                size: meta.len(),
                modified: meta.modified().ok(),
                sha256: None,
            })
        };
        match commit() {
            Ok(meta) => Ok(meta),
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                Err(self.store.io_err("committing", &self.key, e))
            }
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned upload: never leave a half-written temporary behind.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all` that also fsyncs the parent of every folder it creates, so a new snapshot
/// folder survives a power loss together with the parts renamed into it.
fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dirs_durably(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

impl Store for LocalStore {
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let dst = self.path_of(key)?;
        let dir = dst.parent().expect("a key has a parent below the root");
        create_dirs_durably(dir).map_err(|e| self.io_err("creating the folder for", key, e))?;
        let name = dst
            .file_name()
            .expect("a key has a file name")
            .to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp-{:08x}", rand::random::<u32>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| self.io_err("creating", key, e))?;
        Ok(Box::new(LocalWriter {
            store: self.clone(),
            key: key.to_string(),
            tmp,
            dst,
            file: Some(file),
        }))
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let path = self.path_of(key)?;
        match File::open(&path) {
            Ok(f) => Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound {
                store: self.to_string(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.io_err("opening", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        // Walk only the folder the prefix points into.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("listing", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_err("listing", prefix, e))?;
                let path = entry.path();
                let meta = entry
                    .metadata()
                    .map_err(|e| self.io_err("listing", prefix, e))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let Some(key) = rel
                    .to_str()
                    .map(|s| s.replace(std::path::MAIN_SEPARATOR, "/"))
                else {
                    continue; // not a name coffer writes
                };
                if key.starts_with(prefix) {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        sha256: None,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err("deleting", key, e)),
        }
        // Remove folders left empty, up to (not including) the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{get_bytes, put_bytes};

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
        put_bytes(&store, "snapshots/a/m", b"1").unwrap();
        store.delete("snapshots/a/m").unwrap();
        store.delete("snapshots/a/m").unwrap();
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
