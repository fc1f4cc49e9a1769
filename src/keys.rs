//! age keys: generating an identity file, and loading identities for restore.
//!
//! The backup host needs only recipients (public keys, in the config). Identity files hold
//! private keys: coffer writes them 0600, never prints them, and warns when one it reads is
//! readable by group or others.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0} already exists; coffer never overwrites an identity file (choose another path or move the old one away)"
    )]
    Exists(PathBuf),
    #[error("writing identity file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading identity file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("identity file {path} holds no usable age identity: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error(
        "no identity file is configured: set encryption.identity_file or pass --identity FILE \
         (restore and verify --deep need the private key)"
    )]
    NotConfigured,
}

/// Writes a new X25519 identity to `path` (mode 0600, never overwriting) and returns its
/// recipient.
///
/// # Errors
/// `Exists` when the file exists; `Write` on any I/O error (a partial file is removed).
pub fn generate(path: &Path) -> Result<age::x25519::Recipient, KeyError> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        identity.to_string().expose_secret()
    );
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(path);
        return Err(KeyError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(recipient)
}

/// The identities of `flag` (`--identity FILE`) or else of the configured `identity_file`,
/// with the path they came from (for messages).
///
/// # Errors
/// `NotConfigured` when neither is given, else as `load_identities`.
pub fn load_chosen(
    flag: Option<&Path>,
    configured: Option<&Path>,
) -> Result<(Vec<Box<dyn age::Identity + Send + Sync>>, String), KeyError> {
    let path = flag.or(configured).ok_or(KeyError::NotConfigured)?;
    let ids = load_identities(path)?;
    Ok((ids, path.display().to_string()))
}

/// Loads every identity in an age identity file.
///
/// # Errors
/// `Read` when the file cannot be read, `Invalid` when it holds no identity.
pub fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "identity file is readable by group or others; chmod 600 it"
        );
    }
    let invalid = |why: String| KeyError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let file =
        age::IdentityFile::from_file(path.to_string_lossy().into_owned()).map_err(|source| {
            KeyError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let ids = file.into_identities().map_err(|e| invalid(e.to_string()))?;
    if ids.is_empty() {
        return Err(invalid("the file is empty".into()));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.txt");
        let recipient = generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&recipient.to_string()));
        assert!(matches!(generate(&path), Err(KeyError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(load_identities(&path).unwrap().len(), 1);
    }
}
