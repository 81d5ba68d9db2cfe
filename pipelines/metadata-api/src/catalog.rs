//! The served catalog: songs by id, and the change feed order `(updated_at, song_id)`.

use std::collections::HashMap;

use streampulse_core::songs::SongRecord;

/// Where a page of the feed starts: after this `(updated_at ms, song_id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedKey(pub i64, pub i64);

impl FeedKey {
    /// The opaque cursor clients pass back.
    pub fn encode(self) -> String {
        format!("{:x}.{:x}", self.0, self.1)
    }

    pub fn decode(s: &str) -> Option<FeedKey> {
        let (a, b) = s.split_once('.')?;
        Some(FeedKey(
            i64::from_str_radix(a, 16).ok()?,
            i64::from_str_radix(b, 16).ok()?,
        ))
    }
}

/// An immutable catalog with a song's ETag computed once.
pub struct Catalog {
    /// Sorted by feed key.
    feed: Vec<(FeedKey, usize)>,
    songs: Vec<(SongRecord, String)>,
    by_id: HashMap<i64, usize>,
}

impl Catalog {
    /// A catalog of `songs`; a song id given twice keeps its last record.
    pub fn new(songs: Vec<SongRecord>) -> Self {
        let mut by_id = HashMap::with_capacity(songs.len());
        let mut kept: Vec<(SongRecord, String)> = Vec::with_capacity(songs.len());
        for song in songs {
            let etag = song.etag();
            match by_id.get(&song.song_id) {
                Some(&i) => kept[i] = (song, etag),
                None => {
                    by_id.insert(song.song_id, kept.len());
                    kept.push((song, etag));
                }
            }
        }
        let mut feed: Vec<(FeedKey, usize)> = kept
            .iter()
            .enumerate()
            .map(|(i, (s, _))| (FeedKey(s.updated_at.timestamp_millis(), s.song_id), i))
            .collect();
        feed.sort_unstable();
        Catalog {
            feed,
            songs: kept,
            by_id,
        }
    }

    pub fn len(&self) -> usize {
        self.songs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.songs.is_empty()
    }

    pub fn get(&self, song_id: i64) -> Option<&(SongRecord, String)> {
        self.by_id.get(&song_id).map(|&i| &self.songs[i])
    }

    /// Up to `limit` songs of the feed from `since_ms` on (inclusive), strictly after `after`;
    /// and the key to continue from when more follow.
    pub fn page(
        &self,
        since_ms: i64,
        after: Option<FeedKey>,
        limit: usize,
    ) -> (Vec<&SongRecord>, Option<FeedKey>) {
        let start = self
            .feed
            .partition_point(|(k, _)| k.0 < since_ms || after.is_some_and(|after| *k <= after));
        let end = (start + limit).min(self.feed.len());
        let page: Vec<&SongRecord> = self.feed[start..end]
            .iter()
            .map(|&(_, i)| &self.songs[i].0)
            .collect();
        let next = (end < self.feed.len() && end > start).then(|| self.feed[end - 1].0);
        (page, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, NaiveDate};

    fn song(id: i64, ms: i64) -> SongRecord {
        SongRecord {
            song_id: id,
            title: format!("t{id}"),
            artist_id: 1,
            artist_name: "a".into(),
            album_id: 1,
            label_id: 1,
            isrc: "QZ0000000001".into(),
            duration_ms: 1,
            release_date: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
            genre: "pop".into(),
            updated_at: DateTime::from_timestamp_millis(ms).unwrap(),
        }
    }

    #[test]
    fn the_feed_pages_in_updated_at_then_id_order_without_gaps() {
        let cat = Catalog::new(vec![song(3, 10), song(1, 20), song(2, 10), song(4, 30)]);
        let (p1, next) = cat.page(0, None, 2);
        assert_eq!(p1.iter().map(|s| s.song_id).collect::<Vec<_>>(), [2, 3]);
        let (p2, next) = cat.page(0, next, 2);
        assert_eq!(p2.iter().map(|s| s.song_id).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(next, None);
        let (since, _) = cat.page(20, None, 10);
        assert_eq!(since.iter().map(|s| s.song_id).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(
            FeedKey::decode(&FeedKey(10, 3).encode()),
            Some(FeedKey(10, 3))
        );
        assert_eq!(FeedKey::decode("zz"), None);
    }
}
