//! A `mysql` source (MariaDB or MySQL): `mariadb-dump` (or `mysqldump`) streamed from the
//! child's stdout, with `--single-transaction --quick --routines --triggers --events
//! --hex-blob`.
//!
//! The password goes into a `[client]` option file, mode 0600, in a private temporary folder
//! (0700); the tool reads it (and only it) through `--defaults-file`, and the file is removed as
//! soon as the tool's output starts. It never appears on the command line.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use crate::database::DbUrl;
use crate::process::{DumpCommand, DumpError, DumpOutcome};
use crate::secret::SecretRef;

/// Writes a `[client]` option file holding `password` (0600) into a new private folder
/// (0700), removed when the returned guard drops; pass it as the tool's first argument,
/// `--defaults-file=PATH`, so the tool reads only it.
///
/// # Errors
/// When the folder or file cannot be made.
pub(crate) fn option_file(
    password: Option<&SecretString>,
) -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let private = tempfile::Builder::new().prefix("coffer-mysql-").tempdir()?;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))?;
    let cnf = private.path().join("client.cnf");
    let mut text = String::from("[client]\n");
    if let Some(password) = password {
        // Escapes MariaDB's option-file parser understands inside double quotes.
        let escaped = password
            .expose_secret()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        text.push_str(&format!("password=\"{escaped}\"\n"));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&cnf)?;
    file.write_all(text.as_bytes())?;
    Ok((private, cnf))
}

/// `--protocol`, `--host`/`--port` or `--socket`, and `--user` for a MariaDB/MySQL tool.
pub(crate) fn connection_args(url: &DbUrl) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    match &url.socket {
        Some(socket) => {
            args.push("--protocol=SOCKET".into());
            let mut a = OsString::from("--socket=");
            a.push(socket);
            args.push(a);
        }
        None => {
            args.push("--protocol=TCP".into());
            args.push(format!("--host={}", url.host).into());
            args.push(format!("--port={}", url.port).into());
        }
    }
    args.push(format!("--user={}", url.user).into());
    args
}

/// The first of `names` found on PATH (or the first name, to fail with its name).
pub(crate) fn first_on_path(names: &[&str]) -> PathBuf {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    PathBuf::from(names.iter().find(|n| found(n)).unwrap_or(&names[0]))
}

/// A MariaDB/MySQL database to dump.
#[derive(Debug, Clone)]
pub struct MysqlSource {
    pub url: DbUrl,
    pub password: Option<SecretRef>,
    /// `None`: `mariadb-dump`, or `mysqldump` where that is missing.
    pub dump_tool: Option<PathBuf>,
}

impl MysqlSource {
    /// The dump tool to run.
    pub fn tool(&self) -> PathBuf {
        match &self.dump_tool {
            Some(t) => t.clone(),
            None => first_on_path(&["mariadb-dump", "mysqldump"]),
        }
    }

    /// The tool's `--version` answer, for the manifest.
    pub fn tool_version(&self) -> Option<String> {
        crate::process::tool_version(&self.tool())
    }

    /// Dumps the database into `out`.
    ///
    /// # Errors
    /// When the password cannot be read or the option file written, and as
    /// `DumpCommand::run_into`.
    pub fn write_dump(&self, out: &mut dyn Write) -> Result<DumpOutcome, DumpError> {
        let tool = self.tool();
        let setup_err = |source: std::io::Error| DumpError::Spawn {
            tool: tool.display().to_string(),
            source,
        };
        let password = match &self.password {
            Some(secret) => Some(secret.load().map_err(DumpError::Secret)?),
            None => None,
        };
        let (private, cnf) = option_file(password.as_ref()).map_err(setup_err)?;
        // --defaults-file must come first; it makes the tool read *only* this file, so no
        // ~/.my.cnf or /etc/mysql option (another password, `no-data`, `ignore-table`) can
        // change what is dumped.
        let mut args: Vec<OsString> = vec![format!("--defaults-file={}", cnf.display()).into()];
        for a in [
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            // 4-byte UTF-8 (emoji) survives only as utf8mb4; older mysqldumps default to utf8mb3.
            "--default-character-set=utf8mb4",
        ] {
            args.push(a.into());
        }
        args.extend(connection_args(&self.url));
        // DbUrl::parse allows only [A-Za-z0-9_$-] names not starting with '-'.
        args.push(self.url.database.clone().into());
        let result = DumpCommand {
            program: tool.into_os_string(),
            args,
            env: Vec::new(),
            stdin: None,
            remove_after_start: Some(cnf.clone()),
        }
        .run_into(out);
        drop(private);
        result
    }
}
