//! Sources: what produces the plaintext bytes of one stream.

mod command;
mod directory;
pub mod frappe;
pub(crate) mod mysql;
mod postgres;
mod sqlite;

pub use command::{DumpCommand, DumpError, DumpOutcome, FeedError, tool_version};
pub use directory::{DirectoryError, DirectorySource, Excludes, WalkOutcome, Warning, WarningKind};
pub use mysql::MysqlSource;
pub use postgres::PostgresSource;
pub use sqlite::{SqliteDumpError, SqliteSource, builtin_dump as sqlite_dump};
