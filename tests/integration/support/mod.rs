//! Shared helpers: sites on disk, configs, running the real binary, comparing trees.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

pub mod fake_drive;
pub mod fault_proxy;
pub mod garage;
pub mod sinks;

/// A scratch area with a store, a state folder and keys.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub identity: PathBuf,
    pub recipient: String,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let identity = dir.path().join("identity.txt");
        let recipient = coffer::keys::generate(&identity).unwrap().to_string();
        Env {
            dir,
            identity,
            recipient,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// Writes `bytes` as the manifest at `path` and signs them with the test host's key, as
    /// the backup host itself would (tests that make a snapshot say something else).
    pub fn write_signed_manifest(&self, path: &Path, bytes: &[u8]) {
        fs::write(path, bytes).unwrap();
        let sig = self.signing_key().sign(bytes).unwrap();
        fs::write(path.with_file_name("manifest.json.sig"), sig).unwrap();
    }

    /// The `trusted_signers` line of the test host's key.
    pub fn signer_line(&self) -> String {
        self.signing_key().public().openssh()
    }

    /// The `ssh-ed25519 AAAA…` of the key the test host's first backup made (its
    /// `state/signing-key.pub`, without the comment).
    pub fn signer_key(&self) -> String {
        let public = fs::read_to_string(self.path("state/signing-key.pub")).unwrap();
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The test host's own signing key (`state/signing-key`, made as the first backup would).
    pub fn signing_key(&self) -> coffer::signing::SigningKey {
        fs::create_dir_all(self.path("state")).unwrap();
        fs::set_permissions(self.path("state"), fs::Permissions::from_mode(0o700)).unwrap();
        coffer::signing::SigningKey::load_or_create(&coffer::signing::KeySource::Default(
            self.path("state/signing-key"),
        ))
        .unwrap()
        .0
    }

    /// Writes a config backing up `site` as source `files` and returns its path.
    pub fn config(&self, site: &Path, part_size: &str, extra: &str) -> PathBuf {
        self.config_with(
            site,
            part_size,
            std::slice::from_ref(&self.recipient),
            extra,
        )
    }

    pub fn config_with(
        &self,
        site: &Path,
        part_size: &str,
        recipients: &[String],
        extra: &str,
    ) -> PathBuf {
        let path = self.path("coffer.toml");
        let recipients: Vec<String> = recipients.iter().map(|r| format!("\"{r}\"")).collect();
        fs::write(
            &path,
            format!(
                "state_dir = \"state\"\n\
                 [encryption]\nrecipients = [{}]\nidentity_file = \"{}\"\n\
                 [store]\ntype = \"local\"\npath = \"store\"\npart_size = \"{part_size}\"\n{extra}\n\
                 [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"{}\"\n",
                recipients.join(", "),
                self.identity.display(),
                site.display()
            ),
        )
        .unwrap();
        path
    }

    /// Writes config `file` with one `[[source]]` given as TOML lines, and returns its path.
    pub fn config_for_source(&self, file: &str, source: &str) -> PathBuf {
        let path = self.path(file);
        fs::write(
            &path,
            format!(
                "state_dir = \"state\"\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n\
                 [store]\ntype = \"local\"\npath = \"store\"\npart_size = \"256KiB\"\n\
                 [[source]]\n{source}\n",
                self.recipient,
                self.identity.display()
            ),
        )
        .unwrap();
        path
    }

    /// Runs `coffer --config CONFIG args…`.
    pub fn run(&self, config: &Path, args: &[&str]) -> Output {
        Command::cargo_bin("coffer")
            .unwrap()
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, config: &Path, args: &[&str]) -> String {
        let out = self.run(config, args);
        assert!(
            out.status.success(),
            "coffer {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail and returns its stdout+stderr.
    pub fn fails(&self, config: &Path, args: &[&str]) -> String {
        let out = self.run(config, args);
        assert!(!out.status.success(), "coffer {args:?} should have failed");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Backs up and returns the new snapshot id.
    pub fn backup(&self, config: &Path) -> String {
        let out = self.ok(config, &["backup", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// The part files of a snapshot's `files` stream, in order.
    pub fn parts(&self, id: &str) -> Vec<PathBuf> {
        let dir = self.store().join("snapshots").join(id);
        let mut parts: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("files.tar.gz.age.")
            })
            .collect();
        parts.sort();
        parts
    }
}

/// A child process (a daemon) killed and reaped when dropped, unless it exited already: a
/// failed assertion leaves no process behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A `coffer daemon` run by a test, killed when dropped.
pub struct Daemon {
    child: KillOnDrop,
    log: PathBuf,
}

impl Daemon {
    /// Starts `coffer --config CONFIG daemon` with its log in `log`, outside systemd.
    pub fn start(config: &Path, log: PathBuf) -> Daemon {
        Self::start_with(config, log, &[])
    }

    /// As `start`, with `env` set (e.g. systemd's `NOTIFY_SOCKET` and `WATCHDOG_USEC`).
    pub fn start_with(config: &Path, log: PathBuf, env: &[(&str, String)]) -> Daemon {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"));
        cmd.arg("--config")
            .arg(config)
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: KillOnDrop(cmd.spawn().unwrap()),
            log,
        }
    }

    /// Polls `done` for up to `limit`; a failure shows the log.
    pub fn wait_for(&self, what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {what}; the log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then its exit, which must come within 30 s.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let asked = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                asked.elapsed() < std::time::Duration::from_secs(30),
                "the daemon did not stop within 30 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Whether a prerequisite (a server, a stock tool) is there. Outside CI a missing one skips the
/// test with a message; under `CI=true` it fails it, since .ci/run provides everything.
pub fn prerequisite(ok: bool, what: &str, fix: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} ({fix}); under CI every prerequisite must be there (.ci/run installs it)"
        );
        println!("skipped: {what} ({fix})");
    }
    ok
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// A site with every kind of entry coffer must keep: nested and empty directories, an empty
/// file, text, noise, a symlink (relative and dangling), odd permissions, a long name, a
/// non-UTF-8 name, and old mtimes.
pub fn rich_site(root: &Path) {
    fs::create_dir_all(root.join("public/files")).unwrap();
    fs::create_dir_all(root.join("private/files/deep/er")).unwrap();
    fs::create_dir_all(root.join("empty/inner-empty")).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("site_config.json"), b"{\"db_name\": \"x\"}\n").unwrap();
    let csv: String = (0..5000)
        .map(|i| format!("{i},name {i},{}\n", i * 7 % 13))
        .collect();
    fs::write(root.join("private/files/data.csv"), csv).unwrap();
    fs::write(root.join("public/files/photo.jpg"), noise(1, 300_000)).unwrap();
    let long = "l".repeat(180);
    fs::write(root.join("private/files/deep/er").join(&long), b"long name").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt");
    fs::write(root.join("public").join(odd), b"not utf-8 name").unwrap();
    fs::write(root.join("Счёт №1.txt"), "unicode name").unwrap();
    symlink("files/photo.jpg", root.join("public/link-to-photo")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    let script = root.join("private/run.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
    let secret = root.join("private/secret.txt");
    fs::write(&secret, b"secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    // Old, distinct mtimes, directories last (writing into a directory changes its mtime).
    let mut t = 1_600_000_000i64;
    for entry in walk(root).into_iter().rev() {
        t += 3600;
        let ft = filetime::FileTime::from_unix_time(t, 0);
        filetime::set_symlink_file_times(root.join(&entry), ft, ft).unwrap();
    }
}

/// Relative paths of everything below `root`, sorted, parents before children.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        if !rel.as_os_str().is_empty() {
            out.push(rel.clone());
        }
        if fs::symlink_metadata(&abs).unwrap().is_dir() {
            for e in fs::read_dir(&abs).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    out.sort();
    out
}

/// Everything that must survive a round trip: kind, permissions, mtime, content or target.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    walk(root)
        .into_iter()
        .map(|rel| {
            let abs = root.join(&rel);
            let m = fs::symlink_metadata(&abs).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&abs).unwrap().display())
            } else if m.is_dir() {
                "dir".to_string()
            } else {
                format!(
                    "file {}",
                    hex::encode(Sha256::digest(fs::read(&abs).unwrap()))
                )
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            (rel, format!("{what} mode {mode:o} mtime {}", m.mtime()))
        })
        .collect()
}

/// Asserts two trees hold the same entries with the same metadata and bytes.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (a, b) = (tree(expected), tree(actual));
    for (path, want) in &a {
        assert_eq!(b.get(path), Some(want), "entry {}", path.display());
    }
    assert_eq!(
        a.len(),
        b.len(),
        "extra entries: {:?}",
        b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>()
    );
}

/// As `assert_same_tree`, with what folder `excluded` (below `expected`) holds left out of
/// what is expected (an exclude `excluded/**` keeps the folder itself).
pub fn assert_same_tree_excluding(expected: &Path, actual: &Path, excluded: &str) {
    let mut a = tree(expected);
    a.retain(|p, _| !p.starts_with(excluded) || p == Path::new(excluded));
    let b = tree(actual);
    for (path, want) in &a {
        assert_eq!(b.get(path), Some(want), "entry {}", path.display());
    }
    assert_eq!(
        a.len(),
        b.len(),
        "extra entries: {:?}",
        b.keys().filter(|k| !a.contains_key(*k)).collect::<Vec<_>>()
    );
}

/// Stores, through the real pipeline, a snapshot `id` made at `created` whose one directory
/// stream ("files") holds `bytes`, signed with the test host's own key (as a compromised
/// source or dump tool on the backup host could make one); returns the id.
pub fn store_snapshot(
    env: &Env,
    store: &dyn coffer::store::Store,
    id: &coffer::snapshot::SnapshotId,
    created: chrono::DateTime<chrono::Utc>,
    bytes: &[u8],
) -> String {
    store_stream_snapshot(env, store, id, created, ("files", "directory"), bytes)
}

/// `store_snapshot` with one stream of source `(name, kind)`: a `directory` is a tar stream,
/// any other kind a SQL dump.
pub fn store_stream_snapshot(
    env: &Env,
    store: &dyn coffer::store::Store,
    id: &coffer::snapshot::SnapshotId,
    created: chrono::DateTime<chrono::Utc>,
    (name, kind): (&str, &str),
    bytes: &[u8],
) -> String {
    use coffer::pipeline::{CompressOptions, EncodeOptions, encode_stream};
    use coffer::snapshot::{FORMAT_NAME, FORMAT_VERSION, Manifest, SourceRecord};
    use std::io::Write;
    let stream = if kind == "directory" {
        format!("{name}.tar.gz.age")
    } else {
        format!("{name}.sql.gz.age")
    };
    let recipient: age::x25519::Recipient = env.recipient.parse().unwrap();
    let opts = EncodeOptions {
        part_size: 1 << 20,
        compress: CompressOptions::default(),
    };
    let (encoded, ()) = encode_stream(
        store,
        &id.prefix(),
        &stream,
        &[recipient],
        &opts,
        &|_| {},
        |w| w.write_all(bytes),
    )
    .unwrap();
    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        id: id.clone(),
        created,
        finished: created,
        host: "test".into(),
        coffer_version: "0".into(),
        recipients: vec![env.recipient.clone()],
        sources: vec![SourceRecord {
            name: name.into(),
            kind: coffer::snapshot::StreamKind::of_source(kind).expect("a source kind"),
            stream,
            plaintext_bytes: encoded.plaintext_bytes,
            compressed_bytes: encoded.compressed_bytes,
            encrypted_bytes: encoded.encrypted_bytes,
            sha256: encoded.sha256,
            parts: encoded.parts,
            entries: None,
            file_bytes: None,
            checksums: None,
            warnings: Default::default(),
            dump_tool: None,
            dump_tool_version: None,
            database: None,
            differential: None,
            bench: None,
        }],
    };
    coffer::snapshot::write_manifest(store, &manifest, &env.signing_key()).unwrap();
    id.to_string()
}

/// A local port nothing listens on, held for as long as this lives: the socket is bound but
/// never listens, so a connection is refused, and no sink started meanwhile can be handed the
/// same port (as it could once a dropped listener's port is free again).
pub struct DeadPort(#[allow(dead_code)] tokio::net::TcpSocket, pub u16);

impl DeadPort {
    pub fn new() -> DeadPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        DeadPort(socket, port)
    }
}
