//! Splitting the encrypted stream into parts on the way out, and reading them back verified.

use std::io::{self, Read, Write};
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

/// Parts up to this size are checked in memory; larger ones in an unnamed temporary file.
const VERIFY_IN_MEMORY: u64 = 64 * 1024 * 1024;

/// Reads a stream's parts in order as one byte stream. Each part is read whole (never more
/// than its recorded size plus one byte) and checked — size and sha256 — BEFORE any of its
/// bytes is handed on: the manifest's signature authenticates the part hashes, so nothing a
/// store writer swapped in is ever decrypted, extracted or loaded into a database. Any
/// mismatch is an `io::Error` wrapping a `PartProblem` that names the part. A part is held in
/// memory up to `VERIFY_IN_MEMORY` (the default `part_size`), in an unnamed 0600 temporary
/// file above. (When every part matches, so does the whole stream: its separate sha256 is for
/// `verify` and for tools outside coffer, and is not hashed a second time here.)
pub struct PartsReader<'a> {
    store: &'a dyn Store,
    prefix: String,
    parts: &'a [PartRecord],
    /// The next part to fetch.
    index: usize,
    /// The verified part being served.
    current: Option<Verified>,
    /// A buffer kept from part to part.
    spare: Vec<u8>,
    cursor: PartCursor,
}

/// A part whose size and sha256 matched, being served.
enum Verified {
    Memory(io::Cursor<Vec<u8>>),
    File(io::BufReader<std::fs::File>),
}

impl<'a> PartsReader<'a> {
    pub fn new(store: &'a dyn Store, prefix: &str, parts: &'a [PartRecord]) -> Self {
        PartsReader {
            store,
            prefix: prefix.to_string(),
            parts,
            index: 0,
            current: None,
            spare: Vec::new(),
            cursor: PartCursor::default(),
        }
    }

    pub fn cursor(&self) -> PartCursor {
        self.cursor.clone()
    }

    fn fail(problem: PartProblem) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, problem)
    }

    /// Fetches part `index` whole, checks it, and makes it the one being served.
    fn fetch(&mut self) -> io::Result<()> {
        let part = &self.parts[self.index];
        self.cursor.0.lock().expect("cursor lock").current = Some(part.name.clone());
        let key = format!("{}{}", self.prefix, part.name);
        let unreadable = |why: String| {
            Self::fail(PartProblem::Unreadable {
                part: part.name.clone(),
                why,
            })
        };
        let reader = match self.store.get(&key) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                return Err(Self::fail(PartProblem::Missing {
                    part: part.name.clone(),
                }));
            }
            Err(e) => return Err(unreadable(e.to_string())),
        };
        // Never more than one byte past the recorded size: a "part" of terabytes is named
        // too long after size + 1 bytes, not read to its end.
        let mut limited = reader.take(part.size.saturating_add(1));
        let mut hashing = HashingWriter {
            hasher: Sha256::new(),
            bytes: 0,
        };
        let verified = if part.size <= VERIFY_IN_MEMORY {
            let mut buf = std::mem::take(&mut self.spare);
            buf.clear();
            buf.reserve(part.size as usize + 1);
            copy_retrying(&mut limited, &mut buf).map_err(|e| unreadable(e.to_string()))?;
            hashing.write_all(&buf)?;
            Verified::Memory(io::Cursor::new(buf))
        } else {
            let mut file = tempfile::tempfile().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "creating a temporary file to check part {} in ({e}); set TMPDIR to a \
                         folder with {} free",
                        part.name, part.size
                    ),
                )
            })?;
            {
                let mut tee = TeeWriter {
                    a: &mut hashing,
                    b: &mut file,
                };
                copy_retrying(&mut limited, &mut tee).map_err(|e| unreadable(e.to_string()))?;
            }
            io::Seek::rewind(&mut file)?;
            Verified::File(io::BufReader::with_capacity(256 * 1024, file))
        };
        if hashing.bytes < part.size {
            return Err(Self::fail(PartProblem::Truncated {
                part: part.name.clone(),
                got: hashing.bytes,
                expected: part.size,
            }));
        }
        if hashing.bytes > part.size {
            return Err(Self::fail(PartProblem::TooLong {
                part: part.name.clone(),
                expected: part.size,
            }));
        }
        let got = hex::encode(hashing.hasher.finalize());
        if got != part.sha256 {
            return Err(Self::fail(PartProblem::Corrupted {
                part: part.name.clone(),
                got,
                expected: part.sha256.clone(),
            }));
        }
        self.current = Some(verified);
        self.index += 1;
        Ok(())
    }

    /// After the last part: marks the cursor done.
    fn finish_stream(&mut self) {
        let mut state = self.cursor.0.lock().expect("cursor lock");
        state.done = true;
        state.current = None;
    }
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

/// `io::copy` that retries reads interrupted by a signal.
fn copy_retrying(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
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
                // Served whole: keep its buffer for the next part.
                if let Some(Verified::Memory(c)) = self.current.take() {
                    self.spare = c.into_inner();
                }
            }
            if self.index == self.parts.len() {
                if !self.cursor.done() {
                    self.finish_stream();
                }
                return Ok(0);
            }
            self.fetch()?;
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
