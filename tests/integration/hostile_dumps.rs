//! Hostile dumps: a restore or a drill loads a dump from the store into a staging database with
//! the database's own client, on the host that holds the private key. The store may be
//! tampered with, and pg_dump before 15.14/16.10/17.6 could write psql meta-commands from
//! crafted object names (CVE-2025-8715), so each test loads what an attacker would put in a
//! dump through the library (`staging::load`, as restore and drill do) and checks that the
//! client refused it and that nothing ran on this host. Real servers and clients, as in
//! postgres.rs, mysql.rs and sqlite.rs.

use std::path::Path;
use std::process::Command;

use coffer::database::{Address, Database};
use coffer::process::{DumpOutcome, FeedError};
use coffer::staging::{self, StagingOptions};

/// Checks the client as a restore does, creates the target, and loads `dump` into it.
fn load(url: &str, dump: &[u8]) -> Result<DumpOutcome, FeedError> {
    let target = Database {
        address: Address::parse(url).unwrap(),
        password: None,
    };
    let opts = StagingOptions {
        create: true,
        ..StagingOptions::default()
    };
    staging::check_client(&target, &opts).unwrap();
    staging::prepare(&target, &opts).unwrap();
    staging::load(&target, &opts, &mut &dump[..])
}

/// The load of hostile `dump` failed with the client's `refusal`, and `trace` (what the
/// attack would have made on this host) does not exist.
fn refused(dump: &str, loaded: Result<DumpOutcome, FeedError>, refusal: &str, trace: &Path) {
    assert!(
        !trace.exists(),
        "the dump ran on this host ({} exists):\n{dump}",
        trace.display()
    );
    let err = match loaded {
        Ok(_) => panic!("a hostile dump loaded:\n{dump}"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(refusal), "{err}\nfor:\n{dump}");
}

fn have_sqlite3() -> bool {
    let ok = Command::new("sqlite3").arg("--version").output().is_ok();
    crate::support::prerequisite(ok, "sqlite3 is not installed", "apt-get install sqlite3")
}

#[test]
fn sqlite3_runs_no_command_and_touches_no_file_a_dump_names() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let other = dir.path().join("x.db");
    let (p, x) = (pwned.display(), other.display());
    let attacks = [
        (
            format!(".shell touch {p}\nCREATE TABLE t (a);\n"),
            "cannot run .shell in safe mode",
            &pwned,
        ),
        (
            format!("CREATE TABLE t (a);\n.system touch {p}\nINSERT INTO t VALUES (1);\n"),
            "cannot run .system in safe mode",
            &pwned,
        ),
        (
            format!("ATTACH '{x}' AS x;\nCREATE TABLE x.t (a);\n"),
            "cannot run ATTACH in safe mode",
            &other,
        ),
        (
            format!("CREATE TABLE t (a);\nSELECT writefile('{p}', 'owned');\n"),
            "cannot use the writefile() function in safe mode",
            &pwned,
        ),
        (
            format!(".output {p}\nSELECT 'owned';\n"),
            "cannot run .output in safe mode",
            &pwned,
        ),
    ];
    for (i, (dump, refusal, trace)) in attacks.iter().enumerate() {
        let db = dir.path().join(format!("staging-{i}.db"));
        let loaded = load(&format!("sqlite://{}", db.display()), dump.as_bytes());
        refused(dump, loaded, refusal, trace);
    }
}

#[test]
fn psql_runs_no_meta_command_a_dump_holds_even_one_that_lifts_its_own_restriction() {
    let Some(()) = crate::postgres::server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let p = pwned.display();
    let attacks = [
        // What CVE-2025-8715 let a crafted object name write into a dump.
        format!("CREATE TABLE t (i int);\n\\! touch {p}\nINSERT INTO t VALUES (1);\n"),
        // A dump that restricts and lifts its own restriction (as pg_dump's own lines do).
        format!("\\restrict abc\n\\unrestrict abc\n\\! touch {p}\n"),
        format!("CREATE TABLE t (i int);\n\\o |touch {p}\nSELECT 1;\n"),
        format!("CREATE TABLE t (i int);\n\\copy t from program 'touch {p}'\n"),
        format!("\\set x `touch {p}`\nSELECT 1;\n"),
        // After COPY data, where a key line is SQL again.
        format!(
            "CREATE TABLE t (i int);\nCOPY t (i) FROM stdin;\n1\n\\.\n\\restrict abc\n\
             \\unrestrict abc\n\\! touch {p}\n"
        ),
        // A COPY start in a string: the key lines that follow are taken for data and kept,
        // and psql refuses them.
        format!(
            "SELECT '\nCOPY t FROM stdin;\n';\n\\restrict abc\n\\unrestrict abc\n\\! touch {p}\n"
        ),
    ];
    for dump in &attacks {
        let stg = crate::postgres::Db::named("hostile");
        let loaded = load(&stg.url(), dump.as_bytes());
        refused(dump, loaded, "backslash commands are restricted", &pwned);
    }
}

#[test]
fn a_real_pg_dump_with_its_own_restrict_lines_and_backslashes_in_copy_data_still_loads() {
    let Some(()) = crate::postgres::server() else {
        return;
    };
    use crate::postgres::{Db, psql};
    let src = Db::new("src");
    // The first column starts each COPY data line: NULL (`\N`), texts that begin with a
    // backslash (written `\\…`), and one long value.
    psql(
        &src.0,
        r"CREATE TABLE t (note text, id int PRIMARY KEY);
          INSERT INTO t VALUES
            (NULL, 1),
            (E'\\restrict abc', 2),
            (E'\\unrestrict abc', 3),
            (E'\\.', 4),
            (E'\\! touch /nonexistent/pwned', 5),
            (E'\\N', 6),
            (repeat('x', 300000), 7),
            (E'two\nlines\r\n', 8)",
    );
    let out = Command::new("pg_dump")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "--no-password",
            "-d",
            &src.0,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = out.stdout;
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.lines().any(|l| l.starts_with("COPY ")) && text.lines().any(|l| l == "\\N\t1"),
        "{text}"
    );
    // pg_dump 13.22/14.19/15.14/16.10/17.6 and later write their own key lines, which the
    // load drops.
    assert!(
        text.lines().any(|l| l.starts_with("\\restrict "))
            && text.lines().any(|l| l.starts_with("\\unrestrict ")),
        "{text}"
    );
    let stg = Db::named("stg");
    let loaded = load(&stg.url(), &dump).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.bytes, dump.len() as u64);
    let rows = "SELECT id || ':' || coalesce(md5(note), 'null') FROM t ORDER BY id";
    assert_eq!(psql(&stg.0, rows), psql(&src.0, rows));
    assert_eq!(psql(&stg.0, "SELECT count(*) FROM t"), "8");
}

#[test]
fn the_mariadb_client_runs_no_command_a_dump_holds() {
    let Some(()) = crate::mysql::server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let script = dir.path().join("more.sql");
    let p = pwned.display();
    std::fs::write(&script, format!("\\! touch {p}\nsystem touch {p}\n")).unwrap();
    let s = script.display();
    let attacks = [
        (
            format!("CREATE TABLE t (i INT);\n\\! touch {p}\nINSERT INTO t VALUES (1);\n"),
            "Unknown command '\\!'",
        ),
        (
            format!("CREATE TABLE t (i INT);\nsystem touch {p}\nINSERT INTO t VALUES (1);\n"),
            "ERROR 1064",
        ),
        (
            format!("CREATE TABLE t (i INT);\n\\. {s}\n"),
            "Unknown command '\\.'",
        ),
        (
            format!("CREATE TABLE t (i INT);\nsource {s}\n"),
            "ERROR 1064",
        ),
        (format!("\\T {p}\nSELECT 1;\n"), "Unknown command '\\T'"),
    ];
    for (dump, refusal) in &attacks {
        let stg = crate::mysql::Db::named("hostile");
        let loaded = load(&stg.url("root"), dump.as_bytes());
        refused(dump, loaded, refusal, &pwned);
    }
}

/// The attack of issue 15 through the real binary: a SQLite dump starting with `.shell`, in a
/// snapshot signed with the host's own key (a compromised backup host or dump tool), restored
/// with `coffer restore --db-url` and drilled with `coffer drill`. It used to run as root and
/// report "2 of 2 tables match" / PASSED.
#[test]
fn a_shell_line_in_a_stored_dump_runs_neither_in_restore_nor_in_a_drill() {
    if !have_sqlite3() {
        return;
    }
    use chrono::Utc;
    let env = crate::support::Env::new();
    let site = env.path("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("a.txt"), b"a").unwrap();
    let staging = env.path("staging.db");
    let config = env.config(
        &site,
        "64MiB",
        &format!(
            "[drill]\nstaging_dir = \"{}\"\n[[drill.database]]\nsource = \"app\"\n\
             url = \"sqlite://{}\"\n",
            env.path("drill").display(),
            staging.display()
        ),
    );
    let pwned = env.path("pwned");
    let dump = format!(
        ".shell touch {}\nCREATE TABLE t (x INTEGER);\nINSERT INTO t VALUES (1);\n",
        pwned.display()
    );
    let store = coffer::store::LocalStore::new(env.store());
    let id = crate::support::store_stream_snapshot(
        &env,
        &store,
        &coffer::snapshot::SnapshotId::new(Utc::now()),
        Utc::now(),
        ("app", "sqlite"),
        dump.as_bytes(),
    );
    let url = format!("sqlite://{}", env.path("restored.db").display());
    let out = env.fails(
        &config,
        &[
            "restore", &id, "--source", "app", "--db-url", &url, "--create",
        ],
    );
    assert!(out.contains("safe mode"), "{out}");
    assert!(!pwned.exists(), "the dump ran a command during the restore");
    let out = env.run(&config, &["drill", &id]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("safe mode"), "{text}");
    assert!(!pwned.exists(), "the dump ran a command during the drill");
}
