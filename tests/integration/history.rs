//! The audit trail: every run that touches the backups, by hand or by the daemon, is in
//! `coffer history` with who ran it, the snapshot and where the data went, and logs one line.

use std::fs;

use assert_cmd::Command;

use crate::support::{Env, rich_site};

#[test]
fn a_restore_by_hand_is_recorded_with_who_ran_it_the_snapshot_and_the_target() {
    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let config = env.config(&site, "16KiB", "");
    let id = env.backup(&config);
    let to = env.path("restored");
    let out = Command::cargo_bin("coffer")
        .unwrap()
        .arg("--config")
        .arg(&config)
        .args(["restore", &id, "--to", to.to_str().unwrap()])
        .env("SUDO_USER", "alice")
        .env_remove("COFFER_LOG")
        .output()
        .unwrap();
    assert!(out.status.success());
    // One structured line, logged whatever the level.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("coffer::audit") && log.contains("restore success"),
        "{log}"
    );
    assert!(log.contains("via sudo from alice"), "{log}");
    // A failed one too: the identity does not match.
    let other = env.path("other.txt");
    coffer::keys::generate(&other).unwrap();
    let failed_to = env.path("restored-other");
    env.fails(
        &config,
        &[
            "restore",
            &id,
            "--to",
            failed_to.to_str().unwrap(),
            "--identity",
            other.to_str().unwrap(),
        ],
    );
    env.ok(&config, &["verify", &id]);

    let runs: serde_json::Value =
        serde_json::from_str(&env.ok(&config, &["history", "--json"])).unwrap();
    let runs = runs.as_array().unwrap();
    let of = |job: &str| -> Vec<&serde_json::Value> {
        runs.iter().filter(|r| r["job"] == job).collect()
    };
    let restores = of("restore");
    assert_eq!(restores.len(), 2, "{runs:#?}");
    // Newest first: the failed one, then the good one.
    assert_eq!(restores[0]["outcome"], "failure");
    assert_eq!(restores[0]["target"], failed_to.to_str().unwrap());
    assert!(restores[0]["error"].as_str().unwrap().contains("identity"));
    let good = restores[1];
    assert_eq!(good["outcome"], "success");
    assert_eq!(good["snapshot"], id.as_str());
    assert_eq!(good["target"], to.to_str().unwrap());
    let user = good["user"].as_str().unwrap();
    let uid = rustix::process::getuid().as_raw();
    assert!(
        user.contains(&format!("(uid {uid})")) && user.ends_with("via sudo from alice"),
        "{user}"
    );
    assert_eq!(of("verify")[0]["snapshot"], id.as_str());
    assert_eq!(of("backup")[0]["snapshot"], id.as_str());
    // And for people.
    let text = env.ok(&config, &["history"]);
    assert!(
        text.contains("restore") && text.contains(&format!("into {}", to.display())),
        "{text}"
    );
    assert!(fs::read_dir(&to).unwrap().next().is_some());
}
