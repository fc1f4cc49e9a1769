//! `coffer backup`: runs the backup engine (`crate::backup`) as a recorded job and prints
//! what it made.

use std::path::Path;
use std::process::ExitCode;

use super::{human_bytes, load_config};
use crate::backup::{backup_waiting, expand_sources, finish_of, new_key_notice};
use crate::cli::BackupArgs;
use crate::config::SourceKind;
use crate::progress::Progress;
use crate::source::{DirectorySource, Excludes};
use crate::store;

pub fn run(config_path: &Path, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    // On a terminal, a metadata-only walk first gives the bar a total and an ETA.
    let total = if crate::progress::is_interactive() {
        expand_sources(&config.sources)
            .unwrap_or_default()
            .iter()
            .map(|s| match &s.kind {
                SourceKind::Directory {
                    path,
                    exclude,
                    only,
                    ..
                } => Excludes::new(exclude).ok().map(|ex| {
                    DirectorySource::new(path, ex)
                        .with_only(only.clone())
                        .estimate_tar_size()
                }),
                // A dump's size is unknown until it ends: a spinner, not a bar.
                SourceKind::Postgres { .. }
                | SourceKind::Mysql { .. }
                | SourceKind::Sqlite { .. }
                | SourceKind::Frappe { .. }
                | SourceKind::FrappeBench { .. } => None,
            })
            .sum::<Option<u64>>()
    } else {
        None
    };
    let bar = Progress::bytes("backup", total);
    let report = crate::job::run(
        &config,
        "backup",
        crate::schedule::Trigger::Manual,
        || {
            let store = store::open(&config.store)?;
            backup_waiting(
                &config,
                store.as_ref(),
                &|n| bar.inc(n),
                args.wait.0,
                args.full,
            )
        },
        finish_of,
    )?;
    bar.finish();
    let m = &report.manifest;
    let (plain, stored) = (m.plaintext_bytes(), m.stored_bytes());
    let ratio = plain as f64 / stored.max(1) as f64;
    if args.json {
        let warnings: Vec<_> = report
            .warnings
            .iter()
            .map(|(source, w)| {
                serde_json::json!({
                    "source": source,
                    "kind": w.kind.as_str(),
                    "path": w.path.to_string_lossy(),
                    "detail": w.detail,
                })
            })
            .collect();
        let out = serde_json::json!({
            "id": m.id,
            "plaintext_bytes": plain,
            "stored_bytes": stored,
            "ratio": ratio,
            "seconds": report.seconds,
            "warnings": warnings,
            "swept": report.swept,
            "signing_seconds": report.signing_seconds,
            "folders": report.folders,
            "gone_sites": report.gone_sites,
            "new_signing_key": report.new_signing_key.as_ref().map(|k| serde_json::json!({
                "public_key": k.openssh(),
                "fingerprint": k.fingerprint(),
            })),
            "manifest": m,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (source, w) in &report.warnings {
            // The path comes from the backed-up tree: a file name can hold terminal escapes.
            eprintln!(
                "warning: {source}: {} {}: {}",
                crate::text::PrintablePath(&w.path),
                w.kind.as_str(),
                crate::text::Printable(&w.detail)
            );
        }
        println!(
            "snapshot {}: {}; {} in, {} stored (ratio {ratio:.2}), {:.1} s ({}/s){}",
            m.id,
            m.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            human_bytes(plain),
            human_bytes(stored),
            report.seconds,
            human_bytes((plain as f64 / report.seconds.max(1e-3)) as u64),
            if report.warnings.is_empty() {
                String::new()
            } else {
                format!(", {} warnings", report.warnings.len())
            }
        );
        for f in &report.folders {
            println!("  {}: {}: {}", f.source, f.kind, f.why);
        }
        if !report.swept.is_empty() {
            println!(
                "removed {} unfinished snapshot(s): {}",
                report.swept.len(),
                report.swept.join(", ")
            );
        }
    }
    if let Some(key) = &report.new_signing_key {
        eprintln!("{}", new_key_notice(&config, key));
    }
    Ok(ExitCode::SUCCESS)
}
