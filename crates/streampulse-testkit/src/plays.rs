//! The plays generator: one logical day of playbacks with the shapes that matter to the
//! pipelines — Zipf song popularity, heavy-tailed user activity, a diurnal curve, skips around the
//! 30-second rule, travelling users (one user, two countries, one day), late arrivals from the
//! day before, and, on request, malformed CSV rows of several kinds.
//!
//! Generation is chunked: chunk `c` draws from its own RNG seeded by `(seed, date, c)`, so the
//! output is the same bytes whatever the thread count, and memory holds only the chunks in flight.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use streampulse_core::schema::PLAYS;

use crate::alias::AliasTable;
use crate::catalog::Catalog;
use crate::dims::{HOUR_WEIGHTS, MARKETS, PLATFORMS, SOURCES};

/// Plays per generation chunk (one Arrow batch / one CSV write).
pub const CHUNK_PLAYS: usize = 64 * 1024;

/// Everything that shapes a day of plays.
#[derive(Debug, Clone)]
pub struct PlaysSpec {
    pub date: NaiveDate,
    pub seed: u64,
    pub plays: u64,
    pub users: u64,
    /// Share of rows written malformed into the CSV export (they never reach Parquet).
    pub bad_rows: f64,
    /// Share of plays that happened the day before and arrived late (offline syncs).
    pub late_share: f64,
}

/// Samplers built once per day, shared by all chunks.
pub struct PlaysModel {
    spec: PlaysSpec,
    catalog: Arc<Catalog>,
    users: AliasTable,
    /// Users sampled by activity get a random but fixed id: permute rank -> user.
    user_mult: u64,
    hours: AliasTable,
    markets: AliasTable,
    platforms: AliasTable,
    sources: AliasTable,
    day_start_ms: i64,
    first_play_id: i64,
}

/// One generated chunk, column by column.
pub struct PlaysChunk {
    pub play_id: Vec<i64>,
    pub user_id: Vec<i64>,
    pub session: Vec<u64>,
    pub song_id: Vec<i64>,
    pub artist_id: Vec<i64>,
    pub album_id: Vec<i64>,
    pub played_at: Vec<i64>,
    pub ms_played: Vec<i32>,
    pub track_ms: Vec<i32>,
    pub platform: Vec<u8>,
    pub country: Vec<u8>,
    pub source: Vec<u8>,
    pub shuffle: Vec<bool>,
    pub offline: Vec<bool>,
    pub client_version: Vec<u16>,
    /// Index of the bad-row kind for rows to be written malformed (CSV only).
    pub bad: Vec<Option<u8>>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64: decorrelates chunk seeds and hashes ids.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl PlaysModel {
    pub fn new(spec: PlaysSpec, catalog: Arc<Catalog>) -> Self {
        let users = spec.users.max(1) as usize;
        let day_start_ms = spec
            .date
            .and_hms_opt(0, 0, 0)
            .map_or(0, |d| d.and_utc().timestamp_millis());
        // An odd multiplier coprime with the user count permutes activity ranks over ids.
        let mut user_mult = (mix(spec.seed ^ 0x5EED) | 1) % users as u64;
        while gcd(user_mult, users as u64) != 1 {
            user_mult += 1;
        }
        let first_play_id = (day_start_ms / 86_400_000) * 10_000_000_000;
        PlaysModel {
            users: AliasTable::zipf(users, 0.75),
            user_mult: user_mult.max(1),
            hours: AliasTable::new(&HOUR_WEIGHTS),
            markets: AliasTable::new(&MARKETS.iter().map(|m| m.2).collect::<Vec<_>>()),
            platforms: AliasTable::new(&PLATFORMS.iter().map(|p| p.1).collect::<Vec<_>>()),
            sources: AliasTable::new(&SOURCES.iter().map(|p| p.1).collect::<Vec<_>>()),
            day_start_ms,
            first_play_id,
            spec,
            catalog,
        }
    }

    pub fn chunks(&self) -> usize {
        (self.spec.plays as usize).div_ceil(CHUNK_PLAYS)
    }

    /// The home market of a user: fixed per user, weighted by market size.
    pub fn home_market(&self, user_id: i64) -> usize {
        let mut rng = Pcg64Mcg::seed_from_u64(mix(user_id as u64 ^ self.spec.seed));
        self.markets.sample(&mut rng)
    }

    pub fn chunk(&self, c: usize) -> PlaysChunk {
        let start = c * CHUNK_PLAYS;
        let n = (self.spec.plays as usize - start).min(CHUNK_PLAYS);
        let date_key = self.day_start_ms as u64;
        let mut rng =
            Pcg64Mcg::seed_from_u64(mix(self.spec.seed ^ mix(date_key) ^ mix(c as u64 + 1)));
        let users = self.spec.users.max(1);
        let mut ch = PlaysChunk {
            play_id: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            session: Vec::with_capacity(n),
            song_id: Vec::with_capacity(n),
            artist_id: Vec::with_capacity(n),
            album_id: Vec::with_capacity(n),
            played_at: Vec::with_capacity(n),
            ms_played: Vec::with_capacity(n),
            track_ms: Vec::with_capacity(n),
            platform: Vec::with_capacity(n),
            country: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            shuffle: Vec::with_capacity(n),
            offline: Vec::with_capacity(n),
            client_version: Vec::with_capacity(n),
            bad: Vec::with_capacity(n),
        };
        for i in 0..n {
            let rank = self.users.sample(&mut rng) as u64;
            let user_id = ((rank * self.user_mult) % users + 1) as i64;
            let song = self.catalog.sample_song(&mut rng);
            let late = rng.random::<f64>() < self.spec.late_share;
            let played_at = if late {
                // Offline plays of the previous evening, synced after midnight.
                self.day_start_ms - rng.random_range(1..3 * 3_600_000)
            } else {
                let hour = self.hours.sample(&mut rng) as i64;
                self.day_start_ms + hour * 3_600_000 + rng.random_range(0..3_600_000)
            };
            let track_ms = song.duration_ms;
            // Skips cluster in the first seconds; the rest play most or all of the track.
            let r: f64 = rng.random();
            let ms_played = if r < 0.22 {
                rng.random_range(500..30_000).min(track_ms)
            } else if r < 0.27 {
                rng.random_range(29_000..31_000).min(track_ms)
            } else if r < 0.55 {
                rng.random_range(30_000..=track_ms.max(30_000))
                    .min(track_ms)
            } else {
                track_ms
            };
            let home = self.home_market(user_id);
            // 2% of a travelling user's plays happen abroad: the same user in two countries.
            let market = if rank % 50 == 7 && rng.random::<f64>() < 0.3 {
                (home + 1) % MARKETS.len()
            } else {
                home
            };
            ch.play_id.push(self.first_play_id + (start + i) as i64);
            ch.user_id.push(user_id);
            ch.session
                .push(mix(user_id as u64 ^ (played_at / 1_800_000) as u64));
            ch.song_id.push(song.song_id);
            ch.artist_id.push(song.artist_id);
            ch.album_id.push(song.album_id);
            ch.played_at.push(played_at);
            ch.ms_played.push(ms_played);
            ch.track_ms.push(track_ms);
            ch.platform.push(self.platforms.sample(&mut rng) as u8);
            ch.country.push(market as u8);
            ch.source.push(self.sources.sample(&mut rng) as u8);
            ch.shuffle.push(rng.random::<f64>() < 0.35);
            ch.offline.push(late || rng.random::<f64>() < 0.04);
            ch.client_version.push(rng.random_range(0..40));
            let bad = (self.spec.bad_rows > 0.0 && rng.random::<f64>() < self.spec.bad_rows)
                .then(|| rng.random_range(0..BAD_KINDS));
            ch.bad.push(bad);
        }
        ch
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Kinds of malformed rows real exports carry.
const BAD_KINDS: u8 = 6;

impl PlaysChunk {
    pub fn len(&self) -> usize {
        self.play_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.play_id.is_empty()
    }

    /// Rows that are written well-formed (the ones a Parquet partition holds).
    pub fn good_rows(&self) -> usize {
        self.bad.iter().filter(|b| b.is_none()).count()
    }

    /// Appends the chunk as CSV lines (no header) to `out`.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        let mut ib = itoa::Buffer::new();
        for i in 0..self.len() {
            let line_start = out.len();
            let mut int =
                |out: &mut Vec<u8>, v: i64| out.extend_from_slice(ib.format(v).as_bytes());
            int(out, self.play_id[i]);
            out.push(b',');
            int(out, self.user_id[i]);
            out.push(b',');
            write_hex32(out, self.session[i], self.user_id[i] as u64);
            out.push(b',');
            int(out, self.song_id[i]);
            out.push(b',');
            int(out, self.artist_id[i]);
            out.push(b',');
            int(out, self.album_id[i]);
            out.push(b',');
            write_timestamp(out, self.played_at[i]);
            out.push(b',');
            int(out, self.ms_played[i] as i64);
            out.push(b',');
            int(out, self.track_ms[i] as i64);
            out.push(b',');
            out.extend_from_slice(PLATFORMS[self.platform[i] as usize].0.as_bytes());
            out.push(b',');
            out.extend_from_slice(MARKETS[self.country[i] as usize].0.as_bytes());
            out.push(b',');
            out.extend_from_slice(SOURCES[self.source[i] as usize].0.as_bytes());
            out.extend_from_slice(if self.shuffle[i] { b",true" } else { b",false" });
            out.extend_from_slice(if self.offline[i] {
                b",true,"
            } else {
                b",false,"
            });
            let v = self.client_version[i];
            let _ = write!(out, "8.{}.{}", 6 + v / 10, v % 10);
            if let Some(kind) = self.bad[i] {
                corrupt(out, line_start, kind);
            }
            out.push(b'\n');
        }
    }

    /// Row `i` as the JSON play event of the `plays` topic (the plays columns, `played_at` as in
    /// the export), written malformed when the row is a bad one: the shapes broken clients send.
    pub fn write_json_event(&self, i: usize, out: &mut Vec<u8>) {
        let mut ib = itoa::Buffer::new();
        let start = out.len();
        let mut int = |out: &mut Vec<u8>, name: &str, v: i64| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(ib.format(v).as_bytes());
        };
        int(out, "{\"play_id\":", self.play_id[i]);
        int(out, ",\"user_id\":", self.user_id[i]);
        out.extend_from_slice(b",\"session_id\":\"");
        write_hex32(out, self.session[i], self.user_id[i] as u64);
        int(out, "\",\"song_id\":", self.song_id[i]);
        int(out, ",\"artist_id\":", self.artist_id[i]);
        int(out, ",\"album_id\":", self.album_id[i]);
        out.extend_from_slice(b",\"played_at\":\"");
        write_timestamp(out, self.played_at[i]);
        int(out, "\",\"ms_played\":", self.ms_played[i] as i64);
        int(out, ",\"track_ms\":", self.track_ms[i] as i64);
        for (name, v) in [
            ("platform", PLATFORMS[self.platform[i] as usize].0),
            ("country", MARKETS[self.country[i] as usize].0),
            ("source", SOURCES[self.source[i] as usize].0),
        ] {
            let _ = write!(out, ",\"{name}\":\"{v}\"");
        }
        let _ = write!(
            out,
            ",\"shuffle\":{},\"offline\":{},\"client_version\":\"8.{}.{}\"}}",
            self.shuffle[i],
            self.offline[i],
            6 + self.client_version[i] / 10,
            self.client_version[i] % 10
        );
        if let Some(kind) = self.bad[i] {
            let event = String::from_utf8_lossy(&out[start..]).into_owned();
            out.truncate(start);
            let broken = match kind {
                0 => event[..event.len() / 2].to_string(), // cut off mid-message
                1 => event
                    .replacen("\"play_id\":", "\"play_id\":\"p-", 1)
                    .replacen(",\"user_id\"", "\",\"user_id\"", 1), // a string id
                2 => event.replacen("\"played_at\":\"", "\"played_at\":\"yesterday ", 1),
                3 => event.replacen("\"ms_played\":", "\"ms_played_v2\":", 1), // a renamed field
                4 => event.replacen("\"ms_played\":", "\"ms_played\":\"\",\"ms\":", 1), // empty
                _ => "not json".to_string(),
            };
            out.extend_from_slice(broken.as_bytes());
        }
    }

    /// The well-formed rows as an Arrow batch of the plays schema.
    pub fn to_batch(&self) -> RecordBatch {
        let keep: Vec<usize> = (0..self.len()).filter(|&i| self.bad[i].is_none()).collect();
        let i64s = |v: &[i64]| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(keep.iter().map(|&i| v[i])))
        };
        let i32s = |v: &[i32]| -> ArrayRef {
            Arc::new(Int32Array::from_iter_values(keep.iter().map(|&i| v[i])))
        };
        let bools = |v: &[bool]| -> ArrayRef {
            Arc::new(keep.iter().map(|&i| Some(v[i])).collect::<BooleanArray>())
        };
        let strs = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(keep.iter().map(|&i| f(i))))
        };
        let columns: Vec<ArrayRef> = vec![
            i64s(&self.play_id),
            i64s(&self.user_id),
            strs(&|i| {
                let mut b = Vec::with_capacity(32);
                write_hex32(&mut b, self.session[i], self.user_id[i] as u64);
                String::from_utf8(b).unwrap_or_default()
            }),
            i64s(&self.song_id),
            i64s(&self.artist_id),
            i64s(&self.album_id),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    keep.iter().map(|&i| self.played_at[i]),
                )
                .with_timezone("UTC"),
            ),
            i32s(&self.ms_played),
            i32s(&self.track_ms),
            strs(&|i| PLATFORMS[self.platform[i] as usize].0.to_string()),
            strs(&|i| MARKETS[self.country[i] as usize].0.to_string()),
            strs(&|i| SOURCES[self.source[i] as usize].0.to_string()),
            bools(&self.shuffle),
            bools(&self.offline),
            strs(&|i| {
                let v = self.client_version[i];
                format!("8.{}.{}", 6 + v / 10, v % 10)
            }),
        ];
        RecordBatch::try_new(PLAYS.clone(), columns)
            .expect("generator columns match the plays schema")
    }
}

/// Rewrites the line that starts at `start` into one of the malformed shapes of real exports.
fn corrupt(out: &mut Vec<u8>, start: usize, kind: u8) {
    let line = out[start..].to_vec();
    let fields: Vec<&[u8]> = line.split(|&b| b == b',').collect();
    let mut bad: Vec<Vec<u8>> = fields.iter().map(|f| f.to_vec()).collect();
    match kind {
        0 => {
            bad.pop(); // a truncated row
        }
        1 => bad.push(b"extra".to_vec()),       // a stray delimiter
        2 => bad[1] = b"user-unknown".to_vec(), // a non-numeric id
        3 => bad[6] = b"2026-13-45T99:00:00Z".to_vec(), // an impossible timestamp
        4 => bad[7] = Vec::new(),               // an empty ms_played
        _ => bad[3] = b"12e4x".to_vec(),        // a garbled song_id
    }
    out.truncate(start);
    out.extend_from_slice(&bad.join(&b","[..]));
}

fn write_hex32(out: &mut Vec<u8>, a: u64, b: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for v in [a, mix(b ^ a)] {
        for k in (0..16).rev() {
            out.push(HEX[((v >> (k * 4)) & 0xf) as usize]);
        }
    }
}

/// `2026-11-26T13:45:12.345Z`, written without going through chrono's formatter (hot path).
pub fn write_timestamp(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = streampulse_core::time::civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    put_digits(out, y, 4);
    out.push(b'-');
    put_digits(out, m, 2);
    out.push(b'-');
    put_digits(out, d, 2);
    out.push(b'T');
    put_digits(out, h, 2);
    out.push(b':');
    put_digits(out, mi, 2);
    out.push(b':');
    put_digits(out, s, 2);
    out.push(b'.');
    put_digits(out, milli, 3);
    out.push(b'Z');
}

/// Zero-padded decimal of `v` in exactly `width` (at most 4) digits.
fn put_digits(out: &mut Vec<u8>, mut v: i64, width: usize) {
    let mut buf = [b'0'; 4];
    for k in (0..width).rev() {
        buf[k] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_the_export() {
        let ms = chrono::DateTime::parse_from_rfc3339("2026-11-26T13:45:12.345Z")
            .unwrap()
            .timestamp_millis();
        let mut out = Vec::new();
        write_timestamp(&mut out, ms);
        assert_eq!(out, b"2026-11-26T13:45:12.345Z");
        out.clear();
        write_timestamp(&mut out, -1);
        assert_eq!(out, b"1969-12-31T23:59:59.999Z");
    }
}
