//! The daemon as a process: SIGTERM in the middle of a backup, the lock it shares with the
//! CLI, a lock left by a killed process, catch-up of a missed run, systemd's notify socket,
//! and the unit files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Env, KillOnDrop};

/// A dump that never ends: 2 MB, then either silence (a dump blocked on a lock) or an endless
/// stream. The tool writes its pid beside itself.
#[derive(Clone, Copy)]
enum Endless {
    Hangs,
    Streams,
}

fn endless_dump_tool(env: &Env, how: Endless) -> PathBuf {
    let path = env.path("hanging-sqlite3");
    let tail = match how {
        Endless::Hangs => "exec sleep 300",
        Endless::Streams => "exec cat /dev/zero",
    };
    fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = \"--version\" ]; then echo '3.40.1 2022-12-28 endless'; exit 0; fi\n\
             echo $$ > \"$0.pid\"\n\
             head -c 2000000 /dev/urandom\n\
             {tail}\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Config `file` on the env's store and state: the site's files and the quickstart SQLite
/// database (dumped by `dump_tool` when given), plus `extra` TOML.
fn config(env: &Env, file: &str, dump_tool: Option<&Path>, extra: &str) -> PathBuf {
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("invoice.txt"), "INV-0001 paid\n").unwrap();
    let db = env.path("app.sqlite");
    if !db.exists() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite");
        fs::copy(fixture, &db).unwrap();
    }
    let tool = dump_tool
        .map(|t| format!("dump_tool = \"{}\"\n", t.display()))
        .unwrap_or_default();
    let path = env.path(file);
    fs::write(
        &path,
        format!(
            "state_dir = \"state\"\ntimezone = \"Europe/Berlin\"\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\
             [store]\ntype = \"local\"\npath = \"store\"\npart_size = \"256KiB\"\n\
             {extra}\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n\
             [[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\n{tool}",
            env.recipient,
            env.identity.display(),
            site.display(),
            db.display()
        ),
    )
    .unwrap();
    path
}

fn coffer(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffer"));
    cmd.arg("--config").arg(config).args(args);
    cmd
}

/// Starts the daemon with its log in `log`; it is killed when dropped.
fn start_daemon(config: &Path, log: &Path, notify: Option<&Path>) -> KillOnDrop {
    let mut cmd = coffer(config, &["daemon"]);
    cmd.stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    if let Some(socket) = notify {
        cmd.env("NOTIFY_SOCKET", socket);
    }
    KillOnDrop(cmd.spawn().unwrap())
}

/// Polls `done` for up to `limit`; a failure shows the daemon's log.
fn wait_for(what: &str, limit: Duration, log: &Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for {what}; the log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, sig).unwrap();
}

/// The lock file's `job=`/`pid=` lines.
fn lock_holder(env: &Env) -> (String, String) {
    let text = fs::read_to_string(env.path("state/backup.lock")).unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    (field("job"), field("pid"))
}

/// Snapshot folders in the store other than `known`.
fn other_snapshot_dirs(env: &Env, known: &[&str]) -> Vec<String> {
    fs::read_dir(env.store().join("snapshots"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !known.contains(&n.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

fn snapshot_ids(env: &Env, config: &Path) -> Vec<String> {
    let out = env.ok(config, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn status(env: &Env, config: &Path) -> serde_json::Value {
    serde_json::from_str(&env.ok(config, &["status", "--json"])).unwrap()
}

fn job<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {status:#}"))
}

fn alive(pid: i32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::test_kill_process(pid).is_ok()
}

#[test]
fn sigterm_while_a_dump_streams_stops_the_backup_leaving_no_snapshot() {
    sigterm_mid_backup(Endless::Streams);
}

#[test]
fn sigterm_while_a_dump_hangs_stops_the_backup_leaving_no_snapshot() {
    sigterm_mid_backup(Endless::Hangs);
}

/// SIGTERM to a daemon in the middle of a backup: it exits within 30 s, the dump tool is
/// gone, no snapshot and none of its parts are left, the earlier snapshot is intact, and the
/// run is recorded as stopped. Meanwhile a backup by hand meets the lock.
fn sigterm_mid_backup(how: Endless) {
    let env = Env::new();
    let good = config(&env, "good.toml", None, "");
    let first = env.backup(&good);
    let tool = endless_dump_tool(&env, how);
    let slow = config(
        &env,
        "slow.toml",
        Some(&tool),
        "[jobs.backup]\nschedule = \"* * * * * *\"\n",
    );
    let log = env.path("daemon.log");
    let mut daemon = start_daemon(&slow, &log, None);
    let daemon_pid = daemon.id().to_string();
    // Under way: the daemon holds the lock and parts of the new snapshot are stored.
    wait_for(
        "the daemon's backup to store parts",
        Duration::from_secs(60),
        &log,
        || {
            lock_holder(&env) == ("backup".into(), daemon_pid.clone())
                && env.path("hanging-sqlite3.pid").exists()
                && other_snapshot_dirs(&env, &[&first]).iter().any(|d| {
                    fs::read_dir(env.store().join("snapshots").join(d))
                        .is_ok_and(|mut e| e.next().is_some())
                })
        },
    );

    // A backup by hand meanwhile is told who holds the lock.
    let out = env.fails(&good, &["backup"]);
    assert!(
        out.contains(&format!(
            "another coffer backup is running (pid {daemon_pid}, started "
        )),
        "{out}"
    );

    let tool_pid: i32 = fs::read_to_string(env.path("hanging-sqlite3.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let asked = Instant::now();
    signal(&daemon, rustix::process::Signal::TERM);
    let exit = daemon.wait().unwrap();
    let took = asked.elapsed();
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "{exit:?}\n{log_text}");
    assert!(took < Duration::from_secs(30), "took {took:?}\n{log_text}");
    assert!(!alive(tool_pid), "the dump tool outlived the daemon");

    // No new snapshot, nothing of it left in the store, the earlier one intact.
    assert_eq!(snapshot_ids(&env, &good), [first.as_str()]);
    assert_eq!(other_snapshot_dirs(&env, &[&first]), Vec::<String>::new());
    env.ok(&good, &["verify", "--all"]);
    let s = status(&env, &good);
    let backup = job(&s, "backup");
    assert_eq!(backup["last_run"]["outcome"], "stopped", "{s:#}");
    assert!(backup["running"].is_null(), "{s:#}");
    assert!(log_text.contains("SIGTERM: stopping"), "{log_text}");
}

#[test]
fn ctrl_c_on_a_backup_by_hand_removes_what_it_stored() {
    let env = Env::new();
    let good = config(&env, "good.toml", None, "");
    let first = env.backup(&good);
    let tool = endless_dump_tool(&env, Endless::Streams);
    let slow = config(&env, "slow.toml", Some(&tool), "");
    let log = env.path("backup.log");
    let mut cli = coffer(&slow, &["backup"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "the backup to store parts",
        Duration::from_secs(60),
        &log,
        || {
            env.path("hanging-sqlite3.pid").exists()
                && !other_snapshot_dirs(&env, &[&first]).is_empty()
        },
    );
    signal(&cli, rustix::process::Signal::INT);
    let exit = cli.wait().unwrap();
    let said = fs::read_to_string(&log).unwrap();
    assert_eq!(exit.code(), Some(130), "SIGINT: {said}");
    assert!(said.contains("stopped: coffer is shutting down"), "{said}");
    assert!(said.contains("no snapshot was written"), "{said}");
    assert_eq!(snapshot_ids(&env, &good), [first.as_str()]);
    assert_eq!(other_snapshot_dirs(&env, &[&first]), Vec::<String>::new());
    let s = status(&env, &good);
    assert_eq!(job(&s, "backup")["last_run"]["outcome"], "stopped", "{s:#}");
}

#[test]
fn a_lock_left_by_a_killed_backup_is_taken_over() {
    let env = Env::new();
    let good = config(&env, "good.toml", None, "");
    let tool = endless_dump_tool(&env, Endless::Hangs);
    let slow = config(&env, "slow.toml", Some(&tool), "");
    let log = env.path("backup.log");
    let mut cli = coffer(&slow, &["backup"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let cli_pid = cli.id().to_string();
    wait_for(
        "the backup to take the lock",
        Duration::from_secs(60),
        &log,
        || {
            lock_holder(&env) == ("backup".into(), cli_pid.clone())
                && env.path("hanging-sqlite3.pid").exists()
        },
    );
    signal(&cli, rustix::process::Signal::KILL);
    cli.wait().unwrap();
    // The dump tool leads its own process group, which the killed coffer cannot stop.
    let tool_pid: i32 = fs::read_to_string(env.path("hanging-sqlite3.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(tool_pid).unwrap(),
        rustix::process::Signal::KILL,
    );
    // The lock file still names the dead process; the next backup goes ahead.
    assert_eq!(lock_holder(&env), ("backup".into(), cli_pid.clone()));
    let started = Instant::now();
    let id = env.backup(&good);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(snapshot_ids(&env, &good), [id]);
    // The killed run shows as interrupted, naming why.
    let s = status(&env, &good);
    let failure = &job(&s, "backup")["last_failure"];
    assert_eq!(failure["pid"].to_string(), cli_pid, "{s:#}");
    assert_eq!(failure["outcome"], "interrupted", "{s:#}");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("ended before this run did"),
        "{s:#}"
    );
}

/// A yearly fire (03:00 Berlin time on `day`.`month`, never the 29th to 31st) that fell
/// about 182 days before `now`, and how the daemon names its next fire.
fn yearly_fire_half_a_year_off(
    now: chrono::DateTime<chrono::Utc>,
) -> (u32, u32, chrono::DateTime<chrono_tz::Tz>) {
    use chrono::{Datelike, TimeZone};
    let berlin = chrono_tz::Europe::Berlin;
    let then = (now - chrono::TimeDelta::days(182)).with_timezone(&berlin);
    let (month, day) = (then.month(), then.day().min(28));
    let fire = |year| berlin.with_ymd_and_hms(year, month, day, 3, 0, 0).unwrap();
    let this_year = now.with_timezone(&berlin).year();
    let next = if fire(this_year) > now {
        fire(this_year)
    } else {
        fire(this_year + 1)
    };
    (month, day, next)
}

#[test]
fn the_yearly_test_fire_is_months_from_any_day() {
    for start in [
        "2026-01-01T01:59:59Z",
        "2026-07-02T02:00:00Z",
        "2028-02-29T12:00:00Z",
    ] {
        let now: chrono::DateTime<chrono::Utc> = start.parse().unwrap();
        let (month, day, next) = yearly_fire_half_a_year_off(now);
        assert!(day <= 28 && (1..=12).contains(&month));
        let ahead = next.with_timezone(&chrono::Utc) - now;
        assert!(
            ahead > chrono::TimeDelta::days(150) && ahead < chrono::TimeDelta::days(220),
            "{start}: next {next}"
        );
    }
}

#[test]
fn a_missed_backup_is_caught_up_once_and_systemd_hears_ready_and_stopping() {
    let env = Env::new();
    // Once a year at 03:00 Berlin time, on a day about half a year ago: missed for sure (the
    // last run is made older still), and its next fire is months away, whatever today is (a
    // fixed date such as 1 January misbehaved when the test ran near it).
    let (month, day, next) = yearly_fire_half_a_year_off(chrono::Utc::now());
    let cfg = config(
        &env,
        "coffer.toml",
        None,
        &format!(
            "[retention]\nkeep_last = 5\n[jobs.backup]\nschedule = \"0 0 3 {day} {month} *\"\n\
             [metrics]\ntextfile = \"coffer.prom\"\n"
        ),
    );
    env.backup(&cfg);
    let sqlite = Command::new("sqlite3")
        .arg(env.path("state/catalog.db"))
        .arg("UPDATE runs SET started = '2020-06-01T00:00:00.000Z'")
        .status();
    if !crate::support::prerequisite(
        sqlite.is_ok_and(|s| s.success()),
        "sqlite3 is needed to age the run history",
        "apt-get install sqlite3",
    ) {
        return;
    }
    let socket_path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log = env.path("daemon.log");
    let mut daemon = start_daemon(&cfg, &log, Some(&socket_path));
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    wait_for("the catch-up backup", Duration::from_secs(60), &log, || {
        snapshot_ids(&env, &cfg).len() == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(&daemon, rustix::process::Signal::TERM);
    let n = socket.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(daemon.wait().unwrap().success());
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("missed while the daemon was down"),
        "{log_text}"
    );
    assert!(
        log_text.contains(&format!(
            "next run at {}",
            next.format("%Y-%m-%d %H:%M:%S %Z")
        )),
        "{log_text}"
    );

    // A second start has nothing to catch up: no run at all.
    let runs_before = job(&status(&env, &cfg), "backup")["runs"].clone();
    let second_log = env.path("daemon2.log");
    let mut daemon = start_daemon(&cfg, &second_log, None);
    wait_for(
        "the second daemon to start",
        Duration::from_secs(30),
        &second_log,
        || fs::read_to_string(&second_log).is_ok_and(|l| l.contains("coffer daemon started")),
    );
    std::thread::sleep(Duration::from_secs(1));
    signal(&daemon, rustix::process::Signal::TERM);
    assert!(daemon.wait().unwrap().success());
    let second = fs::read_to_string(&second_log).unwrap();
    assert!(!second.contains("missed"), "{second}");
    assert!(!second.contains("starting"), "{second}");

    let s = status(&env, &cfg);
    let backup = job(&s, "backup");
    assert_eq!(backup["runs"], runs_before, "{s:#}");
    assert_eq!(backup["last_success"]["trigger"], "catch-up", "{s:#}");
    assert_eq!(backup["runs"]["success"], 2, "{s:#}");
    assert_eq!(backup["schedule"], format!("0 0 3 {day} {month} *"));
    let next_utc = next.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%S");
    assert!(
        backup["next_run"]
            .as_str()
            .unwrap()
            .starts_with(&next_utc.to_string()),
        "{s:#}"
    );
    assert!(s["newest_snapshot"]["age_seconds"].as_i64().unwrap() < 600);
    let prom = fs::read_to_string(env.path("coffer.prom")).unwrap();
    assert!(
        prom.contains("coffer_runs_total{coffer_job=\"backup\",outcome=\"success\"} 2"),
        "{prom}"
    );
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !crate::support::prerequisite(
        available,
        "systemd-analyze is not installed",
        "apt-get install systemd",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_coffer"));
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut names = Vec::new();
    for e in fs::read_dir(&units).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The binary's installed path, pointed at the one just built (verify checks it runs).
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/coffer", &bin.display().to_string());
        fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    assert!(names.contains(&"coffer.service".to_string()));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // It exits 0 even for unknown keys and bad values: anything it says is a finding.
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let unit = fs::read_to_string(units.join("coffer.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=coffer",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/coffer",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "MemoryDenyWriteExecute=yes",
        "IOSchedulingClass=idle",
    ] {
        assert!(unit.contains(line), "coffer.service lacks {line:?}");
    }
}
