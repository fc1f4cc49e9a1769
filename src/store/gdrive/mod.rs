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
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use google_drive3::DriveHub;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::{ObjectMeta, ObjectWriter, Store, StoreError};

mod auth;
mod client;
mod download;
mod errors;
mod upload;

use auth::*;
pub use auth::{DriveAuth, authorize};
use client::*;
use download::*;
use errors::*;
use upload::*;

const FOLDER_MIME: &str = "application/vnd.google-apps.folder";
const SCOPE: &str = "https://www.googleapis.com/auth/drive";
/// Drive's unit for every chunk but the last.
pub const CHUNK_ALIGN: usize = 256 * 1024;
/// Attempts of one call before giving up on transient errors.
const MAX_ATTEMPTS: u32 = 8;
/// How long one request (a chunk, a listing page) may take before it counts as lost, unless
/// `DriveConfig::request_timeout` says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest part a Drive store accepts: a part whose session is lost past its window, or
/// whose checksum Drive reports wrong, fails the backup, and larger parts gain nothing.
pub const MAX_PART_SIZE: u64 = 512 << 20;

type Body = google_drive3::common::Body;
type Connector = HttpsConnector<HttpConnector>;
type Auth = yup_oauth2::authenticator::Authenticator<Connector>;

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
    /// A request (or a download's next bytes) that takes longer counts as lost and is asked
    /// again: `REQUEST_TIMEOUT` from a config file; tests set less.
    pub request_timeout: Duration,
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
pub(super) struct Slot {
    pub(super) uploads: Arc<Uploads>,
    pub(super) key: String,
    pub(super) label: String,
    pub(super) result: Option<Result<(), StoreError>>,
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
pub(super) struct Uploads {
    limit: usize,
    state: Mutex<UploadState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
pub(super) struct UploadState {
    in_flight: usize,
    failed: Vec<StoreError>,
}

impl Uploads {
    /// Waits for a free slot, then takes it.
    pub(super) fn acquire(&self) {
        let mut s = self.state.lock().unwrap();
        while s.in_flight >= self.limit {
            s = self.changed.wait(s).unwrap();
        }
        s.in_flight += 1;
    }

    pub(super) fn release(&self, result: Result<(), StoreError>) {
        let mut s = self.state.lock().unwrap();
        s.in_flight -= 1;
        if let Err(e) = result {
            s.failed.push(e);
        }
        self.changed.notify_all();
    }

    /// The first failure so far, if any (kept for `sync`).
    pub(super) fn failure(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .failed
            .first()
            .map(ToString::to_string)
    }

    /// Waits for every upload; returns (and forgets) the first failure.
    pub(super) fn wait_all(&self) -> Result<(), StoreError> {
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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail("starting", e.to_string()))?;
        let connector = super::https_connector()
            .map_err(|e| fail("loading the system's CA certificates", e.to_string()))?;
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

impl Store for DriveStore {
    fn space(&self) -> Result<Option<(Option<u64>, u64)>, StoreError> {
        self.quota().map(Some)
    }

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
        // At most `parallel_uploads` objects stream at once: wait for a slot.
        self.uploads.acquire();
        let upload = DriveUpload {
            rt: self.rt.clone(),
            inner: self.inner.clone(),
            label: self.label.clone(),
            key: key.to_string(),
            parent,
            name: name.to_string(),
            data: Vec::new(),
            base: 0,
            session: None,
            committed: 0,
            closed: false,
            sha256: Sha256::new(),
            md5: Md5::new(),
        };
        Ok(Box::new(upload::start(upload, self.uploads.clone())?))
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
                // Only files coffer tagged are objects (as for get and delete).
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
                    } else if f.ours && key.starts_with(&p) && !out.iter().any(|o| o.key == key) {
                        out.push(ObjectMeta {
                            key,
                            size: f.size,
                            modified: f.modified,
                            sha256: f.sha256.clone(),
                            etag: None,
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
    use serde_json::json;

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
