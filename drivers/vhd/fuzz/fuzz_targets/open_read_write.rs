//! Opens arbitrary bytes as a VHD image (with a second, fuzz-provided image
//! as its parent), reads and writes random ranges, flushes, reopens and
//! checks. The body is shared with the corpus test in `tests/`.
#![no_main]

#[path = "../../tests/support/open_read_write.rs"]
mod open_read_write;

libfuzzer_sys::fuzz_target!(|data: &[u8]| open_read_write::run(data));
