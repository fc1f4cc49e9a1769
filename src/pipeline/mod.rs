//! The byte pipeline: compress → encrypt → split → hash on the way to the store, and the
//! reverse on the way back. Plain `std::io` on plain threads; see `encode` and `decode`.

mod compress;
mod decode;
mod encode;
mod io;
mod parts;
mod readahead;

pub use compress::{BLOCK_SIZE, BlockCompressor, CompressOptions};
pub use decode::{DecodeError, DecodedStream, StreamError, is_stream_error, open_stream};
pub use encode::{BlockWriter, EncodeError, EncodeOptions, EncodedStream, encode_stream};
pub use io::{CountingRead, Timed, busy_seconds};
pub use parts::{
    PartCursor, PartProblem, PartSplitter, PartsReader, SplitOutcome, find_in_chain,
    find_part_problem,
};
pub use readahead::{ReadAhead, read_ahead};
