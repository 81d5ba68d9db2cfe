//! The song catalog: songs, artists, albums and labels, with Zipf-shaped popularity that is not
//! aligned with ids (the most played song is not song 1).

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use streampulse_core::songs::{self, SongRecord};
use streampulse_core::time::days_from_civil;

use crate::alias::AliasTable;
use crate::dims::GENRES;

#[derive(Debug, Clone, Copy)]
pub struct Song {
    pub song_id: i64,
    pub artist_id: i64,
    pub album_id: i64,
    pub label_id: i64,
    pub duration_ms: i32,
    pub genre: u8,
    pub release_days: i32,
    pub updated_at_ms: i64,
}

pub struct Catalog {
    pub songs: Vec<Song>,
    popularity: AliasTable,
    /// popularity rank -> index into `songs`
    by_rank: Vec<u32>,
}

const WORDS: &[&str] = &[
    "midnight",
    "golden",
    "electric",
    "summer",
    "paper",
    "neon",
    "river",
    "velvet",
    "echo",
    "wild",
    "silver",
    "ocean",
    "broken",
    "city",
    "dream",
    "fire",
    "lonely",
    "northern",
    "satellite",
    "honey",
    "glass",
    "thunder",
    "blue",
    "heart",
    "road",
    "shadow",
    "sugar",
    "signal",
    "paradise",
    "winter",
];

impl Catalog {
    /// `songs` songs by about `songs / 8` artists; deterministic for `seed`. Song metadata changes
    /// (`updated_at`) are spread over the 30 days up to the end of `date`.
    pub fn generate(seed: u64, songs: usize, date: NaiveDate) -> Self {
        let songs = songs.max(1);
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0xCA7A_1065);
        let artists = (songs / 8).max(1);
        let labels = (artists / 40).max(3) as i64;
        // Prolific artists have many songs: Zipf over artists.
        let artist_pick = AliasTable::zipf(artists, 0.6);
        let day_end_ms = date
            .and_hms_opt(0, 0, 0)
            .map_or(0, |d| d.and_utc().timestamp_millis())
            + 86_400_000;
        let today = days_from_civil(2026, 1, 1);
        let list: Vec<Song> = (0..songs)
            .map(|i| {
                let artist_id = artist_pick.sample(&mut rng) as i64 + 1;
                // 1% interludes shorter than the 30 s rule; the rest around three and a half minutes.
                let duration_ms = if rng.random::<f64>() < 0.01 {
                    rng.random_range(8_000..30_000)
                } else {
                    let jitter: i32 = (0..4).map(|_| rng.random_range(-30_000..30_000)).sum();
                    (205_000 + jitter).clamp(45_000, 600_000)
                };
                Song {
                    song_id: i as i64 + 1,
                    artist_id,
                    album_id: artist_id * 100 + rng.random_range(0..6),
                    label_id: (artist_id * 2_654_435_761) % labels + 1,
                    duration_ms,
                    genre: rng.random_range(0..GENRES.len()) as u8,
                    release_days: today - rng.random_range(0..20 * 365),
                    updated_at_ms: day_end_ms - rng.random_range(1..30 * 86_400_000),
                }
            })
            .collect();
        let mut by_rank: Vec<u32> = (0..songs as u32).collect();
        by_rank.shuffle(&mut rng);
        Catalog {
            popularity: AliasTable::zipf(songs, 1.0),
            by_rank,
            songs: list,
        }
    }

    pub fn sample_song<R: Rng>(&self, rng: &mut R) -> &Song {
        &self.songs[self.by_rank[self.popularity.sample(rng)] as usize]
    }

    /// The `songs` dataset as Arrow batches of at most `batch_rows` rows.
    pub fn batches(&self, batch_rows: usize) -> Vec<RecordBatch> {
        self.songs
            .chunks(batch_rows.max(1))
            .map(songs_batch)
            .collect()
    }
}

fn title(id: i64, salt: i64) -> String {
    let a = WORDS[(id.wrapping_mul(7919) + salt).rem_euclid(WORDS.len() as i64) as usize];
    let b =
        WORDS[(id.wrapping_mul(104_729) / 7 + salt * 3).rem_euclid(WORDS.len() as i64) as usize];
    format!("{}{} {b}", a[..1].to_uppercase(), &a[1..])
}

fn songs_batch(songs: &[Song]) -> RecordBatch {
    let records: Vec<SongRecord> = songs
        .iter()
        .map(|s| SongRecord {
            song_id: s.song_id,
            title: title(s.song_id, 1),
            artist_id: s.artist_id,
            artist_name: format!("The {}", title(s.artist_id, 5)),
            album_id: s.album_id,
            label_id: s.label_id,
            isrc: format!(
                "QZ{:03X}{:02}{:05}",
                s.label_id % 4096,
                s.release_days % 100,
                s.song_id % 100_000
            ),
            duration_ms: s.duration_ms,
            release_date: streampulse_core::time::from_date32(s.release_days).unwrap_or_default(),
            genre: GENRES[s.genre as usize].to_string(),
            updated_at: DateTime::from_timestamp_millis(s.updated_at_ms).unwrap_or_default(),
        })
        .collect();
    songs::to_batch(&records).expect("catalog records match the songs schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    #[test]
    fn popularity_is_heavy_tailed_and_deterministic() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let cat = Catalog::generate(7, 10_000, date);
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let mut counts = vec![0u32; 10_001];
        for _ in 0..200_000 {
            counts[cat.sample_song(&mut rng).song_id as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top1: u32 = counts[..100].iter().sum();
        assert!(
            top1 as f64 / 200_000.0 > 0.3,
            "top 1% of songs should take a large share: {top1}"
        );
        let again = Catalog::generate(7, 10_000, date);
        assert_eq!(cat.songs[123].artist_id, again.songs[123].artist_id);
        let b = cat.batches(4096);
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 10_000);
        let isrc = b[0]
            .column(6)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0)
            .to_string();
        assert_eq!(isrc.len(), 12, "{isrc}");
    }
}
