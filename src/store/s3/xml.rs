//! The little of S3's XML coffer reads (error codes, listings, upload ids, ETags) and writes
//! (the part list that completes a multipart upload): flat elements, entities unescaped.

/// The text of the first `<tag>…</tag>` in `text`.
pub fn first(text: &str, tag: &str) -> Option<String> {
    blocks(text, tag).next().map(unescape)
}

/// The inner text of every `<tag>…</tag>` in `text`, in order (not nested in itself).
pub fn blocks<'a>(text: &'a str, tag: &str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let inner = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(inner)
    })
}

/// XML's five entities and numeric references, as S3 writes them.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text escaped for an XML element.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_errors_read_back() {
        let list = "<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>true</IsTruncated>\
                    <Contents><Key>a&amp;b/c</Key><Size>3</Size></Contents>\
                    <Contents><Key>d&#x20;e</Key><Size>40</Size></Contents>\
                    <NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>";
        let keys: Vec<String> = blocks(list, "Contents")
            .map(|c| first(c, "Key").unwrap())
            .collect();
        assert_eq!(keys, ["a&b/c", "d e"]);
        assert_eq!(first(list, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(
            first(list, "NextContinuationToken").as_deref(),
            Some("tok/+=")
        );
        assert_eq!(
            first("<Error><Code>SlowDown</Code></Error>", "Code").as_deref(),
            Some("SlowDown")
        );
        assert_eq!(first("<x/>", "Code"), None);
        assert_eq!(unescape("a &unknown; b &amp"), "a &unknown; b &amp");
        assert_eq!(escape("\"<a&b>\""), "&quot;&lt;a&amp;b&gt;&quot;");
    }
}
