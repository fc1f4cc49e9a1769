//! Local stand-ins for the alert services, speaking their real protocols and as strict as
//! the real ones: an SMTP server that records messages (EHLO, STARTTLS, AUTH PLAIN/LOGIN
//! checked against the account it was given, MAIL, RCPT, DATA checked as Gmail checks it) and
//! an HTTP server that records requests (Sentry envelopes, taken only with the project's key
//! and in the envelope format; heartbeat pings). What a real service would refuse is refused
//! and kept, and reading what a sink received fails the test when it refused anything.

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

/// What one SMTP session shares with the sink.
#[derive(Clone, Default)]
struct SmtpState {
    mails: Arc<Mutex<Vec<Mail>>>,
    /// Messages refused as a strict receiver (Gmail) refuses them, each with why.
    rejected: Rejected,
    /// Every AUTH command seen, and whether the connection was encrypted then.
    auths: Arc<Mutex<Vec<bool>>>,
    /// The one account the relay knows (user, password); `None`: it offers no AUTH.
    login: Arc<Mutex<Option<(String, String)>>>,
    /// Logins refused (535), with the user and password tried.
    failed_logins: Arc<Mutex<Vec<(String, String)>>>,
    /// Every command's verb (EHLO, STARTTLS, AUTH, MAIL, …) and whether it came over TLS.
    commands: Arc<Mutex<Vec<(String, bool)>>>,
}

pub struct SmtpSink {
    pub port: u16,
    state: SmtpState,
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
        let state = SmtpState::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = smtp_session(stream, tls, implicit, &state);
                });
            }
        });
        SmtpSink { port, state }
    }

    /// The relay knows one account, `user` with `password`, offers AUTH, takes mail only
    /// after a login, and answers any other login `535` as a real relay does.
    pub fn login(self, user: &str, password: &str) -> SmtpSink {
        *self.state.login.lock().unwrap() = Some((user.to_string(), password.to_string()));
        self
    }

    /// The messages accepted. A message a strict receiver would refuse, or a login it would
    /// refuse, fails the test here.
    pub fn mails(&self) -> Vec<Mail> {
        let rejected = self.state.rejected.lock().unwrap().clone();
        assert!(
            rejected.is_empty(),
            "the SMTP sink refused messages as Gmail would (550 5.7.1): {rejected:#?}"
        );
        let logins = self.failed_logins();
        assert!(
            logins.is_empty(),
            "the SMTP sink refused logins (535 5.7.8): {logins:?}"
        );
        self.accepted()
    }

    /// The messages accepted, whatever else the sink refused.
    pub fn accepted(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    /// For each AUTH command received: whether it came over TLS.
    pub fn auth_attempts(&self) -> Vec<bool> {
        self.state.auths.lock().unwrap().clone()
    }

    /// The logins refused: the user and password tried.
    pub fn failed_logins(&self) -> Vec<(String, String)> {
        self.state.failed_logins.lock().unwrap().clone()
    }

    /// Every command received (its verb, upper case) and whether it came over TLS.
    pub fn commands(&self) -> Vec<(String, bool)> {
        self.state.commands.lock().unwrap().clone()
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
    state: &SmtpState,
) -> std::io::Result<()> {
    let login = state.login.lock().unwrap().clone();
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
        let verb = upper.split([' ', ':']).next().unwrap_or("").to_string();
        state.commands.lock().unwrap().push((verb, encrypted));
        if upper.starts_with("AUTH") {
            state.auths.lock().unwrap().push(encrypted);
        }
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let offer = if tls.is_some() && !encrypted {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            // A relay without accounts offers no AUTH.
            let auth = if login.is_some() {
                "250-AUTH PLAIN LOGIN\r\n"
            } else {
                ""
            };
            conn.say(&format!("250-sink\r\n{offer}{auth}250 8BITMIME\r\n"))?;
        } else if upper == "STARTTLS" && !encrypted && tls.is_some() {
            conn.say("220 go ahead\r\n")?;
            let Conn::Plain(tcp) = conn else {
                unreachable!()
            };
            let server = rustls::ServerConnection::new(tls.clone().unwrap()).unwrap();
            conn = Conn::Tls(Box::new(rustls::StreamOwned::new(server, tcp)));
            // RFC 3207: what was said before TLS is forgotten.
            mail = Mail::default();
        } else if upper.starts_with("AUTH") && tls.is_some() && !encrypted {
            conn.say("530 must issue a STARTTLS command first\r\n")?;
        } else if upper.starts_with("AUTH") && login.is_none() {
            state
                .failed_logins
                .lock()
                .unwrap()
                .push(("AUTH without an account".into(), String::new()));
            conn.say("503 5.5.1 AUTH not offered\r\n")?;
        } else if upper.starts_with("AUTH PLAIN") || upper.starts_with("AUTH LOGIN") {
            let tried = if upper.starts_with("AUTH PLAIN") {
                let arg = cmd[10..].trim().to_string();
                let arg = if arg.is_empty() {
                    conn.say("334 \r\n")?;
                    conn.read_line()?
                } else {
                    arg
                };
                let parts: Vec<String> = decode(&arg).split('\0').map(String::from).collect();
                (
                    parts.get(1).cloned().unwrap_or_default(),
                    parts.get(2).cloned().unwrap_or_default(),
                )
            } else {
                conn.say("334 VXNlcm5hbWU6\r\n")?;
                let user = decode(&conn.read_line()?);
                conn.say("334 UGFzc3dvcmQ6\r\n")?;
                (user, decode(&conn.read_line()?))
            };
            if login.as_ref() == Some(&tried) {
                mail.auth = Some(tried);
                conn.say("235 2.7.0 Accepted\r\n")?;
            } else {
                state.failed_logins.lock().unwrap().push(tried);
                conn.say("535 5.7.8 Username and Password not accepted\r\n")?;
            }
        } else if upper.starts_with("AUTH") {
            conn.say("504 5.5.4 unrecognized authentication type\r\n")?;
        } else if upper.starts_with("MAIL FROM:") && login.is_some() && mail.auth.is_none() {
            // A submission relay with accounts takes mail from logged-in users only.
            state.rejected.lock().unwrap().push((
                Mail {
                    from: cmd[10..].trim().to_string(),
                    encrypted,
                    ..Mail::default()
                },
                vec!["MAIL before a successful AUTH".into()],
            ));
            conn.say("530 5.7.0 Authentication Required\r\n")?;
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
            // The login holds for the session; the envelope is new for each message.
            let auth = mail.auth.clone();
            if problems.is_empty() {
                state.mails.lock().unwrap().push(std::mem::take(&mut mail));
                conn.say("250 queued\r\n")?;
            } else {
                conn.say(&format!("550 5.7.1 {}\r\n", problems.join("; ")))?;
                state
                    .rejected
                    .lock()
                    .unwrap()
                    .push((std::mem::take(&mut mail), problems));
            }
            mail.auth = auth;
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
/// `From`, one `Message-ID` of the form `<left@right>`, at least one `To`, each with an
/// address, only ASCII (other text RFC 2047-encoded: well-formed encoded words of at most 75
/// characters, set apart by white space, that decode in their charset); MIME headers come
/// with `MIME-Version: 1.0`; a body that is not ASCII comes with a charset and an 8bit
/// transfer encoding.
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
    for to in all("to") {
        if !to.contains('@') {
            problems.push(format!("To {to:?} holds no address"));
        }
    }
    for (name, value) in &fields {
        for word in value.split_whitespace() {
            match encoded_word(word) {
                Some(Err(why)) => problems.push(format!("{name}: {why}: {word:?}")),
                None if word.contains("=?") && word.contains("?=") => problems.push(format!(
                    "{name}: an RFC 2047 encoded word not set apart by white space: {word:?}"
                )),
                _ => {}
            }
        }
    }
    let mime_fields = fields.iter().any(|(n, _)| n.starts_with("content-"));
    if mime_fields && all("mime-version") != ["1.0"] {
        problems.push("Content-* headers without exactly one MIME-Version: 1.0".into());
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

/// An RFC 2047 encoded word (`=?charset?B|Q?text?=`) decoded; `None`: `word` is not one.
///
/// # Errors
/// Why it is malformed: too long, an unknown encoding, text that does not decode.
fn encoded_word(word: &str) -> Option<Result<Vec<u8>, String>> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut pieces = inner.splitn(3, '?');
    let (Some(charset), Some(encoding), Some(text)) = (pieces.next(), pieces.next(), pieces.next())
    else {
        return Some(Err("a malformed RFC 2047 encoded word".into()));
    };
    Some((|| {
        if word.len() > 75 {
            return Err(format!(
                "an RFC 2047 encoded word of {} characters (at most 75)",
                word.len()
            ));
        }
        if charset.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic() && b != b'?') {
            return Err("a malformed RFC 2047 encoded word".into());
        }
        let bytes = match encoding {
            "B" | "b" => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("an RFC 2047 B-encoded word that is not base64 ({e})"))?,
            "Q" | "q" => {
                let mut out = Vec::new();
                let mut b = text.bytes();
                while let Some(c) = b.next() {
                    match c {
                        b'_' => out.push(b' '),
                        b'=' => {
                            let hex = [b.next().unwrap_or(b'x'), b.next().unwrap_or(b'x')];
                            let byte = std::str::from_utf8(&hex)
                                .ok()
                                .and_then(|h| u8::from_str_radix(h, 16).ok())
                                .ok_or("an RFC 2047 Q-encoded word with a bad =XX escape")?;
                            out.push(byte);
                        }
                        c => out.push(c),
                    }
                }
                out
            }
            other => return Err(format!("an RFC 2047 encoding {other:?} (B or Q)")),
        };
        let charset = charset.split('*').next().unwrap_or(charset);
        if charset.eq_ignore_ascii_case("utf-8") && std::str::from_utf8(&bytes).is_err() {
            return Err("an RFC 2047 utf-8 word that is not UTF-8".into());
        }
        Ok(bytes)
    })())
}

impl Mail {
    /// The body, its transfer encoding (quoted-printable, base64) undone.
    pub fn text(&self) -> String {
        let (_, body) = self.data.split_once("\n\n").unwrap_or(("", &self.data));
        let encoding = self
            .header("content-transfer-encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(body.split_whitespace().collect::<String>())
                .expect("a base64 body"),
            "quoted-printable" => {
                let mut out = Vec::new();
                for line in body.split('\n') {
                    let (line, soft) = match line.strip_suffix('=') {
                        Some(l) => (l, true),
                        None => (line, false),
                    };
                    let mut b = line.bytes();
                    while let Some(c) = b.next() {
                        if c == b'=' {
                            let hex = [b.next().unwrap(), b.next().unwrap()];
                            out.push(
                                u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap(),
                            );
                        } else {
                            out.push(c);
                        }
                    }
                    if !soft {
                        out.push(b'\n');
                    }
                }
                out
            }
            _ => body.as_bytes().to_vec(),
        };
        String::from_utf8(bytes).expect("a UTF-8 body")
    }

    /// Header `name` (case-insensitive) unfolded, its RFC 2047 words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.data.split_once("\n\n")?;
        let mut value: Option<String> = None;
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        // White space between two encoded words is not part of the text (RFC 2047 §6.2).
        let mut out = String::new();
        let mut last_encoded = false;
        for word in value?.split_whitespace() {
            match encoded_word(word) {
                Some(Ok(bytes)) => {
                    if !last_encoded && !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    last_encoded = true;
                }
                _ => {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(word);
                    last_encoded = false;
                }
            }
        }
        Some(out)
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

/// Requests the sink refused, each with why.
type Refused = Arc<Mutex<Vec<(Request, Vec<String>)>>>;

/// An HTTP server that records what it is sent: Sentry's ingest for one project key (when
/// it has one) and anything else (heartbeat pings, an application's health URL).
pub struct HttpSink {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    /// Requests refused as the real service refuses them (a Sentry envelope without the
    /// project's key: 401; one not in the envelope format: 400), each with why.
    rejected: Refused,
    /// The status and body every request it takes is answered with.
    answer: Arc<Mutex<(u16, String)>>,
}

impl HttpSink {
    /// A sink that answers every request with `status` and `body`; it knows no Sentry
    /// project (a Sentry envelope is refused, 401).
    pub fn answering(status: u16, body: &'static str) -> HttpSink {
        Self::spawn(None, status, body)
    }

    /// Sentry's ingest for the project whose DSN holds public key `key` (and anything else on
    /// other paths): an envelope is taken only with that key, in `X-Sentry-Auth` or in the
    /// envelope's `dsn`, and only in the envelope format (`sentry_problems`).
    pub fn sentry(key: &str) -> HttpSink {
        Self::spawn(Some(key.to_string()), 200, "{}")
    }

    fn spawn(sentry_key: Option<String>, status: u16, body: &str) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new((status, body.to_string())));
        let (store, refused, answers) = (
            Arc::clone(&requests),
            Arc::clone(&rejected),
            Arc::clone(&answer),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, refused, answers) = (
                    Arc::clone(&store),
                    Arc::clone(&refused),
                    Arc::clone(&answers),
                );
                let key = sentry_key.clone();
                std::thread::spawn(move || {
                    let _ = http_session(stream, &store, &refused, &answers, key.as_deref());
                });
            }
        });
        HttpSink {
            port,
            requests,
            rejected,
            answer,
        }
    }

    /// From now on every request the sink takes is answered `status` with `body` (a service
    /// that is down: 503; one that throttles: 429, with `Retry-After`).
    pub fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    /// The requests taken. A request the real service would refuse fails the test here.
    pub fn requests(&self) -> Vec<Request> {
        let rejected = self.rejected();
        assert!(
            rejected.is_empty(),
            "the HTTP sink refused requests as Sentry would (401/400): {rejected:#?}"
        );
        self.requests.lock().unwrap().clone()
    }

    /// The requests refused, each with why.
    pub fn rejected(&self) -> Vec<(Request, Vec<String>)> {
        self.rejected.lock().unwrap().clone()
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

/// Whether `path` is one of Sentry's ingest endpoints: `/api/<project id>/envelope/` (or the
/// old `/store/`).
fn is_sentry_path(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path.strip_prefix("/api/")
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(project, rest)| {
            !project.is_empty()
                && project.bytes().all(|b| b.is_ascii_digit())
                && matches!(rest, "envelope/" | "envelope" | "store/" | "store")
        })
}

/// The public key in a DSN (`https://KEY@host/project`).
fn dsn_key(dsn: &str) -> Option<&str> {
    let (_, rest) = dsn.split_once("://")?;
    let (user, _) = rest.split_once('@')?;
    Some(user.split(':').next().unwrap_or(user))
}

/// Why Sentry would refuse this request for the project with public key `key`, with the
/// status it would answer: 401 without that key (in `X-Sentry-Auth: Sentry sentry_version=7,
/// sentry_key=…`, a `sentry_key` query parameter or the envelope header's `dsn`); 400 for
/// what is not an envelope (a JSON header line, then items: a JSON item header with a `type`
/// and an optional `length`, then the payload); an event must be a JSON object with an
/// `event_id`, a valid `level` (none: error) and a `message` or an `exception`, a check-in
/// must name its id, monitor and status. `None`: it would take it.
pub fn sentry_problems(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    key: Option<&str>,
) -> Option<(u16, Vec<String>)> {
    if method != "POST" {
        return Some((
            405,
            vec![format!("{method} to Sentry's ingest (POST only)")],
        ));
    }
    let mut auth = Vec::new();
    let mut keys_seen = Vec::new();
    if let Some((_, value)) = headers.iter().find(|(n, _)| n == "x-sentry-auth") {
        match value.strip_prefix("Sentry ") {
            None => auth.push(format!(
                "X-Sentry-Auth {value:?} does not start with 'Sentry '"
            )),
            Some(pairs) => {
                let field = |k: &str| {
                    pairs
                        .split(',')
                        .filter_map(|p| p.trim().split_once('='))
                        .find(|(n, _)| *n == k)
                        .map(|(_, v)| v.trim().to_string())
                };
                if field("sentry_version").as_deref() != Some("7") {
                    auth.push(format!("X-Sentry-Auth {value:?} is not sentry_version=7"));
                }
                keys_seen.extend(field("sentry_key"));
            }
        }
    }
    if let Some((_, query)) = path.split_once('?') {
        keys_seen.extend(
            query
                .split('&')
                .filter_map(|p| p.strip_prefix("sentry_key="))
                .map(String::from),
        );
    }
    let (first, rest) = match body.iter().position(|&b| b == b'\n') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, &[][..]),
    };
    let header: Option<serde_json::Value> = serde_json::from_slice(first)
        .ok()
        .filter(|v: &serde_json::Value| v.is_object());
    if let Some(dsn) = header.as_ref().and_then(|h| h["dsn"].as_str()) {
        keys_seen.extend(dsn_key(dsn).map(String::from));
    }
    match key {
        None => auth.push("this sink knows no Sentry project".into()),
        Some(key) if keys_seen.is_empty() => {
            auth.push(format!("no sentry_key (expected {key}'s project)"))
        }
        Some(key) => {
            for k in &keys_seen {
                if k != key {
                    auth.push(format!("sentry_key {k:?} is not the project's key"));
                }
            }
        }
    }
    if !auth.is_empty() {
        return Some((401, auth));
    }
    let mut problems = Vec::new();
    if header.is_none() {
        problems.push("the envelope's first line is not a JSON object".to_string());
    }
    let mut rest = rest;
    let mut items = 0;
    while !rest.is_empty() && rest != b"\n" {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let Ok(item) = serde_json::from_slice::<serde_json::Value>(line) else {
            problems.push(format!(
                "item header {:?} is not JSON",
                String::from_utf8_lossy(line)
            ));
            break;
        };
        let Some(kind) = item["type"].as_str() else {
            problems.push(format!("item header {item} has no type"));
            break;
        };
        let (payload, after) = match item["length"].as_u64() {
            Some(n) if (n as usize) <= after.len() => {
                let (p, a) = after.split_at(n as usize);
                (p, a.strip_prefix(b"\n").unwrap_or(a))
            }
            Some(n) => {
                problems.push(format!(
                    "item {kind} says length {n}, {} bytes follow",
                    after.len()
                ));
                break;
            }
            None => match after.iter().position(|&b| b == b'\n') {
                Some(i) => (&after[..i], &after[i + 1..]),
                None => (after, &[][..]),
            },
        };
        items += 1;
        rest = after;
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
            problems.push(format!("the {kind} item's payload is not JSON"));
            continue;
        };
        match kind {
            "event" => {
                // No level is Sentry's default, error (the SDK leaves it out).
                let levels = ["fatal", "error", "warning", "info", "debug"];
                if !value["level"].is_null()
                    && !value["level"].as_str().is_some_and(|l| levels.contains(&l))
                {
                    problems.push(format!("an event with an invalid level: {value}"));
                }
                if !value["event_id"]
                    .as_str()
                    .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    problems.push(format!("an event without a valid event_id: {value}"));
                }
                let message = value["message"].as_str().is_some_and(|m| !m.is_empty())
                    || value["logentry"]["message"].is_string()
                    || value["logentry"]["formatted"].is_string();
                let exception = value["exception"]["values"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty() && v.iter().all(|e| e["value"].is_string()));
                if !message && !exception {
                    problems.push(format!(
                        "an event with neither message nor exception: {value}"
                    ));
                }
            }
            "check_in" => {
                let statuses = ["in_progress", "ok", "error"];
                let id = value["check_in_id"].as_str().unwrap_or("");
                let monitor = value["monitor_slug"].as_str().unwrap_or("");
                let status = value["status"].as_str().unwrap_or("");
                if id.len() < 32 || monitor.is_empty() || !statuses.contains(&status) {
                    problems.push(format!("a check-in without id, monitor or status: {value}"));
                }
            }
            _ => {}
        }
    }
    if items == 0 && problems.is_empty() {
        problems.push("an envelope without items".into());
    }
    (!problems.is_empty()).then_some((400, problems))
}

fn http_session(
    stream: TcpStream,
    requests: &Mutex<Vec<Request>>,
    rejected: &Refused,
    answer: &Mutex<(u16, String)>,
    sentry_key: Option<&str>,
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
        let refusal = is_sentry_path(&path)
            .then(|| sentry_problems(&method, &path, &headers, &body, sentry_key))
            .flatten();
        let request = Request {
            method,
            path,
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let (status, answer) = match refusal {
            Some((status, why)) => {
                let detail = serde_json::json!({ "detail": why.join("; ") }).to_string();
                rejected.lock().unwrap().push((request, why));
                (status, detail)
            }
            None => {
                requests.lock().unwrap().push(request);
                answer.lock().unwrap().clone()
            }
        };
        // A service that throttles says for how long.
        let retry = if status == 429 {
            "retry-after: 60\r\n"
        } else {
            ""
        };
        write!(
            out,
            "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\n{retry}content-length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
        out.flush()?;
    }
}
