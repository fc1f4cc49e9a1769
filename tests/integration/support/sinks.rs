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
    /// Whether it came over TLS (after STARTTLS).
    pub encrypted: bool,
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// Messages the sink refused, each with why.
type Rejected = Arc<Mutex<Vec<(Mail, Vec<String>)>>>;

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    /// Messages refused as a strict receiver (Gmail) refuses them, each with why.
    rejected: Rejected,
    /// Every AUTH command seen, and whether the connection was encrypted then.
    auths: Arc<Mutex<Vec<bool>>>,
}

/// Where the sink's test certificates are: a CA (`ca.pem`, for the client's `ca_file`) and
/// a server certificate it signed for localhost / 127.0.0.1.
pub fn smtp_tls_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp-tls")
}

impl SmtpSink {
    /// A plain SMTP server (no STARTTLS offered).
    pub fn start() -> SmtpSink {
        Self::start_with(None, false)
    }

    /// A server that offers STARTTLS with the test certificate, and refuses AUTH before it.
    pub fn start_tls() -> SmtpSink {
        Self::start_with(Some(Self::tls_config()), false)
    }

    /// A server that speaks TLS from the first byte (port 465 style).
    pub fn start_implicit_tls() -> SmtpSink {
        Self::start_with(Some(Self::tls_config()), true)
    }

    fn tls_config() -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = smtp_tls_dir();
        let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Arc::new(config)
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, implicit: bool) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let auths = Arc::new(Mutex::new(Vec::new()));
        let (store, refused, seen) = (
            Arc::clone(&mails),
            Arc::clone(&rejected),
            Arc::clone(&auths),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, refused, seen) =
                    (Arc::clone(&store), Arc::clone(&refused), Arc::clone(&seen));
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = smtp_session(stream, tls, implicit, &store, &refused, &seen);
                });
            }
        });
        SmtpSink {
            port,
            mails,
            rejected,
            auths,
        }
    }

    /// The messages accepted. A message a strict receiver would refuse fails the test here.
    pub fn mails(&self) -> Vec<Mail> {
        let rejected = self.rejected.lock().unwrap().clone();
        assert!(
            rejected.is_empty(),
            "the SMTP sink refused messages as Gmail would (550 5.7.1): {rejected:#?}"
        );
        self.mails.lock().unwrap().clone()
    }

    /// For each AUTH command received: whether it came over TLS.
    pub fn auth_attempts(&self) -> Vec<bool> {
        self.auths.lock().unwrap().clone()
    }
}

/// The connection, before or after STARTTLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = match self {
                Conn::Plain(s) => s.read(&mut byte)?,
                Conn::Tls(s) => s.read(&mut byte)?,
            };
            if n == 0 || byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }

    /// One line as sent, with its line ending.
    fn read_raw_line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = match self {
                Conn::Plain(s) => s.read(&mut byte)?,
                Conn::Tls(s) => s.read(&mut byte)?,
            };
            if n == 0 {
                break;
            }
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        Ok(line)
    }

    fn say(&mut self, text: &str) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(text.as_bytes()),
            Conn::Tls(s) => {
                s.write_all(text.as_bytes())?;
                s.flush()
            }
        }
    }
}

fn smtp_session(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    implicit: bool,
    mails: &Mutex<Vec<Mail>>,
    rejected: &Rejected,
    auths: &Mutex<Vec<bool>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode =
        |s: &str| String::from_utf8_lossy(&b64.decode(s.trim()).unwrap_or_default()).into_owned();
    let mut conn = match (&tls, implicit) {
        (Some(config), true) => {
            let server = rustls::ServerConnection::new(Arc::clone(config)).unwrap();
            Conn::Tls(Box::new(rustls::StreamOwned::new(server, stream)))
        }
        _ => Conn::Plain(stream),
    };
    conn.say("220 sink ESMTP\r\n")?;
    let mut mail = Mail::default();
    loop {
        let cmd = conn.read_line()?;
        let upper = cmd.to_ascii_uppercase();
        let encrypted = matches!(conn, Conn::Tls(_));
        if cmd.is_empty() {
            return Ok(());
        }
        if upper.starts_with("AUTH") {
            auths.lock().unwrap().push(encrypted);
        }
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let offer = if tls.is_some() && !encrypted {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            conn.say(&format!(
                "250-sink\r\n{offer}250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
            ))?;
        } else if upper == "STARTTLS" && !encrypted && tls.is_some() {
            conn.say("220 go ahead\r\n")?;
            let Conn::Plain(tcp) = conn else {
                unreachable!()
            };
            let server = rustls::ServerConnection::new(tls.clone().unwrap()).unwrap();
            conn = Conn::Tls(Box::new(rustls::StreamOwned::new(server, tcp)));
        } else if upper.starts_with("AUTH") && tls.is_some() && !encrypted {
            conn.say("530 must issue a STARTTLS command first\r\n")?;
        } else if upper.starts_with("AUTH PLAIN") {
            let arg = cmd[10..].trim().to_string();
            let arg = if arg.is_empty() {
                conn.say("334 \r\n")?;
                conn.read_line()?
            } else {
                arg
            };
            let parts: Vec<String> = decode(&arg).split('\0').map(String::from).collect();
            mail.auth = Some((
                parts.get(1).cloned().unwrap_or_default(),
                parts.get(2).cloned().unwrap_or_default(),
            ));
            conn.say("235 ok\r\n")?;
        } else if upper.starts_with("AUTH LOGIN") {
            conn.say("334 VXNlcm5hbWU6\r\n")?;
            let user = decode(&conn.read_line()?);
            conn.say("334 UGFzc3dvcmQ6\r\n")?;
            let pass = decode(&conn.read_line()?);
            mail.auth = Some((user, pass));
            conn.say("235 ok\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..].trim().to_string();
            mail.encrypted = encrypted;
            conn.say("250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd[8..].trim().to_string());
            conn.say("250 ok\r\n")?;
        } else if upper == "DATA" {
            conn.say("354 go on\r\n")?;
            let mut raw = Vec::new();
            loop {
                let l = conn.read_raw_line()?;
                if l.is_empty() || l == b".\r\n" || l == b".\n" {
                    break;
                }
                // Dot-stuffing undone.
                raw.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
            }
            mail.data = String::from_utf8_lossy(&raw).replace("\r\n", "\n");
            let problems = rfc5322_problems(&raw);
            if problems.is_empty() {
                mails.lock().unwrap().push(std::mem::take(&mut mail));
                conn.say("250 queued\r\n")?;
            } else {
                conn.say(&format!("550 5.7.1 {}\r\n", problems.join("; ")))?;
                rejected
                    .lock()
                    .unwrap()
                    .push((std::mem::take(&mut mail), problems));
            }
        } else if upper == "QUIT" {
            conn.say("221 bye\r\n")?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            conn.say("250 ok\r\n")?;
        } else {
            conn.say("502 not here\r\n")?;
        }
    }
}

/// What a strict receiver refuses in a message (RFC 5322, RFC 2045/2047; Gmail's
/// "550-5.7.1 Messages missing a valid Message-ID header are not accepted"): every line ends
/// in CRLF and holds at most 998 characters; the header has exactly one valid `Date`, one
/// `From`, one `Message-ID` of the form `<left@right>`, at least one `To`, only ASCII (other
/// text RFC 2047-encoded); a body that is not ASCII comes with `MIME-Version: 1.0`, a charset
/// and a transfer encoding.
pub fn rfc5322_problems(raw: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        if !line.ends_with(b"\r\n") {
            problems.push("a line does not end in CRLF".to_string());
        }
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        if text.contains(&b'\r') {
            problems.push("a bare CR".to_string());
        }
        if text.len() > 998 {
            problems.push(format!("a line of {} characters (at most 998)", text.len()));
        }
        lines.push(text);
        rest = tail;
    }
    let Some(blank) = lines.iter().position(|l| l.is_empty()) else {
        problems.push("no blank line after the header".into());
        return problems;
    };
    // Unfold the header.
    let mut fields: Vec<(String, String)> = Vec::new();
    for l in &lines[..blank] {
        if !l.is_ascii() {
            problems.push("a header line holds non-ASCII bytes (use RFC 2047)".into());
        }
        let l = String::from_utf8_lossy(l);
        if l.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, v)) => v.push_str(&l),
                None => problems.push("the header starts with a continuation line".into()),
            }
            continue;
        }
        match l.split_once(':') {
            Some((name, value))
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
            _ => problems.push(format!("not a header field: {l:?}")),
        }
    }
    let all = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let once = |name: &str, problems: &mut Vec<String>| -> Option<String> {
        let v = all(name);
        if v.len() != 1 {
            problems.push(format!(
                "{} {name} header(s), exactly one required",
                v.len()
            ));
            return None;
        }
        Some(v[0].to_string())
    };
    if let Some(date) = once("date", &mut problems)
        && chrono::DateTime::parse_from_rfc2822(&date).is_err()
    {
        problems.push(format!("Date {date:?} is not an RFC 5322 date"));
    }
    if let Some(from) = once("from", &mut problems)
        && !from.contains('@')
    {
        problems.push(format!("From {from:?} holds no address"));
    }
    if let Some(id) = once("message-id", &mut problems) {
        let valid = id
            .strip_prefix('<')
            .and_then(|i| i.strip_suffix('>'))
            .and_then(|i| i.split_once('@'))
            .is_some_and(|(l, r)| {
                !l.is_empty()
                    && !r.is_empty()
                    && !r.contains('@')
                    && (l.to_string() + r)
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"".contains(&b))
            });
        if !valid {
            problems.push(format!("Message-ID {id:?} is not <left@right>"));
        }
    }
    if all("to").is_empty() {
        problems.push("no To header".into());
    }
    if all("subject").len() > 1 {
        problems.push("more than one Subject".into());
    }
    let body_ascii = lines[blank..].iter().all(|l| l.is_ascii());
    if !body_ascii {
        let mime = all("mime-version");
        let ctype = all("content-type").join(" ").to_ascii_lowercase();
        let cte = all("content-transfer-encoding")
            .join(" ")
            .to_ascii_lowercase();
        if mime != ["1.0"]
            || !ctype.contains("charset=")
            || !["8bit", "binary"].iter().any(|e| cte.contains(e))
        {
            problems.push(
                "a body that is not ASCII without MIME-Version 1.0, a charset and an 8bit \
                 transfer encoding"
                    .into(),
            );
        }
    }
    problems.sort();
    problems.dedup();
    problems
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
        Self::answering(200, "{}")
    }

    /// A sink that answers every request with `status` and `body`.
    pub fn answering(status: u16, body: &'static str) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let _ = http_session(stream, &store, status, body);
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

fn http_session(
    stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    status: u16,
    answer: &str,
) -> std::io::Result<()> {
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
            "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
        out.flush()?;
    }
}
