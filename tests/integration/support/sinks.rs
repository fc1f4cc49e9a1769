//! Local stand-ins for the alert services, speaking their real protocols: an SMTP server
//! that records messages (EHLO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA) and an HTTP server that
//! records requests (Sentry envelopes, heartbeat pings).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// One message the SMTP sink accepted.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub auth: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&mails);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let _ = smtp_session(stream, &store);
                });
            }
        });
        SmtpSink { port, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn smtp_session(stream: TcpStream, mails: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode =
        |s: &str| String::from_utf8_lossy(&b64.decode(s.trim()).unwrap_or_default()).into_owned();
    let mut line = String::new();
    let mut read = |lines: &mut BufReader<TcpStream>| -> std::io::Result<String> {
        line.clear();
        lines.read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    };
    write!(out, "220 sink ESMTP\r\n")?;
    let mut mail = Mail::default();
    loop {
        let cmd = read(&mut lines)?;
        let upper = cmd.to_ascii_uppercase();
        if cmd.is_empty() && upper.is_empty() {
            return Ok(());
        }
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write!(out, "250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = cmd[10..].trim().to_string();
            let arg = if arg.is_empty() {
                write!(out, "334 \r\n")?;
                read(&mut lines)?
            } else {
                arg
            };
            let parts: Vec<String> = decode(&arg).split('\0').map(String::from).collect();
            mail.auth = Some((
                parts.get(1).cloned().unwrap_or_default(),
                parts.get(2).cloned().unwrap_or_default(),
            ));
            write!(out, "235 ok\r\n")?;
        } else if upper.starts_with("AUTH LOGIN") {
            write!(out, "334 VXNlcm5hbWU6\r\n")?;
            let user = decode(&read(&mut lines)?);
            write!(out, "334 UGFzc3dvcmQ6\r\n")?;
            let pass = decode(&read(&mut lines)?);
            mail.auth = Some((user, pass));
            write!(out, "235 ok\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..].trim().to_string();
            write!(out, "250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd[8..].trim().to_string());
            write!(out, "250 ok\r\n")?;
        } else if upper == "DATA" {
            write!(out, "354 go on\r\n")?;
            let mut data = String::new();
            loop {
                let l = read(&mut lines)?;
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push('\n');
            }
            mail.data = data;
            mails.lock().unwrap().push(std::mem::take(&mut mail));
            write!(out, "250 queued\r\n")?;
        } else if upper == "QUIT" {
            write!(out, "221 bye\r\n")?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            write!(out, "250 ok\r\n")?;
        } else {
            write!(out, "502 not here\r\n")?;
        }
    }
}

/// One request the HTTP sink answered.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read in failure messages
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct HttpSink {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpSink {
    pub fn start() -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let _ = http_session(stream, &store);
                });
            }
        });
        HttpSink { port, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests so far.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let start = Instant::now();
        loop {
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "waited for {what}: {seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn http_session(stream: TcpStream, requests: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first)? == 0 {
            return Ok(());
        }
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        if header("content-encoding").is_some_and(|e| e.contains("gzip")) {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
            body = plain;
        }
        requests.lock().unwrap().push(Request {
            method,
            path,
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
        )?;
        out.flush()?;
    }
}
