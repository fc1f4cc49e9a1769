//! Google Drive store: objects are files in a folder tree under one root folder
//! (`<root>/snapshots/<id>/<part>`), found by id and tagged with `appProperties`, never trusted
//! by name alone.
//!
//! Metadata calls (list, delete, about) go through google-drive3. Uploads do not: its
//! `upload_resumable` skips a chunk after a 5xx, ignores the server's `Range` and cannot resume
//! (docs/GOOGLE_DRIVE.md), so coffer speaks the resumable protocol itself on the same hyper
//! client — chunks of `chunk_size` (a multiple of 256 KiB), a status query after any doubt,
//! resume from the offset Drive reports, a new session after 404/410. Folder creation and
//! downloads (which resume with `Range` after a dropped connection) use the same client.
//!
//! Every call retries connection errors, 5xx, 429 and rate-limit 403s with exponential
//! backoff and jitter (honouring `Retry-After`), refreshes the token once after a 401, and
//! stops at once on what waiting cannot fix (quota, the daily upload cap, permissions).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use google_drive3::DriveHub;
use google_drive3::api::Scope;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use md5::Md5;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ObjectMeta, ObjectWriter, Store, StoreError};

const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
const SCOPE: &str = "https://www.googleapis.com/auth/drive";
/// Drive's unit for every chunk but the last.
pub const CHUNK_ALIGN: usize = 256 * 1024;
/// Attempts of one call before giving up on transient errors.
const MAX_ATTEMPTS: u32 = 8;
/// How long one request (a chunk, a listing page) may take before it counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest part a Drive store accepts (a part is held in memory while it uploads).
pub const MAX_PART_SIZE: u64 = 512 << 20;
/// Uploads of one part whose checksum Drive reports wrong, before giving up.
const MAX_REUPLOADS: u32 = 3;

type Body = google_drive3::common::Body;
type Connector = HttpsConnector<HttpConnector>;
type Auth = yup_oauth2::authenticator::Authenticator<Connector>;

/// How the store authenticates.
#[derive(Debug, Clone)]
pub enum DriveAuth {
    /// A service-account key file (JSON); with `subject`, domain-wide delegation as that user.
    ServiceAccount {
        key_file: std::path::PathBuf,
        subject: Option<String>,
    },
    /// A user's OAuth token, obtained once with `coffer auth gdrive` (installed-app flow) and
    /// kept (0600) in `token_file`, refreshed as needed.
    UserToken {
        client_file: std::path::PathBuf,
        token_file: std::path::PathBuf,
    },
}

/// The installed flow's delegate for the store: it never waits for a browser. A token that can
/// no longer be refreshed must be renewed by hand.
struct NoBrowser;

impl yup_oauth2::authenticator_delegate::InstalledFlowDelegate for NoBrowser {
    fn present_user_url<'a>(
        &'a self,
        _url: &'a str,
        _need_code: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async {
            Err(
                "the Drive token can no longer be refreshed (revoked or expired): run \
                 coffer auth gdrive again"
                    .to_string(),
            )
        })
    }
}

/// The delegate of `coffer auth gdrive`: prints where to sign in.
struct ShowUrl;

impl yup_oauth2::authenticator_delegate::InstalledFlowDelegate for ShowUrl {
    fn present_user_url<'a>(
        &'a self,
        url: &'a str,
        _need_code: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            eprintln!(
                "Open this address in a browser, sign in as the account that will hold the \
                 backups, and allow access:\n\n{url}\n\nThe browser is sent back to this \
                 machine's 127.0.0.1 when you allow it (from another machine, forward that \
                 port with ssh -L first). Waiting…"
            );
            Ok(String::new())
        })
    }
}

/// Reads an OAuth client ("installed app") file from the Google Cloud console.
async fn read_client(path: &std::path::Path) -> Result<yup_oauth2::ApplicationSecret, String> {
    yup_oauth2::read_application_secret(path)
        .await
        .map_err(|e| {
            format!(
                "cannot read the OAuth client file {}: {e} (create an OAuth client of type \
             Desktop app in the Google Cloud console and download its JSON)",
                path.display()
            )
        })
}

/// `coffer auth gdrive`: the installed-app flow once, storing the token (0600) in the config's
/// token file. `port` fixes the local redirect port (for an ssh tunnel).
///
/// # Errors
/// When the client file cannot be read, the flow fails, or the token cannot be stored.
pub fn authorize(config: &DriveConfig, port: Option<u16>) -> Result<std::path::PathBuf, String> {
    let DriveAuth::UserToken {
        client_file,
        token_file,
    } = &config.auth
    else {
        return Err(
            "the store authenticates with a service account: nothing to authorize (set \
             oauth_client_file instead of service_account_key_file to use a user's Drive)"
                .into(),
        );
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let secret = read_client(client_file).await?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| e.to_string())?
            .https_or_http()
            .enable_http1()
            .build();
        let token_client: Client<Connector, String> =
            Client::builder(TokioExecutor::new()).build(connector);
        let method = match port {
            Some(p) => yup_oauth2::InstalledFlowReturnMethod::HTTPPortRedirect(p),
            None => yup_oauth2::InstalledFlowReturnMethod::HTTPRedirect,
        };
        // Sign in into a new file; the working token (if any) is replaced only on success.
        let fresh = token_file.with_extension("json.new");
        match std::fs::remove_file(&fresh) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", fresh.display())),
        }
        if let Some(dir) = token_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let auth = yup_oauth2::InstalledFlowAuthenticator::with_client(
            secret,
            method,
            yup_oauth2::CustomHyperClientBuilder::from(token_client),
        )
        .persist_tokens_to_disk(fresh.clone())
        .flow_delegate(Box::new(ShowUrl))
        .build()
        .await
        .map_err(|e| e.to_string())?;
        auth.token(&[SCOPE])
            .await
            .map_err(|e| format!("the sign-in did not complete: {e}"))?;
        private_file(&fresh)?;
        std::fs::rename(&fresh, token_file)
            .map_err(|e| format!("storing the token in {}: {e}", token_file.display()))?;
        Ok::<(), String>(())
    })?;
    Ok(token_file.clone())
}

/// Makes sure a file holding a secret is readable by its owner only.
fn private_file(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("making {} private: {e}", path.display()))
}

/// A Google Drive store's settings.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    pub auth: DriveAuth,
    /// The root folder by id; else `folder` (by name) under the drive's root.
    pub folder_id: Option<String>,
    pub folder: String,
    /// A Shared Drive to work in.
    pub drive_id: Option<String>,
    /// `https://www.googleapis.com` unless pointed elsewhere (a proxy, a test server).
    pub api_base_url: String,
    pub upload_base_url: String,
    pub chunk_size: usize,
    pub page_size: u32,
    /// Parts uploading at once (each held in memory until Drive confirms it).
    pub parallel_uploads: usize,
    /// At most this many requests a second (Drive throttles a client that sends more);
    /// 0: no pacing.
    pub requests_per_second: u32,
}

/// Why one attempt failed, and what to do about it.
enum Failure {
    /// Try again (after `after`, or the backoff).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The token was refused: refresh it, then try again (once).
    Unauthorized(String),
    /// The object (or upload session) is gone.
    NotFound(String),
    /// Waiting will not help.
    Fatal(String),
}

fn io_other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// What Drive's JSON error says: (reason, message).
fn error_reason(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    let reason = e["errors"][0]["reason"]
        .as_str()
        .or(e["status"].as_str())
        .unwrap_or("")
        .to_string();
    let message = e["message"].as_str().unwrap_or("").to_string();
    (reason, message)
}

/// Classifies a non-success answer.
fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let (reason, message) = error_reason(body);
    let said = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {reason}: {message}")
    };
    match status {
        401 => Failure::Unauthorized(said),
        404 | 410 => Failure::NotFound(said),
        429 => Failure::Retry {
            why: said,
            after: retry_after,
        },
        s if s >= 500 => Failure::Retry {
            why: said,
            after: retry_after,
        },
        403 => match reason.as_str() {
            // Drive reports its daily upload cap (750 GB per user) as this exact message.
            "userRateLimitExceeded" if message == "User rate limit exceeded." => {
                Failure::Fatal(format!(
                    "{said} — Drive's daily upload cap (750 GB per user per day) is reached; \
                     uploads resume tomorrow, or split the backup across users or Shared Drives"
                ))
            }
            "rateLimitExceeded" | "userRateLimitExceeded" => Failure::Retry {
                why: said,
                after: retry_after,
            },
            "storageQuotaExceeded" | "quotaExceeded" => Failure::Fatal(format!(
                "{said} — the Drive is full, or a service account is writing outside a Shared \
                 Drive (service accounts have no storage of their own): set store.drive_id to a \
                 Shared Drive the account is a member of, or use subject = (domain-wide \
                 delegation) or a user token"
            )),
            "teamDriveFileLimitExceeded" => Failure::Fatal(format!(
                "{said} — the Shared Drive holds 400,000 items; prune old snapshots or use another"
            )),
            "insufficientPermissions" | "insufficientFilePermissions" | "forbidden" => {
                Failure::Fatal(format!(
                    "{said} — the account may not write there: give it the Content manager role \
                     on the Shared Drive, or edit rights on the folder"
                ))
            }
            _ => Failure::Fatal(said),
        },
        _ => Failure::Fatal(said),
    }
}

fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(300)))
}

/// Exponential backoff with full jitter: up to 0.25 s × 2^attempt, at most 16 s.
fn backoff(attempt: u32) -> Duration {
    let cap = (250u64 << attempt.min(6)).min(16_000);
    Duration::from_millis(rand::random::<u64>() % (cap + 1))
}

/// Of several folders of one name (two hosts' first backups at once), always the same one:
/// the oldest, then the smallest id.
fn oldest_folder(found: &[DriveFile]) -> Option<&DriveFile> {
    found
        .iter()
        .filter(|f| f.folder)
        .min_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)))
}

/// Escapes a value for a `q` string literal.
fn q_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One Drive file as coffer needs it.
#[derive(Debug, Clone)]
struct DriveFile {
    id: String,
    name: String,
    folder: bool,
    size: u64,
    sha256: Option<String>,
    modified: Option<std::time::SystemTime>,
    created: Option<chrono::DateTime<chrono::Utc>>,
    /// Tagged `coffer=1`: made by coffer (only such files are ever deleted).
    ours: bool,
}

struct Inner {
    client: Client<Connector, Body>,
    hub: DriveHub<Connector>,
    auth: Auth,
    config: DriveConfig,
    /// Folder ids by path below the root ("" is the root).
    folders: Mutex<HashMap<String, String>>,
    /// Held while a folder is looked up or created, so two threads never both create it.
    folder_walk: tokio::sync::Mutex<()>,
    /// Held while a token is asked for.
    token_lock: tokio::sync::Mutex<()>,
    /// When the next request may go (pacing).
    next_request: tokio::sync::Mutex<tokio::time::Instant>,
}

/// The Google Drive store.
pub struct DriveStore {
    rt: Arc<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    label: String,
    uploads: Arc<Uploads>,
}

/// One background upload's place: released when dropped, with the upload's result — or, if
/// the upload thread panicked, with a failure, so that `sync` never waits forever.
struct Slot {
    uploads: Arc<Uploads>,
    key: String,
    label: String,
    result: Option<Result<ObjectMeta, StoreError>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(StoreError::Io {
                store: self.label.clone(),
                op: "uploading",
                key: self.key.clone(),
                retryable: false,
                source: io_other("the upload stopped unexpectedly"),
            })
        });
        self.uploads.release(result);
    }
}

/// Parts uploading in the background: at most `limit` at once; their failures wait for
/// `sync` (and make the next `put` fail at once).
struct Uploads {
    limit: usize,
    state: Mutex<UploadState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct UploadState {
    in_flight: usize,
    failed: Vec<StoreError>,
}

impl Uploads {
    /// Waits for a free slot, then takes it.
    fn acquire(&self) {
        let mut s = self.state.lock().unwrap();
        while s.in_flight >= self.limit {
            s = self.changed.wait(s).unwrap();
        }
        s.in_flight += 1;
    }

    fn release(&self, result: Result<ObjectMeta, StoreError>) {
        let mut s = self.state.lock().unwrap();
        s.in_flight -= 1;
        if let Err(e) = result {
            s.failed.push(e);
        }
        self.changed.notify_all();
    }

    /// The first failure so far, if any (kept for `sync`).
    fn failure(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .failed
            .first()
            .map(ToString::to_string)
    }

    /// Waits for every upload; returns (and forgets) the first failure.
    fn wait_all(&self) -> Result<(), StoreError> {
        let mut s = self.state.lock().unwrap();
        while s.in_flight > 0 {
            s = self.changed.wait(s).unwrap();
        }
        let mut failed = std::mem::take(&mut s.failed);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.remove(0))
        }
    }
}

impl std::fmt::Display for DriveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl DriveStore {
    /// Connects (builds the client and the authenticator; no request is made yet).
    ///
    /// # Errors
    /// When the key file cannot be read or is not a service-account key.
    pub fn new(config: &DriveConfig) -> Result<DriveStore, StoreError> {
        let label = match (&config.drive_id, &config.folder_id) {
            (_, Some(id)) => format!("Google Drive folder {id}"),
            (Some(d), None) => format!("Google Drive '{}' in Shared Drive {d}", config.folder),
            (None, None) => format!("Google Drive '{}'", config.folder),
        };
        let fail = |op: &'static str, e: String| StoreError::Io {
            store: label.clone(),
            op,
            key: String::new(),
            retryable: false,
            source: io_other(e),
        };
        // The store is synchronous and runs its own runtime: async callers (the daemon) must
        // use it from spawn_blocking, or every block_on inside would panic.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(fail(
                "opening",
                "the Drive store was opened on an async thread; call it from \
                 tokio::task::spawn_blocking"
                    .into(),
            ));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail("starting", e.to_string()))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| fail("loading the system's CA certificates", e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let auth = rt.block_on(async {
            match &config.auth {
                DriveAuth::ServiceAccount { key_file, subject } => {
                    let key = yup_oauth2::read_service_account_key(key_file)
                        .await
                        .map_err(|e| {
                            format!(
                                "cannot read the service-account key {}: {e} (a JSON key \
                                 from the Google Cloud console, readable by coffer only)",
                                key_file.display()
                            )
                        })?;
                    let token_client: Client<Connector, String> =
                        Client::builder(TokioExecutor::new()).build(connector.clone());
                    let mut b = yup_oauth2::ServiceAccountAuthenticator::with_client(
                        key,
                        yup_oauth2::CustomHyperClientBuilder::from(token_client),
                    );
                    if let Some(s) = subject {
                        b = b.subject(s.clone());
                    }
                    b.build().await.map_err(|e| e.to_string())
                }
                DriveAuth::UserToken {
                    client_file,
                    token_file,
                } => {
                    if !token_file.exists() {
                        return Err(format!(
                            "no Drive token yet ({} is missing): run coffer auth gdrive once",
                            token_file.display()
                        ));
                    }
                    private_file(token_file)?;
                    let secret = read_client(client_file).await?;
                    let token_client: Client<Connector, String> =
                        Client::builder(TokioExecutor::new()).build(connector.clone());
                    // Interactive: when the refresh fails, yup-oauth2 asks the delegate, which
                    // refuses; with a redirect method it would wait for a browser forever.
                    yup_oauth2::InstalledFlowAuthenticator::with_client(
                        secret,
                        yup_oauth2::InstalledFlowReturnMethod::Interactive,
                        yup_oauth2::CustomHyperClientBuilder::from(token_client),
                    )
                    .persist_tokens_to_disk(token_file.clone())
                    .flow_delegate(Box::new(NoBrowser))
                    .build()
                    .await
                    .map_err(|e| e.to_string())
                }
            }
        });
        let auth = auth.map_err(|e| fail("authenticating", e))?;
        let client: Client<Connector, Body> =
            Client::builder(TokioExecutor::new()).build(connector);
        let mut hub = DriveHub::new(client.clone(), auth.clone());
        let api = config.api_base_url.trim_end_matches('/');
        hub.base_url(format!("{api}/drive/v3/"));
        hub.root_url(format!("{api}/"));
        Ok(DriveStore {
            rt: Arc::new(rt),
            inner: Arc::new(Inner {
                client,
                hub,
                auth,
                config: config.clone(),
                folders: Mutex::new(HashMap::new()),
                folder_walk: tokio::sync::Mutex::new(()),
                token_lock: tokio::sync::Mutex::new(()),
                next_request: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            }),
            label,
            uploads: Arc::new(Uploads {
                limit: config.parallel_uploads.max(1),
                state: Mutex::new(UploadState::default()),
                changed: std::sync::Condvar::new(),
            }),
        })
    }

    fn err(&self, op: &'static str, key: &str, e: io::Error, retryable: bool) -> StoreError {
        StoreError::Io {
            store: self.label.clone(),
            op,
            key: key.to_string(),
            retryable,
            source: e,
        }
    }

    /// Free space as Drive reports it (`about.get`): (limit, usage), limit `None` when
    /// unlimited.
    ///
    /// # Errors
    /// When Drive cannot be reached or refuses.
    pub fn quota(&self) -> Result<(Option<u64>, u64), StoreError> {
        let inner = self.inner.clone();
        self.rt
            .block_on(async move { inner.about().await })
            .map_err(|e| self.err("asking for the quota of", "", e, true))
    }
}

impl Inner {
    async fn token(&self, refresh: bool) -> Result<String, Failure> {
        // One token request at a time: parallel uploads refreshing together would write the
        // token file at once.
        let _one = self.token_lock.lock().await;
        let mut attempt = 0;
        let t = loop {
            attempt += 1;
            let asked = async {
                if refresh {
                    self.auth.force_refreshed_token(&[SCOPE]).await
                } else {
                    self.auth.token(&[SCOPE]).await
                }
            };
            let t = match tokio::time::timeout(REQUEST_TIMEOUT, asked).await {
                Ok(t) => t,
                Err(_) => {
                    return Err(Failure::Retry {
                        why: "the token endpoint did not answer".into(),
                        after: None,
                    });
                }
            };
            // A user token that could not be refreshed (our delegate refuses to wait for a
            // browser): a network blip looks the same as a revoked token, so ask twice more.
            if let Err(yup_oauth2::Error::UserError(_)) = &t
                && attempt < 3
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            break t;
        };
        let t = t.map_err(|e| match e {
            yup_oauth2::Error::UserError(why) => Failure::Fatal(why),
            yup_oauth2::Error::HttpError(_)
            | yup_oauth2::Error::HttpClientError(_)
            | yup_oauth2::Error::LowLevelError(_)
            | yup_oauth2::Error::JSONError(_) => Failure::Retry {
                why: format!("the token endpoint: {e}"),
                after: None,
            },
            _ => Failure::Fatal(format!(
                "cannot get an access token: {e} (check the key file, the account's access \
                 and the clock)"
            )),
        })?;
        t.token()
            .map(str::to_string)
            .ok_or_else(|| Failure::Fatal("the token endpoint gave no access token".into()))
    }

    /// Runs `attempt` until it succeeds, retrying what can be retried.
    async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> io::Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut refreshed = false;
        let mut token: Option<String> = None;
        let mut tries = 0;
        loop {
            let timed = |fut: Fut| async move {
                tokio::time::timeout(REQUEST_TIMEOUT, fut)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Failure::Retry {
                            why: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
                            after: None,
                        })
                    })
            };
            let result = match &token {
                Some(t) => timed(attempt(t.clone())).await,
                None => match self.token(false).await {
                    Ok(t) => {
                        token = Some(t.clone());
                        timed(attempt(t)).await
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(v) => return Ok(v),
                Err(Failure::Unauthorized(why)) if !refreshed => {
                    tracing::info!("{what}: {why}; refreshing the access token");
                    refreshed = true;
                    token = Some(self.token(true).await.map_err(fatal_io)?);
                }
                Err(Failure::Unauthorized(why)) => {
                    return Err(io_other(format!(
                        "{what}: Drive refused a fresh token: {why} (is the account still \
                         allowed in? for a user token, run coffer auth gdrive again)"
                    )));
                }
                Err(Failure::NotFound(why)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{what}: {why}"),
                    ));
                }
                Err(Failure::Fatal(why)) => {
                    return Err(fatal_io(Failure::Fatal(format!("{what}: {why}"))));
                }
                Err(Failure::Retry { why, after }) => {
                    tries += 1;
                    if tries >= MAX_ATTEMPTS {
                        return Err(io_other(format!(
                            "{what}: still failing after {tries} attempts: {why}"
                        )));
                    }
                    let wait = after.unwrap_or_else(|| backoff(tries));
                    tracing::info!("{what}: {why}; retrying in {} ms", wait.as_millis());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Waits for this request's turn: at most `requests_per_second`, spread evenly.
    async fn pace(&self) {
        let rate = self.config.requests_per_second;
        if rate == 0 {
            return;
        }
        let interval = Duration::from_secs(1) / rate;
        let mut next = self.next_request.lock().await;
        let now = tokio::time::Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + interval;
    }

    /// Sends a request built by `build` and reads the whole answer.
    async fn send(
        &self,
        req: hyper::Request<Body>,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), Failure> {
        self.pace().await;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| Failure::Retry {
                why: format!("connection: {e}"),
                after: None,
            })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::Retry {
                    why: format!("reading the answer: {e}"),
                    after: None,
                })?
                .to_bytes();
            Ok((status, headers, body))
        };
        // A half-open connection must not hang a backup: give up on it, then ask again.
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Retry {
                    why: format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
                    after: None,
                })
            })
    }

    fn request(
        &self,
        method: hyper::Method,
        url: &str,
        token: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> hyper::Request<Body> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-length", body.len().to_string());
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(Full::new(body).map_err(|never| match never {}).boxed())
            .expect("a well-formed request")
    }

    fn api(&self) -> String {
        self.config.api_base_url.trim_end_matches('/').to_string()
    }

    fn upload_base(&self) -> String {
        self.config
            .upload_base_url
            .trim_end_matches('/')
            .to_string()
    }

    async fn about(&self) -> io::Result<(Option<u64>, u64)> {
        self.retry("about", |token| async move {
            let _ = token;
            self.pace().await;
            let r = self
                .hub
                .about()
                .get()
                .param("fields", "storageQuota")
                .add_scope(Scope::Full)
                .doit()
                .await;
            match r {
                Ok((_, about)) => {
                    let q = about.storage_quota.unwrap_or_default();
                    Ok((q.limit.map(|l| l as u64), q.usage.unwrap_or(0) as u64))
                }
                Err(e) => Err(hub_failure(e)),
            }
        })
        .await
    }

    /// Every child of folder `parent` (optionally only those named `name`), all pages.
    async fn children(&self, parent: &str, name: Option<&str>) -> io::Result<Vec<DriveFile>> {
        let mut q = format!("{} in parents and trashed = false", q_literal(parent));
        if let Some(n) = name {
            q.push_str(&format!(" and name = {}", q_literal(n)));
        }
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let (files, next) = self
                .retry("listing a folder", |_token| {
                    let q = q.clone();
                    let page = page.clone();
                    async move {
                        let mut call = self
                            .hub
                            .files()
                            .list()
                            .q(&q)
                            .page_size(self.config.page_size as i32)
                            .supports_all_drives(true)
                            .include_items_from_all_drives(true)
                            .param(
                                "fields",
                                "nextPageToken,files(id,name,mimeType,size,md5Checksum,\
                                 sha256Checksum,modifiedTime,createdTime,appProperties)",
                            )
                            .add_scope(Scope::Full);
                        if let Some(d) = &self.config.drive_id {
                            call = call.corpora("drive").drive_id(d);
                        }
                        if let Some(p) = &page {
                            call = call.page_token(p);
                        }
                        self.pace().await;
                        match call.doit().await {
                            Ok((_, list)) => {
                                Ok((list.files.unwrap_or_default(), list.next_page_token))
                            }
                            Err(e) => Err(hub_failure(e)),
                        }
                    }
                })
                .await?;
            for f in files {
                // Drive's `name =` ignores case: keep exact matches only.
                if name.is_some_and(|n| f.name.as_deref() != Some(n)) {
                    continue;
                }
                let ours = f
                    .app_properties
                    .as_ref()
                    .is_some_and(|p| p.get("coffer").map(String::as_str) == Some("1"));
                out.push(DriveFile {
                    created: f.created_time,
                    ours,
                    id: f.id.unwrap_or_default(),
                    name: f.name.unwrap_or_default(),
                    folder: f.mime_type.as_deref() == Some(FOLDER_MIME),
                    size: f.size.unwrap_or(0).max(0) as u64,
                    sha256: f.sha256_checksum,
                    modified: f.modified_time.map(std::time::SystemTime::from),
                });
            }
            match next {
                Some(n) if !n.is_empty() => page = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// A file id from Drive (`files.generateIds`), so that a create retried after a lost
    /// answer cannot make a second folder (the retry gets 409: it exists).
    async fn generate_id(&self) -> io::Result<String> {
        let url = format!(
            "{}/drive/v3/files/generateIds?count=1&space=drive&type=files",
            self.api()
        );
        self.retry("asking Drive for a file id", |token| {
            let req = self.request(hyper::Method::GET, &url, &token, &[], Bytes::new());
            async move {
                let (status, headers, body) = self.send(req).await?;
                if status == 200 {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    v["ids"][0]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| Failure::Retry {
                            why: "Drive generated no id".into(),
                            after: None,
                        })
                } else {
                    Err(classify(status, retry_after(&headers), &body))
                }
            }
        })
        .await
    }

    async fn create_folder(&self, parent: &str, name: &str) -> io::Result<String> {
        let id = self.generate_id().await?;
        let url = format!(
            "{}/drive/v3/files?supportsAllDrives=true&fields=id",
            self.api()
        );
        let meta = json!({"id": id, "name": name, "mimeType": FOLDER_MIME, "parents": [parent],
            "appProperties": {"coffer": "1"}});
        let body = Bytes::from(meta.to_string());
        self.retry(&format!("creating folder {name}"), |token| {
            let req = self.request(
                hyper::Method::POST,
                &url,
                &token,
                &[("content-type", "application/json; charset=UTF-8".into())],
                body.clone(),
            );
            let id = id.clone();
            async move {
                let (status, headers, body) = self.send(req).await?;
                match status {
                    // 409: a retry of a create that did happen.
                    200 | 409 => Ok(id),
                    _ => Err(classify(status, retry_after(&headers), &body)),
                }
            }
        })
        .await
    }

    /// The root folder's id (found or created once).
    async fn root(&self) -> io::Result<String> {
        if let Some(id) = self.folders.lock().unwrap().get("") {
            return Ok(id.clone());
        }
        let id = match &self.config.folder_id {
            Some(id) => id.clone(),
            None => {
                let top = self
                    .config
                    .drive_id
                    .clone()
                    .unwrap_or_else(|| "root".into());
                let found = self.children(&top, Some(&self.config.folder)).await?;
                match oldest_folder(&found) {
                    Some(f) => f.id.clone(),
                    None => self.create_folder(&top, &self.config.folder).await?,
                }
            }
        };
        self.folders
            .lock()
            .unwrap()
            .insert(String::new(), id.clone());
        Ok(id)
    }

    /// The folder at `path` ("a/b") below the root, created if `create`; `None` if missing.
    async fn folder(&self, path: &str, create: bool) -> io::Result<Option<String>> {
        if let Some(id) = self.folders.lock().unwrap().get(path) {
            return Ok(Some(id.clone()));
        }
        let _walk = self.folder_walk.lock().await;
        let mut id = self.root().await?;
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            let cached = self.folders.lock().unwrap().get(&walked).cloned();
            id = match cached {
                Some(c) => c,
                None => {
                    let found = self.children(&id, Some(part)).await?;
                    let next = match oldest_folder(&found) {
                        Some(f) => f.id.clone(),
                        None if create => self.create_folder(&id, part).await?,
                        None => return Ok(None),
                    };
                    self.folders
                        .lock()
                        .unwrap()
                        .insert(walked.clone(), next.clone());
                    next
                }
            };
        }
        Ok(Some(id))
    }

    /// The file stored under `key`, if any (the first of duplicates).
    async fn find(&self, key: &str) -> io::Result<Option<DriveFile>> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let Some(folder) = self.folder(dir, false).await? else {
            return Ok(None);
        };
        let found = self.children(&folder, Some(name)).await?;
        Ok(found.into_iter().find(|f| !f.folder))
    }

    /// A file's size and checksums (`files.get`).
    async fn file_meta(&self, id: &str) -> io::Result<Value> {
        let url = format!(
            "{}/drive/v3/files/{id}?supportsAllDrives=true&fields=id,name,size,md5Checksum,\
             sha256Checksum",
            self.api()
        );
        self.retry("reading a file's checksums", |token| {
            let req = self.request(hyper::Method::GET, &url, &token, &[], Bytes::new());
            async move {
                let (status, headers, body) = self.send(req).await?;
                if status == 200 {
                    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
                } else {
                    Err(classify(status, retry_after(&headers), &body))
                }
            }
        })
        .await
    }

    async fn delete_id(&self, id: &str) -> io::Result<()> {
        let r = self
            .retry("deleting", |_token| async move {
                self.pace().await;
                match self
                    .hub
                    .files()
                    .delete(id)
                    .supports_all_drives(true)
                    .add_scope(Scope::Full)
                    .doit()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(hub_failure(e)),
                }
            })
            .await;
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Starts a resumable upload session for `name` in `parent`.
    async fn start_session(
        &self,
        parent: &str,
        name: &str,
        key: &str,
        sha256: &str,
    ) -> io::Result<String> {
        let url = format!(
            "{}/upload/drive/v3/files?uploadType=resumable&supportsAllDrives=true\
             &fields=id,name,size,md5Checksum,sha256Checksum,appProperties",
            self.upload_base()
        );
        // Tags (at most 124 bytes per key and value): what the file is without its name.
        let mut props = json!({"coffer": "1", "sha256": &sha256[..16.min(sha256.len())]});
        if key.len() <= 100 {
            props["key"] = json!(key);
        }
        let meta = json!({"name": name, "parents": [parent], "appProperties": props,
            "mimeType": "application/octet-stream"});
        let body = Bytes::from(meta.to_string());
        self.retry(&format!("starting the upload of {key}"), |token| {
            let req = self.request(
                hyper::Method::POST,
                &url,
                &token,
                &[
                    ("content-type", "application/json; charset=UTF-8".into()),
                    ("x-upload-content-type", "application/octet-stream".into()),
                ],
                body.clone(),
            );
            async move {
                let (status, headers, body) = self.send(req).await?;
                if status == 200 || status == 201 {
                    headers
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .map(str::to_string)
                        .ok_or_else(|| Failure::Retry {
                            why: "Drive started a session without a Location".into(),
                            after: None,
                        })
                } else {
                    Err(classify(status, retry_after(&headers), &body))
                }
            }
        })
        .await
    }
}

fn fatal_io(f: Failure) -> io::Error {
    match f {
        Failure::Fatal(why) | Failure::Unauthorized(why) | Failure::NotFound(why) => {
            io::Error::new(io::ErrorKind::PermissionDenied, why)
        }
        Failure::Retry { why, .. } => io_other(why),
    }
}

/// Maps a google-drive3 error onto what to do.
fn hub_failure(e: google_drive3::Error) -> Failure {
    match e {
        google_drive3::Error::Failure(resp) => {
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            // google-drive3 hands JSON error bodies over as BadRequest; this is an answer
            // without one (a front end's HTML page): a 403 there is worth a few retries.
            if status == 403 {
                Failure::Retry {
                    why: "HTTP 403 without a reason".into(),
                    after,
                }
            } else {
                classify(status, after, b"")
            }
        }
        // A 2xx body cut short reaches us as a JSON error: ask again.
        google_drive3::Error::JsonDecodeError(_, e) => Failure::Retry {
            why: format!("a truncated answer: {e}"),
            after: None,
        },
        google_drive3::Error::BadRequest(v) => {
            let status = v["error"]["code"].as_u64().unwrap_or(400) as u16;
            classify(status, None, v.to_string().as_bytes())
        }
        google_drive3::Error::HttpError(e) => Failure::Retry {
            why: format!("connection: {e}"),
            after: None,
        },
        google_drive3::Error::Io(e) => Failure::Retry {
            why: format!("connection: {e}"),
            after: None,
        },
        google_drive3::Error::MissingToken(e) => Failure::Unauthorized(e.to_string()),
        other => Failure::Fatal(other.to_string()),
    }
}

/// Where an upload session stands after a doubt (`PUT` with `bytes */TOTAL`).
enum Standing {
    /// Committed up to (not including) this offset.
    At(usize),
    /// The upload completed: the file.
    Done(Value),
    /// The session is gone: start again.
    Gone,
}

/// Streaming upload of one object: the bytes go up in chunks as they come; the whole object
/// stays in memory until Drive has confirmed its checksum, so it can be sent again.
struct DriveWriter {
    rt: Arc<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    label: String,
    key: String,
    parent: String,
    name: String,
    data: Vec<u8>,
    session: Option<String>,
    /// Bytes Drive has committed in the current session.
    committed: usize,
    uploads: Arc<Uploads>,
    /// Hex sha256 of `data`, once complete (set by `finish`).
    sha256: String,
}

impl DriveWriter {
    fn err(&self, e: io::Error) -> StoreError {
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
    fn push(&mut self, upto: usize, last: bool) -> io::Result<Option<Value>> {
        let rt = self.rt.clone();
        rt.block_on(self.push_async(upto, last))
    }

    async fn query(&self, session: &str, total: Option<usize>) -> io::Result<Standing> {
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

    async fn push_async(&mut self, upto: usize, last: bool) -> io::Result<Option<Value>> {
        // Every way round the loop that sends nothing new counts, so nothing loops forever.
        let mut tries = 0u32;
        let mut refreshed = false;
        // The furthest Drive has ever confirmed: only going beyond it counts as progress
        // (a session that keeps restarting must run out of attempts).
        let mut best = self.committed;
        let chunk = self.inner.config.chunk_size;
        loop {
            // Stopping: a part not yet stored is given up (its backup writes no manifest).
            crate::shutdown::check_io()?;
            if self.session.is_none() {
                let s = self
                    .inner
                    .start_session(&self.parent, &self.name, &self.key, &self.sha256)
                    .await?;
                self.session = Some(s);
                self.committed = 0;
            }
            let session = self.session.clone().expect("a session");
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
                return Ok(None);
            }
            let total = final_request.then_some(self.data.len());
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
            let req = self.inner.request(
                hyper::Method::PUT,
                &session,
                &token,
                &[
                    ("content-range", range),
                    ("content-type", "application/octet-stream".into()),
                ],
                body,
            );
            let before = self.committed;
            let doubt: Option<(String, Option<Duration>)> = match self.inner.send(req).await {
                Ok((200 | 201, _, body)) => {
                    return Ok(Some(serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                Ok((308, headers, _)) => {
                    let said = committed_from(&headers);
                    if said > end {
                        // More than was ever sent: the session is not ours to trust.
                        self.session = None;
                        Some((format!("Drive reports {said} bytes of {end} sent"), None))
                    } else {
                        self.committed = said;
                        if !last && self.committed >= upto {
                            return Ok(None);
                        }
                        if self.committed > before {
                            if self.committed > best {
                                best = self.committed;
                                tries = 0;
                            }
                            // Drive kept it (or part of it): send on.
                            continue;
                        }
                        None
                    }
                    .or(Some((
                        format!("Drive kept nothing of bytes {first}-{}", end.max(1) - 1),
                        None,
                    )))
                }
                Ok((404 | 410, _, _)) => {
                    tracing::info!("upload session of {} expired; starting again", self.key);
                    self.session = None;
                    Some(("the upload session expired".into(), None))
                }
                Ok((status, headers, body)) => {
                    match classify(status, retry_after(&headers), &body) {
                        Failure::Fatal(why) => {
                            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
                        }
                        Failure::Unauthorized(why) if !refreshed => {
                            tracing::info!("{why}; refreshing the access token");
                            refreshed = true;
                            self.inner.token(true).await.map_err(fatal_io)?;
                            None
                        }
                        Failure::Unauthorized(why) => {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!(
                                    "uploading {}: Drive refused a fresh token: {why}",
                                    self.key
                                ),
                            ));
                        }
                        Failure::Retry { why, after } => Some((why, after)),
                        Failure::NotFound(why) => {
                            self.session = None;
                            Some((why, None))
                        }
                    }
                }
                Err(Failure::Retry { why, after }) => Some((why, after)),
                Err(other) => return Err(fatal_io(other)),
            };
            tries += 1;
            if tries >= MAX_ATTEMPTS {
                let why = doubt.map_or_else(String::new, |(w, _)| w);
                return Err(io_other(format!(
                    "uploading {}: still failing after {tries} attempts: {why}",
                    self.key
                )));
            }
            if let Some((why, after)) = &doubt {
                let wait = after.unwrap_or_else(|| backoff(tries));
                tracing::info!(
                    "uploading {}: {why}; asking where it stands in {} ms",
                    self.key,
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
            }
            let Some(session) = self.session.clone() else {
                continue;
            };
            // After any doubt, Drive says where the session stands before anything is resent.
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
        }
    }
}

/// The committed offset from a 308's `Range: bytes=0-N` (none: nothing committed).
fn committed_from(headers: &hyper::HeaderMap) -> usize {
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
    fn send_all(&mut self) -> io::Result<Option<Value>> {
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
    fn upload(mut self) -> Result<ObjectMeta, StoreError> {
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
        // exactly this name that coffer made with these very bytes. Anything else of that
        // name (another writer's) is left alone. The object is stored and confirmed either
        // way, so a failed clean-up only warns.
        let inner = self.inner.clone();
        let (parent, name, ours) = (self.parent.clone(), self.name.clone(), sha.clone());
        let rt = self.rt.clone();
        let cleaned = rt.block_on(async move {
            let same = inner.children(&parent, Some(&name)).await?;
            for f in same.iter().filter(|f| {
                !f.folder
                    && f.id != id
                    && f.ours
                    && f.sha256
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case(&ours))
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

/// A download that resumes with `Range` after a dropped connection.
struct DriveReader {
    rt: Arc<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    key: String,
    id: String,
    size: u64,
    received: u64,
    body: Option<hyper::body::Incoming>,
    /// Bytes of the current answer to drop first (a 200 to a Range request).
    skip: u64,
    pending: Bytes,
    resumes: u32,
}

impl DriveReader {
    async fn open(&mut self) -> io::Result<()> {
        let url = format!(
            "{}/drive/v3/files/{}?alt=media&supportsAllDrives=true",
            self.inner.api(),
            self.id
        );
        let from = self.received;
        let inner = self.inner.clone();
        let body = inner
            .retry(&format!("downloading {}", self.key), |token| {
                let mut headers = Vec::new();
                if from > 0 {
                    headers.push(("range", format!("bytes={from}-")));
                }
                let req = inner.request(hyper::Method::GET, &url, &token, &headers, Bytes::new());
                let inner = &inner;
                async move {
                    inner.pace().await;
                    let resp = inner
                        .client
                        .request(req)
                        .await
                        .map_err(|e| Failure::Retry {
                            why: format!("connection: {e}"),
                            after: None,
                        })?;
                    let status = resp.status().as_u16();
                    // A 206 must start where asked; a 200 (Range ignored) starts at byte 0
                    // and the bytes already handed out are skipped.
                    let starts_at = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if status == 206 && starts_at == Some(from) {
                        Ok((resp.into_body(), 0))
                    } else if status == 200 {
                        Ok((resp.into_body(), from))
                    } else if status == 206 {
                        Err(Failure::Retry {
                            why: format!(
                                "Drive sent a range starting at {starts_at:?}, not {from}"
                            ),
                            after: None,
                        })
                    } else {
                        let headers = resp.headers().clone();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Err(classify(status, retry_after(&headers), &body))
                    }
                }
            })
            .await?;
        let (body, skip) = body;
        self.body = Some(body);
        self.skip = skip;
        Ok(())
    }

    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.body.is_none() {
                if self.received >= self.size {
                    return Ok(None);
                }
                self.open().await?;
            }
            let body = self.body.as_mut().expect("open");
            // A stalled connection counts as a broken one: resume.
            let frame = match tokio::time::timeout(REQUEST_TIMEOUT, body.frame()).await {
                Ok(f) => f.map(|r| r.map_err(|e| e.to_string())),
                Err(_) => Some(Err("no data for a while".to_string())),
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        if self.skip > 0 {
                            let n = (self.skip as usize).min(data.len());
                            data = data.slice(n..);
                            self.skip -= n as u64;
                        }
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
                None if self.received >= self.size => return Ok(None),
                // Cut short, or broken: ask for the rest.
                None | Some(Err(_)) => {
                    self.body = None;
                    self.resumes += 1;
                    if self.resumes > MAX_ATTEMPTS {
                        return Err(io_other(format!(
                            "downloading {}: the connection broke {} times",
                            self.key, self.resumes
                        )));
                    }
                    tracing::info!(
                        "download of {} broke at byte {}; resuming",
                        self.key,
                        self.received
                    );
                    tokio::time::sleep(backoff(self.resumes)).await;
                }
            }
        }
    }
}

impl Read for DriveReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            let rt = self.rt.clone();
            match rt.block_on(self.next())? {
                Some(b) => self.pending = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        self.received += n as u64;
        Ok(n)
    }
}

impl Store for DriveStore {
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        super::validate_key(key)?;
        // An upload already failed: stop producing more.
        if let Some(why) = self.uploads.failure() {
            return Err(self.err(
                "uploading",
                key,
                io_other(format!("an earlier upload failed: {why}")),
                false,
            ));
        }
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let inner = self.inner.clone();
        let dir = dir.to_string();
        let parent = self
            .rt
            .block_on(async move { inner.folder(&dir, true).await })
            .map_err(|e| self.err("creating the folder for", key, e, true))?
            .ok_or_else(|| self.err("creating the folder for", key, io_other("no folder"), true))?;
        // A replaced object: the old file goes once the new one is complete (Store contract:
        // visible only after finish). Drive keeps both until then.
        Ok(Box::new(DriveWriter {
            rt: self.rt.clone(),
            inner: self.inner.clone(),
            label: self.label.clone(),
            key: key.to_string(),
            parent,
            name: name.to_string(),
            data: Vec::new(),
            session: None,
            committed: 0,
            uploads: self.uploads.clone(),
            sha256: String::new(),
        }))
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        super::validate_key(key)?;
        let inner = self.inner.clone();
        let k = key.to_string();
        let found = self
            .rt
            .block_on(async move { inner.find(&k).await })
            .map_err(|e| self.err("looking up", key, e, true))?;
        let Some(f) = found else {
            return Err(StoreError::NotFound {
                store: self.label.clone(),
                key: key.to_string(),
            });
        };
        Ok(Box::new(DriveReader {
            rt: self.rt.clone(),
            inner: self.inner.clone(),
            key: key.to_string(),
            id: f.id,
            size: f.size,
            received: 0,
            body: None,
            skip: 0,
            pending: Bytes::new(),
            resumes: 0,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let inner = self.inner.clone();
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = dir.to_string();
        let p = prefix.to_string();
        let listed = self.rt.block_on(async move {
            let Some(start) = inner.folder(&dir, false).await? else {
                return io::Result::Ok(Vec::new());
            };
            let mut out: Vec<ObjectMeta> = Vec::new();
            let mut stack = vec![(start, dir.clone())];
            while let Some((id, path)) = stack.pop() {
                for f in inner.children(&id, None).await? {
                    let key = if path.is_empty() {
                        f.name.clone()
                    } else {
                        format!("{path}/{}", f.name)
                    };
                    if f.folder {
                        if key.starts_with(&p) || p.starts_with(&format!("{key}/")) {
                            inner
                                .folders
                                .lock()
                                .unwrap()
                                .insert(key.clone(), f.id.clone());
                            stack.push((f.id.clone(), key));
                        }
                    } else if key.starts_with(&p) && !out.iter().any(|o| o.key == key) {
                        out.push(ObjectMeta {
                            key,
                            size: f.size,
                            modified: f.modified,
                            sha256: f.sha256.clone(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        });
        listed.map_err(|e| self.err("listing", prefix, e, true))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.uploads.wait_all()
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        super::validate_key(key)?;
        let inner = self.inner.clone();
        let k = key.to_string();
        self.rt
            .block_on(async move {
                let (dir, name) = k.rsplit_once('/').unwrap_or(("", k.as_str()));
                let Some(folder) = inner.folder(dir, false).await? else {
                    return Ok(());
                };
                // Every file coffer stored under that name goes (duplicates included);
                // anything else that happens to share the name is not coffer's to delete.
                for f in inner.children(&folder, Some(name)).await? {
                    if !f.folder && f.ours {
                        inner.delete_id(&f.id).await?;
                    }
                }
                io::Result::Ok(())
            })
            .map_err(|e| self.err("deleting", key, e, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_errors_are_told_apart() {
        let body = |reason: &str, msg: &str| {
            json!({"error": {"code": 403, "message": msg, "errors": [{"reason": reason}]}})
                .to_string()
                .into_bytes()
        };
        assert!(matches!(
            classify(403, None, &body("userRateLimitExceeded", "User rate limit exceeded.")),
            Failure::Fatal(m) if m.contains("daily upload cap")
        ));
        assert!(matches!(
            classify(
                403,
                None,
                &body("userRateLimitExceeded", "User Rate Limit Exceeded")
            ),
            Failure::Retry { .. }
        ));
        assert!(matches!(
            classify(403, None, &body("storageQuotaExceeded", "Service Accounts do not have storage quota.")),
            Failure::Fatal(m) if m.contains("Shared Drive")
        ));
        assert!(matches!(classify(503, None, b""), Failure::Retry { .. }));
        assert!(matches!(classify(401, None, b""), Failure::Unauthorized(_)));
        assert!(matches!(classify(404, None, b""), Failure::NotFound(_)));
        assert!(matches!(classify(400, None, b""), Failure::Fatal(_)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            assert!(backoff(attempt) <= Duration::from_secs(16));
        }
        assert_eq!(q_literal("it's a\\b"), "'it\\'s a\\\\b'");
    }
}
