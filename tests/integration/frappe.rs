//! The frappe preset on fixture site folders whose site_config.json points at a real MariaDB
//! database and at a real PostgreSQL one.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::Env;
use crate::{mysql, postgres};

/// `bench/sites/<site>` with files to keep and files to leave out.
fn site(env: &Env, config_json: &str) -> PathBuf {
    let sites = env.path("bench/sites");
    let site = sites.join("erp.example.com");
    for dir in [
        "public/files",
        "private/files/deep",
        "private/backups",
        "locks",
    ] {
        fs::create_dir_all(site.join(dir)).unwrap();
    }
    fs::write(
        sites.join("common_site_config.json"),
        r#"{"db_host": "localhost"}"#,
    )
    .unwrap();
    fs::write(site.join("site_config.json"), config_json).unwrap();
    fs::write(site.join("public/files/logo.png"), b"png").unwrap();
    fs::write(site.join("private/files/deep/invoice.pdf"), b"pdf").unwrap();
    fs::write(site.join("private/backups/old-database.sql.gz"), b"old").unwrap();
    fs::write(site.join("locks/bench.lock"), b"").unwrap();
    site
}

fn preset_config(env: &Env, site: &Path) -> PathBuf {
    env.config_for_source(
        "frappe.toml",
        &format!(
            "name = \"erp\"\ntype = \"frappe\"\npath = \"{}\"",
            site.display()
        ),
    )
}

/// Backs up the preset, restores it, and checks both halves; returns the restored SQL.
fn back_up_and_restore(env: &Env, site: &Path, secret: &str, kind: &str) -> String {
    let config = preset_config(env, site);
    let out = env.run(&config, &["backup", "--json"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(secret), "the db password leaked: {all}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<(String, String)> = v["manifest"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("erp-db".to_string(), kind.to_string()),
            ("erp-files".into(), "directory".into())
        ]
    );
    let dir = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", dir.to_str().unwrap()],
    );
    let files = dir.join("erp-files");
    assert_eq!(
        fs::read(files.join("public/files/logo.png")).unwrap(),
        b"png"
    );
    assert_eq!(
        fs::read(files.join("private/files/deep/invoice.pdf")).unwrap(),
        b"pdf"
    );
    assert_eq!(
        fs::read(files.join("site_config.json")).unwrap(),
        fs::read(site.join("site_config.json")).unwrap(),
        "site_config.json (with the encryption_key) is kept"
    );
    assert!(!files.join("private/backups").exists() && !files.join("locks").exists());
    fs::read_to_string(dir.join("erp-db.sql")).unwrap()
}

#[test]
fn frappe_site_on_mariadb() {
    let Some(()) = mysql::server() else { return };
    let db = mysql::Db::new("frappe");
    let secret = format!("pw-{:08x}", rand::random::<u32>());
    // Frappe's convention: the database user is named like the database.
    mysql::sql(
        "mysql",
        &format!(
            "CREATE USER '{0}'@'%' IDENTIFIED BY '{secret}'; GRANT ALL ON {0}.* TO '{0}'@'%'",
            db.0
        ),
    );
    mysql::sql(
        &db.0,
        "CREATE TABLE `tabNote` (name VARCHAR(140) PRIMARY KEY); INSERT INTO `tabNote` VALUES ('hello-frappe')",
    );
    let env = Env::new();
    let site = site(
        &env,
        &format!(
            r#"{{"db_name": "{}", "db_password": "{secret}", "db_type": "mariadb", "encryption_key": "k3y"}}"#,
            db.0
        ),
    );
    let dump = back_up_and_restore(&env, &site, &secret, "mysql");
    assert!(dump.contains("hello-frappe"));
    check_bench_layout(&env, &site, &dump);
    // The site's database restores into a staging database, compared table by table; the
    // site's own database (found through site_config.json) is refused.
    let config = preset_config(&env, &site);
    let stg = mysql::Db::named("frappe_stg");
    let url = stg.url("root");
    let out = env.ok(
        &config,
        &[
            "restore", "latest", "--source", "erp-db", "--db-url", &url, "--create",
        ],
    );
    assert!(out.contains("1 of 1 tables match"), "{out}");
    assert_eq!(
        mysql::sql(&stg.0, "SELECT name FROM `tabNote`"),
        "hello-frappe"
    );
    let own = format!("mysql://root@localhost/{}", db.0);
    let out = env.fails(
        &config,
        &[
            "restore", "latest", "--source", "erp-db", "--db-url", &own, "--force",
        ],
    );
    assert!(
        out.contains("refusing to restore into") && out.contains("'erp-db'"),
        "{out}"
    );
    mysql::sql("mysql", &format!("DROP USER '{}'@'%'", db.0));
}

#[test]
fn frappe_site_on_postgres() {
    let Some(()) = postgres::server() else { return };
    let db = postgres::Db::new("frappe");
    let secret = format!("pw-{:08x}", rand::random::<u32>());
    postgres::psql(
        "postgres",
        &format!("CREATE ROLE {} LOGIN PASSWORD '{secret}'", db.0),
    );
    postgres::psql(
        &db.0,
        &format!(
            "CREATE TABLE \"tabNote\" (name varchar(140) PRIMARY KEY); \
             INSERT INTO \"tabNote\" VALUES ('hello-frappe'); GRANT SELECT ON \"tabNote\" TO {}",
            db.0
        ),
    );
    let env = Env::new();
    let site = site(
        &env,
        &format!(
            r#"{{"db_name": "{}", "db_password": "{secret}", "db_type": "postgres", "db_port": 5432}}"#,
            db.0
        ),
    );
    let dump = back_up_and_restore(&env, &site, &secret, "postgres");
    assert!(dump.contains("hello-frappe"));
    let role = db.0.clone();
    drop(db);
    postgres::psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

#[test]
fn a_site_without_site_config_fails_before_storing_anything() {
    let env = Env::new();
    let site = env.path("sites/nosuch");
    fs::create_dir_all(&site).unwrap();
    let config = preset_config(&env, &site);
    let out = env.fails(&config, &["backup"]);
    assert!(
        out.contains("site_config.json") && out.contains("frappe source 'erp'"),
        "{out}"
    );
    assert!(!env.store().exists());
}

/// `restore --bench` writes what `bench --site X restore` takes: a gzip'd dump, two tars whose
/// members bench extracts with `--strip 2` inside the site folder, and the site config.
fn check_bench_layout(env: &Env, site: &Path, dump: &str) {
    use std::process::Command;
    let config = env.path("frappe.toml");
    let dir = env.path("for-bench");
    let out = env.ok(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "erp",
            "--bench",
            "erp.example.com",
            "--to",
            dir.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let file = |k: &str| PathBuf::from(v[k].as_str().unwrap());
    for (k, suffix) in [
        ("database", "-erp_example_com-database.sql.gz"),
        ("public_files", "-erp_example_com-files.tar"),
        ("private_files", "-erp_example_com-private-files.tar"),
        ("site_config", "-erp_example_com-site_config_backup.json"),
    ] {
        assert!(
            file(k).to_str().unwrap().ends_with(suffix),
            "{k}: {}",
            file(k).display()
        );
    }
    let gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(file("database"))
        .output()
        .unwrap();
    assert!(gunzip.status.success());
    assert_eq!(String::from_utf8(gunzip.stdout).unwrap(), dump);
    assert_eq!(
        fs::read(file("site_config")).unwrap(),
        fs::read(site.join("site_config.json")).unwrap()
    );
    // As bench does it: tar xf FILE --strip 2, inside the site folder.
    let new_site = env.path("new-site");
    fs::create_dir_all(&new_site).unwrap();
    for k in ["public_files", "private_files"] {
        let x = Command::new("tar")
            .arg("xf")
            .arg(file(k))
            .args(["--strip", "2"])
            .current_dir(&new_site)
            .output()
            .unwrap();
        assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    }
    assert_eq!(
        fs::read(new_site.join("public/files/logo.png")).unwrap(),
        b"png"
    );
    assert_eq!(
        fs::read(new_site.join("private/files/deep/invoice.pdf")).unwrap(),
        b"pdf"
    );
    let listing = Command::new("tar")
        .arg("tf")
        .arg(file("public_files"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout)
            .contains("./erp.example.com/public/files/logo.png")
    );

    // A damaged files stream leaves nothing bench could pick up.
    let snapshots = env.store().join("snapshots");
    let id = fs::read_dir(&snapshots)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let part = id.join("erp-files.tar.gz.age.00001");
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&part, bytes).unwrap();
    let bad = env.path("for-bench-damaged");
    let out = env.fails(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "erp",
            "--bench",
            "erp.example.com",
            "--to",
            bad.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("erp-files.tar.gz.age.00001") && out.contains("nothing was left"),
        "{out}"
    );
    assert_eq!(
        fs::read_dir(&bad).unwrap().count(),
        0,
        "no partial or final file is left"
    );
}

#[test]
fn frappe_site_on_mariadb_through_db_socket() {
    let Some(()) = mysql::server() else { return };
    let socket = mysql::sql("mysql", "SELECT @@socket");
    let db = mysql::Db::new("frappe_sock");
    let secret = format!("pw-{:08x}", rand::random::<u32>());
    mysql::sql(
        "mysql",
        &format!(
            "CREATE USER '{0}'@'localhost' IDENTIFIED BY '{secret}'; \
             GRANT ALL ON {0}.* TO '{0}'@'localhost'",
            db.0
        ),
    );
    mysql::sql(
        &db.0,
        "CREATE TABLE `tabNote` (name VARCHAR(140) PRIMARY KEY); INSERT INTO `tabNote` VALUES ('via-socket')",
    );
    let env = Env::new();
    // db_host names an address nothing answers on: only the socket can work.
    let site = site(
        &env,
        &format!(
            r#"{{"db_name": "{}", "db_password": "{secret}", "db_socket": "{socket}", "db_host": "192.0.2.1"}}"#,
            db.0
        ),
    );
    let config = preset_config(&env, &site);
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["manifest"]["sources"][0]["database"]["tables"][0]["rows"],
        1
    );
    let dir = env.path("restored");
    env.ok(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "erp-db",
            "--to",
            dir.to_str().unwrap(),
        ],
    );
    assert!(
        fs::read_to_string(dir.join("erp-db.sql"))
            .unwrap()
            .contains("via-socket")
    );
    let out = env.ok(&config, &["check"]);
    assert!(out.contains(&format!("(socket {socket})")), "{out}");
    mysql::sql("mysql", &format!("DROP USER '{}'@'localhost'", db.0));
}

#[test]
fn a_frappe_sites_files_as_a_differential_restore_and_lay_out_for_bench() {
    use std::process::Command;
    let Some(()) = postgres::server() else { return };
    let db = postgres::Db::new("frappediff");
    let env = Env::new();
    // Trust auth: the site's password is not checked; the dump reads as postgres.
    let site = site(
        &env,
        &format!(
            r#"{{"db_name": "{}", "db_password": "unused", "db_type": "postgres", "db_port": 5432, "db_user": "postgres"}}"#,
            db.0
        ),
    );
    let config = preset_config(&env, &site);
    env.backup(&config);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A day of work: a new attachment, a deleted one, a changed site_config.json.
    fs::write(site.join("public/files/new.png"), b"new png").unwrap();
    fs::remove_file(site.join("private/files/deep/invoice.pdf")).unwrap();
    fs::write(site.join("private/files/deep/credit-note.pdf"), b"cn").unwrap();
    let out: serde_json::Value =
        serde_json::from_str(&env.ok(&config, &["backup", "--json"])).unwrap();
    let files = &out["folders"][0];
    assert_eq!(files["source"], "erp-files");
    assert_eq!(files["kind"], "differential", "{out:#}");

    let dir = env.path("restored");
    env.ok(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "erp-files",
            "--to",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read(dir.join("public/files/new.png")).unwrap(),
        b"new png"
    );
    assert_eq!(fs::read(dir.join("public/files/logo.png")).unwrap(), b"png");
    assert!(!dir.join("private/files/deep/invoice.pdf").exists());
    assert_eq!(
        fs::read(dir.join("private/files/deep/credit-note.pdf")).unwrap(),
        b"cn"
    );
    assert!(dir.join("site_config.json").exists());
    assert!(!dir.join("private/backups").exists() && !dir.join("locks").exists());

    // bench's layout from a differential: the tree as it is now, nothing left behind.
    let bench = env.path("for-bench");
    env.ok(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "erp",
            "--bench",
            "erp.example.com",
            "--to",
            bench.to_str().unwrap(),
        ],
    );
    let mut names: Vec<String> = fs::read_dir(&bench)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "only bench's four files: {names:?}");
    let listing = |suffix: &str| {
        let tar = names.iter().find(|n| n.ends_with(suffix)).unwrap();
        let out = Command::new("tar")
            .arg("tf")
            .arg(bench.join(tar))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let public = listing("-files.tar");
    assert!(
        public.contains("./erp.example.com/public/files/new.png"),
        "{public}"
    );
    assert!(
        public.contains("./erp.example.com/public/files/logo.png"),
        "{public}"
    );
    let private = listing("-private-files.tar");
    assert!(
        private.contains("credit-note.pdf") && !private.contains("invoice.pdf"),
        "{private}"
    );
}
