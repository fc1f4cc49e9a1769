//! A `sqlite` source: the `sqlite3` shell's `.dump`, streamed from the child's stdout.
//!
//! `.dump` reads the whole database inside one read transaction, so the dump is a consistent
//! snapshot even while another process writes (in WAL mode writers are not even blocked), and
//! nothing is copied to disk first. The database is opened read-only.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use super::command::{DumpCommand, DumpError, DumpOutcome};

/// A SQLite database file to dump.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    pub path: PathBuf,
    pub dump_tool: PathBuf,
}

impl SqliteSource {
    /// `sqlite3 --version`'s answer, for the manifest.
    pub fn tool_version(&self) -> Option<String> {
        let out = Command::new(&self.dump_tool)
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success().then(|| {
            let v = text.split_whitespace().next().unwrap_or("");
            format!("sqlite3 {v}")
        })
    }

    /// Dumps the database into `out`.
    ///
    /// # Errors
    /// When the file is missing (a dump of nothing must not pass for a backup), and as
    /// `DumpCommand::run_into`.
    pub fn write_dump(&self, out: &mut dyn std::io::Write) -> Result<DumpOutcome, DumpError> {
        if !self.path.is_file() {
            return Err(DumpError::Spawn {
                tool: self.dump_tool.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("database file {} does not exist", self.path.display()),
                ),
            });
        }
        let args: Vec<OsString> = vec![
            "-readonly".into(),
            "-bail".into(),
            self.path.clone().into_os_string(),
            ".dump".into(),
        ];
        DumpCommand {
            program: self.dump_tool.clone().into_os_string(),
            args,
            env: Vec::new(),
        }
        .run_into(out)
    }
}
