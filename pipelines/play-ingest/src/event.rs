//! One message of the `plays` topic: a JSON object with the columns of the plays dataset
//! (docs/data.md). `played_at` is the export's text form (`2026-11-26T13:45:12.345Z`) or epoch
//! milliseconds. Unknown fields are ignored, so producers can add fields before we read them.
//!
//! The typed parse is the fast path; when it fails, [`diagnose`] walks the object again to name
//! the column at fault for the rejects file.

use std::borrow::Cow;

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use streampulse_core::csv::parse_timestamp_ms;
use streampulse_core::schema::{PLAYS, PLAYS_COLUMNS};

/// `played_at` as sent: text or epoch milliseconds. Deserialized by hand rather than as an
/// untagged enum, which would buffer every value first (a fifth of the decoding time).
#[derive(Debug)]
enum Timestamp<'a> {
    Millis(i64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Timestamp<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Timestamp<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a timestamp string or epoch milliseconds")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Timestamp::Millis(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(Timestamp::Millis)
                    .map_err(|_| E::custom("epoch milliseconds out of range"))
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Timestamp::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Timestamp::Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
struct RawEvent<'a> {
    play_id: i64,
    user_id: i64,
    #[serde(borrow)]
    session_id: Cow<'a, str>,
    song_id: i64,
    artist_id: i64,
    album_id: i64,
    #[serde(borrow)]
    played_at: Timestamp<'a>,
    ms_played: i32,
    track_ms: i32,
    #[serde(borrow)]
    platform: Cow<'a, str>,
    #[serde(borrow)]
    country: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    shuffle: bool,
    offline: bool,
    #[serde(borrow)]
    client_version: Cow<'a, str>,
}

/// A decoded play event, borrowing its strings from the message.
#[derive(Debug)]
pub struct PlayEvent<'a> {
    raw: RawEvent<'a>,
    /// `played_at` in milliseconds since the epoch (UTC).
    pub played_at_ms: i64,
}

impl PlayEvent<'_> {
    pub fn play_id(&self) -> i64 {
        self.raw.play_id
    }

    /// The UTC day of the play, as days since the epoch: the `date=` partition it belongs to.
    pub fn day(&self) -> i32 {
        streampulse_core::time::day_of_ms(self.played_at_ms)
    }
}

/// Why a message was rejected: the column at fault (when one is) and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub column: Option<String>,
    pub reason: String,
}

/// Decodes one message payload.
pub fn decode(payload: &[u8]) -> Result<PlayEvent<'_>, Rejection> {
    let raw: RawEvent<'_> = serde_json::from_slice(payload).map_err(|_| diagnose(payload))?;
    let played_at_ms = match &raw.played_at {
        Timestamp::Millis(ms) => *ms,
        Timestamp::Text(t) => parse_timestamp_ms(t.as_bytes()).ok_or_else(|| Rejection {
            column: Some("played_at".into()),
            reason: format!("not a timestamp: {t:?}"),
        })?,
    };
    Ok(PlayEvent { raw, played_at_ms })
}

/// Names the first column of a payload that does not decode, in the order of the data contract.
pub fn diagnose(payload: &[u8]) -> Rejection {
    let value: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return Rejection {
                column: None,
                reason: format!("not JSON: {e}"),
            };
        }
    };
    let Some(obj) = value.as_object() else {
        return Rejection {
            column: None,
            reason: "not a JSON object".into(),
        };
    };
    for &col in PLAYS_COLUMNS.iter() {
        let reject = |reason: String| Rejection {
            column: Some(col.to_string()),
            reason,
        };
        let Some(v) = obj.get(col) else {
            return reject("missing".into());
        };
        let ok = match col {
            "play_id" | "user_id" | "song_id" | "artist_id" | "album_id" => v.is_i64(),
            "ms_played" | "track_ms" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "shuffle" | "offline" => v.is_boolean(),
            "played_at" => {
                v.is_i64()
                    || v.as_str()
                        .is_some_and(|t| parse_timestamp_ms(t.as_bytes()).is_some())
            }
            _ => v.is_string(),
        };
        if !ok {
            let want = match col {
                "ms_played" | "track_ms" => "a 32-bit integer",
                "shuffle" | "offline" => "true or false",
                "played_at" => "a timestamp (2026-11-26T13:45:12.345Z or epoch milliseconds)",
                "session_id" | "platform" | "country" | "source" | "client_version" => "a string",
                _ => "a 64-bit integer",
            };
            return reject(format!("expected {want}, got {v}"));
        }
    }
    Rejection {
        column: None,
        reason: "does not decode as a play event".into(),
    }
}

/// Rows of the plays schema being gathered for one Parquet file.
pub struct PlaysBuilder {
    play_id: Int64Builder,
    user_id: Int64Builder,
    session_id: StringBuilder,
    song_id: Int64Builder,
    artist_id: Int64Builder,
    album_id: Int64Builder,
    played_at: TimestampMillisecondBuilder,
    ms_played: Int32Builder,
    track_ms: Int32Builder,
    platform: StringBuilder,
    country: StringBuilder,
    source: StringBuilder,
    shuffle: BooleanBuilder,
    offline: BooleanBuilder,
    client_version: StringBuilder,
    rows: usize,
}

impl Default for PlaysBuilder {
    fn default() -> Self {
        PlaysBuilder {
            play_id: Int64Builder::new(),
            user_id: Int64Builder::new(),
            session_id: StringBuilder::new(),
            song_id: Int64Builder::new(),
            artist_id: Int64Builder::new(),
            album_id: Int64Builder::new(),
            played_at: TimestampMillisecondBuilder::new(),
            ms_played: Int32Builder::new(),
            track_ms: Int32Builder::new(),
            platform: StringBuilder::new(),
            country: StringBuilder::new(),
            source: StringBuilder::new(),
            shuffle: BooleanBuilder::new(),
            offline: BooleanBuilder::new(),
            client_version: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl PlaysBuilder {
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn push(&mut self, e: &PlayEvent<'_>) {
        let r = &e.raw;
        self.play_id.append_value(r.play_id);
        self.user_id.append_value(r.user_id);
        self.session_id.append_value(&r.session_id);
        self.song_id.append_value(r.song_id);
        self.artist_id.append_value(r.artist_id);
        self.album_id.append_value(r.album_id);
        self.played_at.append_value(e.played_at_ms);
        self.ms_played.append_value(r.ms_played);
        self.track_ms.append_value(r.track_ms);
        self.platform.append_value(&r.platform);
        self.country.append_value(&r.country);
        self.source.append_value(&r.source);
        self.shuffle.append_value(r.shuffle);
        self.offline.append_value(r.offline);
        self.client_version.append_value(&r.client_version);
        self.rows += 1;
    }

    /// The gathered rows as a batch of the plays schema; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(self.play_id.finish()),
            std::sync::Arc::new(self.user_id.finish()),
            std::sync::Arc::new(self.session_id.finish()),
            std::sync::Arc::new(self.song_id.finish()),
            std::sync::Arc::new(self.artist_id.finish()),
            std::sync::Arc::new(self.album_id.finish()),
            std::sync::Arc::new(self.played_at.finish().with_timezone("UTC")),
            std::sync::Arc::new(self.ms_played.finish()),
            std::sync::Arc::new(self.track_ms.finish()),
            std::sync::Arc::new(self.platform.finish()),
            std::sync::Arc::new(self.country.finish()),
            std::sync::Arc::new(self.source.finish()),
            std::sync::Arc::new(self.shuffle.finish()),
            std::sync::Arc::new(self.offline.finish()),
            std::sync::Arc::new(self.client_version.finish()),
        ];
        RecordBatch::try_new(PLAYS.clone(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"play_id":7,"user_id":42,"session_id":"00ff","song_id":3,"artist_id":2,"album_id":1,"played_at":"2026-11-26T23:59:59.999Z","ms_played":31000,"track_ms":200000,"platform":"ios","country":"GB","source":"playlist","shuffle":true,"offline":false,"client_version":"8.9.1","extra":"ignored"}"#;

    #[test]
    fn a_good_event_decodes_into_its_day() {
        let e = decode(GOOD.as_bytes()).unwrap();
        assert_eq!(e.play_id(), 7);
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(e.day(), streampulse_core::time::date32(day));
        let mut b = PlaysBuilder::default();
        b.push(&e);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), PLAYS.clone());
        assert!(b.is_empty());
    }

    #[test]
    fn epoch_milliseconds_are_accepted() {
        let ev = GOOD.replace(r#""2026-11-26T23:59:59.999Z""#, "1795737599999");
        assert_eq!(
            decode(ev.as_bytes()).unwrap().played_at_ms,
            1_795_737_599_999
        );
    }

    #[test]
    fn bad_events_name_the_column_at_fault() {
        let cases = [
            (
                GOOD.replace(r#""play_id":7"#, r#""play_id":"p-7""#),
                Some("play_id"),
                "64-bit",
            ),
            (
                GOOD.replace(r#""ms_played":31000,"#, ""),
                Some("ms_played"),
                "missing",
            ),
            (
                GOOD.replace("31000", "99999999999"),
                Some("ms_played"),
                "32-bit",
            ),
            (
                GOOD.replace("2026-11-26T23", "yesterday 23"),
                Some("played_at"),
                "timestamp",
            ),
            (
                GOOD.replace("true", "\"yes\""),
                Some("shuffle"),
                "true or false",
            ),
            (GOOD[..40].to_string(), None, "not JSON"),
            ("[1,2]".to_string(), None, "not a JSON object"),
        ];
        for (payload, column, reason) in cases {
            let r = decode(payload.as_bytes()).unwrap_err();
            assert_eq!(r.column.as_deref(), column, "{payload}");
            assert!(r.reason.contains(reason), "{payload}: {}", r.reason);
        }
    }
}
