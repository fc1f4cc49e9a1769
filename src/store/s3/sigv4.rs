//! AWS Signature Version 4 for S3 requests, on our own HTTP client: the canonical request,
//! the string to sign, the derived key, the `Authorization` header. The payload hash goes in
//! `x-amz-content-sha256` as a plain hex digest (never `aws-chunked` streaming signatures,
//! which many S3-compatible servers refuse).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The hash S3 takes for a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key pair. The secret never reaches `Debug` or a log.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: secrecy::SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

/// What a request is signed over.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, each segment already URI-encoded (`uri_encode(segment, false)`).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Headers besides `x-amz-date` and `x-amz-content-sha256` (which `sign` adds), `host`
    /// included; names in any case.
    pub headers: &'a [(String, String)],
    /// Hex sha256 of the body (`EMPTY_SHA256` for none).
    pub payload_sha256: &'a str,
}

/// Percent-encodes as SigV4 wants: unreserved characters (`A-Z a-z 0-9 - _ . ~`) kept, `/`
/// kept when `keep_slash`, every other byte `%XX` in upper case.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query string as sent (and as signed): sorted, each key and value encoded.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The headers to add to `req` to sign it at `now`: `x-amz-date`, `x-amz-content-sha256` and
/// `authorization`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    use secrecy::ExposeSecret;
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), collapse(v)))
        .collect();
    headers.push((
        "x-amz-content-sha256".into(),
        req.payload_sha256.to_string(),
    ));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    headers.sort();
    let signed = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        req.payload_sha256
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let secret = format!("AWS4{}", creds.secret_access_key.expose_secret());
    let k_date = hmac(secret.as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"s3");
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, to_sign.as_bytes()));
    vec![
        ("x-amz-date".into(), amz_date),
        (
            "x-amz-content-sha256".into(),
            req.payload_sha256.to_string(),
        ),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, \
                 Signature={signature}",
                creds.access_key_id
            ),
        ),
    ]
}

/// A header value as SigV4 canonicalizes it: trimmed, inner runs of spaces made one.
fn collapse(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of AWS's "Signature Calculations for the Authorization Header" (S3 API
    /// reference): the documented signatures, reproduced.
    fn example(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        payload: &str,
    ) -> String {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        };
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut headers = vec![("Host".to_string(), "examplebucket.s3.amazonaws.com".into())];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let out = sign(
            &Request {
                method,
                path,
                query: &query,
                headers: &headers,
                payload_sha256: payload,
            },
            &creds,
            "us-east-1",
            now,
        );
        let auth = &out.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
            ),
            "{auth}"
        );
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    #[test]
    fn the_documented_get_object_example_signs_as_aws_says() {
        assert_eq!(
            example(
                "GET",
                "/test.txt",
                &[],
                &[("Range", "bytes=0-9")],
                EMPTY_SHA256
            ),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn the_documented_put_object_example_signs_as_aws_says() {
        let body = Sha256::digest(b"Welcome to Amazon S3.");
        assert_eq!(
            example(
                "PUT",
                &format!("/{}", uri_encode("test$file.text", false)),
                &[],
                &[
                    ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ],
                &hex::encode(body),
            ),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn the_documented_list_and_subresource_examples_sign_as_aws_says() {
        assert_eq!(
            example("GET", "/", &[("lifecycle", "")], &[], EMPTY_SHA256),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
        assert_eq!(
            example(
                "GET",
                "/",
                &[("max-keys", "2"), ("prefix", "J")],
                &[],
                EMPTY_SHA256
            ),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn keys_and_queries_are_encoded_as_sigv4_wants() {
        assert_eq!(
            uri_encode("snapshots/2026 x/a+b~c.age", true),
            "snapshots/2026%20x/a%2Bb~c.age"
        );
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        let q = vec![
            ("prefix".to_string(), "snapshots/".to_string()),
            ("list-type".to_string(), "2".to_string()),
        ];
        assert_eq!(canonical_query(&q), "list-type=2&prefix=snapshots%2F");
    }

    #[test]
    fn the_secret_is_never_in_debug() {
        let c = Credentials {
            access_key_id: "AK".into(),
            secret_access_key: "very-secret".into(),
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
