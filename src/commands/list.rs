//! `coffer list [--json]`: the snapshots, from the store's manifests alone.

use std::path::Path;
use std::process::ExitCode;

use super::{human_bytes, load_config};
use crate::cli::ListArgs;
use crate::snapshot;
use crate::store;

pub fn run(config_path: &Path, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let store = store::from_config(&config.store)?;
    let (snapshots, unreadable) = snapshot::list(store.as_ref())?;
    for e in &unreadable {
        eprintln!("warning: {e}");
    }
    if args.json {
        let rows: Vec<_> = snapshots
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id,
                    "created": m.created,
                    "finished": m.finished,
                    "host": m.host,
                    "sources": m.sources.iter().map(|s| &s.name).collect::<Vec<_>>(),
                    "plaintext_bytes": m.plaintext_bytes(),
                    "stored_bytes": m.stored_bytes(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if snapshots.is_empty() {
        println!("no snapshots in {store}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<20} {:>10}  SOURCES",
        "ID", "CREATED (UTC)", "STORED"
    );
    for m in &snapshots {
        println!(
            "{:<24} {:<20} {:>10}  {}",
            m.id,
            m.created.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(m.stored_bytes()),
            m.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
