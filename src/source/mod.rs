//! Sources: what produces the plaintext bytes of one stream.

mod directory;

pub use directory::{DirectoryError, DirectorySource, Excludes, WalkOutcome, Warning, WarningKind};
