//! `coffer prune`: the retention policy applied to a store of snapshots made at chosen times.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use coffer::snapshot::SnapshotId;
use coffer::store::LocalStore;

use crate::support::Env;

/// Stores a small real snapshot whose id and manifest say it was made at `time`.
fn snapshot_at(env: &Env, store: &LocalStore, time: &str) -> String {
    let created: DateTime<Utc> = DateTime::parse_from_rfc3339(time).unwrap().into();
    let id: SnapshotId = format!("{}-000abc", created.format("%Y%m%dT%H%M%SZ"))
        .parse()
        .unwrap();
    crate::support::store_snapshot(env, store, &id, created, b"not really a tar, but bytes")
}

/// The test config with a top-level line first and a retention section last.
fn with_policy(env: &Env, site: &Path, top: &str, retention: &str) -> std::path::PathBuf {
    let config = env.config(site, "1MiB", "");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{top}\n{text}\n{retention}")).unwrap();
    config
}

fn folders(store: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(store.join("snapshots"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn prune_keeps_what_the_policy_says_deletes_the_rest_and_never_the_newest() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    let config = with_policy(
        &env,
        &site,
        "timezone = \"UTC\"",
        "[retention]\nkeep_daily = 2\nkeep_monthly = 2\n",
    );
    let store = LocalStore::new(env.store());
    let times = [
        "2026-09-30T02:00:00Z",
        "2026-10-15T02:00:00Z",
        "2026-10-31T02:00:00Z",
        "2026-11-21T02:00:00Z",
        "2026-11-22T02:00:00Z",
        "2026-11-22T14:00:00Z",
        "2026-11-23T02:00:00Z",
    ];
    let ids: Vec<String> = times.iter().map(|t| snapshot_at(&env, &store, t)).collect();
    // A snapshot whose manifest cannot be read is never pruned.
    let broken = "20250101T000000Z-000def";
    fs::create_dir_all(env.store().join("snapshots").join(broken)).unwrap();
    fs::write(
        env.store()
            .join("snapshots")
            .join(broken)
            .join("manifest.json"),
        b"{ not json",
    )
    .unwrap();
    // Parts of an unfinished backup from long ago are swept.
    let orphan = "20240101T000000Z-000fed";
    let orphan_dir = env.store().join("snapshots").join(orphan);
    fs::create_dir_all(&orphan_dir).unwrap();
    fs::write(orphan_dir.join("files.tar.gz.age.00001"), b"x").unwrap();
    let old = filetime::FileTime::from_unix_time(1_700_000_000, 0);
    filetime::set_file_mtime(orphan_dir.join("files.tar.gz.age.00001"), old).unwrap();

    let before = folders(&env.store());
    let out = env.ok(&config, &["prune", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kept: Vec<&str> = plan["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    // daily 2: 23 Nov, 22 Nov (14:00, the newest of that day); monthly 2: Nov, Oct (31st).
    assert_eq!(kept, [&ids[6], &ids[5], &ids[2]]);
    assert_eq!(
        plan["keep"][0]["reasons"],
        serde_json::json!(["newest snapshot", "daily 2026-11-23", "monthly 2026-11"])
    );
    assert_eq!(folders(&env.store()), before, "a dry run deletes nothing");

    let out = env.ok(&config, &["prune"]);
    assert!(out.contains("pruned 4 of 7 snapshots, kept 3"), "{out}");
    assert!(out.contains(orphan) && out.contains(broken), "{out}");
    let mut expected = vec![
        ids[2].clone(),
        ids[5].clone(),
        ids[6].clone(),
        broken.into(),
    ];
    expected.sort();
    assert_eq!(folders(&env.store()), expected);
    // What is kept is whole.
    env.ok(&config, &["verify", &ids[2]]);
    // Pruning again changes nothing.
    let out = env.ok(&config, &["prune"]);
    assert!(out.contains("pruned 0 of 3 snapshots"), "{out}");
}

#[test]
fn a_retention_that_keeps_nothing_or_a_bad_timezone_is_refused() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    let config = with_policy(
        &env,
        &site,
        "timezone = \"Mars/Olympus\"",
        "[retention]\nkeep_daily = 0\n",
    );
    let out = env.fails(&config, &["prune", "--dry-run"]);
    assert!(out.contains("[retention] keeps nothing"), "{out}");
    assert!(
        out.contains("'Mars/Olympus' is not an IANA time zone"),
        "{out}"
    );
}

#[test]
fn one_job_at_a_time_and_the_waiter_learns_who_holds_the_lock() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("a"), b"a").unwrap();
    let config = env.config(&site, "1MiB", "");
    let state = env.path("state");
    let held = coffer::lock::lock_state_for(&state, "backup", Default::default()).unwrap();
    let me = std::process::id();
    for args in [&["backup"][..], &["prune", "--dry-run"][..]] {
        let out = env.fails(&config, args);
        assert!(
            out.contains(&format!(
                "another coffer backup is running (pid {me}, started 20"
            )),
            "{args:?}: {out}"
        );
        assert!(out.contains("--wait"), "{out}");
    }
    // A job that waits gets its turn once the holder is done.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(held);
    });
    let started = std::time::Instant::now();
    env.ok(&config, &["backup", "--wait", "60s"]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
    release.join().unwrap();
    // The lock file of a process that is gone never blocks: the kernel released its flock.
    env.ok(&config, &["prune", "--dry-run"]);
}
