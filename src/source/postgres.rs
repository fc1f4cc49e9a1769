//! A `postgres` source: `pg_dump` in plain SQL format, streamed from the child's stdout.
//!
//! The password reaches `pg_dump` as `PGPASSWORD` in its environment, never on its command
//! line; `--no-password` makes a missing or wrong one fail at once instead of prompting.

use std::ffi::OsString;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::process::{DumpCommand, DumpError, DumpOutcome};
use crate::secret::SecretRef;

/// Seconds `pg_dump` waits for a connection before giving up.
const CONNECT_TIMEOUT_SECS: &str = "15";

/// A PostgreSQL database to dump.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    pub url: String,
    pub password: Option<SecretRef>,
    pub no_owner: bool,
    pub dump_tool: PathBuf,
    /// A snapshot exported by coffer's own connection (`pg_export_snapshot()`), so the dump
    /// reads exactly what the manifest's row counts were read from.
    pub snapshot: Option<String>,
}

impl PostgresSource {
    /// The `pg_dump` invocation, with the password (if any) loaded into its environment.
    ///
    /// # Errors
    /// When the configured password file or variable cannot be read.
    pub fn command(&self) -> Result<DumpCommand, DumpError> {
        let mut args: Vec<OsString> = vec![
            "--format=plain".into(),
            "--no-password".into(),
            "--quote-all-identifiers".into(),
        ];
        if self.no_owner {
            args.push("--no-owner".into());
            args.push("--no-privileges".into());
        }
        if let Some(id) = &self.snapshot {
            args.push(format!("--snapshot={id}").into());
        }
        args.push(format!("--dbname={}", self.url).into());
        let mut env = vec![(
            "PGCONNECT_TIMEOUT".to_string(),
            SecretString::from(CONNECT_TIMEOUT_SECS),
        )];
        if let Some(secret) = &self.password {
            let password = secret.load().map_err(DumpError::Secret)?;
            env.push(("PGPASSWORD".to_string(), password));
        }
        Ok(DumpCommand {
            program: self.dump_tool.clone().into_os_string(),
            args,
            env,
            stdin: None,
            remove_after_start: None,
        })
    }

    /// `pg_dump --version`'s answer, for the manifest.
    pub fn tool_version(&self) -> Option<String> {
        crate::process::tool_version(&self.dump_tool)
    }

    /// Dumps the database into `out`.
    ///
    /// # Errors
    /// As `DumpCommand::run_into`.
    pub fn write_dump(&self, out: &mut dyn std::io::Write) -> Result<DumpOutcome, DumpError> {
        self.command()?.run_into(out)
    }
}
