//! A folder source's index of its last full backup, kept on the backup host (which cannot
//! decrypt what it stored): per regular file its size, mtime and ctime (ns), inode, device
//! and sha256, in the walk's order. A differential backup reads it alongside its own walk
//! (a merge, never a map of every path in memory) to tell unchanged files, which it leaves
//! out, from changed ones, and takes unchanged files' sha256 from it for the checksum list.
//!
//! On disk: `state_dir/index/<source>/<snapshot id>.idx.gz`, 0600, gzip of text lines. The
//! first line is the header (`coffer-index 1`, the snapshot id, what the source was
//! configured as, the folder's device and inode); each further line is `<size> <mtime ns>
//! <ctime ns> <inode> <device> ` followed by the file's `sha256sum` line (its escaping, see
//! `checksums`). An index is written beside the snapshot as `….idx.gz.partial` and renamed
//! only once the snapshot's manifest is committed (`IndexWriter::commit`), so a killed
//! backup never leaves an index ahead of the store.

use std::cmp::Ordering;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

const MAGIC: &str = "coffer-index 1";

/// What an index is of: its full snapshot, the source's configuration, and the folder itself
/// (a folder restored or moved to another disk has another device or inode: a new full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHeader {
    pub snapshot: String,
    /// A fingerprint of the source's configuration (path, excludes, selected folders): an
    /// index of another configuration is not used.
    pub config: String,
    pub root_dev: u64,
    pub root_ino: u64,
}

/// One regular file as the full backup saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The path as the tar names it (relative to the source folder).
    pub path: Vec<u8>,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
    /// Hex sha256 of the content.
    pub sha256: String,
}

impl IndexEntry {
    /// The entry of a file with metadata `meta` and content hash `sha256`.
    pub fn of(path: &[u8], meta: &fs::Metadata, sha256: &str) -> IndexEntry {
        IndexEntry {
            path: path.to_vec(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
            sha256: sha256.to_string(),
        }
    }

    /// Whether a file with metadata `meta` is unchanged since this entry: the same size,
    /// mtime, ctime (which catches a chmod, and an mtime set back), inode and device — the
    /// rule of restic and borg.
    pub fn unchanged(&self, meta: &fs::Metadata) -> bool {
        let now = IndexEntry::of(&[], meta, "");
        self.size == now.size
            && self.mtime_ns == now.mtime_ns
            && self.ctime_ns == now.ctime_ns
            && self.ino == now.ino
            && self.dev == now.dev
    }
}

/// The walk's order of two files' tar paths: depth first, a folder's files before its
/// subfolders, each group by name bytes (`DirectorySource::write_tar`). So files of one folder
/// go by name, a folder's own files come before anything below it, and otherwise the first
/// folder where their paths part decides.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let ((a_dirs, a_name), (b_dirs, b_name)) = (folders_and_name(a), folders_and_name(b));
    for (x, y) in a_dirs.iter().zip(&b_dirs) {
        match x.cmp(y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    // One folder holds the other (or they are the same): its own files come first.
    a_dirs
        .len()
        .cmp(&b_dirs.len())
        .then_with(|| a_name.cmp(b_name))
}

/// A tar path's folders and its last name.
fn folders_and_name(path: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut parts: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    let name = parts.pop().unwrap_or_default();
    (parts, name)
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("index {path}, line {line}: {why}")]
    Corrupt {
        path: PathBuf,
        line: u64,
        why: String,
    },
}

/// Where the index of `source`'s full snapshot `snapshot` lives in `state_dir`.
pub fn index_path(state_dir: &Path, source: &str, snapshot: &str) -> PathBuf {
    state_dir
        .join("index")
        .join(source)
        .join(format!("{snapshot}.idx.gz"))
}

/// An index being written during a full backup, in walk order.
pub struct IndexWriter {
    path: PathBuf,
    partial: PathBuf,
    out: GzEncoder<io::BufWriter<fs::File>>,
    last: Option<Vec<u8>>,
    line: Vec<u8>,
}

impl IndexWriter {
    /// Starts `path`'s partial file (0600; its folder made 0700 if missing).
    ///
    /// # Errors
    /// When the file cannot be created or written.
    pub fn create(path: &Path, header: &IndexHeader) -> Result<IndexWriter, IndexError> {
        let io_err = |source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        let partial = partial_of(path);
        let _ = fs::remove_file(&partial);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_err)?;
        let mut out = GzEncoder::new(io::BufWriter::new(file), Compression::fast());
        writeln!(
            out,
            "{MAGIC}\t{}\t{}\t{}\t{}",
            header.snapshot, header.config, header.root_dev, header.root_ino
        )
        .map_err(io_err)?;
        Ok(IndexWriter {
            path: path.to_path_buf(),
            partial,
            out,
            last: None,
            line: Vec::new(),
        })
    }

    /// Adds a file; files come in walk order.
    ///
    /// # Errors
    /// When the file cannot be written, or `entry` is not after the previous one.
    pub fn push(&mut self, entry: &IndexEntry) -> Result<(), IndexError> {
        if let Some(last) = &self.last
            && walk_order(last, &entry.path) != Ordering::Less
        {
            return Err(IndexError::Corrupt {
                path: self.path.clone(),
                line: 0,
                why: "files pushed out of walk order".into(),
            });
        }
        self.line.clear();
        write!(
            self.line,
            "{} {} {} {} {} ",
            entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino, entry.dev
        )
        .expect("writing to a Vec");
        crate::checksums::push_line(&mut self.line, &entry.sha256, &entry.path);
        self.out
            .write_all(&self.line)
            .map_err(|source| IndexError::Io {
                path: self.partial.clone(),
                source,
            })?;
        match &mut self.last {
            Some(last) => {
                last.clear();
                last.extend_from_slice(&entry.path);
            }
            None => self.last = Some(entry.path.clone()),
        }
        Ok(())
    }

    /// Finishes the partial file (flushed and synced), not yet current: `commit` makes it so
    /// once the snapshot is committed; dropping it instead leaves only a `.partial` that the
    /// next full replaces.
    ///
    /// # Errors
    /// When it cannot be written or synced.
    pub fn finish(self) -> Result<PendingIndex, IndexError> {
        let io_err = |source| IndexError::Io {
            path: self.partial.clone(),
            source,
        };
        let file = self
            .out
            .finish()
            .and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error))
            .map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        Ok(PendingIndex {
            path: self.path,
            partial: self.partial,
        })
    }
}

/// A written index waiting for its snapshot's commit.
#[derive(Debug)]
pub struct PendingIndex {
    path: PathBuf,
    partial: PathBuf,
}

impl PendingIndex {
    /// Makes the index current (after the snapshot's manifest is committed).
    ///
    /// # Errors
    /// When the rename fails.
    pub fn commit(mut self) -> Result<PathBuf, IndexError> {
        let io_err = |source| IndexError::Io {
            path: self.path.clone(),
            source,
        };
        let partial = std::mem::take(&mut self.partial);
        fs::rename(&partial, &self.path).map_err(io_err)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
        }
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for PendingIndex {
    /// An index whose snapshot was never committed is removed (a killed backup's is removed
    /// by the next full of the source).
    fn drop(&mut self) {
        if !self.partial.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.partial);
        }
    }
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// An index being read alongside a walk: `find` is asked for paths in walk order and reads
/// forward only, so memory stays one line whatever the folder's size.
pub struct IndexReader {
    path: PathBuf,
    lines: BufReader<GzDecoder<fs::File>>,
    header: IndexHeader,
    line_no: u64,
    buf: Vec<u8>,
    next: Option<IndexEntry>,
    done: bool,
}

impl IndexReader {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// When it cannot be read or is not an index.
    pub fn open(path: &Path) -> Result<IndexReader, IndexError> {
        let file = fs::File::open(path).map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = IndexReader {
            path: path.to_path_buf(),
            lines: BufReader::new(GzDecoder::new(file)),
            header: IndexHeader {
                snapshot: String::new(),
                config: String::new(),
                root_dev: 0,
                root_ino: 0,
            },
            line_no: 0,
            buf: Vec::new(),
            next: None,
            done: false,
        };
        if !reader.read_line()? {
            return Err(reader.corrupt("empty"));
        }
        let text = String::from_utf8(std::mem::take(&mut reader.buf))
            .map_err(|_| reader.corrupt("the header is not text"))?;
        let fields: Vec<&str> = text.split('\t').collect();
        let number = |s: &str| s.parse::<u64>().ok();
        match fields.as_slice() {
            [magic, snapshot, config, dev, ino] if *magic == MAGIC => {
                let (Some(root_dev), Some(root_ino)) = (number(dev), number(ino)) else {
                    return Err(reader.corrupt("a bad device or inode in the header"));
                };
                reader.header = IndexHeader {
                    snapshot: (*snapshot).to_string(),
                    config: (*config).to_string(),
                    root_dev,
                    root_ino,
                };
            }
            _ => return Err(reader.corrupt("not a coffer index (version 1)")),
        }
        reader.advance()?;
        Ok(reader)
    }

    /// Reads the whole index at `path` once (memory stays one line): its header and its
    /// number of files. A backup does this before it relies on an index, so a damaged one
    /// means a full, not a failed differential halfway through.
    ///
    /// # Errors
    /// When it cannot be read, is cut short or is damaged.
    pub fn check(path: &Path) -> Result<(IndexHeader, u64), IndexError> {
        let mut reader = IndexReader::open(path)?;
        let mut files = 0;
        while reader.next.is_some() {
            files += 1;
            reader.advance()?;
        }
        Ok((reader.header, files))
    }

    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    fn corrupt(&self, why: &str) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            line: self.line_no,
            why: why.to_string(),
        }
    }

    /// Reads the next line (without its newline) into `buf`; false at the end.
    fn read_line(&mut self) -> Result<bool, IndexError> {
        self.buf.clear();
        let n = self
            .lines
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| IndexError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if self.buf.pop() != Some(b'\n') {
            return Err(self.corrupt("the last line is cut short"));
        }
        Ok(true)
    }

    fn advance(&mut self) -> Result<(), IndexError> {
        if self.done || !self.read_line()? {
            self.done = true;
            self.next = None;
            return Ok(());
        }
        let mut rest = self.buf.as_slice();
        let mut fields = [""; 5];
        for field in &mut fields {
            let end = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| self.corrupt("fewer than five numbers"))?;
            *field = std::str::from_utf8(&rest[..end])
                .map_err(|_| self.corrupt("a number is not one"))?;
            rest = &rest[end + 1..];
        }
        let bad = |_| self.corrupt("a number is not one");
        let [size, mtime, ctime, ino, dev] = fields;
        let (size, mtime_ns, ctime_ns, ino, dev) = (
            size.parse::<u64>().map_err(bad)?,
            mtime.parse::<i64>().map_err(bad)?,
            ctime.parse::<i64>().map_err(bad)?,
            ino.parse::<u64>().map_err(bad)?,
            dev.parse::<u64>().map_err(bad)?,
        );
        let line = crate::checksums::parse_line(rest).map_err(|why| self.corrupt(why))?;
        let entry = IndexEntry {
            path: std::os::unix::ffi::OsStrExt::as_bytes(line.path.as_os_str()).to_vec(),
            size,
            mtime_ns,
            ctime_ns,
            ino,
            dev,
            sha256: line.sha256,
        };
        if let Some(prev) = &self.next
            && walk_order(&prev.path, &entry.path) != Ordering::Less
        {
            return Err(self.corrupt("files out of walk order"));
        }
        self.next = Some(entry);
        Ok(())
    }

    /// The entry of `path`, if the index has it. Paths must be asked in walk order; entries
    /// before `path` are skipped for good.
    ///
    /// # Errors
    /// When the index cannot be read or is damaged.
    pub fn find(&mut self, path: &[u8]) -> Result<Option<IndexEntry>, IndexError> {
        loop {
            let Some(next) = &self.next else {
                return Ok(None);
            };
            match walk_order(&next.path, path) {
                Ordering::Less => self.advance()?,
                Ordering::Equal => {
                    let found = self.next.take();
                    self.advance()?;
                    return Ok(found);
                }
                Ordering::Greater => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> IndexHeader {
        IndexHeader {
            snapshot: "20261207T020000Z-000abc".into(),
            config: "cfg".into(),
            root_dev: 2049,
            root_ino: 12,
        }
    }

    fn entry(path: &[u8], n: u64) -> IndexEntry {
        IndexEntry {
            path: path.to_vec(),
            size: n,
            mtime_ns: 1_700_000_000_123_456_789 + n as i64,
            ctime_ns: -5,
            ino: n + 100,
            dev: 2049,
            sha256: format!("{n:064x}"),
        }
    }

    #[test]
    fn the_walk_order_puts_a_folders_files_before_its_subfolders() {
        assert_eq!(walk_order(b"a/x", b"a/b/c"), Ordering::Less);
        assert_eq!(walk_order(b"z", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"a/b/c", b"a.d/x"), Ordering::Less);
        assert_eq!(walk_order(b"a/z/c", b"b/a"), Ordering::Less);
        assert_eq!(walk_order(b"x", b"x"), Ordering::Equal);
        let mut paths: Vec<&[u8]> = vec![
            b"a.txt", b"a/b/c", b"b", b"a/b/a", b"a-b/x", b"a/c", b"a/b.d/x", b"A",
        ];
        paths.sort_by(|x, y| walk_order(x, y));
        let want: Vec<&[u8]> = vec![
            b"A", b"a.txt", b"b", b"a/c", b"a/b/a", b"a/b/c", b"a/b.d/x", b"a-b/x",
        ];
        assert_eq!(paths, want);
    }

    #[test]
    fn the_folder_walk_writes_files_in_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "a/b/c", "a/c", "a-b/y", "a.txt", "a/b.d/x", "b", "a0/z", "A", "a/b/a", "z",
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"x").unwrap();
        }
        let source =
            crate::source::DirectorySource::new(root, crate::source::Excludes::new(&[]).unwrap());
        let mut tar = Vec::new();
        source.write_tar(&mut tar).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .filter(|e| e.header().entry_type() == tar::EntryType::Regular)
            .map(|e| e.path_bytes().into_owned())
            .collect();
        assert_eq!(names.len(), 10, "{names:?}");
        for pair in names.windows(2) {
            assert_eq!(
                walk_order(&pair[0], &pair[1]),
                Ordering::Less,
                "{:?} then {:?}",
                String::from_utf8_lossy(&pair[0]),
                String::from_utf8_lossy(&pair[1])
            );
        }
    }

    #[test]
    fn an_index_becomes_current_only_when_committed_and_reads_back_in_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = index_path(dir.path(), "files", "20261207T020000Z-000abc");
        let names: Vec<&[u8]> = vec![
            b"a.txt",
            b"back\\slash",
            b"caf\xe9",
            b"z z",
            b"a/b",
            b"a/new\nline",
        ];
        let mut w = IndexWriter::create(&path, &header()).unwrap();
        for (i, n) in names.iter().enumerate() {
            w.push(&entry(n, i as u64)).unwrap();
        }
        // Out of order is refused.
        assert!(w.push(&entry(b"a", 9)).is_err());
        let pending = w.finish().unwrap();
        assert!(!path.exists(), "not current before the commit");
        assert!(IndexReader::open(&path).is_err());
        let committed = pending.commit().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&committed).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let mut r = IndexReader::open(&path).unwrap();
        assert_eq!(r.header(), &header());
        // Asked in walk order, with names the index does not hold in between.
        assert_eq!(r.find(b"a").unwrap(), None);
        assert_eq!(r.find(b"a.txt").unwrap(), Some(entry(b"a.txt", 0)));
        assert_eq!(r.find(b"b").unwrap(), None);
        assert_eq!(r.find(b"caf\xe9").unwrap(), Some(entry(b"caf\xe9", 2)));
        assert_eq!(r.find(b"z z").unwrap(), Some(entry(b"z z", 3)));
        assert_eq!(r.find(b"a/b").unwrap(), Some(entry(b"a/b", 4)));
        assert_eq!(r.find(b"a/c").unwrap(), None);
        assert_eq!(
            r.find(b"a/new\nline").unwrap(),
            Some(entry(b"a/new\nline", 5))
        );
        assert_eq!(r.find(b"b/x").unwrap(), None);

        let mut all = IndexReader::open(&path).unwrap();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(all.find(n).unwrap(), Some(entry(n, i as u64)), "{i}");
        }
    }

    #[test]
    fn a_damaged_index_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.idx.gz");
        let write = |text: &[u8]| {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(text).unwrap();
            fs::write(&path, e.finish().unwrap()).unwrap();
        };
        write(b"something else\n");
        assert!(matches!(
            IndexReader::open(&path),
            Err(IndexError::Corrupt { line: 1, .. })
        ));
        let good = format!("{MAGIC}\tid\tcfg\t1\t2\n");
        write(format!("{good}1 2 3 4\n").as_bytes());
        let err = IndexReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
        write(format!("{good}1 2 3 4 5 {}  x", "0".repeat(64)).as_bytes());
        let err = IndexReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("cut short"), "{err}");
    }

    #[test]
    fn a_chmod_or_an_mtime_set_back_is_a_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"content").unwrap();
        let seen = IndexEntry::of(b"f", &fs::metadata(&f).unwrap(), "x");
        assert!(seen.unchanged(&fs::metadata(&f).unwrap()));
        // ctime moves on any inode change; wait past the clock's granularity first.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!seen.unchanged(&fs::metadata(&f).unwrap()), "chmod");
        let seen = IndexEntry::of(b"f", &fs::metadata(&f).unwrap(), "x");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        file.write_all_at_start(b"CONTENT");
        let old = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_nanos(seen.mtime_ns as u64);
        file.set_modified(old).unwrap();
        let now = fs::metadata(&f).unwrap();
        assert_eq!(now.len(), seen.size);
        assert!(
            !seen.unchanged(&now),
            "same size, mtime set back: ctime differs"
        );
    }

    trait WriteAtStart {
        fn write_all_at_start(&self, bytes: &[u8]);
    }

    impl WriteAtStart for fs::File {
        fn write_all_at_start(&self, bytes: &[u8]) {
            use std::os::unix::fs::FileExt;
            self.write_all_at(bytes, 0).unwrap();
        }
    }
}
