//! `coffer status [--json]`: per job, the last success, the last failure with its error, the
//! run going now and the next scheduled run; and the newest snapshot in the store with its
//! age. The history comes from the catalog; the snapshot from the store itself, so a lost
//! catalog still shows what the store holds.

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{human_bytes, human_seconds, load_config};
use crate::catalog::{Catalog, JobHistory, Run};
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::signing::Trusted;
use crate::snapshot::{self, SnapshotId};
use crate::store;

/// `3 h ago` / `in 17 h`-style distances for people.
fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let span = match n {
        0..120 => format!("{n} s"),
        120..7200 => format!("{} min", n / 60),
        7200..172_800 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86400),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

pub fn run(config_path: &Path, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let status = Status::gather(&config, Utc::now());
    if args.json {
        print_json(&status)?;
    } else {
        print_text(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything `status` shows, read once: the run history, the store's newest snapshot, this
/// host's signing key.
struct Status<'a> {
    config: &'a Config,
    tz: Tz,
    now: DateTime<Utc>,
    histories: Vec<(String, JobHistory)>,
    /// Why the run history could not be read.
    history_error: Option<String>,
    /// The newest snapshot signed by a trusted key, or why the store could not say.
    newest: Result<Option<SnapshotId>, String>,
    trusted: Trusted,
    /// (JSON, one line for people), as `signing_status` gives it.
    signing: (serde_json::Value, String),
}

impl<'a> Status<'a> {
    fn gather(config: &'a Config, now: DateTime<Utc>) -> Self {
        let (histories, history_error) = read_histories(config);
        // The newest snapshot signed by a trusted key, by the time in its id.
        let trusted = config.trusted();
        let newest = store::open(&config.store)
            .map_err(|e| e.to_string())
            .and_then(|s| snapshot::newest_trusted(s.as_ref(), &trusted).map_err(|e| e.to_string()))
            .map(|m| m.map(|m| m.id));
        let signing = signing_status(config);
        Status {
            config,
            tz: config.timezone,
            now,
            histories,
            history_error,
            newest,
            trusted,
            signing,
        }
    }

    /// A job's schedule and when it next runs (`None`: the job is not scheduled).
    fn next_run(&self, job: &str) -> Option<(String, Option<DateTime<Utc>>)> {
        self.config
            .jobs
            .iter()
            .find(|j| j.kind.name() == job)
            .map(|j| {
                (
                    j.schedule.to_string(),
                    j.schedule.next_after(self.now, self.tz),
                )
            })
    }
}

/// Each job's history, or (nothing, why) when the catalog cannot be read.
fn read_histories(config: &Config) -> (Vec<(String, JobHistory)>, Option<String>) {
    // The configured jobs first, then any other job with recorded runs (prune, manual runs).
    let mut names: Vec<String> = config
        .jobs
        .iter()
        .map(|j| j.kind.name().to_string())
        .collect();
    if config
        .jobs
        .iter()
        .any(|j| j.kind == crate::schedule::JobKind::Backup)
    {
        names.push("prune".into());
    }
    match Catalog::open_existing(&config.state_dir) {
        Ok(Some(mut c)) => {
            let read = c.jobs().and_then(|recorded| {
                for j in recorded {
                    if !names.contains(&j) {
                        names.push(j);
                    }
                }
                names
                    .iter()
                    .map(|n| c.history(n).map(|h| (n.clone(), h)))
                    .collect::<Result<Vec<_>, _>>()
            });
            match read {
                Ok(h) => (h, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            }
        }
        Ok(None) => (
            names
                .into_iter()
                .map(|n| (n, JobHistory::default()))
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

fn print_json(status: &Status<'_>) -> anyhow::Result<()> {
    let now = status.now;
    let jobs: Vec<_> = status
        .histories
        .iter()
        .map(|(name, h)| {
            let next = status.next_run(name);
            serde_json::json!({
                "job": name,
                "schedule": next.as_ref().map(|(s, _)| s),
                "next_run": next.and_then(|(_, t)| t),
                "last_run": h.last,
                "last_success": h.last_success,
                "last_failure": h.last_failure,
                "running": h.running,
                "runs": h.totals,
            })
        })
        .collect();
    let newest_json = match &status.newest {
        Ok(Some(id)) => serde_json::json!({
            "id": id,
            "created": id.time(),
            "age_seconds": (now - id.time()).num_seconds(),
        }),
        Ok(None) | Err(_) => serde_json::Value::Null,
    };
    let out = serde_json::json!({
        "timezone": status.tz.name(),
        "jobs": jobs,
        "newest_snapshot": newest_json,
        "store_error": status.newest.as_ref().err(),
        "history_error": status.history_error,
        "signing_key": status.signing.0,
        "trusted_signers": status.trusted.signers().iter().map(|s| serde_json::json!({
            "name": s.name(),
            "fingerprint": s.fingerprint(),
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_text(status: &Status<'_>) {
    let now = status.now;
    for (name, h) in &status.histories {
        print_job(status, name, h);
    }
    if let Some(e) = &status.history_error {
        println!("run history: {e}");
    }
    match &status.newest {
        Ok(Some(id)) => println!("newest snapshot  {id}, {}", ago(id.time(), now)),
        Ok(None) => println!(
            "newest snapshot  none signed by a trusted key{}",
            if status.trusted.is_empty() {
                " (no key is trusted: set encryption.trusted_signers)"
            } else {
                ""
            }
        ),
        Err(e) => println!("newest snapshot  unknown: {e}"),
    }
    println!("signing key      {}", status.signing.1);
}

/// One job's lines: its schedule, last success and failure, the run going now, the next run.
fn print_job(status: &Status<'_>, name: &str, h: &JobHistory) {
    let (tz, now) = (status.tz, status.now);
    let next = status.next_run(name);
    match &next {
        Some((expr, _)) => println!("{name}  (schedule \"{expr}\", {tz})"),
        None => println!("{name}  (not scheduled)"),
    }
    match &h.last_success {
        Some(r) => println!("  last success  {}", describe(r, tz, now)),
        None => println!("  last success  never"),
    }
    if let Some(r) = &h.last_failure {
        println!("  last failure  {}", describe(r, tz, now));
        println!(
            "                {}",
            crate::text::Printable(r.error.as_deref().unwrap_or("(no error recorded)"))
        );
    }
    if let Some(r) = &h.running {
        println!(
            "  running       since {} ({}), pid {}",
            local(r.started, tz),
            ago(r.started, now),
            r.pid
        );
    }
    if let Some((_, at)) = next {
        match at {
            Some(at) => println!("  next due      {} ({})", local(at, tz), ago(at, now)),
            None => println!("  next due      never"),
        }
    }
}

/// One run on one line: when, what it made, how long it took, and a drill's figures.
fn describe(r: &Run, tz: Tz, now: DateTime<Utc>) -> String {
    let mut parts = vec![format!(
        "{} ({})",
        local(r.started, tz),
        ago(r.started, now)
    )];
    if let Some(s) = &r.snapshot {
        parts.push(format!("snapshot {s}"));
    }
    if let Some(b) = r.bytes {
        parts.push(human_bytes(b));
    }
    if let Some(n) = r.snapshots {
        parts.push(format!("{n} snapshots kept"));
    }
    if let Some(secs) = r.seconds() {
        parts.push(format!("{secs:.0} s"));
    }
    if r.trigger != "schedule" {
        parts.push(r.trigger.clone());
    }
    // A drill's own figures: how long a recovery takes, how much it loses.
    let figure = |key: &str| {
        r.report
            .as_ref()
            .and_then(|rep| rep.get(key))
            .and_then(serde_json::Value::as_f64)
    };
    if let (Some(rto), Some(rpo)) = (
        figure("recovery_time_seconds"),
        figure("recovery_point_seconds"),
    ) {
        parts.push(format!(
            "recovery time {}, recovery point {}",
            human_seconds(rto),
            human_seconds(rpo)
        ));
    }
    parts.join(", ")
}

/// This host's signing key: (JSON, one line for people).
fn signing_status(config: &Config) -> (serde_json::Value, String) {
    match crate::signing::SigningKey::load(&config.signing_key) {
        Ok(Some(key)) => {
            let public = key.public();
            (
                serde_json::json!({
                    "file": config.signing_key.to_string(),
                    "fingerprint": public.fingerprint(),
                    "public_key": public.openssh(),
                }),
                format!("{} ({})", public.fingerprint(), config.signing_key),
            )
        }
        Ok(None) => (
            serde_json::Value::Null,
            format!(
                "none yet ({} is made by the first backup)",
                config.signing_key
            ),
        ),
        Err(e) => (
            serde_json::json!({"error": e.to_string()}),
            format!("unreadable: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn distances_read_naturally() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let h = |n: i64| now - chrono::Duration::seconds(n);
        assert_eq!(ago(h(30), now), "30 s ago");
        assert_eq!(ago(h(600), now), "10 min ago");
        assert_eq!(ago(h(7 * 3600), now), "7 h ago");
        assert_eq!(ago(h(3 * 86400), now), "3 d ago");
        assert_eq!(ago(h(-17 * 3600), now), "in 17 h");
    }
}
