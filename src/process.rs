//! A database tool run as a child process: a dump tool whose stdout is a source's byte stream
//! (`pg_dump`, `mariadb-dump`, the `sqlite3` shell), or a client fed a dump on its stdin
//! (`psql`, `mariadb`, `sqlite3` for restores and drills).
//!
//! Like ripgrep's CommandReader: stdout is copied as a stream, stderr is drained on its own
//! thread (keeping its tail for the error message), and the exit status is checked at the end.
//! A tool that exits non-zero or is killed fails the source even though bytes already flowed,
//! so the backup writes no manifest. Secrets reach the child only through its environment,
//! never its argument list (which every user can read in `ps`).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use secrecy::{ExposeSecret, SecretString};

/// Bytes fed to a client after which it has surely read its option file (well beyond a pipe's
/// 64 KiB buffer).
const OPTIONS_READ_AFTER: u64 = 1 << 20;

/// How much of the tool's stderr is kept for the error message.
const STDERR_TAIL: usize = 4096;

/// Why a dump tool failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(
        "cannot run {tool}: {source} (is it installed and on PATH? set its path in the config)"
    )]
    Spawn {
        tool: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} {status}; its last words: {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error(
        "cannot read the database password: {0} (check the file's owner and mode, the systemd \
         LoadCredential= line, or the variable)"
    )]
    Secret(String),
    #[error("{0}: check the source's path in the config")]
    Missing(String),
    #[error("writing {tool}'s output: {0}", tool = .1)]
    Write(#[source] io::Error, String),
    #[error("reading {tool}'s output: {0}", tool = .1)]
    Read(#[source] io::Error, String),
    #[error("{tool} was stopped: {0}", tool = .1)]
    Stopped(#[source] crate::shutdown::Stopped, String),
    #[error("feeding {tool} its input: {0}", tool = .1)]
    Feed(#[source] io::Error, String),
}

impl From<io::Error> for DumpError {
    fn from(e: io::Error) -> Self {
        DumpError::Write(e, "the dump tool".into())
    }
}

/// A dump tool invocation.
pub struct DumpCommand {
    /// The program (name on PATH or a path).
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Extra environment for the child; secret values stay wrapped until the spawn.
    pub env: Vec<(String, SecretString)>,
    /// A small script fed to the child's stdin (otherwise stdin is empty).
    pub stdin: Option<Vec<u8>>,
    /// A file (an option file holding a password) removed as soon as the tool's first output
    /// arrives — it has read its options by then — so even a killed coffer leaves it on disk
    /// only for the tool's start-up.
    pub remove_after_start: Option<std::path::PathBuf>,
}

/// What a finished dump produced.
#[derive(Debug, Clone, Default)]
pub struct DumpOutcome {
    pub bytes: u64,
    /// Non-empty stderr of a successful run (notices, warnings), trimmed.
    pub stderr: String,
}

impl DumpCommand {
    fn tool(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Starts the tool with its secrets in its environment and stderr piped; `own_group`
    /// makes it lead a process group of its own (so a stop request reaches all it starts,
    /// and a terminal's Ctrl-C reaches only coffer, which stops it cleanly).
    fn spawn(
        &self,
        stdin: Stdio,
        stdout: Stdio,
        own_group: bool,
    ) -> Result<std::process::Child, DumpError> {
        let mut cmd = Command::new(&self.program);
        if own_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd.args(&self.args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v.expose_secret());
        }
        cmd.spawn().map_err(|source| DumpError::Spawn {
            tool: self.tool(),
            source,
        })
    }

    /// Runs the tool, copying its stdout into `out`.
    ///
    /// # Errors
    /// `Spawn` when it cannot start, `Failed` when it exits non-zero or is killed (with the
    /// tail of its stderr), `Write`/`Read` when the stream fails (the child is killed).
    pub fn run_into(&self, out: &mut dyn Write) -> Result<DumpOutcome, DumpError> {
        let tool = self.tool();
        let stdin = if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = self.spawn(stdin, Stdio::piped(), true)?;
        let stoppable = crate::shutdown::ChildGuard::register(child.id());
        if let (Some(script), Some(mut stdin)) = (&self.stdin, child.stdin.take()) {
            // Small enough for the pipe buffer; closing stdin ends the script.
            if let Err(e) = stdin.write_all(script) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DumpError::Write(e, tool));
            }
        }
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::scope(|scope| {
            let tail = scope.spawn(move || stderr_tail(stderr));
            let mut started = || {
                if let Some(path) = &self.remove_after_start {
                    let _ = std::fs::remove_file(path);
                }
            };
            let copied = copy(&mut stdout, out, &mut started);
            started();
            if copied.is_err() {
                let _ = child.kill();
            }
            drop(stdout);
            stoppable.release_when_exited();
            let status = child.wait();
            let stderr = tail.join().unwrap_or_default();
            let bytes = match copied {
                Ok(n) => n,
                Err(Side::Write(e)) => return Err(DumpError::Write(e, tool)),
                Err(Side::Read(e)) => return Err(DumpError::Read(e, tool)),
            };
            let status = status.map_err(|e| DumpError::Read(e, tool.clone()))?;
            // Stopped by a stop request: that is the reason, not the tool's signal.
            crate::shutdown::check().map_err(|s| DumpError::Stopped(s, tool.clone()))?;
            if !status.success() {
                return Err(failed(tool, status, stderr));
            }
            Ok(DumpOutcome { bytes, stderr })
        })
    }
}

/// Why feeding a stream into a client failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Reading the input failed (a damaged or unreachable stream); the client was stopped.
    #[error("reading the dump: {0}")]
    Input(#[source] io::Error),
    #[error(transparent)]
    Tool(#[from] DumpError),
}

impl DumpCommand {
    /// Runs a client (`psql`, `mariadb`, `sqlite3`) with `input` on its stdin; its stdout is
    /// discarded, its stderr's tail kept for the error. A failed input stops the client before
    /// it sees the end of the stream (so a transactional load rolls back).
    ///
    /// # Errors
    /// `Input` when reading `input` fails; `Tool` when the client cannot start, exits
    /// non-zero, or is killed.
    pub fn feed_from(&self, input: &mut dyn Read) -> Result<DumpOutcome, FeedError> {
        let tool = self.tool();
        // A client loading a dump stays in coffer's group: Ctrl-C reaches it too, and it
        // must not see a clean end of input when coffer goes away.
        let mut child = self.spawn(Stdio::piped(), Stdio::null(), false)?;
        let stoppable = crate::shutdown::ChildGuard::register(child.id());
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::scope(|scope| {
            let tail = scope.spawn(move || stderr_tail(stderr));
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            let mut options_removed = false;
            let fed: Result<(), Side> = loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(Side::Read(e)),
                };
                if let Err(e) = stdin.write_all(&buf[..n]) {
                    break Err(Side::Write(e));
                }
                total += n as u64;
                // A client reads its options, then connects, and only then reads its input:
                // once more than the pipe holds has gone in, the option file has been read.
                if total >= OPTIONS_READ_AFTER
                    && let Some(path) = &self.remove_after_start
                    && !options_removed
                {
                    options_removed = true;
                    let _ = std::fs::remove_file(path);
                }
            };
            if let Err(Side::Read(_)) = &fed {
                // Never let the client see an end of input it could take for the whole dump.
                let _ = child.kill();
            }
            drop(stdin);
            stoppable.release_when_exited();
            let status = child.wait();
            let stderr = tail.join().unwrap_or_default();
            let status = status.map_err(|e| DumpError::Read(e, tool.clone()))?;
            if let Err(Side::Read(e)) = fed {
                return Err(FeedError::Input(e));
            }
            if !status.success() {
                return Err(failed(tool, status, stderr).into());
            }
            if let Err(Side::Write(e)) = fed {
                return Err(DumpError::Feed(e, tool).into());
            }
            Ok(DumpOutcome {
                bytes: total,
                stderr,
            })
        })
    }
}

/// Reads a child's stderr to the end, keeping its last `STDERR_TAIL` bytes.
fn stderr_tail(mut stderr: impl Read) -> String {
    let mut tail = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
    let start = tail.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&tail[start..]).trim().to_string()
}

/// The first line a tool prints for `--version`, for the manifest; `None` if it cannot run.
pub fn tool_version(program: &std::path::Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or("").trim().to_string())
}

enum Side {
    Read(io::Error),
    Write(io::Error),
}

fn copy(from: &mut dyn Read, to: &mut dyn Write, started: &mut dyn FnMut()) -> Result<u64, Side> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Side::Read(e)),
        };
        if total == 0 {
            started();
        }
        to.write_all(&buf[..n]).map_err(Side::Write)?;
        total += n as u64;
    }
}

/// A tool that exited non-zero or was killed, with its stderr's tail.
fn failed(tool: String, status: ExitStatus, stderr: String) -> DumpError {
    DumpError::Failed {
        tool,
        status: describe(status),
        stderr: if stderr.is_empty() {
            "(nothing on stderr)".into()
        } else {
            stderr
        },
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> DumpCommand {
        DumpCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("SECRET_FOR_TEST".into(), SecretString::from("s3cr3t"))],
            stdin: None,
            remove_after_start: None,
        }
    }

    #[test]
    fn streams_stdout_and_passes_secrets_by_environment() {
        let mut out = Vec::new();
        let done = sh("printf 'a%.0s' $(seq 1 100000); printf \"$SECRET_FOR_TEST\"; echo note >&2")
            .run_into(&mut out)
            .unwrap();
        assert_eq!(done.bytes, 100_006);
        assert!(out.ends_with(b"as3cr3t"));
        assert_eq!(done.stderr, "note");
    }

    #[test]
    fn feeding_a_client_passes_every_byte_and_a_broken_input_stops_it() {
        let mut input: &[u8] = &[7u8; 1_000_000];
        let done = sh("wc -c > /dev/stderr").feed_from(&mut input).unwrap();
        assert_eq!(done.bytes, 1_000_000);
        assert_eq!(done.stderr, "1000000");
        // A client that fails says so with its stderr.
        let mut input: &[u8] = b"SELECT 1;";
        let err = sh("cat >/dev/null; echo 'ERROR 1064: syntax' >&2; exit 1")
            .feed_from(&mut input)
            .unwrap_err();
        assert!(err.to_string().contains("ERROR 1064"), "{err}");
        // An input that breaks is reported as the input's failure, and the client (which
        // would otherwise see a clean end of input) is killed, not left to commit.
        struct Broken(u32);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("part 3 is corrupted"));
                }
                self.0 -= 1;
                buf[..4].copy_from_slice(b"abcd");
                Ok(4)
            }
        }
        let marker = tempfile::NamedTempFile::new().unwrap();
        let script = format!(
            "cat >/dev/null && echo committed > {}",
            marker.path().display()
        );
        let err = sh(&script).feed_from(&mut Broken(3)).unwrap_err();
        assert!(matches!(err, FeedError::Input(_)), "{err}");
        assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "");
    }

    #[test]
    fn a_failing_or_killed_tool_fails_with_its_stderr_tail() {
        let mut out = Vec::new();
        let err = sh("echo partial; echo 'FATAL: password authentication failed' >&2; exit 1")
            .run_into(&mut out)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("exited with status 1") && msg.contains("password authentication failed"),
            "{msg}"
        );
        let err = sh("echo partial; kill -9 $$")
            .run_into(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("killed by signal 9"), "{err}");
        let err = DumpCommand {
            program: "/nonexistent/pg_dump".into(),
            args: vec![],
            env: vec![],
            stdin: None,
            remove_after_start: None,
        }
        .run_into(&mut out)
        .unwrap_err();
        assert!(matches!(err, DumpError::Spawn { .. }), "{err}");
    }
}
