//! `type = "frappe-bench"`: a generated bench whose sites point at real MariaDB and
//! PostgreSQL databases. Sites are found at each backup (one added is backed up, one gone is
//! reported), the bench's own stream records each app's git commit, `restore --bench SITE`
//! lays out each site for `bench restore`, and a drill loads every site through `{site}`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::unix::fs::PermissionsExt;

use crate::support::Env;
use crate::support::sinks::{HttpSink, SmtpSink};
use crate::{mysql, postgres};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.email=t@example.org", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An app folder under `apps/`, a git checkout with one commit unless `remote` is `None`.
fn app(bench: &Path, name: &str, remote: Option<(&str, &str)>, packed: bool) -> Option<String> {
    let dir = bench.join("apps").join(name);
    fs::create_dir_all(dir.join(name)).unwrap();
    fs::write(
        dir.join(name).join("__init__.py"),
        "__version__ = \"15.4.1\"\n",
    )
    .unwrap();
    let (remote, url) = remote?;
    git(&dir, &["init", "-q", "-b", "version-15"]);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-qm", "init"]);
    git(&dir, &["remote", "add", remote, url]);
    if packed {
        git(&dir, &["pack-refs", "--all"]);
    }
    Some(git(&dir, &["rev-parse", "HEAD"]))
}

/// A bench: its configs, three apps (two git checkouts, one not), and no site yet.
fn bench(env: &Env) -> (PathBuf, String, String) {
    let root = env.path("frappe-bench");
    fs::create_dir_all(root.join("sites/assets")).unwrap();
    fs::create_dir_all(root.join("config/pids")).unwrap();
    fs::create_dir_all(root.join("logs")).unwrap();
    fs::write(
        root.join("sites/common_site_config.json"),
        r#"{"db_host": "localhost", "redis_cache": "redis://127.0.0.1:13000"}"#,
    )
    .unwrap();
    fs::write(root.join("sites/apps.txt"), "frappe\nerpnext\ncustom_app\n").unwrap();
    fs::write(root.join("Procfile"), "web: bench serve --port 8000\n").unwrap();
    fs::write(root.join("config/nginx.conf"), "server { listen 80; }\n").unwrap();
    fs::write(root.join("logs/web.log"), "not backed up\n").unwrap();
    let frappe = app(
        &root,
        "frappe",
        Some((
            "upstream",
            "https://someone:ghp_s3cr3tT0ken@github.com/frappe/frappe.git",
        )),
        false,
    )
    .unwrap();
    let erpnext = app(
        &root,
        "erpnext",
        Some(("origin", "git@github.com:frappe/erpnext.git")),
        true,
    )
    .unwrap();
    app(&root, "custom_app", None, false);
    (root, frappe, erpnext)
}

/// `sites/<site>` with its config and a file of its own in public and private.
fn add_site(bench: &Path, site: &str, config_json: &str) {
    let dir = bench.join("sites").join(site);
    for d in ["public/files", "private/files", "private/backups", "locks"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("site_config.json"), config_json).unwrap();
    fs::write(dir.join("public/files/logo.png"), format!("logo of {site}")).unwrap();
    fs::write(
        dir.join("private/files/invoice.pdf"),
        format!("invoice of {site}"),
    )
    .unwrap();
    fs::write(dir.join("private/backups/old.sql.gz"), b"old").unwrap();
}

/// A MariaDB site database with its own user (as Frappe makes them) and one row.
struct MariaSite {
    db: mysql::Db,
    secret: String,
}

impl MariaSite {
    fn new(tag: &str, note: &str) -> MariaSite {
        let db = mysql::Db::new(tag);
        let secret = format!("pw-{:08x}", rand::random::<u32>());
        mysql::sql(
            "mysql",
            &format!(
                "CREATE USER '{0}'@'%' IDENTIFIED BY '{secret}'; GRANT ALL ON {0}.* TO '{0}'@'%'",
                db.0
            ),
        );
        mysql::sql(
            &db.0,
            &format!(
                "CREATE TABLE `tabNote` (name VARCHAR(140) PRIMARY KEY); \
                 INSERT INTO `tabNote` VALUES ('{note}')"
            ),
        );
        MariaSite { db, secret }
    }

    fn config(&self) -> String {
        format!(
            r#"{{"db_name": "{}", "db_password": "{}", "db_type": "mariadb", "encryption_key": "k"}}"#,
            self.db.0, self.secret
        )
    }
}

impl Drop for MariaSite {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP USER IF EXISTS '{}'@'%'", self.db.0))
            .output();
    }
}

/// A PostgreSQL site database with its own login role and one row.
struct PgSite {
    db: Option<postgres::Db>,
    role: String,
    secret: String,
}

impl PgSite {
    fn new(tag: &str, note: &str) -> PgSite {
        let db = postgres::Db::new(tag);
        let secret = format!("pw-{:08x}", rand::random::<u32>());
        postgres::psql(
            "postgres",
            &format!("CREATE ROLE {} LOGIN PASSWORD '{secret}'", db.0),
        );
        postgres::psql(
            &db.0,
            &format!(
                "CREATE TABLE \"tabNote\" (name varchar(140) PRIMARY KEY); \
                 INSERT INTO \"tabNote\" VALUES ('{note}'); GRANT SELECT ON \"tabNote\" TO {}",
                db.0
            ),
        );
        PgSite {
            role: db.0.clone(),
            db: Some(db),
            secret,
        }
    }

    fn config(&self) -> String {
        format!(
            r#"{{"db_name": "{}", "db_password": "{}", "db_type": "postgres", "db_port": 5432}}"#,
            self.role, self.secret
        )
    }
}

impl Drop for PgSite {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP ROLE IF EXISTS {}", self.role))
            .output();
    }
}

fn bench_config(env: &Env, bench: &Path, extra_source: &str, rest: &str) -> PathBuf {
    let path = env.config_for_source(
        "bench.toml",
        &format!(
            "name = \"bench\"\ntype = \"frappe-bench\"\npath = \"{}\"\n{extra_source}",
            bench.display()
        ),
    );
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str(rest);
    fs::write(&path, text).unwrap();
    path
}

/// Backs up; the report's JSON and stderr.
fn backup(env: &Env, config: &Path) -> (serde_json::Value, String) {
    let out = env.run(config, &["backup", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "backup failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// Each source of the report's manifest: name, kind, and its bench record.
fn sources(v: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    v["manifest"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["bench"].clone(),
            )
        })
        .collect()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = sources(v).into_iter().map(|s| s.0).collect();
    n.sort();
    n
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

#[test]
fn a_bench_is_backed_up_site_by_site_as_its_sites_come_and_go() {
    let (Some(()), Some(())) = (mysql::server(), postgres::server()) else {
        return;
    };
    let env = Env::new();
    let (root, frappe_commit, erpnext_commit) = bench(&env);
    let a = MariaSite::new("bench_a", "note of a");
    let b = PgSite::new("bench_b", "note of b");
    add_site(&root, "a.local", &a.config());
    add_site(&root, "b.local", &b.config());
    // Email and Sentry hear of a site gone (the fakes speak SMTP and Sentry's envelopes).
    let smtp = SmtpSink::start();
    let sentry = HttpSink::sentry("benchkey");
    let dsn = env.path("sentry-dsn");
    fs::write(
        &dsn,
        format!("http://benchkey@127.0.0.1:{}/42", sentry.port),
    )
    .unwrap();
    fs::set_permissions(&dsn, fs::Permissions::from_mode(0o600)).unwrap();
    let config = bench_config(
        &env,
        &root,
        "",
        &format!(
            "[alerts.email]\nto = [\"ops@example.com\"]\nfrom = \"coffer@example.com\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n\
             [alerts.sentry]\ndsn_file = \"{}\"\n",
            smtp.port,
            dsn.display()
        ),
    );
    // `coffer check` sees every site.
    let check = env.ok(&config, &["check"]);
    assert!(
        check.contains("source 'a_local-db' (of frappe-bench 'bench')")
            && check.contains("source 'b_local-files' (of frappe-bench 'bench')"),
        "{check}"
    );

    let (v, stderr) = backup(&env, &config);
    assert!(!stderr.contains(&a.secret) && !stderr.contains(&b.secret));
    let site = |s: &str| serde_json::json!({"bench": "bench", "site": s});
    assert_eq!(
        sources(&v),
        [
            (
                "a_local-db".to_string(),
                "mysql".to_string(),
                site("a.local")
            ),
            ("a_local-files".into(), "directory".into(), site("a.local")),
            ("b_local-db".into(), "postgres".into(), site("b.local")),
            ("b_local-files".into(), "directory".into(), site("b.local")),
            (
                "bench".into(),
                "directory".into(),
                serde_json::json!({"bench": "bench"})
            ),
        ]
    );
    assert_eq!(v["gone_sites"], serde_json::json!([]));

    // Everything restores: each site's dump and files, and the bench's own stream.
    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );
    assert!(
        fs::read_to_string(dir.join("a_local-db.sql"))
            .unwrap()
            .contains("note of a")
    );
    assert!(
        fs::read_to_string(dir.join("b_local-db.sql"))
            .unwrap()
            .contains("note of b")
    );
    assert_eq!(
        fs::read_to_string(dir.join("b_local-files/private/files/invoice.pdf")).unwrap(),
        "invoice of b.local"
    );
    let own = dir.join("bench");
    for f in [
        "sites/common_site_config.json",
        "sites/apps.txt",
        "Procfile",
        "config/nginx.conf",
    ] {
        assert_eq!(
            fs::read(own.join(f)).unwrap(),
            fs::read(root.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!own.join("logs").exists() && !own.join("apps/frappe").exists());
    // apps.json: each app's remote (without the token), branch and commit, as git says.
    let apps_text = fs::read_to_string(own.join("apps.json")).unwrap();
    assert!(!apps_text.contains("ghp_s3cr3tT0ken"), "{apps_text}");
    let apps: serde_json::Value = serde_json::from_str(&apps_text).unwrap();
    let app = |name: &str| {
        apps["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["app"] == name)
            .unwrap_or_else(|| panic!("{name} in {apps:#}"))
            .clone()
    };
    assert_eq!(
        app("frappe"),
        serde_json::json!({
            "app": "frappe",
            "remote": "upstream",
            "url": "https://github.com/frappe/frappe.git",
            "branch": "version-15",
            "commit": frappe_commit,
            "version": "15.4.1",
        })
    );
    assert_eq!(
        app("erpnext")["commit"],
        erpnext_commit.as_str(),
        "packed refs"
    );
    assert_eq!(app("erpnext")["url"], "git@github.com:frappe/erpnext.git");
    assert!(app("custom_app")["commit"].is_null());
    assert!(
        app("custom_app")["note"]
            .as_str()
            .unwrap()
            .contains("not a git checkout")
    );

    // Each site lays out for `bench --site SITE restore`, found by its name alone.
    for (s, dump) in [("a.local", "a_local-db.sql"), ("b.local", "b_local-db.sql")] {
        let to = env.path(&format!("for-bench-{s}"));
        let out = env.ok(
            &config,
            &[
                "restore",
                "latest",
                "--bench",
                s,
                "--to",
                to.to_str().unwrap(),
                "--json",
            ],
        );
        let files: serde_json::Value = serde_json::from_str(&out).unwrap();
        let database = files["database"].as_str().unwrap();
        assert!(
            database.ends_with(&format!("-{}-database.sql.gz", s.replace('.', "_"))),
            "{database}"
        );
        let gunzip = Command::new("gzip")
            .arg("-dc")
            .arg(database)
            .output()
            .unwrap();
        assert_eq!(
            gunzip.stdout,
            fs::read(dir.join(dump)).unwrap(),
            "{s}: the dump bench gets"
        );
        assert_eq!(
            fs::read(files["site_config"].as_str().unwrap()).unwrap(),
            fs::read(root.join("sites").join(s).join("site_config.json")).unwrap()
        );
        let listing = Command::new("tar")
            .arg("tf")
            .arg(files["private_files"].as_str().unwrap())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listing.stdout)
                .contains(&format!("./{s}/private/files/invoice.pdf")),
            "{listing:?}"
        );
    }
    let out = env.fails(
        &config,
        &["restore", "latest", "--bench", "nosuch.local", "--to", "x"],
    );
    assert!(
        out.contains("no site 'nosuch.local'") && out.contains("a.local (frappe-bench 'bench')"),
        "{out}"
    );

    // A third site, created after the config was written: backed up at the next run.
    let c = MariaSite::new("bench_c", "note of c");
    add_site(&root, "c.local", &c.config());
    let (v, _) = backup(&env, &config);
    assert_eq!(
        names(&v),
        strs(&[
            "a_local-db",
            "a_local-files",
            "b_local-db",
            "b_local-files",
            "bench",
            "c_local-db",
            "c_local-files"
        ])
    );

    // A site gone from the bench: reported and in --json, the backup still succeeds; said
    // once (the next backup compares with a snapshot that no longer holds it).
    fs::rename(root.join("sites/b.local"), env.path("b.local-moved")).unwrap();
    let (v, stderr) = backup(&env, &config);
    assert!(
        stderr.contains("site 'b.local' of frappe-bench 'bench' is no longer in the bench"),
        "{stderr}"
    );
    assert_eq!(v["gone_sites"][0]["site"], "b.local", "{v:#}");
    assert!(!names(&v).contains(&"b_local-db".to_string()));
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "one WARNING mail: {mails:#?}");
    assert!(
        mails[0]
            .data
            .contains("Subject: [coffer] WARNING backup on ")
            && mails[0]
                .data
                .contains("site 'b.local' of frappe-bench 'bench'"),
        "{}",
        mails[0].data
    );
    let events: Vec<String> = sentry
        .requests()
        .iter()
        .map(|r| r.body.clone())
        .filter(|b| b.contains("\"type\":\"event\""))
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert!(
        events[0].contains("\"level\":\"warning\"") && events[0].contains("b.local"),
        "{}",
        events[0]
    );
    let (v, stderr) = backup(&env, &config);
    assert_eq!(v["gone_sites"], serde_json::json!([]));
    assert!(!stderr.contains("no longer in the bench"), "{stderr}");
    assert_eq!(smtp.mails().len(), 1, "no second warning");

    // exclude_sites leaves a site out on purpose: not backed up, not reported as gone.
    let excluding = bench_config(&env, &root, "exclude_sites = [\"c.local\"]\n", "");
    let (v, stderr) = backup(&env, &excluding);
    assert_eq!(names(&v), strs(&["a_local-db", "a_local-files", "bench"]));
    assert!(!stderr.contains("no longer in the bench"), "{stderr}");
}

#[test]
fn one_site_that_cannot_be_dumped_fails_the_run_naming_it_and_stores_nothing() {
    let Some(()) = mysql::server() else { return };
    let env = Env::new();
    let (root, _, _) = bench(&env);
    let a = MariaSite::new("bench_ok", "fine");
    add_site(&root, "a.local", &a.config());
    let config = bench_config(&env, &root, "", "");
    backup(&env, &config);
    let snapshots = || fs::read_dir(env.store().join("snapshots")).unwrap().count();
    assert_eq!(snapshots(), 1);
    // A site whose password is wrong (its user exists; the dump is refused).
    let z = MariaSite::new("bench_bad", "never");
    let wrong = z.config().replace(&z.secret, "wrong-password");
    add_site(&root, "z.local", &wrong);
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("site 'z.local' of frappe-bench 'bench' (source 'z_local-db')"),
        "{out}"
    );
    assert!(!out.contains("wrong-password"), "{out}");
    assert_eq!(snapshots(), 1, "no snapshot with half the sites: {out}");
    // A site whose config is broken is named too.
    fs::write(root.join("sites/z.local/site_config.json"), "{not json").unwrap();
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("frappe-bench source 'bench': site 'z.local'")
            && out.contains("not valid JSON"),
        "{out}"
    );
    assert_eq!(snapshots(), 1);
}

#[test]
fn a_drill_loads_every_site_of_a_bench_through_a_site_template() {
    let (Some(()), Some(())) = (mysql::server(), postgres::server()) else {
        return;
    };
    let env = Env::new();
    let (root, _, _) = bench(&env);
    let a = MariaSite::new("bdrill_a", "note of a");
    let b = PgSite::new("bdrill_b", "note of b");
    let c = MariaSite::new("bdrill_c", "note of c");
    add_site(&root, "a.local", &a.config());
    add_site(&root, "b.local", &b.config());
    add_site(&root, "c-two.local", &c.config());
    let tag = format!("coffer_bdrill_{:08x}", rand::random::<u32>());
    // The staging databases the templates make, dropped when the test ends.
    let _staging = (
        mysql::Db(format!("{tag}_a_local")),
        mysql::Db(format!("{tag}_c_two_local")),
        postgres::Db(format!("{tag}_b_local")),
    );
    let config = bench_config(
        &env,
        &root,
        "",
        &format!(
            "[drill]\nstaging_dir = \"{}\"\n\
             [[drill.database]]\nsource = \"bench\"\n\
             url = \"mysql://root@127.0.0.1:3306/{tag}_{{site}}\"\n\
             probes = [\"SELECT count(*) FROM `tabNote`\"]\n\
             [[drill.database]]\nsource = \"bench\"\n\
             url = \"postgres://postgres@127.0.0.1:5432/{tag}_{{site}}\"\n",
            env.path("drill").display()
        ),
    );
    let check = env.ok(&config, &["check"]);
    assert!(
        check.contains("one staging database per site of frappe-bench 'bench'"),
        "{check}"
    );
    backup(&env, &config);
    let out = env.ok(&config, &["drill", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let source = |name: &str| {
        r["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {r:#}"))
            .clone()
    };
    for name in ["a_local-db", "b_local-db", "c-two_local-db"] {
        let s = source(name);
        assert_eq!(s["restored"], "loaded", "{name}: {s:#}");
        assert!(
            s["database"]["tables"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["status"] == "match"),
            "{name}: {s:#}"
        );
    }
    assert_eq!(
        mysql::sql(&format!("{tag}_c_two_local"), "SELECT name FROM `tabNote`"),
        "note of c"
    );
    assert_eq!(
        postgres::psql(&format!("{tag}_b_local"), "SELECT name FROM \"tabNote\""),
        "note of b"
    );
    assert_eq!(source("bench")["restored"], "extracted");

    // A template must name a bench, and a bench's entry must be a template.
    let bad = bench_config(
        &env,
        &root,
        "",
        "[[drill.database]]\nsource = \"bench\"\nurl = \"mysql://root@127.0.0.1:3306/drill\"\n",
    );
    let out = env.fails(&bad, &["check"]);
    assert!(out.contains("put {site} in the url"), "{out}");
}
