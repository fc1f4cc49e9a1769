//! A fake Google Drive v3 and OAuth token endpoint on 127.0.0.1, speaking the real wire
//! protocol (files.create metadata-only and resumable uploads with 308/Range and status
//! queries, files.list with a subset of `q` and page tokens, files.get metadata and alt=media
//! with Range, files.delete, about.get; the service-account JWT token exchange), with fault
//! injection. One thread per connection; every response closes its connection.
//!
//! As strict as Drive where coffer relies on it: every chunk but the last a multiple of 256 KiB,
//! one total per session, no inverted range; answers hold only the `fields` asked for (Drive's
//! four default fields without it; `about.get` refuses to answer without); a Shared Drive's
//! files exist only for requests with `supportsAllDrives=true`; 416 for a range past the end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const FOLDER: &str = "application/vnd.google-apps.folder";
/// The id of the Shared Drive the fake holds (its root folder has the same id).
pub const SHARED_DRIVE: &str = "0AFakeSharedDrive";
const CHUNK_ALIGN: usize = 256 * 1024;
/// The code the fake's "browser" brings back after the user's consent.
pub const CONSENT_CODE: &str = "4/fake-consent-code";
/// The refresh token issued with it.
pub const REFRESH_TOKEN: &str = "1//fake-refresh-token";

/// A file (or folder) in the fake.
#[derive(Clone, Debug)]
pub struct FakeFile {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub parents: Vec<String>,
    pub app_properties: BTreeMap<String, String>,
    pub content: Vec<u8>,
    /// RFC 3339, as Drive's createdTime/modifiedTime.
    pub created: String,
}

/// Faults to inject. Chunk numbers count every chunk PUT (not status queries) since start,
/// from 1.
#[derive(Debug)]
pub struct Faults {
    pub chunk_500: Vec<u32>,
    pub chunk_503: Vec<u32>,
    /// The connection drops after half the chunk's body was read; the 256 KiB-aligned part
    /// of what arrived is kept, as Drive does.
    pub chunk_drop: Vec<u32>,
    /// 429 with `Retry-After: 1`.
    pub chunk_429: Vec<u32>,
    /// 403 userRateLimitExceeded (retryable).
    pub chunk_403_rate: Vec<u32>,
    /// 404: the session expired and is gone.
    pub chunk_404: Vec<u32>,
    /// The chunk is taken (and the upload may complete) but the answer never comes.
    pub chunk_answer_lost: Vec<u32>,
    /// (chunk, n): of the new bytes the chunk brings, only the first n are committed (any n,
    /// 0 or not a multiple of 256 KiB); the answer is a 308 with the session's `Range`.
    pub chunk_keep: Vec<(u32, usize)>,
    /// 410 Gone: the session expired at this chunk; every later request on it gets 410 too.
    pub chunk_410: Vec<u32>,
    /// Half the chunk's body is read, then nothing: no answer, the connection stays open.
    pub chunk_stall: Vec<u32>,
    /// The next N files.list requests get no answer; their connections stay open.
    pub list_stall: u32,
    /// Downloads of more than 1 KiB send half the body and then nothing, the connection left
    /// open (the next N).
    pub download_stall: u32,
    /// File resources carry `md5Checksum` but no `sha256Checksum` (older files, some Shared
    /// Drives).
    pub md5_only: bool,
    /// Completed uploads that report a wrong sha256 (the next N).
    pub wrong_checksum: u32,
    /// Completed uploads that also leave a duplicate file of the same name (a retried
    /// create), the next N.
    pub duplicate: u32,
    /// Every upload start answers 403 storageQuotaExceeded.
    pub quota_exceeded: bool,
    /// Every upload start answers 403 with the daily upload cap's message.
    pub daily_cap: bool,
    /// Downloads of more than this many bytes drop the connection after half (the next N).
    pub download_drop: u32,
    /// Tokens stop being accepted after this many authorised requests (then every token
    /// issued before is rejected with 401; new ones work).
    pub revoke_tokens_after: Option<u32>,
    /// Largest page files.list returns, whatever the client asks.
    pub max_page_size: usize,
    /// The first upload to complete waits (up to 5 s) until this many sessions are open at
    /// once: proves a client uploads in parallel without depending on timing.
    pub wait_for_parallel: Option<usize>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            chunk_500: Vec::new(),
            chunk_503: Vec::new(),
            chunk_drop: Vec::new(),
            chunk_429: Vec::new(),
            chunk_403_rate: Vec::new(),
            chunk_404: Vec::new(),
            chunk_answer_lost: Vec::new(),
            chunk_keep: Vec::new(),
            chunk_410: Vec::new(),
            chunk_stall: Vec::new(),
            list_stall: 0,
            download_stall: 0,
            md5_only: false,
            wrong_checksum: 0,
            duplicate: 0,
            quota_exceeded: false,
            daily_cap: false,
            download_drop: 0,
            revoke_tokens_after: None,
            max_page_size: 2,
            wait_for_parallel: None,
        }
    }
}

struct Session {
    meta: Value,
    received: Vec<u8>,
    done: Option<String>,
    /// The `fields` the session was started with: what its final answer holds.
    fields: Option<String>,
    /// The total size, once a `Content-Range` gave it: it may not change.
    total: Option<usize>,
}

#[derive(Default)]
struct State {
    files: Vec<FakeFile>,
    sessions: HashMap<String, Session>,
    /// Tokens issued, with the generation they belong to.
    tokens: HashMap<String, u32>,
    generation: u32,
    next_id: u64,
    chunk_puts: u32,
    authorised: u32,
    token_requests: u32,
    /// The `sub` claims (domain-wide delegation) of the JWTs exchanged for tokens.
    subjects: Vec<String>,
    /// Upload sessions started and not completed, now and at most.
    open_sessions: usize,
    max_open_sessions: usize,
    faults: Faults,
    /// `METHOD path?query` of every request, for assertions.
    log: Vec<String>,
    /// Every request with its time and range headers.
    seen: Vec<Seen>,
    /// Upload sessions that expired with 410: they stay gone.
    expired: HashSet<String>,
    /// The fake was dropped: stalled connections may close.
    closed: bool,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    /// `METHOD path?query`.
    pub request: String,
    pub content_range: Option<String>,
    /// A download's `Range`.
    pub range: Option<String>,
}

impl Seen {
    /// The upload session the request is about, if any.
    pub fn upload_id(&self) -> Option<&str> {
        self.request
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("upload_id="))
    }
}

/// The running fake.
pub struct FakeDrive {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    raw_target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl FakeDrive {
    /// Starts the fake with an empty My Drive ("root") and one Shared Drive.
    pub fn start() -> FakeDrive {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut state = State::default();
        for (id, name) in [("root", "My Drive"), (SHARED_DRIVE, "Backups")] {
            state.files.push(FakeFile {
                id: id.into(),
                name: name.into(),
                mime: FOLDER.into(),
                parents: Vec::new(),
                app_properties: BTreeMap::new(),
                content: Vec::new(),
                created: chrono::Utc::now().to_rfc3339(),
            });
        }
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state, addr));
            }
        });
        FakeDrive { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts a file coffer did not write (no `appProperties`) into folder `parent`, listed
    /// before every other file.
    pub fn add_foreign_file(&self, parent: &str, name: &str, content: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let f = FakeFile {
            id: format!("foreign{:06}", s.next_id),
            name: name.into(),
            mime: "application/octet-stream".into(),
            parents: vec![parent.into()],
            app_properties: BTreeMap::new(),
            content: content.to_vec(),
            created: chrono::Utc::now().to_rfc3339(),
        };
        s.files.insert(0, f);
    }

    /// Cuts a file short behind the client's back.
    pub fn truncate(&self, name: &str, len: usize) {
        let mut s = self.state.lock().unwrap();
        let f = s.files.iter_mut().find(|f| f.name == name).unwrap();
        f.content.truncate(len);
    }

    /// Every request so far, with times and range headers.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Changes the faults to inject.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().unwrap().faults);
    }

    /// Every file and folder (but the two roots).
    pub fn files(&self) -> Vec<FakeFile> {
        let s = self.state.lock().unwrap();
        s.files
            .iter()
            .filter(|f| f.id != "root" && f.id != SHARED_DRIVE)
            .cloned()
            .collect()
    }

    /// Replaces a file's content behind the client's back (damage in the store).
    pub fn corrupt(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let f = s.files.iter_mut().find(|f| f.name == name).unwrap();
        let mid = f.content.len() / 2;
        f.content[mid] ^= 0x55;
    }

    /// Faults that were set but never fired (a test whose faults never fire proves nothing).
    pub fn unfired(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let f = &s.faults;
        let mut out = Vec::new();
        for (name, v) in [
            ("chunk_500", &f.chunk_500),
            ("chunk_503", &f.chunk_503),
            ("chunk_drop", &f.chunk_drop),
            ("chunk_429", &f.chunk_429),
            ("chunk_403_rate", &f.chunk_403_rate),
            ("chunk_404", &f.chunk_404),
            ("chunk_answer_lost", &f.chunk_answer_lost),
            ("chunk_410", &f.chunk_410),
            ("chunk_stall", &f.chunk_stall),
        ] {
            if !v.is_empty() {
                out.push(format!("{name} {v:?}"));
            }
        }
        if !f.chunk_keep.is_empty() {
            out.push(format!("chunk_keep {:?}", f.chunk_keep));
        }
        for (name, n) in [
            ("list_stall", f.list_stall),
            ("download_stall", f.download_stall),
        ] {
            if n > 0 {
                out.push(format!("{name} {n}"));
            }
        }
        if f.wrong_checksum > 0 {
            out.push("wrong_checksum".into());
        }
        if f.duplicate > 0 {
            out.push("duplicate".into());
        }
        if f.download_drop > 0 {
            out.push(format!("download_drop {}", f.download_drop));
        }
        if f.revoke_tokens_after.is_some() {
            out.push("revoke_tokens_after".into());
        }
        out
    }

    /// The most upload sessions that were open at once.
    pub fn max_parallel_uploads(&self) -> usize {
        self.state.lock().unwrap().max_open_sessions
    }

    /// The users the service account asked to act as (JWT `sub`).
    pub fn subjects(&self) -> Vec<String> {
        self.state.lock().unwrap().subjects.clone()
    }

    pub fn token_requests(&self) -> u32 {
        self.state.lock().unwrap().token_requests
    }

    /// Requests seen so far, `METHOD path?query`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Writes an OAuth client file ("Desktop app") whose endpoints are this fake's.
    pub fn oauth_client(&self, dir: &Path) -> PathBuf {
        let client = json!({"installed": {
            "client_id": "1234-fake.apps.googleusercontent.com",
            "project_id": "coffer-test",
            "auth_uri": format!("{}/auth", self.url()),
            "token_uri": format!("{}/token", self.url()),
            "client_secret": "fake-client-secret",
            "redirect_uris": ["http://localhost"],
        }});
        let path = dir.join("oauth-client.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&client).unwrap()).unwrap();
        path
    }

    /// Writes a service-account key whose `token_uri` is this fake's token endpoint.
    pub fn service_account_key(&self, dir: &Path) -> PathBuf {
        let pem = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-service-account.pem"),
        )
        .unwrap();
        let key = json!({
            "type": "service_account",
            "project_id": "coffer-test",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": "coffer@coffer-test.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "auth_uri": format!("{}/auth", self.url()),
            "token_uri": format!("{}/token", self.url()),
            "auth_provider_x509_cert_url": format!("{}/certs", self.url()),
            "client_x509_cert_url": format!("{}/certs/coffer", self.url()),
        });
        let path = dir.join("service-account.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&key).unwrap()).unwrap();
        path
    }
}

impl Drop for FakeDrive {
    fn drop(&mut self) {
        self.state.lock().unwrap().closed = true;
    }
}

/// A stalled server: the connection stays open and silent until the fake is dropped (at most
/// a minute).
fn hold(state: &Arc<Mutex<State>>) {
    let until = Instant::now() + Duration::from_secs(60);
    while !state.lock().unwrap().closed && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Request, usize)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query_str) = target.split_once('?').unwrap_or((&target, ""));
    let query = query_str
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let length = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    Some((
        Request {
            method,
            path: path.to_string(),
            query,
            raw_target: target.clone(),
            headers,
            body: Vec::new(),
        },
        length,
    ))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        if n == 0 {
            let mut end = String::new();
            reader.read_line(&mut end).ok()?;
            return Some(body);
        }
        let mut chunk = vec![0; n];
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk);
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        308 => "Resume Incomplete",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if status != 204 && status != 308 || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    } else {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn json_response(stream: &mut TcpStream, status: u16, value: &Value) {
    respond(
        stream,
        status,
        &[("Content-Type", "application/json; charset=UTF-8".into())],
        value.to_string().as_bytes(),
    );
}

fn error(stream: &mut TcpStream, status: u16, reason: &str, message: &str) {
    json_response(
        stream,
        status,
        &json!({"error": {"code": status, "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}]}}),
    );
}

/// What Drive answers for a file when the request names no `fields`.
const DEFAULT_FILE_FIELDS: &str = "kind,id,name,mimeType";
/// The file fields a `fields` selection may name (a subset of Drive's; others get 400).
const FILE_FIELDS: &[&str] = &[
    "kind",
    "id",
    "name",
    "mimeType",
    "parents",
    "appProperties",
    "properties",
    "createdTime",
    "modifiedTime",
    "size",
    "md5Checksum",
    "sha1Checksum",
    "sha256Checksum",
    "trashed",
    "driveId",
    "description",
];

/// A parsed `fields` selection: names, each with its own selection (`files(id,name)`).
#[derive(Debug)]
struct Fields(Vec<(String, Option<Fields>)>);

fn parse_fields(spec: &str) -> Result<Fields, String> {
    fn parse(s: &str, i: &mut usize) -> Result<Fields, String> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        loop {
            let start = *i;
            while *i < b.len() && !matches!(b[*i], b',' | b'(' | b')') {
                *i += 1;
            }
            let name = s[start..*i].trim().to_string();
            if name.is_empty() {
                return Err(format!("Invalid field selection {s}"));
            }
            let sub = if b.get(*i) == Some(&b'(') {
                *i += 1;
                let sub = parse(s, i)?;
                if b.get(*i) != Some(&b')') {
                    return Err(format!("Invalid field selection {s}"));
                }
                *i += 1;
                Some(sub)
            } else {
                None
            };
            out.push((name, sub));
            if b.get(*i) == Some(&b',') {
                *i += 1;
            } else {
                return Ok(Fields(out));
            }
        }
    }
    let mut i = 0;
    let f = parse(spec, &mut i)?;
    if i != spec.len() {
        return Err(format!("Invalid field selection {spec}"));
    }
    Ok(f)
}

/// Refuses a selection naming what a file does not have (Drive: 400 "Invalid field
/// selection").
fn check_file_fields(f: &Fields) -> Result<(), String> {
    for (name, sub) in &f.0 {
        if name != "*" && !FILE_FIELDS.contains(&name.as_str()) {
            return Err(format!("Invalid field selection {name}"));
        }
        if sub.is_some() && name != "appProperties" && name != "properties" {
            return Err(format!("Invalid field selection {name}"));
        }
    }
    Ok(())
}

/// What of `v` the selection asks for; fields `v` does not have are left out, as Drive does.
fn select(v: &Value, f: &Fields) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(|x| select(x, f)).collect()),
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (name, sub) in &f.0 {
                if name == "*" {
                    return v.clone();
                }
                if let Some(x) = o.get(name) {
                    let x = sub.as_ref().map_or_else(|| x.clone(), |sub| select(x, sub));
                    out.insert(name.clone(), x);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// A file resource as Drive answers it: the `fields` asked for, else the four defaults.
fn file_answer(full: &Value, fields: Option<&str>) -> Result<Value, String> {
    let f = parse_fields(fields.unwrap_or(DEFAULT_FILE_FIELDS))?;
    check_file_fields(&f)?;
    Ok(select(full, &f))
}

/// Every field of a file, as the fake holds it (`wrong`: checksums that do not match the
/// content; `md5_only`: no sha256).
fn file_json(f: &FakeFile, wrong: bool, md5_only: bool) -> Value {
    let mut v = json!({
        "kind": "drive#file",
        "id": f.id,
        "name": f.name,
        "mimeType": f.mime,
        "parents": f.parents,
        "createdTime": f.created,
        "modifiedTime": f.created,
        "trashed": false,
    });
    if !f.app_properties.is_empty() {
        v["appProperties"] = json!(f.app_properties);
    }
    if f.mime != FOLDER {
        let mut sha = hex::encode(Sha256::digest(&f.content));
        let mut md5 = hex::encode(md5::Md5::digest(&f.content));
        if wrong {
            sha = sha.chars().rev().collect();
            md5 = md5.chars().rev().collect();
        }
        v["size"] = json!(f.content.len().to_string());
        v["md5Checksum"] = json!(md5);
        if !md5_only {
            v["sha256Checksum"] = json!(sha);
        }
    }
    v
}

/// Whether file `id` lives in the Shared Drive (its ancestors reach it).
fn in_shared_drive(s: &State, id: &str) -> bool {
    let mut cur = id.to_string();
    for _ in 0..32 {
        if cur == SHARED_DRIVE {
            return true;
        }
        let Some(p) = s
            .files
            .iter()
            .find(|f| f.id == cur)
            .and_then(|f| f.parents.first())
        else {
            return false;
        };
        cur = p.clone();
    }
    false
}

fn all_drives(req: &Request) -> bool {
    req.query.get("supportsAllDrives").map(String::as_str) == Some("true")
}

/// Splits a `q` on top-level ` and ` (outside quotes and braces).
fn split_and(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0, false, 0);
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'\'' => quoted = !quoted,
            b'{' if !quoted => depth += 1,
            b'}' if !quoted => depth -= 1,
            b' ' if !quoted && depth == 0 && q[i..].starts_with(" and ") => {
                out.push(q[start..i].trim().to_string());
                start = i + 5;
                i += 4;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(q[start..].trim().to_string());
    out
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("\\'", "'").replace("\\\\", "\\"))
}

/// Whether `f` matches one condition of the supported `q` subset; `Err` for anything else.
fn matches(f: &FakeFile, cond: &str) -> Result<bool, String> {
    let c = cond.trim();
    if let Some(id) = c.strip_suffix(" in parents") {
        let id = unquote(id).ok_or(c)?;
        return Ok(f.parents.contains(&id));
    }
    if c.replace(' ', "") == "trashed=false" {
        return Ok(true);
    }
    for (field, neg) in [("name", false), ("mimeType", false), ("mimeType", true)] {
        let op = if neg { "!=" } else { "=" };
        if let Some(rest) = c.strip_prefix(field) {
            let rest = rest.trim_start();
            if let Some(value) = rest.strip_prefix(op)
                && let Some(value) = unquote(value)
            {
                // Drive compares names without regard to case.
                let equal = if field == "name" {
                    f.name.eq_ignore_ascii_case(&value)
                } else {
                    f.mime == value
                };
                return Ok(equal != neg);
            }
        }
    }
    if let Some(rest) = c.strip_prefix("appProperties has {") {
        let rest = rest.strip_suffix('}').ok_or(c)?;
        let parts = split_and(rest);
        let mut key = None;
        let mut value = None;
        for p in parts {
            if let Some(k) = p
                .trim()
                .strip_prefix("key=")
                .or(p.trim().strip_prefix("key ="))
            {
                key = unquote(k);
            } else if let Some(v) = p
                .trim()
                .strip_prefix("value=")
                .or(p.trim().strip_prefix("value ="))
            {
                value = unquote(v);
            }
        }
        let (key, value) = (key.ok_or(c)?, value.ok_or(c)?);
        return Ok(f.app_properties.get(&key) == Some(&value));
    }
    Err(format!("unsupported query term: {c}"))
}

fn serve(stream: TcpStream, state: &Arc<Mutex<State>>, addr: SocketAddr) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let Some((mut req, length)) = read_request(&mut reader) else {
        return;
    };
    {
        let mut s = state.lock().unwrap();
        s.log.push(format!("{} {}", req.method, req.raw_target));
        s.seen.push(Seen {
            at: Instant::now(),
            request: format!("{} {}", req.method, req.raw_target),
            content_range: req.headers.get("content-range").cloned(),
            range: req.headers.get("range").cloned(),
        });
    }
    if std::env::var_os("FAKE_DRIVE_DEBUG").is_some() {
        eprintln!(
            "fake drive: {} {} {:?}",
            req.method,
            req.raw_target,
            req.headers.get("content-range")
        );
    }
    // Chunk uploads are read by the upload handler itself (to drop halfway).
    let is_chunk = req.method == "PUT" && req.query.contains_key("upload_id");
    if !is_chunk {
        if req
            .headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            let Some(body) = read_chunked(&mut reader) else {
                return;
            };
            req.body = body;
        } else {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            req.body = body;
        }
    }
    if req.path == "/token" {
        return token(&mut writer, state, &req);
    }
    // Every API call needs a live token.
    {
        let mut s = state.lock().unwrap();
        let token = req
            .headers
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_string);
        s.authorised += 1;
        if let Some(after) = s.faults.revoke_tokens_after
            && s.authorised > after
        {
            s.faults.revoke_tokens_after = None;
            s.generation += 1;
        }
        let generation = s.generation;
        let valid = token
            .as_ref()
            .and_then(|t| s.tokens.get(t))
            .is_some_and(|g| *g == generation);
        if !valid {
            drop(s);
            if is_chunk {
                let _ = drain(&mut reader, length);
            }
            return error(
                &mut writer,
                401,
                "authError",
                "Request had invalid authentication credentials.",
            );
        }
    }
    let m = req.method.as_str();
    let p = req.path.as_str();
    if m == "POST"
        && p == "/upload/drive/v3/files"
        && req.query.get("uploadType").map(String::as_str) == Some("resumable")
    {
        return start_upload(&mut writer, state, &req, addr);
    }
    if is_chunk && p == "/upload/drive/v3/files" {
        return chunk(&mut reader, &mut writer, state, &req, length);
    }
    if m == "POST" && p == "/drive/v3/files" {
        return create(&mut writer, state, &req);
    }
    if m == "GET" && p == "/drive/v3/files" {
        return list(&mut writer, state, &req);
    }
    if m == "GET" && p == "/drive/v3/files/generateIds" {
        let mut s = state.lock().unwrap();
        s.next_id += 1;
        let id = format!("gen{:06}", s.next_id);
        drop(s);
        return json_response(
            &mut writer,
            200,
            &json!({"kind": "drive#generatedIds", "space": "drive", "ids": [id]}),
        );
    }
    if m == "GET" && p == "/drive/v3/about" {
        let Some(fields) = req.query.get("fields") else {
            return error(
                &mut writer,
                400,
                "required",
                "The 'fields' parameter is required for this method.",
            );
        };
        let fields = match parse_fields(fields) {
            Ok(f) => f,
            Err(why) => return error(&mut writer, 400, "invalidParameter", &why),
        };
        let usage: usize = state
            .lock()
            .unwrap()
            .files
            .iter()
            .map(|f| f.content.len())
            .sum();
        let about = json!({"kind": "drive#about",
            "user": {"kind": "drive#user", "displayName": "coffer"},
            "storageQuota": {"limit": "16106127360", "usage": usage.to_string()}});
        return json_response(&mut writer, 200, &select(&about, &fields));
    }
    if let Some(id) = p.strip_prefix("/drive/v3/files/") {
        let id = percent_decode(id);
        return match m {
            "GET" => get(&mut writer, state, &req, &id),
            "DELETE" => {
                let mut s = state.lock().unwrap();
                let before = s.files.len();
                // A Shared Drive's file does not exist for a caller that does not say it
                // supports Shared Drives.
                if all_drives(&req) || !in_shared_drive(&s, &id) {
                    s.files.retain(|f| f.id != id);
                }
                let gone = before != s.files.len();
                drop(s);
                if gone {
                    respond(&mut writer, 204, &[], b"");
                } else {
                    error(
                        &mut writer,
                        404,
                        "notFound",
                        &format!("File not found: {id}."),
                    );
                }
            }
            _ => error(&mut writer, 400, "badRequest", "unsupported method"),
        };
    }
    error(
        &mut writer,
        404,
        "notFound",
        &format!("no such endpoint: {m} {p}"),
    );
}

fn drain(reader: &mut BufReader<TcpStream>, length: usize) -> std::io::Result<()> {
    let mut buf = vec![0; length];
    reader.read_exact(&mut buf)
}

fn token(writer: &mut TcpStream, state: &Arc<Mutex<State>>, req: &Request) {
    let body = String::from_utf8_lossy(&req.body);
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let ok = (grant == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        && form
            .get("assertion")
            .is_some_and(|a| a.split('.').count() == 3))
        || (grant == "refresh_token"
            && form.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN))
        || (grant == "authorization_code"
            && form.get("code").map(String::as_str) == Some(CONSENT_CODE)
            && form.contains_key("redirect_uri"));
    if !ok {
        return json_response(
            writer,
            400,
            &json!({"error": "invalid_grant", "error_description": "bad request"}),
        );
    }
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    if let Some(claims) = form
        .get("assertion")
        .and_then(|a| a.split('.').nth(1))
        .and_then(base64url)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        && let Some(sub) = claims["sub"].as_str()
    {
        s.subjects.push(sub.to_string());
    }
    s.next_id += 1;
    let token = format!("ya29.fake-{}", s.next_id);
    let generation = s.generation;
    s.tokens.insert(token.clone(), generation);
    drop(s);
    let mut answer = json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"});
    if grant == "authorization_code" {
        answer["refresh_token"] = json!(REFRESH_TOKEN);
    }
    json_response(writer, 200, &answer);
}

/// Decodes unpadded base64url (a JWT segment).
fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

fn new_file(s: &mut State, meta: &Value, content: Vec<u8>) -> FakeFile {
    s.next_id += 1;
    let props = meta["appProperties"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    FakeFile {
        id: meta["id"]
            .as_str()
            .map_or_else(|| format!("fid{:06}", s.next_id), str::to_string),
        created: chrono::Utc::now().to_rfc3339(),
        name: meta["name"].as_str().unwrap_or("Untitled").to_string(),
        mime: meta["mimeType"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_string(),
        parents: meta["parents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_else(|| vec!["root".into()]),
        app_properties: props,
        content,
    }
}

/// The parents exist, as the caller can see them (a Shared Drive's folders only with
/// `supportsAllDrives=true`).
fn parents_exist(s: &State, meta: &Value, all_drives: bool) -> Result<(), String> {
    for p in meta["parents"].as_array().into_iter().flatten() {
        let id = p.as_str().unwrap_or("");
        if !s.files.iter().any(|f| f.id == id && f.mime == FOLDER)
            || (!all_drives && in_shared_drive(s, id))
        {
            return Err(id.to_string());
        }
    }
    Ok(())
}

fn create(writer: &mut TcpStream, state: &Arc<Mutex<State>>, req: &Request) {
    let Ok(meta) = serde_json::from_slice::<Value>(&req.body) else {
        return error(writer, 400, "badRequest", "metadata is not JSON");
    };
    let fields = req.query.get("fields").map(String::as_str);
    if let Err(why) = file_answer(&Value::Null, fields) {
        return error(writer, 400, "invalidParameter", &why);
    }
    let mut s = state.lock().unwrap();
    if let Err(id) = parents_exist(&s, &meta, all_drives(req)) {
        drop(s);
        return error(writer, 404, "notFound", &format!("File not found: {id}."));
    }
    if let Some(id) = meta["id"].as_str()
        && s.files.iter().any(|f| f.id == id)
    {
        drop(s);
        return error(
            writer,
            409,
            "duplicate",
            "A file already exists with the provided ID.",
        );
    }
    let f = new_file(&mut s, &meta, Vec::new());
    s.files.push(f.clone());
    let full = file_json(&f, false, s.faults.md5_only);
    drop(s);
    json_response(writer, 200, &file_answer(&full, fields).unwrap());
}

fn start_upload(
    writer: &mut TcpStream,
    state: &Arc<Mutex<State>>,
    req: &Request,
    addr: SocketAddr,
) {
    let Ok(meta) = serde_json::from_slice::<Value>(&req.body) else {
        return error(writer, 400, "badRequest", "metadata is not JSON");
    };
    if let Err(why) = file_answer(&Value::Null, req.query.get("fields").map(String::as_str)) {
        return error(writer, 400, "invalidParameter", &why);
    }
    let mut s = state.lock().unwrap();
    if s.faults.quota_exceeded {
        drop(s);
        return error(
            writer,
            403,
            "storageQuotaExceeded",
            "Service Accounts do not have storage quota. Leverage shared drives.",
        );
    }
    if s.faults.daily_cap {
        drop(s);
        return error(
            writer,
            403,
            "userRateLimitExceeded",
            "User rate limit exceeded.",
        );
    }
    if let Err(id) = parents_exist(&s, &meta, all_drives(req)) {
        drop(s);
        return error(writer, 404, "notFound", &format!("File not found: {id}."));
    }
    s.next_id += 1;
    let id = format!("upl{:06}", s.next_id);
    s.open_sessions += 1;
    s.max_open_sessions = s.max_open_sessions.max(s.open_sessions);
    s.sessions.insert(
        id.clone(),
        Session {
            meta,
            received: Vec::new(),
            done: None,
            fields: req.query.get("fields").cloned(),
            total: None,
        },
    );
    drop(s);
    respond(
        writer,
        200,
        &[(
            "Location",
            format!("http://{addr}/upload/drive/v3/files?uploadType=resumable&upload_id={id}"),
        )],
        b"",
    );
}

/// `bytes a-b/total`, `bytes a-b/*`, `bytes */total` or `bytes */*`.
/// A parsed `Content-Range`: the byte range sent (none for a status query), and the total.
type ContentRange = (Option<(usize, usize)>, Option<usize>);

fn content_range(h: &str) -> Option<ContentRange> {
    let spec = h.strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    if range == "*" {
        return Some((None, total));
    }
    let (a, b) = range.split_once('-')?;
    Some((Some((a.parse().ok()?, b.parse().ok()?)), total))
}

fn incomplete(writer: &mut TcpStream, received: usize) {
    let headers: Vec<(&str, String)> = if received > 0 {
        vec![("Range", format!("bytes=0-{}", received - 1))]
    } else {
        Vec::new()
    };
    respond(writer, 308, &headers, b"");
}

/// The answer a finished session gives (now, or to a status query later).
fn finished_answer(s: &State, sess: &Session, fid: &str, wrong: bool) -> Option<Value> {
    let f = s.files.iter().find(|f| f.id == fid)?;
    let full = file_json(f, wrong, s.faults.md5_only);
    file_answer(&full, sess.fields.as_deref()).ok()
}

/// Takes a `Content-Range`'s total for the session: it may be given late, never changed.
fn note_total(sess: &mut Session, total: Option<usize>) -> Result<(), String> {
    match (sess.total, total) {
        (Some(had), Some(now)) if had != now => Err(format!(
            "Content-Range gives a total of {now} bytes, the session's is {had}"
        )),
        (None, Some(now)) => {
            sess.total = Some(now);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn chunk(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    state: &Arc<Mutex<State>>,
    req: &Request,
    length: usize,
) {
    let id = req.query.get("upload_id").cloned().unwrap_or_default();
    let Some((range, total)) = req
        .headers
        .get("content-range")
        .and_then(|h| content_range(h))
    else {
        let _ = drain(reader, length);
        return error(writer, 400, "badRequest", "missing or bad Content-Range");
    };
    if state.lock().unwrap().expired.contains(&id) {
        let _ = drain(reader, length);
        return error(writer, 410, "gone", "upload session expired");
    }
    // A status query: where does the session stand?
    let Some((first, last)) = range else {
        let _ = drain(reader, length);
        let mut s = state.lock().unwrap();
        let Some(sess) = s.sessions.get_mut(&id) else {
            drop(s);
            return error(writer, 404, "notFound", "upload session not found");
        };
        if let Err(why) = note_total(sess, total) {
            drop(s);
            return error(writer, 400, "badRequest", &why);
        }
        let received = sess.received.len();
        if let Some(fid) = sess.done.clone() {
            let answer = finished_answer(&s, &s.sessions[&id], &fid, false);
            drop(s);
            return match answer {
                Some(a) => json_response(writer, 200, &a),
                None => error(writer, 404, "notFound", "file gone"),
            };
        }
        drop(s);
        // All bytes are there and the total is now given: that completes it.
        return if total == Some(received) {
            complete(writer, state, &id, false)
        } else {
            incomplete(writer, received)
        };
    };
    if last < first {
        let _ = drain(reader, length);
        return error(
            writer,
            400,
            "badRequest",
            &format!("Content-Range bytes {first}-{last}: the range ends before it starts"),
        );
    }
    let number = {
        let mut s = state.lock().unwrap();
        s.chunk_puts += 1;
        s.chunk_puts
    };
    let take = |v: &mut Vec<u32>| {
        let hit = v.contains(&number);
        v.retain(|n| *n != number);
        hit
    };
    let (f500, f503, fdrop, f429, f403, f404, flost, f410, fstall, keep) = {
        let mut s = state.lock().unwrap();
        let f = &mut s.faults;
        let keep = f.chunk_keep.iter().find(|(n, _)| *n == number).map(|k| k.1);
        f.chunk_keep.retain(|(n, _)| *n != number);
        (
            take(&mut f.chunk_500),
            take(&mut f.chunk_503),
            take(&mut f.chunk_drop),
            take(&mut f.chunk_429),
            take(&mut f.chunk_403_rate),
            take(&mut f.chunk_404),
            take(&mut f.chunk_answer_lost),
            take(&mut f.chunk_410),
            take(&mut f.chunk_stall),
            keep,
        )
    };
    if fdrop {
        // Read half, keep the aligned part of it, and hang up.
        let mut half = vec![0; length / 2];
        if reader.read_exact(&mut half).is_ok() {
            let mut s = state.lock().unwrap();
            if let Some(sess) = s.sessions.get_mut(&id)
                && sess.received.len() == first
            {
                let keep = half.len() / CHUNK_ALIGN * CHUNK_ALIGN;
                sess.received.extend_from_slice(&half[..keep]);
            }
        }
        let _ = writer.shutdown(Shutdown::Both);
        return;
    }
    if fstall {
        // Half the body arrives, then the server goes silent (nothing is committed).
        let mut half = vec![0; length / 2];
        let _ = reader.read_exact(&mut half);
        return hold(state);
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if f500 {
        return error(writer, 500, "backendError", "Backend Error");
    }
    if f503 {
        return error(writer, 503, "backendError", "Service Unavailable");
    }
    if f429 {
        let body = json!({"error": {"code": 429, "message": "Too Many Requests",
            "errors": [{"reason": "rateLimitExceeded"}]}});
        return respond(
            writer,
            429,
            &[
                ("Retry-After", "1".into()),
                ("Content-Type", "application/json".into()),
            ],
            body.to_string().as_bytes(),
        );
    }
    if f403 {
        return error(writer, 403, "userRateLimitExceeded", "Rate Limit Exceeded");
    }
    let mut s = state.lock().unwrap();
    if f404 {
        s.sessions.remove(&id);
    }
    if f410 {
        s.sessions.remove(&id);
        s.expired.insert(id.clone());
        s.open_sessions = s.open_sessions.saturating_sub(1);
        drop(s);
        return error(writer, 410, "gone", "upload session expired");
    }
    let Some(sess) = s.sessions.get_mut(&id) else {
        drop(s);
        return error(writer, 404, "notFound", "upload session not found");
    };
    if last + 1 - first != body.len() {
        drop(s);
        return error(
            writer,
            400,
            "badRequest",
            "Content-Range does not match the body",
        );
    }
    if let Err(why) = note_total(sess, total) {
        drop(s);
        return error(writer, 400, "badRequest", &why);
    }
    if total.is_some_and(|t| last >= t) {
        drop(s);
        return error(
            writer,
            400,
            "badRequest",
            "Content-Range goes past the total",
        );
    }
    if first > sess.received.len() {
        drop(s);
        return error(
            writer,
            400,
            "badRequest",
            "chunk starts after the committed bytes",
        );
    }
    let is_final = total == Some(last + 1);
    if !is_final && !body.len().is_multiple_of(CHUNK_ALIGN) {
        drop(s);
        return error(
            writer,
            400,
            "badRequest",
            "chunk size must be a multiple of 256 KiB except for the last one",
        );
    }
    // Bytes already committed (a resend after a lost answer) are skipped.
    let skip = sess.received.len() - first;
    let mut new = &body[skip.min(body.len())..];
    if let Some(n) = keep {
        new = &new[..n.min(new.len())];
    }
    sess.received.extend_from_slice(new);
    let finished = total.is_some_and(|t| sess.received.len() == t);
    if !finished {
        let n = sess.received.len();
        drop(s);
        if flost {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        return incomplete(writer, n);
    }
    drop(s);
    complete(writer, state, &id, flost);
}

/// Turns a session's bytes into a file and answers with it (or not, `lost`).
fn complete(writer: &mut TcpStream, state: &Arc<Mutex<State>>, id: &str, lost: bool) {
    let wait = state.lock().unwrap().faults.wait_for_parallel.take();
    if let Some(n) = wait {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state.lock().unwrap().open_sessions < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut s = state.lock().unwrap();
    let Some(sess) = s.sessions.get_mut(id) else {
        drop(s);
        return error(writer, 404, "notFound", "upload session not found");
    };
    let meta = sess.meta.clone();
    let content = std::mem::take(&mut sess.received);
    s.open_sessions = s.open_sessions.saturating_sub(1);
    let f = new_file(&mut s, &meta, content);
    s.files.push(f.clone());
    if let Some(sess) = s.sessions.get_mut(id) {
        sess.done = Some(f.id.clone());
    }
    if s.faults.duplicate > 0 {
        s.faults.duplicate -= 1;
        let mut dup = new_file(&mut s, &meta, f.content.clone());
        dup.app_properties = f.app_properties.clone();
        s.files.push(dup);
    }
    let wrong = if s.faults.wrong_checksum > 0 {
        s.faults.wrong_checksum -= 1;
        true
    } else {
        false
    };
    let answer = finished_answer(&s, &s.sessions[id], &f.id, wrong);
    drop(s);
    if lost {
        let _ = writer.shutdown(Shutdown::Both);
        return;
    }
    match answer {
        Some(a) => json_response(writer, 200, &a),
        None => error(writer, 500, "backendError", "the finished file is gone"),
    }
}

fn list(writer: &mut TcpStream, state: &Arc<Mutex<State>>, req: &Request) {
    let q = req.query.get("q").cloned().unwrap_or_default();
    let terms = if q.is_empty() {
        Vec::new()
    } else {
        split_and(&q)
    };
    let flag = |k: &str| req.query.get(k).map(String::as_str) == Some("true");
    let corpora = req.query.get("corpora").map_or("user", String::as_str);
    let drive_id = req.query.get("driveId");
    // Drive's rules for listing a Shared Drive.
    if corpora == "drive" && drive_id.is_none() {
        return error(
            writer,
            400,
            "badRequest",
            "The driveId parameter must be specified if and only if corpora is set to drive.",
        );
    }
    if corpora == "drive" && !flag("includeItemsFromAllDrives") {
        return error(
            writer,
            400,
            "badRequest",
            "The includeItemsFromAllDrives parameter must be set to true when corpora is drive.",
        );
    }
    if flag("includeItemsFromAllDrives") && !all_drives(req) {
        return error(
            writer,
            400,
            "badRequest",
            "includeItemsFromAllDrives requires supportsAllDrives=true.",
        );
    }
    // nextPageToken comes without `fields`; with it, only if asked for.
    let fields = match req.query.get("fields") {
        None => parse_fields(&format!(
            "kind,incompleteSearch,nextPageToken,files({DEFAULT_FILE_FIELDS})"
        )),
        Some(f) => parse_fields(f),
    };
    let fields = match fields {
        Ok(f) => f,
        Err(why) => return error(writer, 400, "invalidParameter", &why),
    };
    for (name, sub) in &fields.0 {
        let ok = match name.as_str() {
            "kind" | "incompleteSearch" | "nextPageToken" | "*" => sub.is_none(),
            "files" => sub
                .as_ref()
                .is_none_or(|sub| check_file_fields(sub).is_ok()),
            _ => false,
        };
        if !ok {
            return error(
                writer,
                400,
                "invalidParameter",
                &format!("Invalid field selection {name}"),
            );
        }
    }
    let mut s = state.lock().unwrap();
    if s.faults.list_stall > 0 {
        s.faults.list_stall -= 1;
        drop(s);
        return hold(state);
    }
    let mut hits = Vec::new();
    for f in &s.files {
        if f.id == "root" || f.id == SHARED_DRIVE {
            continue;
        }
        let shared = in_shared_drive(&s, &f.id);
        let visible = match corpora {
            "drive" => shared && drive_id.map(String::as_str) == Some(SHARED_DRIVE),
            _ => !shared || flag("includeItemsFromAllDrives"),
        };
        if !visible {
            continue;
        }
        let mut all = true;
        for t in &terms {
            match matches(f, t) {
                Ok(true) => {}
                Ok(false) => {
                    all = false;
                    break;
                }
                Err(why) => {
                    drop(s);
                    return error(writer, 400, "invalid", &why);
                }
            }
        }
        if all {
            hits.push(f.clone());
        }
    }
    let asked: usize = req
        .query
        .get("pageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    let page = asked.min(s.faults.max_page_size).max(1);
    let md5_only = s.faults.md5_only;
    drop(s);
    let start: usize = req
        .query
        .get("pageToken")
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + page).min(hits.len());
    let files: Vec<Value> = hits[start.min(end)..end]
        .iter()
        .map(|f| file_json(f, false, md5_only))
        .collect();
    let mut body = json!({"kind": "drive#fileList", "incompleteSearch": false, "files": files});
    if end < hits.len() {
        body["nextPageToken"] = json!(format!("page-{end}"));
    }
    json_response(writer, 200, &select(&body, &fields));
}

fn get(writer: &mut TcpStream, state: &Arc<Mutex<State>>, req: &Request, id: &str) {
    let mut s = state.lock().unwrap();
    let Some(f) = s
        .files
        .iter()
        .find(|f| f.id == id)
        .filter(|_| all_drives(req) || !in_shared_drive(&s, id))
        .cloned()
    else {
        drop(s);
        return error(writer, 404, "notFound", &format!("File not found: {id}."));
    };
    if req.query.get("alt").map(String::as_str) != Some("media") {
        let full = file_json(&f, false, s.faults.md5_only);
        drop(s);
        return match file_answer(&full, req.query.get("fields").map(String::as_str)) {
            Ok(a) => json_response(writer, 200, &a),
            Err(why) => error(writer, 400, "invalidParameter", &why),
        };
    }
    s.log.push(format!("DOWNLOAD {}", f.name));
    let big = f.content.len() > 1024;
    let drop_now = s.faults.download_drop > 0 && big;
    if drop_now {
        s.faults.download_drop -= 1;
    }
    let stall_now = !drop_now && s.faults.download_stall > 0 && big;
    if stall_now {
        s.faults.download_stall -= 1;
    }
    drop(s);
    let from = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|a| a.parse::<usize>().ok());
    let len = f.content.len();
    let (status, body, extra) = match from {
        Some(a) if a < len => (
            206,
            &f.content[a..],
            vec![("Content-Range", format!("bytes {a}-{}/{len}", len - 1))],
        ),
        // Nothing there to send: Drive answers 416.
        Some(_) => {
            return respond(
                writer,
                416,
                &[
                    ("Content-Range", format!("bytes */{len}")),
                    ("Content-Type", "application/json".into()),
                ],
                json!({"error": {"code": 416, "message": "Request range not satisfiable",
                    "errors": [{"domain": "global", "reason": "requestedRangeNotSatisfiable",
                        "message": "Request range not satisfiable"}]}})
                .to_string()
                .as_bytes(),
            );
        }
        None => (200, &f.content[..], Vec::new()),
    };
    if drop_now || stall_now {
        // Promise the whole body, send half, then hang up — or go silent.
        let head = format!(
            "HTTP/1.1 {status} OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body[..body.len() / 2]);
        let _ = writer.flush();
        if stall_now {
            return hold(state);
        }
        std::thread::sleep(Duration::from_millis(20));
        let _ = writer.shutdown(Shutdown::Both);
        return;
    }
    let mut headers = extra;
    headers.push(("Content-Type", "application/octet-stream".into()));
    respond(writer, status, &headers, body);
}
