//! `coffer verify [ID|latest|--all] [--deep]`.

use std::path::Path;
use std::process::ExitCode;

use super::{human_bytes, load_config, load_identities};
use crate::cli::VerifyArgs;
use crate::progress::Progress;
use crate::signing::Trust;
use crate::snapshot::{self, Manifest};
use crate::store;
use crate::text::Printable;
use crate::verify::{BaseCheck, DeepKeys, StreamReport, verify_snapshot};

pub fn run(config_path: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    crate::job::audited(&config, "verify", None, |snapshot| {
        verify(&config, args, snapshot)
    })
}

/// The verify itself; names the snapshot in `snapshot` (one snapshot, not `--all`).
fn verify(
    config: &crate::config::Config,
    args: &VerifyArgs,
    snapshot: &mut Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = store::open(&config.store)?;
    let keys = if args.deep {
        Some(load_identities(config, args.identity.as_deref())?)
    } else {
        None
    };
    let deep = keys.as_ref().map(|(identities, file)| DeepKeys {
        identities,
        identity_file: file,
    });
    let mut failed = 0usize;
    let mut json = Vec::new();
    let manifests: Vec<Manifest> = if args.all {
        let trusted = config.trusted();
        if trusted.is_empty() && !args.allow_unsigned {
            return Err(snapshot::SnapshotError::NoTrustedKey.into());
        }
        let listing = snapshot::list(store.as_ref(), &trusted)?;
        let mut refused: Vec<(Option<String>, String)> = listing
            .unreadable
            .iter()
            .map(|e| {
                let id = match e {
                    snapshot::SnapshotError::BadManifest { id, .. } => Some(id.clone()),
                    _ => None,
                };
                (id, e.to_string())
            })
            .collect();
        let mut good = Vec::new();
        for c in listing.snapshots {
            match &c.trust {
                Trust::Trusted { .. } => good.push(c.manifest),
                Trust::Unsigned if args.allow_unsigned => {
                    eprintln!(
                        "warning: snapshot {} is not signed; verified because of \
                         --allow-unsigned",
                        c.manifest.id
                    );
                    // The listing keeps only a summary of snapshots it does not trust.
                    good.push(
                        snapshot::read_checked(store.as_ref(), &c.manifest.id, &trusted)?.manifest,
                    );
                }
                Trust::Unsigned => refused.push((
                    Some(c.manifest.id.to_string()),
                    snapshot::SnapshotError::Unsigned {
                        id: c.manifest.id.to_string(),
                    }
                    .to_string(),
                )),
                Trust::Untrusted { why } => refused.push((
                    Some(c.manifest.id.to_string()),
                    snapshot::SnapshotError::NotTrusted {
                        id: c.manifest.id.to_string(),
                        why: why.clone(),
                    }
                    .to_string(),
                )),
            }
        }
        for (id, e) in &refused {
            if args.json {
                json.push(serde_json::json!({"id": id, "ok": false, "error": e}));
            } else {
                println!("BAD  {}", Printable(e));
            }
        }
        failed += refused.len();
        good
    } else {
        let m =
            super::resolve_snapshot(config, store.as_ref(), &args.snapshot, args.allow_unsigned)?;
        *snapshot = Some(m.id.to_string());
        vec![m]
    };

    // Snapshots that failed here: a differential built on one of them cannot be restored.
    let mut bad: Vec<String> = Vec::new();
    for m in &manifests {
        let bases = super::read_bases(config, store.as_ref(), m, None, args.allow_unsigned);
        let base_check = match &bases {
            Err(e) => BaseCheck::Unusable(crate::text::error_chain(e)),
            // Checked on their own in this run.
            Ok(_) if args.all => BaseCheck::Present,
            Ok(b) => BaseCheck::Check(b),
        };
        let bar = Progress::bytes(&format!("verify {}", m.id), Some(m.stored_bytes()));
        let reports = verify_snapshot(store.as_ref(), m, &base_check, deep.as_ref(), &|n| {
            bar.inc(n)
        })?;
        bar.finish();
        if reports.iter().any(|r| !r.ok()) {
            failed += 1;
            bad.push(m.id.to_string());
        }

        if args.json {
            json.push(serde_json::json!({
                "id": m.id,
                "ok": reports.iter().all(StreamReport::ok),
                "streams": reports.iter().map(report_json).collect::<Vec<_>>(),
            }));
        } else {
            print_reports(m, &reports);
        }
    }
    // --all goes newest first, so a full's verdict comes after its differentials': a
    // differential whose full failed cannot be restored either.
    for m in &manifests {
        if bad.contains(&m.id.to_string()) {
            continue;
        }
        let Some(base) = m.bases().into_iter().find(|b| bad.contains(&b.to_string())) else {
            continue;
        };
        failed += 1;
        let why = format!(
            "its folder stream is a differential of snapshot {base}, which failed verification: \
             it cannot be restored"
        );
        if args.json {
            if let Some(entry) = json.iter_mut().find(|j| j["id"] == serde_json::json!(m.id)) {
                entry["ok"] = serde_json::json!(false);
                entry["error"] = serde_json::json!(why);
            }
        } else {
            println!("BAD  {}: {why}", m.id);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    if failed > 0 {
        return Err(crate::exit::Damaged::error(format!(
            "{failed} snapshot(s) failed verification; the bad parts and manifests are named above. \
             Back up again now, and restore from an older snapshot if you need this one's data"
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_reports(m: &Manifest, reports: &[StreamReport]) {
    for r in reports {
        let status = if r.ok() { "ok " } else { "BAD" };
        let deep = match &r.deep {
            Some(Ok(s)) if r.stream.ends_with(".sql.gz.age") => {
                format!(", deep: {} of SQL decoded", human_bytes(s.file_bytes))
            }
            Some(Ok(s)) if r.stream.ends_with(".sha256.gz.age") => {
                format!(
                    ", deep: {} of file checksums decoded",
                    human_bytes(s.file_bytes)
                )
            }
            Some(Ok(s)) => format!(
                ", deep: {} files, {} directories, {} symlinks read",
                s.counts.files, s.counts.directories, s.counts.symlinks
            ),
            _ => String::new(),
        };
        let checked = if r.by_store_checksums {
            "sizes and checksums (sha256, or the ETag recorded at upload) as the store \
             reports them"
                .to_string()
        } else {
            human_bytes(r.bytes_checked)
        };
        if let Some(why) = &r.unrestorable {
            println!("BAD  {} {}: {}", m.id, r.stream, Printable(why));
            continue;
        }
        let (id, base) = match &r.base_of {
            Some(base) => (base.as_str(), format!(" (the full of {})", m.id)),
            None => (m.id.as_str(), String::new()),
        };
        println!(
            "{status}  {id} {}{base}: {} parts, {checked}{deep}",
            r.stream, r.parts_checked
        );
        for p in &r.problems {
            println!("     {}: {}", r.stream, Printable(&p.to_string()));
        }
        if let Some(Err(e)) = &r.deep {
            println!("     {}: deep check failed: {}", r.stream, Printable(e));
        }
        for extra in &r.extra_objects {
            println!(
                "     note: {} is stored but not listed in the manifest",
                Printable(extra)
            );
        }
    }
}

fn report_json(r: &StreamReport) -> serde_json::Value {
    serde_json::json!({
        "source": r.source,
        "stream": r.stream,
        "ok": r.ok(),
        "parts_checked": r.parts_checked,
        "bytes_checked": r.bytes_checked,
        "by_store_checksums": r.by_store_checksums,
        "base_of": r.base_of,
        "unrestorable": r.unrestorable,
        "problems": r.problems.iter().map(|p| serde_json::json!({
            "part": p.part(),
            "message": p.to_string(),
        })).collect::<Vec<_>>(),
        "extra_objects": r.extra_objects,
        "deep": r.deep.as_ref().map(|d| match d {
            Ok(s) => serde_json::json!({"ok": true, "files": s.counts.files,
                "directories": s.counts.directories, "symlinks": s.counts.symlinks,
                "file_bytes": s.file_bytes}),
            Err(e) => serde_json::json!({"ok": false, "error": e}),
        }),
    })
}
