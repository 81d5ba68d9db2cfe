//! The top N songs of every chart scope, in one streaming pass with a bounded heap per scope.
//!
//! Why not SQL: `row_number() OVER (PARTITION BY scope ORDER BY ...)` sorts every (scope, song)
//! group of the day to keep 200 of each; that sort was a third of the whole run. A heap per scope
//! holds at most N entries, so memory is scopes x N whatever the day's size.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::{Error, Result};

/// One candidate, ordered by chart position: more streams first, then more listeners, then the
/// smaller song id (and artist id), so `a < b` means "a ranks above b".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    streams: i64,
    listeners: i64,
    song_id: i64,
    artist_id: i64,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .streams
            .cmp(&self.streams)
            .then(other.listeners.cmp(&self.listeners))
            .then(self.song_id.cmp(&other.song_id))
            .then(self.artist_id.cmp(&other.artist_id))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The schema of [`top_per_scope`]'s input and output.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("scope", DataType::Utf8, false),
        Field::new("song_id", DataType::Int64, false),
        Field::new("artist_id", DataType::Int64, false),
        Field::new("streams", DataType::Int64, false),
        Field::new("listeners", DataType::Int64, false),
    ]))
}

/// Reads (scope, song_id, artist_id, streams, listeners) rows and returns the best `n` of each
/// scope with positive streams, ordered by scope, then chart position. A scope given as an
/// integer code is named through `scope_names` (asked once per batch: codes may still be
/// interned while the input streams).
pub async fn top_per_scope(
    mut input: SendableRecordBatchStream,
    n: usize,
    scope_names: Option<&(dyn Fn() -> Vec<String> + Send + Sync)>,
) -> Result<RecordBatch> {
    let mut heaps: BTreeMap<String, BinaryHeap<Entry>> = BTreeMap::new();
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_columns() != 5 {
            return Err(Error::Internal(format!(
                "top-k input has {} columns, not 5",
                batch.num_columns()
            )));
        }
        let scope = match (batch.column(0).data_type(), scope_names) {
            (DataType::Int32, Some(names)) => {
                let names = names();
                let codes = batch
                    .column(0)
                    .as_primitive::<arrow::datatypes::Int32Type>();
                let named = codes
                    .values()
                    .iter()
                    .map(|&c| {
                        usize::try_from(c)
                            .ok()
                            .and_then(|c| names.get(c))
                            .map(String::as_str)
                    })
                    .collect::<Option<Vec<&str>>>()
                    .ok_or_else(|| Error::Internal("a scope code without a name".into()))?;
                Arc::new(StringArray::from(named)) as arrow::array::ArrayRef
            }
            _ => arrow::compute::cast(batch.column(0), &DataType::Utf8)?,
        };
        let scope = scope.as_string::<i32>();
        let int = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Int64);
        let (song, artist, streams, listeners) = (int(1)?, int(2)?, int(3)?, int(4)?);
        let (song, artist) = (
            song.as_primitive::<Int64Type>(),
            artist.as_primitive::<Int64Type>(),
        );
        let (streams, listeners) = (
            streams.as_primitive::<Int64Type>(),
            listeners.as_primitive::<Int64Type>(),
        );
        for row in 0..batch.num_rows() {
            let e = Entry {
                streams: streams.value(row),
                listeners: listeners.value(row),
                song_id: song.value(row),
                artist_id: artist.value(row),
            };
            if e.streams <= 0 {
                continue;
            }
            let heap = match heaps.get_mut(scope.value(row)) {
                Some(h) => h,
                None => heaps.entry(scope.value(row).to_string()).or_default(),
            };
            // The heap's top is its worst entry: replace it only with something better.
            if heap.len() < n {
                heap.push(e);
            } else if heap.peek().is_some_and(|worst| e < *worst) {
                heap.pop();
                heap.push(e);
            }
        }
    }
    let (mut scopes, mut songs, mut artists, mut streams, mut listeners) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (scope, heap) in heaps {
        for e in heap.into_sorted_vec() {
            scopes.push(scope.clone());
            songs.push(e.song_id);
            artists.push(e.artist_id);
            streams.push(e.streams);
            listeners.push(e.listeners);
        }
    }
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(scopes)),
            Arc::new(Int64Array::from(songs)),
            Arc::new(Int64Array::from(artists)),
            Arc::new(Int64Array::from(streams)),
            Arc::new(Int64Array::from(listeners)),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_best_n_of_each_scope_in_rank_order() {
        let rows: Vec<(&str, i64, i64, i64)> = vec![
            ("SE", 1, 5, 1),
            ("SE", 2, 9, 1),
            ("SE", 3, 9, 4),
            ("SE", 4, 9, 4),
            ("SE", 5, 0, 0),
            ("GB", 6, 1, 1),
        ];
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1 * 10).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        let top = top_per_scope(streampulse_core::stream::batch_stream(batch), 3, None)
            .await
            .unwrap();
        let scope: Vec<_> = top
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_string())
            .collect();
        let song: Vec<_> = top.column(1).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(scope, ["GB", "SE", "SE", "SE"]);
        // 9 streams from 4 listeners (songs 3, 4: smaller id first), then 9 from 1; song 5 has none.
        assert_eq!(song, [6, 3, 4, 2]);
    }
}
