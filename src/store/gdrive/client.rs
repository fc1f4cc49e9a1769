//! The Drive client: tokens, pacing, retries, folders, metadata and deletes (through
//! google-drive3 where it is sound, on the same hyper client where it is not).

use std::collections::HashMap;
use std::io::{self};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use google_drive3::DriveHub;
use google_drive3::api::Scope;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde_json::{Value, json};

use super::*;

/// Of several folders of one name (two hosts' first backups at once), always the same one:
/// the oldest, then the smallest id.
pub(super) fn oldest_folder(found: &[DriveFile]) -> Option<&DriveFile> {
    found
        .iter()
        .filter(|f| f.folder)
        .min_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)))
}

/// Escapes a value for a `q` string literal.
pub(super) fn q_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One Drive file as coffer needs it.
#[derive(Debug, Clone)]
pub(super) struct DriveFile {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) folder: bool,
    pub(super) size: u64,
    pub(super) sha256: Option<String>,
    /// Drive's md5, for files it gives no sha256 for.
    pub(super) md5: Option<String>,
    pub(super) modified: Option<std::time::SystemTime>,
    pub(super) created: Option<chrono::DateTime<chrono::Utc>>,
    /// Tagged `coffer=1`: made by coffer (only such files are objects: read, listed, deleted).
    pub(super) ours: bool,
}

pub(super) struct Inner {
    pub(super) client: Client<Connector, Body>,
    pub(super) hub: DriveHub<Connector>,
    pub(super) auth: Auth,
    pub(super) config: DriveConfig,
    /// Folder ids by path below the root ("" is the root).
    pub(super) folders: Mutex<HashMap<String, String>>,
    /// Held while a folder is looked up or created, so two threads never both create it.
    pub(super) folder_walk: tokio::sync::Mutex<()>,
    /// Held while a token is asked for.
    pub(super) token_lock: tokio::sync::Mutex<()>,
    /// When the next request may go (pacing).
    pub(super) next_request: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Inner {
    pub(super) async fn token(&self, refresh: bool) -> Result<String, Failure> {
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
            let t = match tokio::time::timeout(self.config.request_timeout, asked).await {
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
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, mut attempt: F) -> io::Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut refreshed = false;
        let mut token: Option<String> = None;
        let mut tries = 0;
        let limit = self.config.request_timeout;
        loop {
            let timed = |fut: Fut| async move {
                tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                    Err(Failure::Retry {
                        why: format!("no answer within {limit:?}"),
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
    pub(super) async fn pace(&self) {
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
    pub(super) async fn send(
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
        let limit = self.config.request_timeout;
        tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Retry {
                    why: format!("no answer within {limit:?}"),
                    after: None,
                })
            })
    }

    pub(super) fn request(
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

    pub(super) fn api(&self) -> String {
        self.config.api_base_url.trim_end_matches('/').to_string()
    }

    pub(super) fn upload_base(&self) -> String {
        self.config
            .upload_base_url
            .trim_end_matches('/')
            .to_string()
    }

    pub(super) async fn about(&self) -> io::Result<(Option<u64>, u64)> {
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
    pub(super) async fn children(
        &self,
        parent: &str,
        name: Option<&str>,
    ) -> io::Result<Vec<DriveFile>> {
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
                    md5: f.md5_checksum,
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
    pub(super) async fn generate_id(&self) -> io::Result<String> {
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

    pub(super) async fn create_folder(&self, parent: &str, name: &str) -> io::Result<String> {
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
    pub(super) async fn root(&self) -> io::Result<String> {
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
    pub(super) async fn folder(&self, path: &str, create: bool) -> io::Result<Option<String>> {
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

    /// The file stored under `key`, if any (the first of duplicates). Only a file coffer
    /// tagged is an object: another file of that name in the folder is not (Drive allows
    /// several, in any order).
    pub(super) async fn find(&self, key: &str) -> io::Result<Option<DriveFile>> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let Some(folder) = self.folder(dir, false).await? else {
            return Ok(None);
        };
        let found = self.children(&folder, Some(name)).await?;
        Ok(found.into_iter().find(|f| !f.folder && f.ours))
    }

    /// A file's size and checksums (`files.get`).
    pub(super) async fn file_meta(&self, id: &str) -> io::Result<Value> {
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

    pub(super) async fn delete_id(&self, id: &str) -> io::Result<()> {
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
    pub(super) async fn start_session(
        &self,
        parent: &str,
        name: &str,
        key: &str,
    ) -> io::Result<String> {
        let url = format!(
            "{}/upload/drive/v3/files?uploadType=resumable&supportsAllDrives=true\
             &fields=id,name,size,md5Checksum,sha256Checksum,appProperties",
            self.upload_base()
        );
        // Tags (at most 124 bytes per key and value): what the file is without its name.
        let mut props = json!({"coffer": "1"});
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
