//! Monitoring that plugs in: the Prometheus alert rules in contrib/prometheus pass their
//! `promtool test rules`, and the metrics text file coffer writes passes `promtool check
//! metrics`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Env, prerequisite, rich_site};

fn promtool() -> bool {
    prerequisite(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is not installed",
        "apt-get install --no-install-recommends prometheus",
    )
}

#[test]
fn the_alert_rules_pass_their_tests_and_the_metrics_file_passes_promtool() {
    if !promtool() {
        return;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
    let out = Command::new("promtool")
        .args(["test", "rules", "coffer.rules.test.yml"])
        .current_dir(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let env = Env::new();
    let site = env.path("site");
    rich_site(&site);
    let prom = env.path("coffer.prom");
    let config = env.config(
        &site,
        "64KiB",
        &format!("[metrics]\ntextfile = \"{}\"\n", prom.display()),
    );
    env.backup(&config);
    env.ok(&config, &["prune"]);
    let text = std::fs::read(&prom).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("coffer_job=\"backup\""));
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(&text).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
