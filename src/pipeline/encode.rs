//! The backup direction: plaintext → parallel gzip → age → parts → store.
//!
//! Threads (all scoped to one call of `encode_stream`):
//! - the caller's thread runs the source, writing plaintext into a `BlockWriter`;
//! - `threads` workers compress 1 MiB blocks into gzip members;
//! - one collector puts the members back in order and writes them through age into the
//!   `PartSplitter`, which hashes and stores the parts.
//!
//! Every channel is bounded, so memory stays at a few blocks per worker whatever the data size,
//! and a slow store slows the source down (backpressure). The collector commits the stream
//! (age `finish`, last part) only when the source ended without error: a failed source leaves an
//! unfinished stream and no manifest.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

use super::compress::{BLOCK_SIZE, BlockCompressor, CompressOptions};
use super::parts::{PartSplitter, SplitOutcome};
use crate::snapshot::PartRecord;
use crate::store::Store;

/// Options of one encoded stream.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    pub part_size: u64,
    pub compress: CompressOptions,
}

/// What was stored for one stream.
#[derive(Debug, Clone)]
pub struct EncodedStream {
    pub plaintext_bytes: u64,
    pub compressed_bytes: u64,
    pub encrypted_bytes: u64,
    pub sha256: String,
    pub parts: Vec<PartRecord>,
}

/// Why a stream could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError<E: std::error::Error + 'static> {
    /// The source failed; nothing of the stream is committed.
    #[error(transparent)]
    Source(E),
    /// Compressing, encrypting or storing failed.
    #[error("storing stream {stream}: {source}")]
    Sink {
        stream: String,
        #[source]
        source: io::Error,
    },
}

enum Msg {
    Block(Receiver<Vec<u8>>),
    /// The source finished cleanly: commit the stream.
    End,
}

/// The source's end of the pipeline: cuts plaintext into blocks for the workers.
pub struct BlockWriter<'p> {
    buf: Vec<u8>,
    jobs: SyncSender<(Vec<u8>, SyncSender<Vec<u8>>)>,
    order: SyncSender<Msg>,
    total: u64,
    progress: &'p (dyn Fn(u64) + Sync),
}

impl BlockWriter<'_> {
    fn dispatch(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK_SIZE));
        let (tx, rx) = sync_channel(1);
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the backup pipeline stopped");
        self.order.send(Msg::Block(rx)).map_err(|_| closed())?;
        self.jobs.send((block, tx)).map_err(|_| closed())?;
        Ok(())
    }

    /// Plaintext bytes written so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl Write for BlockWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A stop request ends the source at the next write: the stream is never committed.
        crate::shutdown::check_io()?;
        let n = data.len().min(BLOCK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.total += n as u64;
        (self.progress)(n as u64);
        if self.buf.len() == BLOCK_SIZE {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` (the source) and stores what it writes as the age-encrypted, gzip-compressed
/// stream `stream`, in parts under `prefix`. `progress` is called with each count of plaintext
/// bytes accepted.
///
/// # Errors
/// `EncodeError::Source` when `produce` fails, `EncodeError::Sink` when compressing, encrypting
/// or storing fails. Either way no part set is reported and the caller writes no manifest; the
/// parts already stored are orphans for the caller (or the sweep) to remove.
pub fn encode_stream<T, E>(
    store: &dyn Store,
    prefix: &str,
    stream: &str,
    recipients: &[age::x25519::Recipient],
    opts: &EncodeOptions,
    progress: &(dyn Fn(u64) + Sync),
    produce: impl FnOnce(&mut BlockWriter<'_>) -> Result<T, E>,
) -> Result<(EncodedStream, T), EncodeError<E>>
where
    E: std::error::Error + From<io::Error> + 'static,
{
    let threads = opts.compress.threads.max(1);
    let (job_tx, job_rx) = sync_channel::<(Vec<u8>, SyncSender<Vec<u8>>)>(threads * 2);
    let (order_tx, order_rx) = sync_channel::<Msg>(threads * 4);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let sink_err = |source| EncodeError::Sink {
        stream: stream.to_string(),
        source,
    };

    thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let copts = opts.compress;
            scope.spawn(move || {
                let mut compressor = BlockCompressor::new(copts);
                loop {
                    let job = job_rx.lock().expect("job queue lock").recv();
                    let Ok((block, reply)) = job else { break };
                    let mut out = Vec::with_capacity(block.len() / 2);
                    compressor.compress(&block, &mut out);
                    if reply.send(out).is_err() {
                        break;
                    }
                }
            });
        }

        let collector =
            scope.spawn(move || collect(store, prefix, stream, recipients, opts, order_rx));

        let mut writer = BlockWriter {
            buf: Vec::with_capacity(BLOCK_SIZE),
            jobs: job_tx,
            order: order_tx,
            total: 0,
            progress,
        };
        let produced = produce(&mut writer).and_then(|t| {
            writer.dispatch()?;
            Ok(t)
        });
        let plaintext_bytes = writer.total;
        let BlockWriter { jobs, order, .. } = writer;
        let produced = match produced {
            Ok(t) => order.send(Msg::End).map(|_| t).map_err(|_| None),
            Err(e) => Err(Some(e)),
        };
        drop((jobs, order));
        let collected = collector
            .join()
            .expect("the collector thread does not panic");
        match (produced, collected) {
            (Ok(t), Ok(Some((split, compressed_bytes)))) => Ok((
                EncodedStream {
                    plaintext_bytes,
                    compressed_bytes,
                    encrypted_bytes: split.bytes,
                    sha256: split.sha256,
                    parts: split.parts,
                },
                t,
            )),
            // The source failed and the collector merely saw it stop.
            (Err(Some(e)), Ok(_)) => Err(EncodeError::Source(e)),
            // A sink failure is the cause: the source only saw the pipe close.
            (_, Err(e)) => Err(sink_err(e)),
            (Ok(_) | Err(None), Ok(_)) => {
                unreachable!("the collector commits after End and errs otherwise")
            }
        }
    })
}

/// The collector: ordered members → age → parts. Commits only on `Msg::End`; returns `None`
/// when the source stopped without it.
fn collect(
    store: &dyn Store,
    prefix: &str,
    stream: &str,
    recipients: &[age::x25519::Recipient],
    opts: &EncodeOptions,
    order: Receiver<Msg>,
) -> io::Result<Option<(SplitOutcome, u64)>> {
    let splitter = PartSplitter::new(store, prefix, stream, opts.part_size);
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(io::Error::other)?;
    let mut age = encryptor.wrap_output(splitter)?;
    let mut compressed = 0u64;
    for msg in order {
        match msg {
            Msg::Block(rx) => {
                let members = rx.recv().map_err(|_| {
                    io::Error::other("a compression worker stopped before finishing its block")
                })?;
                compressed += members.len() as u64;
                age.write_all(&members)?;
            }
            Msg::End => {
                if compressed == 0 {
                    // An empty source still makes a valid (empty) gzip stream.
                    let mut empty = Vec::new();
                    BlockCompressor::new(opts.compress).compress(&[], &mut empty);
                    compressed += empty.len() as u64;
                    age.write_all(&empty)?;
                }
                let splitter = age.finish()?;
                let outcome = splitter.finish().map_err(io::Error::other)?;
                return Ok(Some((outcome, compressed)));
            }
        }
    }
    // The source stopped without `End`: abandon the stream (the open part is dropped unstored).
    Ok(None)
}
