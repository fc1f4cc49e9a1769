//! One S3 request: addressed (path or virtual-host style), `Content-MD5` on every body,
//! signed (SigV4, the payload's sha256 in the clear: never `aws-chunked`), sent with a
//! timeout, and retried with backoff and jitter on what may pass (5xx, `SlowDown`, 429,
//! `RequestTimeout`, dropped connections and timeouts; `Retry-After` honoured). What waiting
//! cannot fix (access denied, no such bucket, a bad key or signature, a skewed clock) stops at
//! once with what to do.

use std::io;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use md5::Digest as _;
use sha2::Sha256;

use super::S3Config;
use super::sigv4::{self, Credentials};
use super::xml;
use crate::store::backoff;

/// Attempts of one request before giving up on transient errors.
const MAX_ATTEMPTS: u32 = 8;

/// A request to send.
pub(super) struct Call<'a> {
    pub method: Method,
    /// The object's full key (prefix included); `None` for the bucket itself.
    pub key: Option<&'a str>,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Carry `x-amz-checksum-sha256` of the body (`checksum = "sha256"`).
    pub checksum_sha256: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, key: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            checksum_sha256: false,
        }
    }

    /// Adds `x-amz-checksum-sha256` of the body (the server refuses the request if the body
    /// does not match it, and keeps it with the object).
    pub fn checksum_sha256(mut self, on: bool) -> Self {
        self.checksum_sha256 = on;
        self
    }

    pub fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_string(), v.to_string()));
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }
}

/// A server's answer with a 2xx status.
pub(super) struct Answer {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request failed.
enum Failure {
    /// May pass: asked again after a pause (the server's `Retry-After` if it gave one).
    Retry(String, Option<Duration>),
    /// Waiting cannot fix it.
    Fatal(String),
    NotFound(String),
}

pub(super) struct Client {
    pub(super) http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub(super) cfg: S3Config,
    pub(super) creds: Credentials,
    /// `scheme://host[:port]` of the endpoint, and the host header for path-style requests.
    pub(super) base: String,
    pub(super) host: String,
}

impl Client {
    /// The URL, host header and canonical path of `key` (or of the bucket).
    fn address(&self, key: Option<&str>) -> (String, String, String) {
        let encoded = key.map(|k| sigv4::uri_encode(k, true)).unwrap_or_default();
        if self.cfg.path_style {
            let path = format!("/{}/{encoded}", sigv4::uri_encode(&self.cfg.bucket, false));
            (format!("{}{path}", self.base), self.host.clone(), path)
        } else {
            let host = format!("{}.{}", self.cfg.bucket, self.host);
            let scheme = self.base.split("://").next().unwrap_or("https");
            let path = format!("/{encoded}");
            (format!("{scheme}://{host}{path}"), host, path)
        }
    }

    /// The signed request of `call` (signed now: a retry is signed afresh).
    fn request(&self, call: &Call<'_>) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let (url, host, path) = self.address(call.key);
        let query = sigv4::canonical_query(&call.query);
        let uri = if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        };
        let mut headers = call.headers.clone();
        headers.push(("host".into(), host));
        if !call.body.is_empty() || call.method == Method::PUT || call.method == Method::POST {
            let md5 = md5::Md5::digest(&call.body);
            headers.push((
                "content-md5".into(),
                base64::engine::general_purpose::STANDARD.encode(md5),
            ));
        }
        let digest: [u8; 32] = Sha256::digest(&call.body).into();
        if call.checksum_sha256 {
            headers.push((
                "x-amz-checksum-sha256".into(),
                base64::engine::general_purpose::STANDARD.encode(digest),
            ));
        }
        let payload = hex::encode(digest);
        let signed = sigv4::sign(
            &sigv4::Request {
                method: call.method.as_str(),
                path: &path,
                query: &call.query,
                headers: &headers,
                payload_sha256: &payload,
            },
            &self.creds,
            &self.cfg.region,
            chrono::Utc::now(),
        );
        let mut req = hyper::Request::builder()
            .method(call.method.clone())
            .uri(&uri);
        for (k, v) in headers.iter().chain(signed.iter()) {
            if k != "host" || !self.cfg.path_style {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        req.header("content-length", call.body.len())
            .body(Full::new(call.body.clone()))
            .map_err(|e| Failure::Fatal(format!("building the request: {e}")))
    }

    /// Sends `call` once and waits for the head of the answer (within the request timeout).
    async fn send(&self, call: &Call<'_>) -> Result<hyper::Response<Incoming>, Failure> {
        let req = self.request(call)?;
        let timeout = self.cfg.request_timeout;
        match tokio::time::timeout(timeout, self.http.request(req)).await {
            Err(_) => Err(Failure::Retry(
                format!("no answer within {} s", timeout.as_secs()),
                None,
            )),
            Ok(Err(e)) => Err(Failure::Retry(error_chain(&e), None)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Reads a whole body, up to `limit` bytes (within the request timeout).
    async fn read_body(&self, body: Incoming, limit: usize) -> Result<Bytes, Failure> {
        let timeout = self.cfg.request_timeout;
        match tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect())
            .await
        {
            Err(_) => Err(Failure::Retry(
                format!("no answer within {} s", timeout.as_secs()),
                None,
            )),
            Ok(Err(e)) => Err(Failure::Retry(error_chain(&*e), None)),
            Ok(Ok(c)) => Ok(c.to_bytes()),
        }
    }

    /// Sends `call` once and reads its answer whole.
    async fn once(&self, call: &Call<'_>) -> Result<Answer, Failure> {
        let (parts, body) = self.send(call).await?.into_parts();
        // No answer coffer reads whole is larger than a piece (a listing page is well under
        // a MiB): a server that sends more is not believed, and never fills the memory.
        let body = self
            .read_body(body, self.cfg.chunk_size + (1 << 20))
            .await?;
        if parts.status.is_success() {
            return Ok(Answer {
                headers: parts.headers,
                body,
            });
        }
        Err(classify(&self.cfg, parts.status, &parts.headers, &body))
    }

    /// Sends `call` once; a 2xx answer's body is left to be read as it comes.
    async fn open_once(&self, call: &Call<'_>) -> Result<(HeaderMap, Incoming), Failure> {
        let (parts, body) = self.send(call).await?.into_parts();
        if parts.status.is_success() {
            return Ok((parts.headers, body));
        }
        let body = self.read_body(body, 1 << 20).await?;
        Err(classify(&self.cfg, parts.status, &parts.headers, &body))
    }

    /// Sends `call`, retrying what may pass.
    ///
    /// # Errors
    /// `NotFound` for a missing object; `PermissionDenied` with what to do for what waiting
    /// cannot fix; `TimedOut` once the retries are spent.
    pub(super) async fn call(&self, call: Call<'_>) -> io::Result<Answer> {
        self.retrying(&call.method, || self.once(&call)).await
    }

    /// As `call`, for a download: the answer's headers, and its body to be read as it comes
    /// (`read_frame`).
    ///
    /// # Errors
    /// As `call`.
    pub(super) async fn open(&self, call: Call<'_>) -> io::Result<(HeaderMap, Incoming)> {
        self.retrying(&call.method, || self.open_once(&call)).await
    }

    /// The next piece of a download's body (`None` at its end), within the request timeout.
    ///
    /// # Errors
    /// A broken connection or a timeout (the download resumes from where it stopped).
    pub(super) async fn read_frame(&self, body: &mut Incoming) -> io::Result<Option<Bytes>> {
        let timeout = self.cfg.request_timeout;
        loop {
            let frame = tokio::time::timeout(timeout, body.frame())
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data within {} s", timeout.as_secs()),
                    )
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(io::Error::other(error_chain(&e))),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to read.
                }
            }
        }
    }

    async fn retrying<T, F, Fut>(&self, method: &Method, attempt_once: F) -> io::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            match attempt_once().await {
                Ok(a) => return Ok(a),
                Err(Failure::NotFound(why)) => {
                    return Err(io::Error::new(io::ErrorKind::NotFound, why));
                }
                Err(Failure::Fatal(why)) => {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
                }
                Err(Failure::Retry(why, after)) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{why} ({attempt} attempts)"),
                        ));
                    }
                    let pause = after
                        .unwrap_or_else(|| backoff(attempt))
                        .min(Duration::from_secs(60));
                    tracing::debug!(attempt, "S3 {method} failed, again in {pause:?}: {why}");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// The error chain of a hyper error, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}

/// What an error answer means, from its status and S3's `<Code>`.
fn classify(cfg: &S3Config, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
    let text = String::from_utf8_lossy(body);
    let code = xml::first(&text, "Code").unwrap_or_default();
    let message = xml::first(&text, "Message").unwrap_or_default();
    let said = if code.is_empty() {
        format!("HTTP {status}")
    } else if message.is_empty() {
        format!("HTTP {status} {code}")
    } else {
        format!("HTTP {status} {code}: {message}")
    };
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bucket = &cfg.bucket;
    match code.as_str() {
        "NoSuchKey" => return Failure::NotFound(said),
        "NoSuchBucket" => {
            return Failure::Fatal(format!(
                "{said}: bucket '{bucket}' does not exist at {}; create it (or fix \
                 store.bucket and store.endpoint)",
                cfg.endpoint
            ));
        }
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => {
            return Failure::Fatal(format!(
                "{said}: the key may not do this in bucket '{bucket}'; give it read, write, \
                 list and delete there (docs/S3.md has a least-privilege policy)"
            ));
        }
        "InvalidAccessKeyId" => {
            return Failure::Fatal(format!(
                "{said}: the server does not know access key '{}'; check \
                 store.access_key_id_file (or _env)",
                cfg_key_hint(cfg)
            ));
        }
        "SignatureDoesNotMatch" => {
            return Failure::Fatal(format!(
                "{said}: check the secret access key (store.secret_access_key_file) and \
                 store.region ('{}')",
                cfg.region
            ));
        }
        "RequestTimeTooSkewed" => {
            return Failure::Fatal(format!(
                "{said}: this host's clock is off; S3 refuses requests more than 15 minutes \
                 from its own time. Fix the time (timedatectl, NTP), then run again"
            ));
        }
        "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" => {
            return Failure::Retry(said, retry_after);
        }
        "QuotaExceeded" | "StorageQuotaExceeded" | "TooManyBuckets" => {
            return Failure::Fatal(format!(
                "{said}: the store is full; free space or raise its quota"
            ));
        }
        _ => {}
    }
    match status.as_u16() {
        404 => Failure::NotFound(said),
        429 | 500..=599 => Failure::Retry(said, retry_after),
        403 => Failure::Fatal(format!("{said}: access denied in bucket '{bucket}'")),
        _ => Failure::Fatal(said),
    }
}

fn cfg_key_hint(cfg: &S3Config) -> String {
    cfg.access_key_hint.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> S3Config {
        S3Config {
            endpoint: "https://s3.example.org".into(),
            region: "eu-1".into(),
            bucket: "backups".into(),
            prefix: String::new(),
            path_style: true,
            credentials: super::super::CredentialSource {
                access_key_id: crate::secret::SecretRef::Env("X".into()),
                secret_access_key: crate::secret::SecretRef::Env("Y".into()),
            },
            storage_class: None,
            checksum_sha256: false,
            chunk_size: super::super::DEFAULT_CHUNK,
            parallel_uploads: 2,
            request_timeout: Duration::from_secs(5),
            access_key_hint: "GK123".into(),
        }
    }

    fn error(code: &str) -> Vec<u8> {
        format!("<Error><Code>{code}</Code><Message>said {code}</Message></Error>").into_bytes()
    }

    #[test]
    fn errors_are_retried_or_stopped_as_waiting_can_or_cannot_fix_them() {
        let mut after = HeaderMap::new();
        after.insert("retry-after", "7".parse().unwrap());
        let status = |n: u16| StatusCode::from_u16(n).unwrap();
        match classify(&cfg(), status(503), &after, &error("SlowDown")) {
            Failure::Retry(why, Some(d)) => {
                assert_eq!(d, Duration::from_secs(7));
                assert!(why.contains("SlowDown"), "{why}");
            }
            _ => panic!("SlowDown is retried"),
        }
        for n in [500, 502, 504, 429] {
            assert!(matches!(
                classify(&cfg(), status(n), &HeaderMap::new(), b""),
                Failure::Retry(_, None)
            ));
        }
        assert!(matches!(
            classify(
                &cfg(),
                status(400),
                &HeaderMap::new(),
                &error("RequestTimeout")
            ),
            Failure::Retry(..)
        ));
        assert!(matches!(
            classify(&cfg(), status(404), &HeaderMap::new(), &error("NoSuchKey")),
            Failure::NotFound(_)
        ));
        for (code, says) in [
            ("NoSuchBucket", "bucket 'backups' does not exist"),
            ("AccessDenied", "least-privilege"),
            ("InvalidAccessKeyId", "access key 'GK123'"),
            ("SignatureDoesNotMatch", "store.region ('eu-1')"),
            ("RequestTimeTooSkewed", "clock is off"),
        ] {
            match classify(&cfg(), status(403), &HeaderMap::new(), &error(code)) {
                Failure::Fatal(why) => assert!(why.contains(says), "{code}: {why}"),
                _ => panic!("{code} stops at once"),
            }
        }
    }
}
