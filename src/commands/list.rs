//! `coffer list [--json]`: the snapshots, from the store's manifests alone, each marked with
//! what its signature says.

use std::path::Path;
use std::process::ExitCode;

use super::{human_bytes, load_config};
use crate::cli::ListArgs;
use crate::signing::Trust;
use crate::snapshot;
use crate::store;
use crate::text::Printable;

pub fn run(config_path: &Path, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let store = store::open(&config.store)?;
    let trusted = config.trusted();
    let listing = snapshot::list(store.as_ref(), &trusted)?;
    for e in &listing.unreadable {
        eprintln!("warning: {}", Printable(&e.to_string()));
    }
    if args.json {
        let rows: Vec<_> = listing
            .snapshots
            .iter()
            .map(|c| {
                let m = &c.manifest;
                serde_json::json!({
                    "id": m.id,
                    "created": m.created,
                    "finished": m.finished,
                    "host": m.host,
                    "sources": m.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "type": if m.bases().is_empty() { "full" } else { "differential" },
                    "bases": m.bases(),
                    "streams": m.sources.iter().map(|s| serde_json::json!({
                        "source": s.name,
                        "kind": s.kind,
                        "type": if s.differential.is_some() { "differential" } else { "full" },
                        "base": s.differential.as_ref().map(|d| &d.base),
                        "stored_bytes": s.encrypted_bytes
                            + s.checksums.as_ref().map_or(0, |c| c.encrypted_bytes),
                        "tree_file_bytes": s.file_bytes,
                        "changed_files": s.differential.as_ref().map(|d| d.changed_files),
                        "changed_bytes": s.differential.as_ref().map(|d| d.changed_bytes),
                    })).collect::<Vec<_>>(),
                    "plaintext_bytes": m.plaintext_bytes(),
                    "stored_bytes": m.stored_bytes(),
                    "signature": c.trust,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if listing.snapshots.is_empty() {
        println!("no snapshots in {store}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<20} {:>10}  {:<9}  SOURCES",
        "ID", "CREATED (UTC)", "STORED", "SIGNATURE"
    );
    for c in &listing.snapshots {
        let m = &c.manifest;
        println!(
            "{:<24} {:<20} {:>10}  {:<9}  {}",
            m.id,
            m.created.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(m.stored_bytes()),
            c.trust.mark(),
            m.sources
                .iter()
                .map(|s| match (&s.differential, s.file_bytes) {
                    (Some(d), Some(tree)) => format!(
                        "{} (diff of {}: {} of a {} tree)",
                        s.name,
                        d.base,
                        human_bytes(d.changed_bytes),
                        human_bytes(tree)
                    ),
                    (Some(d), None) => format!("{} (diff of {})", s.name, d.base),
                    (None, _) => s.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut notes = Vec::new();
    for c in listing.not_trusted() {
        match &c.trust {
            Trust::Untrusted { why } => notes.push(format!(
                "{} is not signed by a trusted key ({why}): someone with write access to the \
                 store may have planted it; do not restore it",
                c.manifest.id
            )),
            Trust::Unsigned => notes.push(format!(
                "{} is not signed (made before coffer signed its snapshots, or planted): restore, \
                 verify and drill it only with --allow-unsigned, if you know it is yours",
                c.manifest.id
            )),
            Trust::Trusted { .. } => {}
        }
    }
    if trusted.is_empty() {
        notes.push(snapshot::SnapshotError::NoTrustedKey.to_string());
    }
    for n in notes {
        println!("note: {}", Printable(&n));
    }
    Ok(ExitCode::SUCCESS)
}
