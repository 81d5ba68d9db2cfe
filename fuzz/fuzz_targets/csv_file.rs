//! The CSV decoder on any file, header included (BOM, CRLF, quotes, compression magic, NUL
//! bytes, invalid UTF-8): an error or blocks, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    if let Ok(d) = streampulse_fuzz::decode_all(file, 256) {
        assert_eq!(d.records, d.rows + d.rejects.len() as u64);
    }
});
