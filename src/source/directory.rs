//! A `directory` source: walks a folder and writes it as a pax tar.
//!
//! Entries are written in a stable order, paths relative to the source folder: depth first, a
//! folder's files and links before its subfolders, each group sorted by name bytes — the
//! order a folder's index is written and read in (`index::walk_order`). Regular files, directories (empty ones too) and symlinks (as links,
//! never followed) keep their permission bits and mtimes (whole seconds); names that do not fit
//! a ustar header (long or non-UTF-8) and sizes of 8 GiB or more get pax extended headers, so
//! stock GNU tar and bsdtar extract the stream.
//!
//! A file that vanishes, changes or cannot be read while the backup runs is a warning, not a
//! failure: the entry keeps the size announced in its header (short reads are padded with zero
//! bytes) and the warning names the path.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::index::{IndexEntry, IndexReader, IndexWriter};
use sha2::Digest;
use tar::{EntryType, Header};

use crate::snapshot::EntryCounts;

/// Largest size a ustar header field holds in octal.
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

/// Why a directory could not be backed up at all.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("source folder {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("source folder {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("invalid exclude pattern '{pattern}': {why}")]
    BadExclude { pattern: String, why: String },
    #[error("writing the archive: {0}")]
    Write(#[from] io::Error),
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
}

/// What a walk is measured against: nothing (a full, optionally writing the index of it), or
/// the index of the last full (a differential).
pub enum Against<'a> {
    Full(Option<&'a mut IndexWriter>),
    /// Every folder carries GNU tar's `GNU.dumpdir` record listing all its children (`Y` in
    /// this archive, `N` unchanged and left out, `D` a folder), the root included (`./`), so
    /// `tar -xG` applies deletions; unchanged files are left out.
    Differential(&'a mut IndexReader),
}

/// What kind of trouble a warning reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WarningKind {
    /// Deleted between the listing and the read.
    Vanished,
    /// Size or mtime changed while it was read.
    Changed,
    /// Permission denied or an I/O error.
    Unreadable,
    /// A socket, FIFO or device node: not backed up.
    Special,
}

impl WarningKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::Vanished => "vanished",
            WarningKind::Changed => "changed",
            WarningKind::Unreadable => "unreadable",
            WarningKind::Special => "special",
        }
    }
}

/// A non-fatal problem with one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    /// Path relative to the source folder.
    pub path: PathBuf,
    pub detail: String,
}

/// What a walk wrote.
#[derive(Debug, Default)]
pub struct WalkOutcome {
    pub counts: EntryCounts,
    /// Bytes of regular files' content in the tar.
    pub file_bytes: u64,
    /// Every regular file's sha256, in `sha256sum` format (`crate::checksums`); in a
    /// differential, unchanged files too (their sha256 from the index).
    pub checksums: crate::checksums::ChecksumList,
    pub warnings: Vec<Warning>,
    /// A differential: files left out as unchanged since the base full, and their bytes
    /// (`counts` and `file_bytes` count the whole tree, these included).
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
}

/// Glob patterns of paths to leave out. A pattern with a `/` matches the path relative to the
/// source folder (`private/backups/**`); one without matches the name at any depth (`*.pyc`).
/// `*` never crosses a `/`; `**` does.
#[derive(Debug, Clone)]
pub struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Excludes {
    /// # Errors
    /// `DirectoryError::BadExclude` naming the first invalid pattern.
    pub fn new(patterns: &[String]) -> Result<Self, DirectoryError> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p.trim_start_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| DirectoryError::BadExclude {
                    pattern: p.clone(),
                    why: e.kind().to_string(),
                })?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| DirectoryError::BadExclude {
                pattern: patterns.join(" "),
                why: e.to_string(),
            })
        };
        Ok(Excludes {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
        })
    }

    fn excludes(&self, rel: &Path) -> bool {
        self.by_path.is_match(rel) || rel.file_name().is_some_and(|n| self.by_name.is_match(n))
    }
}

/// A folder to back up.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    root: PathBuf,
    excludes: Excludes,
    only: Vec<PathBuf>,
    generated: Vec<super::Generated>,
}

impl DirectorySource {
    pub fn new(root: impl Into<PathBuf>, excludes: Excludes) -> Self {
        DirectorySource {
            root: root.into(),
            excludes,
            only: Vec::new(),
            generated: Vec::new(),
        }
    }

    /// Also stores these files, made by coffer, after the folder's own (regular files, 0644,
    /// owned by this process, dated now). For a stream that is always a full: a
    /// differential's folder records would not list them.
    pub fn with_generated(mut self, generated: Vec<super::Generated>) -> Self {
        self.generated = generated;
        self
    }

    /// Backs up only these paths below the root (files or folders, relative), instead of
    /// everything; a missing one is a `vanished` warning. Their parent folders are not entries.
    pub fn with_only(mut self, only: Vec<PathBuf>) -> Self {
        self.only = only;
        self
    }

    /// The first level of the walk: the root's children, or the `only` paths.
    fn top_entries(&self) -> io::Result<Vec<PathBuf>> {
        if self.only.is_empty() {
            Ok(read_names(&self.root)?
                .into_iter()
                .map(PathBuf::from)
                .collect())
        } else {
            Ok(self.only.clone())
        }
    }

    /// An entry's metadata, not following links — but a selected folder (`only`) may be a
    /// symlink (attachments moved to a bigger disk): then what it points to, backed up under
    /// its own name rather than as a lone link.
    fn entry_meta(&self, abs: &Path, rel: &Path) -> io::Result<Metadata> {
        let meta = fs::symlink_metadata(abs)?;
        if meta.file_type().is_symlink()
            && self.only.contains(&rel.to_path_buf())
            && let Ok(target) = fs::metadata(abs)
            && target.is_dir()
        {
            return Ok(target);
        }
        Ok(meta)
    }

    /// `entries` (excluded ones left out) in walk order: files and links first, then folders,
    /// each group in name-byte order, each with its metadata (none when it cannot be looked
    /// at now: it is warned about when its turn comes).
    fn sorted(&self, entries: Vec<PathBuf>) -> Vec<(PathBuf, Option<Metadata>)> {
        let mut files = Vec::new();
        let mut folders = Vec::new();
        for rel in entries {
            if self.excludes.excludes(&rel) {
                continue;
            }
            match self.entry_meta(&self.root.join(&rel), &rel) {
                Ok(m) if m.is_dir() => folders.push((rel, Some(m))),
                Ok(m) => files.push((rel, Some(m))),
                Err(_) => files.push((rel, None)),
            }
        }
        let by_name = |a: &(PathBuf, Option<Metadata>), b: &(PathBuf, Option<Metadata>)| {
            a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes())
        };
        files.sort_by(by_name);
        folders.sort_by(by_name);
        files.extend(folders);
        files
    }

    /// The size the tar of this folder will have (headers and padding included), from a
    /// metadata-only walk: for progress bars. Unreadable parts count as empty.
    pub fn estimate_tar_size(&self) -> u64 {
        let mut total = 1024; // end-of-archive blocks
        let mut stack = self.top_entries().unwrap_or_default();
        while let Some(rel) = stack.pop() {
            if self.excludes.excludes(&rel) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(self.root.join(&rel)) else {
                continue;
            };
            total += 512;
            if meta.is_dir() {
                if let Ok(names) = read_names(&self.root.join(&rel)) {
                    stack.extend(names.into_iter().map(|n| rel.join(n)));
                }
            } else if meta.is_file() {
                total += meta.len().div_ceil(512) * 512;
            }
        }
        total
    }

    /// Walks the folder and writes it to `out` as a tar archive (a full, no index).
    ///
    /// # Errors
    /// As `write_tar_against`.
    pub fn write_tar(&self, out: &mut dyn Write) -> Result<WalkOutcome, DirectoryError> {
        self.write_tar_against(out, Against::Full(None))
    }

    /// Walks the folder and writes it to `out` as a tar archive: a full (and its index, when
    /// given one), or a differential against a full's index.
    ///
    /// # Errors
    /// `Root`/`NotADirectory` when the folder itself cannot be read; `Write` when `out` fails;
    /// `Index` when the index cannot be written or read. Problems with single entries are
    /// warnings in the outcome.
    pub fn write_tar_against(
        &self,
        out: &mut dyn Write,
        mut against: Against<'_>,
    ) -> Result<WalkOutcome, DirectoryError> {
        let meta = fs::metadata(&self.root).map_err(|source| DirectoryError::Root {
            path: self.root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DirectoryError::NotADirectory(self.root.clone()));
        }
        let mut walk = Walk {
            builder: tar::Builder::new(out),
            outcome: WalkOutcome::default(),
            buf: vec![0u8; 256 * 1024],
        };
        // Pending entries, last first (see `push_sorted`). A root that cannot be listed is a
        // failure, not an empty backup.
        let top = self.top_entries().map_err(|source| DirectoryError::Root {
            path: self.root.clone(),
            source,
        })?;
        let mut stack = Vec::new();
        let top = self.sorted(top);
        if let Against::Differential(base) = &mut against
            && self.only.is_empty()
        {
            // The root's own record, so deletions right below it apply too.
            let dumpdir = dumpdir(&top, base)?;
            walk.append_dir_with(Path::new("."), &meta, Some(&dumpdir.0))?;
            walk.outcome.counts.directories -= 1;
            stack.extend(dumpdir.1.into_iter().rev());
        } else {
            stack.extend(top.into_iter().rev().map(|(rel, meta)| Pending {
                rel,
                meta,
                unchanged: None,
            }));
        }
        while let Some(Pending {
            rel,
            meta: listed,
            unchanged,
        }) = stack.pop()
        {
            if let Some(entry) = unchanged {
                walk.unchanged(&entry)?;
                continue;
            }
            let abs = self.root.join(&rel);
            let meta = match listed.map_or_else(|| self.entry_meta(&abs, &rel), Ok) {
                Ok(m) => m,
                Err(e) => {
                    walk.warn_io(&rel, &e);
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let children = self.sorted(walk.list_children(&abs, &rel));
                match &mut against {
                    Against::Differential(base) => {
                        let (record, pending) = dumpdir(&children, base)?;
                        walk.append_dir_with(&rel, &meta, Some(&record))?;
                        stack.extend(pending.into_iter().rev());
                    }
                    Against::Full(_) => {
                        walk.append_dir_with(&rel, &meta, None)?;
                        stack.extend(children.into_iter().rev().map(|(rel, meta)| Pending {
                            rel,
                            meta,
                            unchanged: None,
                        }));
                    }
                }
            } else if ft.is_file() {
                let seen = walk.append_file(&abs, &rel, &meta)?;
                if let (Against::Full(Some(index)), Some((sha, before))) = (&mut against, seen) {
                    index.push(&IndexEntry::of(rel.as_os_str().as_bytes(), &before, &sha))?;
                }
            } else if ft.is_symlink() {
                walk.append_symlink(&abs, &rel, &meta)?;
            } else {
                walk.warn(
                    &rel,
                    WarningKind::Special,
                    "not a file, directory or symlink",
                );
            }
        }
        debug_assert!(
            self.generated.is_empty() || matches!(against, Against::Full(None)),
            "generated files only in a stream that is always a full"
        );
        for g in &self.generated {
            walk.append_generated(g)?;
        }
        walk.builder.finish()?;
        Ok(walk.outcome)
    }
}

/// An entry waiting its turn in the walk: its metadata when it was listed, and, in a
/// differential, the index entry of a file found unchanged (left out of the tar).
struct Pending {
    rel: PathBuf,
    meta: Option<Metadata>,
    unchanged: Option<IndexEntry>,
}

/// A folder's `GNU.dumpdir` record for its `children` (in walk order: files and links, then
/// folders), and the children as pending entries, unchanged files marked. Files are looked up
/// in `base` in walk order, which is why a folder's files come before its subfolders.
fn dumpdir(
    children: &[(PathBuf, Option<Metadata>)],
    base: &mut IndexReader,
) -> Result<(Vec<u8>, Vec<Pending>), DirectoryError> {
    let mut named: Vec<(&[u8], u8)> = Vec::new();
    let mut pending = Vec::with_capacity(children.len());
    for (rel, meta) in children {
        let name = rel.file_name().map_or(&[][..], |n| n.as_bytes());
        let mut unchanged = None;
        match meta {
            // It could not be looked at: not listed, so a restore does not keep a stale copy.
            None => {}
            Some(m) if m.is_dir() => named.push((name, b'D')),
            Some(m) => {
                if m.is_file()
                    && let Some(entry) = base.find(rel.as_os_str().as_bytes())?
                    && entry.unchanged(m)
                {
                    unchanged = Some(entry);
                    named.push((name, b'N'));
                } else {
                    named.push((name, b'Y'));
                }
            }
        }
        pending.push(Pending {
            rel: rel.clone(),
            meta: meta.clone(),
            unchanged,
        });
    }
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut record = Vec::new();
    for (name, code) in named {
        record.push(code);
        record.extend_from_slice(name);
        record.push(0);
    }
    record.push(0);
    Ok((record, pending))
}

struct Walk<'w> {
    builder: tar::Builder<&'w mut dyn Write>,
    outcome: WalkOutcome,
    buf: Vec<u8>,
}

impl Walk<'_> {
    fn warn(&mut self, rel: &Path, kind: WarningKind, detail: impl Into<String>) {
        let detail = detail.into();
        // The caller reports warnings (the CLI prints them, a daemon logs them): debug only here.
        tracing::debug!(path = %crate::text::PrintablePath(rel), kind = kind.as_str(), "{}", crate::text::Printable(&detail));
        self.outcome.warnings.push(Warning {
            kind,
            path: rel.to_path_buf(),
            detail,
        });
    }

    fn warn_io(&mut self, rel: &Path, e: &io::Error) {
        let kind = if e.kind() == io::ErrorKind::NotFound {
            WarningKind::Vanished
        } else {
            WarningKind::Unreadable
        };
        self.warn(rel, kind, e.to_string());
    }

    /// The paths of a folder's children; what cannot be listed is a warning.
    fn list_children(&mut self, abs: &Path, rel: &Path) -> Vec<PathBuf> {
        let mut names = Vec::new();
        match fs::read_dir(abs) {
            Ok(rd) => {
                for entry in rd {
                    match entry {
                        Ok(e) => names.push(rel.join(e.file_name())),
                        // Keep what was listed; warn about the rest.
                        Err(e) => self.warn_io(rel, &e),
                    }
                }
            }
            Err(e) => self.warn_io(rel, &e),
        }
        names
    }

    /// Appends pax records (if any) and the header for `rel`.
    fn append_header(
        &mut self,
        mut header: Header,
        rel: &Path,
        link: Option<&Path>,
        dumpdir: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut name = rel.as_os_str().as_bytes().to_vec();
        if header.entry_type() == EntryType::Directory {
            name.push(b'/');
        }
        if header.set_path(OsStr::from_bytes(&name)).is_err() || !name.is_ascii() {
            // ustar cannot hold it (too long) or should not (not ASCII): pax carries the name.
            let old = header.as_old_mut();
            let cut = name.len().min(old.name.len());
            old.name = [0; 100];
            old.name[..cut].copy_from_slice(&name[..cut]);
            header.as_ustar_mut().expect("ustar header").prefix = [0; 155];
            pax.push(("path", name));
        }
        if let Some(target) = link {
            let target = target.as_os_str().as_bytes();
            if header.set_link_name_literal(target).is_err() || !target.is_ascii() {
                pax.push(("linkpath", target.to_vec()));
            }
        }
        let size = header.entry_size()?;
        if size > USTAR_MAX_SIZE {
            pax.push(("size", size.to_string().into_bytes()));
        }
        if let Some(record) = dumpdir {
            pax.push(("GNU.dumpdir", record.to_vec()));
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))?;
        }
        header.set_cksum();
        self.builder.append(&header, io::empty())
    }

    /// A folder's entry, with its `GNU.dumpdir` record in a differential.
    fn append_dir_with(
        &mut self,
        rel: &Path,
        meta: &Metadata,
        dumpdir: Option<&[u8]>,
    ) -> io::Result<()> {
        let header = base_header(EntryType::Directory, meta, 0);
        self.append_header(header, rel, None, dumpdir)?;
        self.outcome.counts.directories += 1;
        Ok(())
    }

    /// A file left out of a differential as unchanged: counted in the whole tree, and listed
    /// in the checksums with the sha256 the index holds.
    fn unchanged(&mut self, entry: &IndexEntry) -> io::Result<()> {
        self.outcome.checksums.push(&entry.sha256, &entry.path)?;
        self.outcome.counts.files += 1;
        self.outcome.file_bytes += entry.size;
        self.outcome.unchanged_files += 1;
        self.outcome.unchanged_bytes += entry.size;
        Ok(())
    }

    /// Appends a file coffer made (see `DirectorySource::with_generated`).
    fn append_generated(&mut self, g: &super::Generated) -> io::Result<()> {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        header.set_mtime(now);
        header.set_uid(u64::from(rustix::process::getuid().as_raw()));
        header.set_gid(u64::from(rustix::process::getgid().as_raw()));
        let size = g.bytes.len() as u64;
        header.set_size(size);
        self.append_header(header, &g.path, None, None)?;
        let out = self.builder.get_mut();
        out.write_all(&g.bytes)?;
        let pad = (512 - size % 512) % 512;
        out.write_all(&[0u8; 512][..pad as usize])?;
        let sha = hex::encode(sha2::Sha256::digest(&g.bytes));
        self.outcome
            .checksums
            .push(&sha, g.path.as_os_str().as_bytes())?;
        self.outcome.counts.files += 1;
        self.outcome.file_bytes += size;
        Ok(())
    }

    fn append_symlink(&mut self, abs: &Path, rel: &Path, meta: &Metadata) -> io::Result<()> {
        let target = match fs::read_link(abs) {
            Ok(t) => t,
            Err(e) => {
                self.warn_io(rel, &e);
                return Ok(());
            }
        };
        let header = base_header(EntryType::Symlink, meta, 0);
        self.append_header(header, rel, Some(&target), None)?;
        self.outcome.counts.symlinks += 1;
        Ok(())
    }

    /// Appends a regular file; its sha256 and the metadata it was read with, unless it could
    /// not be stored (a warning says why).
    fn append_file(
        &mut self,
        abs: &Path,
        rel: &Path,
        listed: &Metadata,
    ) -> io::Result<Option<(String, Metadata)>> {
        // Never follow a symlink or block on a FIFO swapped in since the listing, and store
        // only the very file that was listed (same device and inode).
        let open = |flags: rustix::fs::OFlags| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags.bits() as i32)
                .open(abs)
        };
        let nofollow = rustix::fs::OFlags::NOFOLLOW;
        let opened = match open(nofollow | rustix::fs::OFlags::NONBLOCK) {
            // A file under a lease (Samba oplock, NFS delegation) refuses a non-blocking open;
            // a FIFO would not: wait for the lease like any reader.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => open(nofollow),
            other => other,
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                self.warn(
                    rel,
                    WarningKind::Changed,
                    "replaced by a symlink while being read",
                );
                return Ok(None);
            }
            Err(e) => {
                self.warn_io(rel, &e);
                return Ok(None);
            }
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warn_io(rel, &e);
                return Ok(None);
            }
        };
        if !before.is_file() || before.dev() != listed.dev() || before.ino() != listed.ino() {
            self.warn(
                rel,
                WarningKind::Changed,
                "replaced by another file while being read",
            );
            return Ok(None);
        }
        let size = before.len();
        let header = base_header(EntryType::Regular, &before, size);
        // The header goes out first, then exactly `size` bytes whatever the file does meanwhile.
        self.append_header(header, rel, None, None)?;
        let mut exact = ExactReader {
            file,
            left: size,
            short: false,
            error: None,
        };
        let mut written = 0u64;
        let mut hasher = sha2::Sha256::new();
        loop {
            let n = exact.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            self.builder.get_mut().write_all(&self.buf[..n])?;
            hasher.update(&self.buf[..n]);
            written += n as u64;
        }
        let sha = hex::encode(hasher.finalize());
        self.outcome
            .checksums
            .push(&sha, rel.as_os_str().as_bytes())?;
        debug_assert_eq!(written, size);
        let pad = (512 - size % 512) % 512;
        self.builder
            .get_mut()
            .write_all(&[0u8; 512][..pad as usize])?;
        self.outcome.counts.files += 1;
        self.outcome.file_bytes += size;
        if let Some(e) = exact.error {
            self.warn(
                rel,
                WarningKind::Unreadable,
                format!("read failed ({e}); the rest of the file is stored as zero bytes"),
            );
        } else if exact.short {
            self.warn(
                rel,
                WarningKind::Changed,
                "shrank while being read; stored padded with zero bytes",
            );
        } else {
            match exact.file.metadata() {
                Ok(after)
                    if after.len() != size
                        || after.mtime() != before.mtime()
                        || after.mtime_nsec() != before.mtime_nsec() =>
                {
                    self.warn(rel, WarningKind::Changed, "modified while being read");
                }
                _ => {}
            }
        }
        Ok(Some((sha, before)))
    }
}

fn read_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// A ustar header with the metadata coffer keeps.
fn base_header(kind: EntryType, meta: &Metadata, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_size(size);
    h
}

/// Reads exactly `left` bytes: a file that shrinks is padded with zeros, one that grows is cut,
/// and a read error turns the rest into zeros (all reported by the caller).
struct ExactReader {
    file: File,
    left: u64,
    short: bool,
    error: Option<io::Error>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = if self.short || self.error.is_some() {
            0
        } else {
            loop {
                match self.file.read(&mut buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.error = Some(e);
                        break 0;
                    }
                }
            }
        };
        let n = if n == 0 {
            self.short |= self.error.is_none();
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excludes(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exclude_patterns_match_paths_or_names() {
        let ex = excludes(&["private/backups/**", "*.pyc"]);
        assert!(ex.excludes(Path::new("private/backups/x.sql.gz")));
        assert!(ex.excludes(Path::new("private/backups/deep/x")));
        assert!(!ex.excludes(Path::new("private/files/x")));
        assert!(ex.excludes(Path::new("a/b/c.pyc")));
        assert!(!ex.excludes(Path::new("a/b/c.py")));
        assert!(Excludes::new(&["a[".to_string()]).is_err());
    }

    #[test]
    fn tar_size_estimate_matches_the_tar() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/one"), vec![1u8; 1000]).unwrap();
        fs::write(dir.path().join("a/b/two"), vec![2u8; 512]).unwrap();
        fs::write(dir.path().join("zero"), b"").unwrap();
        std::os::unix::fs::symlink("a/one", dir.path().join("link")).unwrap();
        let src = DirectorySource::new(dir.path(), excludes(&[]));
        let mut tar = Vec::new();
        let outcome = src.write_tar(&mut tar).unwrap();
        assert_eq!(src.estimate_tar_size(), tar.len() as u64);
        assert_eq!(outcome.counts.files, 3);
        assert_eq!(outcome.counts.directories, 2);
        assert_eq!(outcome.counts.symlinks, 1);
    }

    #[test]
    fn selected_folders_behind_symlinks_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        let disk = dir.path().join("big-disk/files");
        fs::create_dir_all(&disk).unwrap();
        fs::create_dir_all(site.join("private")).unwrap();
        fs::write(disk.join("invoice.pdf"), b"pdf").unwrap();
        std::os::unix::fs::symlink(&disk, site.join("private/files")).unwrap();
        let src = DirectorySource::new(&site, excludes(&[]))
            .with_only(vec![PathBuf::from("private/files")]);
        let mut tar = Vec::new();
        let outcome = src.write_tar(&mut tar).unwrap();
        assert_eq!((outcome.counts.files, outcome.counts.directories), (1, 1));
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["private/files/", "private/files/invoice.pdf"]);
    }

    #[test]
    fn exact_reader_pads_a_file_that_shrank() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let mut r = ExactReader {
            file: File::open(&p).unwrap(),
            left: 6,
            short: false,
            error: None,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0\0");
        assert!(r.short);
    }
}
