//! A real Garage (a distributed S3-compatible object store, `cargo install --locked
//! garage@2.5.0`; `.ci/run` installs it): single nodes on loopback with their own data
//! folders, a layout, a key and a bucket, all made with Garage's own CLI.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::KillOnDrop;

/// The `garage` binary: on PATH, else cargo's bin folder.
pub fn binary() -> Option<PathBuf> {
    let on_path = Command::new("garage")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return Some(PathBuf::from("garage"));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let bin = home.join("bin/garage");
    bin.is_file().then_some(bin)
}

/// Garage for a test, or `None` (a skip, or under `CI=true` a failure) when it is missing.
pub fn available() -> Option<PathBuf> {
    let bin = binary();
    super::prerequisite(
        bin.is_some(),
        "garage is not installed",
        "cargo install --locked garage@2.5.0 (.ci/run does)",
    )
    .then(|| bin.expect("checked"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One running single-node Garage with a bucket and a key that may use it.
pub struct Garage {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    node: Option<KillOnDrop>,
    pub s3_port: u16,
    rpc_port: u16,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
}

/// A node's config: its own folders and ports, the cluster's secret and replication factor.
fn node_config(dir: &Path, secret: &str, replication: u32) -> (PathBuf, u16, u16) {
    let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
    let config = dir.join("garage.toml");
    fs::write(
        &config,
        format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
             replication_factor = {replication}\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{secret}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    (config, s3_port, rpc_port)
}

fn rpc_secret() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Garage {
    /// Starts a node, lays it out, makes key `coffer-test` and bucket `coffer`.
    pub fn start(bin: &Path) -> Garage {
        let g = Garage::node(bin, &rpc_secret(), 1);
        let id = g.node_id();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.make_bucket()
    }

    /// A running node, not yet laid out.
    fn node(bin: &Path, secret: &str, replication: u32) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (config, s3_port, rpc_port) = node_config(dir.path(), secret, replication);
        let mut g = Garage {
            bin: bin.to_path_buf(),
            config,
            node: None,
            s3_port,
            rpc_port,
            key_id: String::new(),
            secret: String::new(),
            bucket: "coffer".into(),
            dir,
        };
        g.run_node();
        g
    }

    /// Makes key `coffer-test` and bucket `coffer` (through this node).
    fn make_bucket(mut self) -> Garage {
        let g = &mut self;
        let key = g.cli(&["key", "create", "coffer-test"]);
        let field = |name: &str| {
            key.lines()
                .find(|l| l.to_ascii_lowercase().starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in: {key}"))
        };
        g.key_id = field("key id");
        g.secret = field("secret key");
        g.cli(&["bucket", "create", "coffer"]);
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "coffer",
            "--key",
            "coffer-test",
        ]);
        g.wait_s3();
        self
    }

    /// Starts this node (again, after `kill`).
    pub fn run_node(&mut self) {
        let log = fs::File::create(self.dir.path().join("garage.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.node = Some(KillOnDrop(child));
    }

    /// Runs `garage -c CONFIG args…` (retrying while the node starts) and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let started = Instant::now();
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!(
                    "garage {args:?} failed: {}\n{}\nlog: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops this node at once (SIGKILL), as a crashed server.
    pub fn kill(&mut self) {
        self.node = None;
    }

    /// This node's full id and address, for `node connect`.
    fn full_id(&self) -> String {
        let out = self.cli(&["node", "id"]);
        out.split_whitespace()
            .find(|w| w.contains('@'))
            .unwrap_or_else(|| panic!("no node id in: {out}"))
            .to_string()
    }

    /// This node's id, from `garage status`.
    fn node_id(&self) -> String {
        let status = self.cli(&["status"]);
        status
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .find(|w| w.len() >= 16 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no node id in: {status}"))
            .to_string()
    }

    /// Waits until the S3 port answers.
    fn wait_s3(&self) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Garage's S3 port never opened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A `[store]` section for this bucket, the key pair in 0600 files under `dir`.
    pub fn store_section(&self, dir: &Path, extra: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, value: &str| {
            let p = dir.join(name);
            fs::write(&p, value).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let id = write("s3-key-id", &self.key_id);
        let secret = write("s3-secret", &self.secret);
        format!(
            "[store]\ntype = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\nbucket = \"{}\"\n\
             access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n{extra}\n",
            self.endpoint(),
            self.bucket,
            id.display(),
            secret.display()
        )
    }
}

/// A cluster of Garage nodes on loopback with `replication_factor = 3`, one zone each: every
/// object is on every node, and a write needs two of them (a quorum).
pub struct Cluster {
    pub nodes: Vec<Garage>,
}

impl Cluster {
    pub fn start(bin: &Path) -> Cluster {
        let secret = rpc_secret();
        let nodes: Vec<Garage> = (0..3).map(|_| Garage::node(bin, &secret, 3)).collect();
        for other in &nodes[1..] {
            let id = other.full_id();
            nodes[0].cli(&["node", "connect", &id]);
        }
        for (i, n) in nodes.iter().enumerate() {
            let id = n.node_id_on(&nodes[0]);
            nodes[0].cli(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{}", i + 1),
                "-c",
                "1G",
                &id,
            ]);
        }
        nodes[0].cli(&["layout", "apply", "--version", "1"]);
        let mut nodes = nodes;
        let first = nodes.remove(0).make_bucket();
        for n in &mut nodes {
            n.key_id.clone_from(&first.key_id);
            n.secret.clone_from(&first.secret);
            n.wait_s3();
        }
        nodes.insert(0, first);
        Cluster { nodes }
    }
}

impl Garage {
    /// This node's short id as `garage status` on `other` lists it (by its RPC port).
    fn node_id_on(&self, other: &Garage) -> String {
        let port = format!(":{}", self.rpc_port);
        let status = other.cli(&["status"]);
        status
            .lines()
            .find(|l| l.contains(&port))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("node on {port} not in: {status}"))
            .to_string()
    }
}
