//! The configuration: TOML → raw serde structs (unknown keys rejected) → a validated `Config`.
//! Validation reports every problem at once; relative paths resolve against the config file's
//! folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pipeline::CompressOptions;

mod alerts;
mod drill;
mod raw;
mod secret;
mod sections;
mod units;

use alerts::parse_alerts;
use drill::parse_drill;
use raw::*;
use secret::{config_is_private, secret_of};
use sections::{
    parse_compression, parse_encryption, parse_jobs, parse_retention, parse_signing, parse_sources,
    parse_store,
};

pub use crate::database::{DbUrl, check_postgres_url, redact_url};
pub use crate::secret::{LiteralSecret, SecretRef};
pub use crate::source::{SourceConfig, SourceKind};
pub use crate::store::{DEFAULT_ORPHAN_GRACE, DEFAULT_PART_SIZE, StoreConfig, StoreKind};
pub use units::{parse_duration, parse_size};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid TOML for coffer: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("config {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// `[alerts]`: who hears about failures, and how often.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// The newest complete snapshot older than this is a STALE alert.
    pub max_age: Duration,
    /// A job failing again and again alerts at most once per this long.
    pub repeat_after: Duration,
    /// Also report every success (heartbeats are always sent).
    pub notify_on_success: bool,
    pub email: Option<EmailConfig>,
    pub sentry: Option<SentryConfig>,
    pub heartbeat: Option<HeartbeatConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            max_age: Duration::from_secs(26 * 3600),
            repeat_after: Duration::from_secs(6 * 3600),
            notify_on_success: false,
            email: None,
            sentry: None,
            heartbeat: None,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: loopback relays only.
    None,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub to: Vec<String>,
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// An extra CA (PEM) to trust, for a relay with a private certificate.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SentryConfig {
    pub dsn: SecretRef,
    pub environment: Option<String>,
    /// Send a cron check-in per job run (Sentry Crons monitors named coffer-<job>).
    pub check_ins: bool,
}

#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    /// A healthchecks.io-style ping URL (a secret: whoever has it can report success).
    pub url: SecretRef,
}

/// `[drill]`: where a restore drill restores to, and what it checks there.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// Directory sources are restored into `<staging_dir>/<source>` (default
    /// `<state_dir>/drill`); coffer marks the folder as its own and empties it before each
    /// drill.
    pub staging_dir: PathBuf,
    /// Which restored files are hashed against the snapshot's checksum list.
    pub check_files: FileCheck,
    pub databases: Vec<DrillDatabase>,
    pub http: Option<DrillHttp>,
}

/// `drill.check_files`: which restored files a drill hashes against the backup's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheck {
    /// Every file (reads everything restored once more).
    All,
    /// This many files spread evenly over the list.
    Sample(usize),
    None,
}

/// How many files `check_files = "sample"` hashes.
pub const FILE_SAMPLE: usize = 1000;

/// `[[drill.database]]`: the staging database a database source is loaded into.
#[derive(Debug, Clone)]
pub struct DrillDatabase {
    /// The database source (as the snapshot names it, e.g. `erp-db` for a frappe source).
    pub source: String,
    pub address: crate::database::Address,
    pub password: Option<SecretRef>,
    /// SQL whose first value must be true (or a number above 0) after the load.
    pub probes: Vec<String>,
    /// A url with `{site}`: `source` names a frappe-bench, and each site's database in the
    /// snapshot is loaded into this url with its site in place (`site_database_name`);
    /// `address` is then the url for a site named `site`.
    pub template: Option<String>,
}

/// What `{site}` becomes in a `[[drill.database]]` url: the site's name with every character
/// but ASCII letters and digits as `_` (`erp.example.com` → `erp_example_com`), a name every
/// server takes without quoting.
pub fn site_database_name(site: &str) -> String {
    site.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl DrillDatabase {
    /// This template's staging database for `site` of the bench, for its stream `source`.
    ///
    /// # Errors
    /// When the url with the site in place does not parse.
    pub fn for_site(&self, source: &str, site: &str) -> Result<DrillDatabase, String> {
        let template = self.template.as_deref().unwrap_or_default();
        let url = template.replace("{site}", &site_database_name(site));
        Ok(DrillDatabase {
            source: source.to_string(),
            address: crate::database::Address::parse(&url)?,
            password: self.password.clone(),
            probes: self.probes.clone(),
            template: None,
        })
    }
}

/// `[drill.http]`: a request to the staging application once everything is restored.
#[derive(Debug, Clone)]
pub struct DrillHttp {
    pub url: String,
    /// `KEY:SECRET` for Frappe's `Authorization: token KEY:SECRET`.
    pub token: Option<SecretRef>,
    pub expect_status: u16,
    /// A text the answer's body must contain.
    pub expect_body: Option<String>,
    /// How long the application gets to answer as expected (it is asked every 2 s).
    pub timeout: Duration,
}

/// `[metrics]`: where the Prometheus text file goes.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub textfile: PathBuf,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    /// The calendar schedules and retention are read in: `timezone`, else the system's
    /// (`/etc/timezone`), else UTC.
    pub timezone: chrono_tz::Tz,
    pub retention: crate::retention::Policy,
    /// The daemon's jobs (`[jobs.*]`), in config order.
    pub jobs: Vec<crate::schedule::JobSpec>,
    pub metrics: Option<MetricsConfig>,
    pub alerts: AlertsConfig,
    pub drill: DrillConfig,
    pub encryption: EncryptionConfig,
    /// Where the host's signing key is (`[signing]`, else `state_dir/signing-key`).
    pub signing_key: crate::signing::KeySource,
    pub store: StoreConfig,
    pub compression: CompressOptions,
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    pub recipients: Vec<age::x25519::Recipient>,
    /// Only restore and `verify --deep` read it.
    pub identity_file: Option<PathBuf>,
    /// Keys whose snapshots readers act on (besides the host's own signing key).
    pub trusted_signers: Vec<crate::signing::Signer>,
}

/// The system's time zone from `/etc/timezone` (Debian) or the `/etc/localtime` link; UTC if
/// neither names one.
fn system_timezone() -> chrono_tz::Tz {
    let named = std::fs::read_to_string("/etc/timezone")
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| {
            std::fs::read_link("/etc/localtime").ok().and_then(|p| {
                let s = p.to_string_lossy().into_owned();
                s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
            })
        });
    named
        .and_then(|n| n.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(chrono_tz::UTC)
}

impl Config {
    /// The keys whose snapshots this host acts on: `encryption.trusted_signers` and the
    /// host's own signing key (when it has one and can read it).
    pub fn trusted(&self) -> crate::signing::Trusted {
        let own = match crate::signing::SigningKey::load_public(&self.signing_key) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!("this host's own signing key is not trusted: {e}");
                None
            }
        };
        crate::signing::Trusted::new(self.encryption.trusted_signers.iter().cloned().chain(own))
    }

    /// Reads and validates the config at `path`.
    ///
    /// # Errors
    /// `Read`, `Parse`, or `Invalid` listing every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text as if it were read from `path`.
    ///
    /// # Errors
    /// `Parse` or `Invalid`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut problems = Vec::new();

        let identity_missing = config_identity_missing(raw.encryption.as_ref());
        let encryption = parse_encryption(raw.encryption, &resolve, &mut problems);
        let state_dir = raw
            .state_dir
            .as_deref()
            .map_or_else(|| PathBuf::from("/var/lib/coffer"), resolve);
        let store = parse_store(raw.store, &state_dir, &resolve, &mut problems);
        let compression = parse_compression(raw.compression, &mut problems);
        // A restore or drill host needs no source; a host that backs up on a schedule does.
        let no_sources = raw.source.is_empty();
        let sources = parse_sources(raw.source, &resolve, &mut problems);
        let timezone = match raw.timezone.as_deref() {
            Some(name) => name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                problems.push(format!(
                    "timezone '{name}' is not an IANA time zone name (e.g. Europe/Berlin, \
                     Africa/Nairobi, UTC)"
                ));
                chrono_tz::UTC
            }),
            None => system_timezone(),
        };
        let retention = parse_retention(raw.retention, &mut problems);
        let jobs = parse_jobs(raw.jobs, identity_missing, no_sources, &mut problems);
        let alerts = match raw.alerts {
            None => AlertsConfig::default(),
            Some(a) => parse_alerts(a, &resolve, config_is_private(path), &mut problems),
        };
        let metrics = raw.metrics.map(|m| MetricsConfig {
            textfile: resolve(&m.textfile),
        });
        let signing_key = parse_signing(raw.signing, &state_dir, &resolve, &mut problems);
        let drill = parse_drill(
            raw.drill,
            &state_dir,
            &sources,
            &resolve,
            config_is_private(path),
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            timezone,
            retention,
            jobs,
            metrics,
            alerts,
            drill,
            encryption,
            signing_key,
            store,
            compression,
            sources,
        })
    }
}

/// Whether the raw config names no identity file.
fn config_identity_missing(encryption: Option<&RawEncryption>) -> bool {
    encryption.is_none_or(|e| e.identity_file.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("64Mb").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert_eq!(
            parse_duration("26h").unwrap(),
            Duration::from_secs(26 * 3600)
        );
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = format!(
            "state_dir = \"state\"\n[encryption]\nrecipients = [\"{RECIPIENT}\"]\n\
             [store]\ntype = \"local\"\npath = \"store\"\npart_size = \"1MiB\"\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"/srv/site\"\n"
        );
        let c = Config::parse(&text, Path::new("/etc/coffer/coffer.toml")).unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/coffer/state"));
        let StoreKind::Local { path } = &c.store.kind else {
            panic!("a local store")
        };
        assert_eq!(path, Path::new("/etc/coffer/store"));
        assert_eq!(c.store.part_size, 1 << 20);
        assert_eq!(c.sources[0].stream_name(), "files.tar.gz.age");
    }

    #[test]
    fn jobs_read_their_schedules_and_reject_bad_ones_by_name() {
        let base = format!(
            "[encryption]\nrecipients = [\"{RECIPIENT}\"]\n[store]\ntype = \"local\"\n\
             path = \"/srv/store\"\n[[source]]\nname = \"files\"\ntype = \"directory\"\n\
             path = \"/srv/site\"\n"
        );
        let good = format!(
            "{base}[jobs.backup]\nschedule = \"0 0 2 * * *\"\n[jobs.verify]\n\
             schedule = \"0 30 4 * * Sun\"\n[metrics]\ntextfile = \"coffer.prom\"\n"
        );
        let c = Config::parse(&good, Path::new("/etc/coffer/coffer.toml")).unwrap();
        assert_eq!(c.jobs.len(), 2);
        assert!(c.jobs[0].catch_up, "a backup catches up by default");
        assert!(!c.jobs[1].catch_up);
        assert_eq!(
            c.jobs[1].kind,
            crate::schedule::JobKind::Verify { deep: false }
        );
        assert_eq!(
            c.metrics.unwrap().textfile,
            Path::new("/etc/coffer/coffer.prom")
        );
        let bad = format!(
            "{base}[jobs.backup]\nschedule = \"0 2 * * *\"\n[jobs.verify]\n\
             schedule = \"0 61 4 * * *\"\ndeep = true\n[jobs.drill]\nschedule = \"0 0 5 * * Sat\"\n"
        );
        let err = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let all = problems.join("\n");
        assert!(
            all.contains("jobs.backup.schedule: '0 2 * * *' has 5 fields"),
            "{all}"
        );
        assert!(
            all.contains("jobs.verify.schedule: '0 61 4 * * *'"),
            "{all}"
        );
        assert!(
            all.contains("deep = true needs encryption.identity_file"),
            "{all}"
        );
        assert!(
            all.contains("jobs.drill: a drill restores the snapshot, so it needs"),
            "{all}"
        );
    }

    #[test]
    fn a_bench_takes_exclude_sites_and_site_templates_others_do_not() {
        let base = "[encryption]\n\
                    recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                    [store]\ntype = \"local\"\npath = \"/srv/store\"\n\
                    [[source]]\nname = \"bench\"\ntype = \"frappe-bench\"\n\
                    path = \"/home/frappe/frappe-bench\"\nexclude_sites = [\"test.localhost\"]\n\
                    [[source]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://erp@db/erp\"\n";
        let good = format!(
            "{base}[[drill.database]]\nsource = \"bench\"\nurl = \"mysql://root@127.0.0.1/d_{{site}}\"\n\
             [[drill.database]]\nsource = \"bench\"\nurl = \"postgres://pg@127.0.0.1/d_{{site}}\"\n"
        );
        let c = Config::parse(&good, Path::new("c.toml")).unwrap();
        let SourceKind::FrappeBench { exclude_sites, .. } = &c.sources[0].kind else {
            panic!("{:?}", c.sources[0])
        };
        assert_eq!(exclude_sites, &["test.localhost"]);
        assert_eq!(c.drill.databases.len(), 2);
        let site = c.drill.databases[0]
            .for_site("erp_example_com-db", "erp.example-1.com")
            .unwrap();
        assert_eq!(
            site.address.to_string(),
            "mysql://root@127.0.0.1:3306/d_erp_example_1_com"
        );
        let bad = format!(
            "{base}[[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"/srv\"\n\
             exclude_sites = [\"x\"]\n\
             [[drill.database]]\nsource = \"bench\"\nurl = \"mysql://root@127.0.0.1/d\"\n\
             [[drill.database]]\nsource = \"db\"\nurl = \"postgres://pg@127.0.0.1/d_{{site}}\"\n"
        );
        let err = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        let all = problems.join("\n");
        assert_eq!(problems.len(), 3, "{all}");
        assert!(
            all.contains("'exclude_sites' applies to a frappe-bench source only"),
            "{all}"
        );
        assert!(all.contains("put {site} in the url"), "{all}");
        assert!(
            all.contains("{site} applies to a frappe-bench source; 'db' is a postgres"),
            "{all}"
        );
        let twice = format!(
            "{base}[[drill.database]]\nsource = \"bench\"\nurl = \"mysql://root@127.0.0.1/a_{{site}}\"\n\
             [[drill.database]]\nsource = \"bench\"\nurl = \"mysql://root@127.0.0.1/b_{{site}}\"\n"
        );
        let err = Config::parse(&twice, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("two mysql templates"), "{err}");
    }

    #[test]
    fn drill_settings_are_checked() {
        let base = "state_dir = \"/var/lib/coffer\"\n[encryption]\n\
                    recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                    identity_file = \"/etc/coffer/key.txt\"\n\
                    [store]\ntype = \"local\"\npath = \"/srv/store\"\n\
                    [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"/srv/site\"\n\
                    [[source]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://erp@db/erp\"\n";
        let c = Config::parse(
            &format!("{base}[jobs.drill]\nschedule = \"0 0 5 * * Sat\"\n"),
            Path::new("/etc/coffer/coffer.toml"),
        )
        .unwrap();
        assert_eq!(c.drill.staging_dir, Path::new("/var/lib/coffer/drill"));
        assert_eq!(c.jobs[0].kind, crate::schedule::JobKind::Drill);
        assert!(!c.jobs[0].catch_up);
        let bad = format!(
            "{base}[drill]\nstaging_dir = \"/srv/site/tmp\"\n\
             [[drill.database]]\nsource = \"db\"\nurl = \"mysql://root@127.0.0.1/erp_drill\"\n\
             [[drill.database]]\nsource = \"db\"\nurl = \"postgres://erp:pw@db/erp_drill\"\n\
             [drill.http]\nurl = \"ftp://staging/ping\"\ntimeout = \"soon\"\n"
        );
        let err = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        let all = problems.join("\n");
        assert_eq!(problems.len(), 6, "{all}");
        assert!(all.contains("overlaps source 'files'"), "{all}");
        assert!(
            all.contains("source 'db' is a postgres database, the url is mysql"),
            "{all}"
        );
        assert!(all.contains("source 'db' is listed twice"), "{all}");
        assert!(!all.contains("pw@"), "a password was shown: {all}");
        assert!(all.contains("drill.http.url"), "{all}");
        assert!(all.contains("drill.http.timeout"), "{all}");
        // A token goes over TLS, or to this host only.
        let remote = |url: &str| {
            Config::parse(
                &format!("{base}[drill.http]\nurl = \"{url}\"\ntoken_env = \"COFFER_TOKEN\"\n"),
                Path::new("c.toml"),
            )
        };
        let err = remote("http://staging.example.com/api/method/ping").unwrap_err();
        assert!(
            err.to_string().contains("clear text") || format!("{err:?}").contains("clear text"),
            "{err:?}"
        );
        remote("https://staging.example.com/api/method/ping").unwrap();
        remote("http://127.0.0.1:8000/api/method/ping").unwrap();
        // Without a [drill] section the default staging folder is checked when a drill runs.
        let overlapping = base.replace(
            "state_dir = \"/var/lib/coffer\"",
            "state_dir = \"/srv/site/state\"",
        );
        let c = Config::parse(&overlapping, Path::new("c.toml")).unwrap();
        assert_eq!(c.drill.staging_dir, Path::new("/srv/site/state/drill"));
        // A staging host's config needs no source, unless it backs up on a schedule.
        let sourceless = base[..base.find("[[source]]").unwrap()].to_string();
        Config::parse(&sourceless, Path::new("c.toml")).unwrap();
        let err = Config::parse(
            &format!("{sourceless}[jobs.backup]\nschedule = \"0 0 2 * * *\"\n"),
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("nothing to back up"), "{err:?}");
        // A config read by a relative path: the staging folder is made absolute.
        let c = Config::parse(
            &format!("{base}[drill]\nstaging_dir = \"drill\"\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.drill.staging_dir.is_absolute());
        assert!(c.drill.staging_dir.ends_with("drill"));
    }

    #[test]
    fn an_s3_store_is_checked_and_takes_its_keys_from_files_or_the_environment() {
        let head = "[encryption]\n\
                    recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n";
        let good = format!(
            "{head}[store]\ntype = \"s3\"\nendpoint = \"https://s3.eu-west-1.amazonaws.com\"\n\
             region = \"eu-west-1\"\nbucket = \"acme-coffer\"\nprefix = \"host-1\"\n\
             secret_access_key_file = \"/etc/coffer/s3-secret\"\n"
        );
        let c = Config::parse(&good, Path::new("/etc/coffer/c.toml")).unwrap();
        let StoreKind::S3(s) = &c.store.kind else {
            panic!("{:?}", c.store.kind)
        };
        assert!(!s.path_style, "AWS takes virtual-host addressing");
        assert_eq!(s.prefix, "host-1/");
        assert_eq!(s.chunk_size, crate::store::s3::DEFAULT_CHUNK);
        assert_eq!(
            s.credentials.access_key_id,
            SecretRef::Env("AWS_ACCESS_KEY_ID".into())
        );
        assert_eq!(
            s.credentials.secret_access_key,
            SecretRef::File("/etc/coffer/s3-secret".into())
        );
        let bad = format!(
            "{head}[store]\ntype = \"s3\"\nendpoint = \"http://minio.example.org:9000\"\n\
             bucket = \"Bad_Bucket\"\nchunk_size = \"1MiB\"\nfolder = \"x\"\n\
             access_key_id_file = \"a\"\naccess_key_id_env = \"B\"\nchecksum = \"crc32\"\n"
        );
        let err = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        let all = problems.join("\n");
        assert_eq!(problems.len(), 6, "{all}");
        assert!(all.contains("store.checksum 'crc32'"), "{all}");
        assert!(all.contains("http:// sends the signed requests"), "{all}");
        assert!(all.contains("store.bucket 'Bad_Bucket'"), "{all}");
        assert!(all.contains("between 5MiB"), "{all}");
        assert!(all.contains("store.folder does not apply"), "{all}");
        assert!(all.contains("store.access_key_id: give one of"), "{all}");
        // http:// to this host is fine (a local MinIO or Garage).
        let local = good.replace(
            "https://s3.eu-west-1.amazonaws.com",
            "http://127.0.0.1:3900",
        );
        let c = Config::parse(&local, Path::new("c.toml")).unwrap();
        let StoreKind::S3(s) = &c.store.kind else {
            panic!("{:?}", c.store.kind)
        };
        assert!(s.path_style);
        assert!(!s.checksum_sha256);
        let c = Config::parse(
            &format!("{good}checksum = \"sha256\"\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(matches!(&c.store.kind, StoreKind::S3(s) if s.checksum_sha256));
        // An S3 setting on another store is a mistake, not silently ignored.
        let err = Config::parse(
            &format!(
                "{head}[store]\ntype = \"local\"\npath = \"/srv/b\"\nbucket = \"b\"\n\
                 checksum = \"sha256\"\n"
            ),
            Path::new("c.toml"),
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(
            problems,
            [
                "store.bucket applies to an s3 store, not a local one",
                "store.checksum applies to an s3 store, not a local one"
            ]
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = "[encryption]\nrecipients = [\"age1bogus\"]\n[store]\ntype = \"ftp\"\n\
                    [compression]\nlevel = 12\n[[source]]\nname = \"a b\"\ntype = \"directory\"\n";
        let err = Config::parse(text, Path::new("c.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
    }

    #[test]
    fn database_urls_never_carry_or_show_a_password() {
        for bad in [
            "postgres://u:s3cret@h/db",
            "postgres://u:pa/ss@h/db",
            "postgres://u@h/db?password=s3cret",
            "postgres://u@h/db?%70assword=s3cret",
            "postgres://u@h/db?sslpassword=s3cret",
        ] {
            let err = check_postgres_url(bad).unwrap_err();
            assert!(
                !err.contains("s3cret") && !err.contains("pa/ss"),
                "{bad}: {err}"
            );
        }
        assert!(
            check_postgres_url("postgres://u@h:5432")
                .unwrap_err()
                .contains("no database")
        );
        assert!(check_postgres_url("postgres://u@h/db?dbname=x").is_err());
        check_postgres_url("postgresql://u@h:5432/db?sslmode=require").unwrap();
        let err = DbUrl::parse("mariadb://root:s3cret@db/erp", "mysql", 3306).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        for bad in [
            "mysql://root@db/erp?password=s3cret",
            "mysql://root@db/erp?pwd=s3cret&x=1",
            "ftp://root@db/erp?password=s3cret",
            "mysql://root:s3cret@db/erp?x",
        ] {
            let err = DbUrl::parse(bad, "mysql", 3306).unwrap_err();
            assert!(!err.contains("s3cret"), "{err}");
        }
        let ok = DbUrl::parse("mysql://coffer@127.0.0.1/_1bd3e0294da19198", "mysql", 3306).unwrap();
        assert_eq!((ok.port, ok.database.as_str()), (3306, "_1bd3e0294da19198"));
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = Config::parse("stat_dir = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
