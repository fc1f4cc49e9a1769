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

use std::path::{Path, PathBuf};

use crate::database::DbUrl;
use crate::secret::SecretRef;
use crate::source::{SourceConfig, SourceKind};

#[derive(Debug, thiserror::Error)]
pub enum FrappeError {
    #[error("frappe source '{name}': cannot read {path}: {why}")]
    Config {
        name: String,
        path: PathBuf,
        why: String,
    },
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
            },
        },
    ])
}
