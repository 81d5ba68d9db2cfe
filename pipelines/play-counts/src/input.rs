//! Finding and reading the day's plays: the Parquet partition, or the CSV export (local or
//! streamed from an object store), as one stream of the projected columns limited to the
//! logical date, with the country interned and the contract's rules applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use streampulse_core::csv::{CsvDecoder, CsvOptions};
use streampulse_core::location::Partition;
use streampulse_core::progress::Progress;
use streampulse_core::rejects::RejectSink;
use streampulse_core::schema::PLAYS;
use streampulse_core::stream::blocking_stream;
use streampulse_core::{engine, time};

use crate::{Config, Error, Result, tally};

/// The columns this pipeline decodes, of the 15 in the plays export (play_id to count a play
/// sent twice once).
pub(crate) const COLUMNS: [&str; 7] = [
    "play_id",
    "user_id",
    "song_id",
    "artist_id",
    "played_at",
    "ms_played",
    "country",
];

/// Counters shared with the input producer (which runs on a blocking thread).
#[derive(Debug, Default)]
pub(crate) struct InputStats {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) before_date: u64,
    pub(crate) after_date: u64,
    pub(crate) countries: CountryCodes,
}

/// Country codes interned as small integers, so that the country aggregation groups and (when it
/// spills) sorts by two primitive columns instead of a string and a key.
#[derive(Debug, Default)]
pub struct CountryCodes {
    codes: tally::IdMap<String, i32>,
    names: Vec<String>,
}

impl CountryCodes {
    fn code(&mut self, name: &str) -> i32 {
        if let Some(&c) = self.codes.get(name) {
            return c;
        }
        let c = self.names.len() as i32;
        self.codes.insert(name.to_string(), c);
        self.names.push(name.to_string());
        c
    }

    /// Every name, by code.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, code: i32) -> Option<&str> {
        self.names
            .get(usize::try_from(code).ok()?)
            .map(String::as_str)
    }
}

pub(crate) enum Source {
    Csv(Export),
    Parquet(String),
}

/// A CSV export: a local file, or an object under an object-store data root.
pub(crate) enum Export {
    Local(PathBuf),
    Stored { rel: String, url: String, size: u64 },
}

/// Names a CSV export may have: plain, or compressed as exports are usually delivered.
const EXPORT_SUFFIXES: [&str; 4] = [".csv", ".csv.gz", ".csv.zst", ".csv.zstd"];

fn is_csv(path: &std::path::Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    EXPORT_SUFFIXES.iter().any(|s| name.ends_with(s))
}

pub(crate) async fn locate_input(cfg: &Config) -> Result<Source> {
    if let Some(p) = &cfg.input {
        return Ok(if is_csv(p) {
            Source::Csv(Export::Local(p.clone()))
        } else {
            Source::Parquet(p.display().to_string())
        });
    }
    let root = &cfg.common.data_root;
    let partition = Partition::date(cfg.date);
    if let Some(url) = root.date_partition("plays", cfg.date).await? {
        return Ok(Source::Parquet(url));
    }
    let export = format!("exports/plays-{}", partition.value);
    let mut found = None;
    for suffix in EXPORT_SUFFIXES {
        let rel = format!("{export}{suffix}");
        if let Some(size) = root.file_size(&rel).await? {
            found = Some(match root.local_path(&rel) {
                Some(path) => Export::Local(path),
                None => Export::Stored {
                    url: format!("{}/{rel}", root.display().trim_end_matches('/')),
                    rel,
                    size,
                },
            });
            break;
        }
    }
    match found {
        Some(export) => Ok(Source::Csv(export)),
        None => Err(Error::Core(streampulse_core::Error::InputMissing(format!(
            "no plays for {}: neither {} nor {}/{export}.csv (or .csv.gz, .csv.zst) exists \
             (pass --input)",
            partition.value,
            root.partition_url("plays", &partition),
            root.display()
        )))),
    }
}

/// The input columns plus the interned country code.
fn prepared_schema(input: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("country_code", DataType::Int32, false)));
    Arc::new(Schema::new(fields))
}

/// Keeps the rows of the logical date, counts the others (late arrivals are normal; they belong
/// to their own day's run), and adds the country code.
fn prepare(
    batch: &RecordBatch,
    lo: i64,
    hi: i64,
    stats: &Mutex<InputStats>,
) -> std::result::Result<RecordBatch, DataFusionError> {
    let schema = batch.schema();
    let ts = batch
        .column(schema.index_of("played_at")?)
        .as_primitive::<TimestampMillisecondType>();
    let values = ts.values();
    let before = values.iter().filter(|&&t| t < lo).count() as u64;
    let after = values.iter().filter(|&&t| t >= hi).count() as u64;
    let batch = if before + after == 0 {
        batch.clone()
    } else {
        let in_day =
            BooleanBuffer::collect_bool(values.len(), |i| values[i] >= lo && values[i] < hi);
        filter_record_batch(batch, &BooleanArray::new(in_day, None))?
    };
    // Parquet reads may give Utf8View or LargeUtf8; the CSV decoder gives Utf8.
    let country = arrow::compute::cast(batch.column(schema.index_of("country")?), &DataType::Utf8)?;
    let country = country.as_string::<i32>();
    // One lock per batch: the date counters and the country codes together.
    let codes: Int32Array = {
        let mut stats = stats
            .lock()
            .map_err(|_| DataFusionError::Internal("input stats poisoned".into()))?;
        stats.before_date += before;
        stats.after_date += after;
        country
            .iter()
            .map(|c| stats.countries.code(c.unwrap_or_default()))
            .collect()
    };
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(codes));
    Ok(RecordBatch::try_new(prepared_schema(&schema), columns)?)
}

/// The input as one stream of the projected columns, already limited to the logical date, and a
/// generous guess of its number of plays (it sizes the tally's partitioning).
pub(crate) async fn open_input(
    cfg: &Config,
    ctx: &SessionContext,
    rejects: Arc<Mutex<RejectSink>>,
    stats: Arc<Mutex<InputStats>>,
) -> Result<(SchemaRef, SendableRecordBatchStream, u64)> {
    let lo = time::day_start_ms(cfg.date);
    let hi = lo + time::MS_PER_DAY;
    match locate_input(cfg).await? {
        Source::Csv(export) => {
            let threads = cfg.common.threads;
            // Smaller blocks under a small budget: in-flight blocks are memory outside the pool.
            let block_size =
                (cfg.common.budget() / 64 / threads as u64).clamp(256 << 10, 4 << 20) as usize;
            let options = CsvOptions {
                block_size,
                threads,
            };
            let (decoder, name, size) = match export {
                Export::Local(path) => {
                    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                    let decoder = CsvDecoder::open(&path, &PLAYS, &COLUMNS, options)?;
                    (decoder, path.display().to_string(), size)
                }
                // Streamed from the store as it is decoded, never downloaded whole.
                Export::Stored { rel, url, size } => {
                    let reader = cfg.common.data_root.reader(&rel)?;
                    let name = url.clone();
                    let decoder = tokio::task::spawn_blocking(move || {
                        CsvDecoder::from_reader(name, reader, &PLAYS, &COLUMNS, options)
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("opening {url}: {e}")))??;
                    (decoder, url, size)
                }
            };
            let schema = prepared_schema(&decoder.schema());
            // Export rows are ~150 bytes, compressed ~25; a guess on the high side only makes
            // buckets smaller.
            let per_row = if name.ends_with(".csv") { 64 } else { 8 };
            let expected = size / per_row;
            tracing::info!(input = %name, block_size, "decoding CSV export");
            // Block bytes are the decompressed text: a compressed file's size gives no ETA.
            let progress = Progress::start("plays", name.ends_with(".csv").then_some(size));
            let stream = blocking_stream(schema.clone(), 2, move |tx| {
                for block in decoder.blocks() {
                    let item = block.map_err(DataFusionError::from).and_then(|block| {
                        {
                            let mut sink = rejects.lock().map_err(|_| {
                                DataFusionError::Internal("reject sink poisoned".into())
                            })?;
                            for r in &block.rejects {
                                sink.push(r).map_err(DataFusionError::from)?;
                            }
                        }
                        if let Ok(mut s) = stats.lock() {
                            s.records += block.records;
                            s.bytes += block.bytes;
                        }
                        progress.add(block.records, block.bytes);
                        prepare(&block.batch, lo, hi, &stats)
                    });
                    let failed = item.is_err();
                    if tx.blocking_send(item).is_err() || failed {
                        break;
                    }
                }
                progress.finish();
            });
            Ok((schema, stream, expected))
        }
        Source::Parquet(url) => {
            tracing::info!(input = %url, "reading Parquet partition");
            // Whoever wrote the partition (pandas' µs timestamps, int32 ids, ...): the
            // contract's types, converted exactly or refused with the file and column.
            let df = engine::read_parquet(ctx, vec![url.clone()], &PLAYS, &COLUMNS).await?;
            let schema = prepared_schema(&Arc::new(df.schema().as_arrow().clone()));
            let inner = df.execute_stream().await?;
            let bytes = engine::parquet_bytes(ctx, std::slice::from_ref(&url)).await?;
            if let Ok(mut s) = stats.lock() {
                s.bytes += bytes;
            }
            let stats2 = stats.clone();
            let progress = Progress::start("plays", None);
            let mapped = inner.map(move |b| {
                let b = b?;
                progress.add(b.num_rows() as u64, 0);
                let first_row = match stats2.lock() {
                    Ok(mut s) => {
                        s.records += b.num_rows() as u64;
                        s.records - b.num_rows() as u64
                    }
                    Err(_) => return Err(DataFusionError::Internal("input stats poisoned".into())),
                };
                // The CSV decoder applies the contract's rules as it parses; a Parquet file
                // gets them here: nulls, negative durations, malformed countries are rejected.
                let (b, bad) = streampulse_core::conform::validate(&b, &PLAYS, &url, first_row)?;
                if !bad.is_empty() {
                    let mut sink = rejects
                        .lock()
                        .map_err(|_| DataFusionError::Internal("reject sink poisoned".into()))?;
                    for r in &bad {
                        sink.push(r)?;
                    }
                }
                prepare(&b, lo, hi, &stats2)
            });
            Ok((
                schema.clone(),
                Box::pin(RecordBatchStreamAdapter::new(schema, mapped)),
                // Compressed plays take a few bytes each.
                bytes / 4,
            ))
        }
    }
}

/// A column the tally reads, as `to` (a Parquet input may store ids or durations in another
/// integer width). The CSV decoder never yields nulls in them; a Parquet file might.
pub(crate) fn int_column(batch: &RecordBatch, i: usize, to: &DataType) -> Result<ArrayRef> {
    let col = batch.column(i);
    if col.null_count() > 0 {
        return Err(Error::Inconsistent(format!(
            "the plays input has nulls in {}",
            batch.schema().field(i).name()
        )));
    }
    // Not the default (safe) cast: it turns a value that does not fit into a null, which the
    // tally would read as 0 (a user id of 0, say) instead of failing.
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(arrow::compute::cast_with_options(col, to, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Int32Type;

    fn one_column(col: ArrayRef) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("x", col.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![col]).unwrap()
    }

    #[test]
    fn an_input_column_that_does_not_fit_is_an_error_not_a_zero() {
        let fits = one_column(Arc::new(Int64Array::from(vec![30_000, 1])));
        let got = int_column(&fits, 0, &DataType::Int32).unwrap();
        assert_eq!(got.as_primitive::<Int32Type>().values(), &[30_000, 1]);
        let too_big = one_column(Arc::new(Int64Array::from(vec![1, 3_000_000_000])));
        assert!(int_column(&too_big, 0, &DataType::Int32).is_err());
        let text = one_column(Arc::new(StringArray::from(vec!["7", "u42"])));
        assert!(int_column(&text, 0, &DataType::Int64).is_err());
        let nulls = one_column(Arc::new(Int64Array::from(vec![Some(1), None])));
        assert!(int_column(&nulls, 0, &DataType::Int64).is_err());
    }
}
