//! A `sqlite` source: the `sqlite3` shell's `.dump`, streamed from the child's stdout.
//!
//! The dump runs inside one read transaction, so it is a consistent snapshot even while another
//! process writes (in WAL mode writers are not even blocked), and nothing is copied to disk
//! first. A dump that does not end with `COMMIT;`, or any message from the shell, fails it.

use std::ffi::OsString;
use std::path::PathBuf;

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
        // sqlite3 prints "3.40.1 2022-12-28 …": keep the version number.
        super::command::tool_version(&self.dump_tool)
            .map(|v| format!("sqlite3 {}", v.split_whitespace().next().unwrap_or("")))
    }

    /// Dumps the database into `out`.
    ///
    /// # Errors
    /// When the file is missing (a dump of nothing must not pass for a backup), when the
    /// shell reports anything or its dump does not end with `COMMIT;`, and as
    /// `DumpCommand::run_into`.
    pub fn write_dump(&self, out: &mut dyn std::io::Write) -> Result<DumpOutcome, DumpError> {
        let tool = self.dump_tool.display().to_string();
        let fail = |why: String| DumpError::Failed {
            tool: tool.clone(),
            status: "did not finish the dump".into(),
            stderr: why,
        };
        if !self.path.is_file() {
            return Err(DumpError::Missing(format!(
                "database file {} does not exist",
                self.path.display()
            )));
        }
        // `.dump` alone can meet a busy database (another connection recovering the WAL)
        // while reading the schema and then emits an empty dump with exit status 0. So take
        // the read transaction first, with a query that fails loudly (.bail) when busy; the
        // dump then reads inside that snapshot.
        let script = b".bail on\n.timeout 30000\nBEGIN;\n.output /dev/null\n\
SELECT count(*) FROM sqlite_master;\n.output\n.dump\nCOMMIT;\n";
        let mut tail = Tail {
            inner: out,
            last: Vec::new(),
        };
        let done = DumpCommand {
            program: self.dump_tool.clone().into_os_string(),
            // -init /dev/null: never run the user's ~/.sqliterc.
            args: vec![
                OsString::from("-batch"),
                OsString::from("-init"),
                OsString::from("/dev/null"),
                self.path.clone().into_os_string(),
            ],
            env: Vec::new(),
            stdin: Some(script.to_vec()),
            remove_after_start: None,
        }
        .run_into(&mut tail)?;
        if !done.stderr.is_empty() {
            return Err(fail(done.stderr));
        }
        if !tail.last.ends_with(b"COMMIT;\n") {
            return Err(fail(format!(
                "the dump ends with {:?} instead of COMMIT;",
                String::from_utf8_lossy(&tail.last)
            )));
        }
        Ok(done)
    }
}

/// Passes bytes on, keeping the last few to check how the dump ended.
struct Tail<'a> {
    inner: &'a mut dyn std::io::Write,
    last: Vec<u8>,
}

impl std::io::Write for Tail<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.last.extend_from_slice(&buf[..n]);
        if self.last.len() > 64 {
            self.last.drain(..self.last.len() - 32);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
