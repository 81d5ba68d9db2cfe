//! Counting one bucket: its plays sorted by user, duplicates dropped, the cap applied, each user's
//! streams added to the song, artist and (country, song) sums.

use super::*;

pub(super) struct Rules {
    pub(super) cap: Option<i64>,
    pub(super) cap_counts: bool,
}

impl Rules {
    pub(super) fn chart(&self, streams: i64) -> i64 {
        self.cap.map_or(streams, |c| streams.min(c))
    }

    pub(super) fn counted(&self, streams: i64) -> i64 {
        if self.cap_counts {
            self.chart(streams)
        } else {
            streams
        }
    }
}

/// A user's plays of one artist (a song run contributes one entry per artist it carries).
#[derive(Clone, Copy)]
pub(super) struct ArtistPart {
    pub(super) artist: u32,
    pub(super) plays: i64,
    pub(super) streams: i64,
    /// Streams as the counts report them: the cap is per user and song, so it applies here,
    /// before the user's songs by one artist are added up.
    pub(super) counted: i64,
    pub(super) ms: i64,
}

#[derive(Default)]
pub(super) struct Scratch {
    pub(super) artists: Vec<ArtistPart>,
    /// The bucket's (country, song) totals, added to the day's after the bucket.
    pub(super) countries: IdMap<u64, CountryAcc>,
}

/// The values behind a play's dense indices.
pub(super) struct Keys<'a> {
    pub(super) song_ids: &'a [i64],
    pub(super) artist_ids: &'a [i64],
    pub(super) country_names: &'a [String],
}

impl Keys<'_> {
    /// Orders two copies of one play by value: (ms_played, song_id, country, artist_id). The
    /// indices' own order is that of first appearance, which depends on the input's order.
    pub(super) fn copies(&self, a: &Play, b: &Play) -> std::cmp::Ordering {
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
pub(super) fn drop_duplicates(rows: &mut Vec<Play>, keys: &Keys) -> u64 {
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
pub(super) fn finish_bucket(
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

pub(super) fn acc_artist_range(acc: &mut SongAcc, lo: i64, hi: i64) {
    acc.artist_min = acc.artist_min.min(lo);
    acc.artist_max = acc.artist_max.max(hi);
}

#[derive(Debug, Clone, Copy)]
pub(super) struct SongAcc {
    pub(super) plays: i64,
    pub(super) streams: i64,
    pub(super) chart: i64,
    pub(super) listeners: i64,
    pub(super) ms: i64,
    pub(super) artist_min: i64,
    pub(super) artist_max: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ArtistAcc {
    pub(super) plays: i64,
    pub(super) streams: i64,
    pub(super) listeners: i64,
    pub(super) ms: i64,
}
