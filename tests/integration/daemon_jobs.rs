//! What the daemon does on its own schedule: the prune after each backup, a scheduled verify
//! of the newest snapshot, systemd's watchdog pings (idle and while a job runs), and the
//! warning about an identity file others can read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Daemon, Env};

/// A config backing up a small site (and the given extra TOML: schedules, retention).
fn config(env: &Env, extra: &str) -> PathBuf {
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("invoice.txt"), "INV-0001 paid\n").unwrap();
    env.config(&site, "256KiB", extra)
}

fn status(env: &Env, config: &Path) -> serde_json::Value {
    serde_json::from_str(&env.ok(config, &["status", "--json"])).unwrap()
}

fn job(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn snapshot_ids(env: &Env, config: &Path) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&env.ok(config, &["list", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn successes(job: &serde_json::Value) -> u64 {
    job["runs"]["success"].as_u64().unwrap_or(0)
}

#[test]
fn each_scheduled_backup_is_pruned_after_and_a_scheduled_verify_checks_the_newest() {
    let env = Env::new();
    let cfg = config(
        &env,
        "[retention]\nkeep_last = 1\n\
         [jobs.backup]\nschedule = \"*/2 * * * * *\"\n\
         [jobs.verify]\nschedule = \"1/2 * * * * *\"\n",
    );
    // Every backup a full, so keep_last = 1 leaves one (a differential would pin its full).
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, format!("{text}full_every = \"0s\"\n")).unwrap();
    // One by hand first: a verify firing before any backup has nothing to check.
    let first = env.backup(&cfg);
    let mut daemon = Daemon::start(&cfg, env.path("daemon.log"));
    daemon.wait_for(
        "three scheduled backups and two verifies",
        Duration::from_secs(60),
        || {
            let s = status(&env, &cfg);
            successes(&job(&s, "backup")) >= 4 && successes(&job(&s, "verify")) >= 2
        },
    );
    assert!(daemon.stop().success());

    let s = status(&env, &cfg);
    let (backup, prune, verify) = (job(&s, "backup"), job(&s, "prune"), job(&s, "verify"));
    // A prune ran after every backup of the daemon's (not after the one by hand), but perhaps
    // the last, if the stop came between the two; with keep_last = 1 only the newest is left
    // after each prune.
    let (backups, prunes) = (successes(&backup) - 1, successes(&prune));
    assert!(prunes == backups || prunes + 1 == backups, "{s:#}");
    assert_eq!(prune["last_success"]["trigger"], "schedule", "{s:#}");
    let ids = snapshot_ids(&env, &cfg);
    assert_eq!(ids.len() as u64, 1 + backups - prunes, "{ids:?} {s:#}");
    assert!(!ids.contains(&first));
    let newest = ids.iter().max().unwrap();
    assert_eq!(backup["last_success"]["snapshot"], *newest, "{s:#}");
    // The prune counted what it left; the verify checked a snapshot the backups made.
    assert_eq!(prune["last_success"]["snapshots"], 1, "{s:#}");
    assert_eq!(verify["last_success"]["trigger"], "schedule", "{s:#}");
    assert!(verify["last_failure"].is_null(), "{s:#}");
    let verified = verify["last_success"]["snapshot"].as_str().unwrap();
    assert!(
        verified.len() == first.len() && verified > first.as_str() && verified <= newest.as_str()
    );
    let log = daemon_log(&env);
    assert!(log.contains("the newest snapshot verified"), "{log}");
    assert!(log.contains("pruned 1 snapshot(s), kept 1"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

fn daemon_log(env: &Env) -> String {
    fs::read_to_string(env.path("daemon.log")).unwrap()
}

/// The `WATCHDOG=1` datagrams that arrive on `socket` within `window`.
fn watchdog_pings(socket: &UnixDatagram, window: Duration) -> usize {
    let end = Instant::now() + window;
    let mut pings = 0;
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                pings += text.lines().filter(|l| *l == "WATCHDOG=1").count();
            }
            Err(_) => break,
        }
    }
    pings
}

#[test]
fn the_watchdog_hears_from_the_daemon_idle_and_while_a_backup_hangs() {
    let env = Env::new();
    // A dump that hangs once started: the backup job runs until the daemon is stopped.
    let tool = env.path("hanging-sqlite3");
    fs::write(
        &tool,
        "#!/bin/sh\n\
         if [ \"$1\" = \"--version\" ]; then echo '3.40.1 2022-12-28 hangs'; exit 0; fi\n\
         touch \"$0.started\"\n\
         exec sleep 300\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let db = env.path("app.sqlite");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite"),
        &db,
    )
    .unwrap();
    let cfg = config(
        &env,
        &format!(
            "[jobs.backup]\nschedule = \"0 0 3 * * *\"\n\
             [[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\ndump_tool = \"{}\"\n",
            db.display(),
            tool.display()
        ),
    );
    let socket_path = env.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // WatchdogSec=0.4 s: the daemon is to ping every 0.2 s.
    let mut daemon = Daemon::start_with(
        &cfg,
        env.path("daemon.log"),
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    let idle = watchdog_pings(&socket, Duration::from_secs(2));
    assert!(
        (5..=14).contains(&idle),
        "{idle} pings in 2 s idle; the log:\n{}",
        daemon.log()
    );

    // A job of the daemon's own must not starve the pings: a second daemon whose backup
    // fires within a second and hangs in the dump.
    assert!(daemon.stop().success());
    let cfg = config(
        &env,
        &format!(
            "[jobs.backup]\nschedule = \"* * * * * *\"\n\
             [[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\ndump_tool = \"{}\"\n",
            db.display(),
            tool.display()
        ),
    );
    let mut busy = Daemon::start_with(
        &cfg,
        env.path("daemon2.log"),
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    busy.wait_for("the dump to start", Duration::from_secs(30), || {
        env.path("hanging-sqlite3.started").exists()
    });
    // Drain what was queued before the job started, then count while it hangs.
    watchdog_pings(&socket, Duration::from_millis(50));
    let during = watchdog_pings(&socket, Duration::from_secs(2));
    assert!(
        (5..=14).contains(&during),
        "{during} pings in 2 s while a backup runs; the log:\n{}",
        busy.log()
    );
    let status = busy.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_identity_file_others_can_read_is_warned_about_and_still_used() {
    let env = Env::new();
    let cfg = config(&env, "");
    let id = env.backup(&cfg);
    fs::set_permissions(&env.identity, fs::Permissions::from_mode(0o640)).unwrap();
    let out = env.run(
        &cfg,
        &["restore", &id, "--to", env.path("back").to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("identity file is readable by group or others; chmod 600 it"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&env.identity.display().to_string()),
        "{stderr}"
    );
    assert_eq!(
        fs::read(env.path("back/invoice.txt")).unwrap(),
        b"INV-0001 paid\n"
    );

    // At 0600 the warning is gone.
    fs::set_permissions(&env.identity, fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run(
        &cfg,
        &["restore", &id, "--to", env.path("again").to_str().unwrap()],
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by group"));
}
