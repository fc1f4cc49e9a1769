//! Exit codes a script can act on (`coffer --help` lists them): one provoked for each; and the
//! man page and shell completions made from the command line (the exit codes among them).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::{Env, rich_site};

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn backed_up() -> (Env, std::path::PathBuf, String) {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.config(&site, "16KiB", "");
    let id = env.backup(&config);
    (env, config, id)
}

#[test]
fn usage_config_lock_store_identity_damage_and_source_each_have_their_code() {
    let (env, config, id) = backed_up();
    // 2: the command line.
    assert_eq!(code(&env.run(&config, &["--no-such-flag"])), 2);
    // 3: the configuration.
    assert_eq!(code(&env.run(&env.path("missing.toml"), &["list"])), 3);
    let bad = env.path("bad.toml");
    fs::write(&bad, "state_dir = \"state\"\n[nonsense]\n").unwrap();
    assert_eq!(code(&env.run(&bad, &["list"])), 3);

    // 11: another job holds the lock.
    {
        let _held =
            coffer::lock::lock_state_for(&env.path("state"), "test", std::time::Duration::ZERO)
                .unwrap();
        let out = env.run(&config, &["backup"]);
        assert_eq!(code(&out), 11, "{}", String::from_utf8_lossy(&out.stderr));
    }

    // 12: an identity that does not match.
    let other = env.path("other-identity.txt");
    coffer::keys::generate(&other).unwrap();
    let to = env.path("restored-other");
    let out = env.run(
        &config,
        &[
            "restore",
            "latest",
            "--to",
            to.to_str().unwrap(),
            "--identity",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 12, "{}", String::from_utf8_lossy(&out.stderr));

    // 13: a damaged part, for verify and for restore.
    let part = env.parts(&id)[0].clone();
    let mut bytes = fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&part, bytes).unwrap();
    assert_eq!(code(&env.run(&config, &["verify", "latest"])), 13);
    let to = env.path("restored-damaged");
    let out = env.run(
        &config,
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_eq!(code(&out), 13, "{}", String::from_utf8_lossy(&out.stderr));

    // 14: a source that cannot be read.
    fs::rename(env.path("site"), env.path("site-gone")).unwrap();
    let out = env.run(&config, &["backup"]);
    assert_eq!(code(&out), 14, "{}", String::from_utf8_lossy(&out.stderr));
    fs::rename(env.path("site-gone"), env.path("site")).unwrap();

    // 10: a store that cannot be written.
    let text = fs::read_to_string(&config).unwrap();
    let file = env.path("a-file");
    fs::write(&file, "not a folder").unwrap();
    let unwritable = env.path("unwritable.toml");
    fs::write(
        &unwritable,
        text.replace(
            "path = \"store\"",
            &format!("path = \"{}/store\"", file.display()),
        ),
    )
    .unwrap();
    let out = env.run(&unwritable, &["backup"]);
    assert_eq!(code(&out), 10, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_backup_stopped_by_sigterm_exits_143() {
    let env = Env::new();
    let app = env.path("app.sqlite");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/app.sqlite"),
        &app,
    )
    .unwrap();
    // A dump tool that hangs: the backup is mid-dump when the signal comes.
    let tool = env.path("slow-sqlite3");
    fs::write(
        &tool,
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 3.40.0; exit 0; fi\nexec sleep 30\n",
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let config = env.config_for_source(
        "slow.toml",
        &format!(
            "name = \"app\"\ntype = \"sqlite\"\npath = \"{}\"\ndump_tool = \"{}\"",
            app.display(),
            tool.display()
        ),
    );
    let child = Command::new(assert_cmd::cargo::cargo_bin("coffer"))
        .arg("--config")
        .arg(&config)
        .arg("backup")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "{}", String::from_utf8_lossy(&out.stderr));
    // And no snapshot.
    let snaps = env.store().join("snapshots");
    let manifests = fs::read_dir(&snaps)
        .map(|d| {
            d.filter(|e| e.as_ref().unwrap().path().join("manifest.json").exists())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(manifests, 0);
}

#[test]
fn the_man_page_and_completions_are_made_from_the_commands() {
    let env = Env::new();
    let config = env.path("none.toml");
    let man = env.ok(&config, &["man"]);
    for section in [
        ".TH coffer 1",
        "EXIT STATUS",
        "COFFER BACKUP",
        "COFFER RESTORE",
        "--full",
    ] {
        assert!(man.contains(section), "{section} missing");
    }
    // The exit codes are the ones --help lists.
    assert!(man.contains("another job holds the lock"));
    let help = env.ok(&config, &["--help"]);
    assert!(
        help.contains("Exit codes:") && help.contains("13   damaged"),
        "{help}"
    );
    if crate::support::prerequisite(
        Command::new("groff").arg("--version").output().is_ok(),
        "groff is not installed",
        "apt-get install groff-base",
    ) {
        let file = env.path("coffer.1");
        fs::write(&file, &man).unwrap();
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-z"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (shell, says) in [
        ("bash", "_coffer()"),
        ("zsh", "#compdef coffer"),
        ("fish", "complete -c coffer"),
    ] {
        let out = env.ok(&config, &["completions", shell]);
        assert!(out.contains(says) && out.contains("restore"), "{shell}");
    }
}
