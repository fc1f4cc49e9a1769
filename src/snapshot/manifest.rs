//! The manifest of a snapshot (plaintext JSON, the commit marker and only index) and the
//! checks every reader applies to it before anything else.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    CLOCK_SKEW, CREATED_SLACK, FORMAT_NAME, FORMAT_VERSION, LONGEST_RUN, SnapshotError, SnapshotId,
};

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

/// What a stream holds: a folder's tar, a database's dump, or a folder's checksum list. On
/// the store it is the lowercase word (`directory`, `postgres`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Directory,
    Postgres,
    Mysql,
    Sqlite,
    /// A directory source's per-file sha256 list (never a source of its own in a manifest).
    Checksums,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Directory => "directory",
            StreamKind::Postgres => "postgres",
            StreamKind::Mysql => "mysql",
            StreamKind::Sqlite => "sqlite",
            StreamKind::Checksums => "checksums",
        }
    }

    /// A folder's tar (as opposed to a database dump).
    pub fn is_folder(self) -> bool {
        self == StreamKind::Directory
    }

    /// The kind of a configured source's stream (`SourceConfig::kind_name`).
    pub fn of_source(name: &str) -> Option<StreamKind> {
        match name {
            "directory" => Some(StreamKind::Directory),
            "postgres" => Some(StreamKind::Postgres),
            "mysql" => Some(StreamKind::Mysql),
            "sqlite" => Some(StreamKind::Sqlite),
            _ => None,
        }
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One source's stream in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    /// What the stream holds.
    pub kind: StreamKind,
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
    /// Directory streams that hold only what changed since the source's last full (format
    /// version 2): which full, and what changed. `entries` and `file_bytes` stay the whole
    /// tree's; the stream holds `changed_files` of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential: Option<DifferentialRecord>,
    /// Streams of a `frappe-bench` source: which bench, and which site (none for the bench's
    /// own stream of configs and `apps.json`). Older readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchRecord>,
}

/// A stream's place in a Frappe bench backed up whole (`type = "frappe-bench"`): what a
/// later backup compares its sites with (a site gone is alerted), what a drill's `{site}`
/// template and `restore --bench SITE` look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// The `frappe-bench` source's name.
    pub bench: String,
    /// The site (`erp.example.com`); none for the bench's own stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// What a differential stream builds on: restoring it means its base's stream first, then
/// this one (GNU tar's `-G`: what a folder no longer holds is removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferentialRecord {
    /// The snapshot holding the source's full stream.
    pub base: SnapshotId,
    /// Hex sha256 of that full stream (whole age stream), so a different stream of the same
    /// name is never taken for it.
    pub base_sha256: String,
    /// Regular files (and hard links) in this stream: new or changed since the base.
    pub changed_files: u64,
    /// Bytes of their content.
    pub changed_bytes: u64,
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
            kind: StreamKind::Checksums,
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
            differential: None,
            bench: None,
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
    /// The store's tag of the part as uploaded (an S3 ETag), where the store keeps one: a
    /// quick verify compares it with the listing instead of reading the part. Optional, so
    /// older readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
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
    pub(super) fn drop_parts(&mut self) {
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

    /// The snapshots this one's differentials build on (none for a snapshot of fulls).
    pub fn bases(&self) -> Vec<&SnapshotId> {
        let mut bases: Vec<&SnapshotId> = self
            .sources
            .iter()
            .filter_map(|s| s.differential.as_ref().map(|d| &d.base))
            .collect();
        bases.sort();
        bases.dedup();
        bases
    }

    /// The format version a snapshot of these sources has: 2 when a stream is a differential
    /// (an older coffer must refuse it rather than restore half a folder), else 1.
    pub fn version_for(sources: &[SourceRecord]) -> u32 {
        if sources.iter().any(|s| s.differential.is_some()) {
            2
        } else {
            1
        }
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
            if let Some(d) = &s.differential {
                if self.format_version < 2 {
                    return Err(format!(
                        "source '{}' is a differential in a format version {} manifest (they \
                         are version 2)",
                        s.name, self.format_version
                    ));
                }
                if !s.kind.is_folder() {
                    return Err(format!(
                        "source '{}' is a {} stream marked differential",
                        s.name, s.kind
                    ));
                }
                if d.base >= self.id {
                    return Err(format!(
                        "source '{}' is a differential of {}, which is not older than it",
                        s.name, d.base
                    ));
                }
                if d.base_sha256.len() != 64
                    || !d.base_sha256.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(format!(
                        "source '{}' names its base stream's sha256 as '{}'",
                        s.name, d.base_sha256
                    ));
                }
            }
            for st in s.streams() {
                for (n, part) in st.parts.iter().enumerate() {
                    if part.name != part_name(&st.stream, n + 1) {
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

/// The name of part `index` (1-based) of `stream`: `<stream>.NNNNN`.
pub fn part_name(stream: &str, index: usize) -> String {
    format!("{stream}.{index:05}")
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
