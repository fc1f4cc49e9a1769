//! `coffer daemon`: runs the `[jobs.*]` of the config on their schedules until SIGTERM or
//! SIGINT (`crate::daemon`).

use std::path::Path;
use std::process::ExitCode;

use super::load_config;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    crate::daemon::run(load_config(config_path)?)?;
    Ok(ExitCode::SUCCESS)
}
