//! `coffer init`: writes a working, commented config for a folder, a Frappe site or a whole
//! bench (one `frappe` source per site), makes the host's signing key, and runs the checks of
//! `coffer check`, so what is left to do is printed, not discovered at 02:00.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::InitArgs;

/// What `--store` names.
enum StoreChoice {
    Local(PathBuf),
    Gdrive(String),
}

fn parse_store(s: &str) -> anyhow::Result<StoreChoice> {
    match s.split_once(':') {
        Some(("local", path)) if !path.is_empty() => Ok(StoreChoice::Local(absolute(path)?)),
        Some(("gdrive", id)) if !id.is_empty() && !id.contains('"') => {
            Ok(StoreChoice::Gdrive(id.to_string()))
        }
        _ => bail!(
            "--store {s}: give local:/path/to/store or gdrive:SHARED_DRIVE_ID (docs/GOOGLE_DRIVE.md)"
        ),
    }
}

fn absolute(path: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
    std::path::absolute(path.as_ref())
        .with_context(|| format!("resolving {}", path.as_ref().display()))
}

/// A TOML string (paths may hold quotes or backslashes).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The sites of a bench now, by name: at least one.
fn bench_sites(bench: &Path) -> anyhow::Result<Vec<String>> {
    let sites = bench.join("sites");
    let found = crate::source::frappe::bench_sites(bench).with_context(|| {
        format!(
            "reading {} (is {} a bench?)",
            sites.display(),
            bench.display()
        )
    })?;
    if found.is_empty() {
        bail!(
            "{} holds no site (a folder with a site_config.json)",
            sites.display()
        );
    }
    Ok(found.into_iter().map(|(name, _)| name).collect())
}

/// A source name from a site or folder name: `erp.example.com` → `erp_example_com`.
fn source_name(name: &str) -> String {
    crate::source::frappe::site_source_name(name)
}

/// The `[[source]]` sections for what `args` names.
fn sources(args: &InitArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    if let Some(bench) = &args.frappe_bench {
        let bench = absolute(bench)?;
        let sites = bench_sites(&bench)?;
        let name = bench
            .file_name()
            .and_then(|n| n.to_str())
            .map_or_else(|| "bench".to_string(), source_name);
        let _ = write!(
            out,
            "\n# The whole bench: every site under sites/ (found again at each backup, so a\n\
             # site added later is backed up with no change here; one that disappears is\n\
             # alerted) as its database and its files, plus the bench's own configs and the\n\
             # git commit of each app (apps.json). Sites now: {}.\n\
             [[source]]\nname = {}\ntype = \"frappe-bench\"\npath = {}\n\
             # exclude_sites = [\"test.localhost\"]\n",
            sites.join(", "),
            quoted(&name),
            quoted(&bench.display().to_string())
        );
    }
    if let Some(site) = &args.site {
        let site = absolute(site)?;
        if !site.join("site_config.json").is_file() {
            bail!(
                "--site {}: no site_config.json there (give sites/<site> of a bench)",
                site.display()
            );
        }
        let name = site
            .file_name()
            .and_then(|n| n.to_str())
            .map_or_else(|| "site".to_string(), source_name);
        let _ = write!(
            out,
            "\n# A Frappe/ERPNext site: its database and its files (public, private,\n\
             # site_config.json), read from its site_config.json at each backup.\n\
             [[source]]\nname = {}\ntype = \"frappe\"\npath = {}\n",
            quoted(&name),
            quoted(&site.display().to_string())
        );
    }
    for dir in &args.dir {
        let dir = absolute(dir)?;
        if !dir.is_dir() {
            bail!("--dir {}: not a folder", dir.display());
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .map_or_else(|| "files".to_string(), source_name);
        let _ = write!(
            out,
            "\n# A folder: a full every full_every (7d), what changed between.\n\
             [[source]]\nname = {}\ntype = \"directory\"\npath = {}\n\
             # exclude = [\"*.tmp\", \"cache/**\"]\n",
            quoted(&name),
            quoted(&dir.display().to_string())
        );
    }
    if out.is_empty() {
        bail!("name what to back up: --frappe-bench DIR, --site DIR or --dir PATH");
    }
    Ok(out)
}

/// The config text.
fn config_text(args: &InitArgs, recipients: &[String], state_dir: &Path) -> anyhow::Result<String> {
    let store = match parse_store(&args.store)? {
        StoreChoice::Local(path) => format!(
            "[store]\ntype = \"local\"\npath = {}   # the store root (another disk or host: \
             a copy of the backups that survives this one)\n",
            quoted(&path.display().to_string())
        ),
        StoreChoice::Gdrive(id) => format!(
            "[store]\ntype = \"gdrive\"\ndrive_id = {}   # the Shared Drive\nfolder = \"coffer\"\n\
             # TO DO: a service account that is a member of the Shared Drive\n\
             # (docs/GOOGLE_DRIVE.md), its key file here:\n\
             service_account_key_file = \"/etc/coffer/drive-key.json\"\n",
            quoted(&id)
        ),
    };
    let recipients: Vec<String> = recipients.iter().map(|r| quoted(r)).collect();
    Ok(format!(
        "# coffer configuration, written by `coffer init`. Every key this build accepts is in\n\
         # config/coffer.example.toml (docs/ in the package). `coffer check` checks it all.\n\
         state_dir = {state}\n\
         \n\
         [encryption]\n\
         # Public keys only: this host cannot read its own backups. Keep the identities (private\n\
         # keys) off this host, on the hosts that restore and drill.\n\
         recipients = [{recipients}]\n\
         # The backup host's signing key is made in state_dir; put its public line (printed by\n\
         # `coffer init` and `coffer check`) in trusted_signers on the hosts that restore.\n\
         \n\
         {store}\n\
         # What `coffer prune` (run after every backup of the daemon) keeps.\n\
         [retention]\n\
         keep_daily = 7\n\
         keep_weekly = 4\n\
         keep_monthly = 6\n\
         \n\
         # The daemon (`systemctl enable --now coffer`): a backup every night, then a prune;\n\
         # the newest snapshot's parts checked every week.\n\
         [jobs.backup]\n\
         schedule = \"0 0 2 * * *\"\n\
         \n\
         [jobs.verify]\n\
         schedule = \"0 30 4 * * Sun\"\n\
         \n\
         # TO DO: who hears about a failed or missing backup (`coffer alert test` tries them).\n\
         # [alerts]\n\
         # max_age = \"26h\"\n\
         # [alerts.email]\n\
         # to = [\"ops@example.com\"]\n\
         # from = \"coffer@example.com\"\n\
         # smtp_host = \"smtp.example.com\"\n\
         # tls = \"starttls\"\n\
         # username = \"coffer\"\n\
         # password_file = \"/etc/coffer/smtp-password\"\n\
         # [alerts.sentry]\n\
         # dsn_file = \"/etc/coffer/sentry-dsn\"\n\
         # [alerts.heartbeat]\n\
         # url_file = \"/etc/coffer/heartbeat-url\"\n\
         {sources}",
        state = quoted(&state_dir.display().to_string()),
        recipients = recipients.join(", "),
        sources = sources(args)?,
    ))
}

pub fn run(config_path: &Path, args: &InitArgs) -> anyhow::Result<ExitCode> {
    if config_path.exists() && !args.force {
        bail!(
            "{} exists; coffer init never overwrites a config (pass --force to replace it, or \
             --config PATH to write another)",
            config_path.display()
        );
    }
    let mut recipients = args.recipient.clone();
    for r in &recipients {
        r.parse::<age::x25519::Recipient>()
            .map_err(|e| anyhow::anyhow!("--recipient {r}: not an age public key ({e})"))?;
    }
    if let Some(file) = &args.generate_key {
        let recipient = crate::keys::generate(file)?;
        eprintln!(
            "made the identity (private key) {} (0600) for {recipient}.\n\
             MOVE IT OFF THIS HOST NOW (a password manager, the restore host, a safe): with it, \
             anyone reads every backup; without it, no one can, you included",
            file.display()
        );
        recipients.push(recipient.to_string());
    }
    if recipients.is_empty() {
        bail!(
            "give --recipient age1… (the public key of an identity kept elsewhere; `coffer keygen` \
             makes one) or --generate-key FILE"
        );
    }
    let state_dir = absolute(&args.state_dir)?;
    let text = config_text(args, &recipients, &state_dir)?;
    // Checked as `coffer` will read it, before it is written.
    crate::config::Config::parse(&text, config_path)
        .context("the config coffer init made does not load (a bug: please report it)")?;
    if let Some(dir) = config_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(config_path, &text)?;
    println!("wrote {}", config_path.display());
    let config = super::load_config(config_path)?;
    // The state folder is private (the lock and a backup make it so too).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let (key, made) = crate::signing::SigningKey::load_or_create(&config.signing_key)
        .context("making the host's signing key")?;
    give_to_state_owner(&config.state_dir)?;
    println!(
        "{} the signing key {} ({}): on every host that restores or drills, put this line in\n\
         encryption.trusted_signers:\n  \"{}\"",
        if made { "made" } else { "kept" },
        config.signing_key,
        key.public().fingerprint(),
        key.public().openssh()
    );
    println!("\nchecking it (coffer check):");
    let checked = super::check::run(config_path, &crate::cli::CheckArgs { json: false });
    give_to_state_owner(&config.state_dir)?;
    println!("\nleft to do:");
    let mut todo = Vec::new();
    if args.generate_key.is_some() {
        todo.push("move the identity file off this host (keep two copies, apart)".to_string());
    }
    if config.alerts.email.is_none()
        && config.alerts.sentry.is_none()
        && config.alerts.heartbeat.is_none()
    {
        todo.push(format!(
            "fill in [alerts] in {} (email, Sentry or a heartbeat): a failed backup must reach \
             someone; then `coffer alert test`",
            config_path.display()
        ));
    }
    if args.store.starts_with("gdrive:") {
        todo.push("put the Drive service account's key where service_account_key_file says (docs/GOOGLE_DRIVE.md)".into());
    }
    todo.push(
        "put the trusted_signers line above in the config of the hosts that restore and drill"
            .into(),
    );
    todo.push(
        "start the daemon: systemctl enable --now coffer (or run `coffer backup` now)".into(),
    );
    for (n, t) in todo.iter().enumerate() {
        println!("  {}. {t}", n + 1);
    }
    checked
}

/// Run as root for a state folder another user owns (the package's `coffer`): what init made
/// there (the signing key, and whatever `check` leaves) is handed to that user, or the daemon,
/// running as it, could not read its own key.
fn give_to_state_owner(state_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let owner = std::fs::metadata(state_dir)?;
    if owner.uid() == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir(state_dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        // Only plain files and folders with one name: a hard link planted in a folder its
        // owner controls must never hand them a file of root's from elsewhere.
        let plain = meta.is_file() && meta.nlink() == 1 || meta.is_dir();
        if meta.uid() == 0 && plain {
            std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid()))
                .with_context(|| format!("handing {} to uid {}", path.display(), owner.uid()))?;
        }
    }
    Ok(())
}

/// Writes the config 0640 (it names files holding secrets, never the secrets themselves):
/// readable by the `coffer` group the package makes, not by everyone.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    // In a folder of the daemon's group (the package's /etc/coffer, root:coffer), that group
    // reads it, as the package's own starter.
    if rustix::process::geteuid().is_root()
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(dir)?.gid();
        if gid != 0 {
            std::os::unix::fs::chown(path, Some(0), Some(gid))
                .with_context(|| format!("giving {} to group {gid}", path.display()))?;
        }
    }
    Ok(())
}
