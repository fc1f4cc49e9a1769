//! Restore drills end to end: a snapshot restored into staging targets and checked, with the
//! report's timings; and each way a drill must fail, failing and naming its cause.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::Env;
use crate::support::sinks::HttpSink;

fn have_sqlite3() -> bool {
    let ok = Command::new("sqlite3").arg("--version").output().is_ok();
    crate::support::prerequisite(ok, "sqlite3 is not installed", "apt-get install sqlite3")
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A site folder (source `files`) and the fixture SQLite app (source `app`: 200 customers,
/// 1000 invoices, 333 paid), with a drill loading the app into a staging file.
struct Drill {
    env: Env,
    config: PathBuf,
    site: PathBuf,
    app: PathBuf,
    staging_db: PathBuf,
}

impl Drill {
    fn new(probes: &[&str], extra: &str) -> Drill {
        let env = Env::new();
        let site = env.path("site");
        crate::support::rich_site(&site);
        let app = env.path("app.sqlite");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite"),
            &app,
        )
        .unwrap();
        let staging_db = env.path("staging-app.db");
        let probes: Vec<String> = probes.iter().map(|p| format!("{p:?}")).collect();
        let config = env.config(
            &site,
            "16KiB",
            &format!(
                "[[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\n\
                 [drill]\nstaging_dir = \"{}\"\n\
                 [[drill.database]]\nsource = \"app\"\nurl = \"sqlite://{}\"\nprobes = [{}]\n\
                 {extra}",
                app.display(),
                env.path("drill").display(),
                staging_db.display(),
                probes.join(", ")
            ),
        );
        Drill {
            env,
            config,
            site,
            app,
            staging_db,
        }
    }

    fn drill_json(&self, args: &[&str]) -> (bool, serde_json::Value) {
        let mut all = vec!["drill", "--json"];
        all.extend_from_slice(args);
        let out = self.env.run(&self.config, &all);
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "drill --json printed no report ({e}):\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), v)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.env
            .store()
            .join("snapshots")
            .join(id)
            .join("manifest.json")
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.env.ok(&self.config, &["status", "--json"])).unwrap()
    }
}

fn source<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {report:#}"))
}

fn drill_job(status: &serde_json::Value) -> &serde_json::Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "drill")
        .unwrap_or_else(|| panic!("no drill job in {status:#}"))
}

#[test]
fn a_drill_restores_files_and_database_into_staging_checks_them_and_reports_timings() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(&["SELECT count(*) FROM invoice WHERE paid = 1"], "");
    // `coffer check` looks at the drill set-up before the first drill.
    let check = d.env.ok(&d.config, &["check"]);
    assert!(
        check.contains("ok   drill.staging_dir") && check.contains("ok   drill.database 'app'"),
        "{check}"
    );
    let id = d.env.backup(&d.config);
    let (ok, r) = d.drill_json(&[]);
    assert!(ok, "{r:#}");
    assert_eq!(r["snapshot"], id.as_str());
    assert_eq!(r["failures"].as_array().unwrap().len(), 0, "{r:#}");
    assert!(r["recovery_time_seconds"].as_f64().unwrap() > 0.0, "{r:#}");
    assert!(
        r["recovery_point_seconds"].as_f64().unwrap() >= 0.0,
        "{r:#}"
    );
    let stages = &r["stages"];
    for stage in [
        "download",
        "decrypt_decompress",
        "database_load",
        "file_extract",
        "checks",
    ] {
        assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {r:#}");
    }
    // The stages add up to no more than the whole (decryption overlaps the restore).
    let sum: f64 = ["download", "database_load", "file_extract", "checks"]
        .iter()
        .map(|s| stages[*s].as_f64().unwrap())
        .sum();
    assert!(
        sum <= r["recovery_time_seconds"].as_f64().unwrap() + 0.01,
        "{r:#}"
    );

    // The folder: byte for byte the site, and the counts the manifest recorded.
    let files = source(&r, "files");
    assert_eq!(files["restored"], "extracted");
    assert_eq!(files["files"]["restored"], files["files"]["expected"]);
    assert_eq!(
        files["files"]["restored_file_bytes"],
        files["files"]["expected_file_bytes"]
    );
    crate::support::assert_same_tree(&d.site, &d.env.path("drill/files"));
    assert_eq!(files["files"]["hash_check"], "all");
    assert_eq!(
        files["files"]["hashed"],
        files["files"]["expected"]["files"]
    );
    assert_eq!(files["files"]["hash_failures"], 0);

    // The database: every table's count, the probe's value, the rows themselves.
    let app = &source(&r, "app")["database"];
    let tables = app["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2, "{app:#}");
    assert!(tables.iter().all(|t| t["status"] == "match"), "{app:#}");
    assert_eq!(app["probes"][0]["ok"], true);
    assert_eq!(app["probes"][0]["value"], "333");
    assert_eq!(
        sqlite(&d.staging_db, "SELECT count(*), sum(total) FROM invoice"),
        sqlite(&d.app, "SELECT count(*), sum(total) FROM invoice")
    );
    // The download spool is gone; the staging folder is private.
    assert!(!d.env.path("drill/.download").exists());
    let mode = fs::metadata(d.env.path("drill"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the staging folder is {mode:o}");

    // The run history keeps the figures; status shows them.
    let status = d.status();
    let last = &drill_job(&status)["last_success"];
    assert_eq!(last["snapshot"], id.as_str());
    assert!(last["report"]["recovery_time_seconds"].as_f64().unwrap() > 0.0);
    let text = d.env.ok(&d.config, &["status"]);
    assert!(text.contains("recovery time"), "{text}");

    // A second drill replaces what the first restored (a file added there is gone).
    fs::write(d.env.path("drill/files/stray.txt"), "left over").unwrap();
    let human = d.env.ok(&d.config, &["drill"]);
    assert!(human.contains("PASSED"), "{human}");
    assert!(
        human.contains("recovery time") && human.contains("recovery point"),
        "{human}"
    );
    assert!(!d.env.path("drill/files/stray.txt").exists());

    // A staging host's config: the same store and key, no sources (nothing to back up there).
    let staging_cfg = d.env.path("staging.toml");
    fs::write(
        &staging_cfg,
        format!(
            "state_dir = \"staging-state\"\n[encryption]\nrecipients = [\"{}\"]\n\
             identity_file = \"{}\"\ntrusted_signers = [\"{}\"]\n\
             [store]\ntype = \"local\"\npath = \"store\"\n\
             [drill]\nstaging_dir = \"staging-drill\"\n",
            d.env.recipient,
            d.env.identity.display(),
            d.env.signer_line()
        ),
    )
    .unwrap();
    let out = d.env.ok(&staging_cfg, &["drill"]);
    assert!(
        out.contains("PASSED") && out.contains("'app' (sqlite) was decrypted"),
        "{out}"
    );
    crate::support::assert_same_tree(&d.site, &d.env.path("staging-drill/files"));
    let out = d.env.fails(&staging_cfg, &["backup"]);
    assert!(out.contains("nothing to back up"), "{out}");
}

#[test]
fn a_tampered_part_stops_the_drill_naming_the_part_before_staging_is_touched() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(&[], "");
    let id = d.env.backup(&d.config);
    let parts = d.env.parts(&id);
    assert!(parts.len() >= 3, "want several parts, got {}", parts.len());
    let mut bytes = fs::read(&parts[1]).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&parts[1], bytes).unwrap();
    let out = d.env.fails(&d.config, &["drill"]);
    assert!(
        out.contains("files.tar.gz.age.00002") && out.contains("corrupted"),
        "{out}"
    );
    assert!(out.contains(&id), "{out}");
    assert!(!d.staging_db.exists(), "the staging database was touched");
    assert!(!d.env.path("drill/files").exists());
    assert!(!d.env.path("drill/.download").exists());
    let status = d.status();
    let failure = drill_job(&status)["last_failure"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(failure.contains("files.tar.gz.age.00002"), "{failure}");
}

#[test]
fn a_missing_table_and_a_row_count_that_differs_fail_the_drill_naming_each() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(&[], "");
    let id = d.env.backup(&d.config);
    // What a restore that lost rows and a table looks like: the manifest recorded more.
    let path = d.manifest_path(&id);
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let app = m["sources"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "app")
        .unwrap();
    let tables = app["database"]["tables"].as_array_mut().unwrap();
    for t in tables.iter_mut() {
        if t["name"] == "invoice" {
            t["rows"] = 1001.into();
        }
    }
    tables.push(serde_json::json!({"name": "ledger", "rows": 5, "exact": true}));
    d.env
        .write_signed_manifest(&path, &serde_json::to_vec_pretty(&m).unwrap());

    let (ok, r) = d.drill_json(&[]);
    assert!(!ok);
    let failures: Vec<&str> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(
        failures
            .iter()
            .any(|f| f.contains("table ledger is missing")),
        "{failures:#?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("table invoice has 1000 rows")
                && f.contains("the backup recorded 1001")),
        "{failures:#?}"
    );
    let human = d.env.fails(&d.config, &["drill"]);
    assert!(human.contains("FAILED (2 checks)"), "{human}");
    assert!(human.contains("table ledger is missing"), "{human}");
}

#[test]
fn a_failing_sql_probe_fails_the_drill_naming_the_probe_and_what_it_returned() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(
        &[
            "SELECT count(*) FROM customer",
            "SELECT count(*) FROM invoice WHERE paid = 7",
            "SELECT count(*) FROM ledger",
        ],
        "",
    );
    d.env.backup(&d.config);
    let (ok, r) = d.drill_json(&[]);
    assert!(!ok);
    let probes = &source(&r, "app")["database"]["probes"];
    assert_eq!(probes[0]["ok"], true, "{probes:#}");
    assert_eq!(probes[0]["value"], "200");
    assert_eq!(probes[1]["ok"], false);
    assert_eq!(probes[1]["value"], "0");
    assert!(
        probes[2]["error"]
            .as_str()
            .unwrap()
            .contains("no such table"),
        "{probes:#}"
    );
    let failures = r["failures"].to_string();
    assert!(
        failures.contains("probe `SELECT count(*) FROM invoice WHERE paid = 7` returned 0"),
        "{failures}"
    );
    assert!(failures.contains("FROM ledger` failed"), "{failures}");
    assert!(!failures.contains("FROM customer"), "{failures}");
}

#[test]
fn the_http_probe_sends_the_token_and_a_wrong_answer_fails_the_drill() {
    if !have_sqlite3() {
        return;
    }
    const TOKEN: &str = "k3y1d:s3cr3t-t0k3n";
    let token_file = |env: &Env| {
        let p = env.path("api-token");
        fs::write(&p, format!("{TOKEN}\n")).unwrap();
        p
    };
    let http = |port: u16, file: &Path| {
        format!(
            "[drill.http]\nurl = \"http://127.0.0.1:{port}/api/method/ping\"\n\
             token_file = \"{}\"\nexpect_body = \"pong\"\ntimeout = \"3s\"\n",
            file.display()
        )
    };
    // The application answers as Frappe does.
    let app = HttpSink::answering(200, r#"{"message":"pong"}"#);
    let env_probe = Env::new();
    let file = token_file(&env_probe);
    let d = Drill::new(&[], &http(app.port, &file));
    d.env.backup(&d.config);
    let (ok, r) = d.drill_json(&[]);
    assert!(ok, "{r:#}");
    assert_eq!(r["http"]["status"], 200);
    let seen = app.requests();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/api/method/ping");
    let auth = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    assert_eq!(auth, Some(format!("token {TOKEN}").as_str()));

    // An application that is down behind its proxy fails the drill, named, token unshown.
    let broken = HttpSink::answering(502, "Bad Gateway");
    let d = Drill::new(&[], &http(broken.port, &file));
    d.env.backup(&d.config);
    let out = d.env.run(&d.config, &["drill"]);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("answered 502, expected 200"), "{text}");
    assert!(text.contains("/api/method/ping"), "{text}");
    assert!(!text.contains("s3cr3t"), "the token was printed: {text}");
    assert!(broken.requests().len() >= 2, "the probe did not retry");
}

#[test]
fn a_drill_with_an_identity_that_does_not_match_fails_and_loads_nothing() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(&[], "");
    d.env.backup(&d.config);
    let other = d.env.path("other-identity.txt");
    coffer::keys::generate(&other).unwrap();
    let out = d
        .env
        .fails(&d.config, &["drill", "--identity", other.to_str().unwrap()]);
    assert!(out.contains("no identity in"), "{out}");
    assert!(out.contains(&d.env.recipient), "{out}");
    assert!(!d.staging_db.exists(), "the staging database was touched");
    assert!(!d.env.path("drill/.download").exists());
}

#[test]
fn the_guards_refuse_a_staging_target_that_is_the_source() {
    if !have_sqlite3() {
        return;
    }
    // Named as the source itself: the config is refused.
    let env = Env::new();
    let site = env.path("site");
    crate::support::rich_site(&site);
    let app = env.path("app.sqlite");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite"),
        &app,
    )
    .unwrap();
    let cfg = |url: &str, staging_dir: &Path| {
        env.config(
            &site,
            "64KiB",
            &format!(
                "[[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\n\
                 [drill]\nstaging_dir = \"{}\"\n\
                 [[drill.database]]\nsource = \"app\"\nurl = \"{url}\"\n",
                app.display(),
                staging_dir.display()
            ),
        )
    };
    let config = cfg(&format!("sqlite://{}", app.display()), &env.path("drill"));
    let out = env.fails(&config, &["drill"]);
    assert!(out.contains("is the source database itself"), "{out}");
    // The staging folder may not hold (or be) a backed-up folder.
    let config = cfg("sqlite:///tmp/unused.db", &site.join("drill"));
    let out = env.fails(&config, &["drill"]);
    assert!(out.contains("overlaps source 'files'"), "{out}");

    // The default staging folder (in the state folder) inside a backed-up folder: refused
    // when a drill runs (a config that never drills is not refused for it).
    let whole = env.config(env.dir.path(), "64KiB", "");
    let out = env.fails(&whole, &["drill"]);
    assert!(out.contains("overlaps source 'files'"), "{out}");

    // Reached by another name (a symlink): refused when the drill runs, the source intact.
    let alias = env.path("alias.sqlite");
    std::os::unix::fs::symlink(&app, &alias).unwrap();
    let config = cfg(&format!("sqlite://{}", alias.display()), &env.path("drill"));
    env.backup(&config);
    let before = sqlite(&app, "SELECT count(*) FROM invoice");
    let out = env.fails(&config, &["drill"]);
    assert!(out.contains("refusing to drill into"), "{out}");
    assert!(!out.contains("--overwrite-source-database"), "{out}");
    assert!(out.contains("configured source 'app'"), "{out}");
    assert_eq!(sqlite(&app, "SELECT count(*) FROM invoice"), before);

    // A staging database that holds data no drill put there is not dropped.
    let foreign_db = env.path("someones.db");
    sqlite(
        &foreign_db,
        "CREATE TABLE precious (x); INSERT INTO precious VALUES (1);",
    );
    let config = cfg(
        &format!("sqlite://{}", foreign_db.display()),
        &env.path("drill"),
    );
    let out = env.fails(&config, &["drill"]);
    assert!(
        out.contains("holds data that no coffer drill put there"),
        "{out}"
    );
    let check = env.fails(&config, &["check"]);
    assert!(
        check.contains("FAIL drill.database 'app'")
            && check.contains("holds data that no coffer drill put there"),
        "{check}"
    );
    assert_eq!(sqlite(&foreign_db, "SELECT count(*) FROM precious"), "1");

    // A staging folder that holds something coffer did not put there is not emptied.
    let foreign = env.path("foreign");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let config = cfg(
        &format!("sqlite://{}", env.path("s.db").display()),
        &foreign,
    );
    let out = env.fails(&config, &["drill"]);
    assert!(out.contains("did not put there"), "{out}");
    assert!(foreign.join("keep.txt").exists());
}

#[test]
fn a_drill_of_a_postgres_snapshot_loads_the_staging_database_and_runs_the_probes() {
    use crate::postgres::{Db, psql};
    if crate::postgres::server().is_none() {
        return;
    }
    let src = Db::new("drillsrc");
    psql(
        &src.0,
        "CREATE TABLE \"tabSales Invoice\" (name text PRIMARY KEY, docstatus int, grand_total numeric(18,6)); \
         INSERT INTO \"tabSales Invoice\" SELECT 'SINV-' || i, i % 3, i * 1.5 FROM generate_series(1, 20000) i; \
         CREATE TABLE \"tabCustomer\" (name text PRIMARY KEY); \
         INSERT INTO \"tabCustomer\" SELECT 'C' || i FROM generate_series(1, 300) i;",
    );
    let staging = Db::named("drillstg");
    let env = Env::new();
    let site = env.path("site");
    crate::support::rich_site(&site);
    let config = env.config(
        &site,
        "1MiB",
        &format!(
            "[[source]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"{}\"\n\
             [drill]\nstaging_dir = \"{}\"\n\
             [[drill.database]]\nsource = \"db\"\nurl = \"{}\"\n\
             probes = [\"SELECT count(*) FROM \\\"tabSales Invoice\\\" WHERE docstatus = 1\", \
             \"SELECT sum(grand_total) > 0 FROM \\\"tabSales Invoice\\\"\"]\n",
            src.url(),
            env.path("drill").display(),
            staging.url()
        ),
    );
    env.backup(&config);
    let out = env.ok(&config, &["drill", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let db = &source(&r, "db")["database"];
    assert_eq!(db["prepared"], "created");
    let tables = db["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2, "{db:#}");
    assert!(tables.iter().all(|t| t["status"] == "match"), "{db:#}");
    assert_eq!(db["probes"][0]["value"], "6667");
    assert_eq!(db["probes"][1]["ok"], true, "{db:#}");
    assert!(r["stages"]["database_load"].as_f64().unwrap() > 0.0);
    assert_eq!(
        psql(
            &staging.0,
            "SELECT count(*), sum(grand_total) FROM \"tabSales Invoice\""
        ),
        psql(
            &src.0,
            "SELECT count(*), sum(grand_total) FROM \"tabSales Invoice\""
        )
    );
    // The next drill drops and re-creates the staging database.
    psql(&staging.0, "CREATE TABLE leftover (x int)");
    let out = env.ok(&config, &["drill", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(source(&r, "db")["database"]["prepared"], "recreated");
    assert_eq!(
        psql(
            &staging.0,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'"
        ),
        "0"
    );
}

#[test]
fn a_drill_of_a_mariadb_snapshot_loads_the_staging_database_and_runs_the_probes() {
    use crate::mysql::{Db, sql};
    if crate::mysql::server().is_none() {
        return;
    }
    let src = Db::new("drillsrc");
    sql(
        &src.0,
        "SET SESSION max_recursive_iterations = 100000; \
         CREATE TABLE `tabSales Invoice` (name VARCHAR(40) PRIMARY KEY, docstatus INT, grand_total DECIMAL(18,6)); \
         INSERT INTO `tabSales Invoice` WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 20000) \
         SELECT CONCAT('SINV-', n), n % 3, n * 1.5 FROM seq;",
    );
    let staging = Db::named("drillstg");
    let env = Env::new();
    let site = env.path("site");
    crate::support::rich_site(&site);
    let config = env.config(
        &site,
        "1MiB",
        &format!(
            "[[source]]\nname = \"db\"\ntype = \"mysql\"\nurl = \"{}\"\n\
             [drill]\nstaging_dir = \"{}\"\n\
             [[drill.database]]\nsource = \"db\"\nurl = \"{}\"\n\
             probes = [\"SELECT count(*) FROM `tabSales Invoice` WHERE docstatus = 1\"]\n",
            src.url("root"),
            env.path("drill").display(),
            staging.url("root")
        ),
    );
    env.backup(&config);
    let out = env.ok(&config, &["drill", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let db = &source(&r, "db")["database"];
    let tables = db["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{db:#}");
    assert!(
        tables
            .iter()
            .all(|t| t["status"] == "match" && t["restored"] == 20000),
        "{db:#}"
    );
    assert_eq!(db["probes"][0]["value"], "6667");
    assert!(r["recovery_time_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        sql(
            &staging.0,
            "SELECT count(*), sum(grand_total) FROM `tabSales Invoice`"
        ),
        sql(
            &src.0,
            "SELECT count(*), sum(grand_total) FROM `tabSales Invoice`"
        )
    );
}

fn have_age() -> bool {
    let ok = Command::new("age").arg("--version").output().is_ok();
    crate::support::prerequisite(ok, "age is not installed", "apt-get install age")
}

#[test]
fn every_restored_file_is_hashed_against_the_backup_and_a_differing_file_is_named() {
    use sha2::{Digest, Sha256};
    if !have_sqlite3() || !have_age() {
        return;
    }
    let d = Drill::new(&[], "");
    // GNU sha256sum escapes such names; the list must read back in coffer and in sha256sum.
    fs::write(d.site.join("odd\\name\nwith newline.txt"), "escaped").unwrap();
    let id = d.env.backup(&d.config);
    let (ok, r) = d.drill_json(&[]);
    assert!(ok, "{r:#}");
    let files = &source(&r, "files")["files"];
    assert_eq!(files["hashed"], files["expected"]["files"], "{files:#}");
    assert_eq!(files["hash_failures"], 0);

    // Stock tools read the list and check the restore with it.
    let snap = d.env.store().join("snapshots").join(&id);
    let part = snap.join("files.sha256.gz.age.00001");
    assert!(!snap.join("files.sha256.gz.age.00002").exists());
    let sums = d.env.path("sums.txt");
    let decrypt = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | gunzip > '{}'",
            d.env.identity.display(),
            part.display(),
            sums.display()
        ))
        .status()
        .unwrap();
    assert!(decrypt.success());
    let check = Command::new("sha256sum")
        .args(["-c", "--quiet"])
        .arg(&sums)
        .current_dir(d.env.path("drill/files"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // A list that disagrees about one file (as a restore that lost its content would): the
    // drill names the file.
    // (Names need not be UTF-8: the list is bytes.)
    let text = fs::read(&sums).unwrap();
    let changed: Vec<u8> = text
        .split_inclusive(|&b| b == b'\n')
        .flat_map(|l| {
            if l.ends_with(b"private/files/data.csv\n") {
                [&[b'0'; 64][..], &l[64..]].concat()
            } else {
                l.to_vec()
            }
        })
        .collect();
    assert_ne!(changed, text);
    fs::write(&sums, changed).unwrap();
    let encrypt = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c '{}' | age -r {} > '{}'",
            sums.display(),
            d.env.recipient,
            part.display()
        ))
        .status()
        .unwrap();
    assert!(encrypt.success());
    let bytes = fs::read(&part).unwrap();
    let sha = format!("{:x}", Sha256::digest(&bytes));
    let path = d.manifest_path(&id);
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    for s in m["sources"].as_array_mut().unwrap() {
        if s["name"] == "files" {
            let c = &mut s["checksums"];
            c["encrypted_bytes"] = bytes.len().into();
            c["sha256"] = sha.clone().into();
            c["parts"][0]["size"] = bytes.len().into();
            c["parts"][0]["sha256"] = sha.clone().into();
        }
    }
    d.env
        .write_signed_manifest(&path, &serde_json::to_vec_pretty(&m).unwrap());
    let (ok, r) = d.drill_json(&[]);
    assert!(!ok);
    let failures = r["failures"].to_string();
    assert!(
        failures.contains("1 of") && failures.contains(r#"\"private/files/data.csv\" differs"#),
        "{failures}"
    );
    assert_eq!(source(&r, "files")["files"]["hash_failures"], 1);
}

#[test]
fn a_scheduled_drill_runs_from_the_daemon_and_its_failure_is_alerted() {
    use crate::support::sinks::SmtpSink;
    if !have_sqlite3() {
        return;
    }
    let smtp = SmtpSink::start();
    let d = Drill::new(
        &["SELECT count(*) FROM invoice WHERE paid = 7"],
        &format!(
            "[jobs.drill]\nschedule = \"*/2 * * * * *\"\n\
             [alerts]\n[alerts.email]\nto = [\"ops@example.com\"]\nfrom = \"coffer@example.com\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n",
            smtp.port
        ),
    );
    let id = d.env.backup(&d.config);
    let log = d.env.path("daemon.log");
    let mut daemon = crate::support::KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
            .arg("--config")
            .arg(&d.config)
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while smtp.mails().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no alert mail; daemon log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&daemon),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
    let mail = &smtp.mails()[0].data;
    assert!(mail.contains("drill"), "{mail}");
    assert!(mail.contains(&id), "{mail}");
    assert!(mail.contains("returned 0"), "{mail}");
    let status = d.status();
    let failure = &drill_job(&status)["last_failure"];
    assert_eq!(failure["trigger"], "schedule", "{failure:#}");
    assert!(
        failure["report"]["recovery_time_seconds"].as_f64().unwrap() > 0.0,
        "{failure:#}"
    );
}

#[test]
fn a_manifests_host_and_table_names_reach_the_terminal_escaped() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(&[], "");
    let id = d.env.backup(&d.config);
    // What a compromised backup host could sign: names that drive the operator's terminal.
    let hostile = "db\u{1b}]0;owned\u{7}\u{1b}[2J";
    let path = d.manifest_path(&id);
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    m["host"] = hostile.into();
    for s in m["sources"].as_array_mut().unwrap() {
        if s["name"] == "app" {
            s["database"]["tables"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": hostile, "rows": 1, "exact": true}));
        }
    }
    d.env
        .write_signed_manifest(&path, &serde_json::to_vec_pretty(&m).unwrap());
    let out = d.env.run(&d.config, &["drill"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the extra table is missing: {text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("db\\x1b]0;owned\\x07"), "{text}");
    let staging = d.env.path("staging-app.db");
    let out = d.env.run(
        &d.config,
        &[
            "restore",
            &id,
            "--source",
            "app",
            "--db-url",
            &format!(
                "sqlite://{}",
                staging.with_extension("restore.db").display()
            ),
            "--create",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("db\\x1b]0;owned"), "{text}");
}

#[test]
fn a_drill_of_a_differential_restores_its_full_then_it_and_hashes_the_whole_tree() {
    if !have_sqlite3() {
        return;
    }
    let d = Drill::new(&[], "");
    d.env.backup(&d.config);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(d.site.join("new-after-full.txt"), "day 2").unwrap();
    fs::remove_file(d.site.join("private/files/data.csv")).unwrap();
    let id = d.env.backup(&d.config);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(d.manifest_path(&id)).unwrap()).unwrap();
    let files = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "files")
        .unwrap();
    assert!(files["differential"].is_object(), "{m:#}");
    let (ok, r) = d.drill_json(&[]);
    assert!(ok, "{r:#}");
    let files = &source(&r, "files")["files"];
    // Every file of the tree is hashed, those kept from the full too, and the tree is the
    // site as it is (the deleted file gone).
    assert_eq!(files["hashed"], files["expected"]["files"], "{files:#}");
    assert_eq!(files["restored"], files["expected"], "{files:#}");
    assert_eq!(files["hash_failures"], 0);
    crate::support::assert_same_tree(&d.site, &d.env.path("drill/files"));
}
