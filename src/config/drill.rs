//! `[drill]`: the staging folder, the staging databases and their probes, the HTTP probe,
//! one validator each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::*;
use super::*;

pub(super) fn parse_drill(
    raw: Option<RawDrill>,
    state_dir: &Path,
    sources: &[SourceConfig],
    resolve: &dyn Fn(&Path) -> PathBuf,
    private: bool,
    problems: &mut Vec<String>,
) -> DrillConfig {
    // Without a [drill] section the default staging folder is checked when a drill runs
    // (a config that never drills is not refused for it).
    let Some(raw) = raw else {
        return DrillConfig {
            staging_dir: state_dir.join("drill"),
            check_files: FileCheck::All,
            databases: Vec::new(),
            http: None,
        };
    };
    let staging_dir = staging_dir(
        raw.staging_dir.as_deref(),
        state_dir,
        sources,
        resolve,
        problems,
    );
    let databases = drill_databases(raw.database, sources, resolve, private, problems);
    let http = raw.http.map(|h| drill_http(h, resolve, private, problems));
    let check_files = match raw.check_files.as_deref() {
        None | Some("all") => FileCheck::All,
        Some("sample") => FileCheck::Sample(FILE_SAMPLE),
        Some("none") => FileCheck::None,
        Some(other) => {
            problems.push(format!(
                "drill.check_files '{other}': use \"all\" (hash every restored file), \
                 \"sample\" ({FILE_SAMPLE} files) or \"none\""
            ));
            FileCheck::All
        }
    };
    DrillConfig {
        staging_dir,
        check_files,
        databases,
        http,
    }
}

/// `drill.staging_dir`: absolute, below `/`, apart from every backed-up folder.
fn staging_dir(
    raw: Option<&Path>,
    state_dir: &Path,
    sources: &[SourceConfig],
    resolve: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Vec<String>,
) -> PathBuf {
    // Absolute (a config read by a relative path resolves relative to the working folder).
    let staging_dir = raw.map_or_else(|| state_dir.join("drill"), resolve);
    let staging_dir = std::path::absolute(&staging_dir).unwrap_or(staging_dir);
    if staging_dir.parent().is_none() {
        problems.push(format!(
            "drill.staging_dir {} must be a folder below / (coffer empties what it restored \
             there before each drill)",
            staging_dir.display()
        ));
    }
    for s in sources {
        let path = match &s.kind {
            SourceKind::Directory { path, .. }
            | SourceKind::Frappe { path }
            | SourceKind::FrappeBench { path, .. } => path,
            _ => continue,
        };
        if staging_dir.starts_with(path) || path.starts_with(&staging_dir) {
            problems.push(format!(
                "drill.staging_dir {} overlaps source '{}' ({}): a drill empties its staging \
                 folder, so it must be apart from every backed-up folder",
                staging_dir.display(),
                s.name,
                path.display()
            ));
        }
    }
    staging_dir
}

/// `[[drill.database]]`: one staging database per database source, each listed once.
fn drill_databases(
    raw: Vec<RawDrillDatabase>,
    sources: &[SourceConfig],
    resolve: &dyn Fn(&Path) -> PathBuf,
    private: bool,
    problems: &mut Vec<String>,
) -> Vec<DrillDatabase> {
    let mut databases: Vec<DrillDatabase> = Vec::new();
    let mut seen: Vec<(String, bool)> = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let key = format!("drill.database[{i}] (source '{}')", d.source);
        // A bench may have one {site} template per engine; anything else once.
        let template = d.url.contains("{site}");
        let twice = |o: &(String, bool)| o.0 == d.source && !(o.1 && template);
        if seen.iter().any(twice) {
            problems.push(format!("{key}: source '{}' is listed twice", d.source));
        }
        seen.push((d.source.clone(), template));
        if let Some(database) = drill_database(&key, d, sources, resolve, private, problems) {
            let engine = database.address.engine().kind();
            if template
                && databases.iter().any(|o| {
                    o.source == database.source
                        && o.template.is_some()
                        && o.address.engine().kind() == engine
                })
            {
                problems.push(format!(
                    "{key}: frappe-bench '{}' has two {engine} templates; one serves every \
                     {engine} site",
                    database.source
                ));
            }
            databases.push(database);
        }
    }
    databases
}

/// One `[[drill.database]]`, named `key` in problems: a url of the source's engine that is not
/// the source database itself, probes, a password. `None` when the url does not parse.
fn drill_database(
    key: &str,
    d: RawDrillDatabase,
    sources: &[SourceConfig],
    resolve: &dyn Fn(&Path) -> PathBuf,
    private: bool,
    problems: &mut Vec<String>,
) -> Option<DrillDatabase> {
    // A relative file is relative to the config, as every path in it (the daemon and the CLI
    // run from different folders); made absolute, so sqlite3 never takes it for a `file:` URI.
    let sqlite_file = d
        .url
        .strip_prefix("sqlite:")
        .map(|rest| rest.strip_prefix("//").unwrap_or(rest))
        .filter(|p| !p.is_empty());
    let bench = sources
        .iter()
        .find(|s| s.name == d.source)
        .is_some_and(|s| matches!(s.kind, SourceKind::FrappeBench { .. }));
    let template = d.url.contains("{site}").then(|| d.url.clone());
    if template.is_some() {
        if sqlite_file.is_some() {
            problems.push(format!(
                "{key}.url: {{site}} is for the mysql:// or postgres:// url of a frappe-bench's \
                 sites"
            ));
            return None;
        }
        if let Some(s) = sources.iter().find(|s| s.name == d.source)
            && !bench
        {
            problems.push(format!(
                "{key}.url: {{site}} applies to a frappe-bench source; '{}' is a {} source",
                d.source,
                s.kind_name()
            ));
        }
    } else if bench {
        problems.push(format!(
            "{key}.url: '{}' is a frappe-bench, whose sites each need a staging database: put \
             {{site}} in the url (e.g. mysql://root@127.0.0.1:3306/drill_{{site}})",
            d.source
        ));
    }
    let url = d.url.replace("{site}", "site");
    let parsed = match sqlite_file {
        Some(p) => {
            let file = resolve(Path::new(p));
            std::path::absolute(&file)
                .map(crate::database::Address::Sqlite)
                .map_err(|e| format!("cannot resolve '{}': {e}", file.display()))
        }
        None => crate::database::Address::parse(&url),
    };
    let address = match parsed {
        Ok(a) => a,
        Err(why) => {
            problems.push(format!("{key}.url: {why}"));
            return None;
        }
    };
    if let Some(s) = sources.iter().find(|s| s.name == d.source)
        && let Some((source_address, _)) = s.kind.database()
    {
        if source_address.engine() != address.engine() {
            problems.push(format!(
                "{key}.url: source '{}' is a {} database, the url is {}",
                d.source,
                source_address.engine().kind(),
                address.engine().kind()
            ));
        } else if source_address.to_string() == address.to_string() {
            problems.push(format!(
                "{key}.url is the source database itself ({address}); a drill drops and \
                 re-creates its staging database: give a separate staging database"
            ));
        }
    }
    if d.probes.iter().any(|p| p.trim().is_empty()) {
        problems.push(format!("{key}.probes: a probe is empty"));
    }
    let password = secret_of(
        &format!("{key}.password"),
        None,
        d.password_file,
        d.password_env,
        resolve,
        private,
        problems,
    );
    Some(DrillDatabase {
        source: d.source,
        address,
        password,
        probes: d.probes,
        template,
    })
}

/// `[drill.http]`: an http(s) URL (a token never in clear text to another host), a timeout.
fn drill_http(
    h: RawDrillHttp,
    resolve: &dyn Fn(&Path) -> PathBuf,
    private: bool,
    problems: &mut Vec<String>,
) -> DrillHttp {
    let mut plain_remote = false;
    match h.url.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) => {
            let host = u.host().unwrap_or("").trim_matches(['[', ']']);
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            plain_remote = u.scheme_str() == Some("http") && !loopback;
        }
        _ => problems.push(format!(
            "drill.http.url '{}' is not an http(s) URL",
            redact_url(&h.url)
        )),
    }
    if plain_remote && (h.token.is_some() || h.token_file.is_some() || h.token_env.is_some()) {
        problems.push(
            "drill.http: the token would travel in clear text over http:// to another host; \
             use an https:// url (or a staging application on this host)"
                .into(),
        );
    }
    let timeout = match h.timeout.as_deref().map(parse_duration) {
        None => Duration::from_secs(60),
        Some(Ok(d)) => d,
        Some(Err(why)) => {
            problems.push(format!("drill.http.timeout: {why}"));
            Duration::from_secs(60)
        }
    };
    let token = secret_of(
        "drill.http.token",
        h.token,
        h.token_file,
        h.token_env,
        resolve,
        private,
        problems,
    );
    DrillHttp {
        url: h.url,
        token,
        expect_status: h.expect_status.unwrap_or(200),
        expect_body: h.expect_body,
        timeout,
    }
}
