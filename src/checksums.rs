//! Per-file checksums of a directory stream, in `sha256sum` format: one line per regular file,
//! `<hex sha256>  <path>`, paths relative to the source folder as the tar names them. A name
//! holding a backslash, a newline or a carriage return is escaped as GNU `sha256sum` (9.x) does
//! (`\\`, `\n`, `\r`, and the line starts with `\`), so `sha256sum -c` checks a restore made
//! with stock tools too.
//!
//! The list is stored as its own encrypted stream next to the tar (`<source>.sha256.gz.age`,
//! docs/FORMAT.md): the manifest is plaintext and never names a file.

use std::io::{self, Seek, Write};
use std::path::PathBuf;

/// Above this many bytes a list being written goes to a temporary file.
const SPILL: usize = 4 << 20;

/// A checksum list being written during a backup: in memory up to 4 MiB, then in an unnamed
/// temporary file (gone when dropped), so a folder of millions of files costs little memory.
#[derive(Debug, Default)]
pub struct ChecksumList {
    buf: Vec<u8>,
    spill: Option<std::fs::File>,
    lines: u64,
}

impl ChecksumList {
    /// Adds a file's line.
    ///
    /// # Errors
    /// When the temporary file cannot be written.
    pub fn push(&mut self, hex: &str, path: &[u8]) -> io::Result<()> {
        push_line(&mut self.buf, hex, path);
        self.lines += 1;
        if self.buf.len() >= SPILL {
            let file = match &mut self.spill {
                Some(f) => f,
                None => self.spill.insert(tempfile::tempfile()?),
            };
            file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Lines (files) in the list.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Writes the whole list to `out`.
    ///
    /// # Errors
    /// When the temporary file cannot be read or `out` written.
    pub fn write_to(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if let Some(f) = &mut self.spill {
            f.rewind()?;
            io::copy(f, out)?;
        }
        out.write_all(&self.buf)
    }
}

/// Appends the line for a file with content hash `hex` at `path` (the tar's name bytes).
pub fn push_line(out: &mut Vec<u8>, hex: &str, path: &[u8]) {
    let escape = path.iter().any(|&b| matches!(b, b'\\' | b'\n' | b'\r'));
    if escape {
        out.push(b'\\');
    }
    out.extend_from_slice(hex.as_bytes());
    out.extend_from_slice(b"  ");
    for &b in path {
        match b {
            b'\\' if escape => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: String,
    pub path: PathBuf,
}

/// Parses one line (without its newline) written by `push_line`.
///
/// # Errors
/// When it is not `<64 hex>  <path>`.
pub fn parse_line(line: &[u8]) -> Result<Entry, &'static str> {
    use std::os::unix::ffi::OsStringExt;
    const BAD: &str = "a line is not '<sha256>  <path>'";
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    if line.len() < 67 || &line[64..66] != b"  " {
        return Err(BAD);
    }
    let hex = std::str::from_utf8(&line[..64]).map_err(|_| BAD)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BAD);
    }
    let raw = &line[66..];
    let path = if escaped {
        let mut p = Vec::with_capacity(raw.len());
        let mut it = raw.iter();
        while let Some(&b) = it.next() {
            if b == b'\\' {
                match it.next() {
                    Some(b'\\') => p.push(b'\\'),
                    Some(b'n') => p.push(b'\n'),
                    Some(b'r') => p.push(b'\r'),
                    _ => return Err(BAD),
                }
            } else {
                p.push(b);
            }
        }
        p
    } else {
        raw.to_vec()
    };
    Ok(Entry {
        sha256: hex.to_ascii_lowercase(),
        path: PathBuf::from(std::ffi::OsString::from_vec(path)),
    })
}

/// Parses a whole list written by `push_line` (the tests' reader; the drill reads line by line).
///
/// # Errors
/// The number of the first line that is not `<64 hex>  <path>`.
#[cfg(test)]
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, String> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| parse_line(line).map_err(|why| format!("line {}: {why}", n + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn lines_round_trip_with_gnu_escaping() {
        let hex = "ab".repeat(32);
        let names: [&[u8]; 5] = [
            b"a/plain.txt",
            b"odd\\name",
            b"new\nline",
            b"bin\xff\xfe",
            b"end\r",
        ];
        let mut text = Vec::new();
        for n in names {
            push_line(&mut text, &hex, n);
        }
        assert!(text.starts_with(format!("{hex}  a/plain.txt\n\\{hex}  odd\\\\name\n").as_bytes()));
        let parsed = parse(&text).unwrap();
        let back: Vec<&[u8]> = parsed
            .iter()
            .map(|e| e.path.as_os_str().as_bytes())
            .collect();
        assert_eq!(back, names);
        assert!(parse(b"nothex  x\n").is_err());
    }

    #[test]
    fn a_long_list_spills_to_a_file_and_reads_back_whole() {
        let mut list = ChecksumList::default();
        let mut expected = Vec::new();
        let hex = "cd".repeat(32);
        for i in 0..60_000 {
            let name = format!("private/files/some/deep/folder/file-{i}.pdf");
            list.push(&hex, name.as_bytes()).unwrap();
            push_line(&mut expected, &hex, name.as_bytes());
        }
        assert!(list.spill.is_some(), "6 MB of lines stayed in memory");
        assert!(list.buf.len() < SPILL);
        assert_eq!(list.lines(), 60_000);
        let mut out = Vec::new();
        list.write_to(&mut out).unwrap();
        assert_eq!(out, expected);
    }
}
