//! The `frappe` preset: a Frappe/ERPNext site folder (`sites/<site>`) becomes two sources,
//! read from its `site_config.json` (and the bench's `common_site_config.json`) at backup time:
//!
//! - `<name>-db`: the site's database (`db_type` `mariadb` (default) or `postgres`; user and
//!   database are `db_name` (the user `db_user` where set), the password is `db_password`, read
//!   from the file when the dump starts and never copied elsewhere; MariaDB connections go
//!   through `db_socket` where set, else over TCP to `db_host`/`db_port`);
//! - `<name>-files`: `public/files`, `private/files` and `site_config.json` itself (it holds
//!   the site's `encryption_key`, which is encrypted like everything else). `private/backups`,
//!   `locks` and the rest of the folder are left out.

//!
//! The `frappe-bench` source: a whole bench (`type = "frappe-bench"`). At each backup every
//! folder under `sites/` with a `site_config.json` (but `exclude_sites`) is a frappe preset
//! of its own, named after the site (`erp.example.com` → `erp_example_com-db`,
//! `erp_example_com-files`, as `coffer init` names them), plus the bench's own stream, named
//! after the source: `sites/common_site_config.json`, `sites/apps.txt`, `Procfile`,
//! `config/`, and an `apps.json` coffer writes with each app's git remote, branch and commit
//! (`bench_apps`), the code the sites' databases belong to.

use std::path::{Path, PathBuf};

use crate::database::DbUrl;
use crate::secret::SecretRef;
use crate::snapshot::BenchRecord;
use crate::source::{Generated, SourceConfig, SourceKind};

#[derive(Debug, thiserror::Error)]
pub enum FrappeError {
    #[error("frappe source '{name}': cannot read {path}: {why}")]
    Config {
        name: String,
        path: PathBuf,
        why: String,
    },
    #[error("frappe-bench source '{bench}': cannot list the sites in {path}: {why}")]
    Sites {
        bench: String,
        path: PathBuf,
        why: String,
    },
    #[error("frappe-bench source '{bench}': site '{site}' (source '{source_name}'): {why}")]
    Site {
        bench: String,
        site: String,
        source_name: String,
        why: String,
    },
    #[error(
        "frappe-bench source '{bench}': sites '{first}' and '{second}' would both be named \
         '{source_name}'; leave one out with exclude_sites, or back it up with a frappe source \
         of its own"
    )]
    SameName {
        bench: String,
        first: String,
        second: String,
        source_name: String,
    },
}

/// The source name of a site: `erp.example.com` → `erp_example_com` (letters, digits and
/// `-` kept, the rest `_`; cut to leave room for `-files`).
pub fn site_source_name(site: &str) -> String {
    let mut name: String = site
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(56);
    name
}

/// The sites of a bench: folders under `sites/` with a `site_config.json`, by name.
///
/// # Errors
/// When `sites/` cannot be listed.
pub fn bench_sites(bench: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(bench.join("sites"))? {
        let path = entry?.path();
        if path.join("site_config.json").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            found.push((name.to_string(), path));
        }
    }
    found.sort();
    Ok(found)
}

/// What the bench's own stream holds of the bench folder (those present).
const BENCH_FILES: [&str; 4] = [
    "sites/common_site_config.json",
    "sites/apps.txt",
    "Procfile",
    "config",
];

/// Expands a `frappe-bench` source: every site found now (but `exclude_sites`) as a frappe
/// preset, then the bench's own stream.
///
/// # Errors
/// When `sites/` cannot be listed, a site's config cannot be read (naming the site), or two
/// sites would share a source name.
pub fn expand_bench(
    name: &str,
    bench: &Path,
    exclude_sites: &[String],
    exact_count_limit: u64,
    full_every: std::time::Duration,
) -> Result<Vec<SourceConfig>, FrappeError> {
    let sites = bench_sites(bench).map_err(|e| FrappeError::Sites {
        bench: name.to_string(),
        path: bench.join("sites"),
        why: e.to_string(),
    })?;
    let mut out: Vec<SourceConfig> = Vec::new();
    let mut named: Vec<(String, String)> = Vec::new();
    for (site, path) in sites {
        if exclude_sites.contains(&site) {
            continue;
        }
        let source_name = site_source_name(&site);
        if let Some((first, _)) = named.iter().find(|(_, n)| *n == source_name) {
            return Err(FrappeError::SameName {
                bench: name.to_string(),
                first: first.clone(),
                second: site,
                source_name,
            });
        }
        let parts = expand(&source_name, &path, exact_count_limit, full_every).map_err(|e| {
            let why = match e {
                FrappeError::Config { path, why, .. } => {
                    format!("cannot read {}: {why}", path.display())
                }
                other => other.to_string(),
            };
            FrappeError::Site {
                bench: name.to_string(),
                site: site.clone(),
                source_name: source_name.clone(),
                why,
            }
        })?;
        out.extend(parts.into_iter().map(|mut p| {
            p.bench = Some(BenchRecord {
                bench: name.to_string(),
                site: Some(site.clone()),
            });
            p
        }));
        named.push((site, source_name));
    }
    let only = BENCH_FILES
        .iter()
        .map(PathBuf::from)
        .filter(|p| std::fs::symlink_metadata(bench.join(p)).is_ok())
        .collect();
    let apps = bench_apps(bench);
    let mut json = serde_json::to_vec_pretty(&apps).expect("apps.json serializes");
    json.push(b'\n');
    out.push(SourceConfig {
        name: name.to_string(),
        kind: SourceKind::Directory {
            path: bench.to_path_buf(),
            exclude: Vec::new(),
            only,
            generated: vec![Generated {
                path: PathBuf::from("apps.json"),
                bytes: json,
            }],
        },
        exact_count_limit,
        // A few small files: always whole.
        full_every: std::time::Duration::ZERO,
        bench: Some(BenchRecord {
            bench: name.to_string(),
            site: None,
        }),
    });
    Ok(out)
}

/// `apps.json`: the apps of a bench (`apps/<app>`) and the code each is at.
#[derive(Debug, serde::Serialize)]
pub struct BenchApps {
    /// What wrote it.
    pub made_by: String,
    pub apps: Vec<AppRecord>,
}

/// One app of a bench: where its code comes from and which commit it is at.
#[derive(Debug, serde::Serialize)]
pub struct AppRecord {
    pub app: String,
    /// The git remote it was fetched from (`upstream` as `bench get-app` names it, else
    /// `origin`, else the first), with any user or token taken out of the URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The branch checked out (none when the HEAD is detached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `__version__` of the app's Python package, when it says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why something is missing (not a git checkout, a ref that cannot be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The apps under `bench/apps`, read from their git folders directly (coffer runs as its own
/// user, for whom git itself would refuse a checkout owned by another), by name.
pub fn bench_apps(bench: &Path) -> BenchApps {
    let mut apps = Vec::new();
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(bench.join("apps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    names.sort();
    for (app, dir) in names {
        apps.push(app_record(app, &dir));
    }
    BenchApps {
        made_by: format!("coffer {}", env!("CARGO_PKG_VERSION")),
        apps,
    }
}

fn app_record(app: String, dir: &Path) -> AppRecord {
    let version = python_version(&dir.join(&app).join("__init__.py"));
    let mut record = AppRecord {
        app,
        remote: None,
        url: None,
        branch: None,
        commit: None,
        version,
        note: None,
    };
    let Some(git) = git_dir(dir) else {
        record.note = Some("not a git checkout: no remote or commit recorded".into());
        return record;
    };
    let common = read_small(&git.join("commondir"))
        .ok()
        .map(|c| git.join(c.trim()))
        .unwrap_or_else(|| git.clone());
    match read_small(&git.join("HEAD")) {
        Ok(head) => {
            let head = head.trim();
            if let Some(reference) = head.strip_prefix("ref: ") {
                record.branch = reference.strip_prefix("refs/heads/").map(str::to_string);
                record.commit = resolve_ref(&git, &common, reference);
                if record.commit.is_none() {
                    record.note = Some(format!("{reference} cannot be read"));
                }
            } else if is_sha(head) {
                record.commit = Some(head.to_string());
            }
        }
        Err(e) => record.note = Some(format!("cannot read {}: {e}", git.join("HEAD").display())),
    }
    if let Some((remote, url)) = remote(&common) {
        record.remote = Some(remote);
        record.url = Some(without_credentials(&url));
    }
    record
}

/// A small text file of a bench's apps (a git `HEAD`, `config`, `packed-refs`, a package's
/// `__init__.py`): only a regular file, and at most 8 MiB of it — whoever can write in `apps/`
/// must not make the backup read `/dev/zero` or wait on a FIFO.
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    const LIMIT: u64 = 8 << 20;
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(LIMIT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::other("larger than 8 MiB"));
    }
    Ok(text)
}

/// The git folder of a checkout: `.git`, or where a `.git` file (`gitdir: …`) points.
fn git_dir(dir: &Path) -> Option<PathBuf> {
    let dot = dir.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    let text = read_small(&dot).ok()?;
    let target = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    Some(if target.is_absolute() {
        target
    } else {
        dir.join(target)
    })
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A ref's commit: its loose file, else its line in `packed-refs`.
fn resolve_ref(git: &Path, common: &Path, reference: &str) -> Option<String> {
    if reference.split('/').any(|c| c.is_empty() || c == "..") {
        return None;
    }
    for base in [git, common] {
        if let Ok(text) = read_small(&base.join(reference)) {
            let sha = text.trim();
            return is_sha(sha).then(|| sha.to_string());
        }
    }
    let packed = read_small(&common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (sha, name) = line.split_once(' ')?;
        (name == reference && is_sha(sha)).then(|| sha.to_string())
    })
}

/// The remote an app came from: `upstream`, else `origin`, else the first in `config`.
fn remote(git: &Path) -> Option<(String, String)> {
    let text = read_small(&git.join("config")).ok()?;
    let mut remotes: Vec<(String, String)> = Vec::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .strip_prefix("[remote \"")
                .and_then(|r| r.strip_suffix("\"]"))
                .map(str::to_string);
        } else if let Some(name) = &section
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "url"
            && !remotes.iter().any(|(n, _)| n == name)
        {
            remotes.push((name.clone(), value.trim().to_string()));
        }
    }
    ["upstream", "origin"]
        .iter()
        .find_map(|want| remotes.iter().find(|(n, _)| n == want).cloned())
        .or_else(|| remotes.into_iter().next())
}

/// A remote URL without the user and token an https URL may carry.
fn without_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            // ssh://git@host/… names a login, not a secret: kept.
            if scheme != "ssh" {
                return format!("{scheme}://{host}{path}");
            }
        }
    }
    url.to_string()
}

/// `__version__ = "15.2.0"` of an app's package.
fn python_version(init: &Path) -> Option<String> {
    let text = read_small(init).ok()?;
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("__version__")?.trim_start();
        let value = rest.strip_prefix('=')?.trim();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let inner = value[1..].split(quote).next()?;
        (!inner.is_empty()).then(|| inner.to_string())
    })
}

/// Expands a `frappe` source into its database and files sources.
///
/// # Errors
/// When site_config.json is missing, not JSON, or lacks `db_name`.
pub fn expand(
    name: &str,
    site: &Path,
    exact_count_limit: u64,
    full_every: std::time::Duration,
) -> Result<Vec<SourceConfig>, FrappeError> {
    let config_path = site.join("site_config.json");
    let err = |why: String| FrappeError::Config {
        name: name.to_string(),
        path: config_path.clone(),
        why,
    };
    let read = |path: &Path| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))
    };
    let site_config = read(&config_path).map_err(err)?;
    // Bench-wide defaults (db_host, db_port) live next to the sites.
    let common = site
        .parent()
        .map(|p| p.join("common_site_config.json"))
        .filter(|p| p.is_file())
        .and_then(|p| read(&p).ok())
        .unwrap_or(serde_json::Value::Null);
    let field = |key: &str| site_config.get(key).or_else(|| common.get(key)).cloned();
    let text = |key: &str| field(key).and_then(|v| v.as_str().map(str::to_string));
    let db_name = text("db_name").ok_or_else(|| {
        err("it has no db_name (is path the sites/<site> folder of a Frappe bench?)".into())
    })?;
    // Frappe connects as db_user when a site has one, else as db_name.
    let db_user = text("db_user").unwrap_or_else(|| db_name.clone());
    let db_type = text("db_type").unwrap_or_else(|| "mariadb".into());
    let host = match text("db_host").as_deref() {
        None | Some("localhost") => "127.0.0.1".to_string(),
        Some(h) => h.to_string(),
    };
    let port = field("db_port").and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    });
    let password = site_config
        .get("db_password")
        .is_some()
        .then(|| SecretRef::JsonField {
            file: config_path.clone(),
            field: "db_password".into(),
        });
    let db_kind = match db_type.as_str() {
        "mariadb" | "mysql" => {
            let port = port.unwrap_or(3306);
            let mut url = DbUrl::parse(
                &format!("mysql://{db_user}@{host}:{port}/{db_name}"),
                "mysql",
                3306,
            )
            .map_err(err)?;
            // Frappe connects through db_socket when a site (or the bench) sets one.
            url.socket = text("db_socket")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from);
            SourceKind::Mysql {
                url,
                password,
                dump_tool: None,
            }
        }
        "postgres" => SourceKind::Postgres {
            url: format!(
                "postgres://{db_user}@{host}:{}/{db_name}",
                port.unwrap_or(5432)
            ),
            password,
            no_owner: true,
            dump_tool: PathBuf::from("pg_dump"),
        },
        other => {
            return Err(err(format!(
                "db_type '{other}' is neither mariadb nor postgres"
            )));
        }
    };
    Ok(vec![
        SourceConfig {
            name: format!("{name}-db"),
            kind: db_kind,
            exact_count_limit,
            full_every,
            bench: None,
        },
        SourceConfig {
            name: format!("{name}-files"),
            exact_count_limit,
            full_every,
            kind: SourceKind::Directory {
                path: site.to_path_buf(),
                exclude: Vec::new(),
                only: ["public/files", "private/files", "site_config.json"]
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                generated: Vec::new(),
            },
            bench: None,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_url_loses_its_credentials_but_not_an_ssh_login() {
        for (url, want) in [
            (
                "https://user:ghp_token@github.com/frappe/frappe.git",
                "https://github.com/frappe/frappe.git",
            ),
            (
                "https://ghp_token@github.com/org/app",
                "https://github.com/org/app",
            ),
            (
                "https://github.com/frappe/erpnext",
                "https://github.com/frappe/erpnext",
            ),
            (
                "ssh://git@git.example.org/app.git",
                "ssh://git@git.example.org/app.git",
            ),
            (
                "git@github.com:frappe/hrms.git",
                "git@github.com:frappe/hrms.git",
            ),
        ] {
            assert_eq!(without_credentials(url), want, "{url}");
        }
    }

    #[test]
    fn the_remote_is_upstream_then_origin_then_the_first() {
        let t = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(t.path().join("config"), text).unwrap();
        write(
            "[core]\n\tbare = false\n[remote \"fork\"]\n\turl = https://a/fork\n\
             [remote \"origin\"]\n\turl = https://a/origin\n[remote \"upstream\"]\n\
             \turl = https://a/upstream\n\tfetch = +refs/heads/*:refs/remotes/upstream/*\n",
        );
        assert_eq!(
            remote(t.path()),
            Some(("upstream".into(), "https://a/upstream".into()))
        );
        write("[remote \"fork\"]\n\turl = https://a/fork\n[remote \"origin\"]\n\turl = x\n");
        assert_eq!(remote(t.path()).unwrap().0, "origin");
        write("[remote \"fork\"]\n\turl = https://a/fork\n");
        assert_eq!(remote(t.path()).unwrap().0, "fork");
        write("[core]\n\tbare = false\n");
        assert_eq!(remote(t.path()), None);
    }

    #[test]
    fn an_apps_version_is_read_from_its_package() {
        let t = tempfile::tempdir().unwrap();
        let init = t.path().join("__init__.py");
        for (text, want) in [
            ("import os\n__version__ = \"15.4.1\"\n", Some("15.4.1")),
            ("__version__='2.0.0-dev'\n", Some("2.0.0-dev")),
            ("__version__ = get_version()\n", None),
            ("", None),
        ] {
            std::fs::write(&init, text).unwrap();
            assert_eq!(python_version(&init).as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn a_ref_outside_the_git_folder_is_never_read() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("secret"), "0".repeat(40)).unwrap();
        let git = t.path().join("repo/.git");
        std::fs::create_dir_all(&git).unwrap();
        assert_eq!(resolve_ref(&git, &git, "refs/../../../secret"), None);
        // Whoever writes in apps/ cannot make the backup read without end.
        assert!(read_small(Path::new("/dev/zero")).is_err());
        std::os::unix::fs::symlink("/dev/zero", git.join("HEAD")).unwrap();
        assert!(read_small(&git.join("HEAD")).is_err());
    }
}
