//! Command-line definitions. No logic: `main` maps each subcommand to `commands::*`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "coffer", version, about = "Encrypted backups that restore", long_about = None, after_help = crate::exit::TABLE)]
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
    /// Restore a snapshot into a folder, or a database dump into a staging database.
    Restore(RestoreArgs),
    /// Write a new age identity file and print its recipient (public key); with --signing, a
    /// snapshot signing key and its public key.
    Keygen(KeygenArgs),
    /// Delete the named snapshots whatever their signature says: for snapshots planted in the
    /// store, and for unsigned ones prune never touches.
    Forget(ForgetArgs),
    /// Delete the snapshots the [retention] policy does not keep (--dry-run: only show).
    Prune(PruneArgs),
    /// Authorize a store once (Google Drive with a user's account: sign in through a browser).
    Auth(AuthArgs),
    /// Write a working, commented config (at --config) for a Frappe bench, a site or folders,
    /// make the host's signing key, and check it all.
    Init(InitArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    #[command(hide = true)]
    Man,
    /// Who ran what, when, on which snapshot and into which target (the audit trail of
    /// backups, restores, verifies, drills, prunes and sign-ins, by hand or by the daemon).
    History(HistoryArgs),
    /// Run the [jobs.*] of the config on their schedules (backup then prune, verify) until
    /// SIGTERM or SIGINT; for systemd (Type=notify).
    Daemon,
    /// Alert channels: `coffer alert test` sends a test message through each.
    Alert(AlertArgs),
    /// Restore a snapshot into the [drill] staging databases and folder, check it against
    /// the manifest, and report the recovery time and recovery point.
    Drill(DrillArgs),
    /// Show each job's last success, last failure, next run, and the newest snapshot's age.
    Status(StatusArgs),
    /// Check the config: state folder, store, identity, and every source (databases are
    /// connected to, dump tools run); reports every problem at once.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// If another job (a backup, a prune) is running, wait up to this long for it (e.g.
    /// 30m) instead of failing at once.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub wait: WaitFor,
    /// Take every folder source whole, as a new full, whatever `full_every` says.
    #[arg(long)]
    pub full: bool,
}

/// A `--wait` duration (`90s`, `10m`, `2h`).
#[derive(Debug, Clone, Copy)]
pub struct WaitFor(pub std::time::Duration);

impl std::str::FromStr for WaitFor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "0" || s == "0s" {
            return Ok(WaitFor(std::time::Duration::ZERO));
        }
        crate::config::parse_duration(s).map(WaitFor)
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// A Frappe bench: each site under its sites/ becomes a frappe source.
    #[arg(long, value_name = "DIR")]
    pub frappe_bench: Option<PathBuf>,
    /// One Frappe site folder (sites/<site>).
    #[arg(long, value_name = "DIR")]
    pub site: Option<PathBuf>,
    /// A plain folder (repeatable).
    #[arg(long, value_name = "PATH")]
    pub dir: Vec<PathBuf>,
    /// Where the backups go: local:/path or gdrive:SHARED_DRIVE_ID.
    #[arg(long, value_name = "local:PATH|gdrive:ID")]
    pub store: String,
    /// An age public key the backups are encrypted to (repeatable).
    #[arg(long, value_name = "age1…")]
    pub recipient: Vec<String>,
    /// Make a new identity (private key) in FILE (0600) and encrypt to it; move it off the
    /// host afterwards.
    #[arg(long, value_name = "FILE")]
    pub generate_key: Option<PathBuf>,
    /// The state folder (lock, run history, signing key, folder indexes).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/coffer")]
    pub state_dir: PathBuf,
    /// Replace an existing config.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Print the runs as JSON.
    #[arg(long)]
    pub json: bool,
    /// How far back (e.g. 7d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub since: WaitFor,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be kept (with the reasons) and pruned; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// If another job is running, wait up to this long for it.
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub wait: WaitFor,
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub service: AuthService,
}

#[derive(Debug, Subcommand)]
pub enum AuthService {
    /// Sign in to Google Drive and store the token (0600) in the store's token_file.
    Gdrive {
        /// Local port the browser is sent back to (default: any free one); fix it to forward
        /// it over ssh -L from the machine with the browser.
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AlertArgs {
    #[command(subcommand)]
    pub action: AlertAction,
}

#[derive(Debug, Subcommand)]
pub enum AlertAction {
    /// Send a test message through every configured channel (email, Sentry, heartbeat) and
    /// report each result.
    Test {
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Snapshot id, or "latest".
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Identity file (default: encryption.identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// If another job is running, wait up to this long for it (e.g. 30m).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub wait: WaitFor,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also accept a snapshot without a signature (made before coffer signed its snapshots): only for
    /// snapshots you know are yours. A signature that does not verify is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
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
    /// Also accept a snapshot without a signature (made before coffer signed its snapshots): only for
    /// snapshots you know are yours. A signature that does not verify is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, or "latest".
    pub snapshot: String,
    /// Folder to restore into (created if missing; must be empty unless --force). With several
    /// sources, each goes into DIR/<source>; a database dump becomes DIR/<source>.sql.
    #[arg(long, value_name = "DIR", required_unless_present = "db_url")]
    pub to: Option<PathBuf>,
    /// Load a database source's dump into this (staging) database instead, then compare its
    /// tables and row counts with the backup's: postgres://user@host:5432/db,
    /// mysql://user@host:3306/db or sqlite:///path/file.db (no password in the url).
    #[arg(
        long,
        value_name = "URL",
        requires = "source",
        conflicts_with_all = ["to", "bench"]
    )]
    pub db_url: Option<String>,
    /// With --db-url: create the database if it does not exist.
    #[arg(long, requires = "db_url")]
    pub create: bool,
    /// With --db-url: restore even into the database of a configured source (production).
    #[arg(long, requires = "db_url")]
    pub overwrite_source_database: bool,
    /// With --db-url: the database password, from this file.
    #[arg(
        long,
        value_name = "FILE",
        requires = "db_url",
        conflicts_with = "db_password_env"
    )]
    pub db_password_file: Option<PathBuf>,
    /// With --db-url: the database password, from this environment variable.
    #[arg(long, value_name = "VAR", requires = "db_url")]
    pub db_password_env: Option<String>,
    /// With --db-url: the client that loads the dump (default psql, mariadb (or mysql),
    /// sqlite3).
    #[arg(long, value_name = "PATH", requires = "db_url")]
    pub client: Option<PathBuf>,
    /// Restore only this source.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Write into a folder that is not empty, replacing files of the same name; with
    /// --db-url, drop and re-create a staging database that is not empty.
    #[arg(long)]
    pub force: bool,
    /// Identity file (default: encryption.identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// For a frappe preset (--source NAME) or a site of a frappe-bench (found by its name):
    /// write the files `bench --site SITE restore` takes (*-database.sql.gz, *-files.tar,
    /// *-private-files.tar, *-site_config_backup.json).
    #[arg(long, value_name = "SITE")]
    pub bench: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also accept a snapshot without a signature (made before coffer signed its snapshots): only for
    /// snapshots you know are yours. A signature that does not verify is refused regardless.
    #[arg(long)]
    pub allow_unsigned: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (mode 0600; never overwritten).
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Make an Ed25519 snapshot signing key (OpenSSH format, for [signing] key_file) instead
    /// of an age identity; its public key goes to FILE.pub and to stdout.
    #[arg(long)]
    pub signing: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Snapshot ids to delete.
    #[arg(required = true, value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Also delete a snapshot signed by a trusted key (retention, `coffer prune`, is the
    /// usual way to remove those).
    #[arg(long)]
    pub force: bool,
    /// Print what was deleted as JSON.
    #[arg(long)]
    pub json: bool,
}
