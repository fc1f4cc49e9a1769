//! `coffer prune [--dry-run] [--json]`: applies the retention policy to the store.
//!
//! Only snapshots with a readable manifest take part; the newest is always kept. A pruned
//! snapshot loses its manifest first (from then on it is no snapshot), then its parts. Parts
//! of unfinished snapshots older than `store.orphan_grace` are removed too.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, anyhow};

use super::load_config;
use crate::cli::PruneArgs;
use crate::retention::{self, Candidate};
use crate::snapshot::{self, SnapshotId};
use crate::store::{self, Store};

/// What a prune did (or, dry, would do).
#[derive(Debug, Default)]
pub struct PruneReport {
    pub plan: retention::Plan,
    /// Snapshots deleted (empty on a dry run).
    pub deleted: Vec<String>,
    /// Unfinished snapshots whose parts were removed.
    pub swept: Vec<String>,
    /// Snapshots whose manifest cannot be read: never pruned, named so they get looked at.
    pub unreadable: Vec<String>,
}

/// Plans and (unless `dry_run`) carries out the retention of `config` on `store`.
///
/// # Errors
/// When the store cannot be listed, or a deletion fails (the prune stops there; a snapshot
/// whose manifest is gone but whose parts remain is swept by a later prune).
pub fn prune(
    config: &crate::config::Config,
    store: &dyn Store,
    dry_run: bool,
    wait: std::time::Duration,
) -> anyhow::Result<PruneReport> {
    let _lock = crate::lock::lock_state_for(&config.state_dir, "prune", wait)?;
    let (manifests, bad) = snapshot::list(store).context("listing the snapshots")?;
    let candidates: Vec<Candidate> = manifests
        .iter()
        .map(|m| Candidate {
            id: m.id.to_string(),
            time: m.created,
        })
        .collect();
    let plan = retention::plan(&candidates, &config.retention, config.timezone);
    let mut report = PruneReport {
        unreadable: bad.iter().map(ToString::to_string).collect(),
        ..PruneReport::default()
    };
    if !dry_run {
        for id in &plan.prune {
            // Between snapshots is a safe point: each one is deleted whole or not at all.
            crate::shutdown::check()?;
            let sid: SnapshotId = id.parse().map_err(|e| anyhow!("{e}"))?;
            // The manifest first: a prune cut short leaves parts, never a snapshot with holes.
            store
                .delete(&sid.manifest_key())
                .with_context(|| format!("deleting the manifest of snapshot {id}"))?;
            let prefix = sid.prefix();
            for o in store.list(&prefix)? {
                let name = o.key.strip_prefix(&prefix).unwrap_or(&o.key);
                if !store::is_coffer_name(name) {
                    tracing::warn!(
                        "left {} of pruned snapshot {id} in {store}: coffer deletes only the \
                         names it writes",
                        o.key.escape_debug()
                    );
                    continue;
                }
                store
                    .delete(&o.key)
                    .with_context(|| format!("deleting {} of pruned snapshot {id}", o.key))?;
            }
            report.deleted.push(id.clone());
        }
        report.swept =
            snapshot::sweep_orphans(store, config.store.orphan_grace, SystemTime::now())?;
    }
    report.plan = plan;
    Ok(report)
}

/// What the run history keeps of a prune: how many snapshots the store holds afterwards.
pub fn finish_of(report: &PruneReport) -> crate::catalog::Finish {
    crate::catalog::Finish {
        snapshots: Some(report.plan.keep.len() as u64),
        ..crate::catalog::Finish::success()
    }
}

pub fn run(config_path: &Path, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let work = || {
        let store = store::from_config(&config.store)?;
        prune(&config, store.as_ref(), args.dry_run, args.wait.0)
    };
    let report = if args.dry_run {
        work()?
    } else {
        crate::catalog::recorded(
            &config,
            "prune",
            crate::schedule::Trigger::Manual,
            work,
            finish_of,
        )?
    };
    if args.json {
        let out = serde_json::json!({
            "dry_run": args.dry_run,
            "keep": report.plan.keep.iter().map(|(id, why)| serde_json::json!({
                "id": id,
                "reasons": why.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "prune": report.plan.prune,
            "deleted": report.deleted,
            "swept": report.swept,
            "unreadable": report.unreadable,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (id, why) in &report.plan.keep {
        let why: Vec<String> = why.iter().map(ToString::to_string).collect();
        println!("keep   {id}  ({})", why.join(", "));
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    for id in &report.plan.prune {
        println!("{:<6} {id}", if args.dry_run { "prune?" } else { "prune" });
    }
    println!(
        "{verb} {} of {} snapshots, kept {}{}",
        report.plan.prune.len(),
        report.plan.prune.len() + report.plan.keep.len(),
        report.plan.keep.len(),
        if args.dry_run {
            " (dry run: nothing was deleted)"
        } else {
            ""
        }
    );
    if !report.swept.is_empty() {
        println!(
            "removed the parts of {} unfinished snapshots: {}",
            report.swept.len(),
            report.swept.join(", ")
        );
    }
    for u in &report.unreadable {
        println!("note: left alone, its manifest cannot be read: {u}");
    }
    Ok(ExitCode::SUCCESS)
}
