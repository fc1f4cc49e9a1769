//! Exit codes a script can act on, and the marker error for damaged or refused backup data.
//! A leaf: engines return `Damaged` where what they found is the backup's fault (not the
//! local disk's, not the store's reachability); `commands::exit_code` reads an error chain
//! into a `Code`.

/// What a failed command's exit status says (documented in `coffer --help`, the man page and
/// docs/OPERATIONS.md). Like restic's: 10 and up are coffer's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A failure none of the others describes.
    Failure = 1,
    /// The command line is wrong (clap's own code).
    Usage = 2,
    /// The configuration cannot be read or is invalid.
    Config = 3,
    /// The store cannot be reached, listed or written (network, permissions, credentials).
    Store = 10,
    /// Another job (a backup, a prune, a drill) holds the state folder's lock.
    Locked = 11,
    /// The identity (private key) cannot be read or does not match the snapshot.
    Identity = 12,
    /// The backup data is damaged or refused: a part missing or corrupted, a snapshot not
    /// signed by a trusted key or unreadable, a differential without its full, a restore
    /// whose counts differ, a drill whose checks failed.
    Damaged = 13,
    /// A source could not be read or dumped (a folder, a database, its dump tool).
    Source = 14,
    /// Stopped by SIGINT (Ctrl-C).
    Interrupted = 130,
    /// Stopped by SIGTERM.
    Terminated = 143,
}

impl Code {
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The table of exit codes for `--help` and the docs.
pub const TABLE: &str = "\
Exit codes:
  0    success
  1    a failure none of the codes below describes
  2    the command line is wrong
  3    the configuration cannot be read or is invalid
  10   the store cannot be reached, listed or written
  11   another job holds the lock (pass --wait DURATION to queue)
  12   the identity cannot be read or does not match the snapshot
  13   damaged or refused backup data (a bad or missing part, an untrusted snapshot, a
       differential without its full, a restore that differs, a failed drill)
  14   a source could not be read or dumped
  130  stopped by SIGINT; 143 stopped by SIGTERM";

/// Backup data found damaged or refused, with what was found (the message is the error's).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Damaged(pub String);

impl Damaged {
    /// As an `anyhow::Error`.
    pub fn error(message: impl Into<String>) -> anyhow::Error {
        Damaged(message.into()).into()
    }
}
