//! Winsorization: capping each continuous metric at a percentile of its own distribution within
//! the experiment, so a handful of extreme listeners cannot swing a mean.
//!
//! The cap is the exact percentile NumPy computes (`np.percentile`, linear interpolation) over
//! the experiment's usable `user_metrics` values, found in bounded memory: a first pass counts
//! values per bucket of the top 16 bits of an order-preserving integer image of the float, which
//! locates the bucket holding each wanted rank; later passes either refine inside that bucket by
//! the next 16 bits or, once it is small, collect its values and pick the rank exactly. Typically
//! two passes; at most five (64 bits); memory a few histograms, whatever the number of users.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::columns::StrColumn;
use crate::error::Result;

/// Upper caps of one experiment's continuous metrics (infinite: not capped).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Caps {
    pub minutes_listened: f64,
    pub sessions: f64,
    pub pre_minutes_listened: f64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            minutes_listened: f64::INFINITY,
            sessions: f64::INFINITY,
            pre_minutes_listened: f64::INFINITY,
        }
    }
}

impl Caps {
    /// Caps `[minutes, sessions, converted, retained, pre_minutes]`.
    #[inline]
    pub fn apply(&self, v: [f64; 5]) -> [f64; 5] {
        [
            v[0].min(self.minutes_listened),
            v[1].min(self.sessions),
            v[2],
            v[3],
            v[4].min(self.pre_minutes_listened),
        ]
    }

    fn from_values(v: [f64; 3]) -> Self {
        Caps {
            minutes_listened: v[0],
            sessions: v[1],
            pre_minutes_listened: v[2],
        }
    }
}

/// The capped columns, in the order of [`Caps`] (and of the scan's columns 1..=3).
pub const CAPPED: [&str; 3] = ["minutes_listened", "sessions", "pre_minutes_listened"];

const BUCKET_BITS: u32 = 16;
/// A bucket with at most this many values is collected and sorted rather than refined.
const COLLECT_LIMIT: u64 = 1 << 18;

/// An order-preserving image of a float in `u64` (for non-NaN values).
fn key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn from_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// The search for the value of one rank among the values of one column.
#[derive(Debug)]
enum Select {
    /// Counting the values whose key starts with `prefix` (`bits` long) by their next 16 bits.
    Histogram {
        prefix: u64,
        bits: u32,
        rank: u64,
        counts: Vec<u64>,
    },
    /// Gathering the values whose key starts with `prefix`, to pick `rank` among them.
    Collect {
        prefix: u64,
        bits: u32,
        rank: u64,
        values: Vec<f64>,
    },
    Done(f64),
}

fn matches(k: u64, prefix: u64, bits: u32) -> bool {
    bits == 0 || k >> (64 - bits) == prefix
}

impl Select {
    #[inline]
    fn see(&mut self, k: u64, v: f64) {
        match self {
            Select::Histogram {
                prefix,
                bits,
                counts,
                ..
            } if matches(k, *prefix, *bits) => {
                counts[((k >> (64 - *bits - BUCKET_BITS)) & 0xFFFF) as usize] += 1;
            }
            Select::Collect {
                prefix,
                bits,
                values,
                ..
            } if matches(k, *prefix, *bits) => values.push(v),
            _ => {}
        }
    }

    /// After a pass: narrow a histogram to the bucket holding the rank, or pick from the
    /// collected values.
    fn settle(&mut self) {
        *self = match std::mem::replace(self, Select::Done(f64::NAN)) {
            Select::Histogram {
                prefix,
                bits,
                rank,
                counts,
            } => refine(prefix, bits, rank, &counts),
            Select::Collect {
                rank, mut values, ..
            } => {
                values.sort_by(f64::total_cmp);
                Select::Done(values[rank as usize])
            }
            done => done,
        }
    }
}

/// The next state of a search once the histogram of the bucket `prefix` is known.
fn refine(prefix: u64, bits: u32, rank: u64, counts: &[u64]) -> Select {
    let mut below = 0;
    for (bucket, &count) in counts.iter().enumerate() {
        if rank < below + count {
            let (prefix, bits, rank) = (
                (prefix << BUCKET_BITS) | bucket as u64,
                bits + BUCKET_BITS,
                rank - below,
            );
            return if bits == 64 {
                Select::Done(from_key(prefix))
            } else if count <= COLLECT_LIMIT {
                Select::Collect {
                    prefix,
                    bits,
                    rank,
                    values: Vec::with_capacity(count as usize),
                }
            } else {
                Select::Histogram {
                    prefix,
                    bits,
                    rank,
                    counts: vec![0; 1 << BUCKET_BITS],
                }
            };
        }
        below += count;
    }
    Select::Done(f64::NAN) // unreachable: the rank is below the total count
}

/// One capped column of one experiment.
#[derive(Debug)]
struct Column {
    n: u64,
    first: Vec<u64>,
    /// The two order statistics the percentile interpolates between.
    select: Vec<Select>,
}

/// NumPy's `percentile(..., method="linear")` from the two order statistics around it.
fn interpolate(lo: f64, hi: f64, gamma: f64) -> f64 {
    // np.lib._function_base_impl._lerp: computed from the nearer end for accuracy.
    let diff = hi - lo;
    if gamma >= 0.5 {
        hi - diff * (1.0 - gamma)
    } else {
        lo + diff * gamma
    }
}

/// The positions `(floor, ceil, gamma)` of percentile `p` among `n` sorted values, as NumPy.
fn positions(n: u64, p: f64) -> (u64, u64, f64) {
    let virtual_index = (p / 100.0) * (n - 1) as f64;
    let lo = virtual_index.floor();
    let gamma = virtual_index - lo;
    let lo = (lo as u64).min(n - 1);
    (lo, (lo + 1).min(n - 1), gamma)
}

/// A usable value (what the join accepts).
#[inline]
fn usable(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// Reads the scan's batches and lets `see` look at every usable value of every capped column.
async fn pass(
    mut stream: SendableRecordBatchStream,
    columns: &mut HashMap<String, [Column; 3]>,
    mut see: impl FnMut(&mut Column, u64, f64),
    new_experiments: bool,
) -> Result<()> {
    while let Some(batch) = stream.next().await.transpose()? {
        let experiment = StrColumn::new(batch.column(0), "experiment_id")?;
        let values: Vec<_> = (1..=3)
            .map(|c| batch.column(c).as_primitive::<Float64Type>().clone())
            .collect();
        // Rows of one experiment come in runs; look the experiment up once per run.
        let mut i = 0;
        while i < batch.num_rows() {
            let Some(e) = experiment.get(i) else {
                i += 1;
                continue;
            };
            let mut end = i + 1;
            while end < batch.num_rows() && experiment.get(end) == Some(e) {
                end += 1;
            }
            let cols = match columns.get_mut(e) {
                Some(c) => c,
                None if new_experiments => columns.entry(e.to_string()).or_insert_with(|| {
                    std::array::from_fn(|_| Column {
                        n: 0,
                        first: vec![0; 1 << BUCKET_BITS],
                        select: Vec::new(),
                    })
                }),
                None => {
                    i = end;
                    continue;
                }
            };
            for (col, array) in cols.iter_mut().zip(&values) {
                for r in i..end {
                    if array.is_valid(r) {
                        let v = array.value(r);
                        if usable(v) {
                            see(col, key(v), v);
                        }
                    }
                }
            }
            i = end;
        }
    }
    Ok(())
}

/// The caps at `percentile` of every experiment in the scans `open` gives (one per pass).
pub async fn caps<F>(percentile: f64, mut open: impl FnMut() -> F) -> Result<HashMap<String, Caps>>
where
    F: Future<Output = Result<SendableRecordBatchStream>>,
{
    let mut columns: HashMap<String, [Column; 3]> = HashMap::new();
    let mut passes = 1;
    pass(
        open().await?,
        &mut columns,
        |col, k, _| {
            col.n += 1;
            col.first[(k >> (64 - BUCKET_BITS)) as usize] += 1;
        },
        true,
    )
    .await?;
    for col in columns.values_mut().flatten() {
        if col.n > 0 {
            let (lo, hi, _) = positions(col.n, percentile);
            col.select = [lo, hi]
                .iter()
                .map(|&rank| refine(0, 0, rank, &col.first))
                .collect();
        }
        col.first = Vec::new();
    }
    let pending = |columns: &HashMap<String, [Column; 3]>| {
        columns
            .values()
            .flatten()
            .flat_map(|c| &c.select)
            .any(|s| !matches!(s, Select::Done(_)))
    };
    while pending(&columns) {
        passes += 1;
        pass(
            open().await?,
            &mut columns,
            |col, k, v| col.select.iter_mut().for_each(|s| s.see(k, v)),
            false,
        )
        .await?;
        for col in columns.values_mut().flatten() {
            col.select.iter_mut().for_each(Select::settle);
        }
    }
    tracing::info!(
        passes,
        experiments = columns.len(),
        percentile,
        "winsorization caps found"
    );
    Ok(columns
        .into_iter()
        .map(|(id, cols)| {
            let caps = cols.map(|col| match (col.n, col.select.as_slice()) {
                (0, _) => f64::INFINITY,
                (n, [Select::Done(lo), Select::Done(hi)]) => {
                    interpolate(*lo, *hi, positions(n, percentile).2)
                }
                _ => f64::NAN,
            });
            (id, Caps::from_values(caps))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_order_of_floats() {
        let mut v = [-3.5, -0.0, 0.0, 1e-300, 2.0, 7.25, 1e300, -1e300];
        v.sort_by(f64::total_cmp);
        let keys: Vec<u64> = v.iter().map(|&x| key(x)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(v.iter().all(|&x| from_key(key(x)).to_bits() == x.to_bits()));
    }

    /// The search finds the same order statistics as a full sort, whether the wanted bucket is
    /// collected at once or refined (many equal values force refinement down to one key).
    #[test]
    fn selection_matches_a_sort() {
        let mut values: Vec<f64> = (0..300_000)
            .map(|i| ((i * 7919) % 1000) as f64 / 8.0)
            .collect();
        values.extend(std::iter::repeat_n(42.0, 300_000));
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for rank in [0, 1, 299_999, 300_000, 450_000, 599_999] {
            let mut first = vec![0u64; 1 << BUCKET_BITS];
            values
                .iter()
                .for_each(|&v| first[(key(v) >> 48) as usize] += 1);
            let mut s = refine(0, 0, rank, &first);
            while !matches!(s, Select::Done(_)) {
                values.iter().for_each(|&v| s.see(key(v), v));
                s.settle();
            }
            let Select::Done(found) = s else {
                unreachable!()
            };
            assert_eq!(found, sorted[rank as usize], "rank {rank}");
        }
    }

    #[test]
    fn percentile_positions_follow_numpy() {
        // np.percentile(np.arange(10.0), 99) == 8.91; np.percentile([1.0, 2.0], 50) == 1.5
        let (lo, hi, g) = positions(10, 99.0);
        assert_eq!((lo, hi), (8, 9));
        assert!((interpolate(8.0, 9.0, g) - 8.91).abs() < 1e-12);
        let (lo, hi, g) = positions(2, 50.0);
        assert_eq!((lo, hi, interpolate(1.0, 2.0, g)), (0, 1, 1.5));
        assert_eq!(positions(1, 99.0), (0, 0, 0.0));
    }
}
