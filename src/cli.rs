//! Command-line definitions. No logic: `main` maps each subcommand to `commands::*`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coffer", version, about = "Encrypted backups that restore", long_about = None)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "COFFER_CONFIG",
        default_value = "/etc/coffer/coffer.toml"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up every configured source into a new snapshot.
    Backup(BackupArgs),
    /// List the snapshots in the store, newest first.
    List(ListArgs),
    /// Check stored parts against their manifest (with --deep, decrypt and read everything).
    Verify(VerifyArgs),
    /// Restore a snapshot's files into a folder.
    Restore(RestoreArgs),
    /// Write a new age identity file and print its recipient (public key).
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the snapshots as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshot id, or "latest".
    #[arg(default_value = "latest", conflicts_with = "all")]
    pub snapshot: String,
    /// Verify every snapshot.
    #[arg(long)]
    pub all: bool,
    /// Also decrypt, decompress and read every entry (needs the identity).
    #[arg(long)]
    pub deep: bool,
    /// Identity file (default: encryption.identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, or "latest".
    pub snapshot: String,
    /// Folder to restore into (created if missing; must be empty unless --force). With several
    /// sources, each goes into DIR/<source>.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Restore only this source.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Write into a folder that is not empty, replacing files of the same name.
    #[arg(long)]
    pub force: bool,
    /// Identity file (default: encryption.identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// For a frappe preset (--source NAME): write the files `bench --site SITE restore`
    /// takes (*-database.sql.gz, *-files.tar, *-private-files.tar, *-site_config_backup.json).
    #[arg(long, value_name = "SITE", requires = "source")]
    pub bench: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the identity (mode 0600; never overwritten).
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
}
