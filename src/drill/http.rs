//! The drill's HTTP probe of the staging application.

use std::time::{Duration, Instant};

use crate::config::DrillHttp;

use super::*;

/// Asks the staging application, every 2 s until `timeout`, for the expected answer.
pub(super) fn http_probe(http: &DrillHttp) -> HttpResult {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use secrecy::ExposeSecret;

    // A query string may carry a key: it is not shown.
    let shown = match http.url.split_once('?') {
        Some((base, _)) => format!("{}?…", crate::config::redact_url(base)),
        None => crate::config::redact_url(&http.url),
    };
    let started = Instant::now();
    let mut result = HttpResult {
        url: shown.clone(),
        ok: false,
        status: None,
        attempts: 0,
        seconds: 0.0,
        error: None,
    };
    let token = match http
        .token
        .as_ref()
        .map(crate::config::SecretRef::load)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            result.error = Some(format!("cannot read drill.http's token: {e}"));
            return result;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    rt.block_on(async {
        let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b.https_or_http().enable_http1().build(),
            Err(e) => {
                result.error = Some(format!("no TLS roots: {e}"));
                return;
            }
        };
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let deadline = started + http.timeout;
        loop {
            result.attempts += 1;
            let mut request = hyper::Request::get(http.url.as_str())
                .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")))
                .header("accept", "application/json, text/plain, */*");
            if let Some(t) = &token {
                request = request.header("authorization", format!("token {}", t.expose_secret()));
            }
            let request = match request.body(Empty::new()) {
                Ok(r) => r,
                Err(_) => {
                    result.error =
                        Some("drill.http.url or its token is not valid in a request".into());
                    return;
                }
            };
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match tokio::time::timeout(left, client.request(request)).await {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    result.status = Some(status);
                    let body = tokio::time::timeout(left, response.into_body().collect())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                        .unwrap_or_default();
                    let body_ok = http
                        .expect_body
                        .as_deref()
                        .is_none_or(|want| body.contains(want));
                    if status == http.expect_status && body_ok {
                        result.ok = true;
                        result.error = None;
                        break;
                    }
                    let snippet: String = body.chars().take(200).collect();
                    result.error = Some(if status == http.expect_status {
                        format!(
                            "the answer ({status}) does not contain {:?}; it began {:?}",
                            http.expect_body.as_deref().unwrap_or(""),
                            snippet
                        )
                    } else {
                        format!(
                            "it answered {status}, expected {}; the answer began {snippet:?}",
                            http.expect_status
                        )
                    });
                }
                Ok(Err(e)) => result.error = Some(format!("cannot reach it: {e}")),
                Err(_) => result.error = Some("no answer in time".into()),
            }
            if Instant::now() + Duration::from_secs(2) >= deadline || crate::shutdown::requested() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    result.seconds = started.elapsed().as_secs_f64();
    if let Some(e) = &mut result.error {
        *e = format!(
            "{e} (after {} attempt{} in {:.0} s)",
            result.attempts,
            if result.attempts == 1 { "" } else { "s" },
            result.seconds
        );
    }
    result
}
