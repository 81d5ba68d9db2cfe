//! One song of the catalog as a record: the JSON shape the metadata API serves, the row the
//! catalog database stores, and the conversions to and from the `songs` Arrow schema (docs/data.md).
//!
//! The partner API, our stand-in for it (`metadata-api`) and the sync (`metadata-sync`) all speak
//! this shape, so it lives here rather than in either pipeline.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{Date32Type, Int32Type, Int64Type, TimestampMillisecondType};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::SONGS;

/// A song's metadata (columns of `songs` in docs/data.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "sql", derive(sqlx::FromRow))]
pub struct SongRecord {
    pub song_id: i64,
    pub title: String,
    pub artist_id: i64,
    pub artist_name: String,
    pub album_id: i64,
    pub label_id: i64,
    pub isrc: String,
    pub duration_ms: i32,
    pub release_date: NaiveDate,
    pub genre: String,
    /// When the partner last changed the song; the sync's cursor. Millisecond precision: the
    /// API's text must be RFC 3339 with at most 3 fractional digits.
    #[serde(deserialize_with = "crate::time::deserialize_api_timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl SongRecord {
    /// A strong HTTP entity tag of the record: quoted FNV-1a of its canonical JSON. Stable
    /// across processes and releases (no random hasher), so a stored tag stays comparable.
    pub fn etag(&self) -> String {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in body {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("\"{h:016x}\"")
    }
}

/// One entry of the metadata API's change feed (`GET /songs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub song_id: i64,
    /// As a song's `updated_at`: RFC 3339, at most milliseconds.
    #[serde(deserialize_with = "crate::time::deserialize_api_timestamp")]
    pub updated_at: DateTime<Utc>,
}

/// A page of the change feed; `next_cursor` is null on the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePage {
    pub songs: Vec<Change>,
    pub next_cursor: Option<String>,
}

/// The records of one `songs` batch. `source` names the file in errors.
pub fn from_batch(batch: &RecordBatch, source: &str) -> Result<Vec<SongRecord>> {
    let col = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::Input {
            file: source.to_string(),
            line: 0,
            column: name.to_string(),
            reason: "missing column of the songs schema".into(),
        })
    };
    let bad = |column: &str, row: usize, reason: &str| Error::Input {
        file: source.to_string(),
        line: row as u64 + 1,
        column: column.to_string(),
        reason: reason.to_string(),
    };
    let i64s = |name: &str| -> Result<Int64Array> {
        Ok(col(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad(name, 0, "expected int64"))?
            .clone())
    };
    let strs = |name: &str| -> Result<StringArray> {
        Ok(col(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| bad(name, 0, "expected utf8"))?
            .clone())
    };
    let (song_id, artist_id, album_id, label_id) = (
        i64s("song_id")?,
        i64s("artist_id")?,
        i64s("album_id")?,
        i64s("label_id")?,
    );
    let (title, artist_name, isrc, genre) = (
        strs("title")?,
        strs("artist_name")?,
        strs("isrc")?,
        strs("genre")?,
    );
    let duration: Int32Array = col("duration_ms")?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| bad("duration_ms", 0, "expected int32"))?
        .clone();
    let release: Date32Array = col("release_date")?
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(|| bad("release_date", 0, "expected date32"))?
        .clone();
    let updated: TimestampMillisecondArray = col("updated_at")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| bad("updated_at", 0, "expected timestamp(ms)"))?
        .clone();
    let columns: [(&str, &dyn Array); 11] = [
        ("song_id", &song_id),
        ("title", &title),
        ("artist_id", &artist_id),
        ("artist_name", &artist_name),
        ("album_id", &album_id),
        ("label_id", &label_id),
        ("isrc", &isrc),
        ("duration_ms", &duration),
        ("release_date", &release),
        ("genre", &genre),
        ("updated_at", &updated),
    ];
    for (name, array) in columns {
        if let Some(row) = (0..array.len()).find(|&i| array.is_null(i)) {
            return Err(bad(name, row, "null in a non-null column"));
        }
    }
    (0..batch.num_rows())
        .map(|i| {
            Ok(SongRecord {
                song_id: song_id.value(i),
                title: title.value(i).to_string(),
                artist_id: artist_id.value(i),
                artist_name: artist_name.value(i).to_string(),
                album_id: album_id.value(i),
                label_id: label_id.value(i),
                isrc: isrc.value(i).to_string(),
                duration_ms: duration.value(i),
                release_date: crate::time::from_date32(release.value(i))
                    .ok_or_else(|| bad("release_date", i, "date out of range"))?,
                genre: genre.value(i).to_string(),
                updated_at: DateTime::from_timestamp_millis(updated.value(i))
                    .ok_or_else(|| bad("updated_at", i, "timestamp out of range"))?,
            })
        })
        .collect()
}

/// A `songs` batch (the contract schema) of `songs`, in the order given.
pub fn to_batch(songs: &[SongRecord]) -> Result<RecordBatch> {
    let i64s = |f: fn(&SongRecord) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(songs.iter().map(f)))
    };
    let strs = |f: fn(&SongRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(songs.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        i64s(|s| s.song_id),
        strs(|s| &s.title),
        i64s(|s| s.artist_id),
        strs(|s| &s.artist_name),
        i64s(|s| s.album_id),
        i64s(|s| s.label_id),
        strs(|s| &s.isrc),
        Arc::new(Int32Array::from_iter_values(
            songs.iter().map(|s| s.duration_ms),
        )),
        Arc::new(Date32Array::from_iter_values(
            songs.iter().map(|s| crate::time::date32(s.release_date)),
        )),
        strs(|s| &s.genre),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(
                songs.iter().map(|s| s.updated_at.timestamp_millis()),
            )
            .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(SONGS.clone(), columns)?)
}

/// Every song of a `songs` Parquet file, or of every `*.parquet` file of a directory (a
/// partition), in file order.
pub fn read_parquet(path: &Path) -> Result<Vec<SongRecord>> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(Error::InputMissing(format!(
            "{}: no Parquet files",
            path.display()
        )));
    }
    let mut songs = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            File::open(&file).map_err(|e| Error::io(&file, e))?,
        )?
        .build()?;
        for batch in reader {
            songs.extend(from_batch(&batch?, &name)?);
        }
    }
    Ok(songs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn song(id: i64) -> SongRecord {
        SongRecord {
            song_id: id,
            title: "Neon river".into(),
            artist_id: 7,
            artist_name: "The Echo".into(),
            album_id: 700,
            label_id: 2,
            isrc: "QZ0012600001".into(),
            duration_ms: 201_000,
            release_date: NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
            genre: "pop".into(),
            updated_at: DateTime::from_timestamp_millis(1_764_000_000_123).unwrap(),
        }
    }

    #[test]
    fn records_round_trip_through_arrow_and_json() {
        let songs = vec![song(1), song(2)];
        let batch = to_batch(&songs).unwrap();
        assert_eq!(from_batch(&batch, "mem").unwrap(), songs);
        let json = serde_json::to_string(&songs[0]).unwrap();
        assert!(json.contains("\"release_date\":\"2024-02-29\""), "{json}");
        assert!(
            json.contains("\"updated_at\":\"2025-11-24T16:00:00.123Z\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<SongRecord>(&json).unwrap(), songs[0]);
    }

    #[test]
    fn a_song_or_change_finer_than_milliseconds_is_refused_not_truncated() {
        // The snapshot and the cursor hold milliseconds: `.9561` would come back as `.956`.
        let json = serde_json::to_string(&song(1))
            .unwrap()
            .replace("16:00:00.123Z", "16:00:00.1234Z");
        let err = serde_json::from_str::<SongRecord>(&json).unwrap_err();
        assert!(
            err.to_string().contains("finer than a millisecond"),
            "{err}"
        );
        let page =
            r#"{"songs":[{"song_id":1,"updated_at":"2-11-19T09:10:2Z"}],"next_cursor":null}"#;
        let err = serde_json::from_str::<ChangePage>(page).unwrap_err();
        assert!(err.to_string().contains("not an RFC 3339"), "{err}");
        let page = r#"{"songs":[{"song_id":1,"updated_at":"2026-11-19T09:10:02.956Z"}],"next_cursor":"x"}"#;
        assert_eq!(
            serde_json::from_str::<ChangePage>(page).unwrap().songs[0].song_id,
            1
        );
    }

    #[test]
    fn etags_change_with_any_field_and_only_then() {
        let a = song(1);
        assert_eq!(a.etag(), song(1).etag());
        assert!(a.etag().starts_with('"') && a.etag().len() == 18);
        let mut b = song(1);
        b.genre = "rock".into();
        assert_ne!(a.etag(), b.etag());
    }
}
