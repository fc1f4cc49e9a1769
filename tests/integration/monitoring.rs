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

/// The names of the metric families coffer writes (from `src/metrics.rs`).
fn written_families() -> Vec<String> {
    let src = include_str!("../../src/metrics.rs");
    let mut names: Vec<String> = src
        .split('"')
        .filter(|s| {
            s.starts_with("coffer_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_grafana_dashboard_and_the_rules_ask_only_for_metrics_coffer_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let written = written_families();
    assert!(written.len() >= 9, "{written:?}");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("grafana/coffer-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let rules = std::fs::read_to_string(root.join("prometheus/coffer.rules.yml")).unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr: "))
            .map(str::to_string),
    );
    let mut used = 0;
    for expr in &exprs {
        // The job is coffer_job: a scrape's own `job` would rename it.
        assert!(
            !expr.contains("{job=") && !expr.contains(", job="),
            "{expr}"
        );
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("coffer_") && word != "coffer_job" {
                assert!(
                    written.iter().any(|w| w == word),
                    "{word} is not written: {expr}"
                );
                used += 1;
            }
        }
    }
    assert!(used >= 10, "{exprs:?}");
}
