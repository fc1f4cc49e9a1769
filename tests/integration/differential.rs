//! Differential folder streams (issue 17): a full with its index, then differentials against
//! it, restored by stock GNU tar with `-G` (deletions applied) and by coffer, into exactly the
//! tree as it was at each snapshot.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use coffer::source::index::{IndexHeader, IndexReader, IndexWriter, index_path};
use coffer::source::{Against, DirectorySource, Excludes};

use crate::support::{Env, assert_same_tree, prerequisite};

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Whether `tar` is GNU tar (which applies `GNU.dumpdir` records with `-G`).
fn gnu_tar() -> bool {
    Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
}

/// Extracts `tar` into `dir` with GNU tar's `-G` (deletions from the dumpdir records).
fn gnu_extract(tar: &[u8], dir: &Path) {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), tar).unwrap();
    let out = Command::new("tar")
        .arg("-xpG")
        .arg("-f")
        .arg(file.path())
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -xG: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_differential_leaves_unchanged_files_out_and_gnu_tar_applies_its_deletions() {
    if !prerequisite(gnu_tar(), "GNU tar is needed", "apt-get install tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write(&site, "keep.txt", b"unchanged");
    write(
        &site,
        "big/attachment.bin",
        &crate::support::noise(7, 300_000),
    );
    write(&site, "edit.txt", b"version 1");
    write(&site, "setback.txt", b"AAAA");
    write(&site, "gone.txt", b"deleted later");
    write(&site, "old/inner.txt", b"a folder deleted later");
    write(&site, "flip", b"a file that becomes a folder");
    write(&site, "mode.txt", b"chmod only");
    write(&site, "a.txt", b"a file beside folder a");
    write(&site, "a/b.txt", b"inside a");
    fs::create_dir_all(site.join("empty")).unwrap();
    symlink("keep.txt", site.join("link")).unwrap();

    // The full, and its index.
    let state = tmp.path().join("state");
    let path = index_path(&state, "files", "20261207T020000Z-000001");
    let header = IndexHeader {
        snapshot: "20261207T020000Z-000001".into(),
        config: "test".into(),
        root_dev: 0,
        root_ino: 0,
    };
    let source = DirectorySource::new(&site, Excludes::new(&[]).unwrap());
    let mut writer = IndexWriter::create(&path, &header).unwrap();
    let mut full = Vec::new();
    let outcome = source
        .write_tar_against(&mut full, Against::Full(Some(&mut writer)))
        .unwrap();
    writer.finish().unwrap().commit().unwrap();
    assert_eq!(outcome.unchanged_files, 0);
    let at_full = tempfile::tempdir().unwrap();
    gnu_extract(&full, at_full.path());
    assert_same_tree(&site, at_full.path());

    // A day of changes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&site, "edit.txt", b"version 2 is longer");
    let before = fs::metadata(site.join("setback.txt"))
        .unwrap()
        .modified()
        .unwrap();
    write(&site, "setback.txt", b"BBBB");
    fs::File::options()
        .write(true)
        .open(site.join("setback.txt"))
        .unwrap()
        .set_modified(before)
        .unwrap();
    fs::remove_file(site.join("gone.txt")).unwrap();
    fs::remove_dir_all(site.join("old")).unwrap();
    fs::remove_file(site.join("flip")).unwrap();
    write(&site, "flip/now-a-folder.txt", b"folder now");
    fs::set_permissions(site.join("mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&site, "new/deep/new.txt", b"new file");
    fs::remove_file(site.join("link")).unwrap();
    symlink("a.txt", site.join("link")).unwrap();

    let mut base = IndexReader::open(&path).unwrap();
    let mut diff = Vec::new();
    let outcome = source
        .write_tar_against(&mut diff, Against::Differential(&mut base))
        .unwrap();
    // keep.txt, the attachment, a.txt and a/b.txt are unchanged; the rest is in the tar.
    assert_eq!(outcome.unchanged_files, 4, "{:?}", outcome.warnings);
    assert_eq!(outcome.unchanged_bytes, 9 + 300_000 + 22 + 8);
    assert!(
        diff.len() < 300_000,
        "the attachment was left out: {} bytes",
        diff.len()
    );
    // The checksum list names every file of the tree, unchanged ones too.
    let mut sums = Vec::new();
    let mut list = outcome.checksums;
    list.write_to(&mut sums).unwrap();
    let sums = String::from_utf8(sums).unwrap();
    for name in [
        "keep.txt",
        "big/attachment.bin",
        "edit.txt",
        "new/deep/new.txt",
    ] {
        assert!(sums.contains(&format!("  {name}\n")), "{name} in {sums}");
    }
    assert!(!sums.contains("gone.txt"));

    // Stock GNU tar: the full, then the differential, each with -G, gives the tree as it is.
    gnu_extract(&diff, at_full.path());
    assert_same_tree(&site, at_full.path());
    // And coffer's own extraction applies the same deletions.
    let ours = tempfile::tempdir().unwrap();
    coffer::archive::extract(full.as_slice(), ours.path()).unwrap();
    let summary = coffer::archive::extract(diff.as_slice(), ours.path()).unwrap();
    assert_eq!(
        summary.counts.files, 5,
        "the changed and new files: {summary:?}"
    );
    assert_same_tree(&site, ours.path());
    // Without -G the deletions are not applied: the doc must say -G.
    let plain = tempfile::tempdir().unwrap();
    for tar in [&full, &diff] {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), tar).unwrap();
        let ok = Command::new("tar")
            .arg("-xpf")
            .arg(file.path())
            .arg("-C")
            .arg(plain.path())
            .status()
            .unwrap();
        // The file turned folder makes plain tar fail on the second archive, or leave stale
        // entries; either way it is not the tree.
        if !ok.success() {
            break;
        }
    }
    assert!(plain.path().join("gone.txt").exists());
}

/// GNU tar, age, jq, sha256sum and ssh-keygen: what RECOVERY.md's stock restore needs.
fn stock_tools() -> bool {
    let all = gnu_tar()
        && ["age", "jq", "sha256sum"]
            .iter()
            .all(|t| Command::new(t).arg("--version").output().is_ok())
        && Command::new("ssh-keygen").arg("-?").output().is_ok();
    prerequisite(
        all,
        "GNU tar, age, jq, sha256sum and ssh-keygen are needed",
        "apt-get install tar age jq coreutils openssh-client",
    )
}

/// A copy of `site` as it is now (modes and mtimes kept), to compare restores with.
fn keep_copy(site: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(site)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Sets `rel`'s mtime `secs` seconds from what it is.
fn shift_mtime(root: &Path, rel: &str, secs: i64) {
    let p = root.join(rel);
    let m = fs::metadata(&p).unwrap();
    let t = filetime::FileTime::from_unix_time(std::os::unix::fs::MetadataExt::mtime(&m) + secs, 0);
    filetime::set_file_mtime(&p, t).unwrap();
}

/// RECOVERY.md's stock restore of a folder (steps 1 to 5), as written, for snapshot `id`.
fn stock_restore(env: &Env, id: &str, to: &Path) -> String {
    let key = env.signer_key();
    let blocks = crate::interop::recovery_blocks();
    let end = blocks
        .iter()
        .position(|b| b.contains("sha256sum -c --quiet"))
        .expect("RECOVERY.md checks the restored files");
    let mut script = blocks[..=end].join("");
    for command in ["tar -xzpG", "differential.base", "SNAP=$FULL parts files"] {
        assert!(
            script.contains(command),
            "RECOVERY.md no longer says {command}"
        );
    }
    for (placeholder, value) in [
        ("20261123T020000Z-3fa9c1", id),
        ("ssh-ed25519 AAAA…", key.as_str()),
        ("/srv/restore/files", to.to_str().unwrap()),
    ] {
        script = script.replace(placeholder, value);
    }
    let out = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all files intact"), "{stdout}");
    stdout
}

fn folder_record(env: &Env, id: &str) -> serde_json::Value {
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(env.store().join("snapshots").join(id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let mut files = m["sources"][0].clone();
    files["format_version"] = m["format_version"].clone();
    files
}

#[test]
fn every_snapshot_of_a_changing_tree_restores_as_it_was_with_coffer_and_stock_tools() {
    if !stock_tools() {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    crate::support::rich_site(&site);
    write(
        &site,
        "keep/attachment.bin",
        &crate::support::noise(3, 400_000),
    );
    write(&site, "same-size.txt", b"0123456789");
    write(&site, "setback.txt", b"AAAA");
    write(&site, "gone.txt", b"deleted on day 1");
    write(&site, "old/inner.txt", b"a folder deleted on day 2");
    write(&site, "renamed/inner.txt", b"a folder renamed on day 2");
    write(&site, "flip", b"a file that becomes a folder on day 3");
    write(&site, "mode.txt", b"chmod only");
    symlink("same-size.txt", site.join("link")).unwrap();
    let config = env.config(&site, "64KiB", "");
    let refs = env.path("refs");
    fs::create_dir_all(&refs).unwrap();
    let mut snapshots: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut take = |label: &str, args: &[&str]| -> serde_json::Value {
        let mut argv = vec!["backup", "--json"];
        argv.extend_from_slice(args);
        let out: serde_json::Value = serde_json::from_str(&env.ok(&config, &argv)).unwrap();
        let id = out["id"].as_str().unwrap().to_string();
        let copy = refs.join(label);
        keep_copy(&site, &copy);
        snapshots.push((id, copy));
        // Ids are per second at best: a second apart keeps them in order.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        out
    };

    // Day 0: the first backup is a full, and says why.
    let day0 = take("day0", &[]);
    assert_eq!(day0["folders"][0]["kind"], "full", "{day0}");
    assert!(
        day0["folders"][0]["why"]
            .as_str()
            .unwrap()
            .contains("no index"),
        "{day0}"
    );

    // Day 1: new, modified (same size, new mtime), mtime set back, deleted.
    write(&site, "new/deep/new.txt", b"new on day 1");
    write(&site, "same-size.txt", b"abcdefghij");
    shift_mtime(&site, "same-size.txt", 10);
    let before = fs::metadata(site.join("setback.txt"))
        .unwrap()
        .modified()
        .unwrap();
    write(&site, "setback.txt", b"BBBB");
    fs::File::options()
        .write(true)
        .open(site.join("setback.txt"))
        .unwrap()
        .set_modified(before)
        .unwrap();
    fs::remove_file(site.join("gone.txt")).unwrap();
    let day1 = take("day1", &[]);
    assert_eq!(day1["folders"][0]["kind"], "differential", "{day1}");
    let rec = folder_record(&env, day1["id"].as_str().unwrap());
    assert_eq!(rec["format_version"], 2);
    assert_eq!(rec["differential"]["base"], day0["id"]);
    assert_eq!(rec["differential"]["changed_files"], 3, "{rec}");

    // Day 2: folders deleted, renamed, new and empty.
    fs::remove_dir_all(site.join("old")).unwrap();
    fs::rename(site.join("renamed"), site.join("renamed-now")).unwrap();
    fs::create_dir_all(site.join("empty-new")).unwrap();
    write(&site, "fresh/a.txt", b"a new folder");
    take("day2", &[]);

    // Day 3: a file becomes a folder; a symlink is retargeted; a chmod only.
    fs::remove_file(site.join("flip")).unwrap();
    write(&site, "flip/inside.txt", b"now a folder");
    fs::remove_file(site.join("link")).unwrap();
    symlink("setback.txt", site.join("link")).unwrap();
    fs::set_permissions(site.join("mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    take("day3", &[]);

    // Day 4: and back to a file; a name that is not UTF-8, and a long path.
    fs::remove_dir_all(site.join("flip")).unwrap();
    write(&site, "flip", b"a file again");
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff.txt");
    fs::write(site.join(odd), b"latin-1 name").unwrap();
    let long = format!("{}/{}.txt", "d".repeat(120), "n".repeat(150));
    write(&site, &long, b"a long path");
    take("day4", &[]);

    // Day 5: `--full` takes a full whatever full_every says.
    let day5 = take("day5", &["--full"]);
    assert_eq!(day5["folders"][0]["kind"], "full");
    assert_eq!(day5["folders"][0]["why"], "--full was asked");
    let full_stored = day5["stored_bytes"].as_u64().unwrap();

    // Day 6: nothing changed since that full: its differential is a sliver of it.
    let day6 = take("day6", &[]);
    assert_eq!(day6["folders"][0]["base"], day5["id"], "{day6}");
    let rec = folder_record(&env, day6["id"].as_str().unwrap());
    assert_eq!(rec["differential"]["changed_files"], 0, "{rec}");
    let stored = rec["encrypted_bytes"].as_u64().unwrap();
    assert!(
        stored * 20 < full_stored,
        "an unchanged tree's differential stores {stored} bytes, the full {full_stored}"
    );

    // Every snapshot restores to the tree as it was, with coffer and with stock tools.
    let list = env.ok(&config, &["list"]);
    assert!(list.contains("diff of"), "{list}");
    for (id, copy) in &snapshots {
        let ours = env.path(&format!("restored/{id}"));
        env.ok(&config, &["restore", id, "--to", ours.to_str().unwrap()]);
        assert_same_tree(copy, &ours);
        let stock = env.path(&format!("stock/{id}"));
        fs::create_dir_all(&stock).unwrap();
        stock_restore(&env, id, &stock);
        assert_same_tree(copy, &stock);
    }
    // verify checks the full a differential needs along with it.
    let verify = env.ok(&config, &["verify", "latest", "--deep"]);
    assert!(verify.contains("(the full of"), "{verify}");
}

/// A config of `site` as source `files` (with `extra` lines of its `[[source]]`).
fn diff_env(extra: &str) -> (Env, std::path::PathBuf, std::path::PathBuf) {
    let env = Env::new();
    let site = env.path("site");
    crate::support::rich_site(&site);
    let config = env.config(&site, "64KiB", "");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}{extra}")).unwrap();
    (env, site, config)
}

fn backup_json(env: &Env, config: &Path) -> serde_json::Value {
    let out = serde_json::from_str(&env.ok(config, &["backup", "--json"])).unwrap();
    // Ids are per second: keep the next one later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    out
}

#[test]
fn a_differential_whose_full_is_gone_is_named_unrestorable_and_the_next_backup_is_a_full() {
    let (env, site, config) = diff_env("");
    let full = backup_json(&env, &config);
    write(&site, "day2.txt", b"changed");
    let diff = backup_json(&env, &config);
    let (full_id, diff_id) = (full["id"].as_str().unwrap(), diff["id"].as_str().unwrap());
    assert_eq!(diff["folders"][0]["base"], full_id);

    // forget refuses to orphan the differential; naming both forgets both.
    let out = env.fails(&config, &["forget", full_id, "--force"]);
    assert!(
        out.contains(diff_id) && out.contains("nothing was deleted"),
        "{out}"
    );
    assert!(env.store().join("snapshots").join(full_id).exists());

    // The full is lost (the store lost it, or someone deleted it).
    fs::remove_dir_all(env.store().join("snapshots").join(full_id)).unwrap();
    let target = env.path("restore");
    let out = env.fails(
        &config,
        &["restore", diff_id, "--to", target.to_str().unwrap()],
    );
    assert!(
        out.contains(full_id) && out.contains("no longer in the store") && out.contains(diff_id),
        "{out}"
    );
    assert!(!target.exists(), "nothing is written");
    let out = env.fails(&config, &["verify", diff_id]);
    assert!(
        out.contains(full_id) && out.contains("cannot be restored"),
        "{out}"
    );

    // The next backup is a full, and says why.
    let next = backup_json(&env, &config);
    assert_eq!(next["folders"][0]["kind"], "full", "{next}");
    let why = next["folders"][0]["why"].as_str().unwrap();
    assert!(
        why.contains(full_id) && why.contains("no longer in the store"),
        "{why}"
    );
}

#[test]
fn prune_keeps_the_full_a_kept_differential_needs_and_says_so() {
    let (env, site, config) = diff_env("");
    let text = fs::read_to_string(&config).unwrap();
    // keep_last = 1: only the newest is kept for itself.
    let text = text.replace(
        "[[source]]",
        "[retention]\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n[[source]]",
    );
    fs::write(&config, text).unwrap();
    let full = backup_json(&env, &config);
    write(&site, "a.txt", b"1");
    let middle = backup_json(&env, &config);
    write(&site, "b.txt", b"2");
    let newest = backup_json(&env, &config);
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&config, &["prune", "--dry-run", "--json"])).unwrap();
    let text = plan.to_string();
    assert!(
        text.contains(&format!("base of {}", newest["id"].as_str().unwrap())),
        "{plan:#}"
    );
    env.ok(&config, &["prune"]);
    let snaps = env.store().join("snapshots");
    assert!(snaps.join(full["id"].as_str().unwrap()).exists());
    assert!(snaps.join(newest["id"].as_str().unwrap()).exists());
    assert!(!snaps.join(middle["id"].as_str().unwrap()).exists());
    // What is kept restores.
    let target = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert_same_tree(&site, &target);
}

#[test]
fn a_changed_selection_another_folder_or_a_damaged_index_means_a_full_said_why() {
    let (env, site, config) = diff_env("");
    backup_json(&env, &config);
    assert_eq!(
        backup_json(&env, &config)["folders"][0]["kind"],
        "differential"
    );

    // Another exclude: the index was made under another selection.
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}exclude = [\"*.tmp\"]\n")).unwrap();
    let out = backup_json(&env, &config);
    assert_eq!(out["folders"][0]["kind"], "full");
    assert!(
        out["folders"][0]["why"]
            .as_str()
            .unwrap()
            .contains("excludes"),
        "{out}"
    );

    // The folder restored into place (another inode): a new full.
    let moved = env.path("site-old");
    fs::rename(&site, &moved).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&moved)
        .arg(&site)
        .status()
        .unwrap();
    assert!(ok.success());
    let out = backup_json(&env, &config);
    assert_eq!(out["folders"][0]["kind"], "full");
    assert!(
        out["folders"][0]["why"].as_str().unwrap().contains("inode"),
        "{out}"
    );

    // A damaged index: a full, never a failed backup.
    let dir = env.path("state/index/files");
    let index = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&index).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    fs::write(&index, bytes).unwrap();
    let out = backup_json(&env, &config);
    assert_eq!(out["folders"][0]["kind"], "full");
    assert!(
        out["folders"][0]["why"]
            .as_str()
            .unwrap()
            .contains("cannot be used"),
        "{out}"
    );
    // One index is kept per source, 0600 in a 0700 folder.
    let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1);
    let mode = fs::metadata(left[0].as_ref().unwrap().path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // full_every = "0s": every backup a full, and no index is kept.
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}full_every = \"0s\"\n")).unwrap();
    let out = backup_json(&env, &config);
    assert_eq!(out["folders"][0]["kind"], "full");
    assert_eq!(out["manifest"]["format_version"], 1);
}

#[test]
fn full_every_applies_to_folders_only_and_must_be_a_duration() {
    let env = Env::new();
    let config = env.config_for_source(
        "db.toml",
        "name = \"app\"\ntype = \"sqlite\"\npath = \"app.sqlite\"\nfull_every = \"7d\"",
    );
    let out = env.fails(&config, &["check"]);
    assert!(
        out.contains("'full_every' does not apply to a sqlite source"),
        "{out}"
    );
    let config = env.config_for_source(
        "bad.toml",
        "name = \"files\"\ntype = \"directory\"\npath = \"site\"\nfull_every = \"weekly\"",
    );
    let out = env.fails(&config, &["check"]);
    assert!(out.contains("full_every = \"weekly\""), "{out}");
}

/// What a store and a state folder must hold whatever moment a backup was killed: every
/// differential's full committed, and the current index that of a committed snapshot.
fn assert_consistent(env: &Env) {
    let snaps = env.store().join("snapshots");
    let committed = |id: &str| snaps.join(id).join("manifest.json").exists();
    for dir in fs::read_dir(&snaps).unwrap() {
        let manifest = dir.unwrap().path().join("manifest.json");
        let Ok(bytes) = fs::read(&manifest) else {
            continue; // an unfinished snapshot: no manifest, no snapshot
        };
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for s in m["sources"].as_array().unwrap() {
            if let Some(base) = s["differential"]["base"].as_str() {
                assert!(
                    committed(base),
                    "{} builds on {base}, which is not there",
                    m["id"]
                );
            }
        }
    }
    if let Ok(entries) = fs::read_dir(env.path("state/index/files")) {
        for e in entries {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(id) = name.strip_suffix(".idx.gz") {
                assert!(committed(id), "the index {name} is ahead of the store");
            }
        }
    }
}

#[test]
fn a_backup_killed_at_any_moment_leaves_no_snapshot_without_its_full_nor_an_index_ahead() {
    let (env, site, config) = diff_env("");
    // Enough to take a moment to back up, in many parts.
    for i in 0..40u64 {
        write(
            &site,
            &format!("attachments/{}/{i}.bin", i % 7),
            &crate::support::noise(i, 200_000),
        );
    }
    let coffer = assert_cmd::cargo::cargo_bin("coffer");
    let run = |full: bool| {
        let mut c = Command::new(&coffer);
        c.arg("--config").arg(&config).arg("backup");
        if full {
            c.arg("--full");
        }
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    // How long one backup takes here: the kills land anywhere within it.
    let timed = |full: bool| {
        let t = std::time::Instant::now();
        assert!(run(full).status().unwrap().success());
        t.elapsed().as_micros().max(1000) as u64
    };
    let (span_full, span_diff) = (timed(true), timed(false));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let runs = 24;
    let mut finished = 0;
    for round in 0..runs {
        write(
            &site,
            &format!("day/{round}.txt"),
            format!("round {round}").as_bytes(),
        );
        write(
            &site,
            &format!("attachments/{}/{round}.bin", round % 7),
            &crate::support::noise(1000 + round, 50_000),
        );
        if round % 5 == 4 {
            let _ = fs::remove_dir_all(site.join(format!("day/{}.txt", round - 2)));
            let _ = fs::remove_file(site.join(format!("day/{}.txt", round - 2)));
        }
        // Every third a full (killed while its index is written), else a differential.
        let full = round % 3 == 0;
        let span = if full { span_full } else { span_diff };
        let mut child = run(full).spawn().unwrap();
        let wait = next() % (span + span / 10);
        std::thread::sleep(std::time::Duration::from_micros(wait));
        let _ = child.kill(); // SIGKILL
        if child.wait().unwrap().success() {
            finished += 1;
        }
        assert_consistent(&env);
        // The next backup is correct, and so is its restore.
        let out = env.ok(&config, &["backup", "--json"]);
        let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_consistent(&env);
        if round % 6 == 5 || round == runs - 1 {
            let target = env.path(&format!("restored-{round}"));
            env.ok(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
            assert_same_tree(&site, &target);
        }
    }
    eprintln!("{finished} of {runs} killed backups had finished before the kill");
    // Whatever the kills left, every snapshot still verifies.
    env.ok(&config, &["verify", "--all"]);
}
