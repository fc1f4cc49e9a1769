//! The Google Drive store against the fake Drive v3 server (tests/integration/support/
//! fake_drive.rs): round trips, every injected fault, and no duplicate or orphan file left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::fake_drive::{FakeDrive, SHARED_DRIVE};
use crate::support::{Env, assert_same_tree, noise, rich_site};

/// A config backing `site` up into the fake's Shared Drive (256 KiB chunks, 1 MiB parts).
fn drive_config(env: &Env, drive: &FakeDrive, site: &Path, extra: &str) -> PathBuf {
    let key = drive.service_account_key(env.dir.path());
    // Unpaced, unless the test paces on purpose.
    let extra = if extra.contains("requests_per_second") {
        extra.to_string()
    } else {
        format!("requests_per_second = 0\n{extra}")
    };
    let path = env.path("drive.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = \"state\"\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\
             [store]\ntype = \"gdrive\"\nservice_account_key_file = \"{}\"\ndrive_id = \"{SHARED_DRIVE}\"\n\
             folder = \"coffer-test\"\napi_base_url = \"{}\"\npart_size = \"1MiB\"\nchunk_size = \"256KiB\"\n{extra}\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n",
            env.recipient,
            env.identity.display(),
            key.display(),
            drive.url(),
            site.display()
        ),
    )
    .unwrap();
    path
}

/// Turns a `drive_config` into one for a user's own Drive (an OAuth client, no service
/// account, no Shared Drive).
fn to_user_token(env: &Env, drive: &FakeDrive, config: &Path) {
    let client = drive.oauth_client(env.dir.path());
    let text = std::fs::read_to_string(config).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("service_account_key_file") && !l.starts_with("drive_id"))
        .map(str::to_string)
        .collect();
    let at = lines.iter().position(|l| l == "type = \"gdrive\"").unwrap();
    lines.insert(
        at + 1,
        format!("oauth_client_file = \"{}\"", client.display()),
    );
    std::fs::write(config, lines.join("\n") + "\n").unwrap();
}

/// A site of about 3 MiB: several parts, several chunks each.
fn site(env: &Env) -> PathBuf {
    let site = env.path("site");
    rich_site(&site);
    std::fs::write(site.join("big.bin"), noise(7, 3 << 20)).unwrap();
    site
}

/// Every stored file is a part or a manifest of a listed snapshot, once.
fn assert_clean(drive: &FakeDrive) {
    let files: Vec<_> = drive
        .files()
        .into_iter()
        .filter(|f| f.mime != crate::support::fake_drive::FOLDER)
        .collect();
    let mut names: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.parents[0].clone(), f.name.clone()))
        .collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(
        before,
        names.len(),
        "duplicate files left in Drive: {names:?}"
    );
    for f in &files {
        assert_eq!(
            f.app_properties.get("coffer").map(String::as_str),
            Some("1"),
            "{}",
            f.name
        );
    }
}

#[test]
fn a_backup_to_drive_restores_byte_identical_and_lists_across_pages() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = site(&env);
    let config = drive_config(&env, &drive, &site, "");
    drive.faults(|f| f.wait_for_parallel = Some(2));
    let id = env.backup(&config);
    assert_clean(&drive);
    let parts: Vec<_> = drive
        .files()
        .into_iter()
        .filter(|f| f.name.starts_with("files.tar.gz.age."))
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    // Parts go up two at a time by default (store.parallel_uploads).
    assert_eq!(drive.max_parallel_uploads(), 2);
    // The fake answers at most 2 files a page: listing walks every page.
    let out = env.ok(&config, &["list", "--json"]);
    assert!(out.contains(&id), "{out}");
    env.ok(&config, &["verify", "latest"]);
    env.ok(&config, &["verify", "latest", "--deep"]);
    let out = env.ok(&config, &["check"]);
    assert!(
        out.contains("write, read back, list and delete work") && out.contains("free of"),
        "{out}"
    );
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_same_tree(&site, &to);
    assert!(
        drive.log().iter().any(|l| l.contains("pageToken=page-")),
        "paging was used"
    );
    // Every listing names the Shared Drive as Drive requires.
    for l in drive
        .log()
        .iter()
        .filter(|l| l.starts_with("GET /drive/v3/files?"))
    {
        for p in [
            "supportsAllDrives=true",
            "includeItemsFromAllDrives=true",
            "corpora=drive",
            "driveId=0AFakeSharedDrive",
        ] {
            assert!(l.contains(p), "{p} missing in {l}");
        }
    }
}

#[test]
fn names_that_differ_only_in_case_stay_two_objects() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let lower = env.path("lower");
    let upper = env.path("upper");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(lower.join("a"), noise(1, 300_000)).unwrap();
    std::fs::write(upper.join("b"), noise(2, 300_000)).unwrap();
    let config = drive_config(&env, &drive, &lower, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[source]]\nname = \"FILES\"\ntype = \"directory\"\npath = \"{}\"\n",
        upper.display()
    ));
    std::fs::write(&config, text).unwrap();
    env.backup(&config);
    env.ok(&config, &["verify", "latest"]);
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_same_tree(&lower, &to.join("files"));
    assert_same_tree(&upper, &to.join("FILES"));
}

#[test]
fn transient_faults_during_uploads_are_survived_without_duplicates() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = site(&env);
    let config = drive_config(&env, &drive, &site, "");
    drive.faults(|f| {
        f.chunk_500 = vec![2];
        f.chunk_drop = vec![4];
        f.chunk_429 = vec![6];
        f.chunk_403_rate = vec![7];
        f.chunk_answer_lost = vec![11, 13];
        f.chunk_503 = vec![15];
        // (A lost session and a wrong checksum fail the part once its start has left memory:
        // `a_session_lost_past_the_window_fails_the_part_clearly`, `md5_only_answers_…`.)
        f.duplicate = 1;
        f.revoke_tokens_after = Some(12);
    });
    let out = env.ok(&config, &["backup", "--json"]);
    assert_eq!(drive.unfired(), Vec::<String>::new(), "every fault fired");
    assert_clean(&drive);
    // Nothing but the snapshot's own objects is left: no orphan of a re-upload or restart.
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut expected: Vec<String> = v["manifest"]["sources"][0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for p in v["manifest"]["sources"][0]["checksums"]["parts"]
        .as_array()
        .unwrap()
    {
        expected.push(p["name"].as_str().unwrap().to_string());
    }
    expected.push("manifest.json".into());
    expected.push("manifest.json.sig".into());
    expected.sort();
    let mut stored: Vec<String> = drive
        .files()
        .into_iter()
        .filter(|f| f.mime != crate::support::fake_drive::FOLDER)
        .map(|f| f.name)
        .collect();
    stored.sort();
    assert_eq!(stored, expected);
    assert!(
        drive.token_requests() >= 2,
        "the revoked token was refreshed"
    );
    env.ok(&config, &["verify", "latest"]);
    // Downloads that break halfway resume where they stopped.
    drive.faults(|f| f.download_drop = 3);
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_eq!(
        drive.unfired(),
        Vec::<String>::new(),
        "every download broke"
    );
    assert_same_tree(&site, &to);
}

#[test]
fn domain_wide_delegation_acts_as_the_subject_in_its_my_drive() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = env.path("site");
    rich_site(&site);
    let config = drive_config(&env, &drive, &site, "subject = \"backup@example.com\"");
    // Without drive_id: the root folder goes into the user's My Drive.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("drive_id = \"{SHARED_DRIVE}\"\n"), "");
    std::fs::write(&config, text).unwrap();
    env.backup(&config);
    assert_eq!(
        drive.subjects().first().map(String::as_str),
        Some("backup@example.com")
    );
    let root = drive
        .files()
        .into_iter()
        .find(|f| f.name == "coffer-test")
        .unwrap();
    assert_eq!(root.parents, ["root"]);
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_same_tree(&site, &to);
}

#[test]
fn requests_are_paced() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = env.path("site");
    rich_site(&site);
    let config = drive_config(&env, &drive, &site, "requests_per_second = 20");
    let started = std::time::Instant::now();
    env.backup(&config);
    let elapsed = started.elapsed();
    let requests = drive.log().iter().filter(|l| !l.contains("/token")).count();
    assert!(requests > 10, "{requests}");
    // 20 a second, evenly: n requests take at least (n - 1) / 20 s.
    let least = std::time::Duration::from_millis((requests as u64 - 1) * 50);
    assert!(
        elapsed >= least,
        "{requests} requests in {elapsed:?}, faster than 20 a second"
    );
}

#[test]
fn quota_and_the_daily_cap_stop_the_backup_at_once_with_what_to_do() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = site(&env);
    let config = drive_config(&env, &drive, &site, "");
    drive.faults(|f| f.quota_exceeded = true);
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("storageQuotaExceeded") && out.contains("Shared Drive"),
        "{out}"
    );
    assert!(out.contains("no snapshot was written"), "{out}");
    drive.faults(|f| {
        f.quota_exceeded = false;
        f.daily_cap = true;
    });
    let out = env.fails(&config, &["backup"]);
    assert!(out.contains("daily upload cap"), "{out}");
    assert_eq!(env.ok(&config, &["list", "--json"]).trim(), "[]");
}

#[test]
fn a_part_damaged_in_drive_is_named_by_verify() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = site(&env);
    let config = drive_config(&env, &drive, &site, "");
    env.backup(&config);
    // Quick verify asks Drive for its sha256 of each part and downloads nothing.
    let out = env.ok(&config, &["verify", "latest"]);
    assert!(out.contains("as the store reports them"), "{out}");
    assert!(
        !drive
            .log()
            .iter()
            .any(|l| l.starts_with("DOWNLOAD files.tar.gz.age")),
        "quick verify downloaded a part"
    );
    // (A deep verify does download them: the check above can fail.)
    env.ok(&config, &["verify", "latest", "--deep"]);
    assert!(
        drive
            .log()
            .iter()
            .any(|l| l.starts_with("DOWNLOAD files.tar.gz.age"))
    );
    drive.corrupt("files.tar.gz.age.00002");
    for args in [
        &["verify", "latest"][..],
        &["verify", "latest", "--deep"][..],
    ] {
        let out = env.fails(&config, args);
        assert!(out.contains("files.tar.gz.age.00002"), "{args:?}: {out}");
    }
}

/// Against the real Google Drive, only when credentials are given:
/// `COFFER_LIVE_DRIVE_KEY` (a service-account key file) and `COFFER_LIVE_DRIVE_ID` (a Shared
/// Drive the account is a Content manager of). It backs up into a new folder, verifies,
/// restores, and deletes what it stored.
#[test]
fn live_drive_round_trip_when_credentials_are_given() {
    let (Some(key), Some(drive_id)) = (
        std::env::var_os("COFFER_LIVE_DRIVE_KEY"),
        std::env::var_os("COFFER_LIVE_DRIVE_ID"),
    ) else {
        // Not a prerequisite CI lacks: a live Drive needs credentials no CI run has.
        println!(
            "skipped: the live Drive test (COFFER_LIVE_DRIVE_KEY and COFFER_LIVE_DRIVE_ID are \
             not set)"
        );
        return;
    };
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let folder = format!("coffer-live-test-{:08x}", rand::random::<u32>());
    let config = env.path("live.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\
             [store]\ntype = \"gdrive\"\nservice_account_key_file = \"{}\"\ndrive_id = \"{}\"\n\
             folder = \"{folder}\"\npart_size = \"1MiB\"\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n",
            env.recipient,
            env.identity.display(),
            Path::new(&key).display(),
            drive_id.to_string_lossy(),
            site.display()
        ),
    )
    .unwrap();
    let id = env.backup(&config);
    env.ok(&config, &["check"]);
    env.ok(&config, &["verify", "latest", "--deep"]);
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_same_tree(&site, &to);
    // Clean up what the test stored (the empty folders stay; they are named for the test).
    let store = coffer::store::open(&coffer::config::Config::load(&config).unwrap().store).unwrap();
    for o in store.list(&format!("snapshots/{id}/")).unwrap() {
        store.delete(&o.key).unwrap();
    }
}

/// What a browser does after the user allows access: follows the consent page's redirect back
/// to coffer's local listener, with the code.
fn consent(url: &str) {
    let redirect = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("redirect_uri="))
        .expect("the consent address names where to come back");
    let redirect = redirect
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%3a", ":")
        .replace("%2f", "/");
    let rest = redirect.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let mut conn = std::net::TcpStream::connect(hostport).unwrap();
    use std::io::{Read, Write};
    write!(
        conn,
        "GET /{path}?code={}&scope=drive HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n",
        crate::support::fake_drive::CONSENT_CODE.replace('/', "%2F")
    )
    .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
}

#[test]
fn a_user_token_is_obtained_once_kept_private_and_refreshed() {
    use std::io::BufRead;
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = site(&env);
    let config = drive_config(&env, &drive, &site, "");
    to_user_token(&env, &drive, &config);
    // Before signing in: a clear refusal, not a hang waiting for a browser.
    let out = env.fails(&config, &["backup"]);
    assert!(out.contains("run coffer auth gdrive"), "{out}");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--config", config.to_str().unwrap(), "auth", "gdrive"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut shown = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no address shown: {shown}"
        );
        shown.push_str(&line);
        if line.starts_with("http") {
            break line.trim().to_string();
        }
    };
    assert!(url.starts_with(&format!("{}/auth?", drive.url())), "{url}");
    consent(&url);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}{rest}{stdout}");
    assert!(
        !format!("{shown}{rest}{stdout}").contains("fake-refresh"),
        "a token was shown"
    );
    let token_file = env.path("state/gdrive-token.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Now backups work, and a token the server stops accepting is refreshed — and even at
    // the most talkative log level no token reaches the log.
    drive.faults(|f| f.revoke_tokens_after = Some(10));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--config", config.to_str().unwrap(), "backup"])
        .env(
            "COFFER_LOG",
            "trace,yup_oauth2=trace,yup_oauth2::refresh=trace,yup_oauth2::authenticator=trace",
        )
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}",
        all.chars().rev().take(3000).collect::<String>()
    );
    assert!(
        all.contains("refreshing the access token"),
        "the log was on, and the refresh happened: {}",
        all.chars().rev().take(2000).collect::<String>()
    );
    assert!(
        !all.contains("ya29.fake") && !all.contains("fake-refresh"),
        "a token was logged"
    );
    assert_eq!(drive.unfired(), Vec::<String>::new());
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_same_tree(&site, &to);
}

#[test]
fn a_revoked_user_token_fails_the_backup_instead_of_waiting_for_a_browser() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = env.path("site");
    rich_site(&site);
    let config = drive_config(&env, &drive, &site, "");
    to_user_token(&env, &drive, &config);
    // A token file whose access token has expired and whose refresh token is refused.
    std::fs::create_dir_all(env.path("state")).unwrap();
    std::fs::write(
        env.path("state/gdrive-token.json"),
        serde_json::json!([{
            "scopes": ["https://www.googleapis.com/auth/drive"],
            "token": {
                "access_token": "ya29.expired",
                "refresh_token": "1//revoked",
                "expires_at": [2020, 1, 0, 0, 0, 0, 0, 0, 0],
                "id_token": null
            }
        }])
        .to_string(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = env.fails(&config, &["backup"]);
    assert!(out.contains("run coffer auth gdrive again"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

// The store on its own (no CLI), object by object, against the fake's strict protocol.

const CHUNK: usize = 256 * 1024;

/// The Drive store of a `drive_config` with chunks of `chunk_size`, whose requests count as
/// lost after `timeout`.
fn drive_store(
    env: &Env,
    drive: &FakeDrive,
    chunk_size: &str,
    timeout: Duration,
) -> Box<dyn coffer::store::Store> {
    let site = env.path("site");
    std::fs::create_dir_all(&site).unwrap();
    let config = drive_config(env, drive, &site, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "chunk_size = \"256KiB\"",
        &format!("chunk_size = \"{chunk_size}\""),
    );
    std::fs::write(&config, text).unwrap();
    let mut store = coffer::config::Config::load(&config).unwrap().store;
    let coffer::store::StoreKind::Gdrive(d) = &mut store.kind else {
        unreachable!("a gdrive config")
    };
    d.request_timeout = timeout;
    coffer::store::open(&store).unwrap()
}

/// The upload sessions started so far.
fn sessions_started(drive: &FakeDrive) -> usize {
    drive
        .log()
        .iter()
        .filter(|l| l.starts_with("POST /upload/drive/v3/files?uploadType=resumable"))
        .count()
}

/// The `Content-Range` of every PUT to upload session `id`, in order.
fn ranges_of(drive: &FakeDrive, id: &str) -> Vec<String> {
    drive
        .seen()
        .into_iter()
        .filter(|s| s.request.starts_with("PUT ") && s.upload_id() == Some(id))
        .map(|s| s.content_range.unwrap_or_default())
        .collect()
}

/// The upload sessions PUT to, in the order they were first used.
fn session_ids(drive: &FakeDrive) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for s in drive.seen() {
        if let Some(id) = s.upload_id()
            && !ids.iter().any(|i| i == id)
        {
            ids.push(id.to_string());
        }
    }
    ids
}

/// The stored (non-folder) files named `name`.
fn stored(drive: &FakeDrive, name: &str) -> Vec<crate::support::fake_drive::FakeFile> {
    drive
        .files()
        .into_iter()
        .filter(|f| f.name == name && f.mime != crate::support::fake_drive::FOLDER)
        .collect()
}

/// One HTTP/1.1 exchange with the fake, as raw as Drive's wire: (status, headers, body).
fn raw(
    drive: &FakeDrive,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    use std::io::{Read, Write};
    let host = drive.url().trim_start_matches("http://").to_string();
    let target = target.strip_prefix(&drive.url()).unwrap_or(target);
    let mut conn = std::net::TcpStream::connect(&host).unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, answer[split + 4..].to_vec())
}

/// The keys of a JSON object, sorted.
fn keys(body: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// The fake refuses what Drive refuses, so that a client test passing against it means
/// something: misaligned chunks, a changed total, an inverted range, a Shared Drive's file
/// asked for without `supportsAllDrives`, unknown `fields`, `about` without `fields`, a range
/// past the end; and it answers only the fields asked for.
#[test]
fn the_fake_drive_is_as_strict_as_drive() {
    let drive = FakeDrive::start();
    let (status, _, body) = raw(
        &drive,
        "POST",
        "/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c",
    );
    assert_eq!(status, 200);
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let auth = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let call = |method: &str, target: &str, range: Option<&str>, body: &[u8]| {
        let mut h = vec![("authorization", auth.as_str())];
        if let Some(r) = range {
            h.push((
                if method == "GET" {
                    "range"
                } else {
                    "content-range"
                },
                r,
            ));
        }
        raw(&drive, method, target, &h, body)
    };
    let says = |answer: &(u16, _, Vec<u8>), status: u16, text: &str| {
        let body = String::from_utf8_lossy(&answer.2).into_owned();
        assert_eq!(answer.0, status, "{body}");
        assert!(body.contains(text), "{text} not in {body}");
    };

    let meta = serde_json::json!({"name": "x", "parents": [SHARED_DRIVE]}).to_string();
    let start = "/upload/drive/v3/files?uploadType=resumable";
    says(
        &call("POST", start, None, meta.as_bytes()),
        404,
        "File not found",
    );
    says(
        &call(
            "POST",
            &format!("{start}&supportsAllDrives=true&fields=id,sha256Checksm"),
            None,
            meta.as_bytes(),
        ),
        400,
        "Invalid field selection",
    );
    let (status, headers, _) = call(
        "POST",
        &format!("{start}&supportsAllDrives=true"),
        None,
        meta.as_bytes(),
    );
    assert_eq!(status, 200);
    let session = headers["location"].clone();
    let data = noise(3, CHUNK + 100);
    let put = |range: &str, body: &[u8]| call("PUT", &session, Some(range), body);
    // Every chunk but the last is a multiple of 256 KiB: the first, and the one after a 308.
    says(
        &put("bytes 0-99/*", &data[..100]),
        400,
        "multiple of 256 KiB",
    );
    let (status, headers, _) = put(&format!("bytes 0-{}/*", CHUNK - 1), &data[..CHUNK]);
    assert_eq!((status, headers["range"].as_str()), (308, "bytes=0-262143"));
    says(
        &put(
            &format!("bytes {CHUNK}-{}/*", CHUNK + 49),
            &data[CHUNK..CHUNK + 50],
        ),
        400,
        "multiple of 256 KiB",
    );
    says(
        &put(&format!("bytes {}-{CHUNK}/*", CHUNK + 99), b""),
        400,
        "ends before it starts",
    );
    // One total per session: once given (here by a status query) it cannot change.
    assert_eq!(put(&format!("bytes */{}", CHUNK + 100), b"").0, 308);
    says(
        &put(
            &format!("bytes {CHUNK}-{}/{}", CHUNK + 99, CHUNK + 101),
            &data[CHUNK..],
        ),
        400,
        "total",
    );
    // The right last chunk completes it; without `fields`, Drive's four defaults only.
    let (status, _, body) = put(
        &format!("bytes {CHUNK}-{}/{}", CHUNK + 99, CHUNK + 100),
        &data[CHUNK..],
    );
    assert_eq!(status, 200);
    assert_eq!(keys(&body), ["id", "kind", "mimeType", "name"]);
    let file: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = file["id"].as_str().unwrap();

    let get = format!("/drive/v3/files/{id}");
    says(
        &call("GET", &format!("{get}?fields=size"), None, b""),
        404,
        "File not found",
    );
    let (status, _, body) = call("GET", &format!("{get}?supportsAllDrives=true"), None, b"");
    assert_eq!(status, 200);
    assert_eq!(keys(&body), ["id", "kind", "mimeType", "name"]);
    let (_, _, body) = call(
        "GET",
        &format!("{get}?supportsAllDrives=true&fields=size,md5Checksum,sha256Checksum"),
        None,
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    use sha2::Digest;
    assert_eq!(
        v,
        serde_json::json!({"size": (CHUNK + 100).to_string(),
            "md5Checksum": hex::encode(md5::Md5::digest(&data)),
            "sha256Checksum": hex::encode(sha2::Sha256::digest(&data))})
    );
    // Downloads: a range inside the file is 206, one at or past its end 416.
    let media = format!("{get}?alt=media&supportsAllDrives=true");
    let (status, _, body) = call("GET", &media, Some("bytes=100-"), b"");
    assert_eq!((status, &body[..]), (206, &data[100..]));
    let (status, headers, _) = call("GET", &media, Some(&format!("bytes={}-", CHUNK + 100)), b"");
    assert_eq!(
        (status, headers["content-range"].as_str()),
        (416, "bytes */262244")
    );

    // Listing a Shared Drive needs includeItemsFromAllDrives; without the flags its files
    // are not there; without `fields`, files carry the four defaults.
    let shared = format!("corpora=drive&driveId={SHARED_DRIVE}&supportsAllDrives=true");
    says(
        &call("GET", &format!("/drive/v3/files?{shared}"), None, b""),
        400,
        "includeItemsFromAllDrives",
    );
    let (_, _, body) = call("GET", "/drive/v3/files", None, b"");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["files"], serde_json::json!([]));
    let (status, _, body) = call(
        "GET",
        &format!("/drive/v3/files?{shared}&includeItemsFromAllDrives=true"),
        None,
        b"",
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["files"],
        serde_json::json!([{"kind": "drive#file", "id": id, "name": "x",
            "mimeType": "application/octet-stream"}])
    );
    // about.get answers only with `fields`, and only them.
    says(
        &call("GET", "/drive/v3/about", None, b""),
        400,
        "'fields' parameter is required",
    );
    let (_, _, body) = call("GET", "/drive/v3/about?fields=storageQuota", None, b"");
    assert_eq!(keys(&body), ["storageQuota"]);
}

/// After a 308 whose `Range` acknowledges less than was sent — a short aligned part, an odd
/// amount, nothing at all — the next chunk starts at the acknowledged byte and is still a
/// multiple of 256 KiB (the fake refuses anything else), and the object arrives whole.
#[test]
fn short_and_odd_commits_resume_at_the_acknowledged_byte() {
    let env = Env::new();
    let drive = FakeDrive::start();
    // 512 KiB chunks, so that a short commit can still be a multiple of 256 KiB.
    let store = drive_store(&env, &drive, "512KiB", Duration::from_secs(30));
    let len = 4 * CHUNK + 300_000;
    let data = noise(11, len);
    drive.faults(|f| f.chunk_keep = vec![(1, CHUNK), (2, 100_000), (4, 0)]);
    coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &data).unwrap();
    assert_eq!(drive.unfired(), Vec::<String>::new());
    let files = stored(&drive, "part");
    assert_eq!(files.len(), 1);
    assert!(files[0].content == data, "the stored bytes differ");
    let ids = session_ids(&drive);
    assert_eq!(ids.len(), 1, "one session: {ids:?}");
    let (c, o) = (CHUNK, CHUNK + 100_000);
    assert_eq!(
        ranges_of(&drive, &ids[0]),
        [
            format!("bytes 0-{}/*", 2 * c - 1),
            // Kept 256 KiB of 512: the rest again.
            format!("bytes {c}-{}/*", 2 * c - 1),
            // Kept an odd 100,000 bytes: from there, 512 KiB (a multiple of 256 KiB).
            format!("bytes {o}-{}/*", o + 2 * c - 1),
            format!("bytes {}-{}/{len}", o + 2 * c, len - 1),
            // Kept nothing of the last chunk: where does it stand, then the same again.
            format!("bytes */{len}"),
            format!("bytes {}-{}/{len}", o + 2 * c, len - 1),
        ]
    );
    assert_eq!(
        coffer::store::get_bytes(store.as_ref(), "snapshots/s1/part").unwrap(),
        data
    );
}

/// A session that expired (410 Gone) is not resumed: a new session sends the part again from
/// byte 0 (the fake refuses a new session's chunk that starts elsewhere), and one file results
/// — while the part's start is still in memory (a part within the upload window).
#[test]
fn an_expired_upload_session_starts_the_part_again_from_byte_0() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let store = drive_store(&env, &drive, "256KiB", Duration::from_secs(30));
    let data = noise(12, 2 * CHUNK - 5);
    drive.faults(|f| f.chunk_410 = vec![2]);
    coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &data).unwrap();
    assert_eq!(drive.unfired(), Vec::<String>::new());
    assert_eq!(sessions_started(&drive), 2);
    let ids = session_ids(&drive);
    assert_eq!(
        ranges_of(&drive, &ids[0]),
        [
            format!("bytes 0-{}/*", CHUNK - 1),
            format!("bytes {CHUNK}-{}/{}", 2 * CHUNK - 6, 2 * CHUNK - 5)
        ]
    );
    assert_eq!(
        ranges_of(&drive, &ids[1]).first().map(String::as_str),
        Some("bytes 0-262143/*"),
        "the new session starts at byte 0"
    );
    let files = stored(&drive, "part");
    assert_eq!(files.len(), 1);
    assert!(files[0].content == data, "the stored bytes differ");
}

/// Memory holds a window of chunks, not the part: a session lost after the part's start has
/// left memory cannot be sent again, so the part fails with what happened and what follows,
/// and no file of it is left.
#[test]
fn a_session_lost_past_the_window_fails_the_part_clearly() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let store = drive_store(&env, &drive, "256KiB", Duration::from_secs(30));
    let data = noise(13, 6 * CHUNK + 5);
    drive.faults(|f| f.chunk_410 = vec![5]);
    let err = coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &data)
        .unwrap_err()
        .to_string();
    assert!(err.contains("snapshots/s1/part"), "{err}");
    assert!(err.contains("no longer in memory"), "{err}");
    assert!(err.contains("the next one uploads it afresh"), "{err}");
    assert_eq!(
        sessions_started(&drive),
        1,
        "no second session from the middle"
    );
    assert!(stored(&drive, "part").is_empty(), "a file was left");
}

/// A server that accepts a request and then goes silent — halfway through a chunk's body,
/// before answering a listing, halfway through a download — costs one request timeout each,
/// not a hang: the client gives up on it, asks again and finishes.
#[test]
fn stalled_requests_time_out_and_are_asked_again() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let timeout = Duration::from_millis(1000);
    let store = drive_store(&env, &drive, "256KiB", timeout);
    let data = noise(13, 3 * CHUNK + 7);
    let started = std::time::Instant::now();
    drive.faults(|f| f.chunk_stall = vec![2]);
    coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &data).unwrap();
    drive.faults(|f| {
        f.list_stall = 1;
        f.download_stall = 1;
    });
    let back = coffer::store::get_bytes(store.as_ref(), "snapshots/s1/part").unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        drive.unfired(),
        Vec::<String>::new(),
        "every stall happened"
    );
    assert!(back == data, "the bytes read back differ");
    assert_eq!(stored(&drive, "part").len(), 1);
    // The stalled chunk was given up after the timeout, then the session asked where it
    // stands (nothing was committed) and the chunk sent again.
    let id = &session_ids(&drive)[0];
    let puts: Vec<_> = drive
        .seen()
        .into_iter()
        .filter(|s| s.upload_id() == Some(id))
        .collect();
    let stalled = puts
        .iter()
        .position(|s| {
            s.content_range.as_deref() == Some(&format!("bytes {CHUNK}-{}/*", 2 * CHUNK - 1))
        })
        .unwrap();
    let next = &puts[stalled + 1];
    assert_eq!(next.content_range.as_deref(), Some("bytes */*"));
    let waited = next.at - puts[stalled].at;
    assert!(waited >= timeout, "gave up after {waited:?}");
    // The download resumed after the stall where its bytes stopped (the fake sent half).
    let resume = format!("bytes={}-", data.len() / 2);
    assert!(
        drive
            .seen()
            .iter()
            .any(|s| s.range.as_deref() == Some(resume.as_str())),
        "the stalled download did not resume with {resume}"
    );
    // Three stalls of 1 s each, not a wait for the server (it would hold them a minute).
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

/// A file that is shorter in Drive than it was listed (changed behind coffer's back): the
/// read resumes past the end, Drive answers 416, and the read fails at once naming the object
/// — not a silent short read, not a loop.
#[test]
fn a_download_past_the_end_fails_clearly_with_416() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let store = drive_store(&env, &drive, "256KiB", Duration::from_secs(30));
    let data = noise(14, 2 * CHUNK);
    coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &data).unwrap();
    let mut reader = store.get("snapshots/s1/part").unwrap();
    drive.truncate("part", CHUNK);
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let err = std::io::Read::read_to_end(&mut reader, &mut out).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("416") && msg.contains("snapshots/s1/part"),
        "{msg}"
    );
    assert_eq!(out.len(), CHUNK, "what there was came through");
    assert!(
        drive
            .seen()
            .iter()
            .any(|s| s.range.as_deref() == Some("bytes=262144-")),
        "resumed where the short body ended"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Drive answers 429 with `Retry-After: 1`: the next request on that session comes at least
/// a second later (the backoff alone would often be shorter).
#[test]
fn a_429_waits_as_long_as_retry_after_says() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let store = drive_store(&env, &drive, "256KiB", Duration::from_secs(30));
    drive.faults(|f| f.chunk_429 = vec![1]);
    let data = noise(15, CHUNK + 9);
    coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &data).unwrap();
    assert_eq!(drive.unfired(), Vec::<String>::new());
    let id = &session_ids(&drive)[0];
    let on_session: Vec<_> = drive
        .seen()
        .into_iter()
        .filter(|s| s.upload_id() == Some(id))
        .collect();
    assert!(on_session.len() >= 2, "{on_session:?}");
    let waited = on_session[1].at - on_session[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "asked again after {waited:?}, before Retry-After's 1 s"
    );
    assert!(stored(&drive, "part")[0].content == data);
}

/// A file of the same name that coffer did not write (no `coffer` tag), listed first: reading,
/// listing and deleting the object take coffer's file, never the other one, which is left
/// alone.
#[test]
fn a_file_coffer_did_not_tag_is_never_taken_for_its_object() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let store = drive_store(&env, &drive, "256KiB", Duration::from_secs(30));
    let ours = noise(16, 1000);
    coffer::store::put_bytes(store.as_ref(), "snapshots/s1/part", &ours).unwrap();
    let folder = stored(&drive, "part")[0].parents[0].clone();
    drive.add_foreign_file(&folder, "part", b"someone else's notes");
    assert_eq!(
        coffer::store::get_bytes(store.as_ref(), "snapshots/s1/part").unwrap(),
        ours
    );
    let listed = store.list("snapshots/s1/").unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&ours));
    assert_eq!(
        (listed[0].size, listed[0].sha256.as_ref()),
        (1000, Some(&sha))
    );
    store.delete("snapshots/s1/part").unwrap();
    let left = stored(&drive, "part");
    assert_eq!(left.len(), 1);
    assert!(
        left[0].app_properties.is_empty(),
        "the foreign file is kept"
    );
    assert!(matches!(
        store.get("snapshots/s1/part"),
        Err(coffer::store::StoreError::NotFound { .. })
    ));
    assert!(store.list("snapshots/s1/").unwrap().is_empty());
}

/// Files whose resource has `md5Checksum` but no `sha256Checksum` (older files, some Shared
/// Drives): uploads are confirmed by md5 (a wrong md5 sends the part again) and duplicates are
/// found by it; quick verify cannot judge by Drive's checksums, so it reads the parts — and
/// still finds a damaged one.
#[test]
fn md5_only_answers_are_checked_by_md5_and_verify_reads_the_parts() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = env.path("site");
    rich_site(&site);
    let config = drive_config(&env, &drive, &site, "parallel_uploads = 1");
    drive.faults(|f| {
        f.md5_only = true;
        f.wrong_checksum = 1;
        f.duplicate = 1;
    });
    // A part Drive reports with another checksum is not sent again from memory (the part is
    // no longer there): the backup fails naming it, writes no snapshot, and the next one
    // succeeds.
    let out = env.fails(&config, &["backup"]);
    assert!(out.contains("md5"), "{out}");
    assert!(out.contains("the next one uploads"), "{out}");
    assert!(
        env.ok(&config, &["list", "--json"]).contains("[]"),
        "a snapshot was written"
    );
    env.backup(&config);
    assert_eq!(drive.unfired(), Vec::<String>::new());
    assert_clean(&drive);
    let out = env.ok(&config, &["verify", "latest"]);
    assert!(!out.contains("as the store reports them"), "{out}");
    assert!(
        drive
            .log()
            .iter()
            .any(|l| l.starts_with("DOWNLOAD files.tar.gz.age")),
        "quick verify read the parts"
    );
    drive.corrupt("files.tar.gz.age.00001");
    let out = env.fails(&config, &["verify", "latest"]);
    assert!(out.contains("files.tar.gz.age.00001"), "{out}");
}

#[test]
fn a_differential_in_drive_restores_over_its_full_and_verify_checks_both() {
    let env = Env::new();
    let drive = FakeDrive::start();
    let site = site(&env);
    let config = drive_config(&env, &drive, &site, "");
    let full = env.backup(&config);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(site.join("new.txt"), "day 2").unwrap();
    std::fs::remove_file(site.join("big.bin")).unwrap();
    let out: serde_json::Value =
        serde_json::from_str(&env.ok(&config, &["backup", "--json"])).unwrap();
    assert_eq!(out["folders"][0]["kind"], "differential", "{out:#}");
    assert_eq!(out["folders"][0]["base"], full.as_str());
    // The 3 MiB attachment is not uploaded again (it was deleted; the rest is unchanged).
    assert!(out["stored_bytes"].as_u64().unwrap() < 100_000, "{out:#}");
    assert_clean(&drive);
    let verify = env.ok(&config, &["verify", "latest"]);
    assert!(verify.contains("(the full of"), "{verify}");
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_same_tree(&site, &to);
}

/// Not a test: the harness of scripts/bench-drive.sh, which runs it with `--ignored`. Backs
/// `BENCH_SITE` up to the fake Drive with the store's defaults (part_size 64MiB, chunk_size
/// 8MiB, parallel_uploads 2) in a full backup and restores it, `BENCH_REPS` times, each run of `COFFER_BIN`
/// under GNU time; writes "name seconds max_rss_kib" lines to `BENCH_OUT`.
#[test]
#[ignore = "a benchmark harness, run by scripts/bench-drive.sh"]
fn bench_drive_backup_and_restore() {
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench-drive.sh"))
    };
    let (site, out, bin) = (var("BENCH_SITE"), var("BENCH_OUT"), var("COFFER_BIN"));
    let reps: usize = var("BENCH_REPS").parse().unwrap();
    let env = Env::new();
    let drive = FakeDrive::start();
    let config = drive_config(&env, &drive, Path::new(&site), "");
    // The store's defaults, not the tests' small parts and chunks.
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("part_size") && !l.starts_with("chunk_size"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, text).unwrap();
    let mut lines = String::new();
    let mut timed = |name: String, args: &[&str]| {
        let gtime = env.path(&format!("{name}.gtime"));
        let status = std::process::Command::new("/usr/bin/time")
            .arg("-v")
            .arg("-o")
            .arg(&gtime)
            .arg(&bin)
            .arg("--config")
            .arg(&config)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{name} failed");
        let report = std::fs::read_to_string(&gtime).unwrap();
        let field = |label: &str| {
            report
                .lines()
                .find_map(|l| l.trim().strip_prefix(label))
                .unwrap()
                .trim()
                .to_string()
        };
        let wall: f64 = field("Elapsed (wall clock) time (h:mm:ss or m:ss):")
            .split(':')
            .fold(0.0, |acc, x| acc * 60.0 + x.parse::<f64>().unwrap());
        let rss = field("Maximum resident set size (kbytes):");
        lines.push_str(&format!("{name} {wall:.2} {rss}\n"));
    };
    for rep in 1..=reps {
        // Each a full (a second backup would be a differential of nothing).
        timed(format!("drive-backup-{rep}"), &["backup", "--full"]);
        let to = env.path(&format!("restored-{rep}"));
        timed(
            format!("drive-restore-{rep}"),
            &["restore", "latest", "--to", to.to_str().unwrap()],
        );
        if rep == 1 {
            assert_same_tree(Path::new(&site), &to);
        }
        std::fs::remove_dir_all(&to).unwrap();
    }
    std::fs::write(out, lines).unwrap();
}
