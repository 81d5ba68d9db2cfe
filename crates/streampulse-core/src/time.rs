//! Calendar arithmetic in one place: Arrow's `Date32` (days since 1970-01-01) to and from
//! `NaiveDate`, and the civil-date formulas the hot decoders and the generator use where chrono's
//! parsers and formatters would cost more than the work around them.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Milliseconds in a UTC day (no leap seconds in Unix time).
pub const MS_PER_DAY: i64 = 86_400_000;

/// 1970-01-01 is day 719,163 of the common era (chrono's `num_days_from_ce`).
const EPOCH_DAYS_CE: i32 = 719_163;

/// The `Date32` value of a date.
pub fn date32(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - EPOCH_DAYS_CE
}

/// The date of a `Date32` value; None beyond chrono's range.
pub fn from_date32(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.checked_add(EPOCH_DAYS_CE)?)
}

/// The UTC day (a `Date32` value) of a timestamp in ms since the epoch.
pub fn day_of_ms(ms: i64) -> i32 {
    ms.div_euclid(MS_PER_DAY) as i32
}

/// The first millisecond of a UTC day.
pub fn day_start_ms(date: NaiveDate) -> i64 {
    date32(date) as i64 * MS_PER_DAY
}

/// Howard Hinnant's days-from-civil: days since 1970-01-01 of a proleptic Gregorian date. The
/// caller checks that the month and day exist.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a timestamp of the metadata API: RFC 3339 (four-digit year, two-digit fields, `T`, `Z`
/// or a numeric offset) with at most millisecond precision, as docs/data.md states. chrono's own
/// `FromStr` also takes one-digit years and seconds, and finer digits would not survive the
/// `songs` snapshot's `timestamp(ms)` nor the sync's cursor, so both are refused rather than
/// silently changed.
pub fn parse_api_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp ({e})"))?;
    // chrono skips digits past the ninth, so count them in the text itself.
    let fraction = text.split_once('.').map_or("", |(_, rest)| {
        &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())]
    });
    if fraction.len() > 3 && fraction[3..].bytes().any(|b| b != b'0') {
        return Err(format!(
            "{text:?} is finer than a millisecond (the API's timestamps carry at most 3 \
             fractional digits)"
        ));
    }
    Ok(parsed.with_timezone(&Utc))
}

/// `#[serde(deserialize_with = "...")]` for [`parse_api_timestamp`].
pub fn deserialize_api_timestamp<'de, D>(d: D) -> Result<DateTime<Utc>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    parse_api_timestamp(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formulas_agree_with_chrono_over_five_centuries() {
        let mut date = NaiveDate::from_ymd_opt(1800, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2300, 12, 31).unwrap();
        while date <= end {
            let days = date32(date);
            assert_eq!(days_from_civil(date.year(), date.month(), date.day()), days);
            let (y, m, d) = civil_from_days(days as i64);
            assert_eq!(
                (y, m, d),
                (date.year() as i64, date.month() as i64, date.day() as i64)
            );
            assert_eq!(from_date32(days), Some(date));
            date = date.succ_opt().unwrap();
        }
        assert_eq!(date32(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()), 0);
        assert_eq!(from_date32(i32::MAX), None);
    }

    #[test]
    fn api_timestamps_are_rfc_3339_with_at_most_milliseconds() {
        let ms = |t: &str| parse_api_timestamp(t).map(|d| d.timestamp_millis());
        assert_eq!(ms("2026-11-19T09:10:02.956Z"), Ok(1_795_079_402_956));
        assert_eq!(ms("2026-11-19T10:10:02.956+01:00"), Ok(1_795_079_402_956));
        assert_eq!(ms("2026-11-19t09:10:02z"), Ok(1_795_079_402_000));
        // Trailing zeros are the same instant.
        assert_eq!(ms("2026-11-19T09:10:02.956000000Z"), Ok(1_795_079_402_956));
        // What `make fuzz` found chrono's FromStr accepting, and sub-millisecond digits.
        for bad in [
            "2-11-19T09:10:2.9561Z",
            "2026-11-19T09:10:2Z",
            "2026-11-19T09:10:02.9561Z",
            "2026-11-19T09:10:02.9560000001Z",
            "2026-11-19 09:10:02",
            "2026-11-19",
        ] {
            assert!(parse_api_timestamp(bad).is_err(), "{bad} was accepted");
        }
    }
}
