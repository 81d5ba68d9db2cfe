//! The metadata API's song response as metadata-sync parses it: any body is an error or a
//! song, and a song survives its way to Parquet (the `songs` batch) and back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streampulse_core::songs::{SongRecord, from_batch, to_batch};

fuzz_target!(|body: &[u8]| {
    let Ok(song) = serde_json::from_slice::<SongRecord>(body) else {
        return;
    };
    // What the batch cannot hold (a date past Date32, a timestamp past i64 ms) is an error,
    // not a panic or a different song.
    if let Ok(batch) = to_batch(std::slice::from_ref(&song)) {
        let back = from_batch(&batch, "fuzz").expect("our own batch reads back");
        assert_eq!(back, vec![song.clone()]);
    }
    let json = serde_json::to_vec(&song).unwrap();
    assert_eq!(serde_json::from_slice::<SongRecord>(&json).unwrap(), song);
});
