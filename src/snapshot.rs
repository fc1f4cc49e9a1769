//! Snapshots on a store: ids, the manifest (the commit marker and only index), listing, and the
//! sweep of unfinished snapshots.
//!
//! Layout (docs/FORMAT.md is the contract):
//! `snapshots/<id>/manifest.json` and `snapshots/<id>/<stream>.<NNNNN>`.
//! A snapshot exists once its manifest exists; the manifest is written last.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{self, Store, StoreError};

/// The on-store format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "coffer-snapshot";
/// Folder of all snapshots in a store.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
const MANIFEST_NAME: &str = "manifest.json";

/// A snapshot id: `YYYYMMDDTHHMMSSZ-xxxxxx` (UTC time, 6 random hex digits); ids sort by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A fresh id for a snapshot started at `now`. The first three hex digits encode the
    /// fraction of the second (in 1/4096 s), the last three are random, so ids sort by start
    /// time even within one second.
    pub fn new(now: DateTime<Utc>) -> Self {
        let fraction = u64::from(now.timestamp_subsec_nanos()) * 4096 / 1_000_000_000;
        let random = u64::from(rand::random::<u16>() & 0xfff);
        SnapshotId(format!(
            "{}-{:03x}{:03x}",
            now.format("%Y%m%dT%H%M%SZ"),
            fraction,
            random
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key prefix of this snapshot's objects, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("{SNAPSHOTS_PREFIX}{}/", self.0)
    }

    /// The key of one object of this snapshot.
    pub fn key(&self, name: &str) -> String {
        format!("{SNAPSHOTS_PREFIX}{}/{name}", self.0)
    }

    /// The key of this snapshot's manifest.
    pub fn manifest_key(&self) -> String {
        self.key(MANIFEST_NAME)
    }

    /// The start time encoded in the id.
    pub fn started(&self) -> Option<SystemTime> {
        chrono::NaiveDateTime::parse_from_str(&self.0[..16], "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc().into())
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for SnapshotId {
    type Err = SnapshotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = b.len() == 23
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z'
            && b[16] == b'-'
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ok {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(SnapshotError::BadId(s.to_string()))
        }
    }
}

impl TryFrom<String> for SnapshotId {
    type Error = SnapshotError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SnapshotId> for String {
    fn from(id: SnapshotId) -> String {
        id.0
    }
}

/// The manifest of one snapshot. Plaintext: it never names a file or holds data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub id: SnapshotId,
    pub created: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub host: String,
    pub coffer_version: String,
    /// age recipients (public keys) every stream is encrypted to.
    pub recipients: Vec<String>,
    pub sources: Vec<SourceRecord>,
}

/// One source's stream in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    /// Source type: `directory`, later `postgres`, `mysql`, `sqlite`.
    pub kind: String,
    /// Stream name, e.g. `files.tar.gz.age`; parts are `<stream>.00001`, ….
    pub stream: String,
    /// Bytes of the uncompressed stream (the tar or the dump).
    pub plaintext_bytes: u64,
    /// Bytes of the gzip stream.
    pub compressed_bytes: u64,
    /// Bytes of the age stream: the sum of the part sizes.
    pub encrypted_bytes: u64,
    /// Hex sha256 of the whole age stream (all parts concatenated).
    pub sha256: String,
    pub parts: Vec<PartRecord>,
    /// Entry counts of a directory stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<EntryCounts>,
    /// Directory streams: bytes of file content in the tar (absent in older snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// Directory streams: the encrypted stream of every file's sha256 (absent in older
    /// snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<ChecksumsRecord>,
    /// Counts of non-fatal problems met while reading the source, by kind (`changed`,
    /// `vanished`, `unreadable`, `special`); the paths go to the backup's log, not here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warnings: BTreeMap<String, u64>,
    /// Database streams: the dump tool and what its `--version` said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_tool_version: Option<String>,
    /// Database streams: the server and its tables' row counts, read through sqlx just
    /// before (or, for PostgreSQL, in the same snapshot as) the dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseInfo>,
}

/// What coffer saw of a database when it dumped it: what a restore is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// The server's version (`SHOW server_version`, `VERSION()`, `sqlite_version()`).
    pub server_version: String,
    /// How the counts relate to the dump: `snapshot` — read in the very snapshot the dump
    /// read (PostgreSQL), so a restore must match exactly; `before-dump` — read just before
    /// the dump started, so a database written meanwhile may differ a little.
    pub counted: String,
    /// Base tables, sorted by name (`schema.table` for PostgreSQL).
    pub tables: Vec<TableRows>,
}

/// One table's row count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub name: String,
    pub rows: u64,
    /// false: the server's own estimate (the table is above the source's `exact_count_limit`).
    pub exact: bool,
    /// Counts read `before-dump` only: the count read again right after the dump. Equal to
    /// `rows`, the table was (almost surely) quiet and a restore must match it; different, the
    /// dump's count lies between the two for a table that only grew or only shrank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_after: Option<u64>,
}

/// The stream of a directory source's per-file sha256 list (`crate::checksums`), stored
/// like any stream: age over gzip, in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumsRecord {
    /// `<source>.sha256.gz.age`.
    pub stream: String,
    /// Lines (regular files) in the list.
    pub files: u64,
    pub plaintext_bytes: u64,
    pub compressed_bytes: u64,
    pub encrypted_bytes: u64,
    pub sha256: String,
    pub parts: Vec<PartRecord>,
}

impl SourceRecord {
    /// The checksum list as a stream of its own, for the code that reads, checks and
    /// downloads streams.
    pub fn checksums_stream(&self) -> Option<SourceRecord> {
        let c = self.checksums.as_ref()?;
        Some(SourceRecord {
            name: format!("{} checksums", self.name),
            kind: "checksums".into(),
            stream: c.stream.clone(),
            plaintext_bytes: c.plaintext_bytes,
            compressed_bytes: c.compressed_bytes,
            encrypted_bytes: c.encrypted_bytes,
            sha256: c.sha256.clone(),
            parts: c.parts.clone(),
            entries: None,
            file_bytes: None,
            checksums: None,
            warnings: BTreeMap::new(),
            dump_tool: None,
            dump_tool_version: None,
            database: None,
        })
    }

    /// This stream and its checksum stream, if any.
    pub fn streams(&self) -> Vec<SourceRecord> {
        std::iter::once(self.clone())
            .chain(self.checksums_stream())
            .collect()
    }
}

/// One stored part of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Entries in a directory stream's tar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryCounts {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
}

impl Manifest {
    /// Stored bytes of the whole snapshot (parts only).
    pub fn stored_bytes(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.encrypted_bytes + s.checksums.as_ref().map_or(0, |c| c.encrypted_bytes))
            .sum()
    }

    /// Bytes read from the sources.
    pub fn plaintext_bytes(&self) -> u64 {
        self.sources.iter().map(|s| s.plaintext_bytes).sum()
    }

    /// The source called `name`.
    ///
    /// # Errors
    /// `SnapshotError::NoSuchSource` listing the sources the snapshot has.
    pub fn source(&self, name: &str) -> Result<&SourceRecord, SnapshotError> {
        self.sources
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SnapshotError::NoSuchSource {
                id: self.id.to_string(),
                name: name.to_string(),
                have: self.sources.iter().map(|s| s.name.clone()).collect(),
            })
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT_NAME {
            return Err(format!("format is '{}', not '{FORMAT_NAME}'", self.format));
        }
        if self.format_version > FORMAT_VERSION {
            return Err(format!(
                "format version {} is newer than this coffer reads ({FORMAT_VERSION}): upgrade coffer",
                self.format_version
            ));
        }
        // The manifest is not authenticated: names from it become paths and keys, so they must
        // be exactly what coffer writes.
        for (i, s) in self.sources.iter().enumerate() {
            if !is_safe_name(&s.name) {
                return Err(format!("source name '{}' is not a valid name", s.name));
            }
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("source name '{}' appears twice", s.name));
            }
            let stream_ok = s
                .stream
                .strip_prefix(&format!("{}.", s.name))
                .and_then(|rest| rest.strip_suffix(".age"))
                .is_some_and(|ext| ext == "tar.gz" || ext == "sql.gz");
            if !stream_ok {
                return Err(format!(
                    "source '{}' has an invalid stream name '{}'",
                    s.name, s.stream
                ));
            }
            if let Some(c) = &s.checksums
                && c.stream != format!("{}.sha256.gz.age", s.name)
            {
                return Err(format!(
                    "source '{}' has an invalid checksum stream name '{}'",
                    s.name, c.stream
                ));
            }
            for st in s.streams() {
                for (n, part) in st.parts.iter().enumerate() {
                    if part.name != crate::pipeline::part_name(&st.stream, n + 1) {
                        return Err(format!(
                            "source '{}': part {} of {} is named '{}'",
                            s.name,
                            n + 1,
                            st.stream,
                            part.name
                        ));
                    }
                }
                let sum: u64 = st.parts.iter().map(|p| p.size).sum();
                if sum != st.encrypted_bytes || st.parts.is_empty() {
                    return Err(format!(
                        "source '{}': the parts of {} add up to {sum} bytes, not {}",
                        s.name, st.stream, st.encrypted_bytes
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `name` can name a new source (and so a stream): 1–64 ASCII letters, digits, `-`,
/// `_`.
pub fn is_valid_source_name(name: &str) -> bool {
    name.len() <= 64 && is_safe_name(name)
}

/// Whether a name read from a manifest is safe to use in paths and keys (no length limit, so
/// older snapshots stay readable if the limit for new names ever changes).
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("'{0}' is not a snapshot id (expected YYYYMMDDTHHMMSSZ-xxxxxx, or 'latest')")]
    BadId(String),
    #[error("snapshot {id} not found in {store} (run 'coffer list' to see the snapshots)")]
    NotFound { store: String, id: String },
    #[error("{store} holds no snapshot yet")]
    Empty { store: String },
    #[error("manifest of snapshot {id} is unreadable: {why}")]
    BadManifest { id: String, why: String },
    #[error("snapshot {id} has no source '{name}' (it has: {})", have.join(", "))]
    NoSuchSource {
        id: String,
        name: String,
        have: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Commits a snapshot by writing its manifest. Call only after every part is stored.
///
/// # Errors
/// Store errors; the snapshot then does not exist.
pub fn write_manifest(store: &dyn Store, manifest: &Manifest) -> Result<(), SnapshotError> {
    let mut json = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
    json.push(b'\n');
    store::put_bytes(store, &manifest.id.manifest_key(), &json)?;
    Ok(())
}

/// Reads and checks one snapshot's manifest.
///
/// # Errors
/// `NotFound` when the snapshot has no manifest, `BadManifest` when it does not parse or is
/// inconsistent.
pub fn read_manifest(store: &dyn Store, id: &SnapshotId) -> Result<Manifest, SnapshotError> {
    let bytes = match store::get_bytes(store, &id.manifest_key()) {
        Err(e) if e.is_not_found() => {
            return Err(SnapshotError::NotFound {
                store: store.to_string(),
                id: id.to_string(),
            });
        }
        other => other?,
    };
    let bad = |why: String| SnapshotError::BadManifest {
        id: id.to_string(),
        why,
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if &manifest.id != id {
        return Err(bad(format!("it names itself {}", manifest.id)));
    }
    manifest.check().map_err(bad)?;
    Ok(manifest)
}

/// Every committed snapshot, newest first, with the manifests that could not be read.
///
/// # Errors
/// Only a failure to list the store; unreadable manifests are returned, not raised.
pub fn list(store: &dyn Store) -> Result<(Vec<Manifest>, Vec<SnapshotError>), SnapshotError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for id in committed_ids(store)? {
        match read_manifest(store, &id) {
            Ok(m) => good.push(m),
            Err(e) => bad.push(e),
        }
    }
    good.sort_by(|a, b| b.id.cmp(&a.id));
    Ok((good, bad))
}

/// The ids of every committed snapshot (those with a manifest), oldest first, without
/// reading the manifests.
///
/// # Errors
/// A failure to list the store.
pub fn committed_ids(store: &dyn Store) -> Result<BTreeSet<SnapshotId>, SnapshotError> {
    Ok(store
        .list(SNAPSHOTS_PREFIX)?
        .iter()
        .filter_map(|o| split_key(&o.key))
        .filter(|(_, name)| *name == MANIFEST_NAME)
        .filter_map(|(id, _)| id.parse().ok())
        .collect())
}

/// `snapshots/<id>/<name>` → (id, name).
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(SNAPSHOTS_PREFIX)?.split_once('/')
}

/// Resolves `latest` or an id to a manifest.
///
/// # Errors
/// `Empty` when `latest` is asked of an empty store, `BadId`, `NotFound`, `BadManifest`.
pub fn resolve(store: &dyn Store, which: &str) -> Result<Manifest, SnapshotError> {
    if which == "latest" {
        // The newest committed snapshot, even if its manifest is bad: silently falling back to
        // an older one would restore or verify the wrong data.
        let newest = committed_ids(store)?
            .into_iter()
            .next_back()
            .ok_or_else(|| SnapshotError::Empty {
                store: store.to_string(),
            })?;
        return read_manifest(store, &newest);
    }
    read_manifest(store, &which.parse()?)
}

/// The shortest grace `sweep_orphans` accepts: anything shorter could remove the parts of a
/// backup still running on another host that shares the store.
pub const MIN_ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// Deletes the objects of snapshots that never got a manifest (a backup that failed or was
/// killed) once both their start time (from the id) and their newest object are older than
/// `grace` (at least `MIN_ORPHAN_GRACE`), so a backup still running elsewhere is left alone.
/// The manifest's absence is checked again right before deleting. Only the names coffer
/// writes (`store::is_coffer_name`) are deleted; anything else in such a folder is left where
/// it is, with a warning. Returns the ids swept.
///
/// # Errors
/// Store errors while listing or deleting.
pub fn sweep_orphans(
    store: &dyn Store,
    grace: Duration,
    now: SystemTime,
) -> Result<Vec<String>, SnapshotError> {
    let grace = grace.max(MIN_ORPHAN_GRACE);
    let mut dirs: BTreeMap<String, (bool, Option<SystemTime>, Vec<String>)> = BTreeMap::new();
    for obj in store.list(SNAPSHOTS_PREFIX)? {
        let Some((id, name)) = split_key(&obj.key) else {
            continue;
        };
        let entry = dirs.entry(id.to_string()).or_default();
        entry.0 |= name == MANIFEST_NAME;
        entry.1 = entry.1.max(obj.modified);
        if store::is_coffer_name(name) {
            entry.2.push(obj.key.clone());
        } else if id.parse::<SnapshotId>().is_ok() {
            tracing::warn!(
                "left {} in {store}: coffer deletes only the names it writes",
                obj.key.escape_debug()
            );
        }
    }
    let old = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= grace;
    let mut swept = Vec::new();
    for (id, (committed, newest, keys)) in dirs {
        // Folders that are not coffer ids are not ours to judge.
        let Ok(parsed) = id.parse::<SnapshotId>() else {
            continue;
        };
        if committed
            || keys.is_empty()
            || !newest.is_some_and(old)
            || !parsed.started().is_some_and(old)
        {
            continue;
        }
        match store.get(&parsed.manifest_key()) {
            Err(e) if e.is_not_found() => {}
            _ => continue, // committed meanwhile, or unsure: leave it
        }
        for key in keys {
            store.delete(&key)?;
        }
        swept.push(id);
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let a = SnapshotId::new("2026-11-23T02:00:00Z".parse().unwrap());
        let b = SnapshotId::new("2026-11-23T02:00:00.001Z".parse().unwrap());
        let c = SnapshotId::new("2026-11-23T02:00:00.999Z".parse().unwrap());
        assert!(b < c, "ids sort within a second");
        assert!(a.as_str().starts_with("20261123T020000Z-"));
        assert_eq!(a.as_str().parse::<SnapshotId>().unwrap(), a);
        assert!(a < b);
        for bad in [
            "latest",
            "20261123T020000Z",
            "20261123T020000Z-ABCDEF",
            "../../x",
        ] {
            assert!(bad.parse::<SnapshotId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sweep_removes_only_old_unfinished_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let old = SnapshotId::new((now - 3 * hour).into());
        let young = SnapshotId::new((now + hour + hour / 2).into());
        let done = SnapshotId::new((now - 3 * hour).into());
        for id in [&old, &young, &done] {
            store::put_bytes(&store, &id.key("files.tar.gz.age.00001"), b"p").unwrap();
        }
        store::put_bytes(&store, &done.manifest_key(), b"{}").unwrap();
        assert!(
            sweep_orphans(&store, hour, now).unwrap().is_empty(),
            "parts too young"
        );
        // Two hours on: the parts are old enough, but `young` started less than a grace ago.
        let swept = sweep_orphans(&store, Duration::ZERO, now + 2 * hour).unwrap();
        assert_eq!(swept, [old.to_string()]);
        assert_eq!(store.list("").unwrap().len(), 3);
    }

    #[test]
    fn sweep_leaves_names_coffer_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let mixed = SnapshotId::new((now - 3 * hour).into());
        let foreign = SnapshotId::new((now - 3 * hour).into());
        store::put_bytes(&store, &mixed.key("files.tar.gz.age.00001"), b"p").unwrap();
        store::put_bytes(
            &store,
            &mixed.key(".files.tar.gz.age.00002.tmp-0123abcd"),
            b"p",
        )
        .unwrap();
        store::put_bytes(&store, &mixed.key("notes.txt"), b"n").unwrap();
        store::put_bytes(&store, &foreign.key("deep/files.tar.gz.age.00001"), b"d").unwrap();
        let swept = sweep_orphans(&store, hour, now + 2 * hour).unwrap();
        assert_eq!(
            swept,
            [mixed.to_string()],
            "nothing of coffer's in {foreign}"
        );
        let left: Vec<_> = store.list("").unwrap().into_iter().map(|m| m.key).collect();
        let mut want = [
            foreign.key("deep/files.tar.gz.age.00001"),
            mixed.key("notes.txt"),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn manifests_with_hostile_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let id = SnapshotId::new(Utc::now());
        let part = PartRecord {
            name: "files.tar.gz.age.00001".into(),
            size: 1,
            sha256: "00".into(),
        };
        let good = SourceRecord {
            name: "files".into(),
            kind: "directory".into(),
            stream: "files.tar.gz.age".into(),
            plaintext_bytes: 1,
            compressed_bytes: 1,
            encrypted_bytes: 1,
            sha256: "00".into(),
            parts: vec![part],
            entries: None,
            file_bytes: None,
            checksums: None,
            warnings: BTreeMap::new(),
            dump_tool: None,
            dump_tool_version: None,
            database: None,
        };
        let manifest = |source: SourceRecord| Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            id: id.clone(),
            created: Utc::now(),
            finished: Utc::now(),
            host: "h".into(),
            coffer_version: "0".into(),
            recipients: vec![],
            sources: vec![source],
        };
        write_manifest(&store, &manifest(good.clone())).unwrap();
        read_manifest(&store, &id).unwrap();
        let mut by_name = good.clone();
        by_name.name = "../../etc".into();
        let mut by_stream = good.clone();
        by_stream.stream = "../x.tar.gz.age".into();
        let mut by_part = good;
        by_part.parts[0].name = "../../x".into();
        for bad in [by_name, by_stream, by_part] {
            write_manifest(&store, &manifest(bad)).unwrap();
            assert!(matches!(
                read_manifest(&store, &id),
                Err(SnapshotError::BadManifest { .. })
            ));
        }
    }
}
