//! The one runner around every job (backup, prune, verify, drill; by the daemon or by hand):
//! it records the run in the history (`catalog`), turns its end into alerts (`alert`),
//! rewrites the metrics file and catches a panic. History sits below alerts and drills:
//! this module, above them all, is the one place that joins them.

use std::path::PathBuf;

use crate::catalog::{Catalog, Finish, Outcome};
use crate::config::Config;
use crate::schedule::Trigger;

/// What a job's error means, read once here, where the engines' typed contexts are known:
/// how the run ended, where it failed, and what the history and the alerts keep of it.
struct Failure {
    outcome: Outcome,
    /// Where a backup failed (its `Failed` context).
    backup: Option<(Option<String>, &'static str, String)>,
    /// A drill that ran its course and found differences: its snapshot and summary.
    drill: Option<(String, Option<serde_json::Value>)>,
    chain: Vec<String>,
    text: String,
}

impl Failure {
    fn of(err: &anyhow::Error) -> Failure {
        // A skip when another job held the lock, a stop when coffer was shutting down.
        let outcome = if crate::lock::is_busy(err) {
            Outcome::Skipped
        } else if crate::shutdown::is_stopped(err) {
            Outcome::Stopped
        } else {
            Outcome::Failure
        };
        Failure {
            outcome,
            backup: err
                .downcast_ref::<crate::backup::Failed>()
                .map(|f| (f.source.clone(), f.stage, f.snapshot.clone())),
            drill: err.downcast_ref::<crate::drill::DrillFailed>().map(|f| {
                (
                    f.report.snapshot.clone(),
                    serde_json::to_value(f.report.summary()).ok(),
                )
            }),
            chain: err.chain().map(ToString::to_string).collect(),
            text: crate::text::error_chain(err),
        }
    }

    /// What the history keeps: the outcome and the error, with a failed drill's report.
    fn finish(&self) -> Finish {
        let mut finish = Finish::failed(self.outcome, self.text.clone());
        if let Some((snapshot, report)) = &self.drill {
            finish.snapshot = Some(snapshot.clone());
            finish.report.clone_from(report);
        }
        finish
    }

    /// What the alerts are told: the error chain, and where a backup failed.
    fn alert(&self) -> crate::alert::Failure {
        let mut failure = crate::alert::Failure {
            chain: self.chain.clone(),
            ..Default::default()
        };
        if let Some((source, stage, snapshot)) = &self.backup {
            failure.source.clone_from(source);
            failure.stage = Some((*stage).to_string());
            failure.snapshot = Some(snapshot.clone());
        }
        failure
    }
}

/// A run being recorded. Recording is best effort: a catalog that cannot be opened or
/// written is logged and the job goes on.
struct Recording {
    catalog: Option<Catalog>,
    id: Option<i64>,
    job: String,
    metrics: Option<PathBuf>,
    /// `StoreConfig::identity` of the store the job works on.
    store: String,
    ended: bool,
}

impl Recording {
    /// Starts recording a run of `job` in the state folder of `config`.
    fn begin(config: &Config, job: &str, trigger: Trigger) -> Recording {
        let mut catalog = Catalog::open(&config.state_dir)
            .map_err(|e| tracing::warn!("not recording this run: {e}"))
            .ok();
        let id = catalog.as_mut().and_then(|c| {
            c.begin(job, trigger)
                .map_err(|e| tracing::warn!("not recording this run: {e}"))
                .ok()
        });
        Recording {
            catalog,
            id,
            job: job.to_string(),
            metrics: config.metrics.as_ref().map(|m| m.textfile.clone()),
            store: config.store.identity(),
            ended: false,
        }
    }

    /// Records how the run ended, and rewrites the metrics file.
    fn end(mut self, finish: &Finish) {
        self.record(finish);
    }

    fn record(&mut self, finish: &Finish) {
        self.ended = true;
        let (Some(catalog), Some(id)) = (self.catalog.as_mut(), self.id) else {
            return;
        };
        if let Err(e) = catalog.finish(id, finish) {
            tracing::warn!(job = self.job, "could not record the end of this run: {e}");
        }
        // What the verify job later expects to find in the store.
        if self.job == "backup"
            && finish.outcome == Outcome::Success
            && let Some(snapshot) = &finish.snapshot
            && let Err(e) = catalog.record_made(snapshot, &self.store)
        {
            tracing::warn!(job = self.job, "could not record snapshot {snapshot}: {e}");
        }
        if let Some(path) = &self.metrics {
            crate::metrics::write_from(catalog, path);
        }
    }
}

impl Drop for Recording {
    /// A run that never reached `end` (its job panicked) is not left `running`.
    fn drop(&mut self) {
        if !self.ended {
            self.record(&Finish {
                outcome: Outcome::Interrupted,
                error: Some("the run ended abnormally (a panic; see the log)".into()),
                ..Finish::success()
            });
        }
    }
}

/// Runs `work` as a recorded run of `job`: its start, then how it ended (`finish` describes
/// a success; an error is a failure — or a skip when another job held the lock, a stop when
/// coffer was shutting down).
///
/// # Errors
/// Whatever `work` returns.
pub fn run<T>(
    config: &Config,
    job: &str,
    trigger: Trigger,
    work: impl FnOnce() -> anyhow::Result<T>,
    finish: impl FnOnce(&T) -> Finish,
) -> anyhow::Result<T> {
    let recording = Recording::begin(config, job, trigger);
    let watch = crate::alert::watch(config, job);
    // A panicking job is a failed job: recorded and alerted, then the panic goes on.
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let err = anyhow::anyhow!("coffer's {job} panicked: {what} (a bug: please report it)");
            let failure = Failure::of(&err);
            let finished = failure.finish();
            recording.end(&finished);
            watch.finished(config, job, trigger, &finished, Some(&failure.alert()));
            std::panic::resume_unwind(panic);
        }
    };
    let (finished, alerted) = match &result {
        Ok(done) => (finish(done), None),
        Err(e) => {
            let failure = Failure::of(e);
            (failure.finish(), Some(failure.alert()))
        }
    };
    recording.end(&finished);
    audit_line(job, trigger, &finished);
    watch.finished(config, job, trigger, &finished, alerted.as_ref());
    result
}

/// Runs `work` (a restore, a verify or a sign-in by hand) as a recorded run without alerts:
/// who ran it, the snapshot (`work` names it in its argument once it is resolved), where it
/// wrote (`target`), and how it ended go to the run history and to one structured log line.
/// A restore is the moment data leaves the vault: never silent.
///
/// # Errors
/// `work`'s error, as it is.
pub fn audited<T>(
    config: &Config,
    job: &str,
    target: Option<String>,
    work: impl FnOnce(&mut Option<String>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let recording = Recording::begin(config, job, Trigger::Manual);
    let mut snapshot = None;
    let result = work(&mut snapshot);
    let mut finished = match &result {
        Ok(_) => Finish::success(),
        Err(e) => Failure::of(e).finish(),
    };
    finished.snapshot = snapshot;
    finished.target = target;
    recording.end(&finished);
    audit_line(job, Trigger::Manual, &finished);
    result
}

/// The run's one line in the log (target `coffer::audit`, on by default; journald keeps it).
pub fn audit_line(job: &str, trigger: Trigger, finished: &Finish) {
    tracing::info!(
        target: "coffer::audit",
        job,
        trigger = trigger.as_str(),
        user = crate::catalog::who(),
        outcome = finished.outcome.as_str(),
        snapshot = finished.snapshot.as_deref().unwrap_or(""),
        target = finished.target.as_deref().unwrap_or(""),
        "{job} {}",
        finished.outcome.as_str()
    );
}
