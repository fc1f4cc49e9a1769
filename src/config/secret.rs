//! Secrets in a config: `<name>_file` (a systemd credential, say), `<name>_env`, or a literal
//! in a config only its owner can read (`crate::secret` holds the type).

use std::path::{Path, PathBuf};

use crate::secret::{LiteralSecret, SecretRef};

/// Whether nobody but the owner can read the config file (so it may hold a literal secret).
pub(super) fn config_is_private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

/// A secret given as `<name>_file`, `<name>_env` or (literal, in a private config) `<name>`.
pub(super) fn secret_of(
    key: &str,
    literal: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    private: bool,
    problems: &mut Vec<String>,
) -> Option<SecretRef> {
    match (literal, file, env) {
        (None, None, None) => None,
        (Some(v), None, None) => {
            if !private {
                problems.push(format!(
                    "{key} is written in the config, but the config file is readable by others: \
                     chmod 600 it, or use {key}_file / {key}_env"
                ));
            }
            Some(SecretRef::Literal(LiteralSecret(
                secrecy::SecretString::from(v),
            )))
        }
        (None, Some(f), None) => Some(SecretRef::File(resolve(&f))),
        (None, None, Some(v)) => Some(SecretRef::Env(v)),
        _ => {
            problems.push(format!("{key}: give one of {key}, {key}_file or {key}_env"));
            None
        }
    }
}
