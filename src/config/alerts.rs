//! `[alerts]`: email, Sentry and heartbeat channels, staleness and flood control.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::*;
use super::*;

pub(super) fn parse_alerts(
    a: RawAlerts,
    resolve: &dyn Fn(&Path) -> PathBuf,
    private: bool,
    problems: &mut Vec<String>,
) -> AlertsConfig {
    let defaults = AlertsConfig::default();
    let mut duration = |key: &str, v: Option<String>, default: Duration| match v {
        None => default,
        Some(s) => parse_duration(&s).unwrap_or_else(|why| {
            problems.push(format!("alerts.{key}: {why}"));
            default
        }),
    };
    let max_age = duration("max_age", a.max_age, defaults.max_age);
    let repeat_after = duration("repeat_after", a.repeat_after, defaults.repeat_after);
    let email = a.email.map(|e| {
        let tls = match e.tls.as_deref().unwrap_or("starttls") {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => {
                problems.push(format!(
                    "alerts.email.tls '{other}': use \"starttls\" (port 587), \"tls\" (465) or \
                     \"none\" (a relay on this host only)"
                ));
                SmtpTls::StartTls
            }
        };
        let loopback = matches!(e.smtp_host.as_str(), "localhost" | "127.0.0.1" | "::1")
            || e.smtp_host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if tls == SmtpTls::None && !loopback {
            problems.push(format!(
                "alerts.email: tls = \"none\" would send the SMTP password and the alerts in \
                 clear text to {}; it is allowed for a relay on this host only (127.0.0.1)",
                e.smtp_host
            ));
        }
        if e.to.is_empty() {
            problems.push("alerts.email.to: name at least one address".into());
        }
        for addr in e.to.iter().chain(std::iter::once(&e.from)) {
            if addr.parse::<lettre::message::Mailbox>().is_err() {
                problems.push(format!("alerts.email: '{addr}' is not an email address"));
            }
        }
        let password = secret_of(
            "alerts.email.password",
            None,
            e.password_file,
            e.password_env,
            resolve,
            private,
            problems,
        );
        if password.is_some() != e.username.is_some() {
            problems
                .push("alerts.email: username and password_file/password_env go together".into());
        }
        EmailConfig {
            to: e.to,
            from: e.from,
            smtp_port: e.smtp_port.unwrap_or(match tls {
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            }),
            smtp_host: e.smtp_host,
            tls,
            username: e.username,
            password,
            ca_file: e.ca_file.as_deref().map(resolve),
        }
    });
    let sentry = a.sentry.and_then(|s| {
        let dsn = secret_of(
            "alerts.sentry.dsn",
            None,
            s.dsn_file,
            s.dsn_env,
            resolve,
            private,
            problems,
        );
        if dsn.is_none() {
            problems.push("alerts.sentry: set dsn_file or dsn_env".into());
        }
        Some(SentryConfig {
            dsn: dsn?,
            environment: s.environment,
            check_ins: s.check_ins.unwrap_or(true),
        })
    });
    let heartbeat = a.heartbeat.and_then(|h| {
        let url = secret_of(
            "alerts.heartbeat.url",
            h.url,
            h.url_file,
            h.url_env,
            resolve,
            private,
            problems,
        );
        if url.is_none() {
            problems.push("alerts.heartbeat: set url, url_file or url_env".into());
        }
        Some(HeartbeatConfig { url: url? })
    });
    AlertsConfig {
        max_age,
        repeat_after,
        notify_on_success: a.notify_on_success.unwrap_or(false),
        email,
        sentry,
        heartbeat,
    }
}
