//! One module per subcommand: each loads the config, calls one engine of the library (through
//! `job::run` when the run is recorded) and prints the result (text, or JSON with `--json`).
//! No engine logic lives here, and nothing in the library imports this module.

pub mod alert;
pub mod auth;
pub mod backup;
pub mod check;
pub mod daemon;
pub mod docs;
pub mod drill;
pub mod forget;
pub mod history;
pub mod init;
pub mod keygen;
pub mod list;
pub mod prune;
pub mod restore;
pub mod status;
pub mod verify;

use std::path::Path;

use anyhow::Context;

use crate::config::Config;

/// Loads the config named on the command line.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).context("loading the configuration (--config or COFFER_CONFIG)")
}

/// Resolves `latest` or an id to a snapshot this host may act on (signed by a trusted key,
/// or with `allow_unsigned` also unsigned), telling on stderr which newer snapshots were
/// passed over and when an unsigned one is used.
///
/// # Errors
/// As `snapshot::resolve`.
pub(crate) fn resolve_snapshot(
    config: &Config,
    store: &dyn crate::store::Store,
    which: &str,
    allow_unsigned: bool,
) -> anyhow::Result<crate::snapshot::Manifest> {
    let r = crate::snapshot::resolve(store, which, &config.trusted(), accept(allow_unsigned))?;
    for p in &r.passed_over {
        eprintln!("note: passed over {}", crate::text::Printable(p));
    }
    if r.trust == crate::signing::Trust::Unsigned {
        eprintln!(
            "warning: snapshot {} is not signed; it is used because of --allow-unsigned. \
             Anyone with write access to the store could have made it",
            r.manifest.id
        );
    }
    Ok(r.manifest)
}

/// The fulls that the differentials of `m` (of source `only`, or all) build on, trusted as
/// `m` had to be. Fails before anything is written when one is gone or not the stream the
/// differential names.
pub(crate) fn read_bases(
    config: &Config,
    store: &dyn crate::store::Store,
    m: &crate::snapshot::Manifest,
    only: Option<&str>,
    allow_unsigned: bool,
) -> anyhow::Result<crate::snapshot::Bases> {
    Ok(crate::snapshot::read_bases(
        store,
        m,
        only,
        &config.trusted(),
        accept(allow_unsigned),
    )?)
}

/// Which snapshots a reader acts on: trusted ones, and with `--allow-unsigned` unsigned ones.
fn accept(allow_unsigned: bool) -> crate::snapshot::Accept {
    if allow_unsigned {
        crate::snapshot::Accept::TrustedOrUnsigned
    } else {
        crate::snapshot::Accept::Trusted
    }
}

pub use crate::units::{human_bytes, human_seconds};

/// The exit code a failed command's error chain means (`exit::Code`; `coffer --help` lists
/// them). Read from the typed errors in the chain, the most telling first.
pub fn exit_code(err: &anyhow::Error) -> crate::exit::Code {
    use crate::exit::Code;
    use crate::snapshot::SnapshotError;
    if crate::shutdown::is_stopped(err) {
        return match crate::shutdown::signal() {
            Some(2) => Code::Interrupted,
            _ => Code::Terminated,
        };
    }
    if crate::lock::is_busy(err) {
        return Code::Locked;
    }
    let chain = || err.chain();
    if chain().any(|e| e.is::<crate::config::ConfigError>()) {
        return Code::Config;
    }
    if chain().any(|e| {
        e.is::<crate::keys::KeyError>()
            || matches!(
                e.downcast_ref::<crate::pipeline::DecodeError>(),
                Some(crate::pipeline::DecodeError::NoMatchingIdentity { .. })
            )
    }) {
        return Code::Identity;
    }
    let part = crate::pipeline::find_part_problem(err.as_ref());
    let damaged = chain().any(|e| {
        e.is::<crate::exit::Damaged>()
            || e.is::<crate::drill::DrillFailed>()
            || matches!(
                e.downcast_ref::<SnapshotError>(),
                Some(
                    SnapshotError::NotTrusted { .. }
                        | SnapshotError::Unsigned { .. }
                        | SnapshotError::BadManifest { .. }
                        | SnapshotError::BaseMissing { .. }
                )
            )
            || matches!(
                e.downcast_ref::<crate::archive::RestoreError>(),
                Some(crate::archive::RestoreError::Unsafe { .. })
            )
    }) || part.is_some_and(crate::pipeline::PartProblem::is_damage);
    if damaged {
        return Code::Damaged;
    }
    if let Some(f) = err.downcast_ref::<crate::backup::Failed>()
        && matches!(f.stage, "reading the source" | "connecting to the database")
    {
        return Code::Source;
    }
    if part.is_some() || chain().any(|e| e.is::<crate::store::StoreError>()) {
        return Code::Store;
    }
    Code::Failure
}

/// Identities for restore / deep verify: `--identity` or the configured file.
pub(crate) fn load_identities(
    config: &Config,
    flag: Option<&Path>,
) -> anyhow::Result<(Vec<Box<dyn age::Identity + Send + Sync>>, String)> {
    Ok(crate::keys::load_chosen(
        flag,
        config.encryption.identity_file.as_deref(),
    )?)
}
