//! `coffer alert test [--json]`: one test message through every configured channel.

use std::path::Path;
use std::process::ExitCode;

use super::load_config;
use crate::alert::Alerts;
use crate::cli::{AlertAction, AlertArgs};

pub fn run(config_path: &Path, args: &AlertArgs) -> anyhow::Result<ExitCode> {
    let AlertAction::Test { json } = args.action;
    let config = load_config(config_path)?;
    let alerts = Alerts::from_config(&config);
    if alerts.is_empty() {
        anyhow::bail!(
            "{} configures no alert channel that can be used: add [alerts.email], \
             [alerts.sentry] or [alerts.heartbeat] (errors above say why a configured one is \
             off)",
            config.path.display()
        );
    }
    let results = alerts.test();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        let out: Vec<_> = results
            .iter()
            .map(|(name, r)| {
                serde_json::json!({
                    "channel": name,
                    "ok": r.is_ok(),
                    "error": r.as_ref().err(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (name, r) in &results {
            match r {
                Ok(()) => println!("{name:<10} sent"),
                Err(e) => println!("{name:<10} FAILED: {e}"),
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
