//! `coffer drill [ID|latest] [--json]`: restore a snapshot into the `[drill]` staging targets,
//! check it, and report the measured recovery time and recovery point.

use std::path::Path;
use std::process::ExitCode;

use super::{human_bytes, human_seconds, load_config};
use crate::cli::DrillArgs;
use crate::drill::{self, DrillFailed, DrillOptions, DrillReport};
use crate::schedule::Trigger;

pub fn run(config_path: &Path, args: &DrillArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let opts = DrillOptions {
        snapshot: &args.snapshot,
        identity: args.identity.as_deref(),
        wait: args.wait.0,
        allow_unsigned: args.allow_unsigned,
    };
    let result = crate::job::run(
        &config,
        "drill",
        Trigger::Manual,
        || drill::drill_checked(&config, &opts),
        drill::finish_of,
    );
    let report = match &result {
        Ok(report) => report,
        Err(e) => match e.downcast_ref::<DrillFailed>() {
            Some(failed) => &failed.report,
            None => return Err(result.unwrap_err()),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        // The report quotes the manifest's host, table names, probe answers and file names:
        // escaped for the terminal.
        print!("{}", crate::text::PrintableLines(&render(report)));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report for people.
pub fn render(r: &DrillReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let verdict = if r.passed() {
        "PASSED".to_string()
    } else {
        format!(
            "FAILED ({} check{})",
            r.failures.len(),
            if r.failures.len() == 1 { "" } else { "s" }
        )
    };
    let _ = writeln!(
        out,
        "drill of snapshot {} (from {}, {}): {verdict}",
        r.snapshot,
        r.snapshot_host,
        human_bytes(r.stored_bytes)
    );
    let s = &r.stages;
    let _ = writeln!(
        out,
        "  recovery time   {}  (download {}, database load {}, file extract {}, checks {}; \
         decrypt+decompress {} of it, alongside)",
        human_seconds(r.recovery_time_seconds),
        human_seconds(s.download),
        human_seconds(s.database_load),
        human_seconds(s.file_extract),
        human_seconds(s.checks),
        human_seconds(s.decrypt_decompress)
    );
    let _ = writeln!(
        out,
        "  recovery point  {}  (the snapshot started {} UTC)",
        human_seconds(r.recovery_point_seconds),
        r.snapshot_created.format("%Y-%m-%d %H:%M:%S")
    );
    for src in &r.sources {
        let what = match (&src.database, &src.files) {
            (Some(db), _) => {
                let judged = db
                    .tables
                    .iter()
                    .filter(|t| {
                        matches!(
                            t.status,
                            crate::staging::TableStatus::Match
                                | crate::staging::TableStatus::Changed
                        )
                    })
                    .count();
                let counts = if db.counts_recorded {
                    format!("{judged} of {} tables match", db.tables.len())
                } else {
                    format!(
                        "{} tables (the snapshot records no row counts)",
                        db.tables.len()
                    )
                };
                let probes = if db.probes.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {} of {} probes pass",
                        db.probes.iter().filter(|p| p.ok).count(),
                        db.probes.len()
                    )
                };
                format!("loaded into {}: {counts}{probes}", db.target)
            }
            (None, Some(f)) => format!(
                "extracted to {}: {} files, {} directories, {} symlinks, {}",
                f.target.display(),
                f.restored.files,
                f.restored.directories,
                f.restored.symlinks,
                human_bytes(f.restored_file_bytes)
            ),
            (None, None) => "read to its end (not loaded)".to_string(),
        };
        let _ = writeln!(
            out,
            "  {} ({}): {what}  [download {}, restore {}, checks {}]",
            src.name,
            src.kind,
            human_seconds(src.download_seconds),
            human_seconds(src.restore_seconds),
            human_seconds(src.check_seconds)
        );
    }
    if let Some(h) = &r.http {
        let _ = writeln!(
            out,
            "  http: GET {} {} in {}",
            h.url,
            match (h.ok, h.status) {
                (true, Some(st)) => format!("answered {st} as expected"),
                (false, _) => "FAILED".to_string(),
                (true, None) => "answered".to_string(),
            },
            human_seconds(h.seconds)
        );
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    if !r.failures.is_empty() {
        let _ = writeln!(out, "failed checks:");
        for f in &r.failures {
            let _ = writeln!(out, "  - {f}");
        }
        let _ = writeln!(
            out,
            "the staging targets are left as they are for inspection"
        );
    }
    out
}
