//! `coffer history [--json] [--since DURATION]`: the audit trail — every recorded run, newest
//! first, with who ran it, the snapshot, where it wrote, and how it ended.

use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;

use super::load_config;
use crate::catalog::Catalog;
use crate::cli::HistoryArgs;
use crate::text::Printable;

pub fn run(config_path: &Path, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let since = Utc::now() - chrono::TimeDelta::from_std(args.since.0).unwrap_or_default();
    let runs = match Catalog::open_existing(&config.state_dir)? {
        Some(mut c) => c.runs_since(since)?,
        None => Vec::new(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!(
            "no run recorded since {} in {}",
            since.format("%Y-%m-%d %H:%M UTC"),
            config.state_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for r in &runs {
        let mut line = format!(
            "{}  {:<7} {:<8} {:<11} {}",
            r.started.format("%Y-%m-%d %H:%M:%S"),
            r.job,
            r.trigger,
            r.outcome.as_str(),
            r.user.as_deref().unwrap_or("(not recorded)")
        );
        if let Some(s) = &r.snapshot {
            line.push_str(&format!("  snapshot {s}"));
        }
        if let Some(t) = &r.target {
            line.push_str(&format!("  into {t}"));
        }
        // Errors and targets quote names from the store and file trees: escaped.
        println!("{}", Printable(&line));
        if let Some(e) = &r.error {
            println!("    {}", Printable(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}
