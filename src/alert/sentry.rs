//! Sentry: an event per alert, tagged (job, source, stage, host) with the error chain as its
//! exception values, and a cron check-in (`coffer-<job>`, ok or error) per finished run. Each
//! send is flushed before it returns, so nothing is lost when the process exits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sentry::protocol::{
    Event as SentryEvent, Exception, Level, MonitorCheckIn, MonitorCheckInStatus, Values,
};
use sentry::{Client, ClientOptions, Envelope};

use super::{Event, FinishedRun, Kind, Notifier};
use crate::config::SentryConfig;

const FLUSH: Duration = Duration::from_secs(10);

/// Where events go when the options hold no DSN (never: the DSN is checked first).
struct NoTransport;

impl sentry::Transport for NoTransport {
    fn send_envelope(&self, _: Envelope) {}
}

pub struct Sentry {
    client: Arc<Client>,
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
        options.dsn = Some(dsn);
        options.release = Some(concat!("coffer@", env!("CARGO_PKG_VERSION")).into());
        options.environment = c.environment.clone().map(Into::into);
        options.send_default_pii = false;
        options.shutdown_timeout = FLUSH;
        // The HTTP transport (reqwest, rustls with ring), with timeouts: a Sentry that does
        // not answer must not hold a job (dropping the client waits for its sender).
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("Sentry's HTTP client: {e}"))?;
        options.transport = Some(Arc::new(
            move |opts: &ClientOptions| -> Arc<dyn sentry::Transport> {
                match sentry::TransportOptions::try_from_client_options(opts) {
                    Some(general) => Arc::new(
                        sentry::transports::ReqwestHttpTransportOptions::from(general)
                            .with_client(http.clone())
                            .build(),
                    ),
                    None => Arc::new(NoTransport),
                }
            },
        ));
        Ok(Sentry {
            client: Arc::new(Client::from(options)),
            check_ins: c.check_ins,
            environment: c.environment.clone(),
        })
    }

    fn flush(&self) -> Result<(), String> {
        if self.client.flush(Some(FLUSH)) {
            Ok(())
        } else {
            Err(format!("Sentry did not take the event within {FLUSH:?}"))
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
        self.flush()
    }

    /// An in-progress check-in when a run starts (monitor `coffer-<job>`); its id comes back
    /// to `run_finished`, so Sentry sees the run's duration and a run that never ends.
    fn run_started(&self, job: &str) -> Option<String> {
        if !self.check_ins {
            return None;
        }
        let id = sentry::types::Uuid::from_bytes(rand::random());
        self.check_in(job, id, MonitorCheckInStatus::InProgress, None);
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
        self.flush()
    }
}
