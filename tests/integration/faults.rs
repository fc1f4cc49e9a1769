//! Damage is detected and named; a killed backup leaves no snapshot; hostile archives and
//! wrong keys are refused.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use coffer::snapshot::SnapshotId;
use coffer::store::LocalStore;

use crate::support::{Env, noise};

/// A snapshot of ~600 KB of noise in 64 KiB parts (about ten of them).
fn damaged_setup() -> (Env, std::path::PathBuf, String) {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    for i in 0..6 {
        fs::write(site.join(format!("f{i}")), noise(100 + i, 100_000)).unwrap();
    }
    let config = env.config(&site, "64KiB", "");
    let id = env.backup(&config);
    assert!(env.parts(&id).len() >= 8);
    env.ok(&config, &["verify", &id]);
    (env, config, id)
}

fn restore_fails(env: &Env, config: &Path, id: &str) -> String {
    let target = env.path("target");
    let _ = fs::remove_dir_all(&target);
    env.fails(config, &["restore", id, "--to", target.to_str().unwrap()])
}

#[test]
fn corrupted_part_is_named_by_verify_and_restore() {
    let (env, config, id) = damaged_setup();
    let part = &env.parts(&id)[2];
    let mut bytes = fs::read(part).unwrap();
    bytes[1000] ^= 0x01;
    fs::write(part, bytes).unwrap();
    let out = env.fails(&config, &["verify", &id]);
    assert!(
        out.contains("part files.tar.gz.age.00003 is corrupted"),
        "{out}"
    );
    assert!(
        !out.contains("00002 is"),
        "only the bad part is named: {out}"
    );
    let out = restore_fails(&env, &config, &id);
    assert!(out.contains("files.tar.gz.age.00003"), "{out}");
    assert!(out.contains("corrupted"), "{out}");
}

#[test]
fn truncated_part_is_named() {
    let (env, config, id) = damaged_setup();
    let part = &env.parts(&id)[1];
    let bytes = fs::read(part).unwrap();
    fs::write(part, &bytes[..bytes.len() - 10]).unwrap();
    let out = env.fails(&config, &["verify", &id]);
    assert!(
        out.contains("part files.tar.gz.age.00002 is truncated"),
        "{out}"
    );
    let out = restore_fails(&env, &config, &id);
    assert!(out.contains("part files.tar.gz.age.00002 has"), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
}

#[test]
fn missing_part_is_named() {
    let (env, config, id) = damaged_setup();
    fs::remove_file(&env.parts(&id)[3]).unwrap();
    let out = env.run(&config, &["verify", &id, "--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["ok"], false);
    assert_eq!(
        v[0]["streams"][0]["problems"][0]["part"],
        "files.tar.gz.age.00004"
    );
    let out = restore_fails(&env, &config, &id);
    assert!(
        out.contains("part files.tar.gz.age.00004 is missing"),
        "{out}"
    );
}

#[test]
fn reordered_parts_are_named() {
    let (env, config, id) = damaged_setup();
    let parts = env.parts(&id);
    let tmp = env.path("swap");
    fs::rename(&parts[4], &tmp).unwrap();
    fs::rename(&parts[5], &parts[4]).unwrap();
    fs::rename(&tmp, &parts[5]).unwrap();
    let out = env.fails(&config, &["verify", &id]);
    assert!(
        out.contains(
            "part files.tar.gz.age.00005 holds the content of part files.tar.gz.age.00006"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "part files.tar.gz.age.00006 holds the content of part files.tar.gz.age.00005"
        ),
        "{out}"
    );
    let out = restore_fails(&env, &config, &id);
    assert!(out.contains("files.tar.gz.age.00005"), "{out}");
}

#[test]
fn deep_verify_and_restore_with_a_wrong_identity_name_the_recipients() {
    let (env, config, id) = damaged_setup();
    let other = env.path("other.txt");
    coffer::keys::generate(&other).unwrap();
    let out = env.fails(
        &config,
        &[
            "verify",
            &id,
            "--deep",
            "--identity",
            other.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("no identity") && out.contains(&env.recipient),
        "{out}"
    );
    let target = env.path("target");
    let out = env.fails(
        &config,
        &[
            "restore",
            &id,
            "--to",
            target.to_str().unwrap(),
            "--identity",
            other.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("no identity in") && out.contains(&env.recipient),
        "{out}"
    );
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
}

#[test]
fn killed_backup_leaves_no_snapshot_and_is_swept_later() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("small"), b"first snapshot").unwrap();
    let config = env.config(&site, "1MiB", "orphan_grace = \"1h\"");
    let first = env.backup(&config);
    let listing = env.ok(&config, &["list", "--json"]);

    for i in 0..8 {
        fs::write(site.join(format!("big{i}")), noise(i, 32 << 20)).unwrap();
    }
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("coffer"))
        .arg("--config")
        .arg(&config)
        .arg("backup")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the new snapshot has stored a few parts, then kill -9 mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    let snapshots = env.store().join("snapshots");
    loop {
        let parts = fs::read_dir(&snapshots)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != first.as_str())
            .map(|e| fs::read_dir(e.path()).map_or(0, |d| d.count()))
            .sum::<usize>();
        if parts >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "backup stored no parts in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(
        env.ok(&config, &["list", "--json"]),
        listing,
        "list is unchanged"
    );
    let orphans: Vec<_> = fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| *n != first)
        .collect();
    assert_eq!(orphans.len(), 1);
    env.ok(&config, &["verify", &first]);

    // A backup right away leaves the unfinished snapshot alone: it may still be running.
    for i in 0..8 {
        fs::remove_file(site.join(format!("big{i}"))).unwrap();
    }
    let second = env.backup(&config);
    assert!(snapshots.join(&orphans[0]).exists());
    // Two hours later (simulated: an older id, older files) the next backup sweeps it.
    let earlier = chrono::Utc::now() - chrono::Duration::hours(2);
    let aged = SnapshotId::new(earlier).to_string();
    fs::rename(snapshots.join(&orphans[0]), snapshots.join(&aged)).unwrap();
    let then = filetime::FileTime::from_unix_time(earlier.timestamp(), 0);
    for e in fs::read_dir(snapshots.join(&aged)).unwrap() {
        filetime::set_file_mtime(e.unwrap().path(), then).unwrap();
    }
    let third = env.backup(&config);
    let mut left: Vec<_> = fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, [first, second, third]);
}

/// Stores a snapshot whose single directory stream is the tar bytes `tar`, through the real
/// pipeline, as a hostile writer holding only the public key could.
fn plant_snapshot(env: &Env, tar: &[u8]) -> String {
    let store = LocalStore::new(env.store());
    crate::support::store_snapshot(env, &store, &SnapshotId::new(Utc::now()), Utc::now(), tar)
}

/// A raw tar entry whose name is written verbatim (the tar crate refuses `..` names).
fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[test]
fn hostile_archives_write_nothing_outside_the_target() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    let config = env.config(&site, "64MiB", "");
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let outside_str = outside.to_str().unwrap().as_bytes().to_vec();
    let evil = |name: &[u8]| {
        let mut t = Vec::new();
        raw_entry(
            &mut t,
            b"innocent.txt",
            tar::EntryType::Regular,
            b"",
            b"fine",
        );
        raw_entry(&mut t, name, tar::EntryType::Regular, b"", b"pwned");
        t.extend_from_slice(&[0u8; 1024]);
        t
    };
    let mut through_link = Vec::new();
    raw_entry(
        &mut through_link,
        b"link",
        tar::EntryType::Symlink,
        &outside_str,
        b"",
    );
    raw_entry(
        &mut through_link,
        b"link/pwned",
        tar::EntryType::Regular,
        b"",
        b"pwned",
    );
    through_link.extend_from_slice(&[0u8; 1024]);
    let mut hard = Vec::new();
    raw_entry(
        &mut hard,
        b"hard",
        tar::EntryType::Link,
        b"../outside/x",
        b"",
    );
    hard.extend_from_slice(&[0u8; 1024]);

    let mut abs = outside_str.clone();
    abs.extend_from_slice(b"/pwned");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (evil(b"../outside/pwned"), "'..'"),
        (evil(b"sub/../../outside/pwned"), "'..'"),
        (evil(&abs), "absolute"),
        (through_link, "through a symlink"),
        (hard, "'..'"),
    ];
    for (n, (tar, why)) in cases.into_iter().enumerate() {
        let id = plant_snapshot(&env, &tar);
        let target = env.path(&format!("target{n}"));
        let out = env.fails(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
        assert!(
            out.contains("refusing archive entry") && out.contains(why),
            "case {n}: {out}"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "case {n} wrote outside"
        );
    }
}
