//! The store is untrusted: each test is an attack by someone who can write to the store and
//! knows the public recipients (issue 15), and checks that it now does no harm.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use coffer::snapshot::SnapshotId;
use coffer::store::LocalStore;

use crate::support::{Env, assert_same_tree};

/// A second config on the same store with the victim's recipients, as the attacker writes
/// it: its own state folder, so its first backup makes its own signing key.
fn attacker_config(env: &Env, victim: &Path, site: &Path) -> PathBuf {
    let text = fs::read_to_string(victim).unwrap();
    let text = text
        .replace("state_dir = \"state\"", "state_dir = \"attacker-state\"")
        .replace(
            &format!("path = \"{}\"", env.path("site").display()),
            &format!("path = \"{}\"", site.display()),
        );
    let path = env.path("attacker.toml");
    fs::write(&path, text).unwrap();
    path
}

fn site_with_invoice(root: &Path, invoice: &[u8]) {
    fs::create_dir_all(root.join("private/files")).unwrap();
    fs::write(root.join("private/files/invoice.pdf"), invoice).unwrap();
    fs::write(root.join("site_config.json"), b"{\"db_name\": \"erp\"}").unwrap();
}

fn manifest_path(env: &Env, id: &str) -> PathBuf {
    env.store().join("snapshots").join(id).join("manifest.json")
}

#[test]
fn a_snapshot_planted_by_a_store_writer_is_listed_as_untrusted_and_never_restored() {
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF real invoice");
    let config = env.config(&site, "64MiB", "");
    let real = env.backup(&config);

    // The attacker's site: a web shell where the invoice was.
    let evil_site = env.path("evil-site");
    site_with_invoice(&evil_site, b"<?php system($_GET['c']); ?>");
    let attacker = attacker_config(&env, &config, &evil_site);
    let planted = env.backup(&attacker);
    assert!(planted > real, "the planted snapshot is the newest");

    let list = env.ok(&config, &["list"]);
    let line = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .to_string()
    };
    assert!(line(&real).contains(" signed "), "{list}");
    assert!(line(&planted).contains("UNTRUSTED"), "{list}");
    assert!(list.contains("may have planted it"), "{list}");

    // `latest` is the newest *trusted* snapshot, and the planted one is named on the way.
    let out = env.run(&config, &["verify", "latest", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], real.as_str());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&planted));
    let target = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert_same_tree(&site, &target);

    // Named explicitly, it is refused, and nothing is written — even with --allow-unsigned,
    // since it is signed, by a key nobody trusts.
    for extra in [&[][..], &["--allow-unsigned"][..]] {
        let target = env.path("planted-restore");
        let mut args = vec![
            "restore",
            planted.as_str(),
            "--to",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = env.fails(&config, &args);
        assert!(
            out.contains("not signed by a trusted key") && out.contains("do not restore it"),
            "{out}"
        );
        assert!(!target.exists(), "nothing is written");
        let out = env.fails(
            &config,
            &[&["verify", planted.as_str()][..], extra].concat(),
        );
        assert!(out.contains("not signed by a trusted key"), "{out}");
    }

    // Without its signature it is unsigned: refused unless the operator vouches for it.
    fs::remove_file(manifest_path(&env, &planted).with_extension("json.sig")).unwrap();
    let target = env.path("unsigned-restore");
    let out = env.fails(
        &config,
        &["restore", &planted, "--to", target.to_str().unwrap()],
    );
    assert!(
        out.contains("is not signed") && out.contains("--allow-unsigned"),
        "{out}"
    );
    assert!(!target.exists());

    // And the operator removes it by name.
    let out = env.fails(&config, &["forget", &real]);
    assert!(
        out.contains("--force"),
        "a trusted snapshot needs --force: {out}"
    );
    env.ok(&config, &["forget", &planted]);
    assert!(!env.store().join("snapshots").join(&planted).exists());
    assert!(env.store().join("snapshots").join(&real).exists());
}

#[test]
fn an_altered_manifest_or_signature_or_a_moved_signature_is_refused() {
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF real invoice");
    let config = env.config(&site, "64MiB", "");
    let first = env.backup(&config);
    let second = env.backup(&config);
    let (m2, s2) = (
        manifest_path(&env, &second),
        manifest_path(&env, &second).with_extension("json.sig"),
    );
    let (manifest, signature) = (fs::read(&m2).unwrap(), fs::read(&s2).unwrap());
    let refused = |what: &str| {
        let out = env.fails(&config, &["verify", &second]);
        assert!(
            out.contains("not signed by a trusted key") && out.contains(&second),
            "{what}: {out}"
        );
        let out = env.run(&config, &["verify", "latest", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v[0]["id"],
            first.as_str(),
            "{what}: latest falls back to the good one"
        );
    };

    // One flipped bit in the manifest (a hex digit of a part's sha256: it still parses and
    // is consistent, only the signature can tell).
    let mut altered = manifest.clone();
    let at = altered
        .windows(8)
        .position(|w| w == b"\"sha256\"")
        .expect("a sha256 field")
        + 11;
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    fs::write(&m2, &altered).unwrap();
    refused("a flipped byte in manifest.json");
    fs::write(&m2, &manifest).unwrap();
    env.ok(&config, &["verify", &second]);

    // One flipped byte in the signature's base64.
    let mut bad_sig = signature.clone();
    let at = bad_sig.len() / 2;
    bad_sig[at] = if bad_sig[at] == b'A' { b'B' } else { b'A' };
    fs::write(&s2, &bad_sig).unwrap();
    refused("a flipped byte in manifest.json.sig");

    // The first snapshot's (valid) signature moved onto the second.
    fs::copy(manifest_path(&env, &first).with_extension("json.sig"), &s2).unwrap();
    refused("a signature moved from another snapshot");
    let out = env.fails(&config, &["verify", &second]);
    assert!(out.contains("moved from another snapshot"), "{out}");
}

#[test]
fn stock_ssh_keygen_verifies_a_backups_signature() {
    if !crate::support::prerequisite(
        std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_ok(),
        "ssh-keygen",
        "apt-get install openssh-client",
    ) {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    // What docs/RECOVERY.md tells the operator to write.
    let key = env.signer_key();
    let allowed = env.path("allowed_signers");
    fs::write(
        &allowed,
        format!("backup-host namespaces=\"coffer\" {key}\n"),
    )
    .unwrap();
    let verify = |manifest: &Path| {
        std::process::Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", "backup-host", "-n", "coffer", "-s"])
            .arg(manifest.with_extension("json.sig"))
            .stdin(fs::File::open(manifest).unwrap())
            .output()
            .unwrap()
    };
    let m = manifest_path(&env, &id);
    let out = verify(&m);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Good \"coffer\" signature"));
    let text = fs::read_to_string(&m).unwrap();
    fs::write(&m, text.replacen("\"host\"", "\"host\" ", 1)).unwrap();
    assert!(!verify(&m).status.success());
}

/// A snapshot as the attacker forges it: an old id, `created` in 2099, no sources, 200 bytes.
fn forged_manifest(id: &str) -> String {
    format!(
        "{{\"format\":\"coffer-snapshot\",\"format_version\":1,\"id\":\"{id}\",\
         \"created\":\"2099-01-01T00:00:00Z\",\"finished\":\"2099-01-01T00:00:00Z\",\
         \"host\":\"x\",\"coffer_version\":\"0\",\"recipients\":[],\"sources\":[]}}"
    )
}

fn snapshot_at(env: &Env, store: &LocalStore, time: &str) -> String {
    let created: DateTime<Utc> = time.parse().unwrap();
    let id = SnapshotId::new(created);
    crate::support::store_snapshot(env, store, &id, created, b"real bytes")
}

fn folders(env: &Env) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(env.store().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn forged_manifests_change_nothing_prune_deletes() {
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config = env.config(&site, "1MiB", "");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("{text}\n[retention]\nkeep_daily = 2\nkeep_weekly = 0\nkeep_monthly = 0\n"),
    )
    .unwrap();
    let store = LocalStore::new(env.store());
    let real: Vec<String> = [
        "2026-12-01T02:00:00Z",
        "2026-12-02T02:00:00Z",
        "2026-12-03T02:00:00Z",
    ]
    .iter()
    .map(|t| snapshot_at(&env, &store, t))
    .collect();
    let plan = |env: &Env| -> serde_json::Value {
        let out = env.ok(&config, &["prune", "--dry-run", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        serde_json::json!({"keep": v["keep"], "prune": v["prune"]})
    };
    let honest = plan(&env);
    assert_eq!(honest["prune"], serde_json::json!([real[0]]), "{honest:#}");

    // Seven 200-byte forgeries with old ids, dated 2099, with no sources (unsigned); and three
    // consistent ones, newer than every real snapshot, signed by the attacker's own key.
    let mut forged = Vec::new();
    for day in 1..=7 {
        let id = format!("2026110{day}T020000Z-0000{day:02}");
        let dir = env.store().join("snapshots").join(&id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("manifest.json"), forged_manifest(&id)).unwrap();
        forged.push(id);
    }
    let attacker = coffer::signing::SigningKey::generate("attacker");
    for time in [
        "2026-12-04T02:00:00Z",
        "2026-12-05T02:00:00Z",
        "2026-12-06T02:00:00Z",
    ] {
        let created: DateTime<Utc> = time.parse().unwrap();
        let id = SnapshotId::new(created);
        let victim = crate::support::store_snapshot(&env, &store, &id, created, b"planted");
        // Re-signed by the attacker's key.
        let m = manifest_path(&env, &victim);
        fs::write(
            m.with_extension("json.sig"),
            attacker.sign(&fs::read(&m).unwrap()).unwrap(),
        )
        .unwrap();
        forged.push(victim);
    }
    assert_eq!(plan(&env), honest, "the forgeries change nothing");
    let out = env.ok(&config, &["prune"]);
    assert!(out.contains("left alone"), "{out}");
    let mut expected: Vec<String> = real[1..].iter().chain(&forged).cloned().collect();
    expected.sort();
    assert_eq!(
        folders(&env),
        expected,
        "only the planned real snapshot went"
    );

    // None of them is `latest` for a restore, and none of them is empty-but-"ok".
    let out = env.run(&config, &["verify", "latest", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], real[2].as_str());
    let out = env.fails(&config, &["verify", &forged[0]]);
    assert!(
        out.contains("unreadable") && out.contains("far from the time in its id"),
        "{out}"
    );
    // The run history's status reads the newest *trusted* snapshot.
    let out = env.ok(&config, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["newest_snapshot"]["id"], real[2].as_str());
}

#[test]
fn a_manifest_of_300_mb_is_refused_with_flat_memory() {
    if !crate::support::prerequisite(
        Path::new("/usr/bin/time").exists(),
        "/usr/bin/time",
        "apt-get install time",
    ) {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config = env.config(&site, "64MiB", "");
    let real = env.backup(&config);
    let huge = SnapshotId::new(Utc::now()).to_string();
    let dir = env.store().join("snapshots").join(&huge);
    fs::create_dir_all(&dir).unwrap();
    // 300 MB of JSON whitespace: it would parse to nothing after a full read.
    let f = fs::File::create(dir.join("manifest.json")).unwrap();
    f.set_len(300_000_000).unwrap();
    for args in [
        vec!["list"],
        vec!["verify", huge.as_str()],
        vec!["restore", huge.as_str(), "--to", "/nonexistent/x"],
    ] {
        let out = std::process::Command::new("/usr/bin/time")
            .args(["-f", "maxrss_kib=%M"])
            .arg(env!("CARGO_BIN_EXE_coffer"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let rss: u64 = stderr
            .rsplit("maxrss_kib=")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            rss < 100 * 1024,
            "{args:?} used {rss} KiB: the manifest was read"
        );
        assert!(
            stderr.contains(&huge) && stderr.contains("was not read"),
            "{args:?}: {stderr}"
        );
        if args[0] == "list" {
            assert!(out.status.success());
            assert!(
                stdout.contains(&real) && !stdout.contains(&huge),
                "{stdout}"
            );
        } else {
            assert!(!out.status.success());
        }
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_manifests_size() {
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config = env.config(&site, "64MiB", "");
    // A tar holding 64 MiB of zeros (64 KiB compressed), whose manifest says 1000 bytes:
    // signed, as a compromised backup host could make it.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(64 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "zeros", std::io::repeat(0).take(64 << 20))
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let store = LocalStore::new(env.store());
    let id = crate::support::store_snapshot(
        &env,
        &store,
        &SnapshotId::new(Utc::now()),
        Utc::now(),
        &tar,
    );
    let m = manifest_path(&env, &id);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&m).unwrap()).unwrap();
    v["sources"][0]["plaintext_bytes"] = 1000.into();
    env.write_signed_manifest(&m, &serde_json::to_vec_pretty(&v).unwrap());
    let target = env.path("restored");
    let out = env.fails(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert!(out.contains("decodes to more than the 1000 bytes"), "{out}");
    let written = fs::metadata(target.join("zeros")).map_or(0, |m| m.len());
    assert!(written <= 1000, "{written} bytes written");
}

#[test]
fn restore_refuses_a_target_another_user_owns_or_can_write_and_makes_new_ones_0700() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    // An empty folder someone else made in a shared place (as root here: made by "nobody").
    let foreign = env.path("foreign");
    fs::create_dir(&foreign).unwrap();
    let me = rustix::process::geteuid().as_raw();
    if me == 0 {
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let out = env.fails(
            &config,
            &["restore", &id, "--to", foreign.to_str().unwrap()],
        );
        assert!(out.contains("belongs to uid 65534"), "{out}");
        assert_eq!(
            fs::read_dir(&foreign).unwrap().count(),
            0,
            "nothing written"
        );
    }
    let open = env.path("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.fails(&config, &["restore", &id, "--to", open.to_str().unwrap()]);
    assert!(out.contains("others can write to it"), "{out}");
    assert_eq!(fs::read_dir(&open).unwrap().count(), 0, "nothing written");
    let link = env.path("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let out = env.fails(&config, &["restore", &id, "--to", link.to_str().unwrap()]);
    assert!(out.contains("not a folder"), "{out}");

    let fresh = env.path("new/deeper");
    env.ok(&config, &["restore", &id, "--to", fresh.to_str().unwrap()]);
    let meta = fs::metadata(&fresh).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), me);
    assert_same_tree(&site, &fresh);
}

/// A name that sets the terminal's title, clears its screen and prints a fake line.
const HOSTILE: &str = "inv\u{1b}]0;owned\u{7}\u{1b}[2J\rsnapshot ok\u{9b}31m";

fn assert_escaped(out: &str) {
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{9b}'),
        "raw control characters reached the terminal: {out:?}"
    );
    assert!(out.contains("\\x1b]0;owned\\x07"), "{out}");
}

#[test]
fn control_characters_in_names_are_printed_escaped() {
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    // A FIFO is skipped with a warning that names it.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        site.join(HOSTILE),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let config = env.config(&site, "64MiB", "");
    let out = env.run(&config, &["backup"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning"), "{stderr}");
    assert_escaped(&stderr);

    // An archive entry named so is refused, and the refusal is escaped.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    let name = format!("../{HOSTILE}");
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
    tar.append(&h, &b"evil"[..]).unwrap();
    let store = LocalStore::new(env.store());
    let id = crate::support::store_snapshot(
        &env,
        &store,
        &SnapshotId::new(Utc::now()),
        Utc::now(),
        &tar.into_inner().unwrap(),
    );
    let target = env.path("restored");
    let out = env.fails(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert!(out.contains("refusing archive entry"), "{out}");
    assert_escaped(&out);
}

#[test]
fn the_state_folder_is_made_0700_a_looser_one_is_reported_and_the_lock_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config = env.config(&site, "64MiB", "");
    let state = env.path("state");
    assert!(!state.exists());
    let out = env.run(&config, &["check", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state_check = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "state_dir")
        .unwrap()
        .clone();
    assert_eq!(state_check["ok"], true, "{state_check}");
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    env.backup(&config);
    let mode = |p: &str| fs::metadata(env.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("state/backup.lock"), 0o600);
    assert_eq!(mode("state/signing-key"), 0o600);
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.fails(&config, &["check"]);
    assert!(
        out.contains("mode 755") && out.contains("chmod 700"),
        "{out}"
    );
}

#[test]
fn the_verify_job_alerts_when_snapshots_this_host_made_are_deleted_or_the_store_rolled_back() {
    use coffer::schedule::{JobKind, Trigger};
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, b"%PDF");
    let config_path = env.config(&site, "64MiB", "");
    let text = fs::read_to_string(&config_path).unwrap();
    // Retention keeps two: the daemon's backup job prunes after each backup.
    fs::write(
        &config_path,
        // Every backup a full: a differential would pin its full and keep a third.
        format!("{text}full_every = \"0s\"\n[retention]\nkeep_last = 2\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\n"),
    )
    .unwrap();
    let config = coffer::config::Config::load(&config_path).unwrap();
    let backup = || coffer::daemon::run_job(&config, JobKind::Backup, Trigger::Manual);
    let verify =
        || coffer::daemon::run_job(&config, JobKind::Verify { deep: false }, Trigger::Manual);
    for _ in 0..3 {
        backup().unwrap();
    }
    // Pruned by this host: expected gone, no alert.
    verify().unwrap();
    let mut ids = folders(&env);
    assert_eq!(ids.len(), 2, "{ids:?}");

    // Someone with the store's credentials deletes the newest snapshot.
    let newest = ids.pop().unwrap();
    let saved = env.path("saved");
    fs::rename(env.store().join("snapshots").join(&newest), &saved).unwrap();
    let err = format!("{:#}", verify().unwrap_err());
    assert!(
        err.contains(&format!("snapshot {newest}")) && err.contains("is gone from the store"),
        "{err}"
    );
    assert!(err.contains("rolled back"), "{err}");
    // It is recorded as a failed verify (and so alerted like any failed job).
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&config_path, &["status", "--json"])).unwrap();
    let verify_job = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "verify")
        .unwrap();
    assert!(
        verify_job["last_failure"]["error"]
            .as_str()
            .unwrap()
            .contains("is gone from the store"),
        "{verify_job:#}"
    );
    // Put back, but altered: it no longer verifies.
    fs::rename(&saved, env.store().join("snapshots").join(&newest)).unwrap();
    verify().unwrap();
    let m = manifest_path(&env, &newest);
    let altered = fs::read_to_string(&m)
        .unwrap()
        .replacen("\"host\"", "\"host\" ", 1);
    fs::write(&m, altered).unwrap();
    let err = format!("{:#}", verify().unwrap_err());
    assert!(err.contains("no longer verifies"), "{err}");
}

#[test]
fn a_part_swapped_into_a_signed_snapshot_is_refused_before_anything_is_extracted() {
    use std::io::Write as _;
    let env = Env::new();
    let site = env.path("site");
    site_with_invoice(&site, &crate::support::noise(7, 300_000));
    let config = env.config(&site, "64KiB", "");
    let id = env.backup(&config);
    let parts = env.parts(&id);
    assert!(parts.len() > 2);
    let size = fs::metadata(&parts[0]).unwrap().len() as usize;
    // The attacker's own age file (to the public recipient): a tar.gz whose first entry is a
    // web shell, cut to the first part's size. Its first chunks decrypt fine.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let shell = b"<?php system($_GET['c']); ?>";
    h.set_size(shell.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "private/files/invoice.php", &shell[..])
        .unwrap();
    let filler = crate::support::noise(8, 2 * size);
    let mut h = tar::Header::new_gnu();
    h.set_size(filler.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "filler", &filler[..]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    let recipient: age::x25519::Recipient = env.recipient.parse().unwrap();
    let mut evil = Vec::new();
    let mut w = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .unwrap()
        .wrap_output(&mut evil)
        .unwrap();
    w.write_all(&gz.finish().unwrap()).unwrap();
    w.finish().unwrap();
    assert!(evil.len() > size);
    fs::write(&parts[0], &evil[..size]).unwrap();

    let target = env.path("restored");
    let out = env.fails(&config, &["restore", &id, "--to", target.to_str().unwrap()]);
    assert!(
        out.contains("files.tar.gz.age.00001") && out.contains("corrupted"),
        "{out}"
    );
    assert!(
        !target.join("private/files/invoice.php").exists(),
        "the attacker's file was extracted"
    );
    let written = walk_files(&target);
    assert!(written.is_empty(), "written: {written:?}");
}

fn walk_files(root: &Path) -> Vec<PathBuf> {
    crate::support::walk(root)
        .into_iter()
        .filter(|p| root.join(p).is_file())
        .collect()
}
