//! Text from outside coffer (file names from a backed-up tree, archive entry names, a
//! manifest's host and table names, what a database returns) made safe to print.
//!
//! A file called `\e]0;…\a\e[2J` would set the terminal's title and clear its screen when
//! printed raw, and could fake coffer's own output. Everything such a name reaches a terminal
//! or a log through goes through `Printable`: control characters (C0, DEL, C1), bidirectional
//! overrides and bytes that are not UTF-8 come out as visible escapes (`\x1b`, `\u{202e}`).

use std::fmt::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Displays text with every control character escaped.
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0)
    }
}

/// Displays text as `Printable` does, but keeps its line breaks (multi-line messages).
#[derive(Debug, Clone, Copy)]
pub struct PrintableLines<'a>(pub &'a str);

impl fmt::Display for PrintableLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.split('\n').enumerate() {
            if i > 0 {
                f.write_char('\n')?;
            }
            write_escaped(f, line)?;
        }
        Ok(())
    }
}

/// Displays a path with every control character, and every byte that is not UTF-8, escaped.
#[derive(Debug, Clone, Copy)]
pub struct PrintablePath<'a>(pub &'a Path);

impl fmt::Display for PrintablePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        printable_bytes(self.0.as_os_str().as_bytes(), f)
    }
}

/// Displays bytes as text, escaping control characters and bytes that are not UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct PrintableBytes<'a>(pub &'a [u8]);

impl fmt::Display for PrintableBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        printable_bytes(self.0, f)
    }
}

fn printable_bytes(mut bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => return write_escaped(f, s),
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                write_escaped(
                    f,
                    std::str::from_utf8(good).expect("valid up to this point"),
                )?;
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    write!(f, "\\x{b:02x}")?;
                }
                bytes = &rest[bad..];
            }
        }
    }
    Ok(())
}

/// Whether `c` must not reach a terminal as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn write_escaped(f: &mut dyn Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        if !is_unsafe(c) {
            f.write_char(c)?;
            continue;
        }
        match c {
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x100 => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "\\u{{{:x}}}", c as u32)?,
        }
    }
    Ok(())
}

/// An error and its causes, `: `-separated, each cause once: many errors quote their source in
/// their own message too ("cannot read config X: No such file…"), and anyhow's `{:#}` would
/// print it twice.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `s` with its control characters escaped, as an owned string.
pub fn printable(s: &str) -> String {
    Printable(s).to_string()
}

/// Whether printing `s` as it is would be safe.
pub fn is_printable(s: &str) -> bool {
    !s.chars().any(is_unsafe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn each_cause_is_told_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io)
            .context("cannot read config /x.toml: No such file")
            .context("loading the configuration");
        assert_eq!(
            error_chain(&e),
            "loading the configuration: cannot read config /x.toml: No such file"
        );
    }

    #[test]
    fn escapes_terminal_sequences() {
        let hostile = "inv\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m.pdf";
        let shown = printable(hostile);
        assert_eq!(shown, "inv\\x1b]0;owned\\x07\\x1b[2J\\x9b31m.pdf");
        assert!(is_printable(&shown));
        assert!(!is_printable(hostile));
    }

    #[test]
    fn keeps_ordinary_names_and_escapes_bidi_and_bad_bytes() {
        assert_eq!(printable("Счёт №1 (copy).pdf"), "Счёт №1 (copy).pdf");
        assert_eq!(printable("a\u{202e}fdp.exe"), "a\\u{202e}fdp.exe");
        assert_eq!(printable("a\nb\tc"), "a\\nb\\tc");
        let p = Path::new(OsStr::from_bytes(b"dir/\xff\x1bname"));
        assert_eq!(PrintablePath(p).to_string(), "dir/\\xff\\x1bname");
    }
}
