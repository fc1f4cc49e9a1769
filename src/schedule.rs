//! The daemon's timing: cron schedules read in the configured time zone, and the loop that
//! fires jobs one at a time.
//!
//! Next fire times are computed afresh from the schedule, the time zone's rules and the
//! clock after every wake-up, never from an offset captured once: a daily 02:00 job fires at
//! 02:00 local time on both sides of a DST change (on the night the clocks skip 02:00 it
//! fires at 03:00, the first time that exists; when 02:00 happens twice, once). The loop
//! sleeps at most a minute at a time and looks at the clock again, so a wall-clock jump (a
//! suspended VM, an NTP step) delays a job by at most that minute.
//!
//! Overlap: jobs run one at a time. A fire that comes while the same job is still running
//! or waiting is skipped (and reported), so nothing queues without bound; a fire of another
//! job waits for the running one. The loop knows nothing of backups: a `Runner` does the work,
//! which lets tests drive it under tokio's paused time.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;

/// The longest the loop sleeps before it reads the clock again.
const MAX_NAP: Duration = Duration::from_secs(60);

/// A cron schedule with seconds (`"0 0 2 * * *"`: sec min hour day-of-month month
/// day-of-week), as tokio-cron-scheduler reads it: when both day fields are set, a day must
/// match both.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?})", self.expr)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.expr)
    }
}

impl Schedule {
    /// Parses a cron expression.
    ///
    /// # Errors
    /// The reason it is not a schedule, worded for the config's reader.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if fields == 5 {
            return Err(format!(
                "'{expr}' has 5 fields; coffer's cron has seconds first (6 fields: sec min \
                 hour day month weekday), e.g. \"0 {expr}\""
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map_err(|e| format!("'{expr}' is not a cron schedule: {e}"))?;
        let schedule = Schedule {
            expr: expr.trim().to_string(),
            cron,
        };
        // A schedule that never fires (31 February) is a mistake, not a schedule.
        if schedule.next_after(Utc::now(), chrono_tz::UTC).is_none() {
            return Err(format!("'{expr}' never fires"));
        }
        Ok(schedule)
    }

    /// The first fire time strictly after `after`, the schedule read in `tz`.
    ///
    /// In the hour a DST change repeats, croner resolves a local time to its first instant,
    /// which can lie before `after` (asked at 02:10 CET, "02:30" is 02:30 CEST, already
    /// past): the search then starts again a quarter of an hour later, until it finds a time
    /// ahead. (A job every few minutes so loses at most those minutes, once a year.)
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Fires are on whole seconds (croner would carry the fraction of `after` along).
        let mut from = after.with_nanosecond(0).unwrap_or(after);
        for _ in 0..16 {
            let t = self
                .cron
                .find_next_occurrence(&from.with_timezone(&tz), false)
                .ok()?
                .with_timezone(&Utc);
            if t > after {
                return Some(t);
            }
            from += chrono::Duration::minutes(15);
        }
        None
    }

    /// The last fire time at or before `at`.
    pub fn last_at_or_before(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What a scheduled job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A backup, then a prune when it succeeded.
    Backup,
    /// A verify of the newest snapshot (`deep`: decrypt and read it all).
    Verify { deep: bool },
    /// A restore drill of the newest snapshot into the `[drill]` staging targets.
    Drill,
}

impl JobKind {
    /// The job's name in config, logs, the catalog and metrics.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Verify { .. } => "verify",
            JobKind::Drill => "drill",
        }
    }
}

/// One `[jobs.*]` entry.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub kind: JobKind,
    pub schedule: Schedule,
    /// Run once at start-up when a fire was missed while the daemon was down.
    pub catch_up: bool,
}

/// Why a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// A fire missed while the daemon was not running.
    CatchUp,
    /// By hand, from the command line.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Manual => "manual",
        }
    }
}

/// Wall-clock time for the loop; tests use one driven by tokio's (paused) time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at `base` and advances with tokio's time (which tests pause and
/// advance).
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> TokioClock {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.start.elapsed()).unwrap_or_default();
        self.base + elapsed
    }
}

/// A boxed future of a run.
pub type RunFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Does the work of the jobs the loop fires.
pub trait Runner: Send + Sync {
    /// Runs `job`; the loop starts no other job until the future ends.
    fn run(&self, job: &JobSpec, trigger: Trigger) -> RunFuture;
    /// `job` came due while it was still running or waiting, and was skipped.
    fn skipped(&self, job: &JobSpec, at: DateTime<Utc>);
    /// The loop computed the next fire of `job` (at start and after each of its runs).
    fn next_run(&self, job: &JobSpec, at: Option<DateTime<Utc>>);
}

/// The jobs whose fire was missed while the daemon was down: each `catch_up` job whose last
/// fire before `now` is later than its last recorded start (a job never run before is not
/// caught up — as systemd's Persistent= timers, which need a stamp).
pub fn missed(
    jobs: &[JobSpec],
    tz: Tz,
    now: DateTime<Utc>,
    last_started: &HashMap<&'static str, DateTime<Utc>>,
) -> Vec<usize> {
    jobs.iter()
        .enumerate()
        .filter(|(_, j)| j.catch_up)
        .filter_map(|(i, j)| {
            let last = last_started.get(j.kind.name())?;
            let due = j.schedule.last_at_or_before(now, tz)?;
            (due > *last).then_some(i)
        })
        .collect()
}

/// Runs the jobs on their schedules until `stop` turns true; returns the run still going
/// then (if any), for the caller to cancel and wait for. `catch_up` names jobs (indices into
/// `jobs`) to run once at start.
pub async fn run(
    jobs: Vec<JobSpec>,
    tz: Tz,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    catch_up: Vec<usize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let now = clock.now();
    let mut next: Vec<Option<DateTime<Utc>>> = jobs
        .iter()
        .map(|j| j.schedule.next_after(now, tz))
        .collect();
    for (job, at) in jobs.iter().zip(&next) {
        runner.next_run(job, *at);
    }
    let mut queue: VecDeque<(usize, Trigger)> = catch_up
        .into_iter()
        .filter(|i| *i < jobs.len())
        .map(|i| (i, Trigger::CatchUp))
        .collect();
    let mut running: Option<(usize, tokio::task::JoinHandle<()>)> = None;
    loop {
        if *stop.borrow() {
            return running.map(|(_, h)| h);
        }
        if running.is_none()
            && let Some((i, trigger)) = queue.pop_front()
        {
            let run = runner.run(&jobs[i], trigger);
            running = Some((i, tokio::spawn(run)));
        }
        let now = clock.now();
        let nap = next
            .iter()
            .flatten()
            .min()
            .map_or(MAX_NAP, |t| (*t - now).to_std().unwrap_or(Duration::ZERO))
            .min(MAX_NAP);
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    // The daemon dropped its end: nobody can stop us any more, so stop now.
                    return running.map(|(_, h)| h);
                }
                continue;
            }
            done = async {
                match &mut running {
                    Some((_, handle)) => handle.await,
                    None => std::future::pending().await,
                }
            } => {
                let (i, _) = running.take().expect("a run was going");
                if let Err(e) = done {
                    tracing::error!(job = jobs[i].kind.name(), "the run ended abnormally: {e}");
                }
                runner.next_run(&jobs[i], next[i]);
                continue;
            }
        }
        let now = clock.now();
        for (i, job) in jobs.iter().enumerate() {
            let Some(due) = next[i] else { continue };
            if due > now {
                continue;
            }
            // However many fires a long sleep (a suspended host) covered, one run.
            next[i] = job.schedule.next_after(now, tz);
            let busy = running.as_ref().is_some_and(|(r, _)| *r == i)
                || queue.iter().any(|(q, _)| *q == i);
            if busy {
                runner.skipped(job, due);
                runner.next_run(job, next[i]);
            } else {
                queue.push_back((i, Trigger::Schedule));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Mutex;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn job(kind: JobKind, expr: &str, catch_up: bool) -> JobSpec {
        JobSpec {
            kind,
            schedule: Schedule::parse(expr).unwrap(),
            catch_up,
        }
    }

    #[test]
    fn bad_expressions_say_why() {
        let five = Schedule::parse("0 2 * * *").unwrap_err();
        assert!(
            five.contains("5 fields") && five.contains("\"0 0 2 * * *\""),
            "{five}"
        );
        let range = Schedule::parse("0 0 25 * * *").unwrap_err();
        assert!(range.contains("'0 0 25 * * *'"), "{range}");
        assert!(Schedule::parse("every day").is_err());
        assert!(
            Schedule::parse("0 0 0 31 2 *")
                .unwrap_err()
                .contains("never")
        );
        assert!(Schedule::parse("0 30 4 * * Sun").is_ok());
    }

    #[test]
    fn next_fire_is_local_time_across_dst() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::parse("0 0 2 * * *").unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00 CEST; 02:00 does not exist that night.
        let mut t = utc(2026, 3, 27, 12, 0, 0);
        let mut fires = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t, berlin).unwrap();
            fires.push(t);
        }
        assert_eq!(
            fires,
            [
                utc(2026, 3, 28, 1, 0, 0), // 02:00 CET
                utc(2026, 3, 29, 1, 0, 0), // 03:00 CEST, the first time after the gap
                utc(2026, 3, 30, 0, 0, 0), // 02:00 CEST
                utc(2026, 3, 31, 0, 0, 0), // 02:00 CEST
            ]
        );
        // 2026-10-25: 02:00–03:00 happens twice; a 02:30 job fires once.
        let s = Schedule::parse("0 30 2 * * *").unwrap();
        let mut t = utc(2026, 10, 24, 12, 0, 0);
        let mut fires = Vec::new();
        for _ in 0..3 {
            t = s.next_after(t, berlin).unwrap();
            fires.push(t);
        }
        assert_eq!(
            fires,
            [
                utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST
                utc(2026, 10, 26, 1, 30, 0), // 02:30 CET, the next day
                utc(2026, 10, 27, 1, 30, 0),
            ]
        );
        // Asked at any minute of the repeated hour, the answer is always ahead.
        for expr in ["0 30 2 * * *", "0 */15 * * * *", "0 0 * * * *"] {
            let s = Schedule::parse(expr).unwrap();
            let mut t = utc(2026, 10, 24, 23, 55, 0);
            while t < utc(2026, 10, 25, 2, 5, 0) {
                let next = s.next_after(t, berlin).unwrap();
                assert!(next > t, "{expr} at {t}: {next}");
                assert!(
                    next - t <= chrono::Duration::hours(25),
                    "{expr} at {t}: {next}"
                );
                t += chrono::Duration::minutes(1);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starting_inside_the_repeated_hour_does_not_loop() {
        // 01:10 UTC on 25 October 2026 is 02:10 CET, the second pass of 02:00–03:00.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let log = drive(
            vec![job(JobKind::Backup, "0 30 2 * * *", false)],
            berlin,
            utc(2026, 10, 25, 1, 10, 0),
            Duration::from_secs(26 * 3600),
            &[("backup", Duration::from_secs(60))],
            vec![],
        )
        .await;
        assert_eq!(log, ["10-26 01:30:00 backup schedule"]);
    }

    #[test]
    fn fires_fall_on_whole_seconds() {
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        let after = utc(2026, 11, 23, 9, 0, 1) + chrono::Duration::milliseconds(155);
        assert_eq!(
            s.next_after(after, chrono_tz::UTC),
            Some(utc(2026, 11, 23, 9, 0, 2))
        );
        let after = utc(2026, 11, 23, 9, 0, 2) + chrono::Duration::milliseconds(1);
        assert_eq!(
            s.next_after(after, chrono_tz::UTC),
            Some(utc(2026, 11, 23, 9, 0, 4))
        );
    }

    #[test]
    fn missed_fires_are_caught_up_once_and_only_when_asked() {
        let tz = chrono_tz::UTC;
        let jobs = vec![
            job(JobKind::Backup, "0 0 2 * * *", true),
            job(JobKind::Verify { deep: false }, "0 0 3 * * *", false),
        ];
        let now = utc(2026, 11, 23, 9, 0, 0);
        let mut last = HashMap::new();
        // Never ran: nothing to catch up.
        assert!(missed(&jobs, tz, now, &last).is_empty());
        // Last ran yesterday at 02:00; today's 02:00 passed while down: once.
        last.insert("backup", utc(2026, 11, 22, 2, 0, 3));
        last.insert("verify", utc(2026, 11, 20, 3, 0, 0));
        assert_eq!(missed(&jobs, tz, now, &last), [0]);
        // Already ran today.
        last.insert("backup", utc(2026, 11, 23, 2, 0, 1));
        assert!(missed(&jobs, tz, now, &last).is_empty());
    }

    /// Records every start (job, trigger, clock time); each run takes `length` of tokio time.
    struct Recorder {
        clock: Arc<dyn Clock>,
        length: HashMap<&'static str, Duration>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Runner for Recorder {
        fn run(&self, job: &JobSpec, trigger: Trigger) -> RunFuture {
            let line = format!(
                "{} {} {}",
                self.clock.now().format("%m-%d %H:%M:%S"),
                job.kind.name(),
                trigger.as_str()
            );
            self.log.lock().unwrap().push(line);
            let length = self
                .length
                .get(job.kind.name())
                .copied()
                .unwrap_or_default();
            Box::pin(tokio::time::sleep(length))
        }
        fn skipped(&self, job: &JobSpec, at: DateTime<Utc>) {
            let line = format!(
                "{} {} skipped",
                at.format("%m-%d %H:%M:%S"),
                job.kind.name()
            );
            self.log.lock().unwrap().push(line);
        }
        fn next_run(&self, _: &JobSpec, _: Option<DateTime<Utc>>) {}
    }

    /// Runs the loop from `start` for `span` of paused tokio time; returns the log.
    async fn drive(
        jobs: Vec<JobSpec>,
        tz: Tz,
        start: DateTime<Utc>,
        span: Duration,
        length: &[(&'static str, Duration)],
        catch_up: Vec<usize>,
    ) -> Vec<String> {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(start));
        let log = Arc::new(Mutex::new(Vec::new()));
        let runner = Arc::new(Recorder {
            clock: Arc::clone(&clock),
            length: length.iter().copied().collect(),
            log: Arc::clone(&log),
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let looped = tokio::spawn(run(jobs, tz, clock, runner, catch_up, rx));
        tokio::time::sleep(span).await;
        tx.send(true).unwrap();
        let _ = looped.await.unwrap();
        log.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_local_times_through_a_dst_change() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let jobs = vec![job(JobKind::Backup, "0 0 2 * * *", true)];
        // Four days from Friday 27 March 2026 (UTC midnight = 01:00 CET).
        let log = drive(
            jobs,
            berlin,
            utc(2026, 3, 27, 0, 0, 0),
            Duration::from_secs(4 * 86400),
            &[],
            vec![],
        )
        .await;
        // In UTC: 01:00 while CET, 00:00 once CEST (the night of the change: 03:00 CEST).
        assert_eq!(
            log,
            [
                "03-27 01:00:00 backup schedule",
                "03-28 01:00:00 backup schedule",
                "03-29 01:00:00 backup schedule",
                "03-30 00:00:00 backup schedule",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_runs_once_then_the_schedule_goes_on() {
        let tz = chrono_tz::UTC;
        let jobs = vec![
            job(JobKind::Backup, "0 0 2 * * *", true),
            job(JobKind::Verify { deep: false }, "0 0 */6 * * *", false),
        ];
        let log = drive(
            jobs,
            tz,
            utc(2026, 11, 23, 9, 0, 0),
            Duration::from_secs(86400),
            &[("backup", Duration::from_secs(600))],
            vec![0],
        )
        .await;
        assert_eq!(
            log,
            [
                "11-23 09:00:00 backup catch-up",
                "11-23 12:00:00 verify schedule",
                "11-23 18:00:00 verify schedule",
                "11-24 00:00:00 verify schedule",
                "11-24 02:00:00 backup schedule",
                "11-24 06:00:00 verify schedule",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_still_running_is_skipped_and_others_wait_their_turn() {
        let tz = chrono_tz::UTC;
        // Backup every hour taking 2.5 h; verify at 01:30 waits for the backup running then.
        let jobs = vec![
            job(JobKind::Backup, "0 0 * * * *", false),
            job(JobKind::Verify { deep: false }, "0 30 1 * * *", false),
        ];
        let log = drive(
            jobs,
            tz,
            utc(2026, 11, 23, 0, 30, 0),
            Duration::from_secs(5 * 3600),
            &[
                ("backup", Duration::from_secs(9000)),
                ("verify", Duration::from_secs(60)),
            ],
            vec![],
        )
        .await;
        assert_eq!(
            log,
            [
                "11-23 01:00:00 backup schedule",
                "11-23 02:00:00 backup skipped",
                "11-23 03:00:00 backup skipped",
                // The 01:30 verify waited for the backup, which ended at 03:30.
                "11-23 03:30:00 verify schedule",
                "11-23 04:00:00 backup schedule",
                "11-23 05:00:00 backup skipped",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_sleep_fires_a_job_once_not_for_every_missed_fire() {
        // The clock jumps 5 hours ahead (a suspended VM) while tokio time moves 1 minute.
        struct Jumpy(TokioClock);
        impl Clock for Jumpy {
            fn now(&self) -> DateTime<Utc> {
                let t = self.0.now();
                if t >= utc(2026, 11, 23, 0, 1, 0) {
                    t + chrono::Duration::hours(5)
                } else {
                    t
                }
            }
        }
        let clock: Arc<dyn Clock> =
            Arc::new(Jumpy(TokioClock::starting_at(utc(2026, 11, 23, 0, 0, 30))));
        let log = Arc::new(Mutex::new(Vec::new()));
        let runner = Arc::new(Recorder {
            clock: Arc::clone(&clock),
            length: HashMap::new(),
            log: Arc::clone(&log),
        });
        let jobs = vec![job(JobKind::Backup, "0 0 * * * *", false)];
        let (tx, rx) = tokio::sync::watch::channel(false);
        let looped = tokio::spawn(run(jobs, chrono_tz::UTC, clock, runner, vec![], rx));
        tokio::time::sleep(Duration::from_secs(120)).await;
        tx.send(true).unwrap();
        let _ = looped.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["11-23 05:01:30 backup schedule"]);
    }
}
