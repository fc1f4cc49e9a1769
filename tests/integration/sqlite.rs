//! SQLite sources: a consistent dump while another process writes.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Env;

fn have_sqlite3() -> bool {
    let ok = Command::new("sqlite3").arg("--version").output().is_ok();
    crate::support::prerequisite(ok, "sqlite3 is not installed", "apt-get install sqlite3")
}

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn config(env: &Env, db: &std::path::Path) -> std::path::PathBuf {
    env.config_for_source(
        "lite.toml",
        &format!(
            "name = \"app\"\ntype = \"sqlite\"\npath = \"{}\"",
            db.display()
        ),
    )
}

#[test]
fn sqlite_dump_is_consistent_while_a_writer_inserts() {
    if !have_sqlite3() {
        return;
    }
    let env = Env::new();
    let db = env.path("live.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; \
         CREATE TABLE a (i INTEGER PRIMARY KEY, v TEXT); CREATE TABLE b (i INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000) \
         INSERT INTO a SELECT n, 'row ' || n || ' ' || hex(randomblob(16)) FROM s; \
         INSERT INTO b SELECT i, v FROM a;",
    );
    // Every transaction adds one row to each table: a consistent copy has equal counts.
    let script = format!(
        "i=100000; while :; do i=$((i+1)); sqlite3 -cmd '.timeout 5000' '{db}' \
         \"BEGIN; INSERT INTO a VALUES($i, 'w$i'); INSERT INTO b VALUES($i, 'w$i'); COMMIT;\" || exit 1; done",
        db = db.display()
    );
    let mut writer = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlite(&db, "SELECT count(*) FROM a")
        .parse::<u64>()
        .unwrap()
        < 100_010
    {
        assert!(Instant::now() < deadline, "the writer does not write");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = config(&env, &db);
    let out = env.run(&config, &["backup", "--json"]);
    let during = sqlite(&db, "SELECT count(*) FROM a")
        .parse::<u64>()
        .unwrap();
    writer.kill().unwrap();
    writer.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"]["sources"][0]["kind"], "sqlite");

    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );
    let copy = env.path("copy.db");
    let load = Command::new("sqlite3")
        .arg(&copy)
        .stdin(Stdio::from(fs::File::open(dir.join("app.sql")).unwrap()))
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let a: u64 = sqlite(&copy, "SELECT count(*) FROM a").parse().unwrap();
    let b: u64 = sqlite(&copy, "SELECT count(*) FROM b").parse().unwrap();
    assert_eq!(a, b, "the dump mixes two moments");
    assert!(
        a >= 100_010 && a <= during,
        "{a} rows; {during} when the backup ended"
    );
    assert_eq!(
        sqlite(&copy, "SELECT max(i) FROM a")
            .parse::<u64>()
            .unwrap(),
        a,
        "no gaps"
    );
    assert_eq!(sqlite(&copy, "PRAGMA integrity_check"), "ok");
}

#[test]
fn a_missing_sqlite_file_fails_the_backup() {
    if !have_sqlite3() {
        return;
    }
    let env = Env::new();
    let config = config(&env, &env.path("nope.db"));
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("nope.db does not exist") && out.contains("no snapshot was written"),
        "{out}"
    );
    assert!(
        !env.path("nope.db").exists(),
        "the backup must not create the database"
    );
}

#[test]
fn a_dump_that_does_not_end_with_commit_fails_the_backup() {
    if !have_sqlite3() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let db = env.path("app.db");
    sqlite(&db, "CREATE TABLE t (i INTEGER)");
    // A shell that exits 0 after half a dump (what a silent busy error looks like).
    let tool = env.path("half-sqlite3");
    fs::write(
        &tool,
        "#!/bin/sh\ncat >/dev/null\nprintf 'PRAGMA foreign_keys=OFF;\\nBEGIN TRANSACTION;\\n'\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let config = config(&env, &db);
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("{text}dump_tool = \"{}\"\n", tool.display()),
    )
    .unwrap();
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("instead of COMMIT") && out.contains("no snapshot was written"),
        "{out}"
    );
    assert_eq!(env.ok(&config, &["list", "--json"]).trim(), "[]");
}

#[test]
fn sqlite_restore_into_a_staging_file_matches_and_never_overwrites_the_source() {
    if !have_sqlite3() {
        return;
    }
    let env = Env::new();
    let db = env.path("app.db");
    sqlite(
        &db,
        "CREATE TABLE doc (id INTEGER PRIMARY KEY, body TEXT, data BLOB, amount REAL); \
         INSERT INTO doc VALUES (1, 'it''s \"q\"' || char(10) || 'line ✓ 🎉', x'00ff10', 0.1), \
         (2, NULL, NULL, 1e308), (3, '', zeroblob(3), -0.0); \
         CREATE TABLE tag (doc INTEGER REFERENCES doc(id), name TEXT); \
         CREATE INDEX tag_name ON tag(name); \
         CREATE VIEW named AS SELECT * FROM doc WHERE body IS NOT NULL; \
         CREATE TRIGGER stamp AFTER INSERT ON doc BEGIN INSERT INTO tag VALUES (new.id, 'new'); END;",
    );
    let config = config(&env, &db);
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let info = &v["manifest"]["sources"][0]["database"];
    assert_eq!(
        info["tables"],
        serde_json::json!([
            {"name": "doc", "rows": 3, "exact": true},
            {"name": "tag", "rows": 0, "exact": true},
        ]),
        "{info}"
    );
    let staging = env.path("staging.db");
    let url = format!("sqlite://{}", staging.display());
    let out = env.fails(
        &config,
        &["restore", "latest", "--source", "app", "--db-url", &url],
    );
    assert!(out.contains("--create"), "{out}");
    let out = env.ok(
        &config,
        &[
            "restore", "latest", "--source", "app", "--db-url", &url, "--create",
        ],
    );
    assert!(out.contains("2 of 2 tables match"), "{out}");
    assert_eq!(sqlite(&staging, ".dump"), sqlite(&db, ".dump"));
    // The source, even through a symlink, is refused.
    let link = env.path("link.db");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let before = fs::read(&db).unwrap();
    let url = format!("sqlite:{}", link.display());
    let out = env.fails(
        &config,
        &[
            "restore", "latest", "--source", "app", "--db-url", &url, "--force",
        ],
    );
    assert!(out.contains("refusing to restore into"), "{out}");
    assert_eq!(fs::read(&db).unwrap(), before);
}
