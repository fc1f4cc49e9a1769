//! A dead man's switch (healthchecks.io style): every successful backup POSTs to the URL,
//! every failed job to `<url>/fail` with the error as the body. The service alerts when the
//! pings stop, which catches what coffer cannot report itself: a host that is down, a daemon
//! that is not running.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};

use super::{Event, FinishedRun, Kind, Notifier};
use crate::config::HeartbeatConfig;

const TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 2;

pub struct Heartbeat {
    url: SecretString,
}

impl Heartbeat {
    pub fn new(config: &HeartbeatConfig) -> Result<Heartbeat, String> {
        let url = config.url.load()?;
        let parsed: hyper::Uri = url
            .expose_secret()
            .trim()
            .parse()
            .map_err(|_| "alerts.heartbeat.url is not a URL".to_string())?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) {
            return Err("alerts.heartbeat.url must be an http(s) URL".into());
        }
        Ok(Heartbeat {
            url: SecretString::from(url.expose_secret().trim().trim_end_matches('/').to_string()),
        })
    }

    /// POSTs `body` to the URL with `suffix` (`""`, `/fail`, `/log`).
    fn ping(&self, suffix: &str, body: String) -> Result<(), String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("{}{suffix}", self.url.expose_secret());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("no TLS roots: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            let client: Client<_, Full<bytes::Bytes>> =
                Client::builder(TokioExecutor::new()).build(connector);
            let mut last = String::new();
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    if crate::shutdown::requested() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let request = hyper::Request::post(url.as_str())
                    .header("content-type", "text/plain; charset=utf-8")
                    .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")))
                    .body(Full::new(bytes::Bytes::from(body.clone())))
                    .map_err(|_| "the heartbeat URL is not valid".to_string())?;
                match tokio::time::timeout(TIMEOUT, client.request(request)).await {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        if status.is_success() {
                            return Ok(());
                        }
                        // The URL is a secret: the answer is named, the address is not.
                        last = format!("the heartbeat service answered {status}");
                        if status.is_client_error() {
                            break;
                        }
                    }
                    Ok(Err(e)) => last = format!("cannot reach the heartbeat service: {e}"),
                    Err(_) => last = format!("the heartbeat service did not answer in {TIMEOUT:?}"),
                }
            }
            Err(last)
        })
    }
}

impl Notifier for Heartbeat {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    /// Runs reach it through `run_finished`; of the events only the test (posted to
    /// `<url>/log`, which healthchecks.io records without changing the check's state: a
    /// test must not make a failing check look healthy).
    fn wants(&self, event: &Event) -> bool {
        event.kind == Kind::Test
    }

    fn send(&self, event: &Event) -> Result<(), String> {
        self.ping("/log", event.summary.clone())
    }

    /// Only backups keep the switch alive; any job's failure trips it.
    fn run_finished(&self, run: &FinishedRun<'_>) -> Result<(), String> {
        match (run.ok, run.job) {
            (true, "backup") => self.ping("", run.detail.to_string()),
            (true, _) => Ok(()),
            (false, _) => self.ping("/fail", run.detail.to_string()),
        }
    }
}
