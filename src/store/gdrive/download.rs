//! Downloads that resume with `Range` after a dropped connection.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::*;

/// A download that resumes with `Range` after a dropped connection.
pub(super) struct DriveReader {
    pub(super) rt: Arc<tokio::runtime::Runtime>,
    pub(super) inner: Arc<Inner>,
    pub(super) key: String,
    pub(super) id: String,
    pub(super) size: u64,
    pub(super) received: u64,
    pub(super) body: Option<hyper::body::Incoming>,
    /// Bytes of the current answer to drop first (a 200 to a Range request).
    pub(super) skip: u64,
    pub(super) pending: Bytes,
    pub(super) resumes: u32,
}

impl DriveReader {
    pub(super) async fn open(&mut self) -> io::Result<()> {
        let url = format!(
            "{}/drive/v3/files/{}?alt=media&supportsAllDrives=true",
            self.inner.api(),
            self.id
        );
        let from = self.received;
        let inner = self.inner.clone();
        let body = inner
            .retry(&format!("downloading {}", self.key), |token| {
                let mut headers = Vec::new();
                if from > 0 {
                    headers.push(("range", format!("bytes={from}-")));
                }
                let req = inner.request(hyper::Method::GET, &url, &token, &headers, Bytes::new());
                let inner = &inner;
                async move {
                    inner.pace().await;
                    let resp = inner
                        .client
                        .request(req)
                        .await
                        .map_err(|e| Failure::Retry {
                            why: format!("connection: {e}"),
                            after: None,
                        })?;
                    let status = resp.status().as_u16();
                    // A 206 must start where asked; a 200 (Range ignored) starts at byte 0
                    // and the bytes already handed out are skipped.
                    let starts_at = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if status == 206 && starts_at == Some(from) {
                        Ok((resp.into_body(), 0))
                    } else if status == 200 {
                        Ok((resp.into_body(), from))
                    } else if status == 206 {
                        Err(Failure::Retry {
                            why: format!(
                                "Drive sent a range starting at {starts_at:?}, not {from}"
                            ),
                            after: None,
                        })
                    } else {
                        let headers = resp.headers().clone();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Err(classify(status, retry_after(&headers), &body))
                    }
                }
            })
            .await?;
        let (body, skip) = body;
        self.body = Some(body);
        self.skip = skip;
        Ok(())
    }

    pub(super) async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.body.is_none() {
                if self.received >= self.size {
                    return Ok(None);
                }
                self.open().await?;
            }
            let body = self.body.as_mut().expect("open");
            // A stalled connection counts as a broken one: resume.
            let limit = self.inner.config.request_timeout;
            let frame = match tokio::time::timeout(limit, body.frame()).await {
                Ok(f) => f.map(|r| r.map_err(|e| e.to_string())),
                Err(_) => Some(Err(format!("no data for {limit:?}"))),
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        if self.skip > 0 {
                            let n = (self.skip as usize).min(data.len());
                            data = data.slice(n..);
                            self.skip -= n as u64;
                        }
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
                None if self.received >= self.size => return Ok(None),
                // Cut short, or broken: ask for the rest.
                None | Some(Err(_)) => {
                    self.body = None;
                    self.resumes += 1;
                    if self.resumes > MAX_ATTEMPTS {
                        return Err(io_other(format!(
                            "downloading {}: the connection broke {} times",
                            self.key, self.resumes
                        )));
                    }
                    tracing::info!(
                        "download of {} broke at byte {}; resuming",
                        self.key,
                        self.received
                    );
                    tokio::time::sleep(backoff(self.resumes)).await;
                }
            }
        }
    }
}

impl Read for DriveReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            let rt = self.rt.clone();
            match rt.block_on(self.next())? {
                Some(b) => self.pending = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        self.received += n as u64;
        Ok(n)
    }
}
