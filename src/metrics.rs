//! Prometheus metrics as a text file for node_exporter's textfile collector
//! (`--collector.textfile.directory`), rewritten from the run history after every run. The
//! file is written beside its final name and renamed over it, so the collector never reads
//! half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::catalog::JobHistory;

/// The exposition text for every job's history.
pub fn render(histories: &[(String, JobHistory)]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let per_job = |f: &dyn Fn(&JobHistory) -> Option<f64>| {
        histories
            .iter()
            .filter_map(|(job, h)| f(h).map(|v| (format!("coffer_job=\"{}\"", escape(job)), v)))
            .collect::<Vec<_>>()
    };
    let time = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
    family(
        "coffer_last_success_timestamp_seconds",
        "gauge",
        "When the job's last successful run ended (Unix time).",
        per_job(&|h| h.last_success.as_ref().and_then(|r| r.finished).map(time)),
    );
    family(
        "coffer_last_failure_timestamp_seconds",
        "gauge",
        "When the job's last failed run started (Unix time).",
        per_job(&|h| h.last_failure.as_ref().map(|r| time(r.started))),
    );
    family(
        "coffer_last_run_success",
        "gauge",
        "1 if the job's last finished run succeeded, else 0.",
        per_job(&|h| {
            h.last
                .as_ref()
                .map(|r| f64::from(u8::from(r.outcome == crate::catalog::Outcome::Success)))
        }),
    );
    family(
        "coffer_last_run_duration_seconds",
        "gauge",
        "How long the job's last finished run took.",
        per_job(&|h| h.last.as_ref().and_then(crate::catalog::Run::seconds)),
    );
    family(
        "coffer_last_success_bytes",
        "gauge",
        "Stored bytes of the snapshot the job's last successful run made or checked (a backup: what it uploaded, a differential only its changes).",
        per_job(&|h| {
            h.last_success
                .as_ref()
                .and_then(|r| r.bytes)
                .map(|b| b as f64)
        }),
    );
    family(
        "coffer_snapshots",
        "gauge",
        "Complete snapshots in the store after the job's last successful run.",
        per_job(&|h| {
            h.last_success
                .as_ref()
                .and_then(|r| r.snapshots)
                .map(|n| n as f64)
        }),
    );
    // A drill's own figures, from its last successful run.
    let drill_figure = |key: &'static str| {
        move |h: &JobHistory| {
            h.last_success
                .as_ref()
                .and_then(|r| r.report.as_ref())
                .and_then(|rep| rep.get(key))
                .and_then(serde_json::Value::as_f64)
        }
    };
    family(
        "coffer_drill_recovery_time_seconds",
        "gauge",
        "The last passed restore drill, from its first download to its last check.",
        per_job(&drill_figure("recovery_time_seconds")),
    );
    family(
        "coffer_drill_recovery_point_seconds",
        "gauge",
        "The age of the snapshot the last passed restore drill restored, when it started.",
        per_job(&drill_figure("recovery_point_seconds")),
    );
    family(
        "coffer_running",
        "gauge",
        "1 while a run of the job is going.",
        per_job(&|h| Some(f64::from(u8::from(h.running.is_some())))),
    );
    let totals = histories
        .iter()
        .flat_map(|(job, h)| {
            h.totals.iter().map(move |(outcome, n)| {
                (
                    format!("coffer_job=\"{}\",outcome=\"{}\"", escape(job), outcome),
                    *n as f64,
                )
            })
        })
        .collect();
    family(
        "coffer_runs_total",
        "counter",
        "Runs of the job recorded, by outcome (success, failure, stopped, skipped).",
        totals,
    );
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `text` to `path` atomically (a temporary file in the same folder, renamed).
///
/// # Errors
/// When the folder cannot be written.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".coffer-metrics")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    // The collector runs as another user: the numbers are not secret.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Rewrites the metrics file from the catalog; a failure is logged.
pub fn write_from(catalog: &mut crate::catalog::Catalog, path: &Path) {
    let result = catalog
        .jobs()
        .and_then(|jobs| {
            jobs.into_iter()
                .map(|j| catalog.history(&j).map(|h| (j, h)))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| e.to_string())
        .and_then(|histories| write_textfile(path, &render(&histories)).map_err(|e| e.to_string()));
    if let Err(e) = result {
        tracing::warn!("could not write the metrics file {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::{Catalog, Finish};
    use crate::schedule::Trigger;

    #[test]
    fn metrics_follow_the_history_and_replace_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(dir.path()).unwrap();
        let id = c.begin("backup", Trigger::Schedule).unwrap();
        c.finish(
            id,
            &Finish {
                bytes: Some(4096),
                snapshots: Some(3),
                ..Finish::success()
            },
        )
        .unwrap();
        let id = c.begin("drill", Trigger::Schedule).unwrap();
        c.finish(
            id,
            &Finish {
                report: Some(serde_json::json!({
                    "recovery_time_seconds": 312.5,
                    "recovery_point_seconds": 10800.0
                })),
                ..Finish::success()
            },
        )
        .unwrap();
        let id = c.begin("verify", Trigger::Manual).unwrap();
        c.finish(
            id,
            &Finish::failed(crate::catalog::Outcome::Failure, "part damaged".into()),
        )
        .unwrap();
        let path = dir.path().join("coffer.prom");
        std::fs::write(&path, "old").unwrap();
        super::write_from(&mut c, &path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("coffer_last_success_bytes{coffer_job=\"backup\"} 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("coffer_snapshots{coffer_job=\"backup\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("coffer_last_run_success{coffer_job=\"verify\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("coffer_last_run_success{coffer_job=\"backup\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("coffer_runs_total{coffer_job=\"verify\",outcome=\"failure\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE coffer_runs_total counter\n"));
        assert!(
            text.contains("coffer_drill_recovery_time_seconds{coffer_job=\"drill\"} 312.5\n"),
            "{text}"
        );
        assert!(
            text.contains("coffer_drill_recovery_point_seconds{coffer_job=\"drill\"} 10800\n"),
            "{text}"
        );
        assert!(!text.contains("old"));
        // Only the final file is left in the folder.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".coffer-metrics"))
        );
    }
}
