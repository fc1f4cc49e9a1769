//! Where a secret comes from (a file such as a systemd credential, an environment variable, a
//! field of a JSON file, or a literal in a private config), loaded only when needed; Debug
//! never shows a secret.

use std::path::PathBuf;

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
