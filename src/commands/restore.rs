//! `coffer restore ID|latest --to DIR [--source NAME] [--force]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use super::{human_bytes, load_config, load_identities};
use crate::cli::RestoreArgs;
use crate::restore::{LoadedDatabase, Restored, load_database, restore_to_folder};
use crate::snapshot::Manifest;
use crate::store::{self, Store};

pub fn run(config_path: &Path, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    // Recorded with who ran it and where the data went (a database url without its password).
    let target = match (&args.db_url, &args.to) {
        (Some(url), _) => Some(crate::database::redact_url(url)),
        (None, Some(to)) => Some(to.display().to_string()),
        (None, None) => None,
    };
    crate::job::audited(&config, "restore", target, |snapshot| {
        restore(&config, args, snapshot)
    })
}

/// The restore itself; names the snapshot in `snapshot` once it is resolved.
fn restore(
    config: &crate::config::Config,
    args: &RestoreArgs,
    snapshot: &mut Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = store::open(&config.store)?;
    let (identities, identity_file) = load_identities(config, args.identity.as_deref())?;
    let m = super::resolve_snapshot(config, store.as_ref(), &args.snapshot, args.allow_unsigned)?;
    *snapshot = Some(m.id.to_string());
    // A differential's full is found (and trusted) before anything is written.
    // (--bench names a preset, whose files are '<name>-files': every base is read.)
    let only = args.source.as_deref().filter(|_| args.bench.is_none());
    let bases = super::read_bases(config, store.as_ref(), &m, only, args.allow_unsigned)?;
    let to = match (&args.db_url, &args.to) {
        (Some(url), _) => {
            return restore_to_database(
                config,
                store.as_ref(),
                &m,
                args,
                url,
                &identities,
                &identity_file,
            );
        }
        (None, Some(to)) => to.clone(),
        (None, None) => bail!("give --to DIR (or --db-url URL with --source NAME)"),
    };
    if let Some(site) = &args.bench {
        // Without --source: the site of a frappe-bench the snapshot holds.
        let name = match &args.source {
            Some(name) => name.clone(),
            None => crate::restore::site_preset(&m, site)?,
        };
        let name = &name;
        let files = crate::restore::write_bench_layout(
            store.as_ref(),
            &m,
            &bases,
            name,
            site,
            &to,
            args.force,
            &crate::verify::DeepKeys {
                identities: &identities,
                identity_file: &identity_file,
            },
        )?;
        if args.json {
            let out = serde_json::json!({
                "id": m.id,
                "database": files.database,
                "public_files": files.public_files,
                "private_files": files.private_files,
                "site_config": files.site_config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "restored {} '{name}' for bench into {}:",
                m.id,
                to.display()
            );
            for f in [&files.database, &files.public_files, &files.private_files] {
                println!("  {}", f.display());
            }
            if let Some(f) = &files.site_config {
                println!("  {}", f.display());
            }
            println!(
                "then, in the bench folder:\n  bench --site {site} restore {} \\\n    \
                 --with-public-files {} \\\n    --with-private-files {}",
                files.database.display(),
                files.public_files.display(),
                files.private_files.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Restored {
        dumps: dumped,
        folders: results,
        seconds,
    } = restore_to_folder(
        store.as_ref(),
        &m,
        &bases,
        args.source.as_deref(),
        &to,
        args.force,
        &identities,
        &identity_file,
    )?;
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(s, dir, sum)| {
                serde_json::json!({
                    "source": s.name,
                    "target": dir,
                    "files": sum.counts.files,
                    "directories": sum.counts.directories,
                    "symlinks": sum.counts.symlinks,
                    "file_bytes": sum.file_bytes,
                    "owners_not_restored": sum.owners_not_restored,
                })
            })
            .collect();
        let dumps: Vec<_> = dumped
            .iter()
            .map(|(s, file, bytes)| {
                serde_json::json!({"source": s.name, "kind": s.kind, "file": file, "bytes": bytes})
            })
            .collect();
        let out = serde_json::json!({
            "id": m.id,
            "seconds": seconds,
            "sources": rows,
            "dumps": dumps,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (s, file, bytes) in &dumped {
            println!(
                "restored {} '{}' ({} dump) to {}: {}",
                m.id,
                s.name,
                s.kind,
                file.display(),
                human_bytes(*bytes)
            );
        }
        for (s, dir, sum) in &results {
            println!(
                "restored {} '{}' to {}: {} files, {} directories, {} symlinks, {} in {seconds:.1} s",
                m.id,
                s.name,
                dir.display(),
                sum.counts.files,
                sum.counts.directories,
                sum.counts.symlinks,
                human_bytes(sum.file_bytes)
            );
            if sum.owners_not_restored > 0 {
                println!(
                    "note: the target refused to take the original owners of {} entries; \
                     they belong to the restoring user",
                    sum.owners_not_restored
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `restore ID --source NAME --db-url URL`: guards, prepare, load, compare.
fn restore_to_database(
    config: &crate::config::Config,
    store: &dyn Store,
    m: &Manifest,
    args: &RestoreArgs,
    url: &str,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<ExitCode> {
    use crate::database::{Address, Database};
    use crate::staging::{self, StagingOptions, TableStatus};
    let name = args
        .source
        .as_deref()
        .ok_or_else(|| anyhow!("--db-url needs --source NAME (the database source)"))?;
    let s = m.source(name)?;
    let address = Address::parse(url).map_err(|e| anyhow!("--db-url: {e}"))?;
    let password = match (&args.db_password_file, &args.db_password_env) {
        (Some(f), _) => Some(crate::config::SecretRef::File(f.clone())),
        (None, Some(v)) => Some(crate::config::SecretRef::Env(v.clone())),
        (None, None) => None,
    }
    .map(|r| r.load())
    .transpose()
    .map_err(|e| anyhow!("cannot read the staging database's password: {e}"))?;
    let target = Database { address, password };
    let opts = StagingOptions {
        create: args.create,
        force: args.force,
        overwrite_source: args.overwrite_source_database,
        client: args.client.clone(),
    };
    let LoadedDatabase {
        prepared,
        bytes,
        seconds,
        comparison: cmp,
        ..
    } = load_database(
        config,
        store,
        m,
        s,
        &target,
        &opts,
        identities,
        identity_file,
    )?;
    let failures = cmp.failures();
    if args.json {
        let out = serde_json::json!({
            "id": m.id,
            "source": s.name,
            "target": target.address.to_string(),
            "prepared": prepared,
            "bytes": bytes,
            "seconds": seconds,
            "counted": s.database.as_ref().map(|d| d.counted.clone()),
            "ok": failures.is_empty(),
            "tables": cmp.tables,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "restored {} '{}' into {} ({}): {} of SQL in {seconds:.1} s",
            m.id,
            s.name,
            target.address,
            match prepared {
                staging::Prepared::Empty => "it was empty",
                staging::Prepared::Created => "created",
                staging::Prepared::Recreated => "dropped and re-created",
            },
            human_bytes(bytes)
        );
        print_tables(&cmp);
    }
    if !failures.is_empty() {
        let names: Vec<String> = failures
            .iter()
            .map(|t| {
                let why = if t.status == TableStatus::Missing {
                    "missing".to_string()
                } else {
                    format!(
                        "{} rows instead of {}",
                        t.restored.unwrap_or(0),
                        t.backed_up.unwrap_or(0)
                    )
                };
                format!("{} ({why})", crate::text::Printable(&t.table))
            })
            .collect();
        return Err(crate::exit::Damaged::error(format!(
            "the restored database does not match snapshot {}: {}. It is left as it is for inspection; restore an older snapshot to compare",
            m.id,
            names.join(", ")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// The restored tables beside the backed-up row counts (all of them up to 50, else the ones
/// that do not match), and what the statuses mean.
fn print_tables(cmp: &crate::staging::Comparison) {
    use crate::staging::TableStatus;
    let show_all = cmp.tables.len() <= 50;
    let width = cmp
        .tables
        .iter()
        .map(|t| crate::text::printable(&t.table).chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let shown: Vec<_> = cmp
        .tables
        .iter()
        .filter(|t| show_all || t.status != TableStatus::Match)
        .collect();
    if !shown.is_empty() {
        println!(
            "  {:width$}  {:>12}  {:>12}",
            "table", "backed up", "restored"
        );
        for t in shown {
            let backed = match (t.backed_up, t.backed_up_after) {
                (Some(n), Some(a)) if a != n => format!("{n}..{a}"),
                (Some(n), _) if t.backed_up_exact => n.to_string(),
                (Some(n), _) => format!("~{n}"),
                (None, _) => "-".into(),
            };
            let restored = t.restored.map_or_else(|| "-".into(), |n| n.to_string());
            let status = match t.status {
                TableStatus::Match => "ok",
                TableStatus::Mismatch => "MISMATCH",
                TableStatus::Changed => "ok (written to during the backup)",
                TableStatus::Differs => "differs",
                TableStatus::Estimated => "estimate",
                TableStatus::Missing => "MISSING",
                TableStatus::Extra => "not in backup",
            };
            println!(
                "  {:width$}  {backed:>12}  {restored:>12}  {status}",
                crate::text::printable(&t.table)
            );
        }
    }
    let matched = cmp.count(TableStatus::Match) + cmp.count(TableStatus::Changed);
    if !cmp.recorded {
        println!(
            "the snapshot records no row counts (made by an older coffer): {} tables restored",
            cmp.tables.len()
        );
    } else {
        println!(
            "{matched} of {} tables match the backup's row counts{}",
            cmp.tables.len(),
            if show_all {
                ""
            } else {
                " (--json lists every table)"
            }
        );
    }
    if cmp.count(TableStatus::Differs) > 0 {
        println!(
            "note: 'differs' marks tables that were being written to while the backup ran \
             and came back with a count outside what was seen before and after the dump \
             (rows added and removed again); check them if that is not expected"
        );
    }
}
