//! The day's totals, and the output batches (`daily_song_counts`, `daily_artist_counts`) made from them.

use super::*;

/// Dense indices in the order of their ids (outputs are sorted by id).
pub(super) fn id_order(ids: &[i64], counted: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).filter(|&i| counted(i)).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    order
}

/// The day's totals per song, artist and (country, song).
pub struct Totals {
    pub(super) songs: Vec<SongAcc>,
    pub(super) artists: Vec<ArtistAcc>,
    pub(super) countries: CountryTotals,
    pub(super) dir: Option<SpillDir>,
    pub(super) song_ids: Vec<i64>,
    pub(super) artist_ids: Vec<i64>,
    /// Plays dropped as repeats of a (user, play_id) already counted.
    pub(super) duplicates: u64,
    /// Buckets of the first partitioning, buffer spills and bucket re-splits (for the run record).
    pub buckets: usize,
    pub spills: u32,
    pub splits: usize,
}

impl Totals {
    /// Zeroed totals; the ids are set once, when the threads' totals are merged.
    pub(super) fn new(songs: usize, artists: usize) -> Totals {
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

    pub(super) fn merge(&mut self, other: Totals) {
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
