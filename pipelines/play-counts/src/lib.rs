//! Pipeline A, `play-counts`: one day of plays in, per-song and per-artist daily counts and the
//! daily charts (global and per country, with movement against earlier days) out.
//!
//! How it stays fast and memory-bounded:
//!
//! * the CSV export is decoded by the core's parallel projecting decoder (7 of 15 columns; bad
//!   rows to the rejects file), or the Parquet partition is read with only those columns;
//! * the input is read **once** into the [`tally`]: plays partitioned by user, so that every
//!   count, listeners included, is a sum of independent per-bucket results; the buckets spill to
//!   disk past the memory budget and are finished on every thread;
//! * the charts' history join (today's top 200s against earlier chart partitions) is a DataFusion
//!   plan under a memory pool of the same budget.
//!
//! Outputs (docs/data.md): `daily_song_counts`, `daily_artist_counts`, `charts`, partitioned by date,
//! published together at the end of a successful run.

pub mod error;
pub mod spark;
pub mod tally;
pub mod topk;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int32Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimestampMillisecondType,
};
use arrow::record_batch::RecordBatch;
use chrono::{Duration, NaiveDate};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SessionContext, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use streampulse_core::commit;
use streampulse_core::config::{BudgetArgs, CommonArgs, CommonConfig, RejectArgs, TableFormatArgs};
use streampulse_core::csv::{CsvDecoder, CsvOptions};
use streampulse_core::kafka::{Destination, PublishArgs, RowMessages, publish_dataset};
use streampulse_core::location::Partition;
use streampulse_core::output::{StagedPartition, write_partition};
use streampulse_core::progress::Progress;
use streampulse_core::rejects::{RejectSink, is_rejects};
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::{CHARTS, DAILY_ARTIST_COUNTS, DAILY_SONG_COUNTS, PLAYS};
use streampulse_core::stream::{batch_stream, blocking_stream};
use streampulse_core::{engine, exit::EXIT_CODES_HELP, time};
use streampulse_spark::{Engine, SparkArgs, SparkConfig};

pub use error::{Error, Result};
use tally::{Tally, TallyOptions};

pub const PIPELINE: &str = "play-counts";

/// The columns this pipeline decodes, of the 15 in the plays export (play_id to count a play
/// sent twice once).
const COLUMNS: [&str; 7] = [
    "play_id",
    "user_id",
    "song_id",
    "artist_id",
    "played_at",
    "ms_played",
    "country",
];

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Daily play counts and charts from one day of plays", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The logical date to count (UTC).
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: NaiveDate,

    /// An explicit input: the CSV export (*.csv, or gzip/zstd: *.csv.gz, *.csv.zst) or a
    /// Parquet file or directory. Default: the `plays` partition under the data root, else
    /// `<root>/exports/plays-<date>.csv` (or .csv.gz, .csv.zst).
    #[arg(long, env = "SP_INPUT")]
    pub input: Option<PathBuf>,

    /// Chart-eligible streams per user, song and day (the UK Official Charts rule is 10; 0 = no cap).
    #[arg(long, env = "SP_MAX_STREAMS_PER_USER_PER_DAY", default_value_t = 10)]
    pub max_streams_per_user_per_day: u32,

    /// Apply the same cap to the daily counts (off: counts report every stream). An artist's
    /// counted streams are then the sum of its songs' capped streams.
    #[arg(long, env = "SP_CAP_COUNTS")]
    pub cap_counts: bool,

    /// Chart length per scope.
    #[arg(long, env = "SP_CHART_SIZE", default_value_t = 200)]
    pub chart_size: u32,

    /// How many earlier days of charts to read for movement, peaks and re-entries.
    #[arg(long, env = "SP_CHART_LOOKBACK_DAYS", default_value_t = 400)]
    pub chart_lookback_days: u32,

    /// With --kafka-brokers, the day's charts also go to this topic, one message per chart
    /// entry keyed by scope.
    #[arg(long, env = "SP_CHARTS_TOPIC", default_value = "charts.daily")]
    pub charts_topic: String,

    /// Where the day is counted: in this process, or on a Spark cluster reached through Spark
    /// Connect (--spark-remote; the plays partition must be on storage the cluster reads).
    /// Outputs are the same either way.
    #[arg(long, env = "SP_ENGINE", value_enum, default_value_t = Engine::Embedded)]
    pub engine: Engine,

    #[command(flatten)]
    pub spark: SparkArgs,

    #[command(flatten)]
    pub kafka: PublishArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub output: TableFormatArgs,

    #[command(flatten)]
    pub budget: BudgetArgs,

    #[command(flatten)]
    pub rejects: RejectArgs,
}

/// The validated configuration of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub date: NaiveDate,
    pub input: Option<PathBuf>,
    pub stream_cap: Option<u32>,
    pub cap_counts: bool,
    pub chart_size: u32,
    pub chart_lookback_days: u32,
    /// Where the charts are also published, with --kafka-brokers.
    pub kafka: Option<Destination>,
    /// `--max-reject-share`.
    pub max_reject_share: f64,
    /// With `--engine spark`: where the counts run.
    pub spark: Option<SparkConfig>,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        if self.chart_size == 0 {
            return Err(Error::Config("--chart-size must be at least 1".into()));
        }
        Ok(Config {
            max_reject_share: self.rejects.validate()?,
            date: self.date,
            input: self.input.clone(),
            stream_cap: (self.max_streams_per_user_per_day > 0)
                .then_some(self.max_streams_per_user_per_day),
            cap_counts: self.cap_counts,
            chart_size: self.chart_size,
            chart_lookback_days: self.chart_lookback_days,
            kafka: self.kafka.destination(&self.charts_topic)?,
            spark: self
                .spark
                .validate(self.engine == Engine::Spark)
                .map_err(Error::Config)?,
            common: self
                .common
                .validate_with(&self.budget)?
                .writing(&self.output)?,
        })
    }
}

/// What a successful run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub outputs: Vec<String>,
    pub rejects: Option<String>,
    pub song_rows: u64,
    pub artist_rows: u64,
    pub chart_rows: u64,
    /// Chart messages published to Kafka (with --kafka-brokers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_messages: Option<u64>,
}

/// Counters shared with the input producer (which runs on a blocking thread).
#[derive(Debug, Default)]
struct InputStats {
    records: u64,
    bytes: u64,
    before_date: u64,
    after_date: u64,
    countries: CountryCodes,
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

    pub fn name(&self, code: i32) -> Option<&str> {
        self.names
            .get(usize::try_from(code).ok()?)
            .map(String::as_str)
    }
}

enum Source {
    Csv(Export),
    Parquet(String),
}

/// A CSV export: a local file, or an object under an object-store data root.
enum Export {
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

async fn locate_input(cfg: &Config) -> Result<Source> {
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
async fn open_input(
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
fn int_column(batch: &RecordBatch, i: usize, to: &DataType) -> Result<ArrayRef> {
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

/// The day counted, by either engine: what the outputs and the checks before them are made of.
struct Day {
    records: u64,
    bytes: u64,
    before: u64,
    after: u64,
    duplicates: u64,
    rejects: RejectSink,
    /// Songs the day gives two artists: (song_id, smallest, largest artist id), the first few.
    conflicts: Vec<(i64, i64, i64)>,
    songs: RecordBatch,
    artists: RecordBatch,
    /// The top N of each scope, ordered by scope and chart position ([`topk::top_per_scope`]).
    global_top: RecordBatch,
    country_top: RecordBatch,
}

/// The day counted in this process: the input read once into the [`tally`].
async fn count_embedded(
    cfg: &Config,
    ctx: &SessionContext,
    pool: u64,
    sink: RejectSink,
    meter: &mut RunMeter,
) -> Result<Day> {
    let common = &cfg.common;
    let rejects = Arc::new(Mutex::new(sink));
    let stats = Arc::new(Mutex::new(InputStats::default()));
    let (schema, mut input, expected_plays) =
        open_input(cfg, ctx, rejects.clone(), stats.clone()).await?;
    let mut tally = Tally::new(TallyOptions {
        budget: pool,
        expected_plays,
        threads: common.threads,
        spill_dir: common.spill_dir.clone(),
        stream_cap: cfg.stream_cap,
        cap_counts: cfg.cap_counts,
    });
    let column = |name: &str| schema.index_of(name).map_err(DataFusionError::from);
    let (play_id, user, song, artist, ms, country) = (
        column("play_id")?,
        column("user_id")?,
        column("song_id")?,
        column("artist_id")?,
        column("ms_played")?,
        column("country_code")?,
    );
    while let Some(batch) = input.next().await {
        let batch = batch?;
        let (play_id, user, song, artist, ms) = (
            int_column(&batch, play_id, &DataType::Int64)?,
            int_column(&batch, user, &DataType::Int64)?,
            int_column(&batch, song, &DataType::Int64)?,
            int_column(&batch, artist, &DataType::Int64)?,
            int_column(&batch, ms, &DataType::Int32)?,
        );
        tally.push(
            play_id.as_primitive::<Int64Type>().values(),
            user.as_primitive::<Int64Type>().values(),
            song.as_primitive::<Int64Type>().values(),
            artist.as_primitive::<Int64Type>().values(),
            ms.as_primitive::<Int32Type>().values(),
            batch.column(country).as_primitive::<Int32Type>().values(),
        )?;
    }
    drop(input);
    let rejects = Arc::try_unwrap(rejects)
        .map_err(|_| Error::Internal("reject sink still shared".into()))?
        .into_inner()
        .map_err(|_| Error::Internal("reject sink poisoned".into()))?;
    let (records, bytes, before, after, country_names) = {
        let s = stats
            .lock()
            .map_err(|_| Error::Internal("stats poisoned".into()))?;
        (
            s.records,
            s.bytes,
            s.before_date,
            s.after_date,
            s.countries.names.clone(),
        )
    };
    let names = country_names.clone();
    let mut totals = tokio::task::spawn_blocking(move || tally.finish(&names))
        .await
        .map_err(|e| Error::Internal(format!("the tally failed: {e}")))??;
    meter.set("tally_buckets", totals.buckets as u64);
    meter.set("tally_spills", u64::from(totals.spills));
    meter.set("tally_splits", totals.splits as u64);
    meter.set("tally_totals_bytes", totals.heap_bytes());
    meter.set(
        "tally_country_entries_spilled",
        totals.country_entries_spilled(),
    );
    let n = cfg.chart_size as usize;
    let candidates = topk::schema();
    let global_top = topk::top_per_scope(
        batch_stream(totals.global_candidates(&candidates)?),
        n,
        None,
    )
    .await?;
    let country_schema = Arc::new(Schema::new(
        std::iter::once(Arc::new(Field::new("scope", DataType::Int32, false)))
            .chain(candidates.fields().iter().skip(1).cloned())
            .collect::<Vec<_>>(),
    ));
    // Streamed in batches: the (country, song) pairs are the largest of the totals.
    let country_batches = totals
        .country_candidates(&country_schema, 1 << 16)?
        .map(|b| b.map_err(|e| DataFusionError::External(Box::new(e))));
    let names = move || country_names.clone();
    let country_top = topk::top_per_scope(
        Box::pin(RecordBatchStreamAdapter::new(
            country_schema,
            futures::stream::iter(country_batches),
        )),
        n,
        Some(&names),
    )
    .await?;
    Ok(Day {
        records,
        bytes,
        before,
        after,
        duplicates: totals.duplicate_plays(),
        rejects,
        conflicts: totals.artist_conflicts(5),
        songs: totals.song_counts(&DAILY_SONG_COUNTS)?,
        artists: totals.artist_counts(&DAILY_ARTIST_COUNTS)?,
        global_top,
        country_top,
    })
}

/// The day counted on a Spark cluster ([`spark`]): the plays partition, read where it is.
async fn count_on_spark(
    cfg: &Config,
    spark_cfg: &SparkConfig,
    ctx: &SessionContext,
    mut rejects: RejectSink,
    meter: &mut RunMeter,
) -> Result<Day> {
    let url = match locate_input(cfg).await? {
        Source::Parquet(url) => url,
        Source::Csv(export) => {
            let name = match export {
                Export::Local(path) => path.display().to_string(),
                Export::Stored { url, .. } => url,
            };
            return Err(Error::Config(format!(
                "--engine spark counts the plays partition (Parquet, under the data root); \
                 {name} is a CSV export, which only the embedded engine reads: run without \
                 --engine spark, or land the day as Parquet first (play-ingest)"
            )));
        }
    };
    tracing::info!(input = %url, remote = %spark_cfg.remote, "counting the day on Spark");
    let counted = Box::pin(spark::count(cfg, spark_cfg, ctx, &url, &mut rejects)).await?;
    counted.cluster.record(meter);
    let n = cfg.chart_size as usize;
    let top = |batches: Vec<RecordBatch>| {
        Box::pin(RecordBatchStreamAdapter::new(
            topk::schema(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        )) as SendableRecordBatchStream
    };
    Ok(Day {
        records: counted.records,
        bytes: counted.bytes,
        before: counted.before,
        after: counted.after,
        duplicates: counted.duplicates,
        rejects,
        conflicts: counted.conflicts,
        songs: counted.songs,
        artists: counted.artists,
        global_top: topk::top_per_scope(top(counted.global_top), n, None).await?,
        country_top: topk::top_per_scope(top(counted.country_top), n, None).await?,
    })
}

/// Runs the pipeline for one date. Outputs are published only when everything succeeded.
pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let common = &cfg.common;
    let partition = Partition::date(cfg.date);
    // Outside the pool: the process itself, the decode blocks in flight (under a small budget they
    // shrink with it, see open_input) and the Parquet writers.
    let outside = ((32 << 20) + common.threads as u64 * (12 << 20)).min(common.budget() / 2);
    let pool = engine::pool_bytes(common.budget(), outside);
    let ctx = engine::session(common, pool)?;
    meter.engine = if cfg.spark.is_some() {
        "spark"
    } else {
        "datafusion"
    }
    .into();
    tracing::info!(pool_bytes = pool, threads = common.threads, engine = %meter.engine, "engine ready");

    let sink = RejectSink::new(&common.data_root, &common.spill_dir, PIPELINE, &partition);
    let day = match &cfg.spark {
        None => count_embedded(cfg, &ctx, pool, sink, meter).await?,
        Some(spark_cfg) => count_on_spark(cfg, spark_cfg, &ctx, sink, meter).await?,
    };
    let Day {
        records,
        bytes,
        before,
        after,
        duplicates,
        rejects: sink,
        conflicts,
        songs,
        artists,
        global_top,
        country_top,
    } = day;

    // Input is fully consumed now: account for it and enforce the reject threshold before
    // anything is published.
    meter.rows_in = records;
    meter.bytes_in = bytes;
    meter.rows_rejected = sink.count();
    meter.set("rows_before_date", before);
    meter.set("rows_after_date", after);
    meter.set("duplicate_plays", duplicates);
    if duplicates > 0 {
        tracing::warn!(
            duplicates,
            "plays whose play_id the same user had already sent, counted once"
        );
    }
    let rejects_at = sink.location();
    let rejected = sink.count();
    if rejected > 0 {
        tracing::warn!(rejected, rows = records, path = %rejects_at, "rejected input rows");
    }
    if before + after > 0 {
        tracing::info!(
            before,
            after,
            "rows outside the logical date left to their own day"
        );
    }
    // Published with the outputs, in the run's commit; alone if the input fails the run. On
    // any later error, the staged partitions clean up after themselves when dropped.
    let rejects = sink.stage_checked(records, cfg.max_reject_share).await?;

    // The contract: artist_id is the song's primary artist. A day that gives a song two artists
    // is a broken export; say which songs rather than count them under one of the two.
    if !conflicts.is_empty() {
        let first: Vec<String> = conflicts
            .iter()
            .map(|(s, a, m)| format!("song {s} by artists {a} and {m}"))
            .collect();
        let error = Error::Inconsistent(format!(
            "the day's plays give songs more than one artist_id (first: {})",
            first.join("; ")
        ));
        return Err(commit::fail_with_rejects(&common.data_root, rejects, error).await);
    }
    let mut staged = Vec::new();
    for (dataset, schema, batch) in [
        ("daily_song_counts", &*DAILY_SONG_COUNTS, songs),
        ("daily_artist_counts", &*DAILY_ARTIST_COUNTS, artists),
    ] {
        staged.push(
            write_partition(
                &common.data_root,
                &common.spill_dir,
                dataset,
                &partition,
                schema,
                batch_stream(batch),
            )
            .await?,
        );
    }
    let charts = charts_with_history(cfg, &ctx, global_top, country_top).await?;
    staged.push(charts);

    let mut outcome = Outcome {
        outputs: vec![],
        rejects: (rejected > 0).then_some(rejects_at),
        song_rows: 0,
        artist_rows: 0,
        chart_rows: 0,
        kafka_messages: None,
    };
    staged.push(rejects);
    for s in staged.iter().filter(|s| !is_rejects(&s.dataset)) {
        meter.rows_out += s.rows;
        meter.bytes_out += s.bytes;
        match s.dataset.as_str() {
            "daily_song_counts" => outcome.song_rows = s.rows,
            "daily_artist_counts" => outcome.artist_rows = s.rows,
            _ => outcome.chart_rows = s.rows,
        }
    }
    // The day's outputs appear together; Kafka hears of the charts only once they are in place
    // (a consumer can always read the partition a message names). A Kafka failure then fails
    // the run, with the Parquet outputs published.
    let published = commit::publish(&common.data_root, common.table_format, staged).await?;
    outcome.outputs = published
        .iter()
        .filter(|p| !is_rejects(&p.dataset))
        .map(|p| p.url.clone())
        .collect();
    let sent = match (&cfg.kafka, published.iter().find(|p| p.dataset == "charts")) {
        (Some(dest), Some(charts)) => {
            // One message per chart entry, keyed by scope (`global` or a country code), with
            // the date the files leave to the partition's name.
            let shape = RowMessages {
                key: "scope".into(),
                group: false,
                extra: vec![("date".into(), cfg.date.to_string().into())],
            };
            Some(publish_dataset(dest, PIPELINE, &charts.dir, None, &shape).await)
        }
        _ => None,
    };
    meter.set("song_rows", outcome.song_rows);
    meter.set("artist_rows", outcome.artist_rows);
    meter.set("chart_rows", outcome.chart_rows);
    meter.set("pool_bytes", pool);
    if let Some(result) = sent {
        let (messages, bytes) = result?;
        meter.set("kafka_messages", messages);
        meter.set("kafka_bytes", bytes);
        outcome.kafka_messages = Some(messages);
    }
    Ok(outcome)
}

/// What the history join needs of an earlier chart.
const HISTORY_COLUMNS: [&str; 5] = ["scope", "song_id", "rank", "peak_rank", "days_on_chart"];

/// Ranks today's top songs per scope and joins each with its latest earlier chart appearance:
/// that row carries the song's peak and days on chart so far, so only it is needed.
async fn charts_with_history(
    cfg: &Config,
    ctx: &SessionContext,
    global_top: RecordBatch,
    country_top: RecordBatch,
) -> Result<StagedPartition> {
    let common = &cfg.common;
    ctx.register_table(
        "today_top",
        Arc::new(MemTable::try_new(
            topk::schema(),
            vec![vec![global_top, country_top]],
        )?),
    )?;

    // The files hold no `date` (it is the partition's name): each earlier partition is read
    // with its date added, so history written before or after that rule reads the same.
    let first = cfg.date - Duration::days(cfg.chart_lookback_days as i64);
    let mut history: Option<DataFrame> = None;
    for d in common.data_root.list_partitions("charts", "date").await? {
        let Ok(day) = NaiveDate::parse_from_str(&d, "%Y-%m-%d") else {
            continue;
        };
        if day >= cfg.date || day < first {
            continue;
        }
        let url = common
            .data_root
            .partition_url("charts", &Partition::date(day));
        let df = engine::read_parquet(ctx, vec![url], &CHARTS, &HISTORY_COLUMNS)
            .await?
            .with_column("date", lit(ScalarValue::Date32(Some(time::date32(day)))))?;
        history = Some(match history {
            None => df,
            Some(h) => h.union(df)?,
        });
    }
    match history {
        Some(h) => ctx.register_table("chart_history", h.into_view())?,
        None => {
            let mut fields: Vec<Field> = HISTORY_COLUMNS
                .iter()
                .map(|c| CHARTS.field_with_name(c).cloned())
                .collect::<std::result::Result<_, _>>()?;
            fields.push(Field::new("date", DataType::Date32, false));
            let empty = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
            ctx.register_table("chart_history", Arc::new(empty))?
        }
    };
    let yesterday = (cfg.date - Duration::days(1)).format("%Y-%m-%d");
    let sql = format!(
        "WITH ranked AS ( \
           SELECT scope, song_id, artist_id, streams, \
             CAST(row_number() OVER (PARTITION BY scope ORDER BY streams DESC, listeners DESC, song_id, artist_id) AS INT) AS rank \
           FROM today_top), \
         last_seen AS ( \
           SELECT scope, song_id, date, rank, peak_rank, days_on_chart FROM ( \
             SELECT scope, song_id, date, rank, peak_rank, days_on_chart, \
               row_number() OVER (PARTITION BY scope, song_id ORDER BY date DESC) AS recency \
             FROM chart_history) WHERE recency = 1) \
         SELECT r.scope, r.rank, r.song_id, r.artist_id, r.streams, \
           CASE WHEN l.date = CAST('{yesterday}' AS DATE) THEN l.rank END AS prev_rank, \
           CASE WHEN l.date = CAST('{yesterday}' AS DATE) THEN l.rank - r.rank END AS movement, \
           CASE WHEN l.peak_rank IS NOT NULL AND l.peak_rank < r.rank THEN l.peak_rank ELSE r.rank END AS peak_rank, \
           CAST(coalesce(l.days_on_chart, 0) + 1 AS INT) AS days_on_chart, \
           l.date IS NULL AS is_new, \
           coalesce(l.date < CAST('{yesterday}' AS DATE), false) AS is_reentry \
         FROM ranked r LEFT JOIN last_seen l ON r.scope = l.scope AND r.song_id = l.song_id \
         ORDER BY CASE WHEN r.scope = 'global' THEN 0 ELSE 1 END, r.scope, r.rank"
    );
    let stream = ctx.sql(&sql).await?.execute_stream().await?;
    Ok(write_partition(
        &common.data_root,
        &common.spill_dir,
        "charts",
        &Partition::date(cfg.date),
        &CHARTS,
        stream,
    )
    .await?)
}

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.date.format("%Y-%m-%d").to_string()
);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

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
