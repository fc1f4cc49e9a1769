//! Sentry: an event per alert, tagged (job, source, stage, host) with the error chain as its
//! exception values, and a cron check-in (`coffer-<job>`, ok or error) per finished run. Each
//! send waits for Sentry's answer, so nothing is lost when the process exits and a refusal
//! is an error the caller logs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use secrecy::ExposeSecret;
use sentry::protocol::{
    Event as SentryEvent, Exception, Level, MonitorCheckIn, MonitorCheckInStatus, Values,
};
use sentry::{Client, ClientOptions, Envelope};

use super::{Event, FinishedRun, Kind, Notifier};
use crate::config::SentryConfig;

const FLUSH: Duration = Duration::from_secs(10);

/// Sends each envelope at once, waits for Sentry's answer and keeps it.
///
/// The sentry crate's own transports send from a queue and drop an envelope Sentry refused
/// (a 5xx, a 429, a key it does not know) without a word: the alert would count as
/// delivered, no failure would be logged, and flood control would hold back the next
/// failure's alert on this channel for `repeat_after`. Alerts are few: each waits for its
/// answer.
struct Posting {
    url: String,
    /// `X-Sentry-Auth`: holds the DSN's public key.
    auth: String,
    http: reqwest::Client,
    /// Why envelopes sent since the last `Sentry::answered` did not arrive.
    failures: Mutex<Vec<String>>,
}

impl Posting {
    fn post(&self, envelope: &Envelope) -> Result<(), String> {
        let mut body = Vec::new();
        envelope
            .to_writer(&mut body)
            .map_err(|e| format!("encoding the event for Sentry: {e}"))?;
        let request = self
            .http
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header("Content-Type", "application/x-sentry-envelope")
            .body(body);
        // Its own thread and runtime: the caller may be inside a runtime itself.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the runtime to reach Sentry: {e}"))?;
                rt.block_on(async {
                    let response = request.send().await.map_err(|e| {
                        // The URL holds no key, but the host is all a reader needs.
                        let e = e.without_url();
                        let mut why = e.to_string();
                        let mut cause = std::error::Error::source(&e);
                        while let Some(c) = cause {
                            why = format!("{why}: {c}");
                            cause = c.source();
                        }
                        format!("cannot reach Sentry: {why}")
                    })?;
                    let status = response.status();
                    if status.is_success() {
                        Ok(())
                    } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                        Err(format!(
                            "Sentry answered {status}: rate limited, the event was dropped"
                        ))
                    } else {
                        Err(format!("Sentry answered {status}"))
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err("sending to Sentry panicked".into()))
        })
    }
}

impl sentry::Transport for Posting {
    fn send_envelope(&self, envelope: Envelope) {
        if let Err(e) = self.post(&envelope) {
            self.failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e);
        }
    }
}

pub struct Sentry {
    client: Arc<Client>,
    posting: Arc<Posting>,
    check_ins: bool,
    environment: Option<String>,
}

impl Sentry {
    pub fn new(c: &SentryConfig) -> Result<Sentry, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dsn = c.dsn.load()?;
        // The DSN holds a key: its parse error never repeats it.
        let dsn: sentry::types::Dsn =
            dsn.expose_secret().trim().parse().map_err(|_| {
                "the Sentry DSN is not valid (https://KEY@HOST/PROJECT)".to_string()
            })?;
        let mut options = ClientOptions::default();
        options.release = Some(concat!("coffer@", env!("CARGO_PKG_VERSION")).into());
        options.environment = c.environment.clone().map(Into::into);
        options.send_default_pii = false;
        options.shutdown_timeout = FLUSH;
        // Timeouts: a Sentry that does not answer must not hold a job. No idle connections
        // are kept: each send has a runtime of its own.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(FLUSH)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("Sentry's HTTP client: {e}"))?;
        let posting = Arc::new(Posting {
            url: dsn.envelope_api_url().to_string(),
            auth: dsn.to_auth(Some(&options.user_agent)).to_string(),
            http,
            failures: Mutex::new(Vec::new()),
        });
        options.dsn = Some(dsn);
        let transport = Arc::clone(&posting);
        options.transport = Some(Arc::new(
            move |_: &ClientOptions| -> Arc<dyn sentry::Transport> { transport.clone() },
        ));
        Ok(Sentry {
            client: Arc::new(Client::from(options)),
            posting,
            check_ins: c.check_ins,
            environment: c.environment.clone(),
        })
    }

    /// Whether what was sent since the last call arrived; if not, why.
    fn answered(&self) -> Result<(), String> {
        let failures = std::mem::take(
            &mut *self
                .posting
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

impl Sentry {
    fn check_in(
        &self,
        job: &str,
        id: sentry::types::Uuid,
        status: MonitorCheckInStatus,
        duration: Option<f64>,
    ) {
        let check_in = MonitorCheckIn {
            check_in_id: id,
            monitor_slug: format!("coffer-{job}"),
            status,
            environment: self.environment.clone(),
            duration,
            monitor_config: None,
        };
        let mut envelope = Envelope::new();
        envelope.add_item(check_in);
        self.client.send_envelope(envelope);
    }
}

impl Notifier for Sentry {
    fn name(&self) -> &'static str {
        "sentry"
    }

    fn wants(&self, _: &Event) -> bool {
        true
    }

    fn send(&self, event: &Event) -> Result<(), String> {
        let mut tags = BTreeMap::new();
        tags.insert("job".to_string(), event.job.clone());
        tags.insert("host".to_string(), event.host.clone());
        tags.insert("kind".to_string(), event.kind.as_str().to_string());
        for (k, v) in [
            ("source", &event.source),
            ("stage", &event.stage),
            ("snapshot", &event.snapshot),
        ] {
            if let Some(v) = v {
                tags.insert(k.to_string(), v.clone());
            }
        }
        let level = match event.kind {
            Kind::Failed | Kind::Stale => Level::Error,
            Kind::Warning => Level::Warning,
            Kind::Recovered | Kind::Success | Kind::Test => Level::Info,
        };
        // Innermost cause first, as Sentry orders exception values.
        let exception: Vec<Exception> = event
            .errors
            .iter()
            .rev()
            .map(|e| Exception {
                ty: "coffer".into(),
                value: Some(e.clone()),
                ..Default::default()
            })
            .collect();
        let sentry_event = SentryEvent {
            message: Some(event.subject()),
            level,
            tags,
            server_name: Some(event.host.clone().into()),
            exception: Values::from(exception),
            fingerprint: vec![
                "coffer".into(),
                event.kind.as_str().to_string().into(),
                event.job.clone().into(),
            ]
            .into(),
            ..Default::default()
        };
        self.client.capture_event(sentry_event, None);
        self.answered()
    }

    /// An in-progress check-in when a run starts (monitor `coffer-<job>`); its id comes back
    /// to `run_finished`, so Sentry sees the run's duration and a run that never ends.
    fn run_started(&self, job: &str) -> Option<String> {
        if !self.check_ins {
            return None;
        }
        let id = sentry::types::Uuid::from_bytes(rand::random());
        self.check_in(job, id, MonitorCheckInStatus::InProgress, None);
        if let Err(e) = self.answered() {
            tracing::error!(
                channel = "sentry",
                job,
                "could not report the run's start: {e}"
            );
        }
        Some(id.simple().to_string())
    }

    /// A cron check-in for every finished run, flood control or not: a monitor that hears
    /// only failures would call every quiet day a miss.
    fn run_finished(&self, run: &FinishedRun<'_>) -> Result<(), String> {
        if !self.check_ins {
            return Ok(());
        }
        let id = run
            .token
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| sentry::types::Uuid::from_bytes(rand::random()));
        let status = if run.ok {
            MonitorCheckInStatus::Ok
        } else {
            MonitorCheckInStatus::Error
        };
        self.check_in(run.job, id, status, run.seconds);
        self.answered()
    }
}
