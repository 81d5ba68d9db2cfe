//! The best K songs of one user, without sorting the user's scores.
//!
//! Scores arrive a tile of songs at a time. A candidate enters a small buffer only when it is at
//! least the current K-th best score (the threshold), so for a catalog of 100 k songs and K = 50
//! almost every score costs one comparison. When the buffer fills, a partial selection
//! (`select_nth_unstable`) keeps the K best and raises the threshold. The order is total: higher
//! score first, then the smaller song id, so ties resolve the same way everywhere (and as the
//! NumPy reference does).

use std::cmp::Ordering;

/// One candidate: score and the song's index in the catalog (whose ids are ascending).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub song: u32,
}

/// Best first: higher score, then smaller catalog index (= smaller song id).
#[inline]
pub fn better(a: &Candidate, b: &Candidate) -> Ordering {
    b.score.total_cmp(&a.score).then(a.song.cmp(&b.song))
}

/// The running top K of one user.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    buffer: Vec<Candidate>,
    /// No candidate below this can enter the top K (−∞ until K candidates were seen).
    threshold: f32,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            buffer: Vec::with_capacity(4 * k.max(1)),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// Forgets everything, for the next user (keeps the allocation).
    pub fn reset(&mut self) {
        self.buffer.clear();
        self.threshold = f32::NEG_INFINITY;
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Offers a candidate already known to be at least the threshold.
    #[inline]
    pub fn push(&mut self, candidate: Candidate) {
        self.buffer.push(candidate);
        if self.buffer.len() == self.buffer.capacity() {
            self.prune();
        }
    }

    /// Offers the scores of songs `first..first + scores.len()`, skipping those `skip` says.
    #[inline]
    pub fn offer(&mut self, first: u32, scores: &[f32], skip: impl Fn(u32) -> bool) {
        let mut threshold = self.threshold;
        for (j, &score) in scores.iter().enumerate() {
            // Ties at the threshold are kept: the smaller song id may win them.
            if score >= threshold {
                let song = first + j as u32;
                if skip(song) {
                    continue;
                }
                self.push(Candidate { score, song });
                threshold = self.threshold;
            }
        }
    }

    fn prune(&mut self) {
        if self.buffer.len() > self.k && self.k > 0 {
            self.buffer.select_nth_unstable_by(self.k - 1, better);
            self.buffer.truncate(self.k);
            // The K-th best of the kept ones: anything below it can never enter.
            self.threshold = self
                .buffer
                .iter()
                .map(|c| c.score)
                .fold(f32::INFINITY, f32::min);
        } else if self.k == 0 {
            self.buffer.clear();
        }
    }

    /// The top K, best first.
    pub fn finish(&mut self) -> &[Candidate] {
        self.prune();
        self.buffer.sort_unstable_by(better);
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_with_ties_to_the_smaller_song() {
        let scores = [0.5, 0.9, 0.9, 0.1, 0.7, 0.9, 0.3, 0.7];
        let mut top = TopK::new(4);
        top.offer(0, &scores[..3], |_| false);
        top.offer(3, &scores[3..], |_| false);
        let got: Vec<u32> = top.finish().iter().map(|c| c.song).collect();
        assert_eq!(got, vec![1, 2, 5, 4]);
    }

    #[test]
    fn matches_a_full_sort_on_many_tiles_and_skips_excluded_songs() {
        let n = 10_000u32;
        // Coarse scores: many ties, so the tie rule is exercised.
        let scores: Vec<f32> = (0..n).map(|i| ((i * 7919) % 997) as f32 / 8.0).collect();
        let excluded = |s: u32| s.is_multiple_of(13);
        let mut top = TopK::new(50);
        for (t, tile) in scores.chunks(777).enumerate() {
            top.offer((t * 777) as u32, tile, excluded);
        }
        let got: Vec<u32> = top.finish().iter().map(|c| c.song).collect();
        let mut all: Vec<Candidate> = (0..n)
            .filter(|&s| !excluded(s))
            .map(|s| Candidate {
                score: scores[s as usize],
                song: s,
            })
            .collect();
        all.sort_by(better);
        let want: Vec<u32> = all[..50].iter().map(|c| c.song).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn fewer_songs_than_k_gives_them_all() {
        let mut top = TopK::new(10);
        top.offer(0, &[1.0, 3.0, 2.0], |_| false);
        let got: Vec<u32> = top.finish().iter().map(|c| c.song).collect();
        assert_eq!(got, vec![1, 2, 0]);
    }
}
