//! The config file as serde reads it: every section, unknown keys rejected. Nothing here is
//! checked yet; `Config::parse` turns it into the typed config and reports every problem.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) timezone: Option<String>,
    pub(super) encryption: Option<RawEncryption>,
    pub(super) signing: Option<RawSigning>,
    pub(super) store: Option<RawStore>,
    pub(super) compression: Option<RawCompression>,
    pub(super) retention: Option<RawRetention>,
    pub(super) jobs: Option<RawJobs>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) alerts: Option<RawAlerts>,
    pub(super) drill: Option<RawDrill>,
    #[serde(default)]
    pub(super) source: Vec<RawSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrill {
    pub(super) staging_dir: Option<PathBuf>,
    pub(super) check_files: Option<String>,
    #[serde(default)]
    pub(super) database: Vec<RawDrillDatabase>,
    pub(super) http: Option<RawDrillHttp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrillDatabase {
    pub(super) source: String,
    pub(super) url: String,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    #[serde(default)]
    pub(super) probes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrillHttp {
    pub(super) url: String,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) token_env: Option<String>,
    pub(super) expect_status: Option<u16>,
    pub(super) expect_body: Option<String>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJobs {
    pub(super) backup: Option<RawJob>,
    pub(super) verify: Option<RawJob>,
    pub(super) drill: Option<RawJob>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) schedule: String,
    pub(super) catch_up: Option<bool>,
    pub(super) deep: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) max_age: Option<String>,
    pub(super) repeat_after: Option<String>,
    pub(super) notify_on_success: Option<bool>,
    pub(super) email: Option<RawEmail>,
    pub(super) sentry: Option<RawSentry>,
    pub(super) heartbeat: Option<RawHeartbeat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    #[serde(default)]
    pub(super) to: Vec<String>,
    pub(super) from: String,
    pub(super) smtp_host: String,
    pub(super) smtp_port: Option<u16>,
    pub(super) tls: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSentry {
    pub(super) dsn_file: Option<PathBuf>,
    pub(super) dsn_env: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) check_ins: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    pub(super) url: Option<String>,
    pub(super) url_file: Option<PathBuf>,
    pub(super) url_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) textfile: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    #[serde(default)]
    pub(super) keep_last: u32,
    #[serde(default)]
    pub(super) keep_daily: u32,
    #[serde(default)]
    pub(super) keep_weekly: u32,
    #[serde(default)]
    pub(super) keep_monthly: u32,
    #[serde(default)]
    pub(super) keep_yearly: u32,
    pub(super) keep_within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryption {
    #[serde(default)]
    pub(super) recipients: Vec<String>,
    pub(super) identity_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) trusted_signers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub(super) key_file: Option<PathBuf>,
    pub(super) key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) path: Option<PathBuf>,
    pub(super) part_size: Option<String>,
    pub(super) orphan_grace: Option<String>,
    // Google Drive.
    pub(super) service_account_key_file: Option<PathBuf>,
    pub(super) oauth_client_file: Option<PathBuf>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) subject: Option<String>,
    pub(super) folder_id: Option<String>,
    pub(super) folder: Option<String>,
    pub(super) drive_id: Option<String>,
    pub(super) api_base_url: Option<String>,
    pub(super) upload_base_url: Option<String>,
    pub(super) chunk_size: Option<String>,
    pub(super) page_size: Option<u32>,
    pub(super) parallel_uploads: Option<usize>,
    pub(super) requests_per_second: Option<u32>,
    // S3.
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) bucket: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) path_style: Option<bool>,
    pub(super) access_key_id_file: Option<PathBuf>,
    pub(super) access_key_id_env: Option<String>,
    pub(super) secret_access_key_file: Option<PathBuf>,
    pub(super) secret_access_key_env: Option<String>,
    pub(super) storage_class: Option<String>,
    pub(super) checksum: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompression {
    pub(super) level: Option<u32>,
    pub(super) threads: Option<usize>,
    pub(super) skip_incompressible: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) path: Option<PathBuf>,
    #[serde(default)]
    pub(super) exclude: Vec<String>,
    pub(super) url: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password_env: Option<String>,
    pub(super) no_owner: Option<bool>,
    pub(super) dump_tool: Option<PathBuf>,
    pub(super) exact_count_limit: Option<u64>,
    pub(super) socket: Option<PathBuf>,
    pub(super) full_every: Option<String>,
    pub(super) exclude_sites: Option<Vec<String>>,
}
