//! Deleting snapshots: retention (`prune`, after every good backup and by hand) and `forget`
//! of named snapshots.
//!
//! Only snapshots signed by a trusted key take part, ranked by the time in their id; the
//! newest is always kept. Unsigned, untrusted and unreadable snapshots are never counted and
//! never deleted here (only `coffer forget` removes them): manifests planted in the store
//! cannot push the real snapshots out of retention. A pruned snapshot loses its manifest first
//! (from then on it is no snapshot), then its parts. Parts of unfinished snapshots older than
//! `store.orphan_grace` are removed too.

use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};

use crate::retention::{self, Candidate};
use crate::signing::Trust;
use crate::snapshot::{self, SnapshotError, SnapshotId};
use crate::store::Store;

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
            // A kept differential keeps its full.
            bases: m.bases().into_iter().map(ToString::to_string).collect(),
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

/// Refuses to forget a full that a snapshot kept (not among `ids`) builds a differential on:
/// that snapshot's folder could no longer be restored.
fn refuse_orphans(
    store: &dyn Store,
    trusted: &crate::signing::Trusted,
    ids: &[SnapshotId],
) -> anyhow::Result<()> {
    let listing = snapshot::list(store, trusted).context("listing the snapshots")?;
    for id in ids {
        let needing: Vec<String> = listing
            .snapshots
            .iter()
            .map(|c| &c.manifest)
            .filter(|m| !ids.contains(&m.id) && m.bases().contains(&id))
            .map(|m| m.id.to_string())
            .collect();
        if !needing.is_empty() {
            bail!(
                "snapshot {id} is the full that {} build(s) on: without it their folders cannot \
                 be restored. Forget them too (name them all), or keep it; nothing was deleted",
                needing.join(", ")
            );
        }
    }
    Ok(())
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

/// Deletes the snapshots `ids`, whatever their signature says, after checking every one
/// (a refused id deletes nothing): one signed by a trusted key, or any when nothing is
/// trusted, needs `force`. Returns each id with what it was.
///
/// # Errors
/// A refusal naming the snapshot, or a store error (what is left is swept later).
pub fn forget(
    config: &crate::config::Config,
    store: &dyn Store,
    ids: &[SnapshotId],
    force: bool,
) -> anyhow::Result<Vec<(SnapshotId, &'static str)>> {
    let trusted = config.trusted();
    // Without a trusted key every snapshot looks planted: forgetting any of them needs --force.
    if trusted.is_empty() && !force {
        bail!(
            "{}; until then coffer cannot tell your snapshots from planted ones, so forget needs \
             --force; nothing was deleted",
            SnapshotError::NoTrustedKey
        );
    }
    let _lock =
        crate::lock::lock_state_for(&config.state_dir, "forget", std::time::Duration::ZERO)?;
    let mut plan = Vec::new();
    for id in ids {
        let what = match snapshot::read_checked(store, id, &trusted) {
            Ok(c) => match c.trust {
                Trust::Trusted { signer, .. } => {
                    if !force {
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
            Err(SnapshotError::BadManifest { signed: true, .. }) if !force => bail!(
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
        plan.push((id.clone(), what));
    }
    refuse_orphans(store, &trusted, ids)?;
    // Newest first: a differential goes before the full it builds on.
    plan.sort_by(|a, b| b.0.cmp(&a.0));
    for (id, _) in &plan {
        crate::shutdown::check()?;
        record_removed(config, id.as_str(), "forget");
        snapshot::delete_snapshot(store, id).with_context(|| format!("deleting snapshot {id}"))?;
    }
    Ok(plan)
}
