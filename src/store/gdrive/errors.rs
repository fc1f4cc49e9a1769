//! What a failed Drive call means: retry (5xx, 429, rate limits, dropped connections),
//! refresh the token (401), gone (404/410) or fatal (quota, the daily upload cap,
//! permissions), and the backoff between attempts.

use std::io::{self};
use std::time::Duration;

use serde_json::Value;

/// Why one attempt failed, and what to do about it.
pub(super) enum Failure {
    /// Try again (after `after`, or the backoff).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// The token was refused: refresh it, then try again (once).
    Unauthorized(String),
    /// The object (or upload session) is gone.
    NotFound(String),
    /// Waiting will not help.
    Fatal(String),
}

pub(super) fn io_other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// What Drive's JSON error says: (reason, message).
pub(super) fn error_reason(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    let reason = e["errors"][0]["reason"]
        .as_str()
        .or(e["status"].as_str())
        .unwrap_or("")
        .to_string();
    let message = e["message"].as_str().unwrap_or("").to_string();
    (reason, message)
}

/// Classifies a non-success answer.
pub(super) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let (reason, message) = error_reason(body);
    let said = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {reason}: {message}")
    };
    match status {
        401 => Failure::Unauthorized(said),
        404 | 410 => Failure::NotFound(said),
        429 => Failure::Retry {
            why: said,
            after: retry_after,
        },
        s if s >= 500 => Failure::Retry {
            why: said,
            after: retry_after,
        },
        403 => match reason.as_str() {
            // Drive reports its daily upload cap (750 GB per user) as this exact message.
            "userRateLimitExceeded" if message == "User rate limit exceeded." => {
                Failure::Fatal(format!(
                    "{said} — Drive's daily upload cap (750 GB per user per day) is reached; \
                     uploads resume tomorrow, or split the backup across users or Shared Drives"
                ))
            }
            "rateLimitExceeded" | "userRateLimitExceeded" => Failure::Retry {
                why: said,
                after: retry_after,
            },
            "storageQuotaExceeded" | "quotaExceeded" => Failure::Fatal(format!(
                "{said} — the Drive is full, or a service account is writing outside a Shared \
                 Drive (service accounts have no storage of their own): set store.drive_id to a \
                 Shared Drive the account is a member of, or use subject = (domain-wide \
                 delegation) or a user token"
            )),
            "teamDriveFileLimitExceeded" => Failure::Fatal(format!(
                "{said} — the Shared Drive holds 400,000 items; prune old snapshots or use another"
            )),
            "insufficientPermissions" | "insufficientFilePermissions" | "forbidden" => {
                Failure::Fatal(format!(
                    "{said} — the account may not write there: give it the Content manager role \
                     on the Shared Drive, or edit rights on the folder"
                ))
            }
            _ => Failure::Fatal(said),
        },
        _ => Failure::Fatal(said),
    }
}

pub(super) fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(300)))
}

pub(super) use crate::store::backoff;

pub(super) fn fatal_io(f: Failure) -> io::Error {
    match f {
        Failure::Fatal(why) | Failure::Unauthorized(why) | Failure::NotFound(why) => {
            io::Error::new(io::ErrorKind::PermissionDenied, why)
        }
        Failure::Retry { why, .. } => io_other(why),
    }
}

/// Maps a google-drive3 error onto what to do.
pub(super) fn hub_failure(e: google_drive3::Error) -> Failure {
    match e {
        google_drive3::Error::Failure(resp) => {
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            // google-drive3 hands JSON error bodies over as BadRequest; this is an answer
            // without one (a front end's HTML page): a 403 there is worth a few retries.
            if status == 403 {
                Failure::Retry {
                    why: "HTTP 403 without a reason".into(),
                    after,
                }
            } else {
                classify(status, after, b"")
            }
        }
        // A 2xx body cut short reaches us as a JSON error: ask again.
        google_drive3::Error::JsonDecodeError(_, e) => Failure::Retry {
            why: format!("a truncated answer: {e}"),
            after: None,
        },
        google_drive3::Error::BadRequest(v) => {
            let status = v["error"]["code"].as_u64().unwrap_or(400) as u16;
            classify(status, None, v.to_string().as_bytes())
        }
        google_drive3::Error::HttpError(e) => Failure::Retry {
            why: format!("connection: {e}"),
            after: None,
        },
        google_drive3::Error::Io(e) => Failure::Retry {
            why: format!("connection: {e}"),
            after: None,
        },
        google_drive3::Error::MissingToken(e) => Failure::Unauthorized(e.to_string()),
        other => Failure::Fatal(other.to_string()),
    }
}
