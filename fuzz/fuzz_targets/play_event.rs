//! play-ingest's decoder of a Kafka message: a play or a rejection with a reason, never a
//! panic; a decoded play goes into a batch of the contract's schema.
#![no_main]

use libfuzzer_sys::fuzz_target;
use play_ingest::event::{PlaysBuilder, decode, diagnose};

fuzz_target!(|payload: &[u8]| {
    match decode(payload) {
        Ok(event) => {
            let mut b = PlaysBuilder::default();
            b.push(&event);
            let batch = b.finish().expect("a decoded play makes a valid batch");
            assert_eq!(batch.num_rows(), 1);
            assert_eq!(batch.schema(), streampulse_core::schema::PLAYS.clone());
        }
        Err(r) => assert!(!r.reason.is_empty()),
    }
    // The diagnosis of any payload names a reason too.
    assert!(!diagnose(payload).reason.is_empty());
});
