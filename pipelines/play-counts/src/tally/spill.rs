//! The buffered plays: their 32-byte spill encoding, the buckets by user, and their spill files.

use super::*;

/// One play as the tally keeps it: ids of songs and artists are dense indices of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Play {
    pub(super) user: i64,
    pub(super) id: i64,
    pub(super) song: u32,
    pub(super) artist: u32,
    pub(super) ms: i32,
    pub(super) country: u32,
}

pub(super) const PLAY_BYTES: usize = 32;

impl Play {
    pub(super) fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.user.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..20].copy_from_slice(&self.song.to_le_bytes());
        out[20..24].copy_from_slice(&self.artist.to_le_bytes());
        out[24..28].copy_from_slice(&self.ms.to_le_bytes());
        out[28..32].copy_from_slice(&self.country.to_le_bytes());
    }

    pub(super) fn decode(b: &[u8]) -> Play {
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
pub(super) fn bucket(user: i64, level: u32, buckets: usize) -> usize {
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
pub(super) const MAX_BUCKETS: usize = 512;

/// Rows buffered per chunk of a bucket (at most): chunks, not one growing vector, so that the
/// buffer never holds twice its data while a vector doubles.
pub(super) const CHUNK_ROWS: usize = 4096;

/// Buckets whose rows are spread over memory chunks and, once spilled, a file.
pub(super) struct Buckets {
    pub(super) level: u32,
    /// Rows per chunk: smaller when there are many buckets, so that their part-filled chunks
    /// stay a small share of the buffer.
    pub(super) chunk_rows: usize,
    pub(super) dir: PathBuf,
    pub(super) chunks: Vec<Vec<Vec<Play>>>,
    pub(super) files: Vec<Option<BufWriter<File>>>,
    pub(super) spilled_rows: Vec<u64>,
}

impl Buckets {
    pub(super) fn new(count: usize, level: u32, dir: PathBuf, buffer_rows: u64) -> Buckets {
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

    pub(super) fn count(&self) -> usize {
        self.chunks.len()
    }

    /// Adds a play; true when that took a new chunk.
    pub(super) fn push(&mut self, play: Play) -> bool {
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

    pub(super) fn path(&self, b: usize) -> PathBuf {
        self.dir.join(format!("bucket-{b}.bin"))
    }

    /// Appends every bucket's chunks to its file and frees them.
    pub(super) fn spill(&mut self) -> Result<()> {
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
    pub(super) fn into_parts(mut self) -> Result<Vec<Part>> {
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
pub(super) const MAX_LEVEL: u32 = 8;

/// One bucket to finish.
pub(super) struct Part {
    pub(super) level: u32,
    pub(super) chunks: Vec<Vec<Play>>,
    pub(super) file: Option<PathBuf>,
    pub(super) rows: u64,
}

impl Part {
    /// Every row of the bucket, spilled ones first, in one vector (for sorting).
    pub(super) fn load(self) -> Result<Vec<Play>> {
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
    pub(super) fn split(self, count: usize, dir: PathBuf) -> Result<Vec<Part>> {
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

pub(super) fn read_plays(path: &Path, mut each: impl FnMut(Play)) -> Result<()> {
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
