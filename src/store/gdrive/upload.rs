//! Resumable uploads, spoken by coffer itself: chunks of `chunk_size`, a status query after
//! any doubt, resume from the offset Drive reports, a new session after 404/410, and the
//! part's md5/sha256 compared with what Drive computed.

use std::io::{self, Write};
use std::sync::Arc;
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

/// Streaming upload of one object: the bytes go up in chunks as they come; the whole object
/// stays in memory until Drive has confirmed its checksum, so it can be sent again.
pub(super) struct DriveWriter {
    pub(super) rt: Arc<tokio::runtime::Runtime>,
    pub(super) inner: Arc<Inner>,
    pub(super) label: String,
    pub(super) key: String,
    pub(super) parent: String,
    pub(super) name: String,
    pub(super) data: Vec<u8>,
    pub(super) session: Option<String>,
    /// Bytes Drive has committed in the current session.
    pub(super) committed: usize,
    pub(super) uploads: Arc<Uploads>,
    /// Hex sha256 of `data`, once complete (set by `finish`).
    pub(super) sha256: String,
}

impl DriveWriter {
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
            let s = self
                .inner
                .start_session(&self.parent, &self.name, &self.key, &self.sha256)
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
        let final_request = last && self.data.len() - first <= chunk;
        let end = if final_request {
            self.data.len()
        } else {
            let limit = if last { self.data.len() } else { upto };
            first + limit.saturating_sub(first).min(chunk) / CHUNK_ALIGN * CHUNK_ALIGN
        };
        if !last && end <= first {
            return None;
        }
        Some(Span {
            first,
            end,
            total: final_request.then_some(self.data.len()),
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
        let body = Bytes::copy_from_slice(&self.data[first..end]);
        let range = if body.is_empty() {
            format!("bytes */{}", self.data.len())
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
        if said > end {
            // More than was ever sent: the session is not ours to trust.
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
            Standing::At(n) if n <= self.data.len() => self.committed = n,
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
        // The part is gathered here and uploaded, chunk by chunk, by `finish` (in the
        // background, beside the next parts' compression).
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for DriveWriter {
    /// Hands the part to a background upload (at most `parallel_uploads` at once) and
    /// returns what was written; the upload's outcome is reported by `Store::sync` (the
    /// backup calls it before committing the manifest) or by the next `put`.
    fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        self.sha256 = hex::encode(Sha256::digest(&self.data));
        let meta = ObjectMeta {
            key: self.key.clone(),
            size: self.data.len() as u64,
            modified: None,
            sha256: Some(self.sha256.clone()),
        };
        let uploads = self.uploads.clone();
        uploads.acquire();
        let slot = Slot {
            uploads: uploads.clone(),
            key: meta.key.clone(),
            label: self.label.clone(),
            result: None,
        };
        let label = self.label.clone();
        std::thread::Builder::new()
            .name("coffer-drive-upload".into())
            .spawn(move || {
                let mut slot = slot;
                slot.result = Some((*self).upload());
            })
            .map_err(|e| StoreError::Io {
                store: label,
                op: "starting an upload of",
                key: meta.key.clone(),
                retryable: false,
                source: e,
            })?;
        Ok(meta)
    }
}

impl DriveWriter {
    /// Sends the whole part in chunks of `chunk_size`; the last request carries the rest and
    /// the total. Returns the file resource.
    pub(super) fn send_all(&mut self) -> io::Result<Option<Value>> {
        let chunk = self.inner.config.chunk_size;
        while self.data.len().saturating_sub(self.committed) > chunk {
            let upto = self.committed + chunk;
            self.push(upto, false)?;
        }
        let len = self.data.len();
        self.push(len, true)
    }

    /// Uploads the part, confirms Drive's checksum (uploading again on a mismatch) and
    /// removes duplicates.
    pub(super) fn upload(mut self) -> Result<ObjectMeta, StoreError> {
        let sha = self.sha256.clone();
        let md5 = hex::encode(Md5::digest(&self.data));
        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            let len = self.data.len();
            let mut file = match self.send_all() {
                Ok(Some(f)) => f,
                Ok(None) => return Err(self.err(io_other("the upload did not complete"))),
                Err(e) => return Err(self.err(e)),
            };
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
            if ok {
                break id;
            }
            tracing::warn!(
                key = self.key,
                "Drive reports {:?} bytes with sha256 {:?} / md5 {:?} for what was {len} bytes \
                 with sha256 {sha}: deleting it and uploading again",
                size,
                their_sha,
                their_md5
            );
            let inner = self.inner.clone();
            let rt = self.rt.clone();
            rt.block_on(async { inner.delete_id(&id).await })
                .map_err(|e| self.err(e))?;
            if attempt >= MAX_REUPLOADS {
                return Err(self.err(io_other(format!(
                    "Drive stored other bytes than were sent, {attempt} times in a row"
                ))));
            }
            self.session = None;
            self.committed = 0;
        };
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
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.data.len() as u64,
            modified: None,
            sha256: Some(sha),
        })
    }
}
