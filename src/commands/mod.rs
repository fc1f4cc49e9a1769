//! One module per subcommand: each loads what it needs, does the work through the library and
//! prints the result (text, or JSON with `--json`).

pub mod alert;
pub mod auth;
pub mod backup;
pub mod bench;
pub mod check;
pub mod daemon;
pub mod drill;
pub mod forget;
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
    let accept = if allow_unsigned {
        crate::snapshot::Accept::TrustedOrUnsigned
    } else {
        crate::snapshot::Accept::Trusted
    };
    let r = crate::snapshot::resolve(store, which, &config.trusted(), accept)?;
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

/// `1.5 GiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `42.1 s`, `3 min 12 s`, `5 h 2 min`, `3 d 4 h` for people.
pub fn human_seconds(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 10.0 {
        return format!("{s:.2} s");
    }
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let whole = s.round() as u64;
    match whole {
        0..3600 => format!("{} min {} s", whole / 60, whole % 60),
        3600..172_800 => format!("{} h {} min", whole / 3600, whole % 3600 / 60),
        _ => format!("{} d {} h", whole / 86400, whole % 86400 / 3600),
    }
}

/// Identities for restore / deep verify: `--identity` or the configured file.
pub(crate) fn load_identities(
    config: &Config,
    flag: Option<&Path>,
) -> anyhow::Result<(Vec<Box<dyn age::Identity + Send + Sync>>, String)> {
    let path = flag
        .or(config.encryption.identity_file.as_deref())
        .ok_or(crate::keys::KeyError::NotConfigured)?;
    let ids = crate::keys::load_identities(path)?;
    Ok((ids, path.display().to_string()))
}
