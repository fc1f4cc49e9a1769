//! Secrets in a config: `<name>_file` (a systemd credential, say), `<name>_env`, or a literal
//! in a config only its owner can read; Debug never shows one.

use std::path::{Path, PathBuf};

/// Where a secret comes from — a file (e.g. a systemd credential) or an environment
/// variable — never the secret itself, so a config can be printed and debugged safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
    /// A string field of a JSON file (a Frappe site_config.json's `db_password`).
    JsonField {
        file: PathBuf,
        field: String,
    },
    /// Written in the config itself (accepted only when the config file is private).
    Literal(LiteralSecret),
}

/// A secret written in the config; shown as `[redacted]`.
#[derive(Clone)]
pub struct LiteralSecret(pub secrecy::SecretString);

impl PartialEq for LiteralSecret {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for LiteralSecret {}

impl std::fmt::Debug for LiteralSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SecretRef {
    /// Reads the secret (a file's trailing newline is dropped).
    ///
    /// # Errors
    /// A message naming the file or variable, never the value.
    pub fn load(&self) -> Result<secrecy::SecretString, String> {
        match self {
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| secrecy::SecretString::from(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
            SecretRef::Env(var) => std::env::var(var)
                .map(secrecy::SecretString::from)
                .map_err(|_| format!("environment variable {var} (holding a secret) is not set")),
            SecretRef::Literal(secret) => Ok(secret.0.clone()),
            SecretRef::JsonField { file, field } => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let json: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
                json.get(field)
                    .and_then(|v| v.as_str())
                    .map(|s| secrecy::SecretString::from(s.to_string()))
                    .ok_or_else(|| format!("{} has no string field '{field}'", file.display()))
            }
        }
    }
}

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
