//! Small readers of the restore direction: one that moves a progress bar, one that measures
//! the time spent in the reader below it (a drill's decrypt+decompress share).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::progress::Progress;

/// A reader that adds the time spent inside `read` to a shared counter: the decryption and
/// decompression done on the read-ahead thread while the load or the extract goes on.
pub struct Timed<R> {
    inner: R,
    busy: Arc<AtomicU64>,
}

impl<R> Timed<R> {
    pub fn new(inner: R, busy: Arc<AtomicU64>) -> Timed<R> {
        Timed { inner, busy }
    }
}

impl<R: Read> Read for Timed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A stop request ends a load or an extract at the next read.
        crate::shutdown::check_io()?;
        let t = Instant::now();
        let n = self.inner.read(buf);
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy.fetch_add(nanos, Ordering::Relaxed);
        n
    }
}

/// Seconds accumulated by `Timed` readers.
pub fn busy_seconds(busy: &AtomicU64) -> f64 {
    busy.load(Ordering::Relaxed) as f64 / 1e9
}

/// A reader that moves a progress bar.
pub struct CountingRead<'a, R> {
    inner: R,
    bar: &'a Progress,
}

impl<'a, R> CountingRead<'a, R> {
    pub fn new(inner: R, bar: &'a Progress) -> Self {
        CountingRead { inner, bar }
    }
}

impl<R: Read> Read for CountingRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
