//! The day's counts in one pass over the plays, partitioned by user.
//!
//! Why partition by user: every count this pipeline reports is a sum over users. A song's plays,
//! streams and minutes are sums of per-user figures, and so is its listener count (1 for each
//! user with a stream). So if all the plays of a user are in one partition, each partition can be
//! finished on its own and its results added to the day's totals: exact distinct counts with no
//! set of users per song, and no second aggregation phase. The totals are indexed by song,
//! artist and (country, song); their size follows the catalog, not the number of plays.
//!
//! Duplicates: a play_id seen again for the same user is one play (a re-sent export row, a
//! redelivered event). All of a user's plays are in one bucket, so the bucket's sort by (user,
//! play_id) finds them; the first by ms_played, song_id, country and artist_id is kept (by
//! value, so the same one whatever the input's order or spills, and the one the Spark engine
//! keeps), the others are counted in [`Totals::duplicate_plays`].
//!
//! How memory stays bounded: plays are buffered as 32-byte rows in `partitions` buckets chosen by
//! a hash of the user. When the buffer reaches its budget, every bucket is appended to its own
//! spill file. A bucket is then finished alone (sorted by user, song and country, and walked
//! once), `threads` buckets at a time; a bucket larger than its share of the budget is first split
//! again, with another hash, into spill files of its own. The budget therefore bounds the buffer
//! however large the day.
//!
//! Measured against the DataFusion plan this replaced (three two-phase GROUP BYs over a teed
//! input), see bench/results/play_counts.md.
//!
//! The parts: [`spill`] (the buffered plays and their buckets), [`ids`] (dense ids),
//! [`bucket`] (counting one bucket), [`country`] (the (country, song) totals) and [`totals`] (the
//! day's totals and the output batches); this module drives them.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use streampulse_core::schema::STREAM_MIN_MS;

use crate::{Error, Result};

mod bucket;
mod country;
mod ids;
mod spill;
mod totals;

use bucket::*;
use country::*;
use ids::*;
use spill::*;

pub use country::CountryCandidates;
pub use ids::IdMap;
pub use totals::Totals;

/// Sizing and the counting rules of one tally.
#[derive(Debug, Clone)]
pub struct TallyOptions {
    /// Bytes of buffered plays (and of one bucket being finished per thread) the tally may hold.
    pub budget: u64,
    /// Plays the input is expected to hold; only sizes the first partitioning.
    pub expected_plays: u64,
    pub threads: usize,
    /// Where buckets spill; a directory of this tally's own is made inside and removed at drop.
    pub spill_dir: PathBuf,
    /// Chart-eligible streams per user, song and day.
    pub stream_cap: Option<u32>,
    /// Apply the cap to the daily counts too.
    pub cap_counts: bool,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Core(streampulse_core::Error::io(path, e))
}

/// The day's plays, being counted.
pub struct Tally {
    options: TallyOptions,
    dir: SpillDir,
    buckets: Buckets,
    buffered_chunks: usize,
    songs: DenseIds,
    artists: DenseIds,
    plays: u64,
    spills: u32,
}

/// The tally's spill directory, removed however the run ends.
struct SpillDir(PathBuf);

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Tally {
    pub fn new(options: TallyOptions) -> Tally {
        // The budget's shares: half buffers plays; a quarter holds the buckets being finished
        // (each thread holds one, loaded into a vector while its chunks are freed: up to twice
        // its size); a quarter holds the (country, song) totals.
        let per_bucket = (options.budget / 8 / options.threads.max(1) as u64).max(1 << 20);
        let wanted = (options.expected_plays * PLAY_BYTES as u64).div_ceil(per_bucket);
        let count = (wanted as usize).clamp(64, MAX_BUCKETS).next_power_of_two();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = options.spill_dir.join(format!(
            "sp-tally-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        Tally {
            buckets: Buckets::new(
                count,
                0,
                dir.join("l0"),
                options.budget / 2 / PLAY_BYTES as u64,
            ),
            dir: SpillDir(dir),
            options,
            buffered_chunks: 0,
            songs: DenseIds::default(),
            artists: DenseIds::default(),
            plays: 0,
            spills: 0,
        }
    }

    /// Adds one batch of plays (columns of equal length).
    pub fn push(
        &mut self,
        play_id: &[i64],
        user: &[i64],
        song: &[i64],
        artist: &[i64],
        ms_played: &[i32],
        country: &[i32],
    ) -> Result<()> {
        let budget_chunks =
            (self.options.budget / 2 / (self.buckets.chunk_rows * PLAY_BYTES) as u64).max(1)
                as usize;
        for i in 0..user.len() {
            let song = self.songs.index(song[i])?;
            let artist = self.artists.index(artist[i])?;
            let play = Play {
                user: user[i],
                id: play_id[i],
                song,
                artist,
                ms: ms_played[i],
                country: country[i] as u32,
            };
            if self.buckets.push(play) {
                self.buffered_chunks += 1;
                if self.buffered_chunks >= budget_chunks {
                    self.buckets.spill()?;
                    self.buffered_chunks = 0;
                    self.spills += 1;
                }
            }
        }
        self.plays += user.len() as u64;
        Ok(())
    }

    /// Finishes every bucket and returns the day's totals. `country_names` names the country
    /// codes the plays were pushed with (by code).
    pub fn finish(self, country_names: &[String]) -> Result<Totals> {
        let Tally {
            options,
            dir,
            buckets,
            songs,
            artists,
            spills,
            ..
        } = self;
        let (song_ids, artist_ids) = (songs.ids, artists.ids);
        let initial_buckets = buckets.count();
        let parts = Mutex::new(buckets.into_parts()?);
        let threads = options.threads.max(1);
        let per_thread_rows =
            (options.budget / 8 / threads as u64 / PLAY_BYTES as u64).max(1 << 14);
        let countries = Mutex::new(CountryTotals {
            map: IdMap::default(),
            limit: (options.budget / 4 / COUNTRY_ENTRY_BYTES) as usize,
            runs: Vec::new(),
            dir: dir.0.join("countries"),
            spilled_entries: 0,
        });
        let splits = AtomicUsize::new(0);
        let rules = Rules {
            cap: options.stream_cap.map(i64::from),
            cap_counts: options.cap_counts,
        };
        let results: Vec<Result<Totals>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (parts, song_ids, artist_ids, splits, dir, rules, countries) = (
                        &parts,
                        &song_ids,
                        &artist_ids,
                        &splits,
                        &dir.0,
                        &rules,
                        &countries,
                    );
                    std::thread::Builder::new()
                        .name(format!("tally-{t}"))
                        .spawn_scoped(scope, move || -> Result<Totals> {
                            let mut totals = Totals::new(song_ids.len(), artist_ids.len());
                            let mut scratch = Scratch::default();
                            loop {
                                let part = match parts.lock() {
                                    Ok(mut p) => p.pop(),
                                    Err(_) => return Err(Error::Internal("tally poisoned".into())),
                                };
                                let Some(part) = part else { break };
                                if part.rows > per_thread_rows && part.level < MAX_LEVEL {
                                    let n = splits.fetch_add(1, Ordering::Relaxed);
                                    let rows = part.rows;
                                    let mut sub = part.split(16, dir.join(format!("split-{n}")))?;
                                    // All rows in one sub-bucket: most likely one user's (a
                                    // user never spreads), which no further split divides.
                                    for p in sub.iter_mut().filter(|p| p.rows == rows) {
                                        p.level = MAX_LEVEL;
                                    }
                                    if let Ok(mut p) = parts.lock() {
                                        p.extend(sub);
                                    }
                                    continue;
                                }
                                let mut rows = part.load()?;
                                let keys = Keys {
                                    song_ids,
                                    artist_ids,
                                    country_names,
                                };
                                finish_bucket(&mut rows, rules, &keys, &mut totals, &mut scratch);
                                drop(rows);
                                countries
                                    .lock()
                                    .map_err(|_| Error::Internal("tally poisoned".into()))?
                                    .absorb(&mut scratch.countries)?;
                            }
                            Ok(totals)
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h
                        .join()
                        .unwrap_or_else(|_| Err(Error::Internal("a tally thread panicked".into()))),
                    Err(e) => Err(Error::Internal(format!("cannot start a tally thread: {e}"))),
                })
                .collect()
        });
        let mut merged: Option<Totals> = None;
        for r in results {
            let t = r?;
            match &mut merged {
                None => merged = Some(t),
                Some(m) => m.merge(t),
            }
        }
        let mut totals = merged.unwrap_or_else(|| Totals::new(song_ids.len(), artist_ids.len()));
        totals.song_ids = song_ids;
        totals.artist_ids = artist_ids;
        totals.buckets = initial_buckets;
        totals.spills = spills;
        totals.splits = splits.into_inner();
        totals.countries = countries
            .into_inner()
            .map_err(|_| Error::Internal("tally poisoned".into()))?;
        // Removed with the totals: the country runs live in it.
        totals.dir = Some(dir);
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use streampulse_core::schema::{DAILY_ARTIST_COUNTS, DAILY_SONG_COUNTS};

    #[test]
    fn ids_are_numbered_in_order_of_first_appearance_whatever_their_size() {
        let mut ids = DenseIds::default();
        let (big, edge) = (1 << 40, DIRECT_IDS as i64);
        let seen = [7, big, -3, 7, edge, 0, big, -3, 4_000_000, 0];
        let got: Vec<u32> = seen.iter().map(|&id| ids.index(id).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 0, 3, 4, 1, 2, 5, 4]);
        assert_eq!(ids.ids, [7, big, -3, edge, 0, 4_000_000]);
        // Only the small non-negative ids took the direct table.
        assert_eq!(ids.map.len(), 3);
        assert!(ids.direct.len() <= DIRECT_IDS as usize);
    }

    #[test]
    fn a_play_survives_the_spill_encoding() {
        let p = Play {
            user: -7_000_000_000_123,
            id: i64::MIN + 3,
            song: 4_000_000_001,
            artist: 17,
            ms: 29_999,
            country: 250,
        };
        let mut b = [0u8; PLAY_BYTES];
        p.encode(&mut b);
        assert_eq!(Play::decode(&b), p);
    }

    #[test]
    fn buckets_split_users_differently_at_each_level() {
        let users: Vec<i64> = (0..10_000).collect();
        let at = |level| users.iter().filter(|&&u| bucket(u, level, 16) == 3).count();
        // About 1/16 of the users land in bucket 3 at each level...
        for level in 0..3 {
            assert!(
                (500..760).contains(&at(level)),
                "level {level}: {}",
                at(level)
            );
        }
        // ...and the users of one level-0 bucket spread over all 16 at level 1.
        let mut seen = [0usize; 16];
        for &u in users.iter().filter(|&&u| bucket(u, 0, 16) == 3) {
            seen[bucket(u, 1, 16)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
    }

    /// Counts the plain way: sets of users per song, artist and (country, song).
    fn naive(plays: &[(i64, i64, i64, i32, i32)], cap: i64, cap_counts: bool) -> String {
        use std::collections::{BTreeMap, BTreeSet};
        let mut per_song_user: BTreeMap<(i64, i64), (i64, i64, i64)> = BTreeMap::new();
        let mut per_artist_user: BTreeMap<(i64, i64), (i64, i64, i64)> = BTreeMap::new();
        let mut per_artist_song_user: BTreeMap<(i64, i64, i64), i64> = BTreeMap::new();
        let mut per_country: BTreeMap<(i32, i64, i64), (i64, i64)> = BTreeMap::new();
        let mut song_artists: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for &(user, song, artist, ms, country) in plays {
            let s = i64::from(ms >= 30_000);
            for (map, key) in [
                (&mut per_song_user, (song, user)),
                (&mut per_artist_user, (artist, user)),
            ] {
                let e = map.entry(key).or_default();
                e.0 += 1;
                e.1 += s;
                e.2 += i64::from(ms);
            }
            *per_artist_song_user
                .entry((artist, song, user))
                .or_default() += s;
            if s == 1 {
                let e = per_country
                    .entry((country, song, user))
                    .or_insert((0, i64::MAX));
                e.0 += 1;
                e.1 = e.1.min(artist);
            }
            song_artists.entry(song).or_default().insert(artist);
        }
        let counted = |s: i64| if cap_counts { s.min(cap) } else { s };
        let mut songs: BTreeMap<i64, [i64; 5]> = BTreeMap::new();
        for (&(song, _), &(p, s, ms)) in &per_song_user {
            let e = songs.entry(song).or_default();
            let add = [p, counted(s), i64::from(s > 0), ms, s.min(cap)];
            for (a, b) in e.iter_mut().zip(add) {
                *a += b;
            }
        }
        // The cap is per user and song: an artist's counted streams add up capped songs.
        let mut artists: BTreeMap<i64, [i64; 4]> = BTreeMap::new();
        for (&(artist, _), &(p, s, ms)) in &per_artist_user {
            let e = artists.entry(artist).or_default();
            for (a, b) in e.iter_mut().zip([p, 0, i64::from(s > 0), ms]) {
                *a += b;
            }
        }
        for (&(artist, _, _), &s) in &per_artist_song_user {
            artists.entry(artist).or_default()[1] += counted(s);
        }
        let mut countries: BTreeMap<(i32, i64), [i64; 3]> = BTreeMap::new();
        for (&(c, song, _), &(s, artist)) in &per_country {
            let e = countries.entry((c, song)).or_insert([0, 0, i64::MAX]);
            e[0] += s.min(cap);
            e[1] += 1;
            e[2] = e[2].min(artist);
        }
        let mut out = String::new();
        for (song, v) in songs {
            let a = &song_artists[&song];
            let (lo, hi) = (a.first().unwrap(), a.last().unwrap());
            out += &format!("song {song} {lo} {hi} {v:?}\n");
        }
        for (artist, v) in artists {
            out += &format!("artist {artist} {v:?}\n");
        }
        for ((c, song), v) in countries {
            out += &format!("country {c} {song} {v:?}\n");
        }
        out
    }

    fn shown(t: &mut Totals) -> String {
        use arrow::array::AsArray;
        use arrow::datatypes::{Int32Type, Int64Type};
        let mut out = String::new();
        let songs = t.song_counts(&DAILY_SONG_COUNTS).unwrap();
        let col = |b: &RecordBatch, i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (id, plays, streams, listeners, ms) = (
            col(&songs, 0),
            col(&songs, 2),
            col(&songs, 3),
            col(&songs, 4),
            col(&songs, 5),
        );
        let chart: HashMap<i64, (i64, i64)> = t
            .song_ids
            .iter()
            .zip(&t.songs)
            .map(|(&id, a)| (id, (a.chart, a.artist_max)))
            .collect();
        for r in 0..songs.num_rows() {
            let (c, hi) = chart[&id.value(r)];
            let lo = col(&songs, 1).value(r);
            let v = [
                plays.value(r),
                streams.value(r),
                listeners.value(r),
                ms.value(r),
                c,
            ];
            out += &format!("song {} {lo} {hi} {v:?}\n", id.value(r));
        }
        let artists = t.artist_counts(&DAILY_ARTIST_COUNTS).unwrap();
        for r in 0..artists.num_rows() {
            let v: Vec<i64> = (1..5).map(|i| col(&artists, i).value(r)).collect();
            out += &format!("artist {} {v:?}\n", col(&artists, 0).value(r));
        }
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("scope", arrow::datatypes::DataType::Int32, false),
            arrow::datatypes::Field::new("song_id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("artist_id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("streams", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("listeners", arrow::datatypes::DataType::Int64, false),
        ]));
        let mut rows: Vec<String> = Vec::new();
        for c in t.country_candidates(&schema, 1000).unwrap() {
            let c = c.unwrap();
            assert!(c.num_rows() <= 1000);
            let scope = c.column(0).as_primitive::<Int32Type>();
            rows.extend((0..c.num_rows()).map(|r| {
                let v = [
                    col(&c, 3).value(r),
                    col(&c, 4).value(r),
                    col(&c, 2).value(r),
                ];
                format!("country {} {} {v:?}\n", scope.value(r), col(&c, 1).value(r))
            }));
        }
        rows.sort_by_key(|r| {
            let f: Vec<i64> = r
                .split(' ')
                .skip(1)
                .take(2)
                .map(|x| x.parse().unwrap())
                .collect();
            (f[0], f[1])
        });
        out + &rows.concat()
    }

    /// Random plays: heavy users, popular songs, 40 countries and one song with two artists.
    fn plays(n: usize, seed: u64) -> Vec<(i64, i64, i64, i32, i32)> {
        let mut z = seed;
        let mut next = move || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        (0..n)
            .map(|_| {
                let r = next();
                // Squaring a uniform draw skews towards small ids: some users and songs are hot.
                let skew = |m: u64, r: u64| ((r % 1000) * (r % 1000) * m / 1_000_000) as i64;
                let user = skew(5_000, r) - 2_000;
                let song = 10_000 + skew(700, r >> 20);
                let artist = if song == 10_003 && r % 7 == 0 {
                    5
                } else {
                    song / 3
                };
                let ms = ((r >> 40) % 60_000) as i32;
                let country = ((r >> 50) % 40) as i32;
                (user, song, artist, ms, country)
            })
            .collect()
    }

    fn tally(
        plays: &[(i64, i64, i64, i32, i32)],
        budget: u64,
        threads: usize,
        cap_counts: bool,
    ) -> Counted {
        let ids: Vec<i64> = (0..plays.len() as i64).collect();
        let counted = tally_with_ids(plays, &ids, budget, threads, cap_counts);
        assert_eq!(counted.duplicates, 0);
        counted
    }

    fn tally_with_ids(
        plays: &[(i64, i64, i64, i32, i32)],
        ids: &[i64],
        budget: u64,
        threads: usize,
        cap_counts: bool,
    ) -> Counted {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tally::new(TallyOptions {
            budget,
            expected_plays: 0,
            threads,
            spill_dir: dir.path().to_path_buf(),
            stream_cap: Some(3),
            cap_counts,
        });
        for (chunk, ids) in plays.chunks(10_000).zip(ids.chunks(10_000)) {
            let col =
                |f: fn(&(i64, i64, i64, i32, i32)) -> i64| chunk.iter().map(f).collect::<Vec<_>>();
            let ms: Vec<i32> = chunk.iter().map(|p| p.3).collect();
            let country: Vec<i32> = chunk.iter().map(|p| p.4).collect();
            t.push(
                ids,
                &col(|p| p.0),
                &col(|p| p.1),
                &col(|p| p.2),
                &ms,
                &country,
            )
            .unwrap();
        }
        // Named so that names sort as the codes do.
        let most = plays.iter().map(|p| p.4).max().unwrap_or(0).max(0);
        let names: Vec<String> = (0..=most).map(|c| format!("{c:010}")).collect();
        let mut totals = t.finish(&names).unwrap();
        let conflicts = totals.artist_conflicts(5);
        let spilled = totals.country_entries_spilled();
        let text = shown(&mut totals);
        let shape = (totals.spills, totals.splits, spilled);
        let duplicates = totals.duplicate_plays();
        drop(totals);
        // Every spill, split and run file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        Counted {
            text,
            shape,
            conflicts,
            duplicates,
        }
    }

    struct Counted {
        duplicates: u64,
        text: String,
        /// Buffer spills, bucket re-splits, (country, song) entries spilled.
        shape: (u32, usize, u64),
        conflicts: Vec<(i64, i64, i64)>,
    }

    #[test]
    fn a_play_id_seen_again_for_its_user_is_counted_once() {
        // Every 10th play arrives twice; every 25th a third time with another ms_played and
        // song (a conflicting re-send: the smallest ms_played is kept); another user reuses a
        // play_id, which is another play.
        let mut p = plays(300_000, 11);
        let mut ids: Vec<i64> = (0..p.len() as i64).collect();
        let mut kept = p.clone();
        for i in 0..300_000 {
            if i % 10 == 0 {
                p.push(p[i]);
                ids.push(i as i64);
            }
            if i % 25 == 0 {
                let (user, song, artist, ms, country) = p[i];
                p.push((user, song + 1, artist, ms + 1, country));
                ids.push(i as i64);
            }
        }
        let other_user = (p[5].0 + 1_000_000, p[5].1, p[5].2, p[5].3, p[5].4);
        p.push(other_user);
        ids.push(5);
        kept.push(other_user);
        // Shuffled, so that the copies are in other buckets' chunks and spill files.
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by_key(|&i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let shuffled: Vec<_> = order.iter().map(|&i| p[i]).collect();
        let shuffled_ids: Vec<_> = order.iter().map(|&i| ids[i]).collect();
        let want = naive(&kept, 3, false);
        for (budget, threads) in [(1 << 30, 2), (1 << 20, 3)] {
            let got = tally_with_ids(&shuffled, &shuffled_ids, budget, threads, false);
            assert_eq!(got.duplicates, 30_000 + 12_000, "budget {budget}");
            assert_eq!(got.text, want, "budget {budget}");
        }
    }

    #[test]
    fn of_two_copies_with_the_same_duration_the_smaller_song_id_is_kept_in_any_order() {
        // play_id 7 of user 1 sent as song 20, then as song 10, with the same ms_played: song
        // 20 gets the first dense index, yet song 10 is kept, as it is on the Spark engine.
        let copies = [(1, 20, 200, 40_000, 0), (1, 10, 100, 40_000, 0)];
        for order in [[0, 1], [1, 0]] {
            let p: Vec<_> = order.iter().map(|&i| copies[i]).collect();
            let got = tally_with_ids(&p, &[7, 7], 1 << 30, 1, false);
            assert_eq!(got.duplicates, 1);
            assert_eq!(got.text, naive(&[copies[1]], 3, false), "order {order:?}");
        }
    }

    #[test]
    fn with_capped_counts_an_artist_adds_up_its_capped_songs() {
        // One user streams two songs of artist 5 four times each (cap 3), in one country.
        let p: Vec<_> = [10, 11]
            .iter()
            .flat_map(|&song| std::iter::repeat_n((1, song, 5, 40_000, 0), 4))
            .collect();
        let text = tally(&p, 1 << 30, 1, true).text;
        assert!(text.contains("song 10 5 5 [4, 3, 1, 160000, 3]"), "{text}");
        // 3 + 3, not the cap applied once to the user's 8 streams of the artist.
        assert!(text.contains("artist 5 [8, 6, 1, 320000]"), "{text}");
        assert_eq!(text, naive(&p, 3, true));
    }

    #[test]
    fn totals_equal_a_plain_count_in_memory_and_when_spilled_and_split() {
        let p = plays(1_500_000, 7);
        for cap_counts in [false, true] {
            let want = naive(&p, 3, cap_counts);
            let in_memory = tally(&p, 1 << 30, 2, cap_counts);
            assert_eq!(in_memory.shape, (0, 0, 0));
            assert_eq!(in_memory.text, want, "in memory, cap_counts {cap_counts}");
            // 1 MiB: the buffer spills every ~22,000 plays; each of the 64 buckets (~23,000
            // plays on average; the users are skewed) is over a thread's share, so most are split
            // again; and the ~28,000 (country, song) pairs exceed the ~5,500 that fit, so they go
            // to runs on disk.
            let spilled = tally(&p, 1 << 20, 3, cap_counts);
            let (spills, splits, country_spilled) = spilled.shape;
            assert!(
                spills > 50 && splits >= 32 && country_spilled > 28_000,
                "{:?}",
                spilled.shape
            );
            assert_eq!(spilled.text, want, "spilled, cap_counts {cap_counts}");
        }
        let conflicts = tally(&p, 1 << 30, 1, false).conflicts;
        assert_eq!(conflicts, vec![(10_003, 5, 3334)]);
    }
}
