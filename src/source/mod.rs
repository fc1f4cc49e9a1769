//! Sources: what produces the plaintext bytes of one stream.

mod directory;
pub mod frappe;
pub mod index;
pub(crate) mod mysql;
mod postgres;
mod sqlite;

pub use directory::{
    Against, DirectoryError, DirectorySource, Excludes, WalkOutcome, Warning, WarningKind,
};
pub use mysql::MysqlSource;
pub use postgres::PostgresSource;
pub use sqlite::{SqliteDumpError, SqliteSource, builtin_dump as sqlite_dump};

/// A `[[source]]` of a config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    /// Database sources: tables the server estimates above this many rows get the estimate
    /// in the manifest instead of an exact `count(*)`.
    pub exact_count_limit: u64,
    /// Folder sources (and a frappe preset's files): how often a full is taken; between
    /// fulls, each backup stores what changed since the last full. Zero: always a full.
    pub full_every: std::time::Duration,
    /// A stream of a `frappe-bench` source: its bench and site, recorded in the manifest.
    pub bench: Option<crate::snapshot::BenchRecord>,
}

/// A file coffer makes and stores in a folder's stream (a bench's `apps.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Its path in the stream, relative.
    pub path: std::path::PathBuf,
    pub bytes: Vec<u8>,
}

/// The default `full_every`: a full a week, differentials between.
pub const DEFAULT_FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone)]
pub enum SourceKind {
    Directory {
        path: std::path::PathBuf,
        exclude: Vec<String>,
        /// Only these paths below `path` (the Frappe preset's selection); empty: everything.
        only: Vec<std::path::PathBuf>,
        /// Files made by coffer and stored after the folder's own (a bench's `apps.json`);
        /// only in a stream that is always a full (`full_every` zero).
        generated: Vec<Generated>,
    },
    /// A Frappe/ERPNext site folder (`sites/<site>`): expanded at backup time, from its
    /// site_config.json, into its database and its files (`source::frappe`).
    Frappe { path: std::path::PathBuf },
    /// A whole Frappe bench: every site under `sites/` (but `exclude_sites`), found at each
    /// backup, as a frappe preset each, plus the bench's own stream (`source::frappe`).
    FrappeBench {
        path: std::path::PathBuf,
        exclude_sites: Vec<String>,
    },
    /// A MariaDB/MySQL database dumped with `mariadb-dump` / `mysqldump`.
    Mysql {
        url: crate::database::DbUrl,
        password: Option<crate::secret::SecretRef>,
        dump_tool: Option<std::path::PathBuf>,
    },
    /// A SQLite database file, dumped by coffer itself (or, with `dump_tool`, by the
    /// `sqlite3` shell's `.dump`).
    Sqlite {
        path: std::path::PathBuf,
        dump_tool: Option<std::path::PathBuf>,
    },
    /// A PostgreSQL database dumped with `pg_dump` (plain SQL).
    Postgres {
        /// `postgres://user@host:port/db`, without a password.
        url: String,
        password: Option<crate::secret::SecretRef>,
        /// `pg_dump --no-owner` (default true: a restore into another role just works).
        no_owner: bool,
        dump_tool: std::path::PathBuf,
    },
}

impl SourceConfig {
    /// The type name used in configs and manifests.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Directory { .. } => "directory",
            SourceKind::Postgres { .. } => "postgres",
            SourceKind::Mysql { .. } => "mysql",
            SourceKind::Sqlite { .. } => "sqlite",
            SourceKind::Frappe { .. } => "frappe",
            SourceKind::FrappeBench { .. } => "frappe-bench",
        }
    }

    /// The stream name of this source, e.g. `files.tar.gz.age` or `db.sql.gz.age`.
    pub fn stream_name(&self) -> String {
        match self.kind {
            SourceKind::Directory { .. }
            | SourceKind::Frappe { .. }
            | SourceKind::FrappeBench { .. } => {
                format!("{}.tar.gz.age", self.name)
            }
            SourceKind::Postgres { .. } | SourceKind::Mysql { .. } | SourceKind::Sqlite { .. } => {
                format!("{}.sql.gz.age", self.name)
            }
        }
    }
}

impl SourceKind {
    /// The address of a database source's database and where its password comes from;
    /// `None` for folders and presets.
    pub fn database(
        &self,
    ) -> Option<(crate::database::Address, Option<&crate::secret::SecretRef>)> {
        use crate::database::Address;
        match self {
            SourceKind::Postgres { url, password, .. } => {
                Some((Address::Postgres(url.clone()), password.as_ref()))
            }
            SourceKind::Mysql { url, password, .. } => {
                Some((Address::Mysql(url.clone()), password.as_ref()))
            }
            SourceKind::Sqlite { path, .. } => Some((Address::Sqlite(path.clone()), None)),
            SourceKind::Directory { .. }
            | SourceKind::Frappe { .. }
            | SourceKind::FrappeBench { .. } => None,
        }
    }
}

impl SourceConfig {
    /// The sources this one stands for: a frappe preset expanded, from its site_config.json,
    /// into its database and its files (`frappe::expand`); a bench into every site's and its
    /// own stream (`frappe::expand_bench`); any other source itself. The one place presets
    /// are expanded (backup, restore's guards and check all ask here).
    ///
    /// # Errors
    /// When a preset's site cannot be read.
    pub fn expanded(&self) -> Result<Vec<SourceConfig>, frappe::FrappeError> {
        match &self.kind {
            SourceKind::Frappe { path } => {
                frappe::expand(&self.name, path, self.exact_count_limit, self.full_every)
            }
            SourceKind::FrappeBench {
                path,
                exclude_sites,
            } => frappe::expand_bench(
                &self.name,
                path,
                exclude_sites,
                self.exact_count_limit,
                self.full_every,
            ),
            _ => Ok(vec![self.clone()]),
        }
    }
}
