//! The day's (country, song) totals: a hash map within its budget, sorted runs on disk beyond it,
//! merged when the chart candidates are read.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CountryAcc {
    pub(super) streams: i64,
    pub(super) listeners: i64,
    /// The smallest artist id among the pair's streams.
    pub(super) artist_id: i64,
}

impl CountryAcc {
    pub(super) fn add(&mut self, other: &CountryAcc) {
        self.streams += other.streams;
        self.listeners += other.listeners;
        self.artist_id = self.artist_id.min(other.artist_id);
    }
}

/// Bytes a (country, song) entry takes in a hash map, with the table's slack.
pub(super) const COUNTRY_ENTRY_BYTES: u64 = 48;
/// A (country, song) entry in a run file: key, streams, listeners, artist id.
pub(super) const COUNTRY_RUN_BYTES: usize = 32;

/// The day's (country, song) totals: a hash map while it fits its share of the budget, then
/// also runs on disk (each sorted by key) that are merged when the candidates are read.
///
/// Why not dense arrays like songs: countries x songs is mostly empty, and can be large (a big
/// catalog streamed in every market).
pub struct CountryTotals {
    pub(super) map: IdMap<u64, CountryAcc>,
    pub(super) limit: usize,
    pub(super) runs: Vec<PathBuf>,
    pub(super) dir: PathBuf,
    pub(super) spilled_entries: u64,
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
    pub(super) fn absorb(&mut self, bucket: &mut IdMap<u64, CountryAcc>) -> Result<()> {
        for (k, v) in bucket.drain() {
            self.map.entry(k).and_modify(|a| a.add(&v)).or_insert(v);
        }
        if self.map.len() > self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the map as one run sorted by key and empties it.
    pub(super) fn spill(&mut self) -> Result<()> {
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
    pub(super) fn into_entries(mut self) -> Result<CountryEntries> {
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

pub(super) enum CountryEntries {
    Memory(std::collections::hash_map::IntoIter<u64, CountryAcc>),
    Runs(RunMerge),
}

impl CountryEntries {
    pub(super) fn next_entry(&mut self) -> Result<Option<(u64, CountryAcc)>> {
        match self {
            CountryEntries::Memory(it) => Ok(it.next()),
            CountryEntries::Runs(m) => m.next_entry(),
        }
    }
}

/// A k-way merge of sorted runs that adds up the entries of equal keys.
pub(super) struct RunMerge {
    pub(super) readers: Vec<(PathBuf, BufReader<File>)>,
    pub(super) heads: Vec<Option<CountryAcc>>,
    pub(super) heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
}

impl RunMerge {
    /// Reads run `i`'s next entry into its head (and the heap).
    pub(super) fn advance(&mut self, i: usize) -> Result<()> {
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

    pub(super) fn next_entry(&mut self) -> Result<Option<(u64, CountryAcc)>> {
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
    pub(super) entries: CountryEntries,
    pub(super) song_ids: Vec<i64>,
    pub(super) schema: SchemaRef,
    pub(super) rows: usize,
    /// The tally's spill directory, kept until the runs are read.
    pub(super) _dir: Option<SpillDir>,
}

impl CountryCandidates {
    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
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
