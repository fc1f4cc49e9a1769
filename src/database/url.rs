//! Database urls in a config: parsed, checked to hold no password, and shown redacted.

use std::path::PathBuf;

/// A database address `scheme://user@host:port/database` (no password: that is a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// A Unix socket to connect through instead of TCP to host:port (MariaDB/MySQL `socket`,
    /// a Frappe site's `db_socket`).
    pub socket: Option<PathBuf>,
}

impl DbUrl {
    /// Parses `mysql://user@host[:port]/database`.
    ///
    /// # Errors
    /// A message saying what is wrong with the url.
    pub fn parse(url: &str, scheme: &str, default_port: u16) -> Result<DbUrl, String> {
        let example = format!("{scheme}://user@host:{default_port}/dbname");
        // What messages may show: no query (it could hold anything), no password.
        let shown = redact_url(url.split('?').next().unwrap_or(""));
        if has_password(url) {
            return Err(format!(
                "url '{shown}' holds a password: put it in password_file or password_env instead \
                 (a url is printed in logs and process lists)"
            ));
        }
        if url.contains('?') {
            return Err(format!(
                "url '{shown}' has ?parameters, which {scheme} urls do not take (a password \
                 goes in password_file or password_env, a socket in socket)"
            ));
        }
        let rest = url
            .strip_prefix(&format!("{scheme}://"))
            .ok_or_else(|| format!("url '{shown}' must look like {example}"))?;
        let (authority, database) = rest
            .split_once('/')
            .ok_or_else(|| format!("url '{shown}' names no database ({example})"))?;
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| format!("url '{shown}' names no user ({example})"))?;
        if user.contains(':') {
            return Err(
                "the url holds a password: put it in password_file or password_env \
                 instead (a url is printed in logs and process lists)"
                    .into(),
            );
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| format!("url '{shown}': port '{p}' is not a number"))?,
            ),
            None => (hostport, default_port),
        };
        let safe = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_$-.".contains(&b))
        };
        if !safe(user) || !safe(host) || !safe(database) || database.contains('.') {
            return Err(format!(
                "url '{shown}': user, host and database may hold only letters, digits, '_', '$', \
                 '-' (and '.' in the host)"
            ));
        }
        Ok(DbUrl {
            user: user.into(),
            host: host.into(),
            port,
            database: database.into(),
            socket: None,
        })
    }
}

/// A url with anything that could be a password (between `://` and the last `@`) masked, for
/// messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn has_password(url: &str) -> bool {
    redact_url(url) != url
}

/// Minimal percent-decoding of a url query key.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a PostgreSQL URL: the scheme, a database, and no password anywhere in it.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    if has_password(url) {
        return Err(format!(
            "url '{shown}' holds a password: put it in password_file or password_env instead \
             (a url is printed in logs and process lists)"
        ));
    }
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("url '{shown}' must start with postgres://"))?;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let database = before_query.split_once('/').map_or("", |(_, db)| db);
    if database.is_empty() {
        return Err(format!(
            "url '{shown}' names no database (postgres://user@host:5432/dbname): pg_dump would \
             pick one by itself"
        ));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = percent_decode(pair.split('=').next().unwrap_or("")).to_ascii_lowercase();
        if key.contains("password") {
            return Err(format!(
                "url '{}' holds a password parameter: use password_file or password_env",
                url.split('?').next().unwrap_or("")
            ));
        }
        if key == "dbname" {
            return Err(format!(
                "url '{shown}': give the database in the path, not as ?dbname="
            ));
        }
    }
    Ok(())
}
