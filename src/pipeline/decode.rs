//! The restore direction: store → parts (each verified) → age → gunzip → plaintext.

use std::io::{self, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

use super::parts::{PartCursor, PartsReader};
use crate::snapshot::SourceRecord;
use crate::store::Store;

/// Why a stream cannot be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "no identity in {identity_file} matches stream {stream}; it was encrypted to: {}. \
         Use the identity file of one of these recipients",
        recipients.join(", ")
    )]
    NoMatchingIdentity {
        identity_file: String,
        stream: String,
        recipients: Vec<String>,
    },
    #[error("reading the start of stream {stream}: {source}")]
    Header {
        stream: String,
        #[source]
        source: io::Error,
    },
    #[error("stream {stream} is not a valid age file: {why}")]
    NotAge { stream: String, why: String },
}

/// A failure of the stored stream itself (decryption, decompression, size): the data is bad,
/// not the local disk.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// Whether an error came from reading the stored stream (a damaged part, failed decryption or
/// decompression) rather than from writing locally.
pub fn is_stream_error(err: &(dyn std::error::Error + 'static)) -> bool {
    super::parts::find_in_chain::<super::parts::PartProblem>(err).is_some()
        || super::parts::find_in_chain::<StreamError>(err).is_some()
}

/// The plaintext of one stream. At its end it checks that every part was read and verified
/// and that the plaintext has the size the manifest records.
pub struct DecodedStream<'a> {
    inner: MultiGzDecoder<BufReader<age::stream::StreamReader<BufReader<PartsReader<'a>>>>>,
    cursor: PartCursor,
    stream: String,
    expected_plaintext: u64,
    read: u64,
}

impl DecodedStream<'_> {
    /// Where in the stored parts the reader is: for error messages.
    pub fn cursor(&self) -> &PartCursor {
        &self.cursor
    }
}

impl Read for DecodedStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never hand out more than the manifest's plaintext size (and one byte to notice):
        // a decompression bomb stops here, not after it has filled the disk.
        let room = self
            .expected_plaintext
            .saturating_sub(self.read)
            .saturating_add(1);
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let buf = &mut buf[..take];
        let n = self.inner.read(buf).map_err(|e| {
            if super::parts::find_part_problem(&e).is_some() {
                return e;
            }
            // Name the part where decryption or decompression gave up.
            let at = self.cursor.current().map_or_else(
                || "after the last part".to_string(),
                |p| format!("in part {p}"),
            );
            io::Error::new(
                e.kind(),
                StreamError(format!("stream {} {at}: {e}", self.stream)),
            )
        })?;
        self.read += n as u64;
        if self.read > self.expected_plaintext {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                StreamError(format!(
                    "stream {} decodes to more than the {} bytes its manifest records; \
                     stopped there (a damaged or hostile stream)",
                    self.stream, self.expected_plaintext
                )),
            ));
        }
        if n == 0 && !buf.is_empty() {
            if !self.cursor.done() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    StreamError(format!(
                        "stream {}: the data ended before its last part (part {} not fully read)",
                        self.stream,
                        self.cursor.current().unwrap_or_default()
                    )),
                ));
            }
            if self.read != self.expected_plaintext {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    StreamError(format!(
                        "stream {} decodes to {} bytes, the manifest says {}",
                        self.stream, self.read, self.expected_plaintext
                    )),
                ));
            }
        }
        Ok(n)
    }
}

/// Opens one stream of a snapshot for reading with `identities`.
///
/// # Errors
/// `NoMatchingIdentity` when none of the identities can decrypt it (the message lists the
/// snapshot's recipients), `Header`/`NotAge` when the first part is missing or damaged.
pub fn open_stream<'a>(
    store: &'a dyn Store,
    prefix: &str,
    record: &'a SourceRecord,
    recipients: &[String],
    identities: &[Box<dyn age::Identity + Send + Sync>],
    identity_file: &str,
) -> Result<DecodedStream<'a>, DecodeError> {
    let parts = PartsReader::new(store, prefix, &record.parts);
    let cursor = parts.cursor();
    let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(256 * 1024, parts))
        .map_err(|e| match e {
            age::DecryptError::Io(err) => DecodeError::Header {
                stream: record.stream.clone(),
                source: err,
            },
            other => DecodeError::NotAge {
                stream: record.stream.clone(),
                why: other.to_string(),
            },
        })?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => DecodeError::NoMatchingIdentity {
                identity_file: identity_file.to_string(),
                stream: record.stream.clone(),
                recipients: recipients.to_vec(),
            },
            other => DecodeError::NotAge {
                stream: record.stream.clone(),
                why: other.to_string(),
            },
        })?;
    Ok(DecodedStream {
        inner: MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, reader)),
        cursor,
        stream: record.stream.clone(),
        expected_plaintext: record.plaintext_bytes,
        read: 0,
    })
}
