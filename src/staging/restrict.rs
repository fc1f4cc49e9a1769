//! psql's restricted mode around a dump from the store: the `Read` psql loads from starts with
//! `\restrict <key>`, a fresh random key the dump cannot know, after which psql refuses every
//! backslash meta-command (`\!`, `\o |cmd`, `\copy … program`, `\i`, …) except
//! `\unrestrict <key>`. A dump is never trusted: the store may be tampered with, and pg_dump
//! before 15.14/16.10/17.6 could itself write meta-commands from crafted object names
//! (CVE-2025-8715).
//!
//! pg_dump ≥ 13.22/14.19/15.14/16.10/17.6 writes its own `\restrict <k>` near the top and
//! `\unrestrict <k>` at the end; inside our restriction both would fail the load, so exactly
//! those lines are dropped: a line that is `\restrict` or `\unrestrict`, one space and an
//! alphanumeric key (pg_dump's), nothing else, outside COPY data. COPY data (from a line
//! `COPY … FROM stdin;` to a line `\.`, pg_dump's plain format) passes byte for byte.
//!
//! DROPPING LINES CAN ONLY REMOVE META-COMMANDS, NEVER ADD CAPABILITY: our key is never in the
//! dump, so a dump that confuses the COPY tracking can at worst fail the load (a key line
//! psql then refuses) or lose a data line that looked like a key line (pg_dump escapes a
//! leading backslash in COPY data as `\\`, so its own data never does).
//!
//! Streamed: of each line only its start is held back (at most `HEAD` bytes) to decide; the
//! rest of a long line (COPY data lines can be many MiB) passes straight through.

use std::io::{self, Read};

use rand::Rng;

/// The most of a line's start held back to decide whether it is a key line: pg_dump's are
/// `\unrestrict ` and 64 alphanumerics. A longer key line is passed on, and psql refuses it.
const HEAD: usize = 256;

/// In COPY data only the terminator matters: `\.` and its line ending.
const COPY_HEAD: usize = 4;

/// How pg_dump's plain format starts COPY data: a line `COPY <table> (<columns>) FROM stdin;`.
const COPY_START: &[u8] = b"COPY ";
const COPY_FROM_STDIN: &[u8] = b" FROM stdin;";

/// The end of a long line that may start COPY data: `COPY_FROM_STDIN` and `\r\n`.
const TAIL: usize = COPY_FROM_STDIN.len() + 2;

const READ_SIZE: usize = 64 * 1024;

/// A dump for psql, behind `\restrict <fresh key>` and without the dump's own key lines.
pub struct Restricted<R> {
    inner: R,
    /// Bytes read from `inner`, `input[at..end]` not yet handled.
    input: Box<[u8]>,
    at: usize,
    end: usize,
    eof: bool,
    /// Bytes decided on and not yet handed out (our `\restrict` line first).
    ready: Vec<u8>,
    ready_at: usize,
    /// The start of the current line while it is being decided.
    head: Vec<u8>,
    /// Past `head`: the rest of a long line passes through up to its newline.
    rest: bool,
    /// Within COPY data.
    copy: bool,
    /// The last bytes of a long line that began `COPY ` outside COPY data.
    tail: Option<Vec<u8>>,
    consumed: u64,
}

impl<R: Read> Restricted<R> {
    /// Wraps `inner` behind a fresh random key (32 alphanumerics from the OS's generator).
    pub fn new(inner: R) -> Self {
        let key: String = rand::rngs::OsRng
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        Self::with_key(inner, &key)
    }

    fn with_key(inner: R, key: &str) -> Self {
        Restricted {
            inner,
            input: vec![0; READ_SIZE].into_boxed_slice(),
            at: 0,
            end: 0,
            eof: false,
            ready: format!("\\restrict {key}\n").into_bytes(),
            ready_at: 0,
            head: Vec::with_capacity(HEAD),
            rest: false,
            copy: false,
            tail: None,
            consumed: 0,
        }
    }

    /// Bytes read from the dump itself.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// A line ended (or the input did) with `head` holding all of it: keep or drop it, and
    /// follow COPY data.
    fn decide_line(&mut self) {
        let line = content(&self.head);
        if self.copy {
            if line == b"\\." {
                self.copy = false;
            }
        } else if is_key_line(line) {
            self.head.clear();
            return;
        } else if line.starts_with(COPY_START) && line.ends_with(COPY_FROM_STDIN) {
            self.copy = true;
        }
        self.ready.extend_from_slice(&self.head);
        self.head.clear();
    }

    /// The line in `head` is too long to be decided on: pass it on, and the rest after it.
    fn pass_long_line(&mut self) {
        if !self.copy && self.head.starts_with(COPY_START) {
            let start = self.head.len().saturating_sub(TAIL);
            self.tail = Some(self.head[start..].to_vec());
        }
        self.ready.extend_from_slice(&self.head);
        self.head.clear();
        self.rest = true;
    }

    /// Moves decided bytes into `buf`.
    fn hand_out(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.ready.len() - self.ready_at).min(buf.len());
        buf[..n].copy_from_slice(&self.ready[self.ready_at..self.ready_at + n]);
        self.ready_at += n;
        if self.ready_at == self.ready.len() {
            self.ready.clear();
            self.ready_at = 0;
        }
        n
    }

    /// Moves the rest of a long line from `input` into `buf`, up to and including its newline.
    fn pass_rest(&mut self, buf: &mut [u8]) -> usize {
        let window = &self.input[self.at..self.end];
        let (n, ends) = match window.iter().position(|&b| b == b'\n') {
            Some(i) if i < buf.len() => (i + 1, true),
            _ => (window.len().min(buf.len()), false),
        };
        buf[..n].copy_from_slice(&window[..n]);
        if let Some(tail) = &mut self.tail {
            // Its end and a newline: enough to see whether it is ` FROM stdin;`.
            let passed = &window[..n];
            tail.extend_from_slice(&passed[passed.len().saturating_sub(TAIL)..]);
            tail.drain(..tail.len().saturating_sub(TAIL));
        }
        self.at += n;
        if ends {
            self.rest = false;
            if let Some(tail) = self.tail.take()
                && content(&tail).ends_with(COPY_FROM_STDIN)
            {
                self.copy = true;
            }
        }
        n
    }

    /// Moves bytes of the current line's start from `input` into `head`, deciding the line
    /// when it ends or grows too long.
    fn take_head(&mut self) {
        let cap = if self.copy { COPY_HEAD } else { HEAD };
        let room = cap - self.head.len();
        let window = &self.input[self.at..self.end.min(self.at + room)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.head.extend_from_slice(&window[..=i]);
                self.at += i + 1;
                self.decide_line();
            }
            None => {
                self.head.extend_from_slice(window);
                self.at += window.len();
                if self.head.len() == cap {
                    self.pass_long_line();
                }
            }
        }
    }
}

impl<R: Read> Read for Restricted<R> {
    /// Fills `buf` as far as the input read so far allows (one client write per block, not
    /// per line), reading the dump again only when nothing is ready.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.ready_at < self.ready.len() {
                filled += self.hand_out(&mut buf[filled..]);
            } else if self.at < self.end {
                if self.rest {
                    filled += self.pass_rest(&mut buf[filled..]);
                } else {
                    self.take_head();
                }
            } else if self.eof {
                // A last line without a newline is a whole line too.
                if self.head.is_empty() {
                    break;
                }
                self.decide_line();
            } else if filled > 0 {
                break;
            } else {
                let n = match self.inner.read(&mut self.input) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.consumed += n as u64;
                self.at = 0;
                self.end = n;
                self.eof = n == 0;
            }
        }
        Ok(filled)
    }
}

/// A line without its line ending (`\n` or `\r\n`).
fn content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `\restrict <key>` or `\unrestrict <key>`, as pg_dump writes them, and nothing else.
fn is_key_line(line: &[u8]) -> bool {
    line.strip_prefix(b"\\restrict ")
        .or_else(|| line.strip_prefix(b"\\unrestrict "))
        .is_some_and(|key| !key.is_empty() && key.iter().all(u8::is_ascii_alphanumeric))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// What psql reads for `dump`, the same whether the dump arrives a byte at a time or all
    /// at once, and whether psql reads a byte at a time or in large blocks.
    fn filtered(dump: &[u8]) -> Vec<u8> {
        let mut outputs = Vec::new();
        for step in [1, 3, 64 * 1024] {
            for block in [1, 7, 256 * 1024] {
                let mut r = Restricted::with_key(Trickle { data: dump, step }, "K3y");
                let mut out = Vec::new();
                let mut buf = vec![0; block];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                assert_eq!(r.consumed(), dump.len() as u64);
                outputs.push(out);
            }
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        let out = outputs.pop().unwrap();
        let ours = b"\\restrict K3y\n";
        assert!(out.starts_with(ours), "{}", String::from_utf8_lossy(&out));
        out[ours.len()..].to_vec()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn drops_the_dumps_own_key_lines_and_nothing_else() {
        let dump = b"--\n\\restrict abcDEF123\n\nSET x = 1;\n\\unrestrict abcDEF123\n";
        assert_eq!(text(&filtered(dump)), "--\n\nSET x = 1;\n");
        // The last line without a newline, and CRLF line endings.
        let dump = b"SELECT 1;\r\n\\restrict abc\r\nSELECT 2;\r\n\\unrestrict abc";
        assert_eq!(text(&filtered(dump)), "SELECT 1;\r\nSELECT 2;\r\n");
    }

    #[test]
    fn keeps_every_other_meta_command_for_psql_to_refuse() {
        for line in [
            "\\! touch /tmp/pwned\n",
            "\\restrict\n",
            "\\restrict \n",
            "\\restrict abc \\! id\n",
            "\\restrict abc def\n",
            " \\unrestrict abc\n",
            "\\unrestrict abc;\n",
            "\\unrestrictabc\n",
            "\\unrestrict  abc\n",
            "\\Unrestrict abc\n",
        ] {
            assert_eq!(text(&filtered(line.as_bytes())), line);
        }
        // A key line longer than what is held back is not looked at: psql refuses it.
        let long = format!("\\unrestrict {}\n", "k".repeat(HEAD));
        assert_eq!(text(&filtered(long.as_bytes())), long);
    }

    #[test]
    fn copy_data_passes_byte_for_byte_to_its_terminator() {
        let dump = b"\\restrict k1\n\
            COPY public.t (a, b) FROM stdin;\n\
            \\restrict k1\n\
            \\unrestrict k1\n\
            \\N\t\\\\x\n\
            \\.x\n\
            \\.\n\
            \\unrestrict k1\n";
        assert_eq!(
            text(&filtered(dump)),
            "COPY public.t (a, b) FROM stdin;\n\
             \\restrict k1\n\
             \\unrestrict k1\n\
             \\N\t\\\\x\n\
             \\.x\n\
             \\.\n"
        );
        // CRLF, and a terminator at the very end.
        let dump = b"COPY t FROM stdin;\r\n\\restrict k\r\n\\.\r\n\\restrict k\r\n";
        assert_eq!(
            text(&filtered(dump)),
            "COPY t FROM stdin;\r\n\\restrict k\r\n\\.\r\n"
        );
        // Not a COPY start: a key line after it is dropped.
        let dump = b"COPY t TO stdout;\n\\restrict k\n-- COPY t FROM stdin;\n\\restrict k\n";
        assert_eq!(
            text(&filtered(dump)),
            "COPY t TO stdout;\n-- COPY t FROM stdin;\n"
        );
    }

    #[test]
    fn long_lines_pass_through_and_a_long_copy_start_is_followed() {
        let columns: Vec<String> = (0..200).map(|i| format!("\"column_{i}\"")).collect();
        let copy = format!("COPY public.t ({}) FROM stdin;\n", columns.join(", "));
        assert!(copy.len() > HEAD);
        let data = format!("\\restrict {}\t{}\n", "x".repeat(1000), "y".repeat(300_000));
        let dump = format!("{copy}\\restrict k\n{data}\\.\n\\unrestrict k\nSELECT 1;\n");
        assert_eq!(
            text(&filtered(dump.as_bytes())),
            format!("{copy}\\restrict k\n{data}\\.\nSELECT 1;\n")
        );
        // A long line that only looks like a COPY start at its beginning.
        let not = format!("COPY t ({}) TO stdout;\n", columns.join(", "));
        let dump = format!("{not}\\unrestrict k\n");
        assert_eq!(text(&filtered(dump.as_bytes())), not);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert_eq!(filtered(b""), b"");
        assert_eq!(filtered(b"\n"), b"\n");
        assert_eq!(filtered(b"\\"), b"\\");
        assert_eq!(filtered(b"\\restrict k"), b"");
        assert_eq!(filtered(b"COPY t FROM stdin;"), b"COPY t FROM stdin;");
    }

    #[test]
    fn each_load_gets_a_fresh_key_and_a_broken_input_stays_an_error() {
        fn first(mut r: impl Read) -> String {
            let mut out = String::new();
            r.read_to_string(&mut out).unwrap();
            out
        }
        let (a, b) = (
            first(Restricted::new(&b""[..])),
            first(Restricted::new(&b""[..])),
        );
        assert!(
            a.starts_with("\\restrict ") && a.ends_with('\n') && a.len() == 43,
            "{a}"
        );
        assert_ne!(a, b);
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("part 2 is corrupted"))
            }
        }
        let mut r = Restricted::with_key(Broken, "k");
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).unwrap(), 12);
        assert_eq!(
            r.read(&mut buf).unwrap_err().to_string(),
            "part 2 is corrupted"
        );
    }
}
