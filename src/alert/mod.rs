//! Alerts: the one place a job's outcome becomes notifications.
//!
//! `job_finished` is called for every recorded run (`job::run`), by the daemon and
//! by hand alike; `stale` by the daemon's hourly check. Each builds one `Event` and hands it
//! to every configured `Notifier` (email, Sentry, heartbeat). Flood control lives here too:
//! a job failing again and again alerts at most once per `repeat_after` until it succeeds,
//! and its first success after failures always alerts (RECOVERED). A notifier that fails is
//! logged with its reason; the others still fire and the job's own outcome is untouched.

mod email;
mod heartbeat;
mod sentry;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalog::{Catalog, Finish, JobHistory, Outcome};
use crate::config::{AlertsConfig, Config};
use crate::schedule::Trigger;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Recovered,
    Stale,
    Success,
    Test,
    /// A run that succeeded but found something a person must look at (a bench's site gone).
    Warning,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failed => "failed",
            Kind::Recovered => "recovered",
            Kind::Stale => "stale",
            Kind::Success => "success",
            Kind::Test => "test",
            Kind::Warning => "warning",
        }
    }

    /// The word a subject starts with.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Failed => "FAILED",
            Kind::Recovered => "RECOVERED",
            Kind::Stale => "STALE",
            Kind::Success => "OK",
            Kind::Test => "TEST",
            Kind::Warning => "WARNING",
        }
    }
}

/// One notification, with everything a person needs to act on it.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    /// backup, prune, verify; `store` for staleness; `alert` for a test.
    pub job: String,
    pub trigger: Option<Trigger>,
    pub host: String,
    pub at: DateTime<Utc>,
    /// One line: what happened.
    pub summary: String,
    /// The error, outermost first.
    pub errors: Vec<String>,
    pub source: Option<String>,
    pub stage: Option<String>,
    pub snapshot: Option<String>,
    /// The newest good snapshot and when it was made.
    pub last_good: Option<(String, DateTime<Utc>)>,
    /// Commands to retry or look closer.
    pub commands: Vec<String>,
    pub timezone: chrono_tz::Tz,
    pub repeat_after: Duration,
}

impl Event {
    /// `[coffer] FAILED backup on host: first line of the error`.
    pub fn subject(&self) -> String {
        let mut line = format!(
            "[coffer] {} {} on {}: {}",
            self.kind.word(),
            self.job,
            self.host,
            self.summary
        );
        if line.chars().count() > 160 {
            line = line.chars().take(157).collect::<String>() + "...";
        }
        line
    }

    fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.timezone)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// The plain-text body: what, when, the error, the last good snapshot, what to run.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let when = self.local(self.at);
        let how = self
            .trigger
            .map(|tr| format!(", {}", tr.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "coffer on {}: {} {} at {when}{how}.",
            self.host,
            self.job,
            self.kind.word()
        );
        let _ = writeln!(t, "\n{}", self.summary);
        if self.source.is_some() || self.stage.is_some() || self.snapshot.is_some() {
            t.push('\n');
        }
        if let Some(s) = &self.source {
            let _ = writeln!(t, "Source:    {s}");
        }
        if let Some(s) = &self.stage {
            let _ = writeln!(t, "Stage:     {s}");
        }
        if let Some(s) = &self.snapshot {
            let _ = writeln!(t, "Snapshot:  {s}");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(t, "\nError:");
            for (i, e) in self.errors.iter().enumerate() {
                let lead = if i == 0 { "  " } else { "  caused by: " };
                let _ = writeln!(t, "{lead}{e}");
            }
        }
        let _ = writeln!(
            t,
            "\nLast good snapshot: {}",
            match &self.last_good {
                Some((id, at)) => format!(
                    "{id}, made {} ({} h ago)",
                    self.local(*at),
                    (self.at - *at).num_hours()
                ),
                None => "none recorded on this host".into(),
            }
        );
        if !self.commands.is_empty() {
            let _ = writeln!(t, "\nWhat to run:");
            for c in &self.commands {
                let _ = writeln!(t, "  {c}");
            }
        }
        if self.kind == Kind::Failed || self.kind == Kind::Stale {
            // In the unit it was most likely given in ("30m" is not "every 0 h").
            let every = match self.repeat_after.as_secs() {
                s if s % 3600 == 0 => format!("{} h", s / 3600),
                s if s % 60 == 0 => format!("{} min", s / 60),
                s => format!("{s} s"),
            };
            let _ = writeln!(
                t,
                "\nThis alert repeats at most every {every} until it is resolved."
            );
        }
        t
    }
}

/// A channel that delivers events.
pub trait Notifier: Send + Sync {
    /// `email`, `sentry`, `heartbeat`.
    fn name(&self) -> &'static str;
    /// Whether this channel reports this event at all.
    fn wants(&self, event: &Event) -> bool;
    /// Delivers the event.
    ///
    /// # Errors
    /// Why it could not (the server's answer, a timeout): logged by the caller.
    fn send(&self, event: &Event) -> Result<(), String>;
    /// For `coffer check`: whether the channel can work, without sending anything.
    ///
    /// # Errors
    /// What is wrong.
    fn check(&self) -> Result<String, String> {
        Ok("set up (coffer alert test sends a test message)".into())
    }
    /// A run starts (Sentry's in-progress check-in); returns what `run_finished` gets back.
    fn run_started(&self, _job: &str) -> Option<String> {
        None
    }
    /// Every finished run (success or failure), whatever the flood control says: the
    /// heartbeat's pings, Sentry's cron check-ins.
    ///
    /// # Errors
    /// Why it could not report.
    fn run_finished(&self, _run: &FinishedRun<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// A run that ended in success or failure, for the per-run hooks.
pub struct FinishedRun<'a> {
    pub job: &'a str,
    pub ok: bool,
    /// The error, or what succeeded.
    pub detail: &'a str,
    /// What this channel's `run_started` returned.
    pub token: Option<&'a str>,
    pub seconds: Option<f64>,
}

/// What the channels said when a run started.
pub struct Started {
    tokens: Vec<Option<String>>,
    at: std::time::Instant,
}

/// The configured channels.
pub struct Alerts {
    notifiers: Vec<Box<dyn Notifier>>,
    /// Channels configured but not usable, and why.
    broken: Vec<(&'static str, String)>,
    config: AlertsConfig,
    timezone: chrono_tz::Tz,
    config_path: std::path::PathBuf,
}

impl Alerts {
    /// The channels of `config`; one that cannot be set up (an unreadable secret) is logged
    /// and left out, never failing the job.
    pub fn from_config(config: &Config) -> Alerts {
        let a = &config.alerts;
        let mut notifiers: Vec<Box<dyn Notifier>> = Vec::new();
        let mut broken = Vec::new();
        let mut add = |made: Result<Box<dyn Notifier>, String>, name: &'static str| match made {
            Ok(n) => notifiers.push(n),
            Err(e) => {
                tracing::error!("alerts through {name} are off: {e}");
                broken.push((name, e));
            }
        };
        if let Some(e) = &a.email {
            add(email::Email::new(e).map(|n| Box::new(n) as _), "email");
        }
        if let Some(s) = &a.sentry {
            add(sentry::Sentry::new(s).map(|n| Box::new(n) as _), "sentry");
        }
        if let Some(h) = &a.heartbeat {
            add(
                heartbeat::Heartbeat::new(h).map(|n| Box::new(n) as _),
                "heartbeat",
            );
        }
        Alerts {
            notifiers,
            broken,
            config: a.clone(),
            timezone: config.timezone,
            config_path: config.path.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    /// For `coffer check`: every configured channel, usable or not.
    pub fn check(&self) -> Vec<(&'static str, Result<String, String>)> {
        let mut out: Vec<_> = self
            .notifiers
            .iter()
            .map(|n| (n.name(), n.check()))
            .collect();
        out.extend(self.broken.iter().map(|(n, e)| (*n, Err(e.clone()))));
        out
    }

    fn event(&self, kind: Kind, job: &str, summary: String) -> Event {
        Event {
            kind,
            job: job.to_string(),
            trigger: None,
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            at: Utc::now(),
            summary,
            errors: Vec::new(),
            source: None,
            stage: None,
            snapshot: None,
            last_good: None,
            commands: Vec::new(),
            timezone: self.timezone,
            repeat_after: self.config.repeat_after,
        }
    }

    fn coffer(&self, args: &str) -> String {
        format!("coffer --config {} {args}", self.config_path.display())
    }

    /// Sends `event` through every channel that wants it; returns each channel's result.
    pub fn dispatch(&self, event: &Event) -> Vec<(&'static str, Result<(), String>)> {
        let mut results = Vec::new();
        for n in self.notifiers.iter().filter(|n| n.wants(event)) {
            let result = n.send(event);
            if let Err(e) = &result {
                tracing::error!(
                    channel = n.name(),
                    kind = event.kind.as_str(),
                    job = event.job,
                    "could not send the alert: {e}"
                );
            }
            results.push((n.name(), result));
        }
        results
    }

    /// Tells the channels a run of `job` starts.
    pub fn run_started(&self, job: &str) -> Started {
        Started {
            tokens: self.notifiers.iter().map(|n| n.run_started(job)).collect(),
            at: std::time::Instant::now(),
        }
    }

    /// Turns a finished run into notifications, with flood control per channel.
    pub fn job_finished(
        &self,
        catalog: Option<&mut Catalog>,
        job: &str,
        trigger: Trigger,
        finish: &Finish,
        error: Option<&Failure>,
        started: Option<&Started>,
    ) {
        if self.notifiers.is_empty() {
            return;
        }
        let ok = match finish.outcome {
            Outcome::Success => true,
            Outcome::Failure => false,
            // Stopped by a shutdown, skipped behind another job: nothing went wrong.
            // (A finish is never `Running`.)
            Outcome::Stopped | Outcome::Skipped | Outcome::Interrupted | Outcome::Running => {
                return;
            }
        };
        let detail = match (ok, error) {
            (false, Some(e)) => {
                let mut text = String::new();
                for cause in &e.chain {
                    if !text.contains(cause.as_str()) {
                        if !text.is_empty() {
                            text.push_str(": ");
                        }
                        text.push_str(cause);
                    }
                }
                text
            }
            (false, None) => finish.error.clone().unwrap_or_default(),
            (true, _) => match &finish.snapshot {
                Some(id) => format!("the {job} succeeded (snapshot {id})"),
                None => format!("the {job} succeeded"),
            },
        };
        self.report_run(job, ok, &detail, started);
        let mut catalog = catalog;
        if ok {
            self.warn(catalog.as_deref_mut(), job, trigger, finish);
        }
        let history = catalog.as_mut().and_then(|c| c.history(job).ok());
        let Some(event) = self.finished_event(
            catalog.as_deref_mut(),
            job,
            trigger,
            finish,
            error,
            ok,
            detail,
        ) else {
            return;
        };
        self.deliver(catalog, &event, history.as_ref());
    }

    /// Each channel's record of the run (a check-in, a ping), whatever the outcome.
    fn report_run(&self, job: &str, ok: bool, detail: &str, started: Option<&Started>) {
        for (i, n) in self.notifiers.iter().enumerate() {
            let run = FinishedRun {
                job,
                ok,
                detail,
                token: started
                    .and_then(|s| s.tokens.get(i))
                    .and_then(|t| t.as_deref()),
                seconds: started.map(|s| s.at.elapsed().as_secs_f64()),
            };
            if let Err(e) = n.run_finished(&run) {
                tracing::error!(channel = n.name(), job, "could not report the run: {e}");
            }
        }
    }

    /// The event a finished run makes: a failure, a recovery (the run before failed), or a
    /// success when `notify_on_success`; none for a success otherwise.
    #[allow(clippy::too_many_arguments)]
    fn finished_event(
        &self,
        mut catalog: Option<&mut Catalog>,
        job: &str,
        trigger: Trigger,
        finish: &Finish,
        error: Option<&Failure>,
        ok: bool,
        detail: String,
    ) -> Option<Event> {
        let kind = if ok {
            let recent = catalog
                .as_mut()
                .and_then(|c| c.recent_outcomes(job, 2).ok())
                .unwrap_or_default();
            // This run is the newest; the one before it failed: recovered.
            if recent.get(1) == Some(&Outcome::Failure) {
                Kind::Recovered
            } else if self.config.notify_on_success {
                Kind::Success
            } else {
                return None;
            }
        } else {
            Kind::Failed
        };
        let mut event = self.event(kind, job, String::new());
        event.trigger = Some(trigger);
        event.snapshot = finish.snapshot.clone();
        event.last_good = catalog
            .as_mut()
            .and_then(|c| c.history("backup").ok())
            .and_then(|h| h.last_success)
            .and_then(|r| Some((r.snapshot?, r.finished.unwrap_or(r.started))));
        match kind {
            Kind::Failed => {
                event.errors = error.map_or_else(
                    || finish.error.clone().into_iter().collect(),
                    |e| e.chain.clone(),
                );
                event.summary = event
                    .errors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("the {job} failed"));
                if let Some(f) = error {
                    event.source = f.source.clone().or(event.source.take());
                    if f.stage.is_some() {
                        event.stage = f.stage.clone();
                    }
                    if f.snapshot.is_some() {
                        event.snapshot = f.snapshot.clone();
                    }
                }
                event.commands = self.commands_for(job);
            }
            Kind::Recovered => {
                event.summary = match &finish.snapshot {
                    Some(id) => format!("the {job} succeeded again (snapshot {id})"),
                    None => format!("the {job} succeeded again"),
                };
            }
            _ => event.summary = detail,
        }
        Some(event)
    }

    /// Sends `event` to every channel that wants it, each quiet on its own for
    /// `repeat_after` after a failure it was told of, and records who took it.
    fn deliver(
        &self,
        mut catalog: Option<&mut Catalog>,
        event: &Event,
        history: Option<&JobHistory>,
    ) {
        let (job, kind) = (event.job.as_str(), event.kind);
        let now = Utc::now();
        let repeat = chrono::Duration::from_std(self.config.repeat_after).unwrap_or_default();
        let last_success = history
            .and_then(|h| h.last_success.as_ref())
            .map(|r| r.started);
        let mut delivered = Vec::new();
        for n in self.notifiers.iter().filter(|n| n.wants(event)) {
            // Each channel is quiet on its own: a relay that was down gets the next failure
            // even if Sentry took the last one.
            if kind == Kind::Failed {
                let last = catalog
                    .as_mut()
                    .and_then(|c| c.last_alert(job, "failed", Some(n.name())).ok())
                    .flatten();
                let quiet = last.is_some_and(|sent| {
                    last_success.is_none_or(|ok| sent > ok) && now - sent < repeat
                });
                if quiet {
                    tracing::info!(
                        job,
                        channel = n.name(),
                        "failed again; alerted already within alerts.repeat_after"
                    );
                    continue;
                }
            }
            match n.send(event) {
                Ok(()) => delivered.push(n.name()),
                Err(e) => tracing::error!(
                    channel = n.name(),
                    kind = kind.as_str(),
                    job,
                    "could not send the alert: {e}"
                ),
            }
        }
        if let Some(c) = catalog.as_mut()
            && !delivered.is_empty()
            && let Err(e) = c.record_alert(job, kind.as_str(), &delivered)
        {
            tracing::warn!("could not record the alert sent: {e}");
        }
    }

    /// Each warning of a successful run, as a WARNING event of its own (a run's warnings
    /// are new each time, so there is no flood control).
    fn warn(&self, catalog: Option<&mut Catalog>, job: &str, trigger: Trigger, finish: &Finish) {
        let mut catalog = catalog;
        for w in &finish.warnings {
            let mut event = self.event(Kind::Warning, job, w.clone());
            event.trigger = Some(trigger);
            event.snapshot = finish.snapshot.clone();
            event.commands = vec![
                format!("inspect:  {}", self.coffer("list")),
                format!("          {}", self.coffer("check")),
            ];
            let delivered: Vec<&'static str> = self
                .dispatch(&event)
                .into_iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(n, _)| n)
                .collect();
            if let Some(c) = catalog.as_mut()
                && !delivered.is_empty()
                && let Err(e) = c.record_alert(job, Kind::Warning.as_str(), &delivered)
            {
                tracing::warn!("could not record the alert sent: {e}");
            }
        }
    }

    fn commands_for(&self, job: &str) -> Vec<String> {
        let retry = match job {
            "backup" => self.coffer("backup"),
            "prune" => self.coffer("prune --dry-run"),
            "verify" => self.coffer("verify latest"),
            other => self.coffer(other),
        };
        vec![
            format!("retry:    {retry}"),
            format!("inspect:  {}", self.coffer("status")),
            "          journalctl -u coffer --since -1d".into(),
        ]
    }

    /// The daemon's staleness check: the newest complete snapshot (`None`: there is none)
    /// older than `max_age` alerts, at most once per `repeat_after`.
    ///
    /// `watching_since`: since when backups were expected (the daemon's start, or its first
    /// recorded backup): an empty store is stale only once that is older than `max_age`.
    pub fn check_stale(
        &self,
        catalog: Option<&mut Catalog>,
        newest: Option<(String, DateTime<Utc>)>,
        now: DateTime<Utc>,
        watching_since: DateTime<Utc>,
    ) -> bool {
        let max_age = chrono::Duration::from_std(self.config.max_age).unwrap_or_default();
        let stale = match &newest {
            Some((_, t)) => now - *t > max_age,
            None => now - watching_since > max_age,
        };
        if !stale || self.notifiers.is_empty() {
            return stale;
        }
        let mut catalog = catalog;
        let repeat = chrono::Duration::from_std(self.config.repeat_after).unwrap_or_default();
        let last = catalog
            .as_mut()
            .and_then(|c| c.last_alert("store", "stale", None).ok())
            .flatten();
        if last.is_some_and(|sent| now - sent < repeat) {
            return stale;
        }
        let summary = match &newest {
            Some((id, t)) => format!(
                "the newest snapshot ({id}) is {} h old, more than alerts.max_age ({} h): \
                 backups have stopped succeeding",
                (now - *t).num_hours(),
                self.config.max_age.as_secs() / 3600
            ),
            None => "the store holds no snapshot at all".into(),
        };
        let mut event = self.event(Kind::Stale, "store", summary);
        event.last_good = newest;
        event.commands = vec![
            format!("inspect:  {}", self.coffer("status")),
            format!("          {}", self.coffer("check")),
            format!("retry:    {}", self.coffer("backup")),
        ];
        let results = self.dispatch(&event);
        let delivered: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect();
        if let Some(c) = catalog.as_mut()
            && !delivered.is_empty()
            && let Err(e) = c.record_alert("store", "stale", &delivered)
        {
            tracing::warn!("could not record the alert sent: {e}");
        }
        stale
    }

    /// `coffer alert test`: one test message through every channel; channels that could
    /// not be set up are reported as failed.
    pub fn test(&self) -> Vec<(&'static str, Result<(), String>)> {
        let mut event = self.event(
            Kind::Test,
            "alert",
            "a test message from 'coffer alert test': this channel works".into(),
        );
        event.commands = vec![format!("status:   {}", self.coffer("status"))];
        let mut results = self.dispatch(&event);
        results.extend(self.broken.iter().map(|(n, e)| (*n, Err(e.clone()))));
        results
    }
}

/// What went wrong in a failed run, as the job runner hands it to the alerts: the error
/// chain, and where it happened when the job knows (a backup's source, stage and snapshot).
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// The error and its causes, outermost first.
    pub chain: Vec<String>,
    pub source: Option<String>,
    pub stage: Option<String>,
    pub snapshot: Option<String>,
}

/// A run being watched by the alert channels, from its start (see `job::run`).
pub struct Watch {
    alerts: Alerts,
    started: Option<Started>,
}

/// Starts watching a run of `job`.
pub fn watch(config: &Config, job: &str) -> Watch {
    let alerts = Alerts::from_config(config);
    let started = (!alerts.is_empty()).then(|| alerts.run_started(job));
    Watch { alerts, started }
}

impl Watch {
    /// The run ended: the per-run hooks, then the alerts it calls for.
    pub fn finished(
        self,
        config: &Config,
        job: &str,
        trigger: Trigger,
        finish: &Finish,
        error: Option<&Failure>,
    ) {
        if self.alerts.is_empty() {
            return;
        }
        let mut catalog = Catalog::open(&config.state_dir)
            .map_err(|e| tracing::warn!("alerts without flood control: {e}"))
            .ok();
        self.alerts.job_finished(
            catalog.as_mut(),
            job,
            trigger,
            finish,
            error,
            self.started.as_ref(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn alerts() -> Alerts {
        let text = "[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                    [store]\ntype = \"local\"\npath = \"/srv/store\"\n\
                    [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"/srv/site\"\n";
        let config = Config::parse(text, std::path::Path::new("/etc/coffer/coffer.toml")).unwrap();
        Alerts::from_config(&config)
    }

    #[test]
    fn staleness_counts_from_the_newest_snapshot_or_from_when_backups_were_expected() {
        let a = alerts();
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let h = |n: i64| now - chrono::Duration::hours(n);
        // The default max_age is 26 h.
        assert!(!a.check_stale(None, Some(("a".into(), h(25))), now, h(100)));
        assert!(a.check_stale(None, Some(("a".into(), h(27))), now, h(100)));
        // An empty store on a fresh install is not stale until max_age has passed.
        assert!(!a.check_stale(None, None, now, h(1)));
        assert!(a.check_stale(None, None, now, h(30)));
    }

    #[test]
    fn the_email_says_what_failed_when_and_what_to_run() {
        let a = alerts();
        let mut e = a.event(
            Kind::Failed,
            "backup",
            "backup of source 'db' failed".into(),
        );
        e.at = Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 4).unwrap();
        e.timezone = "Europe/Berlin".parse().unwrap();
        e.trigger = Some(Trigger::Schedule);
        e.errors = vec![
            "backup of source 'db' failed".into(),
            "pg_dump exited with status 1".into(),
        ];
        e.source = Some("db".into());
        e.stage = Some("reading the source".into());
        e.last_good = Some((
            "20261122T010003Z-0a1b2c".into(),
            Utc.with_ymd_and_hms(2026, 11, 22, 1, 0, 40).unwrap(),
        ));
        e.commands = a.commands_for("backup");
        assert!(e.subject().starts_with("[coffer] FAILED backup on "));
        let text = e.text();
        for expected in [
            "backup FAILED at 2026-11-23 02:00:04 CET, schedule.",
            "Source:    db",
            "Stage:     reading the source",
            "  caused by: pg_dump exited with status 1",
            "Last good snapshot: 20261122T010003Z-0a1b2c, made 2026-11-22 02:00:40 CET (23 h ago)",
            "retry:    coffer --config /etc/coffer/coffer.toml backup",
            "repeats at most every 6 h",
        ] {
            assert!(text.contains(expected), "{expected:?} not in:\n{text}");
        }
        e.repeat_after = Duration::from_secs(30 * 60);
        assert!(e.text().contains("repeats at most every 30 min until"));
    }
}
