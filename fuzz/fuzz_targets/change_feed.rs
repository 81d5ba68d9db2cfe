//! What metadata-sync reads from the partner besides songs: a page of the change feed (any body
//! is an error or a page, and the page's cursor goes back to the partner unchanged as a query
//! parameter) and the `Retry-After` header of a 429 (any text is a wait or none, never a panic).
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use metadata_sync::client::parse_retry_after;
use streampulse_core::songs::{Change, ChangePage};

fuzz_target!(|body: &[u8]| {
    if let Ok(page) = serde_json::from_slice::<ChangePage>(body) {
        if let Some(cursor) = &page.next_cursor {
            let mut url = url::Url::parse("http://127.0.0.1/songs").unwrap();
            url.query_pairs_mut().append_pair("cursor", cursor);
            let back = url
                .query_pairs()
                .find(|(k, _)| k == "cursor")
                .map(|(_, v)| v.into_owned());
            assert_eq!(back.as_deref(), Some(cursor.as_str()));
        }
        for change in &page.songs {
            let json = serde_json::to_vec(change).unwrap();
            assert_eq!(&serde_json::from_slice::<Change>(&json).unwrap(), change);
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_115_200);
        if let Some(wait) = parse_retry_after(text, now) {
            // A date in the past is no wait; a number is that many seconds.
            if let Ok(secs) = text.trim().parse::<u64>() {
                assert_eq!(wait, Duration::from_secs(secs));
            }
        }
    }
});
