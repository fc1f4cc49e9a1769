//! Splitting the encrypted stream into parts on the way out, and reading them back verified.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::snapshot::{PartRecord, part_name};
use crate::store::{ObjectWriter, Store, StoreError};

/// The last `Write` of the backup chain: cuts the age stream into parts of `part_size` bytes,
/// hashing each part and the whole stream, and stores each part as it fills.
pub struct PartSplitter<'a> {
    store: &'a dyn Store,
    prefix: String,
    stream: String,
    part_size: u64,
    current: Option<(Box<dyn ObjectWriter>, Sha256, u64)>,
    parts: Vec<PartRecord>,
    whole: Sha256,
}

/// What a finished splitter stored.
#[derive(Debug)]
pub struct SplitOutcome {
    pub parts: Vec<PartRecord>,
    pub sha256: String,
    pub bytes: u64,
}

impl<'a> PartSplitter<'a> {
    /// Parts go to `<prefix><stream>.<NNNNN>`.
    pub fn new(store: &'a dyn Store, prefix: &str, stream: &str, part_size: u64) -> Self {
        assert!(part_size > 0);
        PartSplitter {
            store,
            prefix: prefix.to_string(),
            stream: stream.to_string(),
            part_size,
            current: None,
            parts: Vec::new(),
            whole: Sha256::new(),
        }
    }

    fn close_part(&mut self) -> Result<(), StoreError> {
        let Some((writer, hasher, written)) = self.current.take() else {
            return Ok(());
        };
        let name = part_name(&self.stream, self.parts.len() + 1);
        let sha256 = hex::encode(hasher.finalize());
        let meta = writer.finish()?;
        // Trust but verify: the store must report what we sent.
        let mismatch = if meta.size != written {
            Some(format!("{} bytes, but {written} were sent", meta.size))
        } else {
            match &meta.sha256 {
                Some(theirs) if !theirs.eq_ignore_ascii_case(&sha256) => {
                    Some(format!("sha256 {theirs}, but {sha256} was sent"))
                }
                _ => None,
            }
        };
        if let Some(m) = mismatch {
            return Err(StoreError::Io {
                store: self.store.to_string(),
                op: "verifying the upload of",
                key: meta.key,
                retryable: false,
                source: io::Error::other(format!("the store reports {m}")),
            });
        }
        self.parts.push(PartRecord {
            name,
            size: written,
            sha256,
            etag: meta.etag,
        });
        Ok(())
    }

    /// Stores the last part and reports every part.
    ///
    /// # Errors
    /// Store errors of the last part.
    pub fn finish(mut self) -> Result<SplitOutcome, StoreError> {
        self.close_part()?;
        Ok(SplitOutcome {
            bytes: self.parts.iter().map(|p| p.size).sum(),
            parts: std::mem::take(&mut self.parts),
            sha256: hex::encode(std::mem::take(&mut self.whole).finalize()),
        })
    }
}

impl Write for PartSplitter<'_> {
    /// Always takes the whole buffer, crossing part boundaries as needed: age's header writer
    /// does not tolerate short writes.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.is_none() {
                let key = format!(
                    "{}{}",
                    self.prefix,
                    part_name(&self.stream, self.parts.len() + 1)
                );
                let writer = self.store.put(&key).map_err(io::Error::other)?;
                self.current = Some((writer, Sha256::new(), 0));
            }
            let (writer, hasher, written) = self.current.as_mut().expect("opened above");
            let room = (self.part_size - *written).min(rest.len() as u64) as usize;
            let (now, later) = rest.split_at(room);
            writer.write_all(now)?;
            hasher.update(now);
            self.whole.update(now);
            *written += room as u64;
            if *written == self.part_size {
                self.close_part().map_err(io::Error::other)?;
            }
            rest = later;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((w, _, _)) => w.flush(),
            None => Ok(()),
        }
    }
}

/// A problem with one stored part, found while reading it back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartProblem {
    #[error("part {part} is missing from the store")]
    Missing { part: String },
    #[error("part {part} is truncated: {got} of {expected} bytes")]
    Truncated {
        part: String,
        got: u64,
        expected: u64,
    },
    #[error("part {part} is longer than the manifest says ({expected} bytes)")]
    TooLong { part: String, expected: u64 },
    #[error("part {part} is corrupted: its sha256 is {got}, the manifest says {expected}")]
    Corrupted {
        part: String,
        got: String,
        expected: String,
    },
    #[error(
        "part {part} was changed in the store: its ETag is {got}, it was {expected} when \
         uploaded"
    )]
    Changed {
        part: String,
        got: String,
        expected: String,
    },
    #[error("part {part} holds the content of part {holds}: parts were renamed or reordered")]
    Misplaced { part: String, holds: String },
    #[error("the stream's sha256 is {got}, the manifest says {expected}")]
    StreamCorrupted { got: String, expected: String },
    #[error("part {part} could not be read: {why}")]
    Unreadable { part: String, why: String },
}

impl PartProblem {
    /// Whether the stored data itself is bad (as opposed to the store being unreachable or
    /// refusing access, which a retry or a fix of the store may cure).
    pub fn is_damage(&self) -> bool {
        !matches!(self, PartProblem::Unreadable { .. })
    }

    /// The part this problem is about, if it is about one part.
    pub fn part(&self) -> Option<&str> {
        match self {
            PartProblem::Missing { part }
            | PartProblem::Truncated { part, .. }
            | PartProblem::TooLong { part, .. }
            | PartProblem::Corrupted { part, .. }
            | PartProblem::Changed { part, .. }
            | PartProblem::Misplaced { part, .. }
            | PartProblem::Unreadable { part, .. } => Some(part),
            PartProblem::StreamCorrupted { .. } => None,
        }
    }
}

/// Where a `PartsReader` is; shared so an error further down the chain can name the part.
#[derive(Debug, Default, Clone)]
pub struct PartCursor(Arc<Mutex<CursorState>>);

#[derive(Debug, Default)]
struct CursorState {
    current: Option<String>,
    done: bool,
}

impl PartCursor {
    /// The part being read, if any.
    pub fn current(&self) -> Option<String> {
        self.0.lock().expect("cursor lock").current.clone()
    }

    /// Whether every part was read and verified.
    pub fn done(&self) -> bool {
        self.0.lock().expect("cursor lock").done
    }
}

/// Parts up to this size are checked in memory; larger ones (the default `part_size` is
/// 64 MiB) in an unnamed temporary file, so a restore's memory does not grow with parts.
const VERIFY_IN_MEMORY: u64 = 8 * 1024 * 1024;

/// How many parts are downloaded and checked ahead of the one being served: one, so the
/// network (or disk) and the decryption, decompression and extraction run side by side.
const PARTS_AHEAD: usize = 1;

/// Reads a stream's parts in order as one byte stream. Each part is read whole (never more
/// than its recorded size plus one byte) and checked — size and sha256 — BEFORE any of its
/// bytes is handed on: the manifest's signature authenticates the part hashes, so nothing a
/// store writer swapped in is ever decrypted, extracted or loaded into a database. Any
/// mismatch is an `io::Error` wrapping a `PartProblem` that names the part.
///
/// While one part is served, the next is downloaded and checked on a thread of its own
/// (`PARTS_AHEAD`). A part is held in memory up to `VERIFY_IN_MEMORY`, in an unnamed 0600
/// temporary file above (`spool_dir`): memory stays at a few MiB whatever the part size, and
/// the temporary space is at most `PARTS_AHEAD + 1` parts. (When every part matches, so does
/// the whole stream: its separate sha256 is for `verify` and for tools outside coffer, and is
/// not hashed a second time here.)
pub struct PartsReader<'a> {
    store: &'a dyn Store,
    prefix: String,
    parts: &'a [PartRecord],
    /// The next part to start fetching.
    index: usize,
    /// Fetches started, in part order: (part name, its outcome).
    ahead: VecDeque<(String, Fetch)>,
    /// The verified part being served.
    current: Option<Verified>,
    cursor: PartCursor,
    /// Set when the reader is dropped: a fetch still running stops at its next block.
    cancel: Arc<AtomicBool>,
}

/// A part's fetch: failed before it started, or running on its thread.
enum Fetch {
    Failed(io::Error),
    Running(std::thread::JoinHandle<io::Result<Verified>>),
}

/// A part whose size and sha256 matched, being served.
enum Verified {
    Memory(io::Cursor<Vec<u8>>),
    File(io::BufReader<std::fs::File>),
}

/// Where parts too large for memory are checked: `TMPDIR` when set, else `/var/tmp` (on disk
/// on Debian, where `/tmp` is a tmpfs in memory), else the system's temporary folder.
pub fn spool_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() {
        return var_tmp.to_path_buf();
    }
    std::env::temp_dir()
}

impl<'a> PartsReader<'a> {
    pub fn new(store: &'a dyn Store, prefix: &str, parts: &'a [PartRecord]) -> Self {
        PartsReader {
            store,
            prefix: prefix.to_string(),
            parts,
            index: 0,
            ahead: VecDeque::new(),
            current: None,
            cursor: PartCursor::default(),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn cursor(&self) -> PartCursor {
        self.cursor.clone()
    }

    fn fail(problem: PartProblem) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, problem)
    }

    /// Starts fetching the next part: opened here, downloaded and checked on a thread.
    fn start_next(&mut self) {
        let part = self.parts[self.index].clone();
        let name = part.name.clone();
        self.index += 1;
        let key = format!("{}{}", self.prefix, part.name);
        let fetch = match self.store.get(&key) {
            Ok(reader) => {
                let cancel = self.cancel.clone();
                match std::thread::Builder::new()
                    .name("coffer-part".into())
                    .spawn(move || download(reader, &part, &cancel))
                {
                    Ok(handle) => Fetch::Running(handle),
                    Err(e) => Fetch::Failed(io::Error::new(
                        e.kind(),
                        format!("starting the download of part {name}: {e}"),
                    )),
                }
            }
            Err(e) if e.is_not_found() => {
                Fetch::Failed(Self::fail(PartProblem::Missing { part: name.clone() }))
            }
            Err(e) => Fetch::Failed(Self::fail(PartProblem::Unreadable {
                part: name.clone(),
                why: e.to_string(),
            })),
        };
        self.ahead.push_back((name, fetch));
    }

    /// Waits for the next part, checked, and makes it the one being served; starts the
    /// fetches ahead of it.
    fn next_part(&mut self) -> io::Result<()> {
        if self.ahead.is_empty() {
            self.start_next();
        }
        let (name, fetch) = self.ahead.pop_front().expect("a fetch was started");
        self.cursor.0.lock().expect("cursor lock").current = Some(name.clone());
        while self.ahead.len() < PARTS_AHEAD && self.index < self.parts.len() {
            self.start_next();
        }
        let verified = match fetch {
            Fetch::Failed(e) => return Err(e),
            Fetch::Running(handle) => handle.join().map_err(|_| {
                Self::fail(PartProblem::Unreadable {
                    part: name,
                    why: "its download thread panicked".into(),
                })
            })??,
        };
        self.current = Some(verified);
        Ok(())
    }

    /// After the last part: marks the cursor done.
    fn finish_stream(&mut self) {
        let mut state = self.cursor.0.lock().expect("cursor lock");
        state.done = true;
        state.current = None;
    }
}

impl Drop for PartsReader<'_> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Downloads one part whole, never more than its size plus one byte (a "part" of terabytes
/// is named too long after size + 1 bytes, not read to its end), and checks its size and
/// sha256.
fn download(
    reader: Box<dyn Read + Send>,
    part: &PartRecord,
    cancel: &AtomicBool,
) -> io::Result<Verified> {
    let fail = PartsReader::fail;
    let unreadable = |why: String| {
        fail(PartProblem::Unreadable {
            part: part.name.clone(),
            why,
        })
    };
    let mut limited = reader.take(part.size.saturating_add(1));
    let mut hashing = HashingWriter {
        hasher: Sha256::new(),
        bytes: 0,
    };
    let verified = if part.size <= VERIFY_IN_MEMORY {
        let mut buf = Vec::with_capacity(part.size as usize + 1);
        copy_retrying(&mut limited, &mut buf, cancel).map_err(|e| unreadable(e.to_string()))?;
        hashing.write_all(&buf)?;
        Verified::Memory(io::Cursor::new(buf))
    } else {
        let dir = spool_dir();
        let mut file = tempfile::tempfile_in(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "creating a temporary file in {} to check part {} in ({e}); set TMPDIR \
                     to a folder with {} bytes free",
                    dir.display(),
                    part.name,
                    part.size.saturating_mul(PARTS_AHEAD as u64 + 1)
                ),
            )
        })?;
        {
            let mut tee = TeeWriter {
                a: &mut hashing,
                b: &mut file,
            };
            copy_retrying(&mut limited, &mut tee, cancel).map_err(|e| unreadable(e.to_string()))?;
        }
        io::Seek::rewind(&mut file)?;
        Verified::File(io::BufReader::with_capacity(256 * 1024, file))
    };
    if hashing.bytes < part.size {
        return Err(fail(PartProblem::Truncated {
            part: part.name.clone(),
            got: hashing.bytes,
            expected: part.size,
        }));
    }
    if hashing.bytes > part.size {
        return Err(fail(PartProblem::TooLong {
            part: part.name.clone(),
            expected: part.size,
        }));
    }
    let got = hex::encode(hashing.hasher.finalize());
    if got != part.sha256 {
        return Err(fail(PartProblem::Corrupted {
            part: part.name.clone(),
            got,
            expected: part.sha256.clone(),
        }));
    }
    Ok(verified)
}

/// Hashes and counts what is written to it.
struct HashingWriter {
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes everything to both.
struct TeeWriter<'x> {
    a: &'x mut dyn Write,
    b: &'x mut dyn Write,
}

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.b.write_all(buf)?;
        self.a.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.b.flush()
    }
}

/// `io::copy` that retries reads interrupted by a signal, and stops when `cancel` is set.
fn copy_retrying(r: &mut dyn Read, w: &mut dyn Write, cancel: &AtomicBool) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the read was abandoned"));
        }
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

impl Read for PartsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(current) = &mut self.current {
                let n = match current {
                    Verified::Memory(c) => c.read(buf)?,
                    Verified::File(f) => f.read(buf)?,
                };
                if n > 0 {
                    return Ok(n);
                }
                self.current = None;
            }
            if self.index == self.parts.len() && self.ahead.is_empty() {
                if !self.cursor.done() {
                    self.finish_stream();
                }
                return Ok(0);
            }
            self.next_part()?;
        }
    }
}

/// The first error of type `T` in `err`'s chain, looking inside `io::Error` wrappers too.
pub fn find_in_chain<'e, T: std::error::Error + 'static>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        // io::Error::source() skips its own payload: step into the payload itself.
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
        {
            cur = Some(inner);
            continue;
        }
        cur = e.source();
    }
    None
}

/// The `PartProblem` inside an error of the read chain, if there is one.
pub fn find_part_problem<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e PartProblem> {
    find_in_chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    fn split(data: &[u8], part_size: u64) -> (LocalStore, tempfile::TempDir, SplitOutcome) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut s = PartSplitter::new(&store, "p/", "s.age", part_size);
        // Odd write sizes, as age's chunks would not line up with parts either.
        for chunk in data.chunks(7) {
            s.write_all(chunk).unwrap();
        }
        let out = s.finish().unwrap();
        (store, dir, out)
    }

    fn read_back(store: &LocalStore, out: &SplitOutcome) -> io::Result<Vec<u8>> {
        let mut r = PartsReader::new(store, "p/", &out.parts);
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        assert!(r.cursor().done());
        Ok(v)
    }

    #[test]
    fn rotates_at_part_size_edges() {
        for (len, part_size, sizes) in [
            (100usize, 100u64, vec![100u64]),
            (101, 100, vec![100, 1]),
            (99, 100, vec![99]),
            (1000, 100, vec![100; 10]),
            (0, 100, vec![]),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (store, _dir, out) = split(&data, part_size);
            assert_eq!(out.parts.iter().map(|p| p.size).collect::<Vec<_>>(), sizes);
            assert_eq!(out.bytes, len as u64);
            assert_eq!(out.sha256, hex::encode(Sha256::digest(&data)));
            assert_eq!(read_back(&store, &out).unwrap(), data);
            if let Some(first) = out.parts.first() {
                assert_eq!(first.name, "s.age.00001");
            }
        }
    }

    #[test]
    fn reader_names_a_part_that_is_too_long() {
        let data = vec![7u8; 250];
        let (store, dir, out) = split(&data, 100);
        let p2 = dir.path().join("p/s.age.00002");
        let mut bytes = std::fs::read(&p2).unwrap();
        bytes.push(0);
        std::fs::write(&p2, bytes).unwrap();
        let err = read_back(&store, &out).unwrap_err();
        let problem = find_part_problem(&err).unwrap();
        assert_eq!(problem.part(), Some("s.age.00002"));
        assert!(matches!(problem, PartProblem::TooLong { .. }));
    }

    #[test]
    fn no_byte_of_a_swapped_part_is_handed_on() {
        // Same size, other content (an attacker's age file in place of the real part):
        // the very first read fails, before anything of it reaches the decryptor.
        let data: Vec<u8> = (0..250).map(|i| i as u8).collect();
        let (store, dir, out) = split(&data, 100);
        std::fs::write(dir.path().join("p/s.age.00001"), [b'X'; 100]).unwrap();
        let mut r = PartsReader::new(&store, "p/", &out.parts);
        let mut buf = [0u8; 10];
        let err = r.read(&mut buf).unwrap_err();
        assert!(matches!(
            find_part_problem(&err),
            Some(PartProblem::Corrupted { part, .. }) if part == "s.age.00001"
        ));
        // A later part swapped: everything before it is served, nothing of it.
        let (store, dir, out) = split(&data, 100);
        std::fs::write(dir.path().join("p/s.age.00002"), [b'X'; 100]).unwrap();
        let mut r = PartsReader::new(&store, "p/", &out.parts);
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert!(find_part_problem(&err).is_some());
        assert_eq!(got, &data[..100]);
    }

    #[test]
    fn parts_above_the_memory_bound_are_checked_in_temporary_files_one_ahead() {
        // Parts of 9 MiB (above VERIFY_IN_MEMORY: spooled) and a short last one (in memory).
        let part = VERIFY_IN_MEMORY + (1 << 20);
        let data: Vec<u8> = (0..2 * part as usize + 12_345)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut s = PartSplitter::new(&store, "p/", "s.age", part);
        s.write_all(&data).unwrap();
        let out = s.finish().unwrap();
        assert_eq!(out.parts.len(), 3);
        assert_eq!(read_back(&store, &out).unwrap(), data);
        // The second (spooled) part damaged: the first is served whole, nothing of the second.
        let p2 = dir.path().join("p/s.age.00002");
        let mut bytes = std::fs::read(&p2).unwrap();
        bytes[part as usize - 1] ^= 1;
        std::fs::write(&p2, bytes).unwrap();
        let mut r = PartsReader::new(&store, "p/", &out.parts);
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert!(matches!(
            find_part_problem(&err),
            Some(PartProblem::Corrupted { part, .. }) if part == "s.age.00002"
        ));
        assert_eq!(got.len() as u64, part);
        assert_eq!(r.cursor().current().as_deref(), Some("s.age.00002"));
        // A part missing after others: reported when its turn comes, not before.
        std::fs::remove_file(&p2).unwrap();
        let mut r = PartsReader::new(&store, "p/", &out.parts);
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert!(matches!(
            find_part_problem(&err),
            Some(PartProblem::Missing { part }) if part == "s.age.00002"
        ));
        assert_eq!(got, &data[..part as usize]);
    }

    #[test]
    fn a_huge_part_is_not_read_to_its_end() {
        let data = vec![1u8; 100];
        let (store, dir, out) = split(&data, 100);
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("p/s.age.00001"))
            .unwrap();
        f.set_len(1 << 40).unwrap(); // a sparse terabyte
        let err = read_back(&store, &out).unwrap_err();
        assert!(matches!(
            find_part_problem(&err),
            Some(PartProblem::TooLong { .. })
        ));
    }
}
