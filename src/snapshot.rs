//! Snapshots on a store: ids, the manifest (the commit marker and only index), its signature,
//! listing, and the sweep of unfinished snapshots.
//!
//! Layout (docs/FORMAT.md is the contract): `snapshots/<id>/<stream>.<NNNNN>`, then
//! `snapshots/<id>/manifest.json.sig`, then `snapshots/<id>/manifest.json`, last. A snapshot
//! exists once its manifest exists.
//!
//! THE STORE IS UNTRUSTED: anyone who can write to it can plant a manifest. Readers act on a
//! snapshot only when its signature is by a key they trust (`signing::Trusted`); every
//! manifest is read within a size cap and checked for consistency before anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signing::{MAX_SIGNATURE_BYTES, SigningError, SigningKey, Trust, Trusted};
use crate::store::{self, Store, StoreError};

/// The on-store format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "coffer-snapshot";
/// Folder of all snapshots in a store.
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";
const MANIFEST_NAME: &str = "manifest.json";
/// The manifest's SSH signature, written just before the manifest.
pub const SIGNATURE_NAME: &str = "manifest.json.sig";
/// The largest manifest a reader reads: a real manifest of a 1 TiB snapshot is about 3 MB.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;
/// How far a manifest's `created` may be from the time in its id.
const CREATED_SLACK: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// The longest a backup may run (`finished` − `created`).
const LONGEST_RUN: chrono::TimeDelta = chrono::TimeDelta::days(31);
/// How far ahead of this host's clock a manifest's times may be (clocks differ a little).
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::hours(1);

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

    /// The key of this snapshot's manifest signature.
    pub fn signature_key(&self) -> String {
        self.key(SIGNATURE_NAME)
    }

    /// The start time encoded in the id (whole seconds, UTC): what retention and staleness
    /// go by, since a manifest's own times are only as good as its consistency with it.
    pub fn time(&self) -> DateTime<Utc> {
        parse_id_time(&self.0).expect("a SnapshotId holds a valid time")
    }

    /// The start time encoded in the id.
    pub fn started(&self) -> Option<SystemTime> {
        Some(self.time().into())
    }
}

fn parse_id_time(id: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(id.get(..16)?, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
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
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
            && parse_id_time(s).is_some();
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
    /// Forgets the part lists (the bulk of a manifest), keeping every count and size.
    fn drop_parts(&mut self) {
        for s in &mut self.sources {
            s.parts = Vec::new();
            if let Some(c) = &mut s.checksums {
                c.parts = Vec::new();
            }
        }
    }

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

    /// Checks that the manifest is consistent (and names only what coffer writes), as seen
    /// at `now`: what every reader checks, and a backup before it signs.
    ///
    /// # Errors
    /// Why it is not.
    pub fn check_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.format != FORMAT_NAME {
            return Err(format!("format is '{}', not '{FORMAT_NAME}'", self.format));
        }
        if self.format_version > FORMAT_VERSION {
            return Err(format!(
                "format version {} is newer than this coffer reads ({FORMAT_VERSION}): upgrade coffer",
                self.format_version
            ));
        }
        let t = self.id.time();
        if (self.created - t).abs() > CREATED_SLACK {
            return Err(format!(
                "it says it was created {}, far from the time in its id ({})",
                self.created, t
            ));
        }
        if self.finished < self.created || self.finished - self.created > LONGEST_RUN {
            return Err(format!(
                "it says it finished {}, which cannot follow its start {}",
                self.finished, self.created
            ));
        }
        let ahead = [t, self.created, self.finished]
            .into_iter()
            .max()
            .unwrap_or(t);
        if ahead > now + CLOCK_SKEW {
            return Err(format!(
                "its time ({ahead}) is in the future of this host's clock ({now}); if this \
                 host's clock is wrong, set it right"
            ));
        }
        if self.sources.is_empty() {
            return Err("it holds no source".into());
        }
        // Names from the manifest become paths and keys, so they must be exactly what coffer
        // writes, even in a signed one.
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
    BadManifest {
        id: String,
        why: String,
        /// Whether its signature is by a trusted key (a real snapshot this coffer cannot read,
        /// not a planted one).
        signed: bool,
    },
    #[error(
        "snapshot {id} is not signed by a trusted key: {why}. Someone with write access to the \
         store may have planted it: do not restore it ('coffer forget {id}' removes it)"
    )]
    NotTrusted { id: String, why: String },
    #[error(
        "snapshot {id} is not signed: it was made before coffer signed its snapshots, or planted by \
         someone with write access to the store. Only if you know it is yours, pass \
         --allow-unsigned to use it"
    )]
    Unsigned { id: String },
    #[error(
        "no trusted signing key: put the backup host's public key (ssh-ed25519 AAAA… name; \
         'coffer check' on the backup host prints it, and it is in its \
         state_dir/signing-key.pub) in encryption.trusted_signers"
    )]
    NoTrustedKey,
    #[error(
        "{store} holds no snapshot signed by a trusted key{}",
        if passed_over.is_empty() { String::new() } else {
            format!(" (passed over: {})", passed_over.join("; "))
        }
    )]
    NoTrustedSnapshot {
        store: String,
        passed_over: Vec<String>,
    },
    #[error("signing the manifest of snapshot {id}: {source}")]
    Sign {
        id: String,
        #[source]
        source: SigningError,
    },
    #[error("snapshot {id} has no source '{name}' (it has: {})", have.join(", "))]
    NoSuchSource {
        id: String,
        name: String,
        have: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Commits a snapshot: writes its signature, then its manifest (the commit marker). Call
/// only after every part is stored. Returns the time the signature took (signing and storing
/// it): what signing adds to a backup.
///
/// # Errors
/// Signing or store errors; the snapshot then does not exist.
pub fn write_manifest(
    store: &dyn Store,
    manifest: &Manifest,
    key: &SigningKey,
) -> Result<Duration, SnapshotError> {
    let mut json = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
    json.push(b'\n');
    let started = std::time::Instant::now();
    let signature = key.sign(&json).map_err(|source| SnapshotError::Sign {
        id: manifest.id.to_string(),
        source,
    })?;
    store::put_bytes(store, &manifest.id.signature_key(), &signature)?;
    let signing = started.elapsed();
    store::put_bytes(store, &manifest.id.manifest_key(), &json)?;
    Ok(signing)
}

/// A manifest that parsed and is consistent, with what its signature says.
#[derive(Debug, Clone)]
pub struct Checked {
    pub manifest: Manifest,
    pub trust: Trust,
}

/// Reads one snapshot's manifest (within `MAX_MANIFEST_BYTES`) and its signature, checks the
/// signature against `trusted`, then parses and checks the manifest. The snapshot's folder is
/// listed first, so a manifest the store says is too large is refused without being read.
///
/// # Errors
/// `NotFound` when the snapshot has no manifest, `BadManifest` when it is too large, does not
/// parse or is inconsistent; store errors.
pub fn read_checked(
    store: &dyn Store,
    id: &SnapshotId,
    trusted: &Trusted,
) -> Result<Checked, SnapshotError> {
    let manifest_key = id.manifest_key();
    let size = store
        .list(&id.prefix())?
        .into_iter()
        .find(|o| o.key == manifest_key)
        .map(|o| o.size)
        .ok_or_else(|| SnapshotError::NotFound {
            store: store.to_string(),
            id: id.to_string(),
        })?;
    read_listed(store, id, size, trusted)
}

/// `read_checked` for a manifest the store listed with `size` bytes.
fn read_listed(
    store: &dyn Store,
    id: &SnapshotId,
    size: u64,
    trusted: &Trusted,
) -> Result<Checked, SnapshotError> {
    let bad = |why: String, signed: bool| SnapshotError::BadManifest {
        id: id.to_string(),
        why,
        signed,
    };
    let now = Utc::now();
    // Nothing of a snapshot from the future is read: no real one can be there.
    if id.time() > now + CLOCK_SKEW {
        return Err(bad(
            format!(
                "its id says it started {}, in the future of this host's clock ({now}): not read",
                id.time()
            ),
            false,
        ));
    }
    if size > MAX_MANIFEST_BYTES {
        return Err(bad(too_large(Some(size)), false));
    }
    // A store that cannot answer (network, throttling) is an error for the whole listing; an
    // object that cannot be read (a link, a folder, no permission: planted) is this snapshot's
    // problem only, so one planted object never blinds every reader.
    let bytes = match store::get_bytes_limited(store, &id.manifest_key(), MAX_MANIFEST_BYTES) {
        Err(e) if e.is_not_found() => {
            return Err(SnapshotError::NotFound {
                store: store.to_string(),
                id: id.to_string(),
            });
        }
        Err(StoreError::TooLarge { .. }) => return Err(bad(too_large(None), false)),
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => return Err(bad(format!("it cannot be read: {e}"), false)),
        Ok(bytes) => bytes,
    };
    let trust = match store::get_bytes_limited(store, &id.signature_key(), MAX_SIGNATURE_BYTES) {
        Ok(sig) => trusted.verify(&bytes, &sig),
        Err(e) if e.is_not_found() => Trust::Unsigned,
        Err(StoreError::TooLarge { .. }) => Trust::Untrusted {
            why: format!("its signature file is larger than {MAX_SIGNATURE_BYTES} bytes"),
        },
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => Trust::Untrusted {
            why: format!("its signature file cannot be read ({e})"),
        },
    };
    let signed = trust.is_trusted();
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string(), signed))?;
    if &manifest.id != id {
        return Err(bad(format!("it names itself {}", manifest.id), signed));
    }
    manifest.check_at(now).map_err(|why| bad(why, signed))?;
    Ok(Checked { manifest, trust })
}

fn too_large(size: Option<u64>) -> String {
    match size {
        Some(n) => format!(
            "it is {n} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have (a real one \
             of a 1 TiB snapshot has about 3 MB): it was not read"
        ),
        None => format!(
            "it is larger than the {MAX_MANIFEST_BYTES} bytes a manifest may have (a real one of \
             a 1 TiB snapshot has about 3 MB): reading stopped there"
        ),
    }
}

/// Every committed snapshot of a store, newest first, with what its signature says.
#[derive(Debug, Default)]
pub struct Listing {
    pub snapshots: Vec<Checked>,
    /// Manifests that could not be read, are too large or are inconsistent.
    pub unreadable: Vec<SnapshotError>,
}

impl Listing {
    /// The snapshots signed by a trusted key, newest first: the only ones retention, the
    /// staleness check and `latest` consider.
    pub fn trusted(&self) -> impl Iterator<Item = &Manifest> {
        self.snapshots
            .iter()
            .filter(|c| c.trust.is_trusted())
            .map(|c| &c.manifest)
    }

    /// The snapshots that are not signed by a trusted key (unsigned or untrusted).
    pub fn not_trusted(&self) -> impl Iterator<Item = &Checked> {
        self.snapshots.iter().filter(|c| !c.trust.is_trusted())
    }
}

/// Every committed snapshot, newest first, each with its trust, and the manifests that could
/// not be read. A manifest the store lists as larger than `MAX_MANIFEST_BYTES` is not read.
///
/// # Errors
/// Only a failure to list the store or to read an object it listed.
pub fn list(store: &dyn Store, trusted: &Trusted) -> Result<Listing, SnapshotError> {
    let mut listing = Listing::default();
    let mut manifests: BTreeMap<SnapshotId, u64> = BTreeMap::new();
    for o in store.list(SNAPSHOTS_PREFIX)? {
        if let Some((id, MANIFEST_NAME)) = split_key(&o.key)
            && let Ok(id) = id.parse::<SnapshotId>()
        {
            manifests.insert(id, o.size);
        }
    }
    for (id, size) in manifests.into_iter().rev() {
        match read_listed(store, &id, size, trusted) {
            Ok(c) if c.trust.is_trusted() => listing.snapshots.push(c),
            // Kept as a summary: many planted manifests must not add up in memory (whoever
            // acts on one reads it again with `read_checked`).
            Ok(mut c) => {
                c.manifest.drop_parts();
                listing.snapshots.push(c);
            }
            // Deleted between the listing and the read (a prune elsewhere): not a snapshot.
            Err(SnapshotError::NotFound { .. }) => {}
            Err(e @ SnapshotError::BadManifest { .. }) => listing.unreadable.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(listing)
}

/// The ids of every committed snapshot (those with a manifest), oldest first, without
/// reading the manifests (nor checking them: planted ones included).
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

/// Which snapshots a reader may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only snapshots signed by a trusted key (the default, and always in the daemon).
    Trusted,
    /// Also unsigned ones (`--allow-unsigned`: snapshots made before coffer signed them). A
    /// signature that does not verify is refused all the same.
    TrustedOrUnsigned,
}

impl Accept {
    fn admits(self, trust: &Trust) -> bool {
        match trust {
            Trust::Trusted { .. } => true,
            Trust::Unsigned => self == Accept::TrustedOrUnsigned,
            Trust::Untrusted { .. } => false,
        }
    }
}

/// A snapshot a reader may act on.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest: Manifest,
    pub trust: Trust,
    /// Newer snapshots `latest` passed over, each with why (planted, unsigned, unreadable).
    pub passed_over: Vec<String>,
}

fn refusal(id: &SnapshotId, trust: &Trust) -> SnapshotError {
    match trust {
        Trust::Unsigned => SnapshotError::Unsigned { id: id.to_string() },
        Trust::Untrusted { why } => SnapshotError::NotTrusted {
            id: id.to_string(),
            why: why.clone(),
        },
        Trust::Trusted { .. } => unreachable!("a trusted snapshot is never refused"),
    }
}

/// Resolves `latest` or an id to a snapshot `accept` admits. `latest` is the newest such
/// snapshot: newer ones that are planted, unsigned or unreadable (but not signed by a trusted
/// key) are passed over and named; a newer one signed by a trusted key whose manifest this
/// coffer cannot read is an error, never silently skipped.
///
/// # Errors
/// `NoTrustedKey` when nothing is trusted, `Empty`, `NoTrustedSnapshot`, `BadId`, `NotFound`,
/// `BadManifest`, `NotTrusted`, `Unsigned`.
pub fn resolve(
    store: &dyn Store,
    which: &str,
    trusted: &Trusted,
    accept: Accept,
) -> Result<Resolved, SnapshotError> {
    if trusted.is_empty() && accept == Accept::Trusted {
        return Err(SnapshotError::NoTrustedKey);
    }
    if which != "latest" {
        let id: SnapshotId = which.parse()?;
        let c = read_checked(store, &id, trusted)?;
        if !accept.admits(&c.trust) {
            return Err(refusal(&id, &c.trust));
        }
        return Ok(Resolved {
            manifest: c.manifest,
            trust: c.trust,
            passed_over: Vec::new(),
        });
    }
    let ids = committed_ids(store)?;
    if ids.is_empty() {
        return Err(SnapshotError::Empty {
            store: store.to_string(),
        });
    }
    let mut passed_over = Vec::new();
    // With `--allow-unsigned`, `latest` is still the newest *trusted* snapshot; only a store
    // without any gives its newest unsigned one (a store of a coffer before signatures). So a
    // planted unsigned snapshot never wins over a signed one.
    let mut newest_unsigned: Option<(Checked, usize)> = None;
    for id in ids.into_iter().rev() {
        match read_checked(store, &id, trusted) {
            Ok(c) if c.trust.is_trusted() => {
                if let Some((u, pos)) = newest_unsigned {
                    passed_over.insert(
                        pos,
                        format!(
                            "{}: {}",
                            u.manifest.id,
                            refusal(&u.manifest.id, &Trust::Unsigned)
                        ),
                    );
                }
                return Ok(Resolved {
                    manifest: c.manifest,
                    trust: c.trust,
                    passed_over,
                });
            }
            Ok(c) if accept.admits(&c.trust) && newest_unsigned.is_none() => {
                newest_unsigned = Some((c, passed_over.len()));
            }
            Ok(c) => passed_over.push(format!("{id}: {}", refusal(&id, &c.trust))),
            Err(SnapshotError::NotFound { .. }) => {}
            // Signed by a trusted key but unreadable (a newer coffer's?): restoring an older
            // one instead would hand back the wrong data without a word.
            Err(e @ SnapshotError::BadManifest { signed: true, .. }) => return Err(e),
            Err(e @ SnapshotError::BadManifest { .. }) => passed_over.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    if let Some((u, before)) = newest_unsigned {
        passed_over.truncate(before);
        return Ok(Resolved {
            manifest: u.manifest,
            trust: u.trust,
            passed_over,
        });
    }
    Err(SnapshotError::NoTrustedSnapshot {
        store: store.to_string(),
        passed_over,
    })
}

/// The newest snapshot signed by a trusted key, reading manifests newest first only until it
/// is found (the staleness check and `status`); `None` when there is none.
///
/// # Errors
/// Store errors.
pub fn newest_trusted(
    store: &dyn Store,
    trusted: &Trusted,
) -> Result<Option<Manifest>, SnapshotError> {
    for id in committed_ids(store)?.into_iter().rev() {
        match read_checked(store, &id, trusted) {
            Ok(c) if c.trust.is_trusted() => return Ok(Some(c.manifest)),
            Ok(_) | Err(SnapshotError::NotFound { .. } | SnapshotError::BadManifest { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Deletes one snapshot: its manifest first (from then on it is no snapshot), then its other
/// objects of the names coffer writes (`store::is_coffer_name`); anything else in its folder
/// is left with a warning. A deletion cut short leaves parts for the orphan sweep, never a
/// snapshot with holes.
///
/// # Errors
/// The first store error; what is left is swept later.
pub fn delete_snapshot(store: &dyn Store, id: &SnapshotId) -> Result<(), SnapshotError> {
    store.delete(&id.manifest_key())?;
    let prefix = id.prefix();
    for o in store.list(&prefix)? {
        let name = o.key.strip_prefix(&prefix).unwrap_or(&o.key);
        if !store::is_coffer_name(name) {
            tracing::warn!(
                "left {} of deleted snapshot {id} in {store}: coffer deletes only the names it \
                 writes",
                crate::text::Printable(&o.key)
            );
            continue;
        }
        store.delete(&o.key)?;
    }
    Ok(())
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

    fn sample(id: &SnapshotId) -> Manifest {
        let part = PartRecord {
            name: "files.tar.gz.age.00001".into(),
            size: 1,
            sha256: "00".into(),
        };
        let source = SourceRecord {
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
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            id: id.clone(),
            created: id.time(),
            finished: id.time() + chrono::TimeDelta::seconds(5),
            host: "h".into(),
            coffer_version: "0".into(),
            recipients: vec![],
            sources: vec![source],
        }
    }

    fn id_at(t: &str) -> SnapshotId {
        SnapshotId::new(t.parse().unwrap())
    }

    /// Writes a manifest as a store writer could: any bytes, signed or not.
    fn plant(store: &LocalStore, m: &Manifest, key: Option<&SigningKey>) {
        match key {
            Some(key) => {
                write_manifest(store, m, key).unwrap();
            }
            None => {
                store::put_bytes(store, &m.id.manifest_key(), &serde_json::to_vec(m).unwrap())
                    .unwrap();
            }
        }
    }

    #[test]
    fn manifests_with_hostile_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let id = SnapshotId::new(Utc::now());
        let good = sample(&id);
        write_manifest(&store, &good, &key).unwrap();
        assert!(
            read_checked(&store, &id, &trusted)
                .unwrap()
                .trust
                .is_trusted()
        );
        let mut by_name = good.clone();
        by_name.sources[0].name = "../../etc".into();
        let mut by_stream = good.clone();
        by_stream.sources[0].stream = "../x.tar.gz.age".into();
        let mut by_part = good;
        by_part.sources[0].parts[0].name = "../../x".into();
        for bad in [by_name, by_stream, by_part] {
            write_manifest(&store, &bad, &key).unwrap();
            assert!(matches!(
                read_checked(&store, &id, &trusted),
                Err(SnapshotError::BadManifest { signed: true, .. })
            ));
        }
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let now: DateTime<Utc> = "2026-12-07T02:00:00Z".parse().unwrap();
        let id = id_at("2026-12-06T02:00:00Z");
        assert_eq!(sample(&id).check_at(now), Ok(()));
        let mut far = sample(&id);
        far.created = "2099-01-01T00:00:00Z".parse().unwrap();
        far.finished = far.created;
        let mut backwards = sample(&id);
        backwards.finished = id.time() - chrono::TimeDelta::seconds(1);
        let mut empty = sample(&id);
        empty.sources.clear();
        let future_id = id_at("2026-12-07T04:00:00Z");
        for (m, what) in [
            (far, "far from the time in its id"),
            (backwards, "cannot follow its start"),
            (empty, "no source"),
            (sample(&future_id), "in the future"),
        ] {
            let why = m.check_at(now).unwrap_err();
            assert!(why.contains(what), "{why}");
        }
    }

    #[test]
    fn latest_is_the_newest_trusted_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let ours = SigningKey::generate("ours");
        let theirs = SigningKey::generate("theirs");
        let trusted = Trusted::new([ours.public()]);
        let real = id_at("2026-12-01T02:00:00Z");
        let planted_signed = id_at("2026-12-02T02:00:00Z");
        let planted_unsigned = id_at("2026-12-03T02:00:00Z");
        plant(&store, &sample(&real), Some(&ours));
        plant(&store, &sample(&planted_signed), Some(&theirs));
        plant(&store, &sample(&planted_unsigned), None);
        // A 2099 forgery with garbage in it: unreadable, passed over.
        store::put_bytes(&store, &id_at("2026-12-04T02:00:00Z").manifest_key(), b"{").unwrap();

        let r = resolve(&store, "latest", &trusted, Accept::Trusted).unwrap();
        assert_eq!(r.manifest.id, real);
        assert_eq!(r.passed_over.len(), 3, "{:?}", r.passed_over);
        // --allow-unsigned does not let a planted unsigned snapshot win over a signed one.
        let r = resolve(&store, "latest", &trusted, Accept::TrustedOrUnsigned).unwrap();
        assert_eq!(r.manifest.id, real);
        assert_eq!(r.passed_over.len(), 3, "{:?}", r.passed_over);
        assert!(r.passed_over[1].contains(planted_unsigned.as_str()));
        let r = resolve(
            &store,
            planted_unsigned.as_str(),
            &trusted,
            Accept::TrustedOrUnsigned,
        );
        assert_eq!(
            r.unwrap().trust,
            Trust::Unsigned,
            "named, an unsigned one is allowed"
        );
        assert!(matches!(
            resolve(
                &store,
                planted_signed.as_str(),
                &trusted,
                Accept::TrustedOrUnsigned
            ),
            Err(SnapshotError::NotTrusted { .. })
        ));
        assert!(matches!(
            resolve(&store, planted_unsigned.as_str(), &trusted, Accept::Trusted),
            Err(SnapshotError::Unsigned { .. })
        ));
        assert!(matches!(
            resolve(&store, "latest", &Trusted::default(), Accept::Trusted),
            Err(SnapshotError::NoTrustedKey)
        ));
        assert_eq!(newest_trusted(&store, &trusted).unwrap().unwrap().id, real);
        let listing = list(&store, &trusted).unwrap();
        assert_eq!(
            listing.trusted().map(|m| &m.id).collect::<Vec<_>>(),
            [&real]
        );
        assert_eq!(listing.not_trusted().count(), 2);
        assert_eq!(listing.unreadable.len(), 1);
    }

    #[test]
    fn a_store_of_only_unsigned_snapshots_gives_its_newest_with_allow_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let trusted = Trusted::new([SigningKey::generate("h").public()]);
        let (a, b) = (id_at("2026-11-01T02:00:00Z"), id_at("2026-11-02T02:00:00Z"));
        plant(&store, &sample(&a), None);
        plant(&store, &sample(&b), None);
        assert!(matches!(
            resolve(&store, "latest", &trusted, Accept::Trusted),
            Err(SnapshotError::NoTrustedSnapshot { .. })
        ));
        let r = resolve(&store, "latest", &trusted, Accept::TrustedOrUnsigned).unwrap();
        assert_eq!((r.manifest.id, r.passed_over.len()), (b, 0));
    }

    #[test]
    fn an_unreadable_object_blinds_no_reader() {
        // A planted manifest whose signature is a folder, and one dated next year: the
        // listing goes on, and `latest` is the real snapshot.
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let real = id_at("2026-12-01T02:00:00Z");
        plant(&store, &sample(&real), Some(&key));
        let odd = id_at("2026-12-02T02:00:00Z");
        plant(&store, &sample(&odd), None);
        std::fs::create_dir_all(dir.path().join(odd.signature_key())).unwrap();
        let future = SnapshotId::new(Utc::now() + chrono::TimeDelta::days(365));
        store::put_bytes(&store, &future.manifest_key(), b"{}").unwrap();
        let listing = list(&store, &trusted).unwrap();
        assert_eq!(listing.trusted().count(), 1);
        assert_eq!(listing.unreadable.len(), 1, "{:?}", listing.unreadable);
        assert!(matches!(
            &listing.snapshots.iter().find(|c| c.manifest.id == odd).unwrap().trust,
            Trust::Untrusted { why } if why.contains("cannot be read")
        ));
        assert_eq!(
            resolve(&store, "latest", &trusted, Accept::Trusted)
                .unwrap()
                .manifest
                .id,
            real
        );
        assert_eq!(newest_trusted(&store, &trusted).unwrap().unwrap().id, real);
    }

    #[test]
    fn a_signature_moved_from_another_snapshot_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = SigningKey::generate("h");
        let trusted = Trusted::new([key.public()]);
        let (a, b) = (id_at("2026-12-01T02:00:00Z"), id_at("2026-12-02T02:00:00Z"));
        plant(&store, &sample(&a), Some(&key));
        plant(&store, &sample(&b), None);
        let sig = store::get_bytes(&store, &a.signature_key()).unwrap();
        store::put_bytes(&store, &b.signature_key(), &sig).unwrap();
        let c = read_checked(&store, &b, &trusted).unwrap();
        assert!(
            matches!(&c.trust, Trust::Untrusted { why } if why.contains("moved")),
            "{:?}",
            c.trust
        );
    }

    #[test]
    fn oversized_manifests_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let id = id_at("2026-12-01T02:00:00Z");
        let folder = dir.path().join(id.prefix());
        std::fs::create_dir_all(&folder).unwrap();
        let f = std::fs::File::create(folder.join(MANIFEST_NAME)).unwrap();
        f.set_len(MAX_MANIFEST_BYTES + 1).unwrap();
        let trusted = Trusted::new([SigningKey::generate("h").public()]);
        let listing = list(&store, &trusted).unwrap();
        assert!(
            matches!(&listing.unreadable[..], [SnapshotError::BadManifest { why, .. }] if why.contains("was not read"))
        );
        assert!(matches!(
            read_checked(&store, &id, &trusted),
            Err(SnapshotError::BadManifest { why, .. }) if why.contains("was not read")
        ));
        // A store that lists a small size but holds more is cut at the limit all the same.
        let limited = store::get_bytes_limited(&store, &id.manifest_key(), 10);
        assert!(matches!(
            limited,
            Err(StoreError::TooLarge { limit: 10, .. })
        ));
    }
}
