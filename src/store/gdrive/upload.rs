//! Resumable uploads, spoken by coffer itself: chunks of `chunk_size`, a status query after
//! any doubt, resume from the offset Drive reports, a new session after 404/410 (while the
//! part's start is still in memory), and the part's md5/sha256 compared with what Drive
//! computed.
//!
//! A part streams: its writer hands the bytes, a piece at a time, to the part's upload
//! thread, which keeps a window of a chunk and a piece (`window`) of what Drive has not yet
//! confirmed. So memory holds about `parallel_uploads × 2 × chunk_size` (the window, and the
//! request being sent), whatever `part_size` is.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use md5::Md5;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;
use crate::store::{ObjectMeta, ObjectWriter, StoreError};

/// Where an upload session stands after a doubt (`PUT` with `bytes */TOTAL`).
pub(super) enum Standing {
    /// Committed up to (not including) this offset.
    At(usize),
    /// The upload completed: the file.
    Done(Value),
    /// The session is gone: start again.
    Gone,
}

/// The largest piece a writer hands its upload thread (at most a chunk).
const FEED: usize = 1 << 20;

/// How much of a part its upload keeps in memory: a chunk and a piece. That is what Drive has
/// not confirmed yet, and (while there is room) the confirmed start, so a lost session of a
/// part that fits can start again from byte 0.
fn window(chunk: usize) -> usize {
    chunk + FEED.min(chunk)
}

/// What a part's writer hands its upload thread.
pub(super) enum Feed {
    Data(Vec<u8>),
    /// The part is complete.
    End,
}

/// The writing end of one object: its bytes go to the object's upload thread as they come,
/// in pieces of `FEED` bytes through a channel of one piece (the upload's pace holds the
/// writer back).
pub(super) struct DriveWriter {
    pub(super) label: String,
    pub(super) key: String,
    pub(super) pending: Vec<u8>,
    pub(super) feed: Option<SyncSender<Feed>>,
    pub(super) size: u64,
    /// The size of the pieces handed over: `FEED`, or the chunk size when smaller.
    pub(super) piece: usize,
    /// Why the upload thread stopped, when it failed: set before it drops its end.
    pub(super) failure: Arc<Mutex<Option<String>>>,
}

impl DriveWriter {
    fn stopped(&self) -> io::Error {
        let why = self
            .failure
            .lock()
            .expect("failure lock")
            .clone()
            .unwrap_or_else(|| "its upload stopped".into());
        io_other(format!("uploading {}: {why}", self.key))
    }

    fn send(&mut self, feed: Feed) -> io::Result<()> {
        let Some(tx) = &self.feed else {
            return Err(self.stopped());
        };
        if tx.send(feed).is_err() {
            self.feed = None;
            return Err(self.stopped());
        }
        Ok(())
    }
}

/// One object's upload, on its own thread: receives the bytes from its `DriveWriter` and
/// sends them up a chunk a request as they come.
pub(super) struct DriveUpload {
    pub(super) rt: Arc<tokio::runtime::Runtime>,
    pub(super) inner: Arc<Inner>,
    pub(super) label: String,
    pub(super) key: String,
    pub(super) parent: String,
    pub(super) name: String,
    /// The part's bytes from offset `base` on, as far as they were received.
    pub(super) data: Vec<u8>,
    pub(super) base: usize,
    pub(super) session: Option<String>,
    /// Bytes Drive has committed in the current session.
    pub(super) committed: usize,
    /// The whole part was received.
    pub(super) closed: bool,
    pub(super) sha256: Sha256,
    pub(super) md5: Md5,
}

impl DriveUpload {
    pub(super) fn err(&self, e: io::Error) -> StoreError {
        let retryable = e.kind() != io::ErrorKind::PermissionDenied;
        StoreError::Io {
            store: self.label.clone(),
            op: "uploading",
            key: self.key.clone(),
            retryable,
            source: e,
        }
    }

    /// Sends `data[committed..upto]`; `last` sends the end of the object. Returns the file
    /// resource when the upload completed.
    pub(super) fn push(&mut self, upto: usize, last: bool) -> io::Result<Option<Value>> {
        let rt = self.rt.clone();
        rt.block_on(self.push_async(upto, last))
    }

    pub(super) async fn query(&self, session: &str, total: Option<usize>) -> io::Result<Standing> {
        let inner = &self.inner;
        let range = match total {
            Some(t) => format!("bytes */{t}"),
            None => "bytes */*".into(),
        };
        inner
            .retry(
                &format!("asking where the upload of {} stands", self.key),
                |token| {
                    let req = inner.request(
                        hyper::Method::PUT,
                        session,
                        &token,
                        &[("content-range", range.clone())],
                        Bytes::new(),
                    );
                    async move {
                        let (status, headers, body) = inner.send(req).await?;
                        match status {
                            200 | 201 => Ok(Standing::Done(
                                serde_json::from_slice(&body).unwrap_or(Value::Null),
                            )),
                            308 => Ok(Standing::At(committed_from(&headers))),
                            404 | 410 => Ok(Standing::Gone),
                            s => Err(classify(s, retry_after(&headers), &body)),
                        }
                    }
                },
            )
            .await
    }

    /// Sends `data[committed..upto]` (all of it when `last`), one chunk a request, until Drive
    /// has it. After any doubt it waits, then asks where the session stands before resending;
    /// a doubt that brings no progress counts as an attempt, up to `MAX_ATTEMPTS`.
    pub(super) async fn push_async(
        &mut self,
        upto: usize,
        last: bool,
    ) -> io::Result<Option<Value>> {
        // Every way round the loop that sends nothing new counts, so nothing loops forever.
        let mut tries = 0u32;
        let mut refreshed = false;
        // The furthest Drive has ever confirmed: only going beyond it counts as progress
        // (a session that keeps restarting must run out of attempts).
        let mut best = self.committed;
        loop {
            // Stopping: a part not yet stored is given up (its backup writes no manifest).
            crate::shutdown::check_io()?;
            let session = self.session().await?;
            let Some(span) = self.next_span(upto, last) else {
                return Ok(None);
            };
            let doubt = match self
                .send_chunk(&session, span, upto, last, &mut refreshed)
                .await?
            {
                Sent::Over(file) => return Ok(file),
                Sent::Kept => {
                    if self.committed > best {
                        best = self.committed;
                        tries = 0;
                    }
                    // Drive kept it (or part of it): send on.
                    continue;
                }
                Sent::Doubt(doubt) => doubt,
            };
            tries += 1;
            if tries >= MAX_ATTEMPTS {
                let why = doubt.map_or_else(String::new, |(w, _)| w);
                return Err(io_other(format!(
                    "uploading {}: still failing after {tries} attempts: {why}",
                    self.key
                )));
            }
            self.wait_out(doubt.as_ref(), tries).await;
            if let Some(file) = self.ask_standing(span.total, last).await? {
                return Ok(Some(file));
            }
        }
    }

    /// The current upload session; a new one, from byte 0, when there is none.
    async fn session(&mut self) -> io::Result<String> {
        if self.session.is_none() {
            if self.base > 0 {
                return Err(io_other(format!(
                    "the upload session was lost after Drive had confirmed {} bytes, and the \
                     part's start is no longer in memory to send again: the backup fails, and \
                     the next one uploads it afresh",
                    self.base
                )));
            }
            let s = self
                .inner
                .start_session(&self.parent, &self.name, &self.key)
                .await?;
            self.session = Some(s);
            self.committed = 0;
        }
        Ok(self.session.clone().expect("a session"))
    }

    /// What the next request carries, from the committed offset; `None`: nothing to send
    /// until more of the part is there.
    fn next_span(&self, upto: usize, last: bool) -> Option<Span> {
        let chunk = self.inner.config.chunk_size;
        let first = self.committed;
        // At most one chunk per request, even after a session restarted at byte 0. Every
        // chunk but the last is a multiple of 256 KiB, even after Drive kept an odd
        // amount: what does not fit waits for the next request.
        let len = self.end();
        let final_request = last && len - first <= chunk;
        let end = if final_request {
            len
        } else {
            let limit = if last { len } else { upto };
            first + limit.saturating_sub(first).min(chunk) / CHUNK_ALIGN * CHUNK_ALIGN
        };
        if !last && end <= first {
            return None;
        }
        Some(Span {
            first,
            end,
            total: final_request.then_some(len),
        })
    }

    /// Sends `span` and reads what Drive made of it.
    async fn send_chunk(
        &mut self,
        session: &str,
        span: Span,
        upto: usize,
        last: bool,
        refreshed: &mut bool,
    ) -> io::Result<Sent> {
        let req = self.chunk_request(session, span).await?;
        let before = self.committed;
        let doubt = match self.inner.send(req).await {
            Ok((200 | 201, _, body)) => {
                return Ok(Sent::Over(Some(
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                )));
            }
            Ok((308, headers, _)) => {
                return Ok(self.kept(committed_from(&headers), span, before, upto, last));
            }
            Ok((404 | 410, _, _)) => {
                tracing::info!("upload session of {} expired; starting again", self.key);
                self.session = None;
                Some(("the upload session expired".into(), None))
            }
            Ok((status, headers, body)) => self.refused(status, &headers, &body, refreshed).await?,
            Err(Failure::Retry { why, after }) => Some((why, after)),
            Err(other) => return Err(fatal_io(other)),
        };
        Ok(Sent::Doubt(doubt))
    }

    /// The `PUT` that carries `span`; an empty span asks for the end (`bytes */TOTAL`).
    async fn chunk_request(&self, session: &str, span: Span) -> io::Result<hyper::Request<Body>> {
        let Span { first, end, total } = span;
        let body = Bytes::copy_from_slice(&self.data[first - self.base..end - self.base]);
        let range = if body.is_empty() {
            format!("bytes */{}", self.end())
        } else {
            format!(
                "bytes {first}-{}/{}",
                end - 1,
                total.map_or_else(|| "*".to_string(), |t| t.to_string())
            )
        };
        let token = self.inner.token(false).await.map_err(|f| match f {
            Failure::Retry { why, .. } => io_other(why),
            other => fatal_io(other),
        })?;
        Ok(self.inner.request(
            hyper::Method::PUT,
            session,
            &token,
            &[
                ("content-range", range),
                ("content-type", "application/octet-stream".into()),
            ],
            body,
        ))
    }

    /// A 308: Drive has committed `said` bytes of the session (`before` was committed when
    /// `span` went up).
    fn kept(&mut self, said: usize, span: Span, before: usize, upto: usize, last: bool) -> Sent {
        let Span { first, end, .. } = span;
        if said > end || said < self.base {
            // More than was ever sent, or less than it had confirmed: the session is not ours
            // to trust.
            self.session = None;
            return Sent::Doubt(Some((
                format!("Drive reports {said} bytes of {end} sent"),
                None,
            )));
        }
        self.committed = said;
        if !last && self.committed >= upto {
            return Sent::Over(None);
        }
        if self.committed > before {
            return Sent::Kept;
        }
        Sent::Doubt(Some((
            format!("Drive kept nothing of bytes {first}-{}", end.max(1) - 1),
            None,
        )))
    }

    /// Any other status, as `classify` judges it: a refused token is refreshed once (a doubt
    /// with nothing to wait for); what waiting cannot fix is an error.
    async fn refused(
        &mut self,
        status: u16,
        headers: &hyper::HeaderMap,
        body: &[u8],
        refreshed: &mut bool,
    ) -> io::Result<Option<Doubt>> {
        match classify(status, retry_after(headers), body) {
            Failure::Fatal(why) => Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
            Failure::Unauthorized(why) if !*refreshed => {
                tracing::info!("{why}; refreshing the access token");
                *refreshed = true;
                self.inner.token(true).await.map_err(fatal_io)?;
                Ok(None)
            }
            Failure::Unauthorized(why) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("uploading {}: Drive refused a fresh token: {why}", self.key),
            )),
            Failure::Retry { why, after } => Ok(Some((why, after))),
            Failure::NotFound(why) => {
                self.session = None;
                Ok(Some((why, None)))
            }
        }
    }

    /// Waits before asking where the upload stands: Drive's `Retry-After`, else the backoff
    /// for `tries`; not at all after a refreshed token.
    async fn wait_out(&self, doubt: Option<&Doubt>, tries: u32) {
        if let Some((why, after)) = doubt {
            let wait = after.unwrap_or_else(|| backoff(tries));
            tracing::info!(
                "uploading {}: {why}; asking where it stands in {} ms",
                self.key,
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// After any doubt, Drive says where the session stands before anything is resent: the
    /// committed offset is taken from it, or the session is dropped. Returns the file when
    /// the upload turned out complete.
    async fn ask_standing(
        &mut self,
        total: Option<usize>,
        last: bool,
    ) -> io::Result<Option<Value>> {
        let Some(session) = self.session.clone() else {
            return Ok(None);
        };
        match self.query(&session, total).await? {
            Standing::Done(file) if last => return Ok(Some(file)),
            Standing::Done(_) => {
                return Err(io_other(format!(
                    "uploading {}: Drive completed the upload early",
                    self.key
                )));
            }
            Standing::At(n) if n <= self.end() && n >= self.base => self.committed = n,
            Standing::At(_) | Standing::Gone => self.session = None,
        }
        Ok(None)
    }
}

/// The bytes one request carries: `data[first..end]`, with the part's total when it is the
/// last request.
#[derive(Clone, Copy)]
struct Span {
    first: usize,
    end: usize,
    total: Option<usize>,
}

/// Why a request left the upload in doubt, and the wait Drive asked for (`Retry-After`).
type Doubt = (String, Option<Duration>);

/// What Drive made of one chunk.
enum Sent {
    /// This push is over: with the file resource when the upload completed.
    Over(Option<Value>),
    /// Drive committed more than before: send on.
    Kept,
    /// Count an attempt, wait, ask where the session stands; `None`: the token was just
    /// refreshed, nothing to wait for.
    Doubt(Option<Doubt>),
}

/// The committed offset from a 308's `Range: bytes=0-N` (none: nothing committed).
pub(super) fn committed_from(headers: &hyper::HeaderMap) -> usize {
    headers
        .get("range")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').nth(1))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n + 1)
}

impl Write for DriveWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.piece - self.pending.len());
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(self.piece);
        }
        self.pending.extend_from_slice(&buf[..n]);
        self.size += n as u64;
        if self.pending.len() == self.piece {
            let piece = std::mem::replace(&mut self.pending, Vec::with_capacity(self.piece));
            self.send(Feed::Data(piece))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for DriveWriter {
    /// Hands the rest of the part to its upload and returns what was written; the upload's
    /// outcome is reported by `Store::sync` (the backup calls it before committing the
    /// manifest) or by the next `put`.
    fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        let rest = std::mem::take(&mut self.pending);
        let sent = if rest.is_empty() {
            Ok(())
        } else {
            self.send(Feed::Data(rest))
        }
        .and_then(|()| self.send(Feed::End));
        self.feed = None;
        if let Err(e) = sent {
            return Err(StoreError::Io {
                store: self.label.clone(),
                op: "uploading",
                key: self.key.clone(),
                retryable: true,
                source: e,
            });
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            modified: None,
            sha256: None,
            etag: None,
        })
    }
}

impl DriveUpload {
    /// The part's bytes received so far (the offset after the last).
    fn end(&self) -> usize {
        self.base + self.data.len()
    }

    /// Waits for the writer until more than a chunk is unsent or the part is complete.
    /// `Ok(false)`: the writer went away without completing the part.
    fn gather(&mut self, rx: &Receiver<Feed>) -> bool {
        let chunk = self.inner.config.chunk_size;
        if self.data.capacity() == 0 {
            // Never grown (`make_room`), so never more than this resident.
            self.data.reserve_exact(window(chunk));
        }
        while !self.closed && self.end() - self.committed <= chunk {
            match rx.recv() {
                Ok(Feed::Data(bytes)) => {
                    self.sha256.update(&bytes);
                    self.md5.update(&bytes);
                    self.make_room(bytes.len());
                    self.data.extend_from_slice(&bytes);
                }
                Ok(Feed::End) => self.closed = true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Lets go of confirmed bytes when `extra` more would not fit the window.
    fn make_room(&mut self, extra: usize) {
        let window = window(self.inner.config.chunk_size);
        if self.data.len() + extra > window && self.committed > self.base {
            self.data.drain(..self.committed - self.base);
            self.base = self.committed;
        }
    }

    /// Sends the part in chunks of `chunk_size` as it arrives; the last request carries the
    /// rest and the total. Returns the file resource, or `None` when the writer went away.
    fn send_all(&mut self, rx: &Receiver<Feed>) -> io::Result<Option<Value>> {
        let chunk = self.inner.config.chunk_size;
        loop {
            if !self.gather(rx) {
                return Ok(None);
            }
            if self.closed && self.end() - self.committed <= chunk {
                let len = self.end();
                return match self.push(len, true)? {
                    Some(file) => Ok(Some(file)),
                    None => Err(io_other("the upload did not complete")),
                };
            }
            let upto = self.committed + chunk;
            self.push(upto, false)?;
        }
    }

    /// Uploads the part as its writer hands it over, confirms Drive's checksum and removes
    /// duplicates. A checksum that does not match fails the part (the file is deleted): its
    /// bytes are no longer in memory to send again, and the next backup uploads afresh. A
    /// writer that went away before the part was complete (its backup failed elsewhere)
    /// leaves nothing stored and nothing to report.
    pub(super) fn run(mut self, rx: &Receiver<Feed>) -> Result<(), StoreError> {
        let mut file = match self.send_all(rx) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.err(e)),
        };
        let len = self.end();
        let sha = hex::encode(std::mem::take(&mut self.sha256).finalize());
        let md5 = hex::encode(std::mem::take(&mut self.md5).finalize());
        let id = file["id"].as_str().unwrap_or("").to_string();
        if id.is_empty() {
            return Err(self.err(io_other("Drive completed the upload without a file id")));
        }
        // The final answer should carry the checksums (the session asked for them); if it
        // does not, ask for the file.
        if file["sha256Checksum"].is_null() && file["md5Checksum"].is_null() {
            let inner = self.inner.clone();
            let rt = self.rt.clone();
            file = rt
                .block_on(async { inner.file_meta(&id).await })
                .map_err(|e| self.err(e))?;
        }
        let size = file["size"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or_else(|| file["size"].as_u64());
        let their_sha = file["sha256Checksum"].as_str();
        let their_md5 = file["md5Checksum"].as_str();
        let ok = size == Some(len as u64)
            && match (their_sha, their_md5) {
                (Some(s), _) => s.eq_ignore_ascii_case(&sha),
                (None, Some(m)) => m.eq_ignore_ascii_case(&md5),
                (None, None) => false,
            };
        if !ok {
            let inner = self.inner.clone();
            let rt = self.rt.clone();
            let deleted = match rt.block_on(async { inner.delete_id(&id).await }) {
                Ok(()) => "it was deleted".to_string(),
                Err(e) => format!("deleting it failed too ({e}); the orphan sweep removes it"),
            };
            return Err(self.err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "Drive reports {} bytes with sha256 {} / md5 {} for what was {len} bytes \
                     with sha256 {sha}: {deleted}. The backup fails, and the next one uploads \
                     again; if this repeats, something between this host and Drive changes \
                     the bytes",
                    size.map_or_else(|| "no size".to_string(), |s| s.to_string()),
                    their_sha.unwrap_or("(none)"),
                    their_md5.unwrap_or("(none)"),
                ),
            )));
        }
        // A create retried behind our back can leave a second copy: remove other files of
        // exactly this name that coffer made with these very bytes (judged as the upload
        // was: by sha256, else by md5). Anything else of that name (another writer's) is
        // left alone. The object is stored and confirmed either way, so a failed clean-up
        // only warns.
        let inner = self.inner.clone();
        let (parent, name, ours) = (self.parent.clone(), self.name.clone(), sha.clone());
        let rt = self.rt.clone();
        let cleaned = rt.block_on(async move {
            let same = inner.children(&parent, Some(&name)).await?;
            for f in same.iter().filter(|f| {
                !f.folder
                    && f.id != id
                    && f.ours
                    && match (&f.sha256, &f.md5) {
                        (Some(s), _) => s.eq_ignore_ascii_case(&ours),
                        (None, Some(m)) => m.eq_ignore_ascii_case(&md5),
                        (None, None) => false,
                    }
            }) {
                tracing::warn!("removing a duplicate {name} ({}) left in Drive", f.id);
                inner.delete_id(&f.id).await?;
            }
            io::Result::Ok(())
        });
        if let Err(e) = cleaned {
            tracing::warn!(key = self.key, "could not look for duplicates: {e}");
        }
        Ok(())
    }
}

/// Starts the upload thread of `upload` and returns its writer. The caller has taken a slot
/// in `uploads`; the thread gives it back with the outcome.
pub(super) fn start(
    upload: DriveUpload,
    uploads: Arc<super::Uploads>,
) -> Result<DriveWriter, StoreError> {
    let (tx, rx) = sync_channel(1);
    let failure = Arc::new(Mutex::new(None));
    let slot = Slot {
        uploads,
        key: upload.key.clone(),
        label: upload.label.clone(),
        result: None,
    };
    let writer = DriveWriter {
        label: upload.label.clone(),
        key: upload.key.clone(),
        pending: Vec::new(),
        feed: Some(tx),
        size: 0,
        piece: FEED.min(upload.inner.config.chunk_size),
        failure: failure.clone(),
    };
    let (label, key) = (upload.label.clone(), upload.key.clone());
    std::thread::Builder::new()
        .name("coffer-drive-upload".into())
        .spawn(move || {
            let mut slot = slot;
            let result = upload.run(&rx);
            if let Err(e) = &result {
                *failure.lock().expect("failure lock") = Some(e.to_string());
            }
            // The writer sees the failure once its channel is gone.
            drop(rx);
            slot.result = Some(result);
        })
        .map_err(|e| StoreError::Io {
            store: label,
            op: "starting an upload of",
            key,
            retryable: false,
            source: e,
        })?;
    Ok(writer)
}
