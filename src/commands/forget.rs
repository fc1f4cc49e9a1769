//! `coffer forget ID… [--force]`: deletes named snapshots whatever their signature says
//! (`crate::prune::forget`): planted ones, and the unsigned ones prune never touches.

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;

use super::load_config;
use crate::cli::ForgetArgs;
use crate::snapshot::SnapshotId;
use crate::store;

pub fn run(config_path: &Path, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let store = store::open(&config.store)?;
    let ids: Vec<SnapshotId> = args
        .snapshots
        .iter()
        .map(|s| s.parse().map_err(|e| anyhow!("{e}")))
        .collect::<anyhow::Result<_>>()?;
    let deleted = crate::prune::forget(&config, store.as_ref(), &ids, args.force)?;
    if args.json {
        let rows: Vec<_> = deleted
            .iter()
            .map(|(id, was)| serde_json::json!({"id": id, "was": was}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (id, was) in &deleted {
            println!("deleted {id} ({was})");
        }
    }
    Ok(ExitCode::SUCCESS)
}
