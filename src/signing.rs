//! Signed snapshots: the backup host signs every manifest with an Ed25519 key of its own, and
//! every reader acts only on manifests signed by a key it trusts.
//!
//! age encrypts to *public* recipients, so anyone who can write to the store can mint a
//! snapshot that decrypts with the operator's identity. The signature closes that: a store
//! writer without the backup host's signing key cannot make a manifest that a restoring host
//! accepts, and the manifest's per-part sha256s then authenticate every stored byte.
//!
//! The format is OpenSSH's (SSHSIG, namespace `coffer`, SHA-512), so stock
//! `ssh-keygen -Y verify -f allowed_signers -I <principal> -n coffer -s manifest.json.sig <
//! manifest.json` checks a signature without coffer. Keys are OpenSSH Ed25519 keys: the
//! private key in OpenSSH's file format (unencrypted, 0600), the public key as a line
//! `ssh-ed25519 AAAA… <name>` in `encryption.trusted_signers`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSHSIG namespace of coffer's signatures: a signature made for another purpose (git
/// commits, files) never passes for a manifest's.
pub const NAMESPACE: &str = "coffer";

/// The largest signature file a reader reads (an Ed25519 SSHSIG is under 300 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(
        "{0} already exists; coffer never overwrites a key file (choose another path or move the old one away)"
    )]
    Exists(PathBuf),
    #[error("writing signing key {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading signing key {origin}: {source}")]
    Read {
        origin: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "signing key {origin} is not a usable OpenSSH Ed25519 private key: {why} (make one with \
         'coffer keygen --signing --output FILE')"
    )]
    Invalid { origin: String, why: String },
    #[error("signing with key {origin}: {why}")]
    Sign { origin: String, why: String },
}

/// Where the backup host's signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `[signing] key_file` (a systemd credential, say).
    File(PathBuf),
    /// `[signing] key_env`: the name of a variable holding the key's text.
    Env(String),
    /// Nothing configured: `state_dir/signing-key`, made by the first backup as sshd makes
    /// its host keys.
    Default(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) | KeySource::Default(p) => write!(f, "{}", p.display()),
            KeySource::Env(v) => write!(f, "${v}"),
        }
    }
}

/// The backup host's private signing key. Debug shows its fingerprint only.
pub struct SigningKey {
    key: PrivateKey,
    origin: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public().fingerprint())
            .field("origin", &self.origin)
            .finish()
    }
}

impl SigningKey {
    /// A fresh Ed25519 key; `comment` becomes the name in its public line.
    pub fn generate(comment: &str) -> SigningKey {
        let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
            .expect("the OS random source gives an Ed25519 key");
        key.set_comment(comment);
        SigningKey {
            key,
            origin: "a new key".into(),
        }
    }

    /// Reads a key from OpenSSH private-key text; `origin` names it in messages.
    ///
    /// # Errors
    /// `Invalid` for text that is not an unencrypted OpenSSH Ed25519 private key.
    pub fn from_openssh(text: &str, origin: &str) -> Result<SigningKey, SigningError> {
        let invalid = |why: String| SigningError::Invalid {
            origin: origin.to_string(),
            why,
        };
        let key = PrivateKey::from_openssh(text.trim()).map_err(|e| invalid(e.to_string()))?;
        if key.is_encrypted() {
            return Err(invalid(
                "it is encrypted with a passphrase, which a daemon cannot type; protect it \
                 with file permissions (0600) or a systemd credential instead"
                    .into(),
            ));
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(invalid(format!(
                "it is an {} key, coffer signs with Ed25519",
                key.algorithm()
            )));
        }
        Ok(SigningKey {
            key,
            origin: origin.to_string(),
        })
    }

    /// Loads the key `source` names. A missing default key (`state_dir/signing-key`) is
    /// `None`: the first backup makes it. A key file readable by group or others is used
    /// with a warning.
    ///
    /// # Errors
    /// `Read` when a configured key cannot be read, `Invalid` when it is not a key.
    pub fn load(source: &KeySource) -> Result<Option<SigningKey>, SigningError> {
        let origin = source.to_string();
        let read_err = |source| SigningError::Read {
            origin: origin.clone(),
            source,
        };
        let text = match source {
            KeySource::Env(var) => std::env::var(var).map_err(|_| {
                read_err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the variable {var} is not set (or not UTF-8)"),
                ))
            })?,
            KeySource::File(path) | KeySource::Default(path) => {
                let meta = match std::fs::metadata(path) {
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            && matches!(source, KeySource::Default(_)) =>
                    {
                        return Ok(None);
                    }
                    other => other.map_err(read_err)?,
                };
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        "signing key is readable by group or others; chmod 600 it"
                    );
                }
                std::fs::read_to_string(path).map_err(read_err)?
            }
        };
        SigningKey::from_openssh(&text, &origin).map(Some)
    }

    /// The public half of the key `source` names, for readers: from the private key, or —
    /// when only the private key cannot be read (a systemd credential, root's file read by
    /// another user) — from the `.pub` file beside it.
    ///
    /// # Errors
    /// As `load`, when neither can be read.
    pub fn load_public(source: &KeySource) -> Result<Option<Signer>, SigningError> {
        match SigningKey::load(source) {
            Ok(key) => Ok(key.map(|k| k.public())),
            Err(e @ SigningError::Read { .. }) => {
                let (KeySource::File(path) | KeySource::Default(path)) = source else {
                    return Err(e);
                };
                let pub_path = PathBuf::from(format!("{}.pub", path.display()));
                match std::fs::read_to_string(&pub_path) {
                    Ok(line) => {
                        Signer::parse(&line)
                            .map(Some)
                            .map_err(|why| SigningError::Invalid {
                                origin: pub_path.display().to_string(),
                                why,
                            })
                    }
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the key, or, for the default `state_dir/signing-key` only, makes it (0600, with
    /// its public line beside it in `signing-key.pub`). The flag says it was just made.
    ///
    /// # Errors
    /// As `load`, and `Write` when the new key cannot be written.
    pub fn load_or_create(source: &KeySource) -> Result<(SigningKey, bool), SigningError> {
        if let Some(key) = SigningKey::load(source)? {
            return Ok((key, false));
        }
        let KeySource::Default(path) = source else {
            unreachable!("only a missing default key loads as None")
        };
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let key = SigningKey::generate(&principal_of(&host));
        match key.write_new(path) {
            Ok(()) => Ok((SigningKey::load(source)?.unwrap_or(key), true)),
            // Another coffer made it meanwhile: use theirs.
            Err(SigningError::Exists(_)) => Ok((
                SigningKey::load(source)?.ok_or_else(|| SigningError::Read {
                    origin: source.to_string(),
                    source: io::Error::new(io::ErrorKind::NotFound, "vanished after creation"),
                })?,
                false,
            )),
            Err(e) => Err(e),
        }
    }

    /// Writes the key to `path` (0600, never overwriting) and its public line to
    /// `<path>.pub` (0644).
    ///
    /// # Errors
    /// `Exists` when `path` exists; `Write` on any I/O error (a partial file is removed).
    pub fn write_new(&self, path: &Path) -> Result<(), SigningError> {
        let text = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SigningError::Sign {
                origin: self.origin.clone(),
                why: e.to_string(),
            })?;
        write_file(path, text.as_bytes(), 0o600)?;
        let public = format!("{}\n", self.public().openssh());
        let pub_path = PathBuf::from(format!("{}.pub", path.display()));
        // The public line is a convenience: the key is what counts.
        if let Err(e) = std::fs::remove_file(&pub_path)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| SigningError::Write {
                path: pub_path.clone(),
                source,
            })
            .and_then(|()| write_file(&pub_path, public.as_bytes(), 0o644))
        {
            tracing::warn!("could not write {}: {e}", pub_path.display());
        }
        Ok(())
    }

    /// The public half, as readers trust it.
    pub fn public(&self) -> Signer {
        Signer {
            key: self.key.public_key().clone(),
        }
    }

    /// An SSH signature (PEM text, namespace `coffer`, SHA-512) over `msg`.
    ///
    /// # Errors
    /// `Sign` if the signature cannot be made (never for a valid Ed25519 key).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SigningError> {
        let sign_err = |e: ssh_key::Error| SigningError::Sign {
            origin: self.origin.clone(),
            why: e.to_string(),
        };
        let sig = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, msg)
            .map_err(sign_err)?;
        Ok(sig.to_pem(LineEnding::LF).map_err(sign_err)?.into_bytes())
    }
}

/// The name a new key gets in its public line: the host name, reduced to characters that
/// are safe in an `allowed_signers` file.
pub fn principal_of(host: &str) -> String {
    let name: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        .collect();
    if name.is_empty() {
        "coffer-backup-host".into()
    } else {
        name
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SigningError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                SigningError::Exists(path.to_path_buf())
            } else {
                SigningError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    if let Err(source) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(SigningError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// A public signing key: a line of `encryption.trusted_signers`.
#[derive(Clone, PartialEq, Eq)]
pub struct Signer {
    key: PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} {})", self.name(), self.fingerprint())
    }
}

impl Signer {
    /// Parses `ssh-ed25519 AAAA… name`.
    ///
    /// # Errors
    /// A message saying what is wrong with the line.
    pub fn parse(line: &str) -> Result<Signer, String> {
        let key = PublicKey::from_openssh(line.trim())
            .map_err(|e| format!("not an OpenSSH public key line ({e})"))?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(format!(
                "an {} key; coffer's signatures are Ed25519 (ssh-ed25519 AAAA…)",
                key.algorithm()
            ));
        }
        Ok(Signer { key })
    }

    /// The name after the key (its comment), or `-` when it has none.
    pub fn name(&self) -> &str {
        match self.key.comment() {
            "" => "-",
            c => c,
        }
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The line to put in `trusted_signers`: `ssh-ed25519 AAAA… name`.
    pub fn openssh(&self) -> String {
        self.key
            .to_openssh()
            .expect("an Ed25519 public key always encodes")
    }

    /// A line of an OpenSSH `allowed_signers` file for `ssh-keygen -Y verify`.
    pub fn allowed_signers_line(&self, principal: &str) -> String {
        let mut bare = self.key.clone();
        bare.set_comment("");
        format!(
            "{principal} namespaces=\"{NAMESPACE}\" {}",
            bare.to_openssh()
                .expect("an Ed25519 public key always encodes")
                .trim()
        )
    }
}

/// What a reader makes of a snapshot's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "trust", rename_all = "kebab-case")]
pub enum Trust {
    /// Signed by a trusted key, and the signature matches the manifest.
    Trusted { signer: String, fingerprint: String },
    /// No signature (a snapshot made before coffer signed its snapshots, or planted).
    Unsigned,
    /// A signature that does not match, by an unknown key, or unreadable.
    Untrusted { why: String },
}

impl Trust {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Trust::Trusted { .. })
    }

    /// One word for listings: `signed`, `UNSIGNED`, `UNTRUSTED`.
    pub fn mark(&self) -> &'static str {
        match self {
            Trust::Trusted { .. } => "signed",
            Trust::Unsigned => "UNSIGNED",
            Trust::Untrusted { .. } => "UNTRUSTED",
        }
    }
}

/// The keys a reader trusts: `encryption.trusted_signers` and the host's own key.
#[derive(Debug, Clone, Default)]
pub struct Trusted {
    signers: Vec<Signer>,
}

impl Trusted {
    pub fn new(signers: impl IntoIterator<Item = Signer>) -> Trusted {
        let mut out: Vec<Signer> = Vec::new();
        for s in signers {
            if !out.iter().any(|o| o.key.key_data() == s.key.key_data()) {
                out.push(s);
            }
        }
        Trusted { signers: out }
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// Checks `signature` (the bytes of `manifest.json.sig`) over `msg` (the exact bytes of
    /// `manifest.json`).
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Trust {
        let untrusted = |why: String| Trust::Untrusted { why };
        let Ok(text) = std::str::from_utf8(signature) else {
            return untrusted("its signature file is not an SSH signature (not text)".into());
        };
        let sig = match SshSig::from_pem(text.trim()) {
            Ok(sig) => sig,
            Err(e) => {
                return untrusted(format!("its signature file is not an SSH signature ({e})"));
            }
        };
        if sig.namespace() != NAMESPACE {
            return untrusted(format!(
                "its signature is for another purpose (namespace '{}', not '{NAMESPACE}')",
                crate::text::Printable(sig.namespace())
            ));
        }
        let Some(signer) = self
            .signers
            .iter()
            .find(|s| s.key.key_data() == sig.public_key())
        else {
            return untrusted(format!(
                "it is signed by {}, which is not a trusted signer",
                ssh_key::Fingerprint::new(HashAlg::Sha256, sig.public_key())
            ));
        };
        match signer.key.verify(NAMESPACE, msg, &sig) {
            Ok(()) => Trust::Trusted {
                signer: signer.name().to_string(),
                fingerprint: signer.fingerprint(),
            },
            Err(_) => untrusted(format!(
                "its signature by {} ({}) does not match its manifest: the manifest was \
                 altered, or the signature moved from another snapshot",
                signer.name(),
                signer.fingerprint()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_only_the_exact_bytes() {
        let key = SigningKey::generate("host-a");
        let trusted = Trusted::new([key.public()]);
        let msg = b"{\"id\": \"x\"}\n";
        let sig = key.sign(msg).unwrap();
        assert!(trusted.verify(msg, &sig).is_trusted());
        let mut altered = msg.to_vec();
        altered[3] ^= 1;
        assert!(matches!(
            trusted.verify(&altered, &sig),
            Trust::Untrusted { why } if why.contains("does not match")
        ));
        let mut bad_sig = sig.clone();
        let mid = bad_sig.len() / 2;
        bad_sig[mid] = if bad_sig[mid] == b'A' { b'B' } else { b'A' };
        assert!(!trusted.verify(msg, &bad_sig).is_trusted());
    }

    #[test]
    fn an_unknown_key_is_not_trusted() {
        let ours = SigningKey::generate("ours");
        let theirs = SigningKey::generate("theirs");
        let msg = b"manifest";
        let trust = Trusted::new([ours.public()]).verify(msg, &theirs.sign(msg).unwrap());
        assert!(
            matches!(&trust, Trust::Untrusted { why } if why.contains(&theirs.public().fingerprint())),
            "{trust:?}"
        );
        assert!(
            !Trusted::default()
                .verify(msg, &ours.sign(msg).unwrap())
                .is_trusted()
        );
    }

    #[test]
    fn keys_round_trip_through_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key");
        let key = SigningKey::generate("h");
        key.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(key.write_new(&path), Err(SigningError::Exists(_))));
        let loaded = SigningKey::load(&KeySource::File(path.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(loaded.public(), key.public());
        let line = std::fs::read_to_string(dir.path().join("signing-key.pub")).unwrap();
        assert_eq!(Signer::parse(&line).unwrap(), key.public());
        assert!(format!("{loaded:?}").contains("SHA256:"));
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_default_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::Default(dir.path().join("signing-key"));
        assert!(SigningKey::load(&source).unwrap().is_none());
        let (a, made) = SigningKey::load_or_create(&source).unwrap();
        assert!(made);
        let (b, made) = SigningKey::load_or_create(&source).unwrap();
        assert!(!made);
        assert_eq!(a.public(), b.public());
        // A configured file that is missing is an error, never silently made.
        assert!(SigningKey::load(&KeySource::File(dir.path().join("nope"))).is_err());
    }

    #[test]
    fn trusted_signers_lines_must_be_ed25519() {
        let key = SigningKey::generate("backup-host");
        let line = key.public().openssh();
        assert!(line.starts_with("ssh-ed25519 AAAA") && line.ends_with(" backup-host"));
        assert_eq!(Signer::parse(&line).unwrap().name(), "backup-host");
        assert!(Signer::parse("ssh-ed25519 garbage").is_err());
        assert!(Signer::parse("age1qqqq").is_err());
    }

    #[test]
    fn ssh_keygen_verifies_our_signatures() {
        let Ok(out) = std::process::Command::new("ssh-keygen").arg("-?").output() else {
            assert!(
                std::env::var("CI").is_err(),
                "ssh-keygen (openssh-client) is needed under CI"
            );
            return;
        };
        drop(out);
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("backup-host");
        let msg = b"{\"format\": \"coffer-snapshot\"}\n";
        let (m, s, a) = (
            dir.path().join("manifest.json"),
            dir.path().join("manifest.json.sig"),
            dir.path().join("allowed_signers"),
        );
        std::fs::write(&m, msg).unwrap();
        std::fs::write(&s, key.sign(msg).unwrap()).unwrap();
        std::fs::write(
            &a,
            format!("{}\n", key.public().allowed_signers_line("backup-host")),
        )
        .unwrap();
        let verify = |file: &Path| {
            std::process::Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f"])
                .arg(&a)
                .args(["-I", "backup-host", "-n", NAMESPACE, "-s"])
                .arg(&s)
                .stdin(std::fs::File::open(file).unwrap())
                .output()
                .unwrap()
        };
        let out = verify(&m);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&m, b"{\"format\": \"coffer-snapshoT\"}\n").unwrap();
        assert!(!verify(&m).status.success());
    }
}
