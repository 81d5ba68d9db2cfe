//! `--engine postgres`: the joins and aggregations of the month pushed down to PostgreSQL.
//!
//! The inputs are loaded with `COPY ... FROM STDIN` into `UNLOGGED` tables of a schema private to
//! the run (dropped at the end), filtering early: only the month's streams (plays of 30 s or more)
//! and only the columns the queries read. The subscriptions get an index on `(user_id,
//! started_at)` for the stream-to-subscription join, then `ANALYZE`. The pipeline then runs the
//! *same SQL text* it gives DataFusion, and the splits in Rust are shared, so both engines give
//! the same bytes (a test checks it).
//!
//! Results come back over the simple-query protocol (text values) and are parsed into Arrow
//! batches of the schema the caller expects: exact for decimals, no float detour.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Decimal128Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, Row};

use crate::error::{Error, Result};

/// Rows per Arrow batch of a query result.
const BATCH_ROWS: usize = 64 * 1024;

/// A connection pool whose sessions work in the run's private schema, in UTC.
pub struct PgEngine {
    pool: PgPool,
    schema: String,
}

impl PgEngine {
    /// Connects and creates the run's schema.
    pub async fn connect(url: &str, connections: u32) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!("sp_revenue_{}_{nanos}", std::process::id());
        let setup = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}; SET TIME ZONE 'UTC'"
        );
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(15))
            .after_connect(move |conn, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    conn.execute(sqlx::raw_sql(AssertSqlSafe(setup))).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(streampulse_core::Error::from)?;
        Ok(PgEngine { pool, schema })
    }

    /// Loads the month's inputs from the DataFusion tables `plays`, `subs`, `songs`.
    pub async fn load(&self, ctx: &SessionContext, first: &str, next: &str) -> Result<u64> {
        self.exec(
            "CREATE UNLOGGED TABLE plays (user_id BIGINT NOT NULL, song_id BIGINT NOT NULL, \
               played_at TIMESTAMPTZ NOT NULL, ms_played INTEGER NOT NULL);
             CREATE UNLOGGED TABLE subs (subscription_id BIGINT NOT NULL, user_id BIGINT NOT NULL, \
               country TEXT NOT NULL, currency TEXT NOT NULL, monthly_price NUMERIC(18, 6) NOT NULL, \
               started_at DATE NOT NULL, ended_at DATE);
             CREATE UNLOGGED TABLE songs (song_id BIGINT NOT NULL, artist_id BIGINT NOT NULL, \
               label_id BIGINT NOT NULL)",
        )
        .await?;
        // Filter early: the month's streams only, four columns.
        let streams = ctx
            .sql(&format!(
                "SELECT user_id, song_id, played_at, ms_played FROM plays
                 WHERE ms_played >= {min} AND played_at >= TIMESTAMP '{first}T00:00:00Z'
                   AND played_at < TIMESTAMP '{next}T00:00:00Z'",
                min = streampulse_core::schema::STREAM_MIN_MS,
            ))
            .await?;
        let subs = ctx
            .sql(
                "SELECT subscription_id, user_id, country, currency, monthly_price, started_at, \
                 ended_at FROM subs",
            )
            .await?;
        let songs = ctx
            .sql("SELECT song_id, artist_id, label_id FROM songs")
            .await?;
        // One COPY per engine partition of the plays, on connections of their own.
        let mut copies = Vec::new();
        for stream in streams.execute_stream_partitioned().await? {
            copies.push(self.copy("plays", stream));
        }
        copies.push(self.copy("subs", subs.execute_stream().await?));
        copies.push(self.copy("songs", songs.execute_stream().await?));
        let rows: Vec<u64> = futures::future::try_join_all(copies).await?;
        self.exec(
            "CREATE INDEX subs_user ON subs (user_id, started_at);
             ANALYZE plays; ANALYZE subs; ANALYZE songs",
        )
        .await?;
        Ok(rows.first().copied().unwrap_or(0))
    }

    async fn exec(&self, sql: &str) -> Result<()> {
        self.pool
            .execute(sqlx::raw_sql(AssertSqlSafe(sql.to_string())))
            .await
            .map_err(streampulse_core::Error::from)?;
        Ok(())
    }

    /// Streams `input` into `table` with COPY (text format).
    async fn copy(&self, table: &str, mut input: SendableRecordBatchStream) -> Result<u64> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(streampulse_core::Error::from)?;
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} FROM STDIN"))
            .await
            .map_err(streampulse_core::Error::from)?;
        let mut buf = Vec::with_capacity(1 << 20);
        while let Some(batch) = input.next().await.transpose()? {
            buf.clear();
            copy_text(&batch, &mut buf)?;
            copy.send(buf.as_slice())
                .await
                .map_err(streampulse_core::Error::from)?;
        }
        Ok(copy.finish().await.map_err(streampulse_core::Error::from)?)
    }

    /// Runs `sql` and returns its rows as batches of `schema` (column by column, by position).
    pub fn query(&self, sql: &str, schema: SchemaRef) -> SendableRecordBatchStream {
        let (tx, stream) = streampulse_core::stream::channel_stream(schema.clone(), 2);
        let pool = self.pool.clone();
        let sql = sql.to_string();
        tokio::spawn(async move {
            let result: Result<()> = async {
                let mut rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch(&pool);
                let mut columns = Columns::new(&schema);
                while let Some(row) = rows
                    .try_next()
                    .await
                    .map_err(streampulse_core::Error::from)?
                {
                    columns.push(&row)?;
                    if columns.len == BATCH_ROWS
                        && tx.send(Ok(columns.finish(&schema)?)).await.is_err()
                    {
                        return Ok(());
                    }
                }
                if columns.len > 0 {
                    let _ = tx.send(Ok(columns.finish(&schema)?)).await;
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(DataFusionError::External(Box::new(e)))).await;
            }
        });
        stream
    }

    /// Drops the run's schema and its tables.
    pub async fn close(self) {
        let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(e) = self.exec(&drop).await {
            tracing::warn!(schema = %self.schema, error = %e, "could not drop the run's schema");
        }
        self.pool.close().await;
    }
}

/// Builders for one result batch, typed by the expected schema.
struct Columns {
    builders: Vec<Builder>,
    len: usize,
}

enum Builder {
    Int64(Int64Builder),
    Utf8(StringBuilder),
    Date32(Date32Builder),
    Decimal(Decimal128Builder, i8),
}

impl Columns {
    fn new(schema: &SchemaRef) -> Self {
        let builders = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Date32 => Builder::Date32(Date32Builder::new()),
                DataType::Decimal128(p, s) => Builder::Decimal(
                    Decimal128Builder::new().with_data_type(DataType::Decimal128(*p, *s)),
                    *s,
                ),
                DataType::Utf8 => Builder::Utf8(StringBuilder::new()),
                _ => Builder::Int64(Int64Builder::new()),
            })
            .collect();
        Columns { builders, len: 0 }
    }

    fn push(&mut self, row: &sqlx::postgres::PgRow) -> Result<()> {
        for (i, b) in self.builders.iter_mut().enumerate() {
            let raw = row.try_get_raw(i).map_err(streampulse_core::Error::from)?;
            let text = if sqlx::ValueRef::is_null(&raw) {
                None
            } else {
                Some(
                    raw.as_str()
                        .map_err(|e| Error::Internal(format!("column {i}: {e}")))?,
                )
            };
            let bad =
                |what: &str, v: &str| Error::Internal(format!("column {i}: {v:?} is not {what}"));
            match (b, text) {
                (Builder::Int64(b), None) => b.append_null(),
                (Builder::Int64(b), Some(v)) => {
                    b.append_value(v.parse().map_err(|_| bad("an integer", v))?)
                }
                (Builder::Utf8(b), v) => b.append_option(v),
                (Builder::Date32(b), None) => b.append_null(),
                (Builder::Date32(b), Some(v)) => {
                    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                        .map_err(|_| bad("a date", v))?;
                    b.append_value(streampulse_core::time::date32(d))
                }
                (Builder::Decimal(b, _), None) => b.append_null(),
                (Builder::Decimal(b, scale), Some(v)) => {
                    b.append_value(parse_decimal(v, *scale).ok_or_else(|| bad("a decimal", v))?)
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Int64(b) => Arc::new(b.finish()),
                    Builder::Utf8(b) => Arc::new(b.finish()),
                    Builder::Date32(b) => Arc::new(b.finish()),
                    Builder::Decimal(b, _) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.len = 0;
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }
}

/// A decimal the database sent as text, at the column's scale: exact or none (the core's one
/// parser: more fractional digits than the scale is an error, never a rounding).
fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    streampulse_core::conform::parse_decimal(s, i32::from(scale)).ok()
}

/// Appends `batch` in COPY text format: tab-separated, `\N` for null, strings escaped.
fn copy_text(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    use std::io::Write;
    let options = FormatOptions::default().with_null("\\N");
    let formatters: Vec<Option<ArrayFormatter>> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => Ok(None),
            _ => ArrayFormatter::try_new(c.as_ref(), &options).map(Some),
        })
        .collect::<std::result::Result<_, _>>()?;
    let strings: Vec<Option<ArrayRef>> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => {
                arrow::compute::cast(c, &DataType::Utf8).map(Some)
            }
            DataType::Utf8 => Ok(Some(c.clone())),
            _ => Ok(None),
        })
        .collect::<std::result::Result<_, _>>()?;
    for row in 0..batch.num_rows() {
        for (i, f) in formatters.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match (f, &strings[i]) {
                (Some(f), _) => write!(out, "{}", f.value(row))
                    .map_err(|e| Error::Internal(format!("COPY encoding: {e}")))?,
                (None, Some(s)) if s.is_null(row) => out.extend_from_slice(b"\\N"),
                (None, Some(s)) => {
                    for b in s.as_string::<i32>().value(row).bytes() {
                        match b {
                            b'\\' => out.extend_from_slice(b"\\\\"),
                            b'\t' => out.extend_from_slice(b"\\t"),
                            b'\n' => out.extend_from_slice(b"\\n"),
                            b'\r' => out.extend_from_slice(b"\\r"),
                            _ => out.push(b),
                        }
                    }
                }
                (None, None) => unreachable!("every column has a formatter or is a string"),
            }
        }
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly_or_not_at_all() {
        assert_eq!(parse_decimal("9.99", 6), Some(9_990_000));
        assert_eq!(parse_decimal("-0.000001", 6), Some(-1));
        assert_eq!(parse_decimal("12", 6), Some(12_000_000));
        assert_eq!(parse_decimal("1.2345670", 6), Some(1_234_567));
        assert_eq!(parse_decimal("1.2345678", 6), None);
        assert_eq!(parse_decimal("abc", 6), None);
    }

    #[test]
    fn copy_text_escapes_strings_and_writes_nulls() {
        let batch = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(arrow::array::Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(arrow::array::StringArray::from(vec![Some("x\ty\\"), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut out = Vec::new();
        copy_text(&batch, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1\tx\\ty\\\\\n\\N\t\\N\n");
    }
}
