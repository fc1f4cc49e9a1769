//! A local store whose folder someone else can write (a NAS share): links planted in place of
//! snapshot folders and parts are never followed, by the orphan sweep of a backup running as
//! root or by verify.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use coffer::snapshot::SnapshotId;
use sha2::{Digest, Sha256};

use crate::support::{Env, noise};

/// A folder outside the store holding a file named like a part and another file; returns
/// what each holds, to compare with afterwards.
fn outside_folder(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fs::create_dir(dir).unwrap();
    let files = vec![
        (
            "files.tar.gz.age.00001".to_string(),
            b"root's data".to_vec(),
        ),
        (
            "shadow".to_string(),
            b"root:$6$secret:19000::::::\n".to_vec(),
        ),
    ];
    for (name, bytes) in &files {
        fs::write(dir.join(name), bytes).unwrap();
    }
    files
}

fn assert_untouched(dir: &Path, files: &[(String, Vec<u8>)]) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want: Vec<&String> = files.iter().map(|(n, _)| n).collect();
    assert_eq!(names.iter().collect::<Vec<_>>(), want, "files outside");
    for (name, bytes) in files {
        assert_eq!(&fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn the_orphan_sweep_never_deletes_behind_a_planted_link() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("a"), b"to back up").unwrap();
    let config = env.config(&site, "1MiB", "orphan_grace = \"1h\"");
    let snapshots = env.store().join("snapshots");
    fs::create_dir_all(&snapshots).unwrap();
    let earlier = Utc::now() - chrono::Duration::days(3);
    let then = filetime::FileTime::from_unix_time(earlier.timestamp(), 0);

    // An unfinished snapshot of three days ago: a part and a temporary left by a kill.
    let orphan = SnapshotId::new(earlier).to_string();
    let orphan_dir = snapshots.join(&orphan);
    fs::create_dir(&orphan_dir).unwrap();
    for name in [
        "files.tar.gz.age.00001",
        ".files.tar.gz.age.00002.tmp-0123abcd",
    ] {
        fs::write(orphan_dir.join(name), b"unfinished").unwrap();
        filetime::set_file_mtime(orphan_dir.join(name), then).unwrap();
    }
    // Another "unfinished snapshot" of three days ago, planted by whoever can write the store:
    // its folder is a link to a folder of root's, with files as old.
    let outside = env.path("outside");
    let files = outside_folder(&outside);
    for (name, _) in &files {
        filetime::set_file_mtime(outside.join(name), then).unwrap();
    }
    let linked = loop {
        let id = SnapshotId::new(earlier).to_string();
        if id != orphan {
            break id;
        }
    };
    symlink(&outside, snapshots.join(&linked)).unwrap();
    filetime::set_symlink_file_times(snapshots.join(&linked), then, then).unwrap();

    let out = env.run(&config, &["backup", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["swept"], serde_json::json!([orphan]), "{stderr}");
    assert!(!orphan_dir.exists(), "the real orphan is swept");
    assert_untouched(&outside, &files);
    // The link itself may stay; nothing behind it goes.
    assert!(
        stderr.contains(&format!(
            "skipped 'snapshots/{linked}', which is a symbolic link"
        )),
        "{stderr}"
    );
    // The next backup sweeps nothing more and still leaves root's files alone.
    env.backup(&config);
    assert_untouched(&outside, &files);
}

/// Keeps swapping `a` and `b` (one a snapshot folder holding an old part, the other a link to
/// `outside`) until `stop`, putting back what a sweep removed. Returns the swaps made and how
/// often the part was found removed.
fn keep_swapping(a: &Path, b: &Path, outside: &Path, stop: &AtomicBool) -> (u64, u64) {
    let then =
        filetime::FileTime::from_unix_time((Utc::now() - chrono::Duration::days(3)).timestamp(), 0);
    let (mut swaps, mut removed) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let swapped = rustix::fs::renameat_with(
            rustix::fs::CWD,
            a,
            rustix::fs::CWD,
            b,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        if swapped.is_ok() {
            swaps += 1;
            if swaps % 64 != 0 {
                continue;
            }
        }
        for (this, other) in [(a, b), (b, a)] {
            let is_link = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink());
            match fs::symlink_metadata(this) {
                // Removed by a sweep: plant it again, as the kind the other one is not.
                Err(_) if is_link(other) => {
                    let _ = fs::create_dir(this);
                }
                Err(_) => {
                    let _ = symlink(outside, this);
                }
                Ok(_) => {}
            }
            let part = this.join("files.tar.gz.age.00001");
            if fs::symlink_metadata(this).is_ok_and(|m| m.is_dir())
                && fs::symlink_metadata(&part).is_err()
                && fs::write(&part, b"unfinished").is_ok()
            {
                removed += 1;
                let _ = filetime::set_file_mtime(&part, then);
            }
        }
    }
    (swaps, removed)
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn the_orphan_sweep_never_deletes_behind_a_folder_swapped_for_a_link_mid_sweep() {
    // The attack as it was found: between the sweep's listing of an unfinished snapshot and
    // its deletions, the snapshot's folder becomes a link to a folder of root's.
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("a"), b"to back up").unwrap();
    let config = env.config(&site, "1MiB", "orphan_grace = \"1h\"");
    let snapshots = env.store().join("snapshots");
    fs::create_dir_all(&snapshots).unwrap();
    let earlier = Utc::now() - chrono::Duration::days(3);
    let then = filetime::FileTime::from_unix_time(earlier.timestamp(), 0);
    let outside = env.path("outside");
    let files = outside_folder(&outside);
    for (name, _) in &files {
        filetime::set_file_mtime(outside.join(name), then).unwrap();
    }
    let id = SnapshotId::new(earlier).to_string();
    let in_store = snapshots.join(&id);
    let aside = env.path("aside");
    symlink(&outside, &in_store).unwrap();
    fs::create_dir(&aside).unwrap();
    fs::write(aside.join("files.tar.gz.age.00001"), b"unfinished").unwrap();
    filetime::set_file_mtime(aside.join("files.tar.gz.age.00001"), then).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let swapper = scope.spawn(|| keep_swapping(&in_store, &aside, &outside, &stop));
        // The swapper stops however this ends (a failed assertion too).
        let _stop = StopOnDrop(&stop);
        // Let the swapping start, then back up again and again (every backup sweeps).
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..40 {
            let out = env.run(&config, &["backup"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_untouched(&outside, &files);
        }
        stop.store(true, Ordering::Relaxed);
        let (swaps, removed) = swapper.join().unwrap();
        assert!(swaps > 100, "the folder was swapped only {swaps} times");
        assert!(
            removed > 0,
            "no sweep got as far as the swapped folder's part"
        );
    });
    assert_untouched(&outside, &files);
}

#[test]
fn verify_refuses_a_part_that_is_a_link_and_reads_nothing_behind_it() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("a"), noise(7, 200_000)).unwrap();
    let config = env.config(&site, "64KiB", "");
    let id = env.backup(&config);
    assert!(env.parts(&id).len() >= 3);
    env.ok(&config, &["verify", &id]);

    // Root's file outside the store, as long as the part: a store that followed the link
    // would call the part corrupted and print this file's sha256.
    let part = &env.parts(&id)[1];
    let secret = env.path("secret.key");
    let secret_bytes = noise(8, fs::metadata(part).unwrap().len() as usize);
    fs::write(&secret, &secret_bytes).unwrap();
    fs::remove_file(part).unwrap();
    symlink(&secret, part).unwrap();

    let out = env.fails(&config, &["verify", &id]);
    assert!(
        out.contains("part files.tar.gz.age.00002 could not be read"),
        "{out}"
    );
    assert!(out.contains("it is a symbolic link"), "{out}");
    assert!(
        !out.contains("00001 is") && !out.contains("00003 is"),
        "{out}"
    );
    let secret_sha = hex::encode(Sha256::digest(&secret_bytes));
    assert!(
        !out.contains(&secret_sha),
        "the outside file was hashed: {out}"
    );
    let out = env.fails(&config, &["verify", &id, "--json"]);
    assert!(
        !out.contains(&secret_sha),
        "the outside file was hashed: {out}"
    );
    assert_eq!(fs::read(&secret).unwrap(), secret_bytes);
}
