//! Where snapshot objects live. A `Store` is a flat namespace of named objects ("keys" such as
//! `snapshots/<id>/files.tar.gz.age.00001`) with streaming put and get, list by prefix, and
//! delete. It is the last stage of the backup pipeline and the first of restore; nothing outside
//! this module knows which backend it talks to.
//!
//! The trait is synchronous on purpose: the data path is a chain of `std::io::Write` adapters
//! (tar, gzip, age) running on plain threads, and the store's writer is the last link of that
//! chain. Network backends bridge to their async clients inside their own implementation.

pub mod gdrive;
mod local;
pub mod s3;

use std::fmt;
use std::io::{Read, Write};
use std::time::SystemTime;

pub use local::{LocalStore, is_coffer_name};

/// One stored object as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key, `/`-separated.
    pub key: String,
    /// Size in bytes as the store reports it.
    pub size: u64,
    /// Last modification time, where the backend knows it.
    pub modified: Option<SystemTime>,
    /// Hex sha256 of the content, where the backend computes one itself (Drive does).
    pub sha256: Option<String>,
    /// The backend's tag of the content, where it keeps one (an S3 ETag, without quotes):
    /// recorded in the manifest at upload, so a quick verify can compare it without reading.
    pub etag: Option<String>,
}

/// Errors of a store operation. `retryable` tells whether the trouble may pass (a network fault,
/// throttling: the listing fails and the job is retried later) or lies with the object itself
/// (a reader then treats only that snapshot as unreadable).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object '{key}' not found in {store}")]
    NotFound { store: String, key: String },
    #[error("{op} '{key}' in {store}: {source}")]
    Io {
        store: String,
        op: &'static str,
        key: String,
        retryable: bool,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid object key '{key}': {why}")]
    InvalidKey { key: String, why: &'static str },
    #[error("object '{key}' in {store} is larger than the {limit} bytes coffer reads of it")]
    TooLarge {
        store: String,
        key: String,
        limit: u64,
    },
}

impl StoreError {
    /// Whether the same call may succeed if repeated (network faults, throttling).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Io {
                retryable: true,
                ..
            }
        )
    }

    /// Whether the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// A streaming upload of one object. Bytes written are not visible under the key until
/// `finish` returns; dropping the writer without `finish` abandons the upload.
pub trait ObjectWriter: Write + Send {
    /// Commits the object and returns what the store reports about it.
    ///
    /// # Errors
    /// Fails when the backend cannot make the object durable; the object then does not exist.
    fn finish(self: Box<Self>) -> Result<ObjectMeta, StoreError>;
}

/// A backend holding snapshot objects.
pub trait Store: Send + Sync + fmt::Display {
    /// Starts writing the object `key`, replacing any object of that name once finished.
    ///
    /// # Errors
    /// Fails on an invalid key or when the backend cannot start the upload.
    fn put(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;

    /// Opens the object `key` as a stream.
    ///
    /// # Errors
    /// `StoreError::NotFound` when there is no such object.
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    ///
    /// # Errors
    /// Fails when the backend cannot be listed.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Waits until every object whose writer finished is durable in the store, and reports
    /// the first that could not be stored. Stores that finish synchronously have nothing to
    /// wait for.
    ///
    /// # Errors
    /// The first failed upload since the last `sync`.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The space the store reports: (its limit, if it has one; bytes used), or `None` for a
    /// store that keeps no account (a local folder: the filesystem is the limit).
    ///
    /// # Errors
    /// When the store cannot be asked.
    fn space(&self) -> Result<Option<(Option<u64>, u64)>, StoreError> {
        Ok(None)
    }

    /// How far this host's clock is ahead of the store's (negative: behind), for stores whose
    /// requests are signed with the time (S3 refuses a skew above 15 minutes); `None` for
    /// stores that do not care.
    ///
    /// # Errors
    /// When the store cannot be asked.
    fn clock_skew(&self) -> Result<Option<chrono::TimeDelta>, StoreError> {
        Ok(None)
    }

    /// Abandons the unfinished uploads under `prefix` started before `before` (the multipart
    /// uploads of a killed backup, which an S3 bucket keeps, and bills, until aborted); returns
    /// their keys. Stores without such uploads have none.
    ///
    /// # Errors
    /// When the uploads cannot be listed or aborted.
    fn sweep_uploads(&self, _prefix: &str, _before: SystemTime) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// Deletes every object of `keys` (missing ones are not an error): one by one, or in
    /// batches where the store can (S3's `DeleteObjects`, 1000 a request).
    ///
    /// # Errors
    /// The first deletion the store refuses.
    fn delete_many(&self, keys: &[String]) -> Result<(), StoreError> {
        keys.iter().try_for_each(|k| self.delete(k))
    }

    /// Deletes the object `key`; deleting a missing object is not an error.
    ///
    /// # Errors
    /// Fails when the backend refuses the deletion.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Writes a small object in one go (manifests).
///
/// # Errors
/// As `Store::put` and `ObjectWriter::finish`.
pub fn put_bytes(store: &dyn Store, key: &str, bytes: &[u8]) -> Result<ObjectMeta, StoreError> {
    let mut writer = store.put(key)?;
    writer.write_all(bytes).map_err(|source| StoreError::Io {
        store: store.to_string(),
        op: "writing",
        key: key.to_string(),
        retryable: false,
        source,
    })?;
    let meta = writer.finish()?;
    store.sync()?;
    Ok(meta)
}

/// Reads a small object whole (manifests).
///
/// # Errors
/// As `Store::get`, and I/O errors while reading.
pub fn get_bytes(store: &dyn Store, key: &str) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    store
        .get(key)?
        .read_to_end(&mut out)
        .map_err(|source| StoreError::Io {
            store: store.to_string(),
            op: "reading",
            key: key.to_string(),
            retryable: true,
            source,
        })?;
    Ok(out)
}

/// Reads a small object whole, but never more than `limit` bytes of it (a planted 300 MB
/// "manifest" must not become 300 MB of memory).
///
/// # Errors
/// As `get_bytes`, and `TooLarge` when the object holds more than `limit` bytes.
pub fn get_bytes_limited(store: &dyn Store, key: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    store
        .get(key)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| StoreError::Io {
            store: store.to_string(),
            op: "reading",
            key: key.to_string(),
            retryable: true,
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            store: store.to_string(),
            key: key.to_string(),
            limit,
        });
    }
    Ok(out)
}

/// Checks that a key is a relative, `/`-separated name without empty, `.` or `..` segments.
///
/// # Errors
/// `StoreError::InvalidKey` naming the problem.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |why| {
        Err(StoreError::InvalidKey {
            key: key.to_string(),
            why,
        })
    };
    if key.is_empty() {
        return bad("it is empty");
    }
    if key.starts_with('/') {
        return bad("it is absolute");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("it has an empty, '.' or '..' segment");
    }
    if key.contains('\0') {
        return bad("it contains a NUL byte");
    }
    Ok(())
}

/// The connector of the network stores: rustls with ring (installed as the process's
/// provider, so no other provider a dependency enables can be picked), the system's CA
/// certificates, HTTP/1.1; plain http for the loopback servers a config may name.
///
/// # Errors
/// When the system's CA certificates cannot be loaded.
pub(crate) fn https_connector()
-> std::io::Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build())
}

/// Exponential backoff with full jitter for a network store's retries: up to 0.25 s ×
/// 2^attempt, at most 16 s.
pub(crate) fn backoff(attempt: u32) -> std::time::Duration {
    let cap = (250u64 << attempt.min(6)).min(16_000);
    std::time::Duration::from_millis(rand::random::<u64>() % (cap + 1))
}

/// Default size of one stored part.
pub const DEFAULT_PART_SIZE: u64 = 64 * 1024 * 1024;
/// Default age of an unfinished snapshot before a later run removes its parts.
pub const DEFAULT_ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `[store]` of a config: which store, and how snapshots are cut into it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub part_size: u64,
    pub orphan_grace: std::time::Duration,
}

impl StoreConfig {
    /// Which store this is, as the run history remembers the snapshots made in it: the same
    /// store gives the same text, another store (a new folder, a new Drive folder) another.
    pub fn identity(&self) -> String {
        match &self.kind {
            StoreKind::Local { path } => format!("local:{}", path.display()),
            StoreKind::Gdrive(d) => format!(
                "gdrive:{}/{}/{}",
                d.drive_id.as_deref().unwrap_or("my-drive"),
                d.folder_id.as_deref().unwrap_or("-"),
                d.folder
            ),
            StoreKind::S3(s) => format!("s3:{}/{}/{}", s.endpoint, s.bucket, s.prefix),
        }
    }
}

#[derive(Debug, Clone)]
pub enum StoreKind {
    Local { path: std::path::PathBuf },
    Gdrive(gdrive::DriveConfig),
    S3(s3::S3Config),
}

/// The store a config describes.
///
/// # Errors
/// When a network store cannot be set up (an unreadable key file, no CA certificates).
pub fn open(cfg: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    Ok(match &cfg.kind {
        StoreKind::Local { path } => Box::new(LocalStore::new(path)),
        StoreKind::Gdrive(drive) => Box::new(gdrive::DriveStore::new(drive)?),
        StoreKind::S3(s3) => Box::new(s3::S3Store::new(s3)?),
    })
}
