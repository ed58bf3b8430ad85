//! Gzip intake as `serve` does it: inflate (every member, like the
//! decompression layer) with the body cap applied to the inflated bytes,
//! then read the batch. Neither step may panic, and the cap must hold
//! whatever the compression ratio.
#![no_main]

use std::io::Read as _;

use currents_model::Batch;
use libfuzzer_sys::fuzz_target;

/// A small cap, so that bombs hit it quickly.
const MAX_INFLATED_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut inflated = Vec::new();
    let decoder = flate2::read::MultiGzDecoder::new(data);
    if decoder
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut inflated)
        .is_err()
    {
        return;
    }
    assert!(inflated.len() as u64 <= MAX_INFLATED_BYTES + 1);
    if inflated.len() as u64 > MAX_INFLATED_BYTES {
        return;
    }
    if let Ok(text) = std::str::from_utf8(&inflated) {
        let _ = Batch::parse_events(text);
    }
});
