//! The S3 store against a real Garage node (no mock of S3): round trips through single PUTs
//! and multipart uploads, verify, prune, and the errors a wrong key or bucket gives.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::garage::{self, Garage};
use crate::support::{Env, assert_same_tree, noise, rich_site};

/// A config backing up `site` to the Garage bucket.
fn s3_config(env: &Env, g: &Garage, site: &Path, store_extra: &str, extra: &str) -> PathBuf {
    let path = env.path("s3.toml");
    fs::write(
        &path,
        format!(
            "state_dir = \"state\"\n\
             [encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\
             {}\
             [retention]\nkeep_last = 1\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n{extra}",
            env.recipient,
            env.identity.display(),
            g.store_section(env.dir.path(), store_extra),
            site.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_backup_to_garage_restores_byte_identical_through_multipart_uploads() {
    let Some(bin) = garage::available() else {
        return;
    };
    let g = Garage::start(&bin);
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    // Incompressible: 13 MiB of stream make a 12 MiB part (three 5 MiB pieces, the last
    // short) and a small one (a single PUT).
    fs::write(site.join("noise.bin"), noise(7, 13 << 20)).unwrap();
    let config = s3_config(
        &env,
        &g,
        &site,
        "part_size = \"12MiB\"\nchunk_size = \"5MiB\"\nprefix = \"host-a\"\n",
        "",
    );
    let check = env.ok(&config, &["check"]);
    assert!(
        check.contains("write, read back, list and delete work") && check.contains("clock within"),
        "{check}"
    );
    let id = env.backup(&config);
    let listing = env.ok(&config, &["list", "--json"]);
    assert!(listing.contains(&id), "{listing}");

    let to = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", to.to_str().unwrap()]);
    assert_same_tree(&site, &to);
    env.ok(&config, &["verify", &id]);
    env.ok(&config, &["verify", &id, "--deep"]);

    // A second backup (a differential), then prune: what is kept still restores.
    fs::write(site.join("new.txt"), "added after the full").unwrap();
    let second = env.backup(&config);
    env.ok(&config, &["prune"]);
    let again = env.path("restored-2");
    env.ok(
        &config,
        &["restore", &second, "--to", again.to_str().unwrap()],
    );
    assert_same_tree(&site, &again);
    // Forgetting a snapshot deletes all its objects (in one DeleteObjects batch).
    env.ok(&config, &["forget", &second, "--force"]);
    let config_path = config;
    let config = coffer::config::Config::load(&config_path).unwrap();
    let store = coffer::store::open(&config.store).unwrap();
    assert!(
        store
            .list(&format!("snapshots/{second}/"))
            .unwrap()
            .is_empty()
    );
    assert!(!store.list(&format!("snapshots/{id}/")).unwrap().is_empty());
    // A batch with a key that is not there is fine; the others are gone.
    let keys: Vec<String> = (0..3).map(|i| format!("scratch/o{i}")).collect();
    for k in &keys[..2] {
        coffer::store::put_bytes(store.as_ref(), k, b"x").unwrap();
    }
    store.delete_many(&keys).unwrap();
    assert!(store.list("scratch/").unwrap().is_empty());

    // The manifest records each part's ETag as uploaded (MD5-of-MD5s-3 for the 12 MiB part
    // sent in three pieces, a plain MD5 for the single PUT), and a quick verify compares
    // them with the listing instead of reading the parts.
    let manifest =
        coffer::store::get_bytes(store.as_ref(), &format!("snapshots/{id}/manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let parts = manifest["sources"][0]["parts"].as_array().unwrap();
    let etags: Vec<&str> = parts.iter().map(|p| p["etag"].as_str().unwrap()).collect();
    assert!(etags[0].ends_with("-3"), "{etags:?}");
    assert!(!etags[1].contains('-') && etags[1].len() == 32, "{etags:?}");
    let out = env.ok(&config_path, &["verify", &id]);
    assert!(out.contains("as the store reports them"), "{out}");
    // A part replaced in the bucket by other bytes of the same size: its ETag gives it away.
    let name = parts[1]["name"].as_str().unwrap();
    let size = parts[1]["size"].as_u64().unwrap() as usize;
    coffer::store::put_bytes(
        store.as_ref(),
        &format!("snapshots/{id}/{name}"),
        &noise(99, size),
    )
    .unwrap();
    let out = env.fails(&config_path, &["verify", &id]);
    assert!(
        out.contains(name) && out.contains("was changed in the store"),
        "{out}"
    );
    let out = env.fails(&config_path, &["verify", &id, "--deep"]);
    assert!(out.contains(name) && out.contains("corrupted"), "{out}");
}

#[test]
fn a_wrong_secret_or_bucket_stops_at_once_saying_what_to_fix() {
    let Some(bin) = garage::available() else {
        return;
    };
    let g = Garage::start(&bin);
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("a.txt"), "a").unwrap();
    let config = s3_config(&env, &g, &site, "", "");
    // A wrong secret: refused by the server's signature check, named, never printed.
    fs::write(
        env.path("s3-secret"),
        "0000000000000000000000000000000000000000",
    )
    .unwrap();
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("SignatureDoesNotMatch")
            || out.contains("AccessDenied")
            || out.contains("InvalidAccessKeyId"),
        "{out}"
    );
    assert!(!out.contains(&g.secret), "{out}");
    // A bucket that does not exist.
    let other = s3_config(&env, &g, &site, "", "");
    let text = fs::read_to_string(&other)
        .unwrap()
        .replace("bucket = \"coffer\"", "bucket = \"no-such-bucket\"");
    fs::write(&other, text).unwrap();
    let out = env.fails(&other, &["check"]);
    assert!(out.contains("no-such-bucket"), "{out}");
}

#[test]
fn a_killed_upload_is_aborted_by_the_sweep_once_older_than_the_grace() {
    use std::io::Write;
    use std::time::{Duration, SystemTime};
    let Some(bin) = garage::available() else {
        return;
    };
    let g = Garage::start(&bin);
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir_all(&site).unwrap();
    let config = s3_config(&env, &g, &site, "chunk_size = \"5MiB\"\n", "");
    let config = coffer::config::Config::load(&config).unwrap();
    let store = coffer::store::open(&config.store).unwrap();
    let key = "snapshots/20260101T000000Z-abcdef/files.tar.gz.age.00001";
    // A backup killed mid-part: a multipart upload started, a piece sent, never finished.
    let mut w = store.put(key).unwrap();
    w.write_all(&noise(3, 6 << 20)).unwrap();
    std::mem::forget(w);
    std::thread::sleep(Duration::from_secs(2));
    let now = SystemTime::now();
    assert_eq!(
        store
            .sweep_uploads("snapshots/", now - Duration::from_secs(3600))
            .unwrap(),
        Vec::<String>::new(),
        "a young upload may belong to a backup still running"
    );
    let swept = store
        .sweep_uploads("snapshots/", now + Duration::from_secs(60))
        .unwrap();
    assert_eq!(swept, [key]);
    assert!(
        store
            .sweep_uploads("snapshots/", now + Duration::from_secs(60))
            .unwrap()
            .is_empty()
    );
    assert!(
        store.list("snapshots/").unwrap().is_empty(),
        "nothing was committed"
    );
    // A writer dropped without finish aborts its own upload.
    let mut w = store.put(key).unwrap();
    w.write_all(&noise(4, 6 << 20)).unwrap();
    drop(w);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        store
            .sweep_uploads("snapshots/", now + Duration::from_secs(600))
            .unwrap()
            .is_empty(),
        "the dropped writer aborted its upload"
    );
}

#[test]
fn a_three_node_cluster_backs_up_with_a_node_down_and_refuses_without_a_quorum() {
    use assert_cmd::prelude::*;
    use std::process::Command;
    use std::time::{Duration, Instant};
    let Some(bin) = garage::available() else {
        return;
    };
    let mut cluster = garage::Cluster::start(&bin);
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    fs::write(site.join("noise.bin"), noise(11, 20 << 20)).unwrap();
    let config = s3_config(
        &env,
        &cluster.nodes[0],
        &site,
        "part_size = \"8MiB\"\nchunk_size = \"5MiB\"\n",
        "",
    );
    // A node crashes while the backup runs: two of three still make a quorum.
    let backup = Command::cargo_bin("coffer")
        .unwrap()
        .arg("--config")
        .arg(&config)
        .args(["backup", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    cluster.nodes[2].kill();
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = first["id"].as_str().unwrap().to_string();
    let to = env.path("restored");
    env.ok(&config, &["restore", &first, "--to", to.to_str().unwrap()]);
    assert_same_tree(&site, &to);

    // A second node down: no quorum. The backup fails, saying where, and writes nothing.
    cluster.nodes[1].kill();
    let started = Instant::now();
    let out = env.fails(&config, &["backup"]);
    // (Garage answers 503 with "Could not reach quorum" until coffer's retries are spent.)
    assert!(
        out.contains("S3 bucket 'coffer'") && out.contains("503") && out.contains("attempts"),
        "{out}"
    );
    eprintln!(
        "the backup without a quorum failed in {:?}",
        started.elapsed()
    );

    // The nodes come back: the failed backup left no snapshot, and the next one works.
    cluster.nodes[1].run_node();
    cluster.nodes[2].run_node();
    let started = Instant::now();
    let listing = loop {
        let out = env.run(&config, &["list", "--json"]);
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the cluster never came back: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let ids: Vec<serde_json::Value> = serde_json::from_str::<serde_json::Value>(&listing)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ids.len(), 1, "{listing}");
    fs::write(site.join("after.txt"), "after the outage").unwrap();
    let second = env.backup(&config);
    let again = env.path("restored-2");
    env.ok(
        &config,
        &["restore", &second, "--to", again.to_str().unwrap()],
    );
    assert_same_tree(&site, &again);
}

#[test]
fn cut_uploads_and_injected_errors_are_retried_and_the_restore_is_identical() {
    use crate::support::fault_proxy::{Fault, FaultProxy};
    use std::time::{Duration, SystemTime};
    let Some(bin) = garage::available() else {
        return;
    };
    let g = Garage::start(&bin);
    // The first six connections each get a fault (however the client pools its connections,
    // every one of them is used up: a faulty connection is closed, and coffer retries on a
    // new one): cut 1 MiB into a request (mid-piece), 503 SlowDown and 500 InternalError from
    // the proxy itself, cut right in the request head. After them, every fourth connection is
    // cut mid-piece again.
    let first = [
        Fault::Cut(1 << 20),
        Fault::Answer(503, "SlowDown"),
        Fault::Cut(200),
        Fault::Answer(500, "InternalError"),
        Fault::Cut(1 << 20),
        Fault::Answer(503, "SlowDown"),
    ];
    let proxy = FaultProxy::start(g.s3_port, move |n| match first.get(n) {
        Some(f) => *f,
        None if n % 4 == 2 => Fault::Cut(1 << 20),
        None => Fault::None,
    });
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    fs::write(site.join("noise.bin"), noise(5, 13 << 20)).unwrap();
    let config = s3_config(
        &env,
        &g,
        &site,
        "part_size = \"6MiB\"\nchunk_size = \"5MiB\"\n",
        "",
    );
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace(&g.endpoint(), &format!("http://127.0.0.1:{}", proxy.port));
    fs::write(&config, text).unwrap();
    let id = env.backup(&config);
    let to = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", to.to_str().unwrap()]);
    assert_same_tree(&site, &to);
    env.ok(&config, &["verify", &id]);
    assert!(
        proxy.faults() >= 6,
        "only {} faults were injected",
        proxy.faults()
    );
    // Downloads broken off mid-body: the first three connections of a restore are cut once
    // 2 MiB of answers went through them; each download resumes from the byte it reached.
    let cutting = FaultProxy::start(g.s3_port, |n| {
        if n < 3 {
            Fault::CutAnswer(2 << 20)
        } else {
            Fault::None
        }
    });
    let text = fs::read_to_string(&config).unwrap().replace(
        &format!("http://127.0.0.1:{}", proxy.port),
        &format!("http://127.0.0.1:{}", cutting.port),
    );
    fs::write(&config, text).unwrap();
    let to = env.path("restored-through-cuts");
    env.ok(&config, &["restore", &id, "--to", to.to_str().unwrap()]);
    assert_same_tree(&site, &to);
    assert_eq!(cutting.cut_answers(), 3, "downloads cut mid-body");
    // Nothing stray: no unfinished upload is left behind the retried pieces.
    let direct = s3_config(&env, &g, &site, "", "");
    let direct = coffer::config::Config::load(&direct).unwrap();
    let store = coffer::store::open(&direct.store).unwrap();
    let later = SystemTime::now() + Duration::from_secs(600);
    assert_eq!(
        store.sweep_uploads("snapshots/", later).unwrap(),
        Vec::<String>::new()
    );
}

/// `checksum = "sha256"`: every upload also carries `x-amz-checksum-sha256` (Garage checks it
/// and keeps it), multipart uploads as SHA256 composites. Asked by another client (curl, its
/// own SigV4), Garage reports for a single-PUT part the very sha256 the manifest records.
#[test]
fn sha256_checksums_go_with_every_upload_and_the_server_keeps_them() {
    let Some(bin) = garage::available() else {
        return;
    };
    let g = Garage::start(&bin);
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    fs::write(site.join("noise.bin"), noise(8, 13 << 20)).unwrap();
    let config = s3_config(
        &env,
        &g,
        &site,
        "part_size = \"12MiB\"\nchunk_size = \"5MiB\"\nchecksum = \"sha256\"\n",
        "",
    );
    let id = env.backup(&config);
    let to = env.path("restored");
    env.ok(&config, &["restore", &id, "--to", to.to_str().unwrap()]);
    assert_same_tree(&site, &to);
    env.ok(&config, &["verify", &id, "--deep"]);

    let loaded = coffer::config::Config::load(&config).unwrap();
    let store = coffer::store::open(&loaded.store).unwrap();
    let manifest =
        coffer::store::get_bytes(store.as_ref(), &format!("snapshots/{id}/manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let parts = manifest["sources"][0]["parts"].as_array().unwrap();
    let head = |name: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-I", "--aws-sigv4", "aws:amz:garage:s3", "--user"])
            .arg(format!("{}:{}", g.key_id, g.secret))
            .args(["-H", "x-amz-checksum-mode: ENABLED", "-H"])
            .arg(format!(
                "x-amz-content-sha256: {}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b""))
            ))
            .arg(format!(
                "{}/{}/snapshots/{id}/{name}",
                g.endpoint(),
                g.bucket
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {out:?}");
        String::from_utf8(out.stdout).unwrap().to_ascii_lowercase()
    };
    // The short last part went up in one PUT: its checksum is the part's own sha256.
    let single = &parts[1];
    let want = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        hex::decode(single["sha256"].as_str().unwrap()).unwrap(),
    );
    let answer = head(single["name"].as_str().unwrap());
    assert!(
        answer.contains(&format!(
            "x-amz-checksum-sha256: {}",
            want.to_ascii_lowercase()
        )),
        "{answer}"
    );
    // The 12 MiB part in three pieces: a composite of the pieces' sha256 (`…-3`).
    let answer = head(parts[0]["name"].as_str().unwrap());
    assert!(answer.contains("x-amz-checksum-sha256: "), "{answer}");
}
