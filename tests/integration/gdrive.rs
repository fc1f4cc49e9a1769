//! The Google Drive store against the fake Drive v3 server (tests/integration/support/
//! fake_drive.rs): round trips, every injected fault, and no duplicate or orphan file left.

use std::path::{Path, PathBuf};

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
        f.chunk_404 = vec![9];
        f.chunk_answer_lost = vec![11, 13];
        f.chunk_503 = vec![15];
        f.wrong_checksum = 1;
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
    let store =
        coffer::store::from_config(&coffer::config::Config::load(&config).unwrap().store).unwrap();
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
