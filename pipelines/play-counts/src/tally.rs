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

/// A multiplicative hasher for integer keys we produce ourselves (ids and dense indices): no
/// attacker chooses them, and SipHash would be most of the cost of a lookup.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// One play as the tally keeps it: ids of songs and artists are dense indices of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Play {
    user: i64,
    id: i64,
    song: u32,
    artist: u32,
    ms: i32,
    country: u32,
}

const PLAY_BYTES: usize = 32;

impl Play {
    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.user.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..20].copy_from_slice(&self.song.to_le_bytes());
        out[20..24].copy_from_slice(&self.artist.to_le_bytes());
        out[24..28].copy_from_slice(&self.ms.to_le_bytes());
        out[28..32].copy_from_slice(&self.country.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Play {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i64_at = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[i..i + 8]);
            i64::from_le_bytes(v)
        };
        Play {
            user: i64_at(0),
            id: i64_at(8),
            song: u32_at(16),
            artist: u32_at(20),
            ms: u32_at(24) as i32,
            country: u32_at(28),
        }
    }
}

/// Which bucket a user falls in at a given split level (a different hash at every level, so that
/// a bucket split again spreads out).
fn bucket(user: i64, level: u32, buckets: usize) -> usize {
    let mut z = (user as u64) ^ (level as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // `buckets` is a power of two.
    (z as usize) & (buckets - 1)
}

/// At most this many buckets in the first partitioning: each spilled bucket holds a file open
/// (and its write buffer), and 1024 descriptors is a common soft limit. Larger days re-split
/// their buckets instead.
const MAX_BUCKETS: usize = 512;

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

/// Rows buffered per chunk of a bucket (at most): chunks, not one growing vector, so that the
/// buffer never holds twice its data while a vector doubles.
const CHUNK_ROWS: usize = 4096;

/// Buckets whose rows are spread over memory chunks and, once spilled, a file.
struct Buckets {
    level: u32,
    /// Rows per chunk: smaller when there are many buckets, so that their part-filled chunks
    /// stay a small share of the buffer.
    chunk_rows: usize,
    dir: PathBuf,
    chunks: Vec<Vec<Vec<Play>>>,
    files: Vec<Option<BufWriter<File>>>,
    spilled_rows: Vec<u64>,
}

impl Buckets {
    fn new(count: usize, level: u32, dir: PathBuf, buffer_rows: u64) -> Buckets {
        let chunk_rows = (buffer_rows / count as u64 / 8).clamp(256, CHUNK_ROWS as u64) as usize;
        Buckets {
            level,
            chunk_rows,
            dir,
            chunks: (0..count).map(|_| Vec::new()).collect(),
            files: (0..count).map(|_| None).collect(),
            spilled_rows: vec![0; count],
        }
    }

    fn count(&self) -> usize {
        self.chunks.len()
    }

    /// Adds a play; true when that took a new chunk.
    fn push(&mut self, play: Play) -> bool {
        let b = bucket(play.user, self.level, self.count());
        let chunks = &mut self.chunks[b];
        match chunks.last_mut() {
            Some(c) if c.len() < self.chunk_rows => {
                c.push(play);
                false
            }
            _ => {
                let mut c = Vec::with_capacity(self.chunk_rows);
                c.push(play);
                chunks.push(c);
                true
            }
        }
    }

    fn path(&self, b: usize) -> PathBuf {
        self.dir.join(format!("bucket-{b}.bin"))
    }

    /// Appends every bucket's chunks to its file and frees them.
    fn spill(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut buf = vec![0u8; self.chunk_rows * PLAY_BYTES];
        for b in 0..self.count() {
            if self.chunks[b].is_empty() {
                continue;
            }
            if self.files[b].is_none() {
                let path = self.path(b);
                let f = File::create(&path).map_err(|e| io(&path, e))?;
                self.files[b] = Some(BufWriter::with_capacity(64 << 10, f));
            }
            let chunks = std::mem::take(&mut self.chunks[b]);
            let path = self.path(b);
            let w = self.files[b]
                .as_mut()
                .ok_or_else(|| Error::Internal("spill file".into()))?;
            for chunk in chunks {
                let bytes = &mut buf[..chunk.len() * PLAY_BYTES];
                for (play, out) in chunk.iter().zip(bytes.chunks_exact_mut(PLAY_BYTES)) {
                    play.encode(out);
                }
                w.write_all(bytes).map_err(|e| io(&path, e))?;
                self.spilled_rows[b] += chunk.len() as u64;
            }
        }
        Ok(())
    }

    /// Closes the spill files and hands out each bucket as memory chunks plus an optional file.
    fn into_parts(mut self) -> Result<Vec<Part>> {
        let mut parts = Vec::with_capacity(self.count());
        for b in 0..self.count() {
            let file = match self.files[b].take() {
                Some(mut w) => {
                    let path = self.path(b);
                    w.flush().map_err(|e| io(&path, e))?;
                    Some(path)
                }
                None => None,
            };
            let chunks = std::mem::take(&mut self.chunks[b]);
            let rows = self.spilled_rows[b] + chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            parts.push(Part {
                level: self.level,
                chunks,
                file,
                rows,
            });
        }
        Ok(parts)
    }
}

/// Re-splits stop at this level: a bucket still too large after it holds very few users.
const MAX_LEVEL: u32 = 8;

/// One bucket to finish.
struct Part {
    level: u32,
    chunks: Vec<Vec<Play>>,
    file: Option<PathBuf>,
    rows: u64,
}

impl Part {
    /// Every row of the bucket, spilled ones first, in one vector (for sorting).
    fn load(self) -> Result<Vec<Play>> {
        let mut rows = Vec::with_capacity(self.rows as usize);
        if let Some(path) = &self.file {
            read_plays(path, |p| rows.push(p))?;
            let _ = std::fs::remove_file(path);
        }
        for chunk in self.chunks {
            rows.extend_from_slice(&chunk);
        }
        Ok(rows)
    }

    /// Splits the bucket into `count` buckets by another hash, all of them on disk.
    fn split(self, count: usize, dir: PathBuf) -> Result<Vec<Part>> {
        // The re-split's own buffer stays small: it spills every 4 chunks per bucket.
        let mut next = Buckets::new(count, self.level + 1, dir, (count * 4 * CHUNK_ROWS) as u64);
        let mut chunks_held = 0usize;
        let mut add = |next: &mut Buckets, p: Play| -> Result<()> {
            if next.push(p) {
                chunks_held += 1;
                if chunks_held >= count * 4 {
                    next.spill()?;
                    chunks_held = 0;
                }
            }
            Ok(())
        };
        if let Some(path) = &self.file {
            let mut failed = None;
            read_plays(path, |p| {
                if failed.is_none() {
                    failed = add(&mut next, p).err();
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            let _ = std::fs::remove_file(path);
        }
        for chunk in self.chunks {
            for p in chunk {
                add(&mut next, p)?;
            }
        }
        next.spill()?;
        next.into_parts()
    }
}

fn read_plays(path: &Path, mut each: impl FnMut(Play)) -> Result<()> {
    let f = File::open(path).map_err(|e| io(path, e))?;
    let mut r = BufReader::with_capacity(256 << 10, f);
    let mut buf = vec![0u8; CHUNK_ROWS * PLAY_BYTES];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = r.read(&mut buf[filled..]).map_err(|e| io(path, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled % PLAY_BYTES != 0 {
            return Err(Error::Internal(format!(
                "spill file {} ends inside a row",
                path.display()
            )));
        }
        for b in buf[..filled].chunks_exact(PLAY_BYTES) {
            each(Play::decode(b));
        }
        if filled < buf.len() {
            return Ok(());
        }
    }
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

/// Ids of the day (songs or artists) numbered densely in order of first appearance.
///
/// Why two lookups: this runs twice per play on the one thread that feeds the tally, and catalog
/// ids are mostly small sequence numbers. For those a direct table (4 bytes per id up to the
/// largest seen, at most [`DIRECT_IDS`] entries) stays in cache where a hash map of the same ids
/// does not; any other id goes to the map.
#[derive(Default)]
struct DenseIds {
    direct: Vec<u32>,
    map: IdMap<i64, u32>,
    ids: Vec<i64>,
}

/// Ids below this are looked up in the direct table (16 MiB at most).
const DIRECT_IDS: u64 = 1 << 22;
const ABSENT: u32 = u32::MAX;

impl DenseIds {
    fn index(&mut self, id: i64) -> Result<u32> {
        if (id as u64) < DIRECT_IDS {
            let slot = id as usize;
            if let Some(&i) = self.direct.get(slot)
                && i != ABSENT
            {
                return Ok(i);
            }
            let i = self.next()?;
            if slot >= self.direct.len() {
                self.direct.resize((slot + 1).next_power_of_two(), ABSENT);
            }
            self.direct[slot] = i;
            self.ids.push(id);
            return Ok(i);
        }
        if let Some(&i) = self.map.get(&id) {
            return Ok(i);
        }
        let i = self.next()?;
        self.map.insert(id, i);
        self.ids.push(id);
        Ok(i)
    }

    fn next(&self) -> Result<u32> {
        u32::try_from(self.ids.len())
            .ok()
            .filter(|&i| i != ABSENT)
            .ok_or_else(|| Error::Internal("more than 4 billion distinct ids in a day".into()))
    }
}

struct Rules {
    cap: Option<i64>,
    cap_counts: bool,
}

impl Rules {
    fn chart(&self, streams: i64) -> i64 {
        self.cap.map_or(streams, |c| streams.min(c))
    }

    fn counted(&self, streams: i64) -> i64 {
        if self.cap_counts {
            self.chart(streams)
        } else {
            streams
        }
    }
}

/// A user's plays of one artist (a song run contributes one entry per artist it carries).
#[derive(Clone, Copy)]
struct ArtistPart {
    artist: u32,
    plays: i64,
    streams: i64,
    /// Streams as the counts report them: the cap is per user and song, so it applies here,
    /// before the user's songs by one artist are added up.
    counted: i64,
    ms: i64,
}

#[derive(Default)]
struct Scratch {
    artists: Vec<ArtistPart>,
    /// The bucket's (country, song) totals, added to the day's after the bucket.
    countries: IdMap<u64, CountryAcc>,
}

/// The values behind a play's dense indices.
struct Keys<'a> {
    song_ids: &'a [i64],
    artist_ids: &'a [i64],
    country_names: &'a [String],
}

impl Keys<'_> {
    /// Orders two copies of one play by value: (ms_played, song_id, country, artist_id). The
    /// indices' own order is that of first appearance, which depends on the input's order.
    fn copies(&self, a: &Play, b: &Play) -> std::cmp::Ordering {
        let country = |p: &Play| self.country_names.get(p.country as usize);
        a.ms.cmp(&b.ms)
            .then_with(|| self.song_ids[a.song as usize].cmp(&self.song_ids[b.song as usize]))
            .then_with(|| country(a).cmp(&country(b)))
            .then_with(|| {
                self.artist_ids[a.artist as usize].cmp(&self.artist_ids[b.artist as usize])
            })
    }
}

/// Removes the plays whose (user, play_id) came before, keeping the first by value ([`Keys::copies`])
/// so that the choice does not depend on the input's order; returns how many it removed.
/// Leaves the rows sorted by user, and each user's by (song, country, artist).
fn drop_duplicates(rows: &mut Vec<Play>, keys: &Keys) -> u64 {
    // Ids are compared first and almost always differ: the values behind the indices are
    // looked up only for copies of one play.
    rows.sort_unstable_by(|a, b| {
        (a.user, a.id)
            .cmp(&(b.user, b.id))
            .then_with(|| keys.copies(a, b))
    });
    let before = rows.len();
    rows.dedup_by(|later, kept| later.user == kept.user && later.id == kept.id);
    // A user's plays are a handful: sorting each user's run is cheaper than the whole again.
    for user in rows.chunk_by_mut(|a, b| a.user == b.user) {
        user.sort_unstable_by(|a, b| {
            (a.song, a.country, a.artist).cmp(&(b.song, b.country, b.artist))
        });
    }
    (before - rows.len()) as u64
}

/// Counts one bucket: duplicates dropped ([`drop_duplicates`]), its rows in (user, song,
/// country) order are walked once; each user's songs, artists and (country, song) pairs are runs
/// or a handful of entries.
fn finish_bucket(
    rows: &mut Vec<Play>,
    rules: &Rules,
    keys: &Keys,
    totals: &mut Totals,
    scratch: &mut Scratch,
) {
    totals.duplicates += drop_duplicates(rows, keys);
    let artist_ids = keys.artist_ids;
    let is_stream = |p: &Play| i64::from(p.ms >= STREAM_MIN_MS);
    let mut u = 0;
    while u < rows.len() {
        let user = rows[u].user;
        let u_end = u + rows[u..].iter().take_while(|p| p.user == user).count();
        scratch.artists.clear();
        let mut s = u;
        while s < u_end {
            let song = rows[s].song;
            let s_end = s + rows[s..u_end].iter().take_while(|p| p.song == song).count();
            let run = &rows[s..s_end];
            let (mut streams, mut ms) = (0i64, 0i64);
            for p in run {
                streams += is_stream(p);
                ms += i64::from(p.ms);
            }
            let acc = &mut totals.songs[song as usize];
            acc.plays += run.len() as i64;
            acc.streams += rules.counted(streams);
            acc.chart += rules.chart(streams);
            acc.listeners += i64::from(streams > 0);
            acc.ms += ms;
            // Countries, then artists, are sorted within the song run.
            let mut c = 0;
            while c < run.len() {
                let country = run[c].country;
                let c_end = c + run[c..].iter().take_while(|p| p.country == country).count();
                let mut cs = 0i64;
                let mut artist_id = i64::MAX;
                for p in &run[c..c_end] {
                    if is_stream(p) == 1 {
                        cs += 1;
                        artist_id = artist_id.min(artist_ids[p.artist as usize]);
                    }
                }
                if cs > 0 {
                    let key = (u64::from(country) << 32) | u64::from(song);
                    let e = scratch.countries.entry(key).or_insert(CountryAcc {
                        streams: 0,
                        listeners: 0,
                        artist_id,
                    });
                    e.add(&CountryAcc {
                        streams: rules.chart(cs),
                        listeners: 1,
                        artist_id,
                    });
                }
                c = c_end;
            }
            // A song normally has one artist; split the run by artist only when it does not.
            let first = run[0].artist;
            if run.iter().all(|p| p.artist == first) {
                scratch.artists.push(ArtistPart {
                    artist: first,
                    plays: run.len() as i64,
                    streams,
                    counted: rules.counted(streams),
                    ms,
                });
                let id = artist_ids[first as usize];
                acc_artist_range(&mut totals.songs[song as usize], id, id);
            } else {
                // The cap applies per (artist, song) here: add the run up by artist first.
                let mut by_artist: Vec<ArtistPart> = run
                    .iter()
                    .map(|p| ArtistPart {
                        artist: p.artist,
                        plays: 1,
                        streams: is_stream(p),
                        counted: 0,
                        ms: i64::from(p.ms),
                    })
                    .collect();
                by_artist.sort_unstable_by_key(|p| p.artist);
                for group in by_artist.chunk_by(|a, b| a.artist == b.artist) {
                    let mut part = group[0];
                    for p in &group[1..] {
                        part.plays += p.plays;
                        part.streams += p.streams;
                        part.ms += p.ms;
                    }
                    part.counted = rules.counted(part.streams);
                    scratch.artists.push(part);
                    let id = artist_ids[part.artist as usize];
                    acc_artist_range(&mut totals.songs[song as usize], id, id);
                }
            }
            s = s_end;
        }
        // The user's artists: usually a few entries; sort and add up runs.
        let parts = &mut scratch.artists;
        parts.sort_unstable_by_key(|p| p.artist);
        let mut a = 0;
        while a < parts.len() {
            let artist = parts[a].artist;
            let (mut plays, mut streams, mut counted, mut ms) = (0, 0, 0, 0);
            while a < parts.len() && parts[a].artist == artist {
                plays += parts[a].plays;
                streams += parts[a].streams;
                counted += parts[a].counted;
                ms += parts[a].ms;
                a += 1;
            }
            let acc = &mut totals.artists[artist as usize];
            acc.plays += plays;
            acc.streams += counted;
            acc.listeners += i64::from(streams > 0);
            acc.ms += ms;
        }
        u = u_end;
    }
}

fn acc_artist_range(acc: &mut SongAcc, lo: i64, hi: i64) {
    acc.artist_min = acc.artist_min.min(lo);
    acc.artist_max = acc.artist_max.max(hi);
}

#[derive(Debug, Clone, Copy)]
struct SongAcc {
    plays: i64,
    streams: i64,
    chart: i64,
    listeners: i64,
    ms: i64,
    artist_min: i64,
    artist_max: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct ArtistAcc {
    plays: i64,
    streams: i64,
    listeners: i64,
    ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CountryAcc {
    streams: i64,
    listeners: i64,
    /// The smallest artist id among the pair's streams.
    artist_id: i64,
}

impl CountryAcc {
    fn add(&mut self, other: &CountryAcc) {
        self.streams += other.streams;
        self.listeners += other.listeners;
        self.artist_id = self.artist_id.min(other.artist_id);
    }
}

/// Bytes a (country, song) entry takes in a hash map, with the table's slack.
const COUNTRY_ENTRY_BYTES: u64 = 48;
/// A (country, song) entry in a run file: key, streams, listeners, artist id.
const COUNTRY_RUN_BYTES: usize = 32;

/// The day's (country, song) totals: a hash map while it fits its share of the budget, then
/// also runs on disk (each sorted by key) that are merged when the candidates are read.
///
/// Why not dense arrays like songs: countries x songs is mostly empty, and can be large (a big
/// catalog streamed in every market).
pub struct CountryTotals {
    map: IdMap<u64, CountryAcc>,
    limit: usize,
    runs: Vec<PathBuf>,
    dir: PathBuf,
    spilled_entries: u64,
}

impl Default for CountryTotals {
    fn default() -> Self {
        CountryTotals {
            map: IdMap::default(),
            limit: usize::MAX,
            runs: Vec::new(),
            dir: PathBuf::new(),
            spilled_entries: 0,
        }
    }
}

impl CountryTotals {
    /// Adds a bucket's totals (and empties them).
    fn absorb(&mut self, bucket: &mut IdMap<u64, CountryAcc>) -> Result<()> {
        for (k, v) in bucket.drain() {
            self.map.entry(k).and_modify(|a| a.add(&v)).or_insert(v);
        }
        if self.map.len() > self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the map as one run sorted by key and empties it.
    fn spill(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut entries: Vec<(u64, CountryAcc)> = self.map.drain().collect();
        entries.sort_unstable_by_key(|e| e.0);
        let path = self.dir.join(format!("run-{}.bin", self.runs.len()));
        let f = File::create(&path).map_err(|e| io(&path, e))?;
        let mut w = BufWriter::with_capacity(256 << 10, f);
        for (k, a) in &entries {
            let mut b = [0u8; COUNTRY_RUN_BYTES];
            b[0..8].copy_from_slice(&k.to_le_bytes());
            b[8..16].copy_from_slice(&a.streams.to_le_bytes());
            b[16..24].copy_from_slice(&a.listeners.to_le_bytes());
            b[24..32].copy_from_slice(&a.artist_id.to_le_bytes());
            w.write_all(&b).map_err(|e| io(&path, e))?;
        }
        w.flush().map_err(|e| io(&path, e))?;
        self.spilled_entries += entries.len() as u64;
        self.runs.push(path);
        Ok(())
    }

    /// Every (country, song) total once: straight from the map, or merged from the runs.
    fn into_entries(mut self) -> Result<CountryEntries> {
        if self.runs.is_empty() {
            return Ok(CountryEntries::Memory(self.map.into_iter()));
        }
        if !self.map.is_empty() {
            self.spill()?;
        }
        let mut merge = RunMerge {
            readers: Vec::new(),
            heads: Vec::new(),
            heap: std::collections::BinaryHeap::new(),
        };
        for path in &self.runs {
            let f = File::open(path).map_err(|e| io(path, e))?;
            let len = f.metadata().map_err(|e| io(path, e))?.len();
            // The merge reads whole entries; a short file would lose its last one silently.
            if len % COUNTRY_RUN_BYTES as u64 != 0 {
                return Err(Error::Internal(format!(
                    "country run {} ends inside an entry",
                    path.display()
                )));
            }
            merge
                .readers
                .push((path.clone(), BufReader::with_capacity(64 << 10, f)));
            merge.heads.push(None);
            merge.advance(merge.readers.len() - 1)?;
        }
        Ok(CountryEntries::Runs(merge))
    }
}

enum CountryEntries {
    Memory(std::collections::hash_map::IntoIter<u64, CountryAcc>),
    Runs(RunMerge),
}

impl CountryEntries {
    fn next_entry(&mut self) -> Result<Option<(u64, CountryAcc)>> {
        match self {
            CountryEntries::Memory(it) => Ok(it.next()),
            CountryEntries::Runs(m) => m.next_entry(),
        }
    }
}

/// A k-way merge of sorted runs that adds up the entries of equal keys.
struct RunMerge {
    readers: Vec<(PathBuf, BufReader<File>)>,
    heads: Vec<Option<CountryAcc>>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
}

impl RunMerge {
    /// Reads run `i`'s next entry into its head (and the heap).
    fn advance(&mut self, i: usize) -> Result<()> {
        let (path, r) = &mut self.readers[i];
        let mut b = [0u8; COUNTRY_RUN_BYTES];
        match r.read_exact(&mut b) {
            Ok(()) => {
                let at = |o: usize| {
                    let mut x = [0u8; 8];
                    x.copy_from_slice(&b[o..o + 8]);
                    x
                };
                let key = u64::from_le_bytes(at(0));
                self.heads[i] = Some(CountryAcc {
                    streams: i64::from_le_bytes(at(8)),
                    listeners: i64::from_le_bytes(at(16)),
                    artist_id: i64::from_le_bytes(at(24)),
                });
                self.heap.push(std::cmp::Reverse((key, i)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => self.heads[i] = None,
            Err(e) => return Err(io(path, e)),
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<(u64, CountryAcc)>> {
        let Some(std::cmp::Reverse((key, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let mut acc = self.heads[i]
            .take()
            .ok_or_else(|| Error::Internal("run head".into()))?;
        self.advance(i)?;
        while let Some(&std::cmp::Reverse((k, j))) = self.heap.peek() {
            if k != key {
                break;
            }
            self.heap.pop();
            let other = self.heads[j]
                .take()
                .ok_or_else(|| Error::Internal("run head".into()))?;
            acc.add(&other);
            self.advance(j)?;
        }
        Ok(Some((key, acc)))
    }
}

/// The country chart candidates as batches of bounded size, read lazily (see
/// [`Totals::country_candidates`]).
pub struct CountryCandidates {
    entries: CountryEntries,
    song_ids: Vec<i64>,
    schema: SchemaRef,
    rows: usize,
    /// The tally's spill directory, kept until the runs are read.
    _dir: Option<SpillDir>,
}

impl CountryCandidates {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let (mut scope, mut song, mut artist, mut streams, mut listeners) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        while scope.len() < self.rows {
            let Some((k, a)) = self.entries.next_entry()? else {
                break;
            };
            scope.push((k >> 32) as i32);
            song.push(self.song_ids[(k & 0xffff_ffff) as usize]);
            artist.push(a.artist_id);
            streams.push(a.streams);
            listeners.push(a.listeners);
        }
        if scope.is_empty() {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(scope)),
            Arc::new(Int64Array::from(song)),
            Arc::new(Int64Array::from(artist)),
            Arc::new(Int64Array::from(streams)),
            Arc::new(Int64Array::from(listeners)),
        ];
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

impl Iterator for CountryCandidates {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

/// Dense indices in the order of their ids (outputs are sorted by id).
fn id_order(ids: &[i64], counted: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).filter(|&i| counted(i)).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    order
}

/// The day's totals per song, artist and (country, song).
pub struct Totals {
    songs: Vec<SongAcc>,
    artists: Vec<ArtistAcc>,
    countries: CountryTotals,
    dir: Option<SpillDir>,
    song_ids: Vec<i64>,
    artist_ids: Vec<i64>,
    /// Plays dropped as repeats of a (user, play_id) already counted.
    duplicates: u64,
    /// Buckets of the first partitioning, buffer spills and bucket re-splits (for the run record).
    pub buckets: usize,
    pub spills: u32,
    pub splits: usize,
}

impl Totals {
    /// Zeroed totals; the ids are set once, when the threads' totals are merged.
    fn new(songs: usize, artists: usize) -> Totals {
        Totals {
            songs: vec![
                SongAcc {
                    plays: 0,
                    streams: 0,
                    chart: 0,
                    listeners: 0,
                    ms: 0,
                    artist_min: i64::MAX,
                    artist_max: i64::MIN,
                };
                songs
            ],
            artists: vec![ArtistAcc::default(); artists],
            countries: CountryTotals::default(),
            dir: None,
            song_ids: Vec::new(),
            artist_ids: Vec::new(),
            duplicates: 0,
            buckets: 0,
            spills: 0,
            splits: 0,
        }
    }

    fn merge(&mut self, other: Totals) {
        self.duplicates += other.duplicates;
        for (a, b) in self.songs.iter_mut().zip(&other.songs) {
            a.plays += b.plays;
            a.streams += b.streams;
            a.chart += b.chart;
            a.listeners += b.listeners;
            a.ms += b.ms;
            a.artist_min = a.artist_min.min(b.artist_min);
            a.artist_max = a.artist_max.max(b.artist_max);
        }
        for (a, b) in self.artists.iter_mut().zip(&other.artists) {
            a.plays += b.plays;
            a.streams += b.streams;
            a.listeners += b.listeners;
            a.ms += b.ms;
        }
    }

    /// Plays not counted because the same user's play_id had been counted already.
    pub fn duplicate_plays(&self) -> u64 {
        self.duplicates
    }

    /// Songs that the day's plays give two artists: (song_id, smallest, largest artist id).
    pub fn artist_conflicts(&self, limit: usize) -> Vec<(i64, i64, i64)> {
        let mut c: Vec<_> = self
            .songs
            .iter()
            .zip(&self.song_ids)
            .filter(|(a, _)| a.plays > 0 && a.artist_min != a.artist_max)
            .map(|(a, &id)| (id, a.artist_min, a.artist_max))
            .collect();
        c.sort_unstable();
        c.truncate(limit);
        c
    }

    /// `daily_song_counts` rows, by song_id.
    pub fn song_counts(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        // A song seen only in dropped duplicates has no row.
        let order = id_order(&self.song_ids, |i| self.songs[i].plays > 0);
        let col = |f: &dyn Fn(&SongAcc) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|&i| f(&self.songs[i])),
            ))
        };
        let columns = vec![
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|&i| self.song_ids[i]),
            )) as ArrayRef,
            col(&|a| a.artist_min),
            col(&|a| a.plays),
            col(&|a| a.streams),
            col(&|a| a.listeners),
            col(&|a| a.ms),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }

    /// `daily_artist_counts` rows, by artist_id.
    pub fn artist_counts(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let order = id_order(&self.artist_ids, |i| self.artists[i].plays > 0);
        let col = |f: &dyn Fn(&ArtistAcc) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|&i| f(&self.artists[i])),
            ))
        };
        let columns = vec![
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|&i| self.artist_ids[i]),
            )) as ArrayRef,
            col(&|a| a.plays),
            col(&|a| a.streams),
            col(&|a| a.listeners),
            col(&|a| a.ms),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }

    /// Global chart candidates: (scope, song_id, artist_id, streams, listeners) with capped streams.
    pub fn global_candidates(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let counted: Vec<usize> = (0..self.songs.len())
            .filter(|&i| self.songs[i].plays > 0)
            .collect();
        let of = |f: &dyn Fn(usize) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(counted.iter().map(|&i| f(i))))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["global"; counted.len()])),
            of(&|i| self.song_ids[i]),
            of(&|i| self.songs[i].artist_min),
            of(&|i| self.songs[i].chart),
            of(&|i| self.songs[i].listeners),
        ];
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }

    /// Country chart candidates, the scope as the country's code (see `CountryCodes`), in
    /// batches of `rows`. Takes the (country, song) totals out of `self`.
    pub fn country_candidates(
        &mut self,
        schema: &SchemaRef,
        rows: usize,
    ) -> Result<CountryCandidates> {
        Ok(CountryCandidates {
            entries: std::mem::take(&mut self.countries).into_entries()?,
            song_ids: self.song_ids.clone(),
            schema: schema.clone(),
            rows: rows.max(1),
            _dir: self.dir.take(),
        })
    }

    /// (country, song) totals spilled to disk (0 when they fit the budget), for the run record.
    pub fn country_entries_spilled(&self) -> u64 {
        self.countries.spilled_entries
    }

    /// Bytes the totals hold (for the run record).
    pub fn heap_bytes(&self) -> u64 {
        (self.songs.len() * size_of::<SongAcc>()
            + self.artists.len() * size_of::<ArtistAcc>()
            + self.countries.map.capacity() * (8 + size_of::<CountryAcc>() + 1)
            + (self.song_ids.len() + self.artist_ids.len()) * 8) as u64
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
