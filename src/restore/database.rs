//! Restoring a database source into a staging database: the guards that keep a restore off
//! production and the servers' own databases, the load through the database's own client,
//! and the comparison with the row counts the backup recorded.

use std::time::Instant;

use anyhow::anyhow;

use super::{open_checked, precheck};
use crate::pipeline::{CountingRead, find_part_problem, read_ahead};
use crate::progress::Progress;
use crate::snapshot::{Manifest, SourceRecord};
use crate::store::Store;

/// The configured database sources, frappe presets expanded where their site can be read (a
/// staging host may not have the site: it is then left out of the guard, with a note).
pub fn configured_databases(config: &crate::config::Config) -> Vec<crate::config::SourceConfig> {
    let mut out = Vec::new();
    for s in &config.sources {
        match s.expanded() {
            Ok(parts) => out.extend(parts),
            Err(e) => eprintln!(
                "note: cannot tell whether the target is source '{}''s database: {e}",
                s.name
            ),
        }
    }
    out
}

/// The checks of a staging database that need no data: not a system database, not a
/// configured source's database (unless `opts.overwrite_source`), and a client that runs.
///
/// # Errors
/// Naming what is wrong and what to give instead.
pub fn guard_target(
    config: &crate::config::Config,
    target: &crate::database::Database,
    opts: &crate::staging::StagingOptions,
) -> anyhow::Result<()> {
    use crate::staging;
    staging::check_not_system(&target.address)?;
    if !opts.overwrite_source {
        // A target that does not exist yet (--create) may not answer at all; any other
        // failure to identify it stops the restore.
        let fingerprint = match staging::target_fingerprint(target) {
            Ok(fp) => fp,
            Err(crate::database::DbError::Connect { .. }) if opts.create => None,
            Err(e) => return Err(e.into()),
        };
        staging::guard_sources(
            &target.address,
            fingerprint.as_ref(),
            &configured_databases(config),
        )?;
    }
    staging::check_client(target, opts)?;
    Ok(())
}

/// What loading a database source into a staging database did.
pub struct LoadedDatabase {
    pub prepared: crate::staging::Prepared,
    /// SQL bytes fed to the client.
    pub bytes: u64,
    /// From the first byte loaded to the client's end.
    pub seconds: f64,
    /// Of `seconds`, the time spent decrypting and decompressing (on another thread).
    pub decode_seconds: f64,
    /// Counting the restored tables and comparing them with the manifest.
    pub check_seconds: f64,
    pub comparison: crate::staging::Comparison,
}

/// Loads database source `s` of snapshot `m` into the staging database `target`: the guards
/// (never a configured source's database unless `opts.overwrite_source`), then everything
/// that can fail without touching the target (client, parts, key), then prepare, load, and
/// compare every table's row count with the manifest's. Used by `restore --db-url` and drills.
///
/// # Errors
/// A guard, the client, the parts, the key, or the load failed (the message says what to do
/// next); a comparison that finds differences is not an error.
#[allow(clippy::too_many_arguments)]
pub fn load_database(
    config: &crate::config::Config,
    store: &dyn Store,
    m: &Manifest,
    s: &SourceRecord,
    target: &crate::database::Database,
    opts: &crate::staging::StagingOptions,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> anyhow::Result<LoadedDatabase> {
    use crate::staging;
    staging::check_engine(s, &target.address)?;
    guard_target(config, target, opts)?;
    // Everything that can fail without touching the target fails first: the client, the
    // parts, the key (the stream is opened and its header decrypted).
    precheck(store, m, s)?;
    let stream = open_checked(store, m, s, identities, identity_file)?;
    let prepared = staging::prepare(target, opts)?;
    let started = Instant::now();
    let bar = Progress::bytes(&format!("restore {}", s.name), Some(s.plaintext_bytes));
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = crate::pipeline::Timed::new(CountingRead::new(stream, &bar), busy.clone());
    let loaded =
        std::thread::scope(|scope| staging::load(target, opts, &mut read_ahead(scope, counted)));
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let loaded = loaded.map_err(|e| {
        let next = match &e {
            crate::process::FeedError::Input(io) => match find_part_problem(io) {
                Some(p) if !p.is_damage() => {
                    "the load was stopped; check that the store is reachable, then run it again (a restore with --force)"
                }
                _ => "the load was stopped; the snapshot's stream is damaged: use an older snapshot ('coffer list')",
            },
            crate::process::FeedError::Tool(_) => {
                "fix what the client reports (privileges, roles, the server's version) and run it again (a restore with --force)"
            }
        };
        anyhow!(e).context(format!(
            "loading '{}' of snapshot {} into {} failed ({next})",
            s.name, m.id, target.address
        ))
    })?;
    if !loaded.stderr.is_empty() {
        tracing::warn!(source = s.name, "the client said: {}", loaded.stderr);
    }
    let counting = Instant::now();
    let restored = staging::restored_counts(target)?;
    let cmp = staging::compare(s.database.as_ref(), &restored);
    Ok(LoadedDatabase {
        prepared,
        bytes: loaded.bytes,
        seconds,
        decode_seconds: crate::pipeline::busy_seconds(&busy),
        check_seconds: counting.elapsed().as_secs_f64(),
        comparison: cmp,
    })
}
