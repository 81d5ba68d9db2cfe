//! Songs a user streamed in the last `--exclude-days` days, so they are not recommended again.
//!
//! The engine reads those days' `plays` partitions, keeps streams (30 s or more), deduplicates
//! (user, song) and sorts by user: an aggregation and a sort that spill within the memory budget.
//! The scorer consumes the result in step with the users (also ascending by id), so only one
//! block's exclusions are in memory at a time.

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::Int64Type;
use chrono::{Duration, NaiveDate};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionContext, col, lit};
use futures::StreamExt;
use streampulse_core::location::{DataRoot, Partition};
use streampulse_core::schema::{PLAYS, STREAM_MIN_MS};

use crate::error::Result;
use crate::vectors::Catalog;

/// The sorted (user, song) pairs to exclude, read in step with ascending users.
pub struct Exclusions {
    stream: SendableRecordBatchStream,
    batch: Option<(Int64Array, Int64Array)>,
    row: usize,
    done: bool,
    pub pairs: u64,
}

/// The plays partitions of the `days` days ending on `date` that exist.
pub async fn window(root: &DataRoot, date: NaiveDate, days: u32) -> Result<Vec<String>> {
    let present = root.list_partitions("plays", "date").await?;
    Ok((0..days as i64)
        .map(|back| Partition::date(date - Duration::days(back)))
        .filter(|p| present.contains(&p.value))
        .map(|p| root.partition_url("plays", &p))
        .collect())
}

impl Exclusions {
    pub async fn open(ctx: &SessionContext, partitions: Vec<String>) -> Result<Self> {
        // The plays in the contract's types, whoever wrote them (int32 ids, ...).
        let df = streampulse_core::engine::read_parquet(
            ctx,
            partitions,
            &PLAYS,
            &["user_id", "song_id", "ms_played"],
        )
        .await?
        .filter(col("ms_played").gt_eq(lit(STREAM_MIN_MS)))?
        .select(vec![col("user_id"), col("song_id")])?
        .aggregate(vec![col("user_id"), col("song_id")], vec![])?
        .sort(vec![
            col("user_id").sort(true, false),
            col("song_id").sort(true, false),
        ])?;
        Ok(Exclusions {
            stream: df.execute_stream().await?,
            batch: None,
            row: 0,
            done: false,
            pairs: 0,
        })
    }

    async fn current(&mut self) -> Result<Option<(i64, i64)>> {
        loop {
            if let Some((users, songs)) = &self.batch
                && self.row < users.len()
            {
                if users.is_null(self.row) || songs.is_null(self.row) {
                    self.row += 1;
                    continue;
                }
                return Ok(Some((users.value(self.row), songs.value(self.row))));
            }
            if self.done {
                return Ok(None);
            }
            match self.stream.next().await.transpose()? {
                Some(b) => {
                    self.batch = Some((
                        b.column(0).as_primitive::<Int64Type>().clone(),
                        b.column(1).as_primitive::<Int64Type>().clone(),
                    ));
                    self.row = 0;
                }
                None => self.done = true,
            }
        }
    }

    /// The excluded catalog indices of `user` (ascending); users must be asked in ascending
    /// order. Songs not in the catalog cannot be recommended anyway and are dropped.
    pub async fn take(&mut self, user: i64, catalog: &Catalog) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        while let Some((u, song)) = self.current().await? {
            if u > user {
                break;
            }
            if u == user
                && let Some(i) = catalog.index_of(song)
            {
                out.push(i);
                self.pairs += 1;
            }
            self.row += 1;
        }
        out.sort_unstable();
        Ok(out)
    }
}
