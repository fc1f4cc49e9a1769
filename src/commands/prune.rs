//! `coffer prune [--dry-run] [--json]`: applies the retention policy to the store.
//!
//! Only snapshots signed by a trusted key take part, ranked by the time in their id; the
//! newest is always kept. Unsigned, untrusted and unreadable snapshots are never counted and
//! never deleted here (only `coffer forget` removes them): manifests planted in the store
//! cannot push the real snapshots out of retention. A pruned snapshot loses its manifest first
//! (from then on it is no snapshot), then its parts. Parts of unfinished snapshots older than
//! `store.orphan_grace` are removed too.

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
    /// Snapshots not signed by a trusted key (unsigned or untrusted), with why: never
    /// counted, never pruned.
    pub not_trusted: Vec<(String, String)>,
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
    let trusted = config.trusted();
    if trusted.is_empty() {
        return Err(anyhow!(snapshot::SnapshotError::NoTrustedKey)
            .context("prune acts only on snapshots signed by a trusted key"));
    }
    let listing = snapshot::list(store, &trusted).context("listing the snapshots")?;
    let candidates: Vec<Candidate> = listing
        .trusted()
        .map(|m| Candidate {
            id: m.id.to_string(),
            time: m.id.time(),
        })
        .collect();
    let plan = retention::plan(&candidates, &config.retention, config.timezone);
    let mut report = PruneReport {
        unreadable: listing.unreadable.iter().map(ToString::to_string).collect(),
        not_trusted: listing
            .not_trusted()
            .map(|c| {
                let why = match &c.trust {
                    crate::signing::Trust::Untrusted { why } => why.clone(),
                    _ => "not signed".to_string(),
                };
                (c.manifest.id.to_string(), why)
            })
            .collect(),
        ..PruneReport::default()
    };
    if !dry_run {
        for id in &plan.prune {
            // Between snapshots is a safe point: each one is deleted whole or not at all.
            crate::shutdown::check()?;
            let sid: SnapshotId = id.parse().map_err(|e| anyhow!("{e}"))?;
            // The manifest first: a prune cut short leaves parts, never a snapshot with holes.
            // Noted first: a deletion cut short must not look like someone else's later.
            record_removed(config, id, "prune");
            snapshot::delete_snapshot(store, &sid)
                .with_context(|| format!("deleting pruned snapshot {id}"))?;
            report.deleted.push(id.clone());
        }
        report.swept =
            snapshot::sweep_orphans(store, config.store.orphan_grace, SystemTime::now())?;
    }
    report.plan = plan;
    Ok(report)
}

/// Notes in the run history that this host removed snapshot `id`, so the verify job does not
/// take it for a deletion by someone else.
pub(crate) fn record_removed(config: &crate::config::Config, id: &str, by: &str) {
    // (The id is unique to one store: no need to name the store.)
    let recorded =
        crate::catalog::Catalog::open(&config.state_dir).and_then(|mut c| c.record_removed(id, by));
    if let Err(e) = recorded {
        tracing::warn!("could not record that {id} was removed: {e}");
    }
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
            "not_trusted": report.not_trusted.iter().map(|(id, why)| serde_json::json!({
                "id": id,
                "why": why,
            })).collect::<Vec<_>>(),
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
        println!(
            "note: left alone, its manifest cannot be read: {}",
            crate::text::Printable(u)
        );
    }
    for (id, why) in &report.not_trusted {
        println!(
            "note: left alone and not counted, not signed by a trusted key ({}): {id}; \
             'coffer forget {id}' removes it once you know you do not need it",
            crate::text::Printable(why)
        );
    }
    Ok(ExitCode::SUCCESS)
}
