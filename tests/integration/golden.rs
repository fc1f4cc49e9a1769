//! Snapshots committed in fixtures/ (made once, never regenerated) must stay verifiable and
//! restorable by every later coffer: golden-v1 (an unsigned folder), golden-v1-sql (signed: a
//! folder, its checksum stream and a SQLite dump) and golden-v2 (a full and a differential).

use std::fs;
use std::path::Path;

use crate::support::{Env, walk};

#[test]
fn format_v1_golden_snapshot_still_restores() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let env = Env::new();
    let config = env.path("golden.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[encryption]\nrecipients = [\"age16zg93csty3wy00r8tswvwng786qwkztyftetahrtzqpcmgdgk9qsn50yet\"]\n\
             identity_file = \"{}\"\n[store]\ntype = \"local\"\npath = \"{}\"\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n",
            root.join("quickstart-identity.txt").display(),
            root.join("golden-v1/store").display(),
            root.join("site").display(),
        ),
    )
    .unwrap();
    // Format 1 snapshots before signatures are unsigned: refused unless the operator says
    // they are theirs.
    let target = env.path("restored");
    let out = env.fails(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert!(out.contains("no trusted signing key"), "{out}");
    assert!(!target.exists());
    let out = env.ok(&config, &["verify", "--all", "--deep", "--allow-unsigned"]);
    assert!(out.contains("ok ") && out.contains("5 parts"), "{out}");
    let out = env.run(
        &config,
        &[
            "restore",
            "latest",
            "--to",
            target.to_str().unwrap(),
            "--allow-unsigned",
        ],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not signed"),
        "the operator is warned"
    );
    // git keeps neither mtimes nor most modes: compare kinds, bytes and link targets.
    let site = root.join("site");
    let expected: Vec<_> = walk(&site)
        .into_iter()
        // The make config excluded private/backups/** (the folder itself stays).
        .filter(|p| p.parent() != Some(Path::new("private/backups")))
        .collect();
    assert_eq!(walk(&target), expected);
    for rel in expected {
        let (a, b) = (site.join(&rel), target.join(&rel));
        let meta = fs::symlink_metadata(&a).unwrap();
        if meta.file_type().is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
        } else if meta.is_file() {
            assert_eq!(
                fs::read(&a).unwrap(),
                fs::read(&b).unwrap(),
                "{}",
                rel.display()
            );
        } else {
            assert!(b.is_dir());
        }
    }
}

/// One line per entry below `root`, sorted: `dir MODE MTIME path/`, `file MODE MTIME SHA256
/// path`, `link MTIME TARGET path`.
fn listing(root: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for rel in walk(root) {
        let abs = root.join(&rel);
        let m = fs::symlink_metadata(&abs).unwrap();
        let (mode, mtime, name) = (m.mode() & 0o7777, m.mtime(), rel.display());
        out.push_str(&if m.file_type().is_symlink() {
            let target = fs::read_link(&abs).unwrap();
            format!("link {mtime} {} {name}\n", target.display())
        } else if m.is_dir() {
            format!("dir {mode:o} {mtime} {name}/\n")
        } else {
            let sha = hex::encode(Sha256::digest(fs::read(&abs).unwrap()));
            format!("file {mode:o} {mtime} {sha} {name}\n")
        });
    }
    out
}

/// A copy of the signed golden store `fixtures/<name>/store` (nothing a reader does may touch
/// the committed bytes) and a config reading it that trusts only its `signer.pub`, with
/// `extra` TOML; the store's path and the config's.
fn golden_copy(env: &Env, name: &str, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let golden = root.join(name);
    let store = env.path("golden-store");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(golden.join("store"))
        .arg(&store)
        .status()
        .unwrap();
    assert!(copy.success());
    let signer = fs::read_to_string(golden.join("signer.pub")).unwrap();
    let config = env.path("golden.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[encryption]\n\
             recipients = [\"age16zg93csty3wy00r8tswvwng786qwkztyftetahrtzqpcmgdgk9qsn50yet\"]\n\
             identity_file = \"{}\"\ntrusted_signers = [\"{}\"]\n\
             [store]\ntype = \"local\"\npath = \"{}\"\n{extra}",
            root.join("quickstart-identity.txt").display(),
            signer.trim(),
            store.display(),
        ),
    )
    .unwrap();
    (store, config)
}

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// Made fixtures/golden-v1-sql once (see its make.toml). Never run again: it refuses to
/// overwrite the committed snapshot.
#[test]
#[ignore = "made the committed golden-v1-sql fixture once"]
fn make_golden_v1_sql() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = root.join("golden-v1-sql");
    assert!(
        !dir.join("store").exists(),
        "never regenerate the golden snapshot"
    );
    let env = Env::new();
    let config = dir.join("make.toml");
    env.backup(&config);
    let state = root.join("../data/golden-v1-sql-state");
    fs::copy(state.join("signing-key.pub"), dir.join("signer.pub")).unwrap();
    // What the restore must give back: the folder as it was backed up (the make config
    // excluded private/backups/**), and the dump's bytes as they were stored.
    let restored = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", restored.to_str().unwrap()],
    );
    let site = listing(&root.join("site"));
    let expected: String = site
        .lines()
        .filter(|l| !l.ends_with("old-backup.sql.gz"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(listing(&restored.join("files")), expected);
    fs::create_dir_all(dir.join("expected")).unwrap();
    fs::write(dir.join("expected/files.txt"), expected).unwrap();
    fs::write(
        dir.join("expected/app.sql.sha256"),
        format!("{}  app.sql\n", sha256_file(&restored.join("app.sql"))),
    )
    .unwrap();
}

#[test]
fn format_v1_golden_snapshot_with_checksums_and_a_sql_dump_still_restores() {
    if !crate::support::prerequisite(
        std::process::Command::new("sqlite3")
            .arg("--version")
            .output()
            .is_ok(),
        "sqlite3 is not installed",
        "apt-get install sqlite3",
    ) {
        return;
    }
    let env = Env::new();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden-v1-sql");
    let drill = format!(
        "[drill]\nstaging_dir = \"{}\"\n\
         [[drill.database]]\nsource = \"app\"\nurl = \"sqlite://{}\"\n\
         probes = [\"SELECT count(*) FROM invoice\"]\n",
        env.path("drill").display(),
        env.path("drill-app.db").display(),
    );
    let (store, config) = golden_copy(&env, "golden-v1-sql", &drill);
    // Signed by the key that made it, with a folder, its checksum stream and a SQL dump.
    let list = env.ok(&config, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(
        v[0]["sources"],
        serde_json::json!(["files", "app"]),
        "{v:#}"
    );
    let id = v[0]["id"].as_str().unwrap();
    let snap = store.join("snapshots").join(id);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(snap.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["format_version"], 1);
    assert!(snap.join("manifest.json.sig").is_file());
    assert_eq!(
        m["sources"][0]["checksums"]["stream"],
        "files.sha256.gz.age"
    );
    assert_eq!(m["sources"][1]["stream"], "app.sql.gz.age");
    assert!(m["sources"][0]["parts"].as_array().unwrap().len() > 1);
    let out = env.ok(&config, &["verify", "--all", "--deep"]);
    assert!(out.contains("ok "), "{out}");

    // Restored byte for byte, with the modes and mtimes the tar holds.
    let target = env.path("restored");
    env.ok(
        &config,
        &["restore", "latest", "--to", target.to_str().unwrap()],
    );
    assert_eq!(
        listing(&target.join("files")),
        fs::read_to_string(golden.join("expected/files.txt")).unwrap()
    );
    assert_eq!(
        format!("{}  app.sql\n", sha256_file(&target.join("app.sql"))),
        fs::read_to_string(golden.join("expected/app.sql.sha256")).unwrap()
    );
    let staging = env.path("staging.db");
    let out = env.ok(
        &config,
        &[
            "restore",
            "latest",
            "--source",
            "app",
            "--db-url",
            &format!("sqlite://{}", staging.display()),
            "--create",
            "--json",
        ],
    );
    assert!(
        out.contains("\"customer\"") && out.contains("\"invoice\""),
        "{out}"
    );

    // The drill checks every restored file against the checksum stream and the loaded
    // database against the manifest's counts.
    let out = env.run(&config, &["drill", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r:#}");
    let files = r["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "files")
        .unwrap();
    assert_eq!(files["files"]["hashed"], 5, "{r:#}");
    assert_eq!(files["files"]["hash_failures"], 0, "{r:#}");
}

/// Made fixtures/golden-v2 once (see its make.toml). Never run again: it refuses to
/// overwrite the committed snapshots.
#[test]
#[ignore = "made the committed golden-v2 fixture once"]
fn make_golden_v2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let dir = root.join("golden-v2");
    assert!(
        !dir.join("store").exists(),
        "never regenerate the golden snapshots"
    );
    let env = Env::new();
    let config = dir.join("make.toml");
    let site = root.join("../data/golden-v2-site");
    let _ = fs::remove_dir_all(&site);
    let _ = fs::remove_dir_all(root.join("../data/golden-v2-state"));
    fs::create_dir_all(root.join("../data")).unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(root.join("site"))
        .arg(&site)
        .status()
        .unwrap();
    assert!(copy.success());
    let full = env.backup(&config);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(site.join("site_config.json"), "{\"db_name\": \"day2\"}\n").unwrap();
    let first_public = fs::read_dir(site.join("public/files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::symlink_metadata(p).unwrap().is_file())
        .expect("the fixture site has a public file");
    fs::remove_file(first_public).unwrap();
    fs::create_dir_all(site.join("private/files/2026-12")).unwrap();
    fs::write(
        site.join("private/files/2026-12/credit-note.txt"),
        "CN-0001\n",
    )
    .unwrap();
    let diff = env.backup(&config);
    fs::copy(
        root.join("../data/golden-v2-state/signing-key.pub"),
        dir.join("signer.pub"),
    )
    .unwrap();
    fs::create_dir_all(dir.join("expected")).unwrap();
    for (name, id) in [("full", &full), ("differential", &diff)] {
        let restored = env.path(name);
        env.ok(
            &config,
            &["restore", id, "--to", restored.to_str().unwrap()],
        );
        fs::write(
            dir.join(format!("expected/{name}.txt")),
            format!("{id}\n{}", listing(&restored)),
        )
        .unwrap();
    }
    let _ = fs::remove_dir_all(&site);
}

#[test]
fn format_v2_golden_pair_restores_the_full_and_the_differential() {
    let env = Env::new();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden-v2");
    let (store, config) = golden_copy(&env, "golden-v2", "");
    let out = env.ok(&config, &["verify", "--all", "--deep"]);
    assert!(!out.contains("BAD"), "{out}");
    for name in ["full", "differential"] {
        let expected = fs::read_to_string(golden.join(format!("expected/{name}.txt"))).unwrap();
        let (id, tree) = expected.split_once('\n').unwrap();
        let m: serde_json::Value = serde_json::from_slice(
            &fs::read(store.join("snapshots").join(id).join("manifest.json")).unwrap(),
        )
        .unwrap();
        let version = if name == "full" { 1 } else { 2 };
        assert_eq!(m["format_version"], version, "{m:#}");
        assert_eq!(
            m["sources"][0]["differential"].is_object(),
            name == "differential"
        );
        let target = env.path(name);
        env.ok(&config, &["restore", id, "--to", target.to_str().unwrap()]);
        assert_eq!(listing(&target), tree, "{name} {id}");
    }
}
