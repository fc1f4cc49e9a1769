//! `coffer forget ID… [--force]`: deletes named snapshots whatever their signature says.
//!
//! Prune never touches a snapshot that is not signed by a trusted key, so snapshots planted
//! in the store, and the unsigned ones made before coffer signed its snapshots, stay until someone names them
//! here. A snapshot signed by a trusted key needs `--force` (retention is the usual way).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};

use super::load_config;
use crate::cli::ForgetArgs;
use crate::signing::Trust;
use crate::snapshot::{self, SnapshotError, SnapshotId};
use crate::store;

pub fn run(config_path: &Path, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let store = store::from_config(&config.store)?;
    let trusted = config.trusted();
    // Without a trusted key every snapshot looks planted: forgetting any of them needs --force.
    if trusted.is_empty() && !args.force {
        bail!(
            "{}; until then coffer cannot tell your snapshots from planted ones, so forget needs \
             --force; nothing was deleted",
            crate::snapshot::SnapshotError::NoTrustedKey
        );
    }
    let _lock =
        crate::lock::lock_state_for(&config.state_dir, "forget", std::time::Duration::ZERO)?;
    let ids: Vec<SnapshotId> = args
        .snapshots
        .iter()
        .map(|s| s.parse().map_err(|e| anyhow!("{e}")))
        .collect::<anyhow::Result<_>>()?;
    // Every check before the first deletion: a refused id deletes nothing.
    let mut plan = Vec::new();
    for id in &ids {
        let what = match snapshot::read_checked(store.as_ref(), id, &trusted) {
            Ok(c) => match c.trust {
                Trust::Trusted { signer, .. } => {
                    if !args.force {
                        bail!(
                            "snapshot {id} is signed by a trusted key ({}); pass --force to \
                             delete it anyway (retention, 'coffer prune', is the usual way); \
                             nothing was deleted",
                            crate::text::Printable(&signer)
                        );
                    }
                    "signed by a trusted key"
                }
                Trust::Unsigned => "not signed",
                Trust::Untrusted { .. } => "not signed by a trusted key",
            },
            Err(SnapshotError::BadManifest { signed: true, .. }) if !args.force => bail!(
                "snapshot {id} is signed by a trusted key but this coffer cannot read its \
                 manifest (a newer coffer's?); pass --force to delete it anyway; nothing was \
                 deleted"
            ),
            Err(SnapshotError::BadManifest { .. }) => "an unreadable manifest",
            Err(SnapshotError::NotFound { .. }) => {
                if store.list(&id.prefix())?.is_empty() {
                    bail!("snapshot {id} is not in {store}; nothing was deleted");
                }
                "no manifest (an unfinished snapshot)"
            }
            Err(e) => return Err(e.into()),
        };
        plan.push((id, what));
    }
    let mut deleted = Vec::new();
    for (id, what) in plan {
        crate::shutdown::check()?;
        super::prune::record_removed(&config, id.as_str(), "forget");
        snapshot::delete_snapshot(store.as_ref(), id)
            .with_context(|| format!("deleting snapshot {id}"))?;
        deleted.push(serde_json::json!({"id": id, "was": what}));
        if !args.json {
            println!("deleted {id} ({what})");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&deleted)?);
    }
    Ok(ExitCode::SUCCESS)
}
