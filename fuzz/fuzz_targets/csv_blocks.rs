//! The CSV decoder on any body under the export's header: never a panic, every record either
//! decoded or rejected, and the same rows and rejects whatever the block size (a record split
//! across two blocks must decode as if it were not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streampulse_fuzz::{HEADER, decode_all};

fuzz_target!(|body: &[u8]| {
    let mut file = HEADER.as_bytes().to_vec();
    file.extend_from_slice(body);
    let whole = decode_all(&file, 1 << 20);
    let small = decode_all(&file, 64);
    match (whole, small) {
        (Ok(a), Ok(b)) => {
            assert_eq!(
                a.records,
                a.rows + a.rejects.len() as u64,
                "records = rows + rejects"
            );
            assert_eq!(a, b, "the block size changed the result");
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one block size failed, the other did not: {a:?} / {b:?}"),
    }
});
