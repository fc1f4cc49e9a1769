//! `coffer prune [--dry-run] [--json]`: applies the retention policy to the store
//! (`crate::prune`) as a recorded job and prints the plan.

use std::path::Path;
use std::process::ExitCode;

use super::load_config;
use crate::cli::PruneArgs;
use crate::prune::{finish_of, prune};
use crate::store;

pub fn run(config_path: &Path, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let work = || {
        let store = store::open(&config.store)?;
        prune(&config, store.as_ref(), args.dry_run, args.wait.0)
    };
    let report = if args.dry_run {
        work()?
    } else {
        crate::job::run(
            &config,
            "prune",
            crate::schedule::Trigger::Manual,
            work,
            finish_of,
        )?
    };
    if args.json {
        let out = serde_json::json!({
            "dry_run": args.dry_run,
            "keep": report.plan.keep.iter().map(|(id, why)| serde_json::json!({
                "id": id,
                "reasons": why.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "prune": report.plan.prune,
            "deleted": report.deleted,
            "swept": report.swept,
            "unreadable": report.unreadable,
            "not_trusted": report.not_trusted.iter().map(|(id, why)| serde_json::json!({
                "id": id,
                "why": why,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (id, why) in &report.plan.keep {
        let why: Vec<String> = why.iter().map(ToString::to_string).collect();
        println!("keep   {id}  ({})", why.join(", "));
    }
    let verb = if args.dry_run {
        "would prune"
    } else {
        "pruned"
    };
    for id in &report.plan.prune {
        println!("{:<6} {id}", if args.dry_run { "prune?" } else { "prune" });
    }
    println!(
        "{verb} {} of {} snapshots, kept {}{}",
        report.plan.prune.len(),
        report.plan.prune.len() + report.plan.keep.len(),
        report.plan.keep.len(),
        if args.dry_run {
            " (dry run: nothing was deleted)"
        } else {
            ""
        }
    );
    if !report.swept.is_empty() {
        println!(
            "removed the parts of {} unfinished snapshots: {}",
            report.swept.len(),
            report.swept.join(", ")
        );
    }
    for u in &report.unreadable {
        println!(
            "note: left alone, its manifest cannot be read: {}",
            crate::text::Printable(u)
        );
    }
    for (id, why) in &report.not_trusted {
        println!(
            "note: left alone and not counted, not signed by a trusted key ({}): {id}; \
             'coffer forget {id}' removes it once you know you do not need it",
            crate::text::Printable(why)
        );
    }
    Ok(ExitCode::SUCCESS)
}
