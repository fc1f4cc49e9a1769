//! `coffer auth gdrive`: sign in once, keep the token (0600) where the store will find it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use super::load_config;
use crate::cli::{AuthArgs, AuthService};
use crate::config::StoreKind;

pub fn run(config_path: &Path, args: &AuthArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    crate::job::audited(&config, "auth", None, |_| sign_in(&config, args))
}

fn sign_in(config: &crate::config::Config, args: &AuthArgs) -> anyhow::Result<ExitCode> {
    match &args.service {
        AuthService::Gdrive { port } => {
            let StoreKind::Gdrive(drive) = &config.store.kind else {
                bail!(
                    "the store in {} is not a Google Drive store (type = \"gdrive\")",
                    config.path.display()
                );
            };
            let token = crate::store::gdrive::authorize(drive, *port).map_err(|e| anyhow!(e))?;
            println!(
                "signed in; the token is in {} (0600). coffer refreshes it by itself; run this \
                 again only if it is revoked.",
                token.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
