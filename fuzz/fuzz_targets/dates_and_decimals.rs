//! The hand-written parsers against references: dates and timestamps against chrono, decimals
//! against their own formatting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streampulse_core::conform::{format_scaled, parse_decimal};
use streampulse_core::csv::{parse_date, parse_timestamp_ms};
use streampulse_core::time::from_date32;

fuzz_target!(|data: &[u8]| {
    if let Some(days) = parse_date(data) {
        // Only a real YYYY-MM-DD parses, and it is that day.
        let text = std::str::from_utf8(data).expect("a parsed date is ASCII");
        let date = from_date32(days).expect("in range");
        assert_eq!(date.format("%Y-%m-%d").to_string(), text);
    } else if let Ok(text) = std::str::from_utf8(data)
        && text.len() == 10
        && let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && d.format("%Y-%m-%d").to_string() == text
    {
        panic!("{text:?} is a date chrono reads but we refuse");
    }
    if let Some(ms) = parse_timestamp_ms(data) {
        let text = std::str::from_utf8(data).expect("a parsed timestamp is ASCII");
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
            assert_eq!(t.timestamp_millis(), ms, "{text:?}");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for scale in [0, 2, 6, 10] {
            if let Ok(raw) = parse_decimal(text, scale) {
                // Exact: the value printed at the scale parses back to itself.
                let printed = format_scaled(raw, scale);
                assert_eq!(
                    parse_decimal(&printed, scale),
                    Ok(raw),
                    "{text:?} -> {printed}"
                );
            }
        }
    }
});
