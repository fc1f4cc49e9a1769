//! The validators of the config's sections, one function each (a store and a source are
//! checked by one helper per type): every problem goes to `problems`, so a config is checked
//! whole before it is refused.

use std::path::{Path, PathBuf};

use super::raw::*;
use super::*;

/// `[encryption]`: recipients, the identity file, the trusted signers.
pub(super) fn parse_encryption(
    raw: Option<RawEncryption>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> EncryptionConfig {
    match raw {
        None => {
            problems.push(
                "[encryption] is missing: give at least one recipient (coffer keygen prints one)"
                    .into(),
            );
            EncryptionConfig {
                recipients: Vec::new(),
                identity_file: None,
                trusted_signers: Vec::new(),
            }
        }
        Some(e) => {
            let mut recipients = Vec::new();
            if e.recipients.is_empty() {
                problems.push("encryption.recipients is empty: give at least one age public key (age1…); 'coffer keygen' makes one".into());
            }
            for r in &e.recipients {
                match r.trim().parse::<age::x25519::Recipient>() {
                    Ok(rec) => recipients.push(rec),
                    Err(why) => problems.push(format!(
                        "encryption.recipients: '{r}' is not an age X25519 recipient ({why}); expected age1…"
                    )),
                }
            }
            let mut trusted_signers = Vec::new();
            for line in &e.trusted_signers {
                match crate::signing::Signer::parse(line) {
                    Ok(signer) => trusted_signers.push(signer),
                    Err(why) => problems.push(format!(
                        "encryption.trusted_signers: '{}' is {why}; expected the backup \
                         host's public signing key, 'ssh-ed25519 AAAA… name'",
                        crate::text::Printable(line)
                    )),
                }
            }
            EncryptionConfig {
                recipients,
                identity_file: e.identity_file.as_deref().map(resolve),
                trusted_signers,
            }
        }
    }
}

/// `[signing]`: where the host's signing key is (else `state_dir/signing-key`).
pub(super) fn parse_signing(
    raw: Option<RawSigning>,
    state_dir: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> crate::signing::KeySource {
    match raw {
        None
        | Some(RawSigning {
            key_file: None,
            key_env: None,
        }) => crate::signing::KeySource::Default(state_dir.join("signing-key")),
        Some(RawSigning {
            key_file: Some(f),
            key_env: None,
        }) => crate::signing::KeySource::File(resolve(&f)),
        Some(RawSigning {
            key_file: None,
            key_env: Some(v),
        }) => crate::signing::KeySource::Env(v),
        Some(_) => {
            problems.push("[signing]: give key_file or key_env, not both".into());
            crate::signing::KeySource::Default(state_dir.join("signing-key"))
        }
    }
}

/// `[store]`: a local folder or Google Drive, the part size, the orphan grace.
pub(super) fn parse_store(
    raw: Option<RawStore>,
    state_dir: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> StoreConfig {
    let mut part_size = DEFAULT_PART_SIZE;
    let mut orphan_grace = DEFAULT_ORPHAN_GRACE;
    let Some(s) = raw else {
        problems.push("[store] is missing: set type = \"local\" and path".into());
        return StoreConfig {
            kind: StoreKind::Local {
                path: PathBuf::new(),
            },
            part_size,
            orphan_grace,
        };
    };
    if let Some(ps) = &s.part_size {
        match parse_size(ps) {
            Ok(n) if n >= 1024 => part_size = n,
            Ok(_) => problems.push(format!(
                "store.part_size '{ps}' is below the minimum of 1KiB"
            )),
            Err(why) => problems.push(format!("store.part_size: {why}")),
        }
    }
    if let Some(g) = &s.orphan_grace {
        match parse_duration(g) {
            Ok(d) => {
                if d < crate::snapshot::MIN_ORPHAN_GRACE {
                    // Not an error: a config must never lock anyone out of restore.
                    tracing::warn!(
                        "store.orphan_grace '{g}' is below 1h; using 1h (a shorter \
                         grace could remove a backup still running on another host)"
                    );
                }
                orphan_grace = d.max(crate::snapshot::MIN_ORPHAN_GRACE);
            }
            Err(why) => problems.push(format!("store.orphan_grace: {why}")),
        }
    }
    if s.kind != "s3" {
        for (key, set) in [
            ("endpoint", s.endpoint.is_some()),
            ("region", s.region.is_some()),
            ("bucket", s.bucket.is_some()),
            ("prefix", s.prefix.is_some()),
            ("path_style", s.path_style.is_some()),
            ("access_key_id_file", s.access_key_id_file.is_some()),
            ("access_key_id_env", s.access_key_id_env.is_some()),
            ("secret_access_key_file", s.secret_access_key_file.is_some()),
            ("secret_access_key_env", s.secret_access_key_env.is_some()),
            ("storage_class", s.storage_class.is_some()),
            ("checksum", s.checksum.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "store.{key} applies to an s3 store, not a {} one",
                    s.kind
                ));
            }
        }
    }
    let kind = match s.kind.as_str() {
        "local" => local_store(s, resolve, problems),
        "gdrive" => gdrive_store(s, part_size, state_dir, resolve, problems),
        "s3" => s3_store(s, resolve, problems),
        other => {
            problems.push(format!(
                "store.type '{other}' is not supported by this build (supported: local, gdrive, s3)"
            ));
            StoreKind::Local {
                path: PathBuf::new(),
            }
        }
    };
    StoreConfig {
        kind,
        part_size,
        orphan_grace,
    }
}

/// `type = "local"`: a folder; no Drive key applies.
fn local_store(
    s: RawStore,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> StoreKind {
    let drive_keys = [
        (
            "service_account_key_file",
            s.service_account_key_file.is_some(),
        ),
        ("oauth_client_file", s.oauth_client_file.is_some()),
        ("token_file", s.token_file.is_some()),
        ("subject", s.subject.is_some()),
        ("folder_id", s.folder_id.is_some()),
        ("folder", s.folder.is_some()),
        ("drive_id", s.drive_id.is_some()),
        ("api_base_url", s.api_base_url.is_some()),
        ("upload_base_url", s.upload_base_url.is_some()),
        ("chunk_size", s.chunk_size.is_some()),
        ("page_size", s.page_size.is_some()),
        ("parallel_uploads", s.parallel_uploads.is_some()),
        ("requests_per_second", s.requests_per_second.is_some()),
    ];
    for (key, set) in drive_keys {
        if set {
            problems.push(format!(
                "store.{key} applies to a gdrive store, not a local one"
            ));
        }
    }
    match s.path {
        Some(p) => StoreKind::Local { path: resolve(&p) },
        None => {
            problems.push("store.path is required for a local store".into());
            StoreKind::Local {
                path: PathBuf::new(),
            }
        }
    }
}

/// `type = "gdrive"`: the account, the folder, the chunks and the pacing of a Drive store;
/// a part is at most `MAX_PART_SIZE`.
fn gdrive_store(
    s: RawStore,
    part_size: u64,
    state_dir: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> StoreKind {
    if part_size > crate::store::gdrive::MAX_PART_SIZE {
        problems.push(format!(
            "store.part_size is {} for a gdrive store; at most 512MiB (a part whose \
             upload session is lost, or whose checksum Drive reports wrong, fails the backup: \
             larger parts make that costlier and gain nothing)",
            s.part_size.as_deref().unwrap_or("")
        ));
    }
    if s.path.is_some() {
        problems.push(
            "store.path applies to a local store; a gdrive store takes folder or folder_id".into(),
        );
    }
    let mut chunk_size = 8 << 20;
    if let Some(c) = &s.chunk_size {
        match parse_size(c) {
            Ok(n) if n > 0 && n % crate::store::gdrive::CHUNK_ALIGN as u64 == 0 => {
                chunk_size = n as usize;
            }
            Ok(_) => problems.push(format!(
                "store.chunk_size '{c}' must be a positive multiple of 256KiB (Drive's unit)"
            )),
            Err(why) => problems.push(format!("store.chunk_size: {why}")),
        }
    }
    let auth = drive_auth(&s, state_dir, resolve, problems);
    let base = "https://www.googleapis.com".to_string();
    StoreKind::Gdrive(crate::store::gdrive::DriveConfig {
        auth,
        folder_id: s.folder_id,
        folder: s.folder.unwrap_or_else(|| "coffer".into()),
        drive_id: s.drive_id,
        upload_base_url: s
            .upload_base_url
            .or_else(|| s.api_base_url.clone())
            .unwrap_or_else(|| base.clone()),
        api_base_url: s.api_base_url.unwrap_or(base),
        chunk_size,
        page_size: s.page_size.unwrap_or(1000).clamp(1, 1000),
        parallel_uploads: s.parallel_uploads.unwrap_or(2).clamp(1, 16),
        requests_per_second: s.requests_per_second.unwrap_or(10),
        request_timeout: crate::store::gdrive::REQUEST_TIMEOUT,
    })
}

/// A Drive store's account: a service account (with `subject` for domain-wide delegation)
/// or a user's token from `coffer auth gdrive`, exactly one.
/// `type = "s3"`: endpoint (https, or http to this host only), region, bucket, prefix,
/// addressing, the key pair from files or the environment (default `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`), pieces.
fn s3_store(
    s: RawStore,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> StoreKind {
    use crate::store::s3::{CredentialSource, DEFAULT_CHUNK, MIN_CHUNK, S3Config};
    let endpoint = s.endpoint.clone().unwrap_or_default();
    let mut aws = false;
    match endpoint.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
            let host = u.host().unwrap_or("").trim_matches(['[', ']']);
            aws = host.ends_with(".amazonaws.com");
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if u.scheme_str() == Some("http") && !loopback {
                problems.push(format!(
                    "store.endpoint '{endpoint}': http:// sends the signed requests and every \
                     object in clear text; use https:// (http:// only to this host)"
                ));
            }
            if u.path() != "/" && !u.path().is_empty() {
                problems.push(format!(
                    "store.endpoint '{endpoint}': give the server only (scheme and host); the \
                     bucket goes in store.bucket, a folder in store.prefix"
                ));
            }
        }
        _ => problems.push(format!(
            "store.endpoint '{endpoint}' must be an https:// URL of the S3 server (e.g. \
             https://s3.eu-west-1.amazonaws.com, https://<account>.r2.cloudflarestorage.com)"
        )),
    }
    let bucket = s.bucket.clone().unwrap_or_default();
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        problems.push(format!(
            "store.bucket '{bucket}' must be 3–63 lowercase letters, digits, '-' or '.'"
        ));
    }
    let mut prefix = s.prefix.clone().unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    if prefix.starts_with('/') || prefix.split('/').any(|p| p == "." || p == "..") {
        problems.push(format!(
            "store.prefix '{prefix}' must be relative, without '.' or '..' (e.g. \"coffer/\")"
        ));
    }
    let checksum_sha256 = match s.checksum.as_deref() {
        None | Some("md5") => false,
        Some("sha256") => true,
        Some(other) => {
            problems.push(format!(
                "store.checksum '{other}' is not one of \"md5\" (the default: Content-MD5 on \
                 every request, which every S3-compatible server checks) or \"sha256\" \
                 (x-amz-checksum-sha256 as well, for servers that support it)"
            ));
            false
        }
    };
    let mut chunk_size = DEFAULT_CHUNK;
    if let Some(c) = &s.chunk_size {
        match parse_size(c) {
            Ok(n) if n >= MIN_CHUNK as u64 && n <= 512 << 20 => chunk_size = n as usize,
            Ok(_) => problems.push(format!(
                "store.chunk_size '{c}' must be between 5MiB (S3's smallest multipart piece) \
                 and 512MiB"
            )),
            Err(why) => problems.push(format!("store.chunk_size: {why}")),
        }
    }
    let key = |name: &str,
               file: Option<PathBuf>,
               env: Option<String>,
               default_env: &str,
               problems: &mut Vec<String>| {
        secret_of(
            &format!("store.{name}"),
            None,
            file,
            env,
            resolve,
            true,
            problems,
        )
        .unwrap_or_else(|| SecretRef::Env(default_env.to_string()))
    };
    let credentials = CredentialSource {
        access_key_id: key(
            "access_key_id",
            s.access_key_id_file.clone(),
            s.access_key_id_env.clone(),
            "AWS_ACCESS_KEY_ID",
            problems,
        ),
        secret_access_key: key(
            "secret_access_key",
            s.secret_access_key_file.clone(),
            s.secret_access_key_env.clone(),
            "AWS_SECRET_ACCESS_KEY",
            problems,
        ),
    };
    for (key, set) in [
        ("path", s.path.is_some()),
        ("folder_id", s.folder_id.is_some()),
        ("folder", s.folder.is_some()),
        ("drive_id", s.drive_id.is_some()),
        (
            "service_account_key_file",
            s.service_account_key_file.is_some(),
        ),
        ("oauth_client_file", s.oauth_client_file.is_some()),
        ("token_file", s.token_file.is_some()),
    ] {
        if set {
            problems.push(format!("store.{key} does not apply to an s3 store"));
        }
    }
    StoreKind::S3(S3Config {
        endpoint,
        region: s.region.clone().unwrap_or_else(|| "us-east-1".into()),
        bucket,
        prefix,
        // Virtual-host addressing is AWS's; every other server takes the path style.
        path_style: s.path_style.unwrap_or(!aws),
        credentials,
        storage_class: s.storage_class.clone(),
        checksum_sha256,
        chunk_size,
        parallel_uploads: s.parallel_uploads.unwrap_or(2).clamp(1, 16),
        request_timeout: crate::store::s3::REQUEST_TIMEOUT,
        access_key_hint: String::new(),
    })
}

fn drive_auth(
    s: &RawStore,
    state_dir: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> crate::store::gdrive::DriveAuth {
    match (&s.service_account_key_file, &s.oauth_client_file) {
        (Some(f), None) => crate::store::gdrive::DriveAuth::ServiceAccount {
            key_file: resolve(f),
            subject: s.subject.clone(),
        },
        (None, Some(client)) => {
            if s.subject.is_some() {
                problems
                    .push("store.subject applies to a service account, not to a user token".into());
            }
            crate::store::gdrive::DriveAuth::UserToken {
                client_file: resolve(client),
                token_file: s
                    .token_file
                    .as_deref()
                    .map_or_else(|| state_dir.join("gdrive-token.json"), resolve),
            }
        }
        (sa, client) => {
            problems.push(if sa.is_some() && client.is_some() {
                "store: give service_account_key_file or oauth_client_file, not both".to_string()
            } else {
                "a gdrive store needs service_account_key_file (a service account in a \
                 Shared Drive, or with subject = for domain-wide delegation) or \
                 oauth_client_file (a user's Drive, after coffer auth gdrive)"
                    .to_string()
            });
            crate::store::gdrive::DriveAuth::ServiceAccount {
                key_file: PathBuf::new(),
                subject: None,
            }
        }
    }
}

/// `[compression]`: gzip level, threads, stored blocks for incompressible data.
pub(super) fn parse_compression(
    raw: Option<RawCompression>,
    problems: &mut Vec<String>,
) -> CompressOptions {
    let mut compression = CompressOptions::default();
    if let Some(c) = raw {
        if let Some(level) = c.level {
            if level > 9 {
                problems.push(format!("compression.level {level} is out of range (0–9)"));
            }
            compression.level = level.min(9);
        }
        if let Some(t) = c.threads {
            if t == 0 {
                problems.push("compression.threads must be at least 1".into());
            }
            compression.threads = t.max(1);
        }
        if let Some(s) = c.skip_incompressible {
            compression.skip_incompressible = s;
        }
    }
    compression
}

/// `[[source]]`: each source's kind and settings, every problem named by source.
pub(super) fn parse_sources(
    raw: Vec<RawSource>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Vec<SourceConfig> {
    let mut sources = Vec::new();
    for s in raw {
        if !crate::snapshot::is_valid_source_name(&s.name) {
            problems.push(format!(
                "source name '{}' must be 1–64 ASCII letters, digits, '-' or '_' (it names the stream)",
                s.name
            ));
        }
        if sources.iter().any(|o: &SourceConfig| o.name == s.name) {
            problems.push(format!("source name '{}' is used twice", s.name));
        }
        let password = source_password(&s, resolve, problems);
        if s.socket.is_some() && s.kind != "mysql" {
            problems.push(format!(
                "source '{}': key 'socket' does not apply to a {} source (mysql only; \
                 PostgreSQL takes ?host=/run/postgresql in its url)",
                s.name, s.kind
            ));
        }
        let kind = match s.kind.as_str() {
            "frappe" => frappe_source(&s, password.is_some(), resolve, problems),
            "frappe-bench" => frappe_bench_source(&s, password.is_some(), resolve, problems),
            "sqlite" => sqlite_source(&s, password.is_some(), resolve, problems),
            "mysql" => mysql_source(&s, password, resolve, problems),
            "postgres" => postgres_source(&s, password, problems),
            "directory" => directory_source(&s, resolve, problems),
            other => {
                problems.push(format!(
                    "source '{}': type '{other}' is not supported by this build (supported: directory, postgres, mysql, sqlite, frappe, frappe-bench)",
                    s.name
                ));
                None
            }
        };
        let Some(kind) = kind else {
            continue;
        };
        if s.exclude_sites.is_some() && !matches!(kind, SourceKind::FrappeBench { .. }) {
            problems.push(format!(
                "source '{}': key 'exclude_sites' applies to a frappe-bench source only",
                s.name
            ));
        }
        let full_every = full_every(&s, &kind, problems);
        sources.push(SourceConfig {
            name: s.name,
            kind,
            exact_count_limit: s
                .exact_count_limit
                .unwrap_or(crate::database::DEFAULT_EXACT_COUNT_LIMIT),
            full_every,
            bench: None,
        });
    }
    sources
}

/// `full_every` of a folder or frappe source (default a week; `0s`: every backup a full); a
/// problem if set on a database source.
fn full_every(s: &RawSource, kind: &SourceKind, problems: &mut Vec<String>) -> Duration {
    let folder = matches!(
        kind,
        SourceKind::Directory { .. } | SourceKind::Frappe { .. } | SourceKind::FrappeBench { .. }
    );
    let Some(text) = &s.full_every else {
        return crate::source::DEFAULT_FULL_EVERY;
    };
    if !folder {
        problems.push(format!(
            "source '{}': key 'full_every' does not apply to a {} source (a dump is always \
             whole; it applies to directory, frappe and frappe-bench sources)",
            s.name, s.kind
        ));
        return crate::source::DEFAULT_FULL_EVERY;
    }
    if text == "0" || text == "0s" {
        return Duration::ZERO;
    }
    match parse_duration(text) {
        Ok(d) => d,
        Err(why) => {
            problems.push(format!(
                "source '{}': full_every = \"{text}\": {why} (e.g. \"7d\"; \"0s\" makes every \
                 backup a full)",
                s.name
            ));
            crate::source::DEFAULT_FULL_EVERY
        }
    }
}

/// A problem for each key of `keys` that is set though it does not apply to `s`'s type.
fn unused_keys(s: &RawSource, keys: &[(&str, bool)], problems: &mut Vec<String>) {
    for (key, set) in keys {
        if *set {
            problems.push(format!(
                "source '{}': key '{key}' does not apply to a {} source",
                s.name, s.kind
            ));
        }
    }
}

/// The source's password: `password_file` or `password_env`, not both.
fn source_password(
    s: &RawSource,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SecretRef> {
    match (s.password_file.clone(), s.password_env.clone()) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "source '{}': give password_file or password_env, not both",
                s.name
            ));
            None
        }
        (Some(f), None) => Some(SecretRef::File(resolve(&f))),
        (None, Some(v)) => Some(SecretRef::Env(v)),
        (None, None) => None,
    }
}

/// `type = "frappe"`: the site folder (its database and password come from the site).
fn frappe_source(
    s: &RawSource,
    password: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    unused_keys(
        s,
        &[
            ("url", s.url.is_some()),
            ("exclude", !s.exclude.is_empty()),
            ("password_file", password),
            ("no_owner", s.no_owner.is_some()),
            ("dump_tool", s.dump_tool.is_some()),
        ],
        problems,
    );
    let Some(p) = &s.path else {
        problems.push(format!(
            "source '{}': path (the site folder, sites/<site>) is required for frappe",
            s.name
        ));
        return None;
    };
    Some(SourceKind::Frappe { path: resolve(p) })
}

/// `type = "frappe-bench"`: the bench folder, and the sites to leave out.
fn frappe_bench_source(
    s: &RawSource,
    password: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    unused_keys(
        s,
        &[
            ("url", s.url.is_some()),
            ("exclude", !s.exclude.is_empty()),
            ("password_file", password),
            ("no_owner", s.no_owner.is_some()),
            ("dump_tool", s.dump_tool.is_some()),
        ],
        problems,
    );
    let exclude_sites = s.exclude_sites.clone().unwrap_or_default();
    for site in &exclude_sites {
        if site.is_empty() || site.contains('/') {
            problems.push(format!(
                "source '{}': exclude_sites entry '{site}' is not a site name (a folder under \
                 sites/, such as erp.example.com)",
                s.name
            ));
        }
    }
    let Some(p) = &s.path else {
        problems.push(format!(
            "source '{}': path (the bench folder, e.g. /home/frappe/frappe-bench) is required \
             for frappe-bench",
            s.name
        ));
        return None;
    };
    Some(SourceKind::FrappeBench {
        path: resolve(p),
        exclude_sites,
    })
}

/// `type = "sqlite"`: the database file, and the `sqlite3` shell if it dumps.
fn sqlite_source(
    s: &RawSource,
    password: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    unused_keys(
        s,
        &[
            ("url", s.url.is_some()),
            ("exclude", !s.exclude.is_empty()),
            ("no_owner", s.no_owner.is_some()),
            ("password_file", password),
        ],
        problems,
    );
    let Some(p) = &s.path else {
        problems.push(format!(
            "source '{}': path (the database file) is required for sqlite",
            s.name
        ));
        return None;
    };
    Some(SourceKind::Sqlite {
        path: resolve(p),
        dump_tool: s.dump_tool.clone(),
    })
}

/// `type = "mysql"`: a `mysql://` url, with a socket if given.
fn mysql_source(
    s: &RawSource,
    password: Option<SecretRef>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    unused_keys(
        s,
        &[
            ("path", s.path.is_some()),
            ("exclude", !s.exclude.is_empty()),
            ("no_owner", s.no_owner.is_some()),
        ],
        problems,
    );
    let Some(url) = &s.url else {
        problems.push(format!(
            "source '{}': url is required (mysql://user@host:3306/dbname)",
            s.name
        ));
        return None;
    };
    match DbUrl::parse(url, "mysql", 3306) {
        Ok(mut url) => {
            url.socket = s.socket.as_deref().map(resolve);
            Some(SourceKind::Mysql {
                url,
                password,
                dump_tool: s.dump_tool.clone(),
            })
        }
        Err(why) => {
            problems.push(format!("source '{}': {why}", s.name));
            None
        }
    }
}

/// `type = "postgres"`: a `postgres://` url; `no_owner` unless set false.
fn postgres_source(
    s: &RawSource,
    password: Option<SecretRef>,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    unused_keys(
        s,
        &[
            ("path", s.path.is_some()),
            ("exclude", !s.exclude.is_empty()),
        ],
        problems,
    );
    let Some(url) = &s.url else {
        problems.push(format!(
            "source '{}': url is required (postgres://user@host:5432/dbname)",
            s.name
        ));
        return None;
    };
    if let Err(why) = check_postgres_url(url) {
        problems.push(format!("source '{}': {why}", s.name));
    }
    Some(SourceKind::Postgres {
        url: url.clone(),
        password,
        no_owner: s.no_owner.unwrap_or(true),
        dump_tool: s
            .dump_tool
            .clone()
            .unwrap_or_else(|| PathBuf::from("pg_dump")),
    })
}

/// `type = "directory"`: the folder and its excludes (keys that do not apply are named only
/// once there is a path).
fn directory_source(
    s: &RawSource,
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    let Some(p) = &s.path else {
        problems.push(format!(
            "source '{}': path is required for a directory",
            s.name
        ));
        return None;
    };
    unused_keys(
        s,
        &[
            ("url", s.url.is_some()),
            ("password_file", s.password_file.is_some()),
            ("password_env", s.password_env.is_some()),
            ("no_owner", s.no_owner.is_some()),
            ("dump_tool", s.dump_tool.is_some()),
            ("exact_count_limit", s.exact_count_limit.is_some()),
        ],
        problems,
    );
    if let Err(e) = crate::source::Excludes::new(&s.exclude) {
        problems.push(format!("source '{}': {e}", s.name));
    }
    Some(SourceKind::Directory {
        path: resolve(p),
        exclude: s.exclude.clone(),
        only: Vec::new(),
        generated: Vec::new(),
    })
}

/// `[retention]`: what prune keeps (default 7 daily, 4 weekly, 6 monthly).
pub(super) fn parse_retention(
    raw: Option<RawRetention>,
    problems: &mut Vec<String>,
) -> crate::retention::Policy {
    match raw {
        None => crate::retention::Policy::erpnext_default(),
        Some(r) => {
            let keep_within = match r.keep_within.as_deref().map(parse_duration) {
                None => None,
                Some(Ok(d)) => chrono::Duration::from_std(d).ok(),
                Some(Err(why)) => {
                    problems.push(format!("retention.keep_within: {why}"));
                    None
                }
            };
            let policy = crate::retention::Policy {
                keep_last: r.keep_last,
                keep_daily: r.keep_daily,
                keep_weekly: r.keep_weekly,
                keep_monthly: r.keep_monthly,
                keep_yearly: r.keep_yearly,
                keep_within,
            };
            if !policy.keeps_something() {
                problems.push(
                    "[retention] keeps nothing: prune would delete every snapshot but the \
                     newest; set keep_daily, keep_weekly, keep_monthly, keep_last or \
                     keep_within (or leave [retention] out for 7 daily, 4 weekly, 6 \
                     monthly)"
                        .into(),
                );
            }
            policy
        }
    }
}

/// `[jobs.*]`: the daemon's schedules; a deep verify and a drill need the identity, a
/// backup job needs a source.
pub(super) fn parse_jobs(
    raw: Option<RawJobs>,
    identity_missing: bool,
    no_sources: bool,
    problems: &mut Vec<String>,
) -> Vec<crate::schedule::JobSpec> {
    let mut jobs = Vec::new();
    if let Some(raw_jobs) = raw {
        use crate::schedule::{JobKind, JobSpec, Schedule};
        let mut wanted = Vec::new();
        if let Some(job) = raw_jobs.backup {
            if job.deep.is_some() {
                problems.push("jobs.backup: 'deep' is a setting of [jobs.verify]".into());
            }
            // A backup missed while the host was down is wanted as soon as it is up.
            wanted.push(("backup", job, JobKind::Backup, true));
        }
        if let Some(job) = raw_jobs.verify {
            let deep = job.deep.unwrap_or(false);
            if deep && identity_missing {
                problems.push(
                    "jobs.verify: deep = true needs encryption.identity_file (the private \
                     key): a deep verify decrypts the snapshot"
                        .into(),
                );
            }
            wanted.push(("verify", job, JobKind::Verify { deep }, false));
        }
        if let Some(job) = raw_jobs.drill {
            if job.deep.is_some() {
                problems.push("jobs.drill: 'deep' is a setting of [jobs.verify]".into());
            }
            if identity_missing {
                problems.push(
                    "jobs.drill: a drill restores the snapshot, so it needs \
                     encryption.identity_file (the private key; run drills on a staging \
                     host that holds it)"
                        .into(),
                );
            }
            wanted.push(("drill", job, JobKind::Drill, false));
        }
        for (name, job, kind, catch_up) in wanted {
            match Schedule::parse(&job.schedule) {
                Ok(schedule) => jobs.push(JobSpec {
                    kind,
                    schedule,
                    catch_up: job.catch_up.unwrap_or(catch_up),
                }),
                Err(why) => problems.push(format!("jobs.{name}.schedule: {why}")),
            }
        }
    }
    if no_sources
        && jobs
            .iter()
            .any(|j| j.kind == crate::schedule::JobKind::Backup)
    {
        problems.push(
            "[jobs.backup] is set but no [[source]] is configured: nothing to back up".into(),
        );
    }
    jobs
}
