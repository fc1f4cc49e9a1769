//! Gzip for the backup direction, spread over all cores.
//!
//! The plaintext is cut into blocks of `BLOCK_SIZE` bytes; each block becomes one or more complete
//! gzip members, compressed independently on a worker thread, and the members are written out in
//! order. Concatenated gzip members are one valid gzip stream (RFC 1952 §2.2): stock `gunzip`,
//! `tar -xz` and our `MultiGzDecoder` read it whole.
//!
//! Incompressible input (JPEGs, PDFs, zip-based office files — most of a site's attachments) is
//! not worth deflate's time: a 64 KiB slice whose order-0 entropy is above
//! `INCOMPRESSIBLE_BITS_PER_BYTE` is written as deflate *stored* blocks, which costs a copy and a
//! CRC instead of a full LZ77 search.

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes of plaintext per independently compressed block.
pub const BLOCK_SIZE: usize = 1 << 20;

/// Granularity of the incompressible-data test.
const SLICE: usize = 64 * 1024;

/// Above this many bits of order-0 entropy per byte, deflate gains at most a few percent.
const INCOMPRESSIBLE_BITS_PER_BYTE: f64 = 7.9;

/// Largest payload of one deflate stored block.
const STORED_MAX: usize = 65_535;

/// How the backup compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressOptions {
    /// gzip level, 0–9.
    pub level: u32,
    /// Worker threads compressing blocks in parallel.
    pub threads: usize,
    /// Store slices that look incompressible instead of deflating them.
    pub skip_incompressible: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            level: 6,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            skip_incompressible: true,
        }
    }
}

/// Compresses blocks into gzip members, reusing its deflate state between blocks.
pub struct BlockCompressor {
    opts: CompressOptions,
    deflate: Compress,
}

impl BlockCompressor {
    pub fn new(opts: CompressOptions) -> Self {
        BlockCompressor {
            opts,
            deflate: Compress::new(Compression::new(opts.level), false),
        }
    }

    /// Appends `block` to `out` as one or more complete gzip members.
    pub fn compress(&mut self, block: &[u8], out: &mut Vec<u8>) {
        if self.opts.level == 0 || block.is_empty() {
            return write_stored_member(block, out);
        }
        if !self.opts.skip_incompressible {
            return self.write_deflated_member(block, out);
        }
        // Group consecutive slices of the same kind into one member each.
        let mut start = 0;
        let mut run_stored = None;
        for (i, slice) in block.chunks(SLICE).enumerate() {
            let stored = is_incompressible(slice);
            match run_stored {
                Some(kind) if kind != stored => {
                    let end = i * SLICE;
                    self.write_member(&block[start..end], kind, out);
                    start = end;
                }
                _ => {}
            }
            run_stored = Some(stored);
        }
        if let Some(kind) = run_stored {
            self.write_member(&block[start..], kind, out);
        }
    }

    fn write_member(&mut self, data: &[u8], stored: bool, out: &mut Vec<u8>) {
        if stored {
            write_stored_member(data, out);
        } else {
            self.write_deflated_member(data, out);
        }
    }

    fn write_deflated_member(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&GZIP_HEADER);
        self.deflate.reset();
        // Worst case of deflate is a little over the input; reserve it so one call suffices.
        out.reserve(data.len() + data.len() / 64 + 64);
        let mut input = data;
        loop {
            let before_in = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, out, FlushCompress::Finish)
                .expect("deflate of an in-memory buffer cannot fail");
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            if status == Status::StreamEnd {
                break;
            }
            out.reserve(64 * 1024);
        }
        write_trailer(data, out);
    }
}

/// gzip member header: magic, CM=deflate, no flags, MTIME=0, XFL=0, OS=255 (unknown).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

fn write_trailer(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

/// A gzip member whose deflate data is stored blocks only (RFC 1951 §3.2.4).
fn write_stored_member(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&GZIP_HEADER);
    out.reserve(data.len() + 5 * (data.len() / STORED_MAX + 1) + 8);
    let mut chunks = data.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() {
        // An empty member still needs one final (empty) block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last)); // BFINAL, BTYPE=00
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    write_trailer(data, out);
}

/// Whether a slice's byte distribution is so flat that deflate cannot gain anything worth its
/// time (compressed or encrypted data). Small slices are always compressed.
fn is_incompressible(slice: &[u8]) -> bool {
    if slice.len() < 4096 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in slice {
        counts[usize::from(b)] += 1;
    }
    let n = slice.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > INCOMPRESSIBLE_BITS_PER_BYTE
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use rand::{Rng, SeedableRng};
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    fn mixed_block() -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut block = Vec::new();
        for i in 0..(BLOCK_SIZE / SLICE) {
            if i % 3 == 0 {
                let mut noise = vec![0u8; SLICE];
                rng.fill(&mut noise[..]);
                block.extend_from_slice(&noise);
            } else {
                while block.len() < (i + 1) * SLICE {
                    block.extend_from_slice(format!("row {i},{},text\n", block.len()).as_bytes());
                }
                block.truncate((i + 1) * SLICE);
            }
        }
        block
    }

    #[test]
    fn members_round_trip_at_every_level() {
        let block = mixed_block();
        for level in [0, 1, 6, 9] {
            for skip in [false, true] {
                let mut c = BlockCompressor::new(CompressOptions {
                    level,
                    threads: 1,
                    skip_incompressible: skip,
                });
                let mut out = Vec::new();
                c.compress(&block, &mut out);
                c.compress(b"tail", &mut out);
                c.compress(b"", &mut out);
                let mut empty = Vec::new();
                c.compress(b"", &mut empty);
                assert_eq!(gunzip(&empty), b"", "an empty block is a valid member");
                let mut expected = block.clone();
                expected.extend_from_slice(b"tail");
                assert_eq!(gunzip(&out), expected, "level {level} skip {skip}");
            }
        }
    }

    #[test]
    fn noise_is_stored_and_text_is_deflated() {
        let block = mixed_block();
        let mut c = BlockCompressor::new(CompressOptions::default());
        let mut out = Vec::new();
        c.compress(&block, &mut out);
        let noise = (0..BLOCK_SIZE / SLICE).filter(|i| i % 3 == 0).count() * SLICE;
        let text = block.len() - noise;
        // Noise slices cost their size plus framing; the text shrinks several-fold.
        assert!(
            out.len() > noise && out.len() < noise + text / 4,
            "{}",
            out.len()
        );
        assert!(is_incompressible(&block[..SLICE]));
        assert!(!is_incompressible(&block[SLICE..2 * SLICE]));
    }
}
