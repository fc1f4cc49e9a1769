//! Runs a reader on its own thread, so the restore direction uses two cores: one thread
//! fetches, verifies, decrypts and decompresses while the caller's thread extracts.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::Scope;

const CHUNK: usize = 1 << 20;
const DEPTH: usize = 4;

/// The consuming end of `read_ahead`.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Reads `inner` to its end on a thread of `scope`, `DEPTH` chunks of 1 MiB ahead of the
/// returned reader. Errors arrive in order, after the bytes before them.
pub fn read_ahead<'scope, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    mut inner: R,
) -> ReadAhead {
    let (tx, rx) = sync_channel(DEPTH);
    scope.spawn(move || {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let mut filled = 0;
            let result = loop {
                match inner.read(&mut chunk[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == CHUNK {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            chunk.truncate(filled);
            let end = filled < CHUNK || result.is_err();
            if !chunk.is_empty() && tx.send(Ok(chunk)).is_err() {
                return; // the reader was dropped
            }
            if let Err(e) = result {
                let _ = tx.send(Err(e));
                return;
            }
            if end {
                let _ = tx.send(Ok(Vec::new()));
                return;
            }
        }
    });
    ReadAhead {
        rx,
        buf: Vec::new(),
        pos: 0,
        done: false,
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("the read-ahead thread stopped"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing(Vec<u8>);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("boom"));
            }
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn passes_bytes_then_the_error_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| i as u8).collect();
        std::thread::scope(|s| {
            let mut r = read_ahead(s, &data[..]);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);

            let mut r = read_ahead(s, Failing(vec![1; 5000]));
            let mut out = Vec::new();
            let err = r.read_to_end(&mut out).unwrap_err();
            assert_eq!(err.to_string(), "boom");
            assert_eq!(out, vec![1; 5000]);
        });
    }
}
