//! The daemon (`coffer daemon`): runs the `[jobs.*]` of the config on their schedules until
//! SIGTERM or SIGINT, each job through `job::run`, and checks hourly that the store's newest
//! trusted snapshot is fresh.
//!
//! Each run happens on its own thread (the backup code blocks), one at a time, under the lock
//! the CLI shares, recorded in the run history (and the metrics file). A backup that succeeds
//! is followed by a prune. On SIGTERM/SIGINT: nothing new starts; a running backup stops at
//! its next block and writes no manifest (its parts are removed), a prune stops between
//! snapshots, a verify between reads; the process exits within `STOP_GRACE` whatever the job
//! does. systemd hears READY/STOPPING/WATCHDOG through `$NOTIFY_SOCKET`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};

use crate::catalog::{Catalog, Finish};
use crate::config::Config;
use crate::schedule::{self, JobKind, JobSpec, RunFuture, Runner, SystemClock, Trigger};
use crate::store;

/// How often the daemon looks at the newest snapshot's age.
const STALE_EVERY: Duration = Duration::from_secs(3600);

/// The staleness check: the newest complete snapshot in the store against
/// `alerts.max_age` (blocking: run on its own thread).
fn check_stale(config: &Config, daemon_started: DateTime<Utc>) {
    // Only a snapshot signed by a trusted key counts, and its age is its id's time: a planted
    // manifest dated 2099 must not keep the alert quiet.
    let newest = store::open(&config.store)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            crate::snapshot::newest_trusted(s.as_ref(), &config.trusted())
                .map_err(|e| e.to_string())
        })
        .map(|m| m.map(|m| (m.id.to_string(), m.id.time())));
    let newest = match newest {
        Ok(newest) => newest,
        Err(e) => {
            // A store that cannot be listed is the backups' problem too: they will fail and
            // alert. The age is unknown, not old.
            tracing::warn!("staleness check: cannot list the store: {e}");
            return;
        }
    };
    let alerts = crate::alert::Alerts::from_config(config);
    let mut catalog = Catalog::open(&config.state_dir).ok();
    let first_backup = catalog
        .as_mut()
        .and_then(|c| c.first_started("backup").ok())
        .flatten();
    let watching_since = first_backup.map_or(daemon_started, |f| f.min(daemon_started));
    if alerts.check_stale(catalog.as_mut(), newest.clone(), Utc::now(), watching_since) {
        tracing::warn!(
            newest = newest.as_ref().map_or("none", |(id, _)| id.as_str()),
            "the newest snapshot is older than alerts.max_age"
        );
    }
}

/// How long a stopping job gets before the process exits anyway (systemd's default stop
/// timeout is 90 s; we promise 30).
const STOP_GRACE: Duration = Duration::from_secs(25);

/// Runs one job to its end on the calling thread; what the run history keeps of it.
///
/// # Errors
/// The job's failure (a stop request surfaces as `shutdown::Stopped` in the chain).
pub fn run_job(config: &Config, kind: JobKind, trigger: Trigger) -> anyhow::Result<()> {
    match kind {
        JobKind::Backup => {
            let report = crate::job::run(
                config,
                "backup",
                trigger,
                || {
                    let store = store::open(&config.store)?;
                    crate::backup::backup(config, store.as_ref(), &|_| {})
                },
                crate::backup::finish_of,
            )?;
            let m = &report.manifest;
            if let Some(key) = &report.new_signing_key {
                tracing::warn!(
                    job = "backup",
                    "{}",
                    crate::backup::new_key_notice(config, key)
                );
            }
            tracing::info!(
                job = "backup",
                snapshot = %m.id,
                stored_bytes = m.stored_bytes(),
                seconds = report.seconds,
                "snapshot {} written",
                m.id
            );
            for (source, w) in &report.warnings {
                tracing::warn!(
                    job = "backup",
                    source,
                    "{} {}: {}",
                    crate::text::PrintablePath(&w.path),
                    w.kind.as_str(),
                    crate::text::Printable(&w.detail)
                );
            }
            // Prune only after a good backup: a failing backup never thins out the good ones.
            // Stopping: the snapshot is safe; the prune waits for the next backup.
            crate::shutdown::check()?;
            let pruned = crate::job::run(
                config,
                "prune",
                trigger,
                || {
                    let store = store::open(&config.store)?;
                    crate::prune::prune(config, store.as_ref(), false, Duration::ZERO)
                },
                crate::prune::finish_of,
            )?;
            tracing::info!(
                job = "prune",
                deleted = pruned.deleted.len(),
                kept = pruned.plan.keep.len(),
                swept = pruned.swept.len(),
                "pruned {} snapshot(s), kept {}",
                pruned.deleted.len(),
                pruned.plan.keep.len()
            );
            Ok(())
        }
        JobKind::Verify { deep } => {
            let finish = crate::job::run(
                config,
                "verify",
                trigger,
                || verify_newest(config, deep),
                Clone::clone,
            )?;
            tracing::info!(
                job = "verify",
                deep,
                snapshot = finish.snapshot.as_deref().unwrap_or(""),
                "the newest snapshot verified"
            );
            Ok(())
        }
        JobKind::Drill => {
            let opts = crate::drill::DrillOptions {
                snapshot: "latest",
                identity: None,
                wait: Duration::ZERO,
                // The daemon never acts on an unsigned snapshot.
                allow_unsigned: false,
            };
            let report = crate::job::run(
                config,
                "drill",
                trigger,
                || crate::drill::drill_checked(config, &opts),
                crate::drill::finish_of,
            )?;
            tracing::info!(
                job = "drill",
                snapshot = report.snapshot,
                recovery_time_seconds = report.recovery_time_seconds,
                recovery_point_seconds = report.recovery_point_seconds,
                "snapshot {} restored into staging and checked in {:.1} s",
                report.snapshot,
                report.recovery_time_seconds
            );
            for n in &report.notes {
                tracing::warn!(job = "drill", "{n}");
            }
            Ok(())
        }
    }
}

/// Verifies the newest snapshot (the one a restore would take), under the shared lock, and
/// compares the store with what this host made (`audit`): a snapshot deleted or altered by
/// someone else, a rolled-back store, or one this host did not sign fails the job (an alert).
fn verify_newest(config: &Config, deep: bool) -> anyhow::Result<Finish> {
    let _lock = crate::lock::lock_state_for(&config.state_dir, "verify", Duration::ZERO)?;
    let store = store::open(&config.store)?;
    let trusted = config.trusted();
    let listing = crate::snapshot::list(store.as_ref(), &trusted)?;
    let made = match Catalog::open(&config.state_dir)
        .and_then(|mut c| c.made_snapshots(&config.store.identity()))
    {
        Ok(made) => made,
        Err(e) => {
            tracing::warn!(
                job = "verify",
                "cannot compare the store with the run history: {e}"
            );
            Vec::new()
        }
    };
    let audit = crate::audit::audit(&listing, &made);
    let store_problem = |e: anyhow::Error| {
        if audit.is_empty() {
            e
        } else {
            e.context(format!(
                "the store does not hold what it should: {}",
                audit.join("; ")
            ))
        }
    };
    let resolved = crate::snapshot::resolve(
        store.as_ref(),
        "latest",
        &trusted,
        crate::snapshot::Accept::Trusted,
    )
    .map_err(|e| store_problem(e.into()))?;
    let manifest = resolved.manifest;
    let keys = if deep {
        Some(crate::keys::load_chosen(
            None,
            config.encryption.identity_file.as_deref(),
        )?)
    } else {
        None
    };
    let deep_keys = keys
        .as_ref()
        .map(|(identities, file)| crate::verify::DeepKeys {
            identities,
            identity_file: file,
        });
    let bases = crate::snapshot::read_bases(
        store.as_ref(),
        &manifest,
        None,
        &trusted,
        crate::snapshot::Accept::Trusted,
    );
    let base_check = match &bases {
        Ok(b) => crate::verify::BaseCheck::Check(b),
        Err(e) => crate::verify::BaseCheck::Unusable(e.to_string()),
    };
    let reports = crate::verify::verify_snapshot(
        store.as_ref(),
        &manifest,
        &base_check,
        deep_keys.as_ref(),
        &|_| {},
    )?;
    crate::shutdown::check()?;
    let mut problems = Vec::new();
    for r in &reports {
        problems.extend(r.problems.iter().map(|p| format!("{}: {p}", r.stream)));
        if let Some(why) = &r.unrestorable {
            problems.push(why.clone());
        }
        if let Some(Err(why)) = &r.deep {
            problems.push(format!("{}: {why}", r.stream));
        }
    }
    if !problems.is_empty() {
        return Err(store_problem(anyhow::anyhow!(
            "snapshot {} failed verification ({}): {}; run 'coffer verify {}{}' for the details",
            manifest.id,
            if deep { "deep" } else { "parts" },
            problems.join("; "),
            manifest.id,
            if deep { " --deep" } else { "" }
        )));
    }
    if !audit.is_empty() {
        anyhow::bail!(
            "snapshot {} verified, but the store does not hold what it should: {}",
            manifest.id,
            audit.join("; ")
        );
    }
    Ok(Finish {
        snapshot: Some(manifest.id.to_string()),
        bytes: Some(manifest.stored_bytes()),
        ..Finish::success()
    })
}

/// The daemon's runner: each run on its own thread.
struct Jobs {
    config: Arc<Config>,
}

impl Runner for Jobs {
    fn run(&self, job: &JobSpec, trigger: Trigger) -> RunFuture {
        let config = Arc::clone(&self.config);
        let kind = job.kind;
        Box::pin(async move {
            let name = kind.name();
            tracing::info!(job = name, trigger = trigger.as_str(), "starting");
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("coffer-{name}"))
                .spawn(move || {
                    let _ = tx.send(run_job(&config, kind, trigger));
                });
            if let Err(e) = spawned {
                tracing::error!(job = name, "cannot start a thread for the run: {e}");
                return;
            }
            match rx.await {
                Ok(Ok(())) => tracing::info!(job = name, "finished"),
                Ok(Err(e)) if crate::shutdown::is_stopped(&e) => {
                    tracing::warn!(
                        job = name,
                        "stopped by the shutdown: {}",
                        crate::text::error_chain(&e)
                    );
                }
                Ok(Err(e)) if crate::lock::is_busy(&e) => {
                    tracing::warn!(job = name, "skipped: {}", crate::text::error_chain(&e));
                }
                Ok(Err(e)) => {
                    tracing::error!(job = name, "failed: {}", crate::text::error_chain(&e))
                }
                Err(_) => tracing::error!(job = name, "the run's thread died (a panic)"),
            }
        })
    }

    fn skipped(&self, job: &JobSpec, at: DateTime<Utc>) {
        let name = job.kind.name();
        let due = at.with_timezone(&self.config.timezone);
        tracing::warn!(
            job = name,
            "skipped the run due at {due}: the previous {name} is still running or waiting \
             for another job"
        );
        let state_dir = self.config.state_dir.clone();
        // The catalog blocks: not on the scheduler's thread.
        std::thread::spawn(move || {
            let why = format!("the previous {name} was still running or waiting");
            if let Err(e) = Catalog::open(&state_dir)
                .and_then(|mut c| c.skipped(name, Trigger::Schedule, at, &why))
            {
                tracing::warn!("could not record the skipped {name}: {e}");
            }
        });
    }

    fn next_run(&self, job: &JobSpec, at: Option<DateTime<Utc>>) {
        let name = job.kind.name();
        match at {
            Some(at) => tracing::info!(
                job = name,
                schedule = %job.schedule,
                "next run at {}",
                at.with_timezone(&self.config.timezone)
                    .format("%Y-%m-%d %H:%M:%S %Z")
            ),
            None => tracing::warn!(job = name, schedule = %job.schedule, "never runs again"),
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT: catches up a run missed while it was down, then
/// every `[jobs.*]` on its schedule, and the hourly staleness check.
///
/// # Errors
/// A config without jobs, or a runtime that cannot start.
pub fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    if config.jobs.is_empty() {
        anyhow::bail!(
            "{} has no [jobs.*]: the daemon would have nothing to do; add e.g. [jobs.backup] \
             schedule = \"0 0 2 * * *\" (cron with seconds)",
            config.path.display()
        );
    }
    let last_started = Catalog::open(&config.state_dir)
        .and_then(|mut c| c.last_started())
        .unwrap_or_else(|e| {
            tracing::warn!("no run history, so nothing to catch up: {e}");
            Default::default()
        });
    let last: std::collections::HashMap<&'static str, DateTime<Utc>> = config
        .jobs
        .iter()
        .filter_map(|j| Some((j.kind.name(), *last_started.get(j.kind.name())?)))
        .collect();
    let catch_up = schedule::missed(&config.jobs, config.timezone, Utc::now(), &last);
    for i in &catch_up {
        tracing::info!(
            job = config.jobs[*i].kind.name(),
            "a run was missed while the daemon was down: running it once now (catch_up)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the daemon's runtime")?;
    rt.block_on(serve(config, catch_up))
}

async fn serve(config: Arc<Config>, catch_up: Vec<usize>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| anyhow!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| anyhow!("SIGINT handler: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = Arc::new(Jobs {
        config: Arc::clone(&config),
    });
    let scheduler = tokio::spawn(schedule::run(
        config.jobs.clone(),
        config.timezone,
        Arc::new(SystemClock),
        runner,
        catch_up,
        stop_rx,
    ));
    tracing::info!(
        pid = std::process::id(),
        jobs = config.jobs.len(),
        timezone = %config.timezone,
        "coffer daemon started"
    );
    crate::notify::notify("READY=1\nSTATUS=waiting for the next scheduled job");
    let stale_config = Arc::clone(&config);
    let daemon_started = Utc::now();
    let staleness = tokio::spawn(async move {
        let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tick = tokio::time::interval(STALE_EVERY);
        loop {
            tick.tick().await;
            // A check still going (a store that does not answer) is not doubled.
            if checking.swap(true, std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let config = Arc::clone(&stale_config);
            let checking = Arc::clone(&checking);
            let _ = std::thread::Builder::new()
                .name("coffer-stale".into())
                .spawn(move || {
                    check_stale(&config, daemon_started);
                    checking.store(false, std::sync::atomic::Ordering::SeqCst);
                });
        }
    });
    let watchdog = crate::notify::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                crate::notify::notify("WATCHDOG=1");
            }
        })
    });
    let signal_name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{signal_name}: stopping (no new jobs; a running one stops at a safe point)");
    crate::notify::notify("STOPPING=1\nSTATUS=stopping");
    let _ = stop_tx.send(true);
    crate::shutdown::request();
    let running = scheduler.await.unwrap_or(None);
    if let Some(run) = running {
        match tokio::time::timeout(STOP_GRACE, run).await {
            Ok(_) => tracing::info!("the running job stopped"),
            Err(_) => tracing::warn!(
                "the running job did not stop within {} s; exiting anyway (a backup that had \
                 not written its manifest leaves no snapshot; its parts are swept later)",
                STOP_GRACE.as_secs()
            ),
        }
    }
    staleness.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("coffer daemon stopped");
    Ok(())
}
