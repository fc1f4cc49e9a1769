//! Every config shipped in config/ parses and validates.

use std::path::Path;

#[test]
fn shipped_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            coffer::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the quickstart and the example config");
}

#[test]
fn check_reports_every_problem_at_once_with_what_to_do() {
    let env = crate::support::Env::new();
    let site = env.path("site");
    std::fs::create_dir_all(&site).unwrap();
    let config = env.config(
        &site,
        "1MiB",
        r#"
[[source]]
name = "gone"
type = "directory"
path = "/nonexistent/coffer-check"

[[source]]
name = "db"
type = "postgres"
url = "postgres://postgres@127.0.0.1:1/nothing"
dump_tool = "/nonexistent/pg_dump"

[[source]]
name = "secret"
type = "mysql"
url = "mysql://root@127.0.0.1:3306/x"
password_env = "COFFER_TEST_UNSET_PASSWORD"
"#,
    );
    let out = env.fails(&config, &["check"]);
    for expected in [
        "ok   store:",
        "ok   source 'files'",
        "FAIL source 'gone': cannot read /nonexistent/coffer-check",
        "FAIL source 'db': cannot run /nonexistent/pg_dump --version",
        "cannot connect to postgres://postgres@127.0.0.1:1/nothing",
        "FAIL source 'secret': cannot read the password: environment variable \
         COFFER_TEST_UNSET_PASSWORD",
        "3 of ",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let out = env.run(&config, &["check", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["source 'gone'", "source 'db'", "source 'secret'"]);
}

/// The README's first command, on a copy of the layout: the quickstart backs up the demo
/// site's files and its SQLite database, and both come back identical.
#[test]
fn the_quickstart_backs_up_and_restores_the_demo_site_and_its_database() {
    let env = crate::support::Env::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = env.path("checkout");
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::os::unix::fs::symlink(repo.join("fixtures"), root.join("fixtures")).unwrap();
    let config = root.join("config/quickstart.toml");
    std::fs::copy(repo.join("config/quickstart.toml"), &config).unwrap();
    let out = env.ok(&config, &["backup", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = v["manifest"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["directory", "sqlite"]);
    env.ok(&config, &["check"]);
    env.ok(&config, &["verify", "latest", "--deep"]);
    let to = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    crate::support::assert_same_tree_excluding(
        &repo.join("fixtures/site"),
        &to.join("files"),
        "private/backups",
    );
    if crate::support::prerequisite(
        std::process::Command::new("sqlite3")
            .arg("--version")
            .output()
            .is_ok(),
        "sqlite3 is not installed",
        "apt-get install sqlite3",
    ) {
        let dump = |db: &Path| {
            let out = std::process::Command::new("sqlite3")
                .arg(db)
                .arg(".dump")
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let copy = env.path("copy.sqlite");
        let load = std::process::Command::new("sqlite3")
            .arg("-bail")
            .arg(&copy)
            .stdin(std::fs::File::open(to.join("app.sql")).unwrap())
            .output()
            .unwrap();
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        assert_eq!(dump(&copy), dump(&repo.join("fixtures/app.sqlite")));
        // `coffer drill` on the quickstart: the folder and the database, every check.
        let out = env.ok(&config, &["drill", "--json"]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let source = |name: &str| {
            r["sources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .unwrap()
                .clone()
        };
        let files = source("files");
        assert_eq!(
            files["files"]["hashed"], files["files"]["expected"]["files"],
            "{r:#}"
        );
        assert_eq!(files["files"]["hash_failures"], 0, "{r:#}");
        let app = source("app");
        assert_eq!(app["restored"], "loaded", "{r:#}");
        let text = app.to_string();
        assert!(
            text.contains("invoice") && text.contains("customer"),
            "{r:#}"
        );
    }
}

#[test]
fn a_missing_config_is_named_with_its_cause_told_once() {
    let env = crate::support::Env::new();
    let missing = env.path("nope.toml");
    let out = env.fails(&missing, &["list"]);
    assert!(
        out.contains("cannot read config") && out.contains("nope.toml"),
        "{out}"
    );
    assert_eq!(
        out.matches("No such file or directory").count(),
        1,
        "the OS error is printed once: {out}"
    );
}
