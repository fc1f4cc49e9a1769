//! MariaDB/MySQL sources against the real server on this machine (127.0.0.1:3306, root, no
//! password). Each test makes and drops its own uniquely named databases and users.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::support::Env;

pub(crate) fn server() -> Option<()> {
    let ok = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "-e",
            "SELECT 1",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::support::prerequisite(
        ok,
        "MariaDB is not reachable on 127.0.0.1:3306",
        ".ci/run starts it",
    )
    .then_some(())
}

pub(crate) fn sql(db: &str, statements: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "--default-character-set=utf8mb4",
            "-N",
            "-B",
            "-D",
            db,
            "-e",
            statements,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{statements}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub(crate) struct Db(pub(crate) String);

impl Db {
    pub(crate) fn new(tag: &str) -> Db {
        let name = format!("coffer_{tag}_{:08x}", rand::random::<u32>());
        sql(
            "mysql",
            &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
        );
        Db(name)
    }
    /// A unique name, not created (a restore creates it); dropped all the same.
    pub(crate) fn named(tag: &str) -> Db {
        Db(format!("coffer_{tag}_{:08x}", rand::random::<u32>()))
    }
    pub(crate) fn url(&self, user: &str) -> String {
        format!("mysql://{user}@127.0.0.1:3306/{}", self.0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.0))
            .output();
    }
}

pub(crate) const SCHEMA: &str = r#"
SET SESSION max_recursive_iterations = 100000;
CREATE TABLE `tabSales Invoice` (
  id INT AUTO_INCREMENT PRIMARY KEY,
  note TEXT,
  bin LONGBLOB,
  amount DECIMAL(18,6),
  doc JSON,
  at DATETIME(6),
  ts TIMESTAMP NULL,
  flag TINYINT
) CHARACTER SET utf8mb4;
INSERT INTO `tabSales Invoice` (note, bin, amount, doc, at, ts, flag)
WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 50000)
SELECT IF(n % 7 = 0, NULL, CONCAT('it''s "row" ', n, '\nline two\ttab ✓ Ünïcødé 🎉 ', REPEAT('x', n % 50))),
       IF(n % 5 = 0, NULL, CONCAT(UNHEX(MD5(n)), X'00FF')),
       n * 1.000001,
       JSON_OBJECT('i', n, 'q', 'quote"d'),
       TIMESTAMP('2026-01-01 00:00:00') + INTERVAL n MINUTE + INTERVAL 123456 MICROSECOND,
       IF(n % 3 = 0, NULL, FROM_UNIXTIME(1700000000 + n)),
       n % 2
FROM seq;
CREATE VIEW paid AS SELECT id, amount FROM `tabSales Invoice` WHERE flag = 1;
CREATE TRIGGER bump BEFORE INSERT ON `tabSales Invoice` FOR EACH ROW SET NEW.amount = NEW.amount + 1;
"#;

pub(crate) fn checksum(db: &str) -> String {
    sql(
        db,
        "SET SESSION group_concat_max_len = 1073741824; \
         SELECT CONCAT(COUNT(*), ':', MD5(GROUP_CONCAT(CONCAT_WS('#', id, IFNULL(note, 'N'), \
         IFNULL(HEX(bin), 'N'), amount, doc, at, IFNULL(ts, 'N'), flag) ORDER BY id SEPARATOR '|'))) \
         FROM `tabSales Invoice`",
    )
}

fn my_config(env: &Env, url: &str, extra: &str) -> std::path::PathBuf {
    env.config_for_source(
        "my.toml",
        &format!("name = \"db\"\ntype = \"mysql\"\nurl = \"{url}\"\n{extra}"),
    )
}

#[test]
fn mariadb_round_trip_restores_identical_content() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    sql(&src.0, SCHEMA);
    let before = checksum(&src.0);
    assert!(before.starts_with("50000:"), "{before}");

    let env = Env::new();
    let config = my_config(&env, &src.url("root"), "");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let source = &v["manifest"]["sources"][0];
    assert_eq!(source["kind"], "mysql");
    assert_eq!(source["dump_tool"], "mariadb-dump");
    env.ok(&config, &["verify", "--deep"]);
    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );

    let copy = Db::new("copy");
    let load = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "--default-character-set=utf8mb4",
            "-D",
            &copy.0,
        ])
        .stdin(Stdio::from(fs::File::open(dir.join("db.sql")).unwrap()))
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(checksum(&copy.0), before);
    assert_eq!(sql(&copy.0, "SELECT COUNT(*) FROM paid"), "25000");
    sql(
        &copy.0,
        "INSERT INTO `tabSales Invoice` (id, amount) VALUES (60000, 1)",
    );
    assert_eq!(
        sql(
            &copy.0,
            "SELECT amount FROM `tabSales Invoice` WHERE id = 60000"
        ),
        "2.000000"
    );
}

#[test]
fn mariadb_password_goes_by_a_private_option_file_and_a_wrong_one_fails() {
    let Some(()) = server() else { return };
    let db = Db::new("pw");
    sql(&db.0, "CREATE TABLE t (i INT); INSERT INTO t VALUES (1)");
    let user = format!("coffer_u{:08x}", rand::random::<u32>());
    let secret = "Pa\"ss\\w0rd-s3cret";
    sql(
        "mysql",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{}'; GRANT ALL ON {}.* TO '{user}'@'%'",
            secret.replace('\\', "\\\\").replace('"', "\\\""),
            db.0
        ),
    );
    let env = Env::new();
    let record = env.path("rec");
    let tool = env.path("recording-mariadb-dump");
    fs::write(
        &tool,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec mariadb-dump --version; fi\n\
             printf '%s\\n' \"$@\" > '{r}.args'\ncnf=\"${{1#--defaults-file=}}\"\n\
             cp \"$cnf\" '{r}.cnf'; stat -c %a \"$cnf\" > '{r}.mode'; stat -c %a \"$(dirname \"$cnf\")\" > '{r}.dirmode'\n\
             exec mariadb-dump \"$@\"\n",
            r = record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let pw_file = env.path("pw");
    fs::write(&pw_file, secret).unwrap();
    let config = my_config(
        &env,
        &db.url(&user),
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
    assert!(!all.contains(secret));
    let rec = |ext: &str| fs::read_to_string(format!("{}.{ext}", record.display())).unwrap();
    let args = rec("args");
    assert!(
        !args.contains("s3cret"),
        "password on the command line: {args}"
    );
    assert!(rec("cnf").contains("s3cret"));
    assert_eq!(rec("mode").trim(), "600");
    assert_eq!(rec("dirmode").trim(), "700");
    let cnf_path = args
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("--defaults-file=");
    assert!(
        !std::path::Path::new(cnf_path).exists(),
        "the option file was removed"
    );

    // A wrong password fails the backup clearly, with no snapshot.
    fs::write(&pw_file, "wrong").unwrap();
    let before = env.ok(&config, &["list", "--json"]);
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("Access denied") && out.contains("no snapshot was written"),
        "{out}"
    );
    assert_eq!(env.ok(&config, &["list", "--json"]), before);
    sql("mysql", &format!("DROP USER '{user}'@'%'"));
}

#[test]
fn mariadb_restore_into_staging_matches_and_never_overwrites_the_source() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    sql(&src.0, SCHEMA);
    sql(&src.0, "CREATE TABLE `empty one` (i INT)");
    let before = checksum(&src.0);
    let env = Env::new();
    let config = my_config(&env, &src.url("root"), "");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let db = &v["manifest"]["sources"][0]["database"];
    assert_eq!(db["counted"], "before-dump", "{db}");
    assert!(
        db["server_version"].as_str().unwrap().contains("MariaDB"),
        "{db}"
    );
    assert_eq!(
        db["tables"],
        serde_json::json!([
            {"name": "empty one", "rows": 0, "exact": true, "rows_after": 0},
            {"name": "tabSales Invoice", "rows": 50000, "exact": true, "rows_after": 50000},
        ])
    );
    let stg = Db::named("stg");
    let url = stg.url("root");
    let out = env.ok(
        &config,
        &[
            "restore", "latest", "--source", "db", "--db-url", &url, "--create", "--json",
        ],
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let statuses: Vec<&str> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["match", "match"], "{r}");
    assert_eq!(checksum(&stg.0), before);
    assert_eq!(sql(&stg.0, "SELECT COUNT(*) FROM paid"), "25000");
    // The trigger came along.
    sql(
        &stg.0,
        "INSERT INTO `tabSales Invoice` (id, amount) VALUES (60000, 1)",
    );
    assert_eq!(
        sql(
            &stg.0,
            "SELECT amount FROM `tabSales Invoice` WHERE id = 60000"
        ),
        "2.000000"
    );
    // The manifest counted each table before and after the dump: a quiet table that comes
    // back short is a failure, not a note.
    let t = &v["manifest"]["sources"][0]["database"]["tables"][1];
    assert_eq!(t["rows_after"], 50000, "{t}");
    let lossy = env.path("lossy-mariadb");
    let stg2 = Db::named("stg2");
    fs::write(
        &lossy,
        format!(
            "#!/bin/sh\ncase \" $* \" in *' --version '*) exec mariadb \"$@\";; esac\n\
             mariadb \"$@\" || exit $?\n\
             mariadb -h 127.0.0.1 -u root -D {} -e 'DELETE FROM `tabSales Invoice` WHERE id <= 2'\n",
            stg2.0
        ),
    )
    .unwrap();
    fs::set_permissions(&lossy, fs::Permissions::from_mode(0o755)).unwrap();
    let url2 = stg2.url("root");
    let out = env.fails(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "db",
            "--db-url",
            &url2,
            "--create",
            "--client",
            lossy.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("tabSales Invoice (49998 rows instead of 50000)"),
        "{out}"
    );
    // Over the source, by another name of the same server, or in other letter case:
    // refused, source untouched.
    let upper = format!("mysql://root@127.0.0.1:3306/{}", src.0.to_uppercase());
    let out = env.fails(
        &config,
        &[
            "restore", "latest", "--source", "db", "--db-url", &upper, "--force",
        ],
    );
    assert!(out.contains("refusing to restore into"), "{out}");
    let alias = format!("mariadb://root@localhost:3306/{}", src.0);
    let out = env.fails(
        &config,
        &[
            "restore", "latest", "--source", "db", "--db-url", &alias, "--force",
        ],
    );
    assert!(out.contains("refusing to restore into"), "{out}");
    assert_eq!(checksum(&src.0), before);
    // With a table estimate above exact_count_limit the manifest says so, and a restore
    // shows the estimate without judging it.
    let config = my_config(&env, &src.url("root"), "exact_count_limit = 10");
    sql(&src.0, "ANALYZE TABLE `tabSales Invoice`");
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &v["manifest"]["sources"][0]["database"]["tables"][1];
    assert_eq!(t["exact"], false, "{t}");
    assert!(t["rows"].as_u64().unwrap() > 10, "{t}");
}

#[test]
fn a_staging_password_goes_by_option_file_and_never_shows() {
    let Some(()) = server() else { return };
    let src = Db::new("src");
    sql(
        &src.0,
        "CREATE TABLE t (i INT); INSERT INTO t VALUES (1), (2)",
    );
    let stg = Db::new("stg");
    let user = format!("coffer_s{:08x}", rand::random::<u32>());
    let secret = "Stag1ng-s3cret-pw";
    sql(
        "mysql",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'; GRANT ALL ON {}.* TO '{user}'@'%'",
            stg.0
        ),
    );
    let env = Env::new();
    let config = my_config(&env, &src.url("root"), "");
    env.backup(&config);
    let record = env.path("rec");
    let client = env.path("recording-mariadb");
    fs::write(
        &client,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{r}.args'\nexec mariadb \"$@\"\n",
            r = record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&client, fs::Permissions::from_mode(0o755)).unwrap();
    let pw = env.path("stg-pw");
    fs::write(&pw, format!("{secret}\n")).unwrap();
    let url = stg.url(&user);
    let restore = |pw: &std::path::Path| {
        env.run(
            &config,
            &[
                "restore",
                "latest",
                "--source",
                "db",
                "--db-url",
                &url,
                "--db-password-file",
                pw.to_str().unwrap(),
                "--client",
                client.to_str().unwrap(),
            ],
        )
    };
    let out = restore(&pw);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("1 of 1 tables match"), "{all}");
    assert!(!all.contains("s3cret"), "{all}");
    let args = fs::read_to_string(format!("{}.args", record.display())).unwrap();
    assert!(
        args.starts_with("--defaults-file=") && !args.contains("s3cret"),
        "{args}"
    );
    assert_eq!(sql(&stg.0, "SELECT COUNT(*) FROM t"), "2");
    // A wrong password: a clear refusal that does not echo what was given.
    let bad = env.path("bad-pw");
    fs::write(&bad, "Wr0ng-s3cret").unwrap();
    let out = restore(&bad);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        all.contains("Access denied") && all.contains("check the user and the password"),
        "{all}"
    );
    assert!(!all.contains("s3cret"), "{all}");
    sql("mysql", &format!("DROP USER '{user}'@'%'"));
}

#[test]
fn a_killed_dump_or_an_unreachable_server_fails_with_no_snapshot() {
    let Some(()) = server() else { return };
    let db = Db::new("kill");
    sql(&db.0, "CREATE TABLE t (i INT); INSERT INTO t VALUES (1)");
    let env = Env::new();
    // mariadb-dump killed after its output started.
    let tool = env.path("dying-mariadb-dump");
    fs::write(
        &tool,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec mariadb-dump --version; fi\n\
         printf 'CREATE TABLE t (i int);\\n'\nhead -c 300000 /dev/urandom\nkill -9 $$\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let config = my_config(
        &env,
        &db.url("root"),
        &format!("dump_tool = \"{}\"", tool.display()),
    );
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("killed by signal 9") && out.contains("no snapshot was written"),
        "{out}"
    );
    // Nothing reachable on that port.
    let config = my_config(&env, "mysql://root@127.0.0.1:1/nothing", "");
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("cannot connect to mysql://root@127.0.0.1:1/nothing")
            && out.contains("is the server running"),
        "{out}"
    );
    assert_eq!(env.ok(&config, &["list", "--json"]).trim(), "[]");
    let snapshots = env.store().join("snapshots");
    assert!(!snapshots.exists() || fs::read_dir(&snapshots).unwrap().count() == 0);
}

/// What a restore into a system database could change: the server's databases (other tests'
/// own `coffer_…` ones come and go meanwhile) and the tables of its own databases.
fn system_state() -> String {
    sql(
        "mysql",
        "SELECT GROUP_CONCAT(SCHEMA_NAME ORDER BY SCHEMA_NAME) FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME NOT LIKE 'coffer\\_%'; \
         SELECT TABLE_SCHEMA, COUNT(*), MD5(GROUP_CONCAT(TABLE_NAME, ':', TABLE_TYPE ORDER BY TABLE_NAME)) \
         FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA IN ('mysql', 'sys', 'performance_schema', 'information_schema') \
         GROUP BY TABLE_SCHEMA ORDER BY TABLE_SCHEMA",
    )
}

#[test]
fn every_mariadb_system_database_is_refused_whatever_the_flags() {
    let Some(()) = server() else { return };
    let src = Db::new("syssrc");
    let table = format!("coffer_sys_{:08x}", rand::random::<u32>());
    sql(
        &src.0,
        &format!("CREATE TABLE {table} (i INT); INSERT INTO {table} VALUES (1)"),
    );
    let env = Env::new();
    let config = my_config(&env, &src.url("root"), "");
    env.backup(&config);
    let before = system_state();
    assert!(before.contains("performance_schema"), "{before}");
    let flag_sets: [&[&str]; 4] = [
        &[],
        &["--create"],
        &["--force"],
        &["--create", "--force", "--overwrite-source-database"],
    ];
    for system in ["mysql", "sys", "performance_schema", "information_schema"] {
        let url = format!("mysql://root@127.0.0.1:3306/{system}");
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
                "name = \"db\"\ntype = \"mysql\"\nurl = \"{}\"\n\
                 [[drill.database]]\nsource = \"db\"\nurl = \"{url}\"\n",
                src.url("root")
            ),
        );
        let out = env.fails(&drill, &["drill"]);
        assert!(
            out.contains(&format!("{system} is the server's own database")),
            "drill into {system}: {out}"
        );
    }
    assert_eq!(system_state(), before, "nothing was changed");
    assert_eq!(
        sql(
            "mysql",
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = '{table}' \
                 AND TABLE_SCHEMA <> '{}'",
                src.0
            )
        ),
        "0"
    );
}
