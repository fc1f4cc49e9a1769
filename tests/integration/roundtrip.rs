//! Backup → restore gives back the same bytes and metadata, at every size edge.

use std::fs;
use std::io::Write;

use coffer::pipeline::PartSplitter;
use coffer::snapshot::{self, SnapshotId};
use coffer::store::LocalStore;

use crate::support::{Env, assert_same_tree, noise, rich_site};

fn round_trip(env: &Env, site: &std::path::Path, part_size: &str) -> (String, usize) {
    let config = env.config(site, part_size, "");
    let id = env.backup(&config);
    let parts = env.parts(&id).len();
    let target = env.path(&format!("restored-{id}"));
    env.ok(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert_same_tree(site, &target);
    env.ok(&config, &["verify", &id, "--deep"]);
    (id, parts)
}

#[test]
fn rich_tree_restores_with_modes_mtimes_symlinks_and_odd_names() {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let (id, parts) = round_trip(&env, &site, "64MiB");
    assert_eq!(parts, 1);
    let list = env.ok(&env.path("coffer.toml"), &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["sources"][0], "files");
}

#[test]
fn empty_directory_and_single_empty_file() {
    let env = Env::new();
    let site = env.path("empty-site");
    fs::create_dir(&site).unwrap();
    round_trip(&env, &site, "64MiB");

    let env = Env::new();
    let site = env.path("one-empty-file");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("zero"), b"").unwrap();
    round_trip(&env, &site, "64MiB");
}

#[test]
fn stream_of_exactly_part_size_and_one_byte_more() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("blob"), noise(9, 200_000)).unwrap();
    let config = env.config(&site, "64MiB", "");
    let first = env.backup(&config);
    // age adds a random-length "grease" stanza to each header, so a stream's size cannot be
    // predicted: cut this stream itself at its own size, and one byte less, through the same
    // splitter the backup uses, and restore both.
    let store = LocalStore::new(env.store());
    let key = env.signing_key();
    let trusted = coffer::signing::Trusted::new([key.public()]);
    let manifest = snapshot::read_checked(&store, &first.parse().unwrap(), &trusted)
        .unwrap()
        .manifest;
    let stream: Vec<u8> = env
        .parts(&first)
        .iter()
        .flat_map(|p| fs::read(p).unwrap())
        .collect();
    let len = stream.len() as u64;
    for (part_size, want) in [(len, vec![len]), (len - 1, vec![len - 1, 1])] {
        let id = SnapshotId::new(chrono::Utc::now());
        let mut splitter = PartSplitter::new(&store, &id.prefix(), "files.tar.gz.age", part_size);
        splitter.write_all(&stream).unwrap();
        let out = splitter.finish().unwrap();
        let sizes: Vec<u64> = out.parts.iter().map(|p| p.size).collect();
        assert_eq!(sizes, want);
        assert_eq!(out.sha256, manifest.sources[0].sha256);
        let mut m = manifest.clone();
        m.id = id.clone();
        m.sources[0].parts = out.parts;
        // Only the tar stream was copied to the new snapshot.
        m.sources[0].checksums = None;
        snapshot::write_manifest(&store, &m, &key).unwrap();
        let target = env.path(&format!("restored-{part_size}"));
        env.ok(
            &config,
            &["restore", id.as_str(), "--to", target.to_str().unwrap()],
        );
        assert_same_tree(&site, &target);
        env.ok(&config, &["verify", id.as_str()]);
    }
}

#[test]
fn many_parts() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(site.join("a/b")).unwrap();
    for i in 0..40 {
        fs::write(
            site.join(format!("a/b/n{i}")),
            noise(i, 50_000 + i as usize * 997),
        )
        .unwrap();
    }
    let (_, parts) = round_trip(&env, &site, "64KiB");
    assert!(parts > 25, "{parts} parts");
}

#[test]
fn excluded_paths_are_left_out() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(site.join("private/backups/old")).unwrap();
    fs::write(site.join("private/backups/old/db.sql.gz"), b"old").unwrap();
    fs::write(site.join("keep.txt"), b"keep").unwrap();
    fs::write(site.join("skip.pyc"), b"skip").unwrap();
    let config = env.config(&site, "64MiB", "");
    let text = fs::read_to_string(&config).unwrap().replace(
        "type = \"directory\"",
        "type = \"directory\"\nexclude = [\"private/backups/**\", \"*.pyc\"]",
    );
    fs::write(&config, text).unwrap();
    let id = env.backup(&config);
    let target = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert!(target.join("keep.txt").exists());
    assert!(!target.join("skip.pyc").exists());
    assert!(target.join("private/backups").is_dir());
    assert!(!target.join("private/backups/old").exists());
}

#[test]
fn two_recipients_can_each_restore() {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let second_id = env.path("second.txt");
    let second = coffer::keys::generate(&second_id).unwrap().to_string();
    let config = env.config_with(&site, "64KiB", &[env.recipient.clone(), second], "");
    let id = env.backup(&config);
    for (n, identity) in [&env.identity, &second_id].into_iter().enumerate() {
        let target = env.path(&format!("r{n}"));
        env.ok(
            &config,
            &[
                "restore",
                &id,
                "--to",
                target.to_str().unwrap(),
                "--identity",
                identity.to_str().unwrap(),
            ],
        );
        assert_same_tree(&site, &target);
    }
}

#[test]
fn restore_refuses_a_non_empty_target_unless_forced() {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    let target = env.path("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("precious"), b"keep me").unwrap();
    let err = env.fails(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
    env.ok(
        &config,
        &[
            "restore",
            "latest",
            "--to",
            target.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(fs::read(target.join("precious")).unwrap(), b"keep me");
    assert_eq!(
        fs::read(target.join("site_config.json")).unwrap(),
        fs::read(site.join("site_config.json")).unwrap()
    );
}

#[test]
fn special_files_are_a_warning_not_a_failure() {
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("a.txt"), b"a").unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(site.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let config = env.config(&site, "64MiB", "");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["warnings"][0]["kind"], "special");
    assert_eq!(v["warnings"][0]["path"], "pipe");
    assert_eq!(v["manifest"]["sources"][0]["warnings"]["special"], 1);
    assert_eq!(v["manifest"]["sources"][0]["entries"]["files"], 1);
}

#[test]
fn latest_never_falls_back_past_a_bad_newest_manifest() {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.config(&site, "64MiB", "");
    let _older = env.backup(&config);
    let newest = env.backup(&config);
    let manifest = env
        .store()
        .join("snapshots")
        .join(&newest)
        .join("manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    // As a newer coffer on the backup host would write it: signed by the trusted key.
    env.write_signed_manifest(
        &manifest,
        text.replace("\"format_version\": 2", "\"format_version\": 99")
            .as_bytes(),
    );
    let out = env.fails(&config, &["verify"]);
    assert!(
        out.contains(&newest) && out.contains("upgrade coffer"),
        "{out}"
    );
    let out = env.fails(&config, &["verify", "--all"]);
    assert!(out.contains(&newest), "{out}");
    let out = env.run(&config, &["verify", "--all", "--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let bad: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["id"], newest.as_str());
    let target = env.path("t");
    let out = env.fails(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert!(out.contains(&newest), "{out}");
}

#[test]
fn age_header_larger_than_a_part() {
    // Twelve recipients make the age header longer than a 1 KiB part.
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let mut recipients = vec![env.recipient.clone()];
    recipients.extend((0..11).map(|_| age::x25519::Identity::generate().to_public().to_string()));
    let config = env.config_with(&site, "1KiB", &recipients, "");
    let id = env.backup(&config);
    let first = fs::read(&env.parts(&id)[0]).unwrap();
    assert!(
        !first.windows(4).any(|w| w == b"\n---"),
        "the header spans parts"
    );
    let target = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert_same_tree(&site, &target);
}

#[test]
fn setuid_and_setgid_bits_are_not_restored_on_files() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    let tool = site.join("tool");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o6755)).unwrap();
    let shared = site.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o2775)).unwrap();
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    let target = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&target.join("tool")), 0o755);
    assert_eq!(
        mode(&target.join("shared")),
        0o2775,
        "directories keep setgid"
    );
}

#[test]
fn restoring_as_root_keeps_owners_modes_and_mtimes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
    // SECURITY.md and OPERATIONS.md: "Run as root, they also restore owners".
    if !crate::support::prerequisite(
        rustix::process::geteuid().is_root(),
        "not running as root",
        "run the tests as root, as .ci/run does",
    ) {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(site.join("owned/deeper")).unwrap();
    fs::write(site.join("owned/a.txt"), b"a").unwrap();
    fs::write(site.join("owned/deeper/b.bin"), noise(3, 10_000)).unwrap();
    fs::write(site.join("other.txt"), b"other owner").unwrap();
    fs::write(site.join("root.txt"), b"stays root's").unwrap();
    symlink("owned/a.txt", site.join("link")).unwrap();
    let owners = [
        ("owned", 1234, 5678, Some(0o750)),
        ("owned/deeper", 1234, 5678, Some(0o700)),
        ("owned/a.txt", 1234, 5678, Some(0o640)),
        ("owned/deeper/b.bin", 1234, 5678, Some(0o600)),
        ("other.txt", 4321, 8765, Some(0o604)),
        ("link", 1111, 2222, None),
    ];
    for (rel, uid, gid, mode) in owners {
        let p = site.join(rel);
        lchown(&p, Some(uid), Some(gid)).unwrap();
        if let Some(mode) = mode {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let mut t = 1_500_000_000i64;
    for rel in crate::support::walk(&site).into_iter().rev() {
        t += 777;
        let ft = filetime::FileTime::from_unix_time(t, 0);
        filetime::set_symlink_file_times(site.join(&rel), ft, ft).unwrap();
    }
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    let target = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert_same_tree(&site, &target);
    let ids = |root: &std::path::Path| -> Vec<(std::path::PathBuf, u32, u32)> {
        crate::support::walk(root)
            .into_iter()
            .map(|rel| {
                let m = fs::symlink_metadata(root.join(&rel)).unwrap();
                (rel, m.uid(), m.gid())
            })
            .collect()
    };
    let restored = ids(&target);
    assert_eq!(restored, ids(&site));
    // The test means something: the owners are not all root's.
    assert!(restored.contains(&("owned/deeper/b.bin".into(), 1234, 5678)));
    assert!(restored.contains(&("other.txt".into(), 4321, 8765)));
    assert!(restored.contains(&("link".into(), 1111, 2222)));
    assert!(restored.contains(&("root.txt".into(), 0, 0)));
}

#[test]
fn hard_links_restore_as_separate_files() {
    use std::os::unix::fs::MetadataExt;
    // FORMAT.md: "hard links are stored as separate regular files".
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(site.join("sub")).unwrap();
    fs::write(site.join("a.txt"), b"shared content").unwrap();
    fs::hard_link(site.join("a.txt"), site.join("b.txt")).unwrap();
    fs::hard_link(site.join("a.txt"), site.join("sub/c.txt")).unwrap();
    assert_eq!(fs::metadata(site.join("a.txt")).unwrap().nlink(), 3);
    let config = env.config(&site, "64MiB", "");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let source = &v["manifest"]["sources"][0];
    assert_eq!(source["entries"]["files"], 3, "{source:#}");
    assert_eq!(source["checksums"]["files"], 3, "{source:#}");
    assert_eq!(source["file_bytes"], 3 * 14, "{source:#}");
    let target = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    let names = ["a.txt", "b.txt", "sub/c.txt"];
    let mut inodes = std::collections::BTreeSet::new();
    for name in names {
        let m = fs::symlink_metadata(target.join(name)).unwrap();
        assert!(m.is_file(), "{name}");
        assert_eq!(m.nlink(), 1, "{name} is a file of its own");
        inodes.insert(m.ino());
        assert_eq!(fs::read(target.join(name)).unwrap(), b"shared content");
    }
    assert_eq!(inodes.len(), 3);
    // Independent: changing one leaves the others as they were.
    fs::write(target.join("b.txt"), b"changed").unwrap();
    assert_eq!(fs::read(target.join("a.txt")).unwrap(), b"shared content");
    assert_eq!(
        fs::read(target.join("sub/c.txt")).unwrap(),
        b"shared content"
    );
    env.ok(&config, &["verify", "latest", "--deep"]);
}

#[test]
fn files_that_change_or_vanish_while_read_are_warnings_and_the_backup_succeeds() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    // The walk writes the tar on the thread that calls `progress`, so a progress callback
    // acts at a known point of the walk: after a file was opened and its header written,
    // before its content is read. Layout of the tar (no pax headers: short ASCII names):
    //   [512 header 1-grows][SIZE bytes][512 header 2-shrinks][SIZE bytes][3-vanishes]…
    const SIZE: usize = 300 * 1024; // a multiple of 512 (no padding), more than one read
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    let grows = noise(11, SIZE);
    let shrinks = noise(12, SIZE);
    fs::write(site.join("1-grows"), &grows).unwrap();
    fs::write(site.join("2-shrinks"), &shrinks).unwrap();
    fs::write(site.join("3-vanishes"), b"listed, then deleted").unwrap();
    fs::write(site.join("4-steady"), b"steady").unwrap();
    let config_path = env.config(&site, "64MiB", "");
    let config = coffer::config::Config::load(&config_path).unwrap();
    let store = LocalStore::new(env.store());
    let total = AtomicU64::new(0);
    let done = Mutex::new((false, false));
    let report = coffer::backup::backup(&config, &store, &|n| {
        let at = total.fetch_add(n, Ordering::SeqCst) + n;
        let mut done = done.lock().unwrap();
        if !done.0 {
            // 1-grows is open and its header written (the listing is long done).
            done.0 = true;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(site.join("1-grows"))
                .unwrap();
            f.write_all(b"appended while being read").unwrap();
            fs::remove_file(site.join("3-vanishes")).unwrap();
        } else if !done.1 && at > (512 + SIZE) as u64 {
            // 2-shrinks is open and its header (with SIZE) written.
            done.1 = true;
            let f = fs::OpenOptions::new()
                .write(true)
                .open(site.join("2-shrinks"))
                .unwrap();
            f.set_len(1000).unwrap();
        }
    })
    .expect("warnings do not fail a backup");
    assert_eq!(*done.lock().unwrap(), (true, true));
    let mut warnings: Vec<(&str, String, String)> = report
        .warnings
        .iter()
        .map(|(source, w)| {
            assert_eq!(source, "files");
            (
                w.kind.as_str(),
                w.path.display().to_string(),
                w.detail.clone(),
            )
        })
        .collect();
    warnings.sort();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(
        (warnings[0].0, warnings[0].1.as_str()),
        ("changed", "1-grows")
    );
    assert!(
        warnings[0].2.contains("modified while being read"),
        "{warnings:?}"
    );
    assert_eq!(
        (warnings[1].0, warnings[1].1.as_str()),
        ("changed", "2-shrinks")
    );
    assert!(
        warnings[1].2.contains("shrank while being read"),
        "{warnings:?}"
    );
    assert_eq!(
        (warnings[2].0, warnings[2].1.as_str()),
        ("vanished", "3-vanishes")
    );
    // The manifest counts them (and names no file).
    let source = &report.manifest.sources[0];
    assert_eq!(
        source.warnings,
        [("changed".to_string(), 2), ("vanished".to_string(), 1)].into()
    );
    assert_eq!(source.entries.as_ref().unwrap().files, 3);
    let manifest = fs::read_to_string(
        env.store()
            .join("snapshots")
            .join(report.manifest.id.as_str())
            .join("manifest.json"),
    )
    .unwrap();
    assert!(!manifest.contains("1-grows") && !manifest.contains("vanishes"));

    // Each file keeps the size its header announced: cut, or padded with zeros.
    let target = env.path("restored");
    env.ok(
        &config_path,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert_eq!(fs::read(target.join("1-grows")).unwrap(), grows);
    let mut padded = shrinks[..1000].to_vec();
    padded.resize(SIZE, 0);
    assert_eq!(fs::read(target.join("2-shrinks")).unwrap(), padded);
    assert!(!target.join("3-vanishes").exists());
    assert_eq!(fs::read(target.join("4-steady")).unwrap(), b"steady");
    env.ok(&config_path, &["verify", "latest", "--deep"]);
    // The checksum stream hashed the bytes stored, zeros included: a drill (into the default
    // staging folder) finds every restored file as it was hashed.
    let out = env.ok(&config_path, &["drill", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["sources"][0]["files"]["hashed"], 3, "{r:#}");
    assert_eq!(r["sources"][0]["files"]["hash_failures"], 0, "{r:#}");

    // The full's index holds what the files were when they were opened: the next backup, a
    // differential, takes the files that changed while being read again, whole, and leaves
    // the steady one out.
    let out: serde_json::Value =
        serde_json::from_str(&env.ok(&config_path, &["backup", "--json"])).unwrap();
    assert_eq!(out["folders"][0]["kind"], "differential", "{out:#}");
    let diff = &out["manifest"]["sources"][0]["differential"];
    assert_eq!(diff["changed_files"], 2, "{out:#}");
    let target = env.path("restored-differential");
    env.ok(
        &config_path,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    crate::support::assert_same_tree(&site, &target);
}
