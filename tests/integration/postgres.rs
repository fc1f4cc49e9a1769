//! PostgreSQL sources against the real server on this machine (127.0.0.1:5432, user postgres).
//! Each test makes and drops its own uniquely named databases.

use std::fs;
use std::process::Command;

use crate::support::Env;

/// The server, or `None` (a skip) outside CI; under CI a missing server is a failure.
pub(crate) fn server() -> Option<()> {
    let ok = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            "select 1",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::support::prerequisite(
        ok,
        "PostgreSQL is not reachable on 127.0.0.1:5432",
        ".ci/run starts it",
    )
    .then_some(())
}

pub(crate) fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-tAq",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A database that is dropped when the test ends.
pub(crate) struct Db(pub(crate) String);

impl Db {
    pub(crate) fn new(tag: &str) -> Db {
        let name = format!("coffer_{tag}_{:08x}", rand::random::<u32>());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Db(name)
    }
    /// A unique name, not created (a restore creates it); dropped all the same.
    pub(crate) fn named(tag: &str) -> Db {
        Db(format!("coffer_{tag}_{:08x}", rand::random::<u32>()))
    }
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE "tabSales Invoice" (
    id bigserial PRIMARY KEY,
    note text,
    blob bytea,
    amount numeric(18,6),
    doc jsonb,
    at timestamptz,
    flag boolean
);
INSERT INTO "tabSales Invoice" (note, blob, amount, doc, at, flag)
SELECT CASE WHEN i % 7 = 0 THEN NULL
            ELSE 'it''s "row" ' || i || E'\nline two\ttab ✓ Ünïcødé 🎉 ' || repeat('x', i % 50) END,
       CASE WHEN i % 5 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') || '\x00ff'::bytea END,
       (i * 1.000001)::numeric(18,6),
       jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i % 3), 'q', 'quote"d'),
       timestamptz '2026-01-01 00:00:00+03' + (i || ' minutes')::interval,
       i % 2 = 0
FROM generate_series(1, 50000) AS i;
CREATE VIEW paid AS SELECT id, amount FROM "tabSales Invoice" WHERE flag;
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.amount := NEW.amount + 1; RETURN NEW; END $$;
CREATE TRIGGER bump_amount BEFORE INSERT ON "tabSales Invoice" FOR EACH ROW EXECUTE FUNCTION bump();
"#;

/// An ordered checksum of a table's whole content.
pub(crate) fn checksum(db: &str) -> String {
    psql(
        db,
        r#"SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM "tabSales Invoice" t"#,
    )
}

fn pg_config(env: &Env, url: &str, extra: &str) -> std::path::PathBuf {
    env.config_for_source(
        "pg.toml",
        &format!("name = \"db\"\ntype = \"postgres\"\nurl = \"{url}\"\n{extra}"),
    )
}

#[test]
fn postgres_round_trip_restores_identical_content() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    psql(&src.0, SCHEMA);
    let before = checksum(&src.0);
    assert!(before.starts_with("50000:"));

    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let source = &v["manifest"]["sources"][0];
    assert_eq!(source["kind"], "postgres");
    assert_eq!(source["stream"], "db.sql.gz.age");
    assert!(
        source["dump_tool_version"]
            .as_str()
            .unwrap()
            .contains("pg_dump")
    );
    assert!(source["parts"].as_array().unwrap().len() > 1);
    env.ok(&config, &["verify", "--deep"]);

    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );
    let dump = dir.join("db.sql");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Load the dump into a fresh database with stock psql and compare content.
    let copy = Db::new("copy");
    let load = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            &copy.0,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
        ])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(checksum(&copy.0), before);
    assert_eq!(psql(&copy.0, "SELECT count(*) FROM paid"), "25000");
    // The trigger came along: an insert is bumped by one.
    psql(
        &copy.0,
        r#"INSERT INTO "tabSales Invoice" (id, amount) VALUES (0, 1)"#,
    );
    assert_eq!(
        psql(
            &copy.0,
            r#"SELECT amount FROM "tabSales Invoice" WHERE id = 0"#
        ),
        "2.000000"
    );
}

#[test]
fn a_failing_dump_leaves_no_snapshot_and_says_why() {
    let Some(()) = server() else { return };
    let env = Env::new();
    // Unreachable server: the pre-flight connection says so before pg_dump runs.
    let config = pg_config(&env, "postgres://postgres@127.0.0.1:1/nothing", "");
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("cannot connect to postgres://postgres@127.0.0.1:1/nothing")
            && out.contains("is the server running"),
        "{out}"
    );
    assert!(out.contains("no snapshot was written"), "{out}");
    // A dump tool killed halfway, after output already flowed.
    let tool = env.path("dying-pg_dump");
    fs::write(
        &tool,
        "#!/bin/sh\nprintf 'CREATE TABLE t (i int);\\n'\nhead -c 300000 /dev/urandom\nkill -9 $$\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let config = pg_config(
        &env,
        "postgres://postgres@127.0.0.1:5432/postgres",
        &format!("dump_tool = \"{}\"", tool.display()),
    );
    let out = env.fails(&config, &["backup"]);
    assert!(out.contains("killed by signal 9"), "{out}");
    assert!(env.ok(&config, &["list", "--json"]).trim() == "[]");
    assert!(
        !env.store().join("snapshots").exists()
            || fs::read_dir(env.store().join("snapshots")).unwrap().count() == 0
    );
}

#[test]
fn the_password_goes_by_environment_never_by_argument() {
    let Some(()) = server() else { return };
    let env = Env::new();
    let secret = "Sup3r-s3cret-pw";
    let pw_file = env.path("pg-password");
    fs::write(&pw_file, format!("{secret}\n")).unwrap();
    // A stand-in pg_dump that records what it was given, then dumps for real.
    let record = env.path("record");
    let tool = env.path("recording-pg_dump");
    fs::write(
        &tool,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec pg_dump --version; fi\n\
             printf '%s\\n' \"$@\" > '{r}.args'\nprintf '%s' \"$PGPASSWORD\" > '{r}.env'\nexec pg_dump \"$@\"\n",
            r = record.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let db = Db::new("pw");
    psql(&db.0, "CREATE TABLE t (i int); INSERT INTO t VALUES (1)");
    let config = pg_config(
        &env,
        &db.url(),
        &format!(
            "password_file = \"{}\"\ndump_tool = \"{}\"",
            pw_file.display(),
            tool.display()
        ),
    );
    let out = env.run(&config, &["backup"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains(secret),
        "the password leaked into the output: {all}"
    );
    let args = fs::read_to_string(format!("{}.args", record.display())).unwrap();
    assert!(
        !args.contains(secret),
        "password on the command line: {args}"
    );
    assert!(args.contains("--no-password"));
    assert_eq!(
        fs::read_to_string(format!("{}.env", record.display())).unwrap(),
        secret
    );
    // A url with a password inside is refused outright.
    let bad = pg_config(
        &env,
        &format!("postgres://postgres:{secret}@127.0.0.1/x"),
        "",
    );
    let out = env.fails(&bad, &["backup"]);
    assert!(
        out.contains("password_file") && !out.contains(secret),
        "{out}"
    );
}

/// The restore's JSON report.
fn report(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn postgres_restore_into_staging_matches_and_never_overwrites_the_source() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    psql(&src.0, SCHEMA);
    let before = checksum(&src.0);
    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let db = &v["manifest"]["sources"][0]["database"];
    assert_eq!(db["counted"], "snapshot", "{db}");
    assert!(
        db["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert_eq!(
        db["tables"],
        serde_json::json!([{"name": "public.tabSales Invoice", "rows": 50000, "exact": true}])
    );

    let stg = Db::named("stg");
    let url = stg.url();
    let restore = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["restore", "latest", "--source", "db", "--db-url", &url];
        a.extend_from_slice(extra);
        a.iter().map(ToString::to_string).collect()
    };
    // Missing: only with --create.
    let out = env.fails(&config, &strs(&restore(&[])));
    assert!(
        out.contains("does not exist") && out.contains("--create"),
        "{out}"
    );
    let out = env.ok(&config, &strs(&restore(&["--create", "--json"])));
    let r = report(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["prepared"], "created");
    assert_eq!(r["tables"][0]["status"], "match");
    assert_eq!(r["tables"][0]["restored"], 50000);
    assert_eq!(checksum(&stg.0), before);
    assert_eq!(psql(&stg.0, "SELECT count(*) FROM paid"), "25000");
    // Not empty now: only with --force, which drops and re-creates it.
    psql(&stg.0, r#"DELETE FROM "tabSales Invoice" WHERE id > 10"#);
    let out = env.fails(&config, &strs(&restore(&[])));
    assert!(
        out.contains("not empty") && out.contains("--force"),
        "{out}"
    );
    let out = env.ok(&config, &strs(&restore(&["--force"])));
    assert!(
        out.contains("dropped and re-created") && out.contains("1 of 1 tables match"),
        "{out}"
    );
    assert_eq!(checksum(&stg.0), before);

    // The source itself, even by another name for the same server, is refused, even with
    // --force; the source is untouched.
    psql(
        &src.0,
        r#"INSERT INTO "tabSales Invoice" (id, amount) VALUES (0, 1)"#,
    );
    let changed = checksum(&src.0);
    let alias = format!("postgres://postgres@localhost/{}", src.0);
    let out = env.fails(
        &config,
        &[
            "restore", "latest", "--source", "db", "--db-url", &alias, "--force",
        ],
    );
    assert!(
        out.contains("refusing to restore into") && out.contains("--overwrite-source-database"),
        "{out}"
    );
    assert_eq!(checksum(&src.0), changed);
    // A dump of another engine is refused before anything happens.
    let out = env.fails(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "db",
            "--db-url",
            "mysql://root@127.0.0.1/x",
        ],
    );
    assert!(out.contains("is a postgres dump"), "{out}");
}

#[test]
fn a_restore_that_loses_rows_fails_the_comparison_and_names_the_table() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    psql(
        &src.0,
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 10); CREATE TABLE u (i int)",
    );
    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    env.backup(&config);
    let stg = Db::named("stg");
    // A client that loads the dump, then loses three rows.
    let client = env.path("lossy-psql");
    fs::write(
        &client,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec psql --version; fi\n\
             psql \"$@\" || exit $?\n\
             psql -h 127.0.0.1 -U postgres -d {} -qc 'DELETE FROM t WHERE i <= 3'\n",
            stg.0
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&client, fs::Permissions::from_mode(0o755)).unwrap();
    let url = stg.url();
    let out = env.fails(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "db",
            "--db-url",
            &url,
            "--create",
            "--client",
            client.to_str().unwrap(),
        ],
    );
    assert!(out.contains("MISMATCH"), "{out}");
    assert!(
        out.contains("does not match snapshot") && out.contains("public.t (7 rows instead of 10)"),
        "{out}"
    );
    assert!(!out.contains("public.u ("), "{out}");
}

#[test]
fn postgres_counts_come_from_the_snapshot_the_dump_reads() {
    let Some(()) = server() else { return };
    let src = Db::new("live");
    psql(
        &src.0,
        "CREATE TABLE busy (i bigint, pad text); \
         INSERT INTO busy SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g",
    );
    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    // A writer inserts without pause all through the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), src.0.clone());
        std::thread::spawn(move || {
            let mut batches = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                psql(
                    &db,
                    "INSERT INTO busy SELECT g, 'w' FROM generate_series(1, 500) g",
                );
                batches += 1;
            }
            batches
        })
    };
    // Bounded: a writer that died (a failed psql) must fail the test, not hang it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while psql(&src.0, "SELECT count(*) FROM busy") == "300000" {
        assert!(
            !writer.is_finished(),
            "the writer stopped before writing a row"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the writer wrote no row in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = env.ok(&config, &["backup", "--json"]);
    let during = psql(&src.0, "SELECT count(*) FROM busy");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = writer.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let recorded = v["manifest"]["sources"][0]["database"]["tables"][0]["rows"]
        .as_u64()
        .unwrap();
    assert!(batches > 2, "the writer ran during the backup");
    assert!(
        recorded > 300_000 && recorded < during.parse::<u64>().unwrap(),
        "counted mid-stream: {recorded} (after the backup: {during})"
    );
    // The restore has exactly the recorded rows: the count and the dump read one snapshot.
    let stg = Db::named("stg");
    let url = stg.url();
    let out = env.ok(
        &config,
        &[
            "restore", "latest", "--source", "db", "--db-url", &url, "--create", "--json",
        ],
    );
    let r = report(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["tables"][0]["status"], "match", "{r}");
    assert_eq!(r["tables"][0]["restored"].as_u64(), Some(recorded));
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_load_that_breaks_midway_leaves_the_staging_database_empty() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    psql(&src.0, SCHEMA);
    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    let id = env.backup(&config);
    // Damage the last part of the dump stream: the load has committed nothing by then.
    let dir = env.store().join("snapshots").join(&id);
    let mut parts: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("db.sql.gz.age."))
        .collect();
    parts.sort();
    assert!(parts.len() >= 3, "{parts:?}");
    let last = parts.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(last, &bytes).unwrap();
    let stg = Db::named("stg");
    let url = stg.url();
    let out = env.fails(
        &config,
        &[
            "restore", "latest", "--source", "db", "--db-url", &url, "--create",
        ],
    );
    let name = last.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.contains(&name) && out.contains("the load was stopped"),
        "{out}"
    );
    // psql ran it as one transaction: nothing of it stayed.
    assert_eq!(
        psql(
            &stg.0,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public'"
        ),
        "0"
    );
}

#[test]
fn nothing_is_dropped_before_the_restore_is_known_to_work_and_system_databases_are_refused() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    psql(&src.0, "CREATE TABLE t (i int); INSERT INTO t VALUES (1)");
    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    env.backup(&config);
    let stg = Db::new("stg");
    psql(
        &stg.0,
        "CREATE TABLE keep (i int); INSERT INTO keep VALUES (42)",
    );
    let url = stg.url();
    // A client that cannot run: refused before --force drops anything.
    let out = env.fails(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "db",
            "--db-url",
            &url,
            "--force",
            "--client",
            "/nonexistent/psql",
        ],
    );
    assert!(
        out.contains("cannot run /nonexistent/psql") && out.contains("--client"),
        "{out}"
    );
    assert_eq!(psql(&stg.0, "SELECT i FROM keep"), "42");
    // A key that does not match: the same.
    let other = env.path("other-key.txt");
    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["keygen", "--output", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let out = env.fails(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "db",
            "--db-url",
            &url,
            "--force",
            "--identity",
            other.to_str().unwrap(),
        ],
    );
    assert!(out.contains("no identity"), "{out}");
    assert_eq!(psql(&stg.0, "SELECT i FROM keep"), "42");
    // The server's own databases, whatever the flags.
    for system in ["postgres", "template1"] {
        let url = format!("postgres://postgres@127.0.0.1:5432/{system}");
        let out = env.fails(
            &config,
            &[
                "restore",
                "latest",
                "--source",
                "db",
                "--db-url",
                &url,
                "--force",
                "--overwrite-source-database",
            ],
        );
        assert!(out.contains("the server's own database"), "{out}");
    }
}

/// What a restore into a system database could change: the server's databases (other tests'
/// own `coffer_…` ones come and go meanwhile) and the objects in `public` of those one can
/// connect to.
fn system_state() -> Vec<String> {
    let mut state = vec![psql(
        "postgres",
        "SELECT string_agg(datname || ':' || datallowconn, ',' ORDER BY datname) \
         FROM pg_database WHERE datname NOT LIKE 'coffer\\_%'",
    )];
    for db in ["postgres", "template1"] {
        state.push(psql(
            db,
            "SELECT count(*) || ':' || coalesce(string_agg(relname, ',' ORDER BY relname), '') \
             FROM pg_class WHERE relnamespace = 'public'::regnamespace",
        ));
    }
    state
}

#[test]
fn every_postgres_system_database_is_refused_whatever_the_flags() {
    let Some(()) = server() else { return };
    let src = Db::new("syssrc");
    let table = format!("coffer_sys_{:08x}", rand::random::<u32>());
    psql(
        &src.0,
        &format!("CREATE TABLE {table} (i int); INSERT INTO {table} VALUES (1)"),
    );
    let env = Env::new();
    let config = pg_config(&env, &src.url(), "");
    env.backup(&config);
    let before = system_state();
    let flag_sets: [&[&str]; 4] = [
        &[],
        &["--create"],
        &["--force"],
        &["--create", "--force", "--overwrite-source-database"],
    ];
    for system in ["postgres", "template0", "template1"] {
        let url = format!("postgres://postgres@127.0.0.1:5432/{system}");
        for flags in flag_sets {
            let mut args = vec!["restore", "latest", "--source", "db", "--db-url", &url];
            args.extend_from_slice(flags);
            let out = env.fails(&config, &args);
            assert!(
                out.contains(&format!(
                    "{system} is the server's own database; name a staging database"
                )),
                "{system} {flags:?}: {out}"
            );
        }
        // A drill's staging database is refused the same way.
        let drill = env.config_for_source(
            &format!("drill-{system}.toml"),
            &format!(
                "name = \"db\"\ntype = \"postgres\"\nurl = \"{}\"\n\
                 [[drill.database]]\nsource = \"db\"\nurl = \"{url}\"\n",
                src.url()
            ),
        );
        let out = env.fails(&drill, &["drill"]);
        assert!(
            out.contains(&format!("{system} is the server's own database")),
            "drill into {system}: {out}"
        );
    }
    assert_eq!(system_state(), before, "nothing was changed");
    for db in ["postgres", "template1"] {
        assert_eq!(
            psql(
                db,
                &format!("SELECT count(*) FROM pg_class WHERE relname = '{table}'")
            ),
            "0"
        );
    }
}
