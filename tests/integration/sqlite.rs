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
    // Lossy: a dump may hold text that is not UTF-8 (compare such cells with hex()).
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config(env: &Env, db: &std::path::Path) -> std::path::PathBuf {
    config_with(env, db, "")
}

fn config_with(env: &Env, db: &std::path::Path, extra: &str) -> std::path::PathBuf {
    env.config_for_source(
        "lite.toml",
        &format!(
            "name = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\n{extra}",
            db.display()
        ),
    )
}

#[test]
fn sqlite_builtin_dump_is_consistent_while_a_writer_inserts() {
    if !have_sqlite3() {
        return;
    }
    let (rows, v) = dump_while_writing("");
    // The built-in dump counted in its own transaction: exactly what it wrote.
    let info = &v["manifest"]["sources"][0]["database"];
    assert_eq!(info["counted"], "snapshot", "{info}");
    assert_eq!(info["tables"][0]["rows"].as_u64(), Some(rows), "{info}");
    assert_eq!(info["tables"][1]["rows"].as_u64(), Some(rows), "{info}");
    assert_eq!(v["manifest"]["sources"][0]["dump_tool"], "coffer");
}

#[test]
fn sqlite_shell_dump_is_consistent_while_a_writer_inserts() {
    if !have_sqlite3() {
        return;
    }
    let (_, v) = dump_while_writing("dump_tool = \"sqlite3\"");
    assert_eq!(v["manifest"]["sources"][0]["dump_tool"], "sqlite3");
    assert_eq!(
        v["manifest"]["sources"][0]["database"]["counted"],
        "before-dump"
    );
}

/// Backs up a database that a writer keeps inserting into (one row into each of two tables
/// per transaction) and checks the restored copy holds one moment: equal counts, no gaps.
/// Returns the restored row count and the backup's JSON report.
fn dump_while_writing(extra: &str) -> (u64, serde_json::Value) {
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
    let config = config_with(&env, &db, extra);
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
    (a, v)
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

#[test]
fn the_builtin_dump_loads_in_stock_sqlite3_identical_to_the_original() {
    if !have_sqlite3() {
        return;
    }
    let env = Env::new();
    let db = env.path("app.db");
    sqlite(
        &db,
        r#"CREATE TABLE "odd ""name"" table" ("col ""q""" TEXT, "x'y" INTEGER);
INSERT INTO "odd ""name"" table" VALUES ('it''s', 1);
CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, v);
INSERT INTO seq (v) VALUES (1), (2), (3); DELETE FROM seq WHERE id = 3;
CREATE TABLE gen (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) STORED,
                  c TEXT GENERATED ALWAYS AS ('v' || a) VIRTUAL);
INSERT INTO gen (a) VALUES (21), (NULL);
CREATE TABLE wr (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE TABLE vals (i, v);
CREATE INDEX vals_v ON vals(v);
CREATE VIEW big AS SELECT * FROM vals WHERE typeof(v) = 'real';
CREATE TRIGGER keep AFTER DELETE ON vals BEGIN INSERT INTO wr VALUES ('deleted ' || old.i, NULL); END;
CREATE VIEW noted AS SELECT 1 AS one -- a trailing note SQLite keeps in the schema
;
CREATE TABLE abcdefg_ö (x) ;
CREATE TABLE strict_one (k TEXT PRIMARY KEY) WITHOUT ROWID /* note */ ;
INSERT INTO abcdefg_ö VALUES ('ü');
PRAGMA user_version = 7;
PRAGMA application_id = 1234;
"#,
    );
    // Values at the edges of every storage class.
    let mut inserts = String::from("BEGIN;");
    let values = [
        "NULL",
        "0",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "0.1",
        "1.0/3",
        "-0.0",
        "1e-300",
        "1.7976931348623157e308",
        "9e999",
        "-9e999",
        "''",
        "'NULL'",
        "'a''b\"c'",
        "'line1' || char(10) || 'line2' || char(13)",
        "'✓ Ünïcødé 🎉'",
        "x''",
        "x'00'",
        "x'00ff7f80'",
        "zeroblob(100)",
        "randomblob(3000)",
        "'   spaced '",
        "'x' || char(0) || 'y'",
        // Not UTF-8: kept byte for byte.
        "CAST(x'80ff41' AS TEXT)",
    ];
    for (i, v) in values.iter().enumerate() {
        inserts.push_str(&format!("INSERT INTO vals VALUES ({i}, {v});"));
        inserts.push_str(&format!("INSERT INTO wr VALUES ('k{i}', {v});"));
    }
    inserts.push_str(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20000) \
         INSERT INTO vals SELECT 100 + n, CASE n % 4 WHEN 0 THEN n * 1.5 WHEN 1 THEN hex(randomblob(n % 40)) \
         WHEN 2 THEN randomblob(n % 64) ELSE NULL END FROM s; COMMIT;",
    );
    sqlite(&db, &inserts);
    let config = config(&env, &db);
    env.backup(&config);
    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );
    let copy = env.path("copy.db");
    let load = Command::new("sqlite3")
        .args(["-bail"])
        .arg(&copy)
        .stdin(Stdio::from(fs::File::open(dir.join("app.sql")).unwrap()))
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    same_lines(&sqlite(&copy, ".dump"), &sqlite(&db, ".dump"));
    // Same bytes in every cell, storage class included.
    let cells = "SELECT group_concat(i || ':' || typeof(v) || ':' || hex(v), ',') FROM vals";
    assert_eq!(sqlite(&copy, cells), sqlite(&db, cells));
    // The AUTOINCREMENT counter came along: the next id is 4, not 3.
    sqlite(&copy, "INSERT INTO seq (v) VALUES (9)");
    assert_eq!(sqlite(&copy, "SELECT max(id) FROM seq"), "4");
    assert_eq!(
        sqlite(&copy, "SELECT b || c FROM gen WHERE a = 21"),
        "42v21"
    );
    assert_eq!(sqlite(&copy, "PRAGMA user_version"), "7");
    assert_eq!(sqlite(&copy, "PRAGMA application_id"), "1234");
    assert_eq!(sqlite(&copy, "SELECT count(*) FROM noted"), "1");
}

#[test]
fn a_leftover_sqlite_sequence_does_not_break_the_load() {
    if !have_sqlite3() {
        return;
    }
    let env = Env::new();
    let db = env.path("app.db");
    // sqlite_sequence outlives the last AUTOINCREMENT table.
    sqlite(
        &db,
        "CREATE TABLE tmp (id INTEGER PRIMARY KEY AUTOINCREMENT); INSERT INTO tmp DEFAULT VALUES; \
         DROP TABLE tmp; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    );
    assert_eq!(sqlite(&db, "SELECT count(*) FROM sqlite_sequence"), "0");
    let config = config(&env, &db);
    env.backup(&config);
    let staging = env.path("staging.db");
    let url = format!("sqlite://{}", staging.display());
    let out = env.ok(
        &config,
        &[
            "restore", "latest", "--source", "app", "--db-url", &url, "--create",
        ],
    );
    assert!(out.contains("1 of 1 tables match"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&staging).unwrap().permissions().mode() & 0o777,
        0o600,
        "the staging copy is the owner's only"
    );
}

#[test]
fn a_virtual_table_asks_for_the_sqlite3_shell_and_dumps_with_it() {
    if !have_sqlite3() {
        return;
    }
    let env = Env::new();
    let db = env.path("fts.db");
    sqlite(
        &db,
        "CREATE VIRTUAL TABLE docs USING fts5(body); INSERT INTO docs VALUES ('hello coffer');",
    );
    let out = env.fails(&config(&env, &db), &["backup"]);
    assert!(
        out.contains("virtual table 'docs' (fts5)") && out.contains("dump_tool = \"sqlite3\""),
        "{out}"
    );
    assert!(out.contains("no snapshot was written"), "{out}");
    let config = config_with(&env, &db, "dump_tool = \"sqlite3\"");
    env.backup(&config);
    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );
    assert!(
        fs::read_to_string(dir.join("app.sql"))
            .unwrap()
            .contains("hello coffer")
    );
}

/// Asserts two texts are equal, showing the first line that differs.
fn same_lines(got: &str, want: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {} differs", i + 1);
    }
    assert_eq!(
        got.lines().count(),
        want.lines().count(),
        "line counts differ"
    );
}

#[test]
fn a_writer_that_commits_while_the_builtin_dump_reads_leaves_a_consistent_prefix() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
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
    let count = || -> u64 { sqlite(&db, "SELECT count(*) FROM a").parse().unwrap() };
    // Another process, one transaction per row pair, until it is killed.
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
    let wait_for = |rows: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while count() < rows {
            assert!(Instant::now() < deadline, "the writer does not write");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(100_010);
    // The dump writes on the thread that calls `progress`, inside its read transaction: once
    // a megabyte of it is out, the backup waits there until the writer has committed more.
    // So these commits fall between the dump's first and last read, whatever the timing.
    let config_path = config(&env, &db);
    let config = coffer::config::Config::load(&config_path).unwrap();
    let store = coffer::store::LocalStore::new(env.store());
    let total = AtomicU64::new(0);
    let mid_dump = Mutex::new(None);
    let report = coffer::backup::backup(&config, &store, &|n| {
        let at = total.fetch_add(n, Ordering::SeqCst) + n;
        let mut mid = mid_dump.lock().unwrap();
        if at > 1 << 20 && mid.is_none() {
            let seen = count();
            wait_for(seen + 5);
            *mid = Some((seen, count()));
        }
    });
    let after = count();
    writer.kill().unwrap();
    writer.wait().unwrap();
    let report = report.unwrap();
    let (seen, committed) = mid_dump
        .into_inner()
        .unwrap()
        .expect("the dump is over a megabyte");
    assert!(committed >= seen + 5 && after >= committed);
    let info = report.manifest.sources[0].database.as_ref().unwrap();
    assert_eq!(info.counted, "snapshot");

    let dir = env.path("restored");
    env.ok(
        &config_path,
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
    assert_eq!(sqlite(&copy, "PRAGMA integrity_check"), "ok");
    let a: u64 = sqlite(&copy, "SELECT count(*) FROM a").parse().unwrap();
    let b: u64 = sqlite(&copy, "SELECT count(*) FROM b").parse().unwrap();
    assert_eq!(a, b, "the dump mixes two moments");
    // One moment before the mid-dump commits: they are not in it.
    assert!(
        (100_010..=seen).contains(&a),
        "{a} rows; {seen} seen mid-dump"
    );
    assert_eq!(
        info.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        [a, a]
    );
    // A prefix of what was written: rows 1..=a, the very rows of the source.
    let rows = |db: &std::path::Path, t: &str| {
        sqlite(
            db,
            &format!(
                "SELECT count(*) || ':' || min(i) || ':' || max(i) || ':' || total(length(v)) \
                 || ':' || total(i * unicode(substr(v, -1))) FROM {t} WHERE i <= {a}"
            ),
        )
    };
    for t in ["a", "b"] {
        assert_eq!(rows(&copy, t), rows(&db, t), "table {t}");
        assert!(
            rows(&copy, t).starts_with(&format!("{a}:1:{a}:")),
            "table {t}: gaps"
        );
    }
}
