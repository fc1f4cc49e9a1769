//! `coffer check`: is everything this config needs there and reachable? Every check runs,
//! and every problem is reported at once, each with what to do.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use serde::Serialize;

use super::load_config;
use crate::cli::CheckArgs;
use crate::config::{Config, SecretRef, SourceConfig, SourceKind};
use crate::database::Database;
use crate::source::MysqlSource;
use crate::store;

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `store`, `state_dir`, `identity`, `source 'db'`, ….
    pub check: String,
    pub ok: bool,
    /// What was found, or what is wrong and what to do.
    pub detail: String,
}

fn outcome(check: impl Into<String>, result: anyhow::Result<String>) -> Check {
    let check = check.into();
    match result {
        Ok(detail) => Check {
            check,
            ok: true,
            detail,
        },
        Err(e) => Check {
            check,
            ok: false,
            detail: crate::text::error_chain(&e),
        },
    }
}

/// Runs every check of `config`.
pub fn check(config: &Config) -> Vec<Check> {
    let mut checks = vec![
        outcome("state_dir", check_state_dir(&config.state_dir)),
        outcome("store", check_store(config)),
        outcome("signing", check_signing(config)),
        outcome("trusted_signers", check_trusted(config)),
    ];
    if let Some(path) = &config.encryption.identity_file {
        checks.push(outcome("identity", check_identity(config, path)));
    }
    for s in &config.sources {
        let preset = match s.kind {
            SourceKind::Frappe { .. } => Some("frappe"),
            SourceKind::FrappeBench { .. } => Some("frappe-bench"),
            _ => None,
        };
        match s.expanded() {
            Ok(parts) => {
                for p in parts {
                    let name = if let Some(kind) = preset {
                        format!("source '{}' (of {kind} '{}')", p.name, s.name)
                    } else {
                        format!("source '{}'", p.name)
                    };
                    checks.push(outcome(name, check_source(&p)));
                }
            }
            Err(e) => checks.push(outcome(format!("source '{}'", s.name), Err(anyhow!(e)))),
        }
    }
    // The drill set-up, on a host that drills (it has a [jobs.drill] or staging databases).
    let drills = !config.drill.databases.is_empty()
        || config
            .jobs
            .iter()
            .any(|j| j.kind == crate::schedule::JobKind::Drill);
    if drills {
        for (name, result) in crate::drill::check_setup(config) {
            checks.push(outcome(name, result));
        }
    }
    for (name, result) in crate::alert::Alerts::from_config(config).check() {
        checks.push(outcome(
            format!("alerts.{name}"),
            result.map_err(|e| anyhow!(e)),
        ));
    }
    checks
}

fn check_state_dir(dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            anyhow!(
                "cannot create {}: {e}; create it (mode 0700), owned by the user coffer runs as",
                dir.display()
            )
        })?;
    tempfile::tempfile_in(dir).map_err(|e| {
        anyhow!(
            "cannot write in {}: {e}; give the user coffer runs as write access",
            dir.display()
        )
    })?;
    let meta = std::fs::metadata(dir)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(anyhow!(
            "{} is mode {mode:03o}: it holds the signing key, the lock and the run history, so \
             only its owner may use it; chmod 700 it",
            dir.display()
        ));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(anyhow!(
            "{} belongs to uid {}, not to the user coffer runs as (uid {}); chown it",
            dir.display(),
            meta.uid(),
            rustix::process::geteuid().as_raw()
        ));
    }
    Ok(format!("{} is writable, mode {mode:03o}", dir.display()))
}

/// The host's signing key: readable, and what to do with its public half.
fn check_signing(config: &Config) -> anyhow::Result<String> {
    match crate::signing::SigningKey::load(&config.signing_key)? {
        Some(key) => {
            let public = key.public();
            Ok(format!(
                "snapshots are signed with {} ({}); on the hosts that restore and drill, \
                 encryption.trusted_signers holds \"{}\"",
                public.fingerprint(),
                config.signing_key,
                public.openssh()
            ))
        }
        None if config.sources.is_empty() => Ok(format!(
            "no signing key ({} does not exist): this host makes no backups",
            config.signing_key
        )),
        None => Ok(format!(
            "{} does not exist yet: the first backup makes it and prints its public key",
            config.signing_key
        )),
    }
}

/// The keys this host trusts: without one, every reader refuses every snapshot.
fn check_trusted(config: &Config) -> anyhow::Result<String> {
    let trusted = config.trusted();
    if trusted.is_empty() {
        if !config.sources.is_empty()
            && matches!(config.signing_key, crate::signing::KeySource::Default(_))
        {
            return Ok(
                "this host's own key, once the first backup has made it (add \
                 encryption.trusted_signers for snapshots of other hosts)"
                    .into(),
            );
        }
        return Err(anyhow!(
            "{}; until then restore, verify, drill and prune refuse every snapshot",
            crate::snapshot::SnapshotError::NoTrustedKey
        ));
    }
    let names: Vec<String> = trusted
        .signers()
        .iter()
        .map(|s| format!("{} ({})", crate::text::Printable(s.name()), s.fingerprint()))
        .collect();
    Ok(format!(
        "snapshots signed by {} are trusted",
        names.join(", ")
    ))
}

/// Writes, reads back and deletes a small object.
fn check_store(config: &Config) -> anyhow::Result<String> {
    let store = store::open(&config.store).map_err(|e| anyhow!("cannot open the store: {e}"))?;
    let key = format!("coffer-check-{:016x}", rand::random::<u64>());
    let payload = b"coffer check\n";
    store::put_bytes(store.as_ref(), &key, payload)
        .map_err(|e| anyhow!("cannot write to {store}: {e}"))?;
    let back = store::get_bytes(store.as_ref(), &key);
    let deleted = store.delete(&key);
    match back {
        Ok(b) if b == payload => {}
        Ok(_) => return Err(anyhow!("{store} gave back other bytes than were written")),
        Err(e) => return Err(anyhow!("cannot read back from {store}: {e}")),
    }
    deleted.map_err(|e| anyhow!("cannot delete from {store}: {e}"))?;
    store
        .list("snapshots/")
        .map_err(|e| anyhow!("cannot list {store}: {e}"))?;
    let mut detail = format!("{store}: write, read back, list and delete work");
    if let Some(skew) = store.clock_skew()? {
        let secs = skew.num_seconds();
        if secs.abs() >= 5 * 60 {
            return Err(anyhow!(
                "this host's clock is {} s {} the store's: S3 refuses requests more than 15 \
                 minutes off, and signed snapshots carry the time; fix the time (timedatectl, \
                 NTP)",
                secs.abs(),
                if secs > 0 { "ahead of" } else { "behind" }
            ));
        }
        detail.push_str(&format!(
            "; clock within {} s of the store's",
            secs.abs().max(1)
        ));
    }
    if let Some((limit, usage)) = store.space()? {
        match limit {
            Some(limit) => detail.push_str(&format!(
                "; {} free of {}",
                super::human_bytes(limit.saturating_sub(usage)),
                super::human_bytes(limit)
            )),
            None => detail.push_str(&format!("; {} used, no limit", super::human_bytes(usage))),
        }
    }
    Ok(detail)
}

/// Encrypts a few bytes to the configured recipients and decrypts them with the identity.
fn check_identity(config: &Config, path: &Path) -> anyhow::Result<String> {
    let ids = crate::keys::load_identities(path)?;
    let recipients: Vec<&dyn age::Recipient> = config
        .encryption
        .recipients
        .iter()
        .map(|r| r as &dyn age::Recipient)
        .collect();
    let mut sealed = Vec::new();
    let mut w =
        age::Encryptor::with_recipients(recipients.into_iter())?.wrap_output(&mut sealed)?;
    w.write_all(b"coffer")?;
    w.finish()?;
    let decryptor = age::Decryptor::new_buffered(&sealed[..])?;
    let mut plain = Vec::new();
    decryptor
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|_| {
            anyhow!(
                "no identity in {} matches encryption.recipients: it cannot restore new \
                 backups; add its public key to recipients, or point identity_file at the right \
                 key",
                path.display()
            )
        })?
        .read_to_end(&mut plain)?;
    Ok(format!(
        "{} decrypts what is encrypted to the recipients",
        path.display()
    ))
}

fn check_source(s: &SourceConfig) -> anyhow::Result<String> {
    match &s.kind {
        SourceKind::Directory { path, only, .. } => {
            let meta = std::fs::metadata(path)
                .map_err(|e| anyhow!("cannot read {}: {e}; check the path", path.display()))?;
            if !meta.is_dir() {
                return Err(anyhow!("{} is not a folder", path.display()));
            }
            std::fs::read_dir(path).map_err(|e| {
                anyhow!(
                    "cannot list {}: {e}; give the user coffer runs as read access",
                    path.display()
                )
            })?;
            let missing: Vec<String> = only
                .iter()
                .filter(|p| !path.join(p).exists())
                .map(|p| p.display().to_string())
                .collect();
            if missing.is_empty() {
                Ok(format!("{} is readable", path.display()))
            } else {
                Ok(format!(
                    "{} is readable ({} not there yet: nothing to back up in it)",
                    path.display(),
                    missing.join(", ")
                ))
            }
        }
        SourceKind::Frappe { .. } | SourceKind::FrappeBench { .. } => {
            Err(anyhow!("a frappe preset left unexpanded"))
        }
        kind => check_database(kind),
    }
}

fn check_database(kind: &SourceKind) -> anyhow::Result<String> {
    let (tool, version) = match kind {
        SourceKind::Postgres { dump_tool, .. } => {
            (dump_tool.clone(), crate::process::tool_version(dump_tool))
        }
        SourceKind::Sqlite { path, dump_tool } => (
            dump_tool.clone().unwrap_or_else(|| "coffer".into()),
            crate::source::SqliteSource {
                path: path.clone(),
                dump_tool: dump_tool.clone(),
            }
            .tool_version()
            .1,
        ),
        SourceKind::Mysql {
            url,
            password,
            dump_tool,
        } => {
            let my = MysqlSource {
                url: url.clone(),
                password: password.clone(),
                dump_tool: dump_tool.clone(),
            };
            (my.tool(), my.tool_version())
        }
        _ => return Err(anyhow!("not a database source")),
    };
    let mut problems = Vec::new();
    let version = version.unwrap_or_else(|| {
        problems.push(format!(
            "cannot run {} --version: install it (postgresql-client, mariadb-client, sqlite3) \
             or set dump_tool",
            tool.display()
        ));
        String::new()
    });
    let (address, password) = kind
        .database()
        .ok_or_else(|| anyhow!("not a database source"))?;
    let mut server = String::new();
    match password.map(SecretRef::load).transpose() {
        Err(e) => problems.push(format!("cannot read the password: {e}")),
        Ok(password) => {
            let connected = Database {
                address: address.clone(),
                password,
            }
            .connect()
            .and_then(|mut session| {
                let v = session.server_version();
                let tables = session.table_count();
                session.close();
                Ok((v?, tables?))
            });
            match connected {
                Ok((v, tables)) => server = format!("{v}, {tables} tables"),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    if problems.is_empty() {
        Ok(format!("{address}: {server}; {version}"))
    } else {
        Err(anyhow!(problems.join("; ")))
    }
}

pub fn run(config_path: &Path, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let checks = check(&config);
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.check,
                crate::text::PrintableLines(&c.detail)
            );
        }
        if failed == 0 {
            println!(
                "all {} checks passed ({})",
                checks.len(),
                config.path.display()
            );
        } else {
            println!("{failed} of {} checks failed", checks.len());
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
