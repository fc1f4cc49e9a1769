//! Promise 2: parts concatenated in order are one standard age file of a gzip'd pax tar, so
//! stock `age -d` and `tar -xz` restore a snapshot without coffer; and docs/RECOVERY.md's
//! stock-tool commands do so as written, databases included.

use std::fs;
use std::process::{Command, Stdio};

use crate::support::{Env, assert_same_tree, rich_site};

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    crate::support::prerequisite(
        found,
        &format!("{tool} is not installed"),
        "install it; .ci/run does",
    )
}

#[test]
fn stock_age_and_tar_restore_a_multi_part_snapshot() {
    if !have("age") {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.config(&site, "64KiB", "");
    let id = env.backup(&config);
    let parts = env.parts(&id);
    assert!(parts.len() > 1);
    let target = env.path("by-hand");
    fs::create_dir(&target).unwrap();
    // cat parts* | age -d -i key | tar -xz -C target
    let script = format!(
        "cat {} | age -d -i {} | tar -xzp -C {}",
        parts
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect::<Vec<_>>()
            .join(" "),
        env.identity.display(),
        target.display()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&site, &target);
}

#[test]
fn stock_tar_lists_hard_links_as_two_regular_files() {
    if !have("age") {
        return;
    }
    let env = Env::new();
    let site = env.path("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("a.txt"), b"one inode").unwrap();
    fs::hard_link(site.join("a.txt"), site.join("b.txt")).unwrap();
    let config = env.config(&site, "64MiB", "");
    let id = env.backup(&config);
    let parts: Vec<String> = env
        .parts(&id)
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect();
    let script = format!(
        "cat {} | age -d -i '{}' | tar -tvz",
        parts.join(" "),
        env.identity.display()
    );
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    for (line, name) in lines.iter().zip(["a.txt", "b.txt"]) {
        // `-rw-r--r-- root/root 9 … a.txt`: a regular file with its own content, not `h…
        // link to a.txt`.
        assert!(
            line.starts_with('-') && line.ends_with(name) && line.contains(" 9 "),
            "{listing}"
        );
        assert!(!line.contains("link to"), "{listing}");
    }
}

/// The ```sh blocks of docs/RECOVERY.md's restore without coffer (everything before "## With
/// coffer"), in order, without their indentation.
pub(crate) fn recovery_blocks() -> Vec<String> {
    let doc = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RECOVERY.md"),
    )
    .unwrap();
    let by_hand = doc
        .split("## With coffer")
        .next()
        .expect("RECOVERY.md has a section on restoring with coffer");
    let mut blocks = Vec::new();
    let mut lines = by_hand.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            block.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            block.push('\n');
        }
        blocks.push(block);
    }
    blocks
}

#[test]
fn recovery_md_stock_commands_restore_every_source_as_written() {
    use crate::{mysql, postgres};
    // Everything docs/RECOVERY.md tells the operator to type, run as it stands there, with
    // only its placeholders filled in: a change to the doc is a change to what this runs.
    let tools = [
        "age",
        "jq",
        "sha256sum",
        "psql",
        "createdb",
        "mariadb",
        "sqlite3",
    ];
    if !tools.iter().all(|t| have(t))
        || !crate::support::prerequisite(
            Command::new("ssh-keygen").arg("-?").output().is_ok(),
            "ssh-keygen is not installed",
            "apt-get install openssh-client",
        )
    {
        return;
    }
    let (Some(()), Some(())) = (postgres::server(), mysql::server()) else {
        return;
    };
    // The round-trip tests' tricky rows, 5,000 of them (not 50,000): enough for every kind.
    let shorter = |schema: &str, from: &str, to: &str| {
        assert!(schema.contains(from));
        schema.replace(from, to)
    };
    let pg_src = postgres::Db::new("recsrc");
    postgres::psql(
        &pg_src.0,
        &shorter(
            postgres::SCHEMA,
            "generate_series(1, 50000)",
            "generate_series(1, 5000)",
        ),
    );
    let my_src = mysql::Db::new("recsrc");
    mysql::sql(
        &my_src.0,
        &shorter(mysql::SCHEMA, "WHERE n < 50000", "WHERE n < 5000"),
    );
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let app = env.path("app-source.sqlite");
    fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite"),
        &app,
    )
    .unwrap();
    // The sources named as the doc names them.
    let config = env.config(
        &site,
        "256KiB",
        &format!(
            "[[source]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"{}\"\n\
             [[source]]\nname = \"erpdb\"\ntype = \"mysql\"\nurl = \"{}\"\n\
             [[source]]\nname = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\n",
            pg_src.url(),
            my_src.url("root"),
            app.display()
        ),
    );
    let id = env.backup(&config);
    // One fresh name on each server, dropped at the end.
    let restored = postgres::Db::named("recovered");
    let my_restored = mysql::Db(restored.0.clone());
    let key = env.signer_key();
    let by_hand = env.path("by-hand/files");
    let mut script = recovery_blocks().join("");
    for (placeholder, value) in [
        ("20261123T020000Z-3fa9c1", id.as_str()),
        ("ssh-ed25519 AAAA…", key.as_str()),
        ("/srv/restore/files", by_hand.to_str().unwrap()),
        ("-h HOST", "-h 127.0.0.1"),
        ("-U USER", "-U postgres"),
        // `-p` asks for the password on the terminal; the test server's root has none.
        ("-u USER -p", "-u root --password="),
        ("erp_restored", restored.0.as_str()),
    ] {
        assert!(
            script.contains(placeholder),
            "RECOVERY.md no longer says {placeholder:?}:\n{script}"
        );
        script = script.replace(placeholder, value);
    }
    // The blocks this test is about are all there.
    for command in [
        "ssh-keygen -Y verify",
        "sha256sum -c -",
        "parts files | age -d -i identity.txt | tar -xzpG -C",
        "parts files checksums | age -d -i identity.txt | gunzip",
        "parts db | age -d -i identity.txt | gunzip",
        "parts erpdb | age -d -i identity.txt | gunzip | mariadb",
        "parts app | age -d -i identity.txt | gunzip | sqlite3 -safe app.db",
    ] {
        assert!(script.contains(command), "{command} is missing:\n{script}");
    }
    // Run where the doc's relative names are: store/, identity.txt, app.db.
    let out = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Good \"coffer\" signature"), "{stdout}");
    assert!(stdout.contains("all files intact"), "{stdout}");
    assert_same_tree(&site, &by_hand);
    assert_eq!(
        postgres::checksum(&restored.0),
        postgres::checksum(&pg_src.0)
    );
    assert!(postgres::checksum(&restored.0).starts_with("5000:"));
    assert_eq!(mysql::checksum(&my_restored.0), mysql::checksum(&my_src.0));
    let dump = |db: &std::path::Path| {
        let out = Command::new("sqlite3")
            .arg(db)
            .arg(".dump")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let app_restored = env.path("app.db");
    assert_eq!(dump(&app_restored), dump(&app));
    assert!(dump(&app_restored).contains("CREATE VIEW unpaid"));
}
