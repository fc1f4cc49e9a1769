//! Per-file checksums of a directory stream, in `sha256sum` format: one line per regular file,
//! `<hex sha256>  <path>`, paths relative to the source folder as the tar names them. A name
//! holding a backslash or a newline is escaped as GNU `sha256sum` does (`\\`, `\n`, and the
//! line starts with `\`), so `sha256sum -c` checks a restore made with stock tools too.
//!
//! The list is stored as its own encrypted stream next to the tar (`<source>.sha256.gz.age`,
//! docs/FORMAT.md): the manifest is plaintext and never names a file.

use std::path::PathBuf;

/// Appends the line for a file with content hash `hex` at `path` (the tar's name bytes).
pub fn push_line(out: &mut Vec<u8>, hex: &str, path: &[u8]) {
    let escape = path.iter().any(|&b| b == b'\\' || b == b'\n');
    if escape {
        out.push(b'\\');
    }
    out.extend_from_slice(hex.as_bytes());
    out.extend_from_slice(b"  ");
    for &b in path {
        match b {
            b'\\' if escape => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
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

/// Parses a list written by `push_line`.
///
/// # Errors
/// The number of the first line that is not `<64 hex>  <path>`.
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, String> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "line {} of the checksum list is not '<sha256>  <path>'",
                n + 1
            )
        };
        let (escaped, line) = match line.strip_prefix(b"\\") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        if line.len() < 67 || &line[64..66] != b"  " {
            return Err(bad());
        }
        let hex = std::str::from_utf8(&line[..64]).map_err(|_| bad())?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
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
                        _ => return Err(bad()),
                    }
                } else {
                    p.push(b);
                }
            }
            p
        } else {
            raw.to_vec()
        };
        out.push(Entry {
            sha256: hex.to_ascii_lowercase(),
            path: PathBuf::from(std::ffi::OsString::from_vec(path)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn lines_round_trip_with_gnu_escaping() {
        let hex = "ab".repeat(32);
        let names: [&[u8]; 4] = [b"a/plain.txt", b"odd\\name", b"new\nline", b"bin\xff\xfe"];
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
}
