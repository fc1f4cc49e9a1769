//! An S3-compatible store (AWS S3, Backblaze B2, Wasabi, Cloudflare R2, MinIO, Ceph, Garage):
//! objects are `<prefix><key>` in one bucket, behind the same `Store` trait as the others.
//!
//! coffer signs its own requests (SigV4, `sigv4.rs`) on the hyper client it already has, so it
//! controls what every S3 implementation must accept: `Content-MD5` on every body, the payload
//! hash in the clear, no `aws-chunked` encoding or trailing checksums (the 2025 AWS SDK defaults
//! that broke B2, R2 and others).
//!
//! An object is written in pieces of `chunk_size`: one `PUT` when it fits in one, else a
//! multipart upload with `parallel_uploads` pieces in flight, so memory is bounded by
//! `(parallel_uploads + 1) × chunk_size`, whatever the part size. The ETag the server answers is
//! compared with the one computed while uploading (the MD5, or the MD5 of the pieces' MD5s and
//! `-N`); a failed upload is aborted. Reads are ranged GETs of `chunk_size`, each retried on its
//! own (a broken download resumes where it stopped), pinned to the object's ETag.

mod client;
pub mod sigv4;
mod xml;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::Method;
use md5::Digest as _;
use sha2::Sha256;

use super::{ObjectMeta, ObjectWriter, Store, StoreError};
use client::{Call, Client};
pub use sigv4::Credentials;

/// The smallest piece S3 takes in a multipart upload (all but the last).
pub const MIN_CHUNK: usize = 5 << 20;
/// The default piece: a multipart upload's unit, and a ranged GET's.
pub const DEFAULT_CHUNK: usize = 16 << 20;
/// How long one request may take before it counts as lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An S3 store's settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:3900` (http only to loopback).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key (`coffer/` or empty).
    pub prefix: String,
    /// `https://endpoint/bucket/key` (true) or `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub credentials: CredentialSource,
    pub storage_class: Option<String>,
    /// `checksum = "sha256"`: every upload also carries `x-amz-checksum-sha256` (the server
    /// checks it and keeps it), beside the `Content-MD5` every request with a body carries.
    pub checksum_sha256: bool,
    pub chunk_size: usize,
    pub parallel_uploads: usize,
    pub request_timeout: Duration,
    /// The access key id, for error messages (not a secret).
    pub access_key_hint: String,
}

/// Where the key pair comes from (read when the store opens).
#[derive(Debug, Clone)]
pub struct CredentialSource {
    pub access_key_id: crate::secret::SecretRef,
    pub secret_access_key: crate::secret::SecretRef,
}

/// The S3 store.
pub struct S3Store {
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    label: String,
}

fn io_err(store: &str, op: &'static str, key: &str, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        return StoreError::NotFound {
            store: store.to_string(),
            key: key.to_string(),
        };
    }
    let retryable = e.kind() == io::ErrorKind::TimedOut;
    StoreError::Io {
        store: store.to_string(),
        op,
        key: key.to_string(),
        retryable,
        source: e,
    }
}

impl S3Store {
    /// Opens the store: reads the key pair, sets up TLS. Nothing is sent yet.
    ///
    /// # Errors
    /// An unreadable key, a bad endpoint, no CA certificates.
    pub fn new(cfg: &S3Config) -> Result<S3Store, StoreError> {
        use secrecy::ExposeSecret;
        let label = format!(
            "S3 bucket '{}' at {}{}",
            cfg.bucket,
            cfg.endpoint,
            if cfg.prefix.is_empty() {
                String::new()
            } else {
                format!(" (prefix {})", cfg.prefix)
            }
        );
        let fail = |what: &str, why: String| StoreError::Io {
            store: label.clone(),
            op: "opening",
            key: String::new(),
            retryable: false,
            source: io::Error::other(format!("{what}: {why}")),
        };
        let id = cfg
            .credentials
            .access_key_id
            .load()
            .map_err(|e| fail("reading the access key id", e.to_string()))?;
        let secret = cfg
            .credentials
            .secret_access_key
            .load()
            .map_err(|e| fail("reading the secret access key", e.to_string()))?;
        let creds = Credentials {
            access_key_id: id.expose_secret().trim().to_string(),
            secret_access_key: secret.expose_secret().trim().to_string().into(),
        };
        let uri: hyper::Uri = cfg
            .endpoint
            .parse()
            .map_err(|e| fail("store.endpoint", format!("{e}")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(fail(
                "store.endpoint",
                "give scheme and host, e.g. https://s3.eu-west-1.amazonaws.com".into(),
            ));
        };
        let base = format!("{scheme}://{authority}");
        let host = authority.to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail("starting the network runtime", e.to_string()))?;
        let connector = super::https_connector()
            .map_err(|e| fail("loading the system's CA certificates", e.to_string()))?;
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        let mut cfg = cfg.clone();
        cfg.access_key_hint = creds.access_key_id.clone();
        Ok(S3Store {
            rt: Arc::new(rt),
            client: Arc::new(Client {
                http,
                cfg,
                creds,
                base,
                host,
            }),
            label,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.client.cfg.prefix)
    }
}

impl std::fmt::Display for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// An ETag without its quotes.
fn etag(raw: &str) -> String {
    raw.trim().trim_matches('"').to_string()
}

impl Store for S3Store {
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        super::validate_key(key)?;
        Ok(Box::new(S3Writer {
            rt: self.rt.clone(),
            client: self.client.clone(),
            label: self.label.clone(),
            key: key.to_string(),
            full: self.full_key(key),
            buf: Vec::new(),
            size: 0,
            upload: None,
            pieces: Vec::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(
                self.client.cfg.parallel_uploads.max(1),
            )),
            finished: false,
            stored_etag: None,
        }))
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        super::validate_key(key)?;
        let full = self.full_key(key);
        let head = self
            .rt
            .block_on(self.client.call(Call::new(Method::HEAD, Some(&full))))
            .map_err(|e| io_err(&self.label, "reading", key, e))?;
        let size = head
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Box::new(S3Reader {
            rt: self.rt.clone(),
            client: self.client.clone(),
            label: self.label.clone(),
            key: key.to_string(),
            full,
            etag: head.header("etag").map(etag),
            size,
            offset: 0,
            body: None,
            buf: std::collections::VecDeque::new(),
            breaks: 0,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let full = self.full_key(prefix);
        let strip = self.client.cfg.prefix.len();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = Call::new(Method::GET, None)
                .query("list-type", "2")
                .query("prefix", &full);
            if let Some(t) = &token {
                call = call.query("continuation-token", t);
            }
            let answer = self
                .rt
                .block_on(self.client.call(call))
                .map_err(|e| io_err(&self.label, "listing", prefix, e))?;
            let text = String::from_utf8_lossy(&answer.body);
            for c in xml::blocks(&text, "Contents") {
                let Some(key) = xml::first(c, "Key") else {
                    continue;
                };
                let Some(key) = key.get(strip..).map(str::to_string) else {
                    continue;
                };
                let modified = xml::first(c, "LastModified")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)));
                out.push(ObjectMeta {
                    key,
                    size: xml::first(c, "Size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    modified,
                    sha256: None,
                    etag: xml::first(c, "ETag").map(|t| etag(&t)),
                });
            }
            token = (xml::first(&text, "IsTruncated").as_deref() == Some("true"))
                .then(|| xml::first(&text, "NextContinuationToken"))
                .flatten();
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn clock_skew(&self) -> Result<Option<chrono::TimeDelta>, StoreError> {
        let before = chrono::Utc::now();
        let answer = self
            .rt
            .block_on(self.client.call(Call::new(Method::HEAD, None)))
            .map_err(|e| io_err(&self.label, "asking the time of", "", e))?;
        let after = chrono::Utc::now();
        let Some(date) = answer
            .header("date")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        else {
            return Ok(None);
        };
        // The server's second is somewhere in the request: compare with its middle.
        let local = before + (after - before) / 2;
        Ok(Some(local - date.with_timezone(&chrono::Utc)))
    }

    fn sweep_uploads(
        &self,
        prefix: &str,
        before: std::time::SystemTime,
    ) -> Result<Vec<String>, StoreError> {
        let full = self.full_key(prefix);
        let strip = self.client.cfg.prefix.len();
        let mut stale = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Method::GET, None)
                .query("uploads", "")
                .query("prefix", &full);
            if let Some((key, id)) = &markers {
                call = call.query("key-marker", key).query("upload-id-marker", id);
            }
            let answer = self
                .rt
                .block_on(self.client.call(call))
                .map_err(|e| io_err(&self.label, "listing the uploads of", prefix, e))?;
            let text = String::from_utf8_lossy(&answer.body);
            for u in xml::blocks(&text, "Upload") {
                let (Some(key), Some(id)) = (xml::first(u, "Key"), xml::first(u, "UploadId"))
                else {
                    continue;
                };
                let started = xml::first(u, "Initiated")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)));
                if started.is_some_and(|t| t < before) {
                    stale.push((key, id));
                }
            }
            let truncated = xml::first(&text, "IsTruncated").as_deref() == Some("true");
            let next = (
                xml::first(&text, "NextKeyMarker"),
                xml::first(&text, "NextUploadIdMarker"),
            );
            match (truncated, next) {
                (true, (Some(k), Some(i))) if markers.as_ref() != Some(&(k.clone(), i.clone())) => {
                    markers = Some((k, i));
                }
                _ => break,
            }
        }
        let mut swept = Vec::new();
        for (key, id) in stale {
            let call = Call::new(Method::DELETE, Some(&key)).query("uploadId", &id);
            match self.rt.block_on(self.client.call(call)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&self.label, "aborting the upload of", &key, e)),
            }
            swept.push(key.get(strip..).unwrap_or(&key).to_string());
        }
        Ok(swept)
    }

    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        for batch in keys.chunks(1000) {
            for k in batch {
                super::validate_key(k)?;
            }
            let mut body = String::from("<Delete><Quiet>true</Quiet>");
            for k in batch {
                body.push_str(&format!(
                    "<Object><Key>{}</Key></Object>",
                    xml::escape(&self.full_key(k))
                ));
            }
            body.push_str("</Delete>");
            let first = batch.first().map_or("", String::as_str);
            // Content-MD5 (which every request with a body carries) is what S3 requires here.
            let call = Call::new(Method::POST, None)
                .query("delete", "")
                .header("content-type", "application/xml")
                .body(Bytes::from(body));
            let answer = self
                .rt
                .block_on(self.client.call(call))
                .map_err(|e| io_err(&self.label, "deleting", first, e))?;
            let text = String::from_utf8_lossy(&answer.body);
            // Quiet mode lists only the failures; a missing key is not one.
            if let Some(e) = xml::blocks(&text, "Error")
                .find(|e| xml::first(e, "Code").as_deref() != Some("NoSuchKey"))
            {
                let key = xml::first(e, "Key").unwrap_or_default();
                return Err(io_err(
                    &self.label,
                    "deleting",
                    key.get(self.client.cfg.prefix.len()..).unwrap_or(&key),
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{}: {}",
                            xml::first(e, "Code").unwrap_or_default(),
                            xml::first(e, "Message").unwrap_or_default()
                        ),
                    ),
                ));
            }
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        super::validate_key(key)?;
        let full = self.full_key(key);
        match self
            .rt
            .block_on(self.client.call(Call::new(Method::DELETE, Some(&full))))
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.label, "deleting", key, e)),
        }
    }
}

/// A piece uploaded: its number, ETag, MD5, and base64 sha256 (with `checksum = "sha256"`).
type PieceDone = (u32, String, [u8; 16], Option<String>);

/// A piece uploading.
type Piece = tokio::task::JoinHandle<io::Result<PieceDone>>;

/// One object being written: pieces of `chunk_size`, uploaded as they fill.
struct S3Writer {
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    label: String,
    key: String,
    full: String,
    buf: Vec<u8>,
    size: u64,
    /// The multipart upload's id, once the object outgrew one piece.
    upload: Option<String>,
    pieces: Vec<Piece>,
    permits: Arc<tokio::sync::Semaphore>,
    finished: bool,
    /// The object's ETag once stored (checked against what was sent).
    stored_etag: Option<String>,
}

impl S3Writer {
    fn err(&self, op: &'static str, e: io::Error) -> StoreError {
        io_err(&self.label, op, &self.key, e)
    }

    /// Starts the multipart upload.
    fn start(&mut self) -> io::Result<String> {
        let mut call = Call::new(Method::POST, Some(&self.full)).query("uploads", "");
        if self.client.cfg.checksum_sha256 {
            call = call.header("x-amz-checksum-algorithm", "SHA256");
        }
        if let Some(class) = &self.client.cfg.storage_class {
            call = call.header("x-amz-storage-class", class);
        }
        let answer = self.rt.block_on(self.client.call(call))?;
        let text = String::from_utf8_lossy(&answer.body);
        xml::first(&text, "UploadId").ok_or_else(|| {
            io::Error::other(format!(
                "the server started no multipart upload (no UploadId in: {})",
                text.chars().take(200).collect::<String>()
            ))
        })
    }

    /// Sends the buffered piece in the background, once a slot is free (the bound on memory).
    fn send_piece(&mut self) -> io::Result<()> {
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = self.start()?;
                self.upload = Some(u.clone());
                u
            }
        };
        // A failed piece fails the object now rather than after the rest was sent.
        if let Some(i) = self
            .pieces
            .iter()
            .position(tokio::task::JoinHandle::is_finished)
        {
            let done = self.pieces.remove(i);
            let result = self.rt.block_on(done).map_err(io::Error::other)?;
            let piece = result?;
            // Keep the finished one's answer in order with the rest.
            self.pieces
                .insert(i, self.rt.spawn(async move { Ok(piece) }));
        }
        let permit = self
            .rt
            .block_on(self.permits.clone().acquire_owned())
            .map_err(io::Error::other)?;
        let number = u32::try_from(self.pieces.len() + 1)
            .map_err(|_| io::Error::other("more than 10,000 pieces"))?;
        if number > 10_000 {
            return Err(io::Error::other(
                "an object needs more than 10,000 pieces: raise store.chunk_size",
            ));
        }
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let client = self.client.clone();
        let full = self.full.clone();
        self.pieces.push(self.rt.spawn(async move {
            let _permit = permit;
            let md5: [u8; 16] = md5::Md5::digest(&body).into();
            let sha256 = client
                .cfg
                .checksum_sha256
                .then(|| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body)));
            let call = Call::new(Method::PUT, Some(&full))
                .query("partNumber", &number.to_string())
                .query("uploadId", &upload)
                .checksum_sha256(sha256.is_some())
                .body(body);
            let answer = client.call(call).await?;
            let tag = answer.header("etag").map(etag).unwrap_or_default();
            if tag != hex::encode(md5) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "piece {number} was stored with ETag {tag}, not the MD5 of what was \
                         sent ({}): the store changed the bytes",
                        hex::encode(md5)
                    ),
                ));
            }
            Ok((number, tag, md5, sha256))
        }));
        Ok(())
    }

    /// Completes the multipart upload and checks its ETag.
    fn complete(&mut self) -> io::Result<()> {
        let upload = self.upload.clone().expect("a multipart upload was started");
        let mut done = Vec::new();
        for piece in std::mem::take(&mut self.pieces) {
            done.push(self.rt.block_on(piece).map_err(io::Error::other)??);
        }
        let mut body = String::from("<CompleteMultipartUpload>");
        let mut md5s = Vec::new();
        for (number, tag, md5, sha256) in &done {
            let checksum = sha256
                .as_ref()
                .map(|s| format!("<ChecksumSHA256>{s}</ChecksumSHA256>"))
                .unwrap_or_default();
            body.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>\"{}\"</ETag>{checksum}</Part>",
                xml::escape(tag)
            ));
            md5s.extend_from_slice(md5);
        }
        body.push_str("</CompleteMultipartUpload>");
        let call = Call::new(Method::POST, Some(&self.full))
            .query("uploadId", &upload)
            .header("content-type", "application/xml")
            .body(Bytes::from(body));
        let answer = self.rt.block_on(self.client.call(call))?;
        let text = String::from_utf8_lossy(&answer.body);
        // A 200 can still carry an error (S3 says so for CompleteMultipartUpload).
        if let Some(code) = xml::first(&text, "Code") {
            return Err(io::Error::other(format!(
                "completing the upload: {code}: {}",
                xml::first(&text, "Message").unwrap_or_default()
            )));
        }
        let want = format!("{}-{}", hex::encode(md5::Md5::digest(&md5s)), done.len());
        let got = xml::first(&text, "ETag")
            .map(|t| etag(&t))
            .unwrap_or_default();
        if got != want {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the object was stored with ETag {got}, not {want} as uploaded"),
            ));
        }
        self.stored_etag = Some(got);
        self.upload = None;
        Ok(())
    }

    /// Abandons the multipart upload (in the background: nothing waits for it).
    fn abort(&mut self) {
        for p in self.pieces.drain(..) {
            p.abort();
        }
        if let Some(upload) = self.upload.take() {
            let client = self.client.clone();
            let full = self.full.clone();
            self.rt.spawn(async move {
                let call = Call::new(Method::DELETE, Some(&full)).query("uploadId", &upload);
                if let Err(e) = client.call(call).await {
                    tracing::warn!(
                        "could not abort the upload of {full}: {e} (the orphan sweep removes it)"
                    );
                }
            });
        }
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let chunk = self.client.cfg.chunk_size;
        let room = chunk - self.buf.len();
        let n = data.len().min(room);
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(chunk.min(n.max(64 << 10)));
        }
        self.buf.extend_from_slice(&data[..n]);
        self.size += n as u64;
        if self.buf.len() == chunk
            && let Err(e) = self.send_piece()
        {
            self.abort();
            return Err(e);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        self.finished = true;
        let result = if self.upload.is_none() {
            // One piece: a single PUT, its ETag the MD5 of the body.
            let body = Bytes::from(std::mem::take(&mut self.buf));
            let md5 = hex::encode(md5::Md5::digest(&body));
            let mut call = Call::new(Method::PUT, Some(&self.full))
                .checksum_sha256(self.client.cfg.checksum_sha256)
                .body(body);
            if let Some(class) = &self.client.cfg.storage_class {
                call = call.header("x-amz-storage-class", class);
            }
            self.rt.block_on(self.client.call(call)).and_then(|answer| {
                let tag = answer.header("etag").map(etag).unwrap_or_default();
                if tag == md5 {
                    self.stored_etag = Some(tag);
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("stored with ETag {tag}, not the MD5 of what was sent ({md5})"),
                    ))
                }
            })
        } else {
            let last = if self.buf.is_empty() {
                Ok(())
            } else {
                self.send_piece()
            };
            last.and_then(|()| self.complete())
        };
        if let Err(e) = result {
            self.abort();
            return Err(self.err("uploading", e));
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            modified: None,
            sha256: None,
            etag: self.stored_etag.take(),
        })
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.finished || self.upload.is_some() {
            self.abort();
        }
    }
}

/// Breaks in a row (a dropped connection, a stalled or short body) before a download gives up.
const MAX_BREAKS: u32 = 8;

/// How much of a download's body is received at a time.
const GATHER: usize = 1 << 20;

/// An object read as one ranged GET whose body is handed on as it arrives (no more than the
/// server's frames in memory); a download that breaks resumes with a ranged GET from the
/// byte it stopped at, of the same object (`If-Match` its ETag).
struct S3Reader {
    rt: Arc<tokio::runtime::Runtime>,
    client: Arc<Client>,
    label: String,
    key: String,
    full: String,
    /// The object read: a range of another object of the same name is refused.
    etag: Option<String>,
    size: u64,
    /// The next byte to receive.
    offset: u64,
    /// The download under way, from `offset` on.
    body: Option<hyper::body::Incoming>,
    /// Frames received, not yet handed on.
    buf: std::collections::VecDeque<Bytes>,
    /// Breaks since the last byte received.
    breaks: u32,
}

impl S3Reader {
    fn here(&self, kind: io::ErrorKind, why: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            kind,
            format!(
                "{} '{}' at byte {}: {why}",
                self.label, self.key, self.offset
            ),
        )
    }
}

impl Read for S3Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(front) = self.buf.front_mut() {
                let n = out.len().min(front.len());
                out[..n].copy_from_slice(&front[..n]);
                *front = front.slice(n..);
                if front.is_empty() {
                    self.buf.pop_front();
                }
                return Ok(n);
            }
            if self.offset >= self.size {
                return Ok(0);
            }
            if self.body.is_none() {
                let mut call = Call::new(Method::GET, Some(&self.full))
                    .header("range", &format!("bytes={}-{}", self.offset, self.size - 1));
                if let Some(tag) = &self.etag {
                    call = call.header("if-match", &format!("\"{tag}\""));
                }
                let (headers, body) = self
                    .rt
                    .block_on(self.client.open(call))
                    .map_err(|e| self.here(e.kind(), e))?;
                // A server that ignored the range would send the object from its first byte:
                // never spliced in after the bytes already read.
                let range = headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let as_asked = range.starts_with(&format!("bytes {}-", self.offset))
                    || (self.offset == 0 && range.is_empty());
                if !as_asked {
                    return Err(self.here(
                        io::ErrorKind::InvalidData,
                        format!(
                            "asked for the bytes from {}, the server answered with range \
                             '{range}'",
                            self.offset
                        ),
                    ));
                }
                self.body = Some(body);
            }
            // Up to GATHER bytes of frames at a time: one wait on the runtime per MiB, not per
            // frame of a few KiB.
            let body = self.body.as_mut().expect("opened above");
            let client = &self.client;
            let (frames, ended) = self.rt.block_on(async {
                let mut frames = Vec::new();
                let mut total = 0;
                loop {
                    match client.read_frame(body).await {
                        Ok(Some(data)) => {
                            total += data.len();
                            frames.push(data);
                            if total >= GATHER {
                                return (frames, None);
                            }
                        }
                        Ok(None) => return (frames, Some("the answer ended early".to_string())),
                        Err(e) => return (frames, Some(e.to_string())),
                    }
                }
            });
            for data in frames {
                if data.len() as u64 > self.size - self.offset {
                    return Err(self.here(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the server sent more than the {} bytes the object has",
                            self.size
                        ),
                    ));
                }
                self.offset += data.len() as u64;
                self.breaks = 0;
                self.buf.push_back(data);
            }
            let Some(why) = ended else {
                continue;
            };
            if self.offset == self.size {
                self.body = None;
                continue;
            }
            // Broken off: ask again from here.
            self.body = None;
            self.breaks += 1;
            if self.breaks >= MAX_BREAKS {
                return Err(self.here(
                    io::ErrorKind::TimedOut,
                    format!("{why} ({} times in a row)", self.breaks),
                ));
            }
            let pause = crate::store::backoff(self.breaks).min(Duration::from_secs(30));
            tracing::debug!(
                "reading {} broke at byte {}: {why}; resuming in {pause:?}",
                self.key,
                self.offset
            );
            std::thread::sleep(pause);
        }
    }
}
