//! Alerts end to end, against local SMTP and HTTP servers as strict as the real services: a
//! failed backup reaches email, Sentry and the heartbeat once, with the tool's error and no
//! secret; a repeat is held back until `repeat_after`, then reminded; the recovery is
//! announced; a stale store alerts from the daemon even with SMTP down; a failed prune and a
//! failed scheduled verify alert too. Email never crosses the wire in clear text where TLS
//! was asked for; a wrong password, a wrong Sentry key and a Sentry or heartbeat answering
//! 5xx or 429 are logged, and the job's own outcome stays what it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::Env;
use crate::support::sinks::{HttpSink, Request, SmtpSink};

const SMTP_PASSWORD: &str = "smtp-s3cret-hunter2";
const SENTRY_KEY: &str = "0123456789abcdef0123456789abcdef";
const PING_TOKEN: &str = "5a1d-ping-token-77";
const TOOL_ERROR: &str = "Error: database disk image is malformed";

/// A dump tool that fails the way sqlite3 does on a damaged file.
fn failing_tool(env: &Env) -> PathBuf {
    let path = env.path("broken-sqlite3");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = \"--version\" ]; then echo '3.40.1 2022-12-28 broken'; exit 0; fi\n\
             cat > /dev/null\n\
             echo '{TOOL_ERROR}' >&2\n\
             exit 1\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A config with the three channels: SMTP on `smtp_port`, Sentry and the heartbeat on the
/// HTTP sink; the SQLite source dumped by `tool` (the built-in dump when `None`).
fn config(env: &Env, smtp_port: u16, http: &HttpSink, tool: Option<&Path>, extra: &str) -> PathBuf {
    let secret = |name: &str, value: &str| {
        let p = env.path(name);
        fs::write(&p, value).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let password = secret("smtp-password", SMTP_PASSWORD);
    let dsn = secret(
        "sentry-dsn",
        &format!("http://{SENTRY_KEY}@127.0.0.1:{}/42", http.port),
    );
    let ping = secret(
        "ping-url",
        &format!("http://127.0.0.1:{}/ping/{PING_TOKEN}", http.port),
    );
    let db = env.path("app.sqlite");
    if !db.exists() {
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite"),
            &db,
        )
        .unwrap();
    }
    let tool = tool
        .map(|t| format!("dump_tool = \"{}\"\n", t.display()))
        .unwrap_or_default();
    let path = env.path("coffer.toml");
    fs::write(
        &path,
        format!(
            "state_dir = \"state\"\n\
             [encryption]\nrecipients = [\"{}\"]\n\
             [store]\ntype = \"local\"\npath = \"store\"\n\
             [retention]\nkeep_last = 10\n\
             {extra}\n\
             [alerts]\nrepeat_after = \"6h\"\n\
             [alerts.email]\nto = [\"ops@example.com\"]\nfrom = \"coffer@example.com\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\ntls = \"none\"\n\
             username = \"coffer\"\npassword_file = \"{}\"\n\
             [alerts.sentry]\ndsn_file = \"{}\"\n\
             [alerts.heartbeat]\nurl_file = \"{}\"\n\
             [[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\n{tool}",
            env.recipient,
            password.display(),
            dsn.display(),
            ping.display(),
            db.display()
        ),
    )
    .unwrap();
    path
}

/// Sentry envelopes that carry an event (not a check-in).
fn sentry_events(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.path.starts_with("/api/42/envelope"))
        .filter(|r| r.body.contains("\"type\":\"event\""))
        .map(|r| r.body.clone())
        .collect()
}

/// Sentry envelopes that carry a cron check-in.
fn check_ins(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.path.starts_with("/api/42/envelope"))
        .filter(|r| r.body.contains("\"type\":\"check_in\""))
        .map(|r| r.body.clone())
        .collect()
}

/// The heartbeat's pings to `<url><suffix>`; each is a POST (healthchecks.io takes HEAD, GET
/// and POST; coffer's docs promise a POST, with the error as its body).
fn pings<'a>(requests: &'a [Request], suffix: &str) -> Vec<&'a Request> {
    let path = format!("/ping/{PING_TOKEN}{suffix}");
    let pings: Vec<&Request> = requests.iter().filter(|r| r.path == path).collect();
    for p in &pings {
        assert_eq!(p.method, "POST", "{p:#?}");
    }
    pings
}

fn assert_no_secret(text: &str) {
    for secret in [SMTP_PASSWORD, SENTRY_KEY, PING_TOKEN] {
        assert!(!text.contains(secret), "a secret leaked into: {text}");
    }
}

#[test]
fn a_failed_backup_alerts_every_channel_once_and_its_recovery_is_announced() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    let http = HttpSink::sentry(SENTRY_KEY);
    let tool = failing_tool(&env);
    let broken = config(&env, smtp.port, &http, Some(&tool), "");

    let out = env.fails(&broken, &["backup"]);
    assert!(out.contains(TOOL_ERROR), "{out}");
    assert_no_secret(&out);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(
        mail.auth,
        Some(("coffer".to_string(), SMTP_PASSWORD.to_string()))
    );
    assert!(mail.to.iter().any(|t| t.contains("ops@example.com")));
    assert!(
        mail.data.contains("Subject: [coffer] FAILED backup on "),
        "{}",
        mail.data
    );
    for expected in [
        TOOL_ERROR,
        "Source:    app",
        "Stage:     reading the source",
        "Last good snapshot: none",
        "coffer --config",
        " backup",
    ] {
        assert!(
            mail.data.contains(expected),
            "{expected:?} not in:\n{}",
            mail.data
        );
    }
    let requests = http.requests();
    let events = sentry_events(&requests);
    assert_eq!(events.len(), 1, "{requests:#?}");
    assert!(events[0].contains(TOOL_ERROR), "{}", events[0]);
    assert!(events[0].contains("\"job\":\"backup\""), "{}", events[0]);
    assert!(events[0].contains("\"source\":\"app\""), "{}", events[0]);
    let fails = pings(&requests, "/fail");
    assert_eq!(fails.len(), 1, "{requests:#?}");
    assert!(fails[0].body.contains(TOOL_ERROR));
    assert!(
        pings(&requests, "").is_empty(),
        "no success ping after a failure"
    );

    // Failing again within repeat_after: no second email or event; the switch hears it.
    env.fails(&broken, &["backup"]);
    assert_eq!(smtp.mails().len(), 1);
    let requests = http.requests();
    assert_eq!(sentry_events(&requests).len(), 1);
    assert_eq!(pings(&requests, "/fail").len(), 2);

    // Fixed: the next backup succeeds and says so.
    let fixed = config(&env, smtp.port, &http, None, "");
    let id = env.backup(&fixed);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        mails[1]
            .data
            .contains("Subject: [coffer] RECOVERED backup on "),
        "{}",
        mails[1].data
    );
    assert!(mails[1].data.contains(&id), "{}", mails[1].data);
    let requests = http.requests();
    assert_eq!(sentry_events(&requests).len(), 2);
    assert_eq!(pings(&requests, "").len(), 1, "{requests:#?}");

    // A plain success afterwards: the heartbeat and Sentry's monitor hear of it, nobody is
    // mailed.
    env.backup(&fixed);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    // Each message its own Message-ID (the sink checked each one's form).
    let ids: Vec<&str> = mails
        .iter()
        .map(|m| {
            m.data
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .unwrap()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    let requests = http.requests();
    assert_eq!(sentry_events(&requests).len(), 2);
    assert_eq!(pings(&requests, "").len(), 2);
    // Sentry's monitor: an in-progress check-in when each run starts, its end (same id, with
    // the duration) when it ends.
    let monitor = check_ins(&requests);
    let with = |status: &str| {
        monitor
            .iter()
            .filter(|m| m.contains(&format!("\"status\":\"{status}\"")))
            .count()
    };
    assert_eq!(
        (with("in_progress"), with("error"), with("ok")),
        (4, 2, 2),
        "{monitor:#?}"
    );
    assert!(monitor.iter().all(|m| m.contains("coffer-backup")));
    let id_of = |m: &str| {
        let at = m.find("\"check_in_id\":\"").unwrap() + 15;
        m[at..at + 32].to_string()
    };
    let last = monitor.last().unwrap();
    assert!(last.contains("\"duration\":"), "{last}");
    assert!(
        monitor
            .iter()
            .filter(|m| m.contains("in_progress"))
            .any(|m| id_of(m) == id_of(last)),
        "the end carries its start's id: {monitor:#?}"
    );

    // Broken again after that success: a new failure, alerted at once.
    let broken = config(&env, smtp.port, &http, Some(&tool), "");
    env.fails(&broken, &["backup"]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    assert!(
        mails[2]
            .data
            .contains("Subject: [coffer] FAILED backup on ")
    );
    assert!(
        mails[2].data.contains("Last good snapshot: 2"),
        "the last good snapshot is named: {}",
        mails[2].data
    );

    for m in smtp.mails() {
        assert_no_secret(&m.data);
    }
    for r in http.requests() {
        assert_no_secret(&r.body);
        // The ping token belongs in the heartbeat's own path, nowhere else.
        if !r.path.starts_with("/ping/") {
            assert_no_secret(&r.path);
        }
        for (name, value) in &r.headers {
            if name != "x-sentry-auth" {
                assert_no_secret(value);
            }
        }
    }
}

#[test]
fn alert_test_reports_each_channel_and_a_dead_relay_does_not_stop_the_others() {
    let env = Env::new();
    let http = HttpSink::sentry(SENTRY_KEY);
    // Nothing listens on this port (held, so no sink is given it meanwhile).
    let held = crate::support::DeadPort::new();
    let dead = held.1;
    let cfg = config(&env, dead, &http, None, "");
    let out = env.run(&cfg, &["alert", "test", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == name)
            .unwrap_or_else(|| panic!("{name} in {v:#}"))
            .clone()
    };
    assert_eq!(by("email")["ok"], false, "{v:#}");
    assert!(
        by("email")["error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{dead}"))
    );
    assert_eq!(by("sentry")["ok"], true, "{v:#}");
    assert_eq!(by("heartbeat")["ok"], true, "{v:#}");
    let requests = http.requests();
    assert_eq!(sentry_events(&requests).len(), 1);
    // A test goes to <url>/log: it must not make a failing check look healthy.
    assert_eq!(pings(&requests, "/log").len(), 1, "{requests:#?}");
    assert!(pings(&requests, "").is_empty());
    assert_no_secret(&String::from_utf8_lossy(&out.stdout));
    assert_no_secret(&String::from_utf8_lossy(&out.stderr));

    // `coffer check` names the dead relay without sending anything anywhere.
    let out = env.run(&cfg, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("{name} in {checks:#}"))
            .clone()
    };
    assert_eq!(check("alerts.email")["ok"], false, "{checks:#}");
    assert_eq!(check("alerts.sentry")["ok"], true, "{checks:#}");
    assert_eq!(check("alerts.heartbeat")["ok"], true, "{checks:#}");
    assert_eq!(
        http.requests().len(),
        requests.len(),
        "check sent something"
    );
}

#[test]
fn a_stale_store_alerts_from_the_daemon_with_smtp_down_and_the_daemon_keeps_running() {
    let env = Env::new();
    let http = HttpSink::sentry(SENTRY_KEY);
    let held = crate::support::DeadPort::new();
    let dead = held.1;
    // The only snapshot is 30 hours old; max_age is the default 26 h.
    let store = coffer::store::LocalStore::new(env.store());
    let created = chrono::Utc::now() - chrono::Duration::hours(30);
    let id = coffer::snapshot::SnapshotId::new(created);
    crate::support::store_snapshot(&env, &store, &id, created, b"an old snapshot");
    // Newer snapshots planted in the store must not keep the alert quiet: one dated 2099,
    // unsigned, and a fresh one signed by a key nobody trusts.
    let forged = coffer::snapshot::SnapshotId::new(chrono::Utc::now());
    let dir = env.store().join("snapshots").join(forged.as_str());
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("manifest.json"),
        format!(
            "{{\"format\":\"coffer-snapshot\",\"format_version\":1,\"id\":\"{forged}\",\
             \"created\":\"2099-01-01T00:00:00Z\",\"finished\":\"2099-01-01T00:00:00Z\",\
             \"host\":\"x\",\"coffer_version\":\"0\",\"recipients\":[],\"sources\":[]}}"
        ),
    )
    .unwrap();
    let recent = chrono::Utc::now() - chrono::Duration::hours(1);
    let planted = crate::support::store_snapshot(
        &env,
        &store,
        &coffer::snapshot::SnapshotId::new(recent),
        recent,
        b"planted",
    );
    let m = env
        .store()
        .join("snapshots")
        .join(&planted)
        .join("manifest.json");
    fs::write(
        m.with_extension("json.sig"),
        coffer::signing::SigningKey::generate("attacker")
            .sign(&fs::read(&m).unwrap())
            .unwrap(),
    )
    .unwrap();
    let cfg = config(
        &env,
        dead,
        &http,
        None,
        "[jobs.backup]\nschedule = \"0 0 3 1 1 *\"\ncatch_up = false\n",
    );
    let log = env.path("daemon.log");
    let mut daemon = crate::support::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("--config")
            .arg(&cfg)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .spawn()
            .unwrap(),
    );
    let requests = http.wait_for("the STALE event", |r| !sentry_events(r).is_empty());
    let event = &sentry_events(&requests)[0];
    assert!(event.contains("STALE"), "{event}");
    assert!(event.contains(id.as_str()), "{event}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    let asked = std::time::Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&daemon),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
    assert!(asked.elapsed() < Duration::from_secs(30));
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("could not send the alert") && log_text.contains("channel=\"email\""),
        "{log_text}"
    );
    assert_no_secret(&log_text);
    assert_no_secret(event);
}

/// A config with only the email channel, over STARTTLS to `port`.
fn starttls_config(env: &Env, port: u16, ca_file: Option<&Path>) -> PathBuf {
    tls_config(env, port, "starttls", ca_file)
}

/// A config with only the email channel, with `tls` to `port`.
fn tls_config(env: &Env, port: u16, tls: &str, ca_file: Option<&Path>) -> PathBuf {
    let password = env.path("smtp-password");
    fs::write(&password, SMTP_PASSWORD).unwrap();
    fs::set_permissions(&password, fs::Permissions::from_mode(0o600)).unwrap();
    let ca = ca_file
        .map(|c| format!("ca_file = \"{}\"\n", c.display()))
        .unwrap_or_default();
    let path = env.path("tls.toml");
    fs::write(
        &path,
        format!(
            "state_dir = \"state\"\n\
             [encryption]\nrecipients = [\"{}\"]\n\
             [store]\ntype = \"local\"\npath = \"store\"\n\
             [alerts.email]\nto = [\"ops@example.com\"]\nfrom = \"coffer@example.com\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"{tls}\"\n\
             username = \"coffer\"\npassword_file = \"{}\"\n{ca}\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n",
            env.recipient,
            password.display(),
            env.dir.path().display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn email_goes_over_starttls_and_an_untrusted_relay_certificate_is_refused() {
    let env = Env::new();
    let smtp = SmtpSink::start_tls().login("coffer", SMTP_PASSWORD);
    let ca = crate::support::sinks::smtp_tls_dir().join("ca.pem");

    let trusted = starttls_config(&env, smtp.port, Some(&ca));
    let out = env.ok(&trusted, &["alert", "test"]);
    assert!(out.contains("email      sent"), "{out}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].encrypted, "the message came in clear text");
    assert_eq!(
        mails[0].auth,
        Some(("coffer".to_string(), SMTP_PASSWORD.to_string()))
    );
    assert!(mails[0].data.contains("Subject: [coffer] TEST alert on "));

    // Without the CA the relay's certificate is not trusted: nothing is sent, and the
    // password never crosses the wire in clear text.
    let untrusted = starttls_config(&env, smtp.port, None);
    let out = env.run(&untrusted, &["alert", "test"]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("email      FAILED"), "{said}");
    assert_eq!(smtp.mails().len(), 1);
    assert_no_secret(&said);
    // Every AUTH the relay saw came over TLS.
    let auths = smtp.auth_attempts();
    assert!(
        !auths.is_empty() && auths.iter().all(|tls| *tls),
        "{auths:?}"
    );
}

#[test]
fn email_goes_over_implicit_tls() {
    let env = Env::new();
    let smtp = SmtpSink::start_implicit_tls().login("coffer", SMTP_PASSWORD);
    let ca = crate::support::sinks::smtp_tls_dir().join("ca.pem");
    let cfg = tls_config(&env, smtp.port, "tls", Some(&ca));
    let out = env.ok(&cfg, &["alert", "test"]);
    assert!(out.contains("email      sent"), "{out}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].encrypted);
    assert_eq!(
        mails[0].auth,
        Some(("coffer".to_string(), SMTP_PASSWORD.to_string()))
    );
}

/// The sink is as strict as the receivers that matter: what Gmail refuses, it refuses.
#[test]
fn the_smtp_sink_refuses_what_a_strict_receiver_refuses() {
    use crate::support::sinks::rfc5322_problems;
    let good = "Date: Mon, 07 Dec 2026 02:00:00 +0000\r\nFrom: coffer@example.com\r\n\
                To: ops@example.com\r\nMessage-ID: <a1b2.c3@example.com>\r\n\
                Subject: x\r\n\r\nbody\r\n";
    assert_eq!(rfc5322_problems(good.as_bytes()), Vec::<String>::new());
    for (bad, why) in [
        (
            good.replace("Message-ID: <a1b2.c3@example.com>\r\n", ""),
            "message-id",
        ),
        (good.replace("<a1b2.c3@example.com>", "a1b2"), "Message-ID"),
        (
            good.replace("Date: Mon, 07 Dec 2026 02:00:00 +0000\r\n", ""),
            "date",
        ),
        (good.replace("\r\n", "\n"), "CRLF"),
        (good.replace("body", &"x".repeat(1000)), "998"),
        (good.replace("Subject: x", "Subject: Счёт"), "non-ASCII"),
        (good.replace("body", "тело"), "not ASCII"),
    ] {
        let problems = rfc5322_problems(bad.as_bytes()).join("; ");
        assert!(problems.contains(why), "{why}: {problems}");
    }
}

/// Replaces `from`, which must be there, with `to` in the config at `path`.
fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in:\n{text}");
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Job `name` in `coffer status --json`.
fn job_status(env: &Env, config: &Path, name: &str) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&env.ok(config, &["status", "--json"])).unwrap();
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {s:#}"))
        .clone()
}

/// Whether a line of `log` holds every one of `words`.
fn logged(log: &str, words: &[&str]) -> bool {
    log.lines().any(|l| words.iter().all(|w| l.contains(w)))
}

/// `coffer alert test --json`: each channel's result.
fn alert_test(env: &Env, config: &Path) -> (Option<i32>, serde_json::Value, String) {
    let out = env.run(config, &["alert", "test", "--json"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {said}"));
    let by: serde_json::Map<String, serde_json::Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["channel"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    (out.status.code(), serde_json::Value::Object(by), said)
}

#[test]
fn the_relay_refuses_a_wrong_password_with_535_and_takes_no_mail() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", "the-relay-knows-another-password");
    let http = HttpSink::sentry(SENTRY_KEY);
    let cfg = config(&env, smtp.port, &http, None, "");
    let (code, by, said) = alert_test(&env, &cfg);
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(by["email"]["ok"], false, "{said}");
    assert!(
        by["email"]["error"].as_str().unwrap().contains("535"),
        "{said}"
    );
    assert_eq!(by["sentry"]["ok"], true, "{said}");
    assert_eq!(by["heartbeat"]["ok"], true, "{said}");
    assert_eq!(
        smtp.failed_logins(),
        [("coffer".to_string(), SMTP_PASSWORD.to_string())]
    );
    assert!(smtp.accepted().is_empty());
    let verbs: Vec<String> = smtp.commands().into_iter().map(|(v, _)| v).collect();
    assert!(!verbs.iter().any(|v| v == "MAIL"), "{verbs:?}");
    assert_no_secret(&said);
    // `coffer check` logs in without sending: it sees the refusal too.
    let out = env.run(&cfg, &["check"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(logged(&said, &["alerts.email", "535"]), "{said}");
    assert_no_secret(&said);
    assert_eq!(smtp.accepted().len(), 0);
}

#[test]
fn starttls_to_a_relay_that_offers_none_sends_nothing_in_clear_and_the_backup_succeeds() {
    let env = Env::new();
    // A relay (or a man in the middle) that does not offer STARTTLS.
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    let http = HttpSink::sentry(SENTRY_KEY);
    let cfg = config(&env, smtp.port, &http, None, "");
    edit(&cfg, "tls = \"none\"", "tls = \"starttls\"");
    // Every success is mailed too: the backup has something to send.
    edit(&cfg, "[alerts]\n", "[alerts]\nnotify_on_success = true\n");
    let out = env.run(&cfg, &["backup", "--json"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    assert!(
        logged(
            &log,
            &["could not send the alert", "channel=\"email\"", "STARTTLS"]
        ),
        "{log}"
    );
    assert_no_secret(&log);
    // The relay heard EHLO and nothing else that matters: no login, no message.
    let verbs: Vec<String> = smtp.commands().into_iter().map(|(v, _)| v).collect();
    assert!(verbs.iter().any(|v| v == "EHLO"), "{verbs:?}");
    for never in ["AUTH", "MAIL", "RCPT", "DATA"] {
        assert!(!verbs.iter().any(|v| v == never), "{never} sent: {verbs:?}");
    }
    assert!(smtp.mails().is_empty());
    // The job's outcome is its own; the other channels heard of it.
    let backup = job_status(&env, &cfg, "backup");
    assert_eq!(backup["last_run"]["outcome"], "success", "{backup:#}");
    assert_eq!(backup["last_success"]["snapshot"], id, "{backup:#}");
    let requests = http.requests();
    let events = sentry_events(&requests);
    assert_eq!(events.len(), 1, "{requests:#?}");
    assert!(events[0].contains("OK backup"), "{}", events[0]);
    assert_eq!(pings(&requests, "").len(), 1);
    // `alert test` says why.
    let (code, by, said) = alert_test(&env, &cfg);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        by["email"]["error"].as_str().unwrap().contains("STARTTLS"),
        "{said}"
    );
    assert!(smtp.auth_attempts().is_empty());
}

#[test]
fn tls_none_is_refused_for_a_relay_on_another_host_naming_the_option() {
    let env = Env::new();
    let http = HttpSink::sentry(SENTRY_KEY);
    let cfg = config(&env, 25, &http, None, "");
    edit(
        &cfg,
        "smtp_host = \"127.0.0.1\"",
        "smtp_host = \"smtp.example.com\"",
    );
    for args in [&["check"][..], &["alert", "test"], &["backup"]] {
        let out = env.fails(&cfg, args);
        assert!(
            logged(
                &out,
                &[
                    "alerts.email: tls = \"none\"",
                    "smtp.example.com",
                    "clear text"
                ]
            ),
            "{args:?}: {out}"
        );
        assert_no_secret(&out);
    }
    assert!(
        http.requests().is_empty(),
        "a refused config sent something"
    );
    // Loopback only: by name or address, v4 or v6.
    let text = fs::read_to_string(&cfg).unwrap();
    for (host, allowed) in [
        ("127.0.0.1", true),
        ("127.0.0.53", true),
        ("::1", true),
        ("localhost", true),
        ("10.0.0.25", false),
        ("192.168.1.1", false),
        ("::ffff:10.0.0.1", false),
        ("localhost.example.com", false),
        ("127.0.0.1.nip.io", false),
    ] {
        let text = text.replace(
            "smtp_host = \"smtp.example.com\"",
            &format!("smtp_host = \"{host}\""),
        );
        let parsed = coffer::config::Config::parse(&text, &cfg);
        assert_eq!(parsed.is_ok(), allowed, "{host}: {parsed:?}");
    }
}

#[test]
fn sentry_and_the_heartbeat_answering_5xx_or_429_leave_the_job_alone() {
    for status in [503u16, 429] {
        let code = status.to_string();
        let env = Env::new();
        let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
        let http = HttpSink::sentry(SENTRY_KEY);
        http.answer(status, "{\"detail\":\"not now\"}");
        let tool = failing_tool(&env);

        // A good backup is good, whatever the monitoring answers; each refusal is logged.
        let fixed = config(&env, smtp.port, &http, None, "");
        let started = std::time::Instant::now();
        let out = env.run(&fixed, &["backup", "--json"]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{status}: {log}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{status}: {log}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        for channel in ["sentry", "heartbeat"] {
            let channel = format!("channel=\"{channel}\"");
            assert!(
                logged(&log, &["could not report the run", &channel, &code]),
                "{status} {channel}: {log}"
            );
        }
        assert_no_secret(&log);

        // A failed backup fails with its own error; the email goes out; the refusals are
        // logged.
        let broken = config(&env, smtp.port, &http, Some(&tool), "");
        let started = std::time::Instant::now();
        let out = env.run(&broken, &["backup"]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // 14: a source failed (its dump tool), whatever the alert channels answered.
        assert_eq!(out.status.code(), Some(14), "{status}: {said}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{status}: {said}"
        );
        assert!(said.contains(TOOL_ERROR), "{status}: {said}");
        assert!(
            logged(
                &said,
                &["could not send the alert", "channel=\"sentry\"", &code]
            ),
            "{status}: {said}"
        );
        assert!(
            logged(
                &said,
                &["could not report the run", "channel=\"heartbeat\"", &code]
            ),
            "{status}: {said}"
        );
        assert_no_secret(&said);
        let mails = smtp.mails();
        assert_eq!(mails.len(), 1, "{mails:#?}");
        assert!(
            mails[0]
                .data
                .contains("Subject: [coffer] FAILED backup on ")
        );
        // The history holds the runs as they went.
        let backup = job_status(&env, &broken, "backup");
        assert_eq!(
            backup["last_success"]["snapshot"],
            id.as_str(),
            "{backup:#}"
        );
        assert_eq!(backup["last_run"]["outcome"], "failure", "{backup:#}");
        assert_eq!(backup["runs"]["success"], 1, "{backup:#}");
        assert_eq!(backup["runs"]["failure"], 1, "{backup:#}");

        // Sentry takes events again: the failure it never took reaches it with the next
        // failed run, while email, which has it, stays quiet (flood control per channel).
        let before = sentry_events(&http.requests()).len();
        http.answer(200, "{}");
        env.fails(&broken, &["backup"]);
        let events = sentry_events(&http.requests());
        assert_eq!(events.len(), before + 1, "{status}: {events:#?}");
        assert!(
            events.last().unwrap().contains("FAILED backup"),
            "{status}: {events:#?}"
        );
        assert_eq!(smtp.mails().len(), 1);
    }
}

#[test]
fn a_sentry_key_the_project_does_not_know_is_refused_and_reported() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    // The DSN names SENTRY_KEY; this project knows another key.
    let http = HttpSink::sentry("fedcba9876543210fedcba9876543210");
    let cfg = config(&env, smtp.port, &http, None, "");
    let (code, by, said) = alert_test(&env, &cfg);
    assert_eq!(code, Some(1), "{said}");
    assert_eq!(by["sentry"]["ok"], false, "{said}");
    assert!(
        by["sentry"]["error"].as_str().unwrap().contains("401"),
        "{said}"
    );
    assert_eq!(by["email"]["ok"], true, "{said}");
    assert_eq!(smtp.mails().len(), 1);
    let rejected = http.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:#?}");
    assert!(
        rejected[0].1.join(" ").contains("not the project's key"),
        "{rejected:#?}"
    );
    assert_no_secret(&said);
}

/// The HTTP sink is as strict as Sentry's ingest: what Sentry refuses, it refuses.
#[test]
fn the_http_sink_refuses_what_sentry_refuses() {
    use crate::support::sinks::sentry_problems;
    let auth = |key: &str, version: &str| {
        vec![(
            "x-sentry-auth".to_string(),
            format!("Sentry sentry_key={key}, sentry_version={version}, sentry_client=test/1"),
        )]
    };
    let good_auth = auth(SENTRY_KEY, "7");
    let event = r#"{"event_id":"7a3db1d05f9746799de9d88771a4865e","level":"error","message":"[coffer] FAILED backup"}"#;
    let check_in = r#"{"check_in_id":"7a3db1d05f9746799de9d88771a4865e","monitor_slug":"coffer-backup","status":"ok"}"#;
    let envelope = |header: &str, items: &[(&str, &str, bool)]| {
        let mut body = format!("{header}\n");
        for (kind, payload, with_length) in items {
            if *with_length {
                body.push_str(&format!(
                    "{{\"type\":\"{kind}\",\"length\":{}}}\n{payload}\n",
                    payload.len()
                ));
            } else {
                body.push_str(&format!("{{\"type\":\"{kind}\"}}\n{payload}\n"));
            }
        }
        body
    };
    let good = envelope(
        "{\"event_id\":\"7a3db1d05f9746799de9d88771a4865e\"}",
        &[("event", event, true), ("check_in", check_in, false)],
    );
    let path = "/api/42/envelope/";
    let check = |method: &str, headers: &[(String, String)], body: &str| {
        sentry_problems(method, path, headers, body.as_bytes(), Some(SENTRY_KEY))
    };
    assert_eq!(check("POST", &good_auth, &good), None);
    // The key in the envelope's DSN is as good as the header.
    let by_dsn = envelope(
        &format!("{{\"dsn\":\"https://{SENTRY_KEY}@sentry.example.com/42\"}}"),
        &[("event", event, true)],
    );
    assert_eq!(check("POST", &[], &by_dsn), None);
    let status = |r: Option<(u16, Vec<String>)>| r.map(|(s, why)| (s, why.join("; ")));
    for (headers, body, code, why) in [
        (vec![], good.clone(), 401, "no sentry_key"),
        (
            auth("0000", "7"),
            good.clone(),
            401,
            "not the project's key",
        ),
        (auth(SENTRY_KEY, "6"), good.clone(), 401, "sentry_version=7"),
        (
            good_auth.clone(),
            envelope(
                "{\"dsn\":\"https://0000@sentry.example.com/42\"}",
                &[("event", event, true)],
            ),
            401,
            "not the project's key",
        ),
        (
            good_auth.clone(),
            "not json\n".to_string(),
            400,
            "first line",
        ),
        (good_auth.clone(), "{}\n".to_string(), 400, "without items"),
        (
            good_auth.clone(),
            good.replace("\"length\":", "\"length\":9"),
            400,
            "length",
        ),
        (
            good_auth.clone(),
            good.replace("\"type\":\"event\",", ""),
            400,
            "no type",
        ),
        (
            good_auth.clone(),
            envelope(
                "{}",
                &[(
                    "event",
                    r#"{"event_id":"7a3db1d05f9746799de9d88771a4865e","level":"error"}"#,
                    false,
                )],
            ),
            400,
            "neither message nor exception",
        ),
        (
            good_auth.clone(),
            envelope("{}", &[("event", &event.replace("error", "loud"), false)]),
            400,
            "invalid level",
        ),
        (
            good_auth.clone(),
            envelope("{}", &[("event", &event.replace("7a3d", ""), false)]),
            400,
            "event_id",
        ),
        (
            good_auth.clone(),
            envelope(
                "{}",
                &[("check_in", &check_in.replace("\"ok\"", "\"fine\""), false)],
            ),
            400,
            "check-in",
        ),
    ] {
        let got = status(check("POST", &headers, &body));
        assert!(
            got.as_ref()
                .is_some_and(|(s, w)| *s == code && w.contains(why)),
            "{why}: {got:?} for {body:?}"
        );
    }
    assert_eq!(
        status(check("GET", &good_auth, "")).map(|(s, _)| s),
        Some(405)
    );
    // A sink that knows no project takes no envelope.
    assert_eq!(
        sentry_problems("POST", path, &good_auth, good.as_bytes(), None).map(|(s, _)| s),
        Some(401)
    );
}

/// RFC 2045/2047 as a strict receiver reads them.
#[test]
fn the_smtp_sink_checks_mime_and_encoded_words() {
    use crate::support::sinks::rfc5322_problems;
    let good = "Date: Mon, 07 Dec 2026 02:00:00 +0000\r\nFrom: coffer@example.com\r\n\
                To: ops@example.com\r\nMessage-ID: <a1b2.c3@example.com>\r\n\
                Subject: =?utf-8?b?0KHRh9GR0YI=?= due\r\nMIME-Version: 1.0\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\
                Content-Transfer-Encoding: 8bit\r\n\r\nтело\r\n";
    assert_eq!(rfc5322_problems(good.as_bytes()), Vec::<String>::new());
    let long_word = format!("=?utf-8?q?{}?=", "a".repeat(70));
    for (bad, why) in [
        (good.replace("MIME-Version: 1.0\r\n", ""), "MIME-Version"),
        (good.replace("charset=utf-8", "format=flowed"), "charset"),
        (good.replace("8bit", "7bit"), "8bit"),
        (good.replace("To: ops@example.com", "To: ops"), "no address"),
        (good.replace("0KHRh9GR0YI=", "0KHRh9GR0YI"), "not base64"),
        (good.replace("0KHRh9GR0YI=", "/w=="), "not UTF-8"),
        (good.replace("?b?", "?x?"), "encoding"),
        (good.replace(" due", "due"), "white space"),
        (
            good.replace("=?utf-8?b?0KHRh9GR0YI=?=", &long_word),
            "at most 75",
        ),
        (
            good.replace("=?utf-8?b?0KHRh9GR0YI=?=", "=?utf-8?q?=ZZ?="),
            "=XX",
        ),
    ] {
        let problems = rfc5322_problems(bad.as_bytes()).join("; ");
        assert!(problems.contains(why), "{why}: {problems}");
    }
}

#[test]
fn an_error_in_cyrillic_with_a_long_line_makes_a_mail_a_strict_receiver_takes() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    let http = HttpSink::sentry(SENTRY_KEY);
    let said = "Ошибка: образ базы данных «счета» повреждён";
    let long = format!("context: {}", "x".repeat(1500));
    let tool = env.path("broken-ru-sqlite3");
    fs::write(
        &tool,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = \"--version\" ]; then echo '3.40.1 2022-12-28 broken'; exit 0; fi\n\
             cat > /dev/null\n\
             echo '{long}' >&2\n\
             echo '{said}' >&2\n\
             exit 1\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config(&env, smtp.port, &http, Some(&tool), "");
    env.fails(&cfg, &["backup"]);
    // Taken by a sink that checks CRLF, 998 characters a line, RFC 2047 and MIME.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    let subject = mails[0].header("subject").unwrap();
    assert!(
        subject.starts_with("[coffer] FAILED backup on "),
        "{subject}"
    );
    let text = mails[0].text();
    assert!(text.contains(said), "{text}");
    assert!(text.contains(&long), "{text}");
    let events = sentry_events(&http.requests());
    assert!(events[0].contains(said), "{}", events[0]);

    // A subject that is not ASCII (an error's first line; cut at 160 characters) goes out
    // as RFC 2047 encoded words, each at most 75 characters, in lines of at most 998.
    let config = coffer::config::Config::load(&cfg).unwrap();
    let event = coffer::alert::Event {
        kind: coffer::alert::Kind::Failed,
        job: "drill".into(),
        trigger: Some(coffer::schedule::Trigger::Schedule),
        host: "erp-1".into(),
        at: chrono::Utc::now(),
        summary: format!("проба «{}» вернула 0 строк", "Счёт-фактура ".repeat(20)),
        errors: vec![said.into()],
        source: None,
        stage: None,
        snapshot: None,
        last_good: None,
        commands: Vec::new(),
        timezone: chrono_tz::Tz::UTC,
        repeat_after: Duration::from_secs(6 * 3600),
    };
    let results = coffer::alert::Alerts::from_config(&config).dispatch(&event);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].header("subject").unwrap(), event.subject());
    assert!(event.subject().ends_with("..."), "{}", event.subject());
    assert!(mails[1].data.contains("=?utf-8?"), "{}", mails[1].data);
}

#[test]
fn a_failed_prune_alerts_every_channel_with_the_command_to_retry() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    let http = HttpSink::sentry(SENTRY_KEY);
    let cfg = config(&env, smtp.port, &http, None, "");
    // This host never made a backup, so it has no signing key, trusts no snapshot and
    // refuses to prune: a failed prune.
    let out = env.fails(&cfg, &["prune"]);
    assert!(out.contains("signed by a trusted key"), "{out}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = mails[0].text();
    assert!(
        mails[0].data.contains("Subject: [coffer] FAILED prune on "),
        "{}",
        mails[0].data
    );
    for expected in [
        "prune FAILED at ",
        ", manual.",
        "signed by a trusted key",
        "retry:    coffer --config",
        " prune --dry-run",
    ] {
        assert!(mail.contains(expected), "{expected:?} not in:\n{mail}");
    }
    let requests = http.requests();
    let events = sentry_events(&requests);
    assert_eq!(events.len(), 1, "{requests:#?}");
    assert!(events[0].contains("\"job\":\"prune\""), "{}", events[0]);
    assert!(events[0].contains("FAILED prune"), "{}", events[0]);
    let fails = pings(&requests, "/fail");
    assert_eq!(fails.len(), 1, "{requests:#?}");
    assert!(
        fails[0].body.contains("signed by a trusted key"),
        "{fails:#?}"
    );
    let prune = job_status(&env, &cfg, "prune");
    assert_eq!(prune["last_run"]["outcome"], "failure", "{prune:#}");
}

#[test]
fn a_failed_scheduled_verify_alerts_from_the_daemon_once() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    let http = HttpSink::sentry(SENTRY_KEY);
    let cfg = config(
        &env,
        smtp.port,
        &http,
        None,
        "[jobs.verify]\nschedule = \"* * * * * *\"\n",
    );
    let id = env.backup(&cfg);
    // A part of the newest snapshot rots in the store.
    let dir = env.store().join("snapshots").join(&id);
    let part = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".age.0000"))
        .unwrap();
    let mut bytes = fs::read(&part).unwrap();
    bytes.extend_from_slice(b"rot");
    fs::write(&part, bytes).unwrap();
    let mut daemon = crate::support::Daemon::start(&cfg, env.path("daemon.log"));
    // Every second a verify fails and the switch hears it; two of them, so flood control has
    // a repeat to hold back.
    http.wait_for("two failed verify runs", |r| pings(r, "/fail").len() >= 2);
    assert!(
        daemon.running(),
        "a failed job stopped the daemon:\n{}",
        daemon.log()
    );
    let exit = daemon.stop();
    let log = daemon.log();
    assert!(exit.success(), "{exit:?}\n{log}");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = mails[0].text();
    assert!(
        mails[0]
            .data
            .contains("Subject: [coffer] FAILED verify on "),
        "{}",
        mails[0].data
    );
    for expected in [
        ", schedule.".to_string(),
        format!("snapshot {id} failed verification"),
        format!("Last good snapshot: {id}"),
        " verify latest".to_string(),
    ] {
        assert!(mail.contains(&expected), "{expected:?} not in:\n{mail}");
    }
    let requests = http.requests();
    let events = sentry_events(&requests);
    assert_eq!(events.len(), 1, "{requests:#?}");
    assert!(events[0].contains("\"job\":\"verify\""), "{}", events[0]);
    let verify = job_status(&env, &cfg, "verify");
    assert_eq!(verify["last_failure"]["trigger"], "schedule", "{verify:#}");
    assert!(
        verify["runs"]["failure"].as_u64().unwrap() >= 2,
        "{verify:#}"
    );
    assert!(
        logged(
            &log,
            &["failed again; alerted already within alerts.repeat_after"]
        ),
        "{log}"
    );
    assert_no_secret(&log);
}

#[test]
fn a_job_still_failing_is_reminded_once_repeat_after_has_passed() {
    let env = Env::new();
    let smtp = SmtpSink::start().login("coffer", SMTP_PASSWORD);
    let http = HttpSink::sentry(SENTRY_KEY);
    let tool = failing_tool(&env);
    let cfg = config(&env, smtp.port, &http, Some(&tool), "");
    let repeat = Duration::from_secs(4);
    edit(&cfg, "repeat_after = \"6h\"", "repeat_after = \"4s\"");
    env.fails(&cfg, &["backup"]);
    let alerted = std::time::Instant::now();
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].text().contains("repeats at most every 4 s until"),
        "{}",
        mails[0].text()
    );
    // Failing again within repeat_after: held back on each channel; the switch hears it.
    env.fails(&cfg, &["backup"]);
    assert!(
        alerted.elapsed() < repeat,
        "the second run took too long to test the quiet time"
    );
    assert_eq!(smtp.mails().len(), 1);
    assert_eq!(sentry_events(&http.requests()).len(), 1);
    // Still failing once repeat_after has passed: reminded, on each channel.
    std::thread::sleep(repeat.saturating_sub(alerted.elapsed()) + Duration::from_millis(300));
    env.fails(&cfg, &["backup"]);
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(
        mails[1]
            .data
            .contains("Subject: [coffer] FAILED backup on ")
    );
    assert!(mails[1].text().contains(TOOL_ERROR));
    let requests = http.requests();
    assert_eq!(sentry_events(&requests).len(), 2, "{requests:#?}");
    assert_eq!(pings(&requests, "/fail").len(), 3);
}
