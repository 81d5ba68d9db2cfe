//! Pipeline A, `play-counts`: one day of plays in, per-song and per-artist daily counts and the
//! daily charts (global and per country, with movement against earlier days) out.
//!
//! How it stays fast and memory-bounded:
//!
//! * the CSV export is decoded by the core's parallel projecting decoder (6 of 15 columns; bad
//!   rows to the rejects file), or the Parquet partition is read with only those columns;
//! * the input is read **once** and teed into three DataFusion plans that run concurrently: the
//!   song-level, artist-level and country-level aggregations (each a two-phase GROUP BY, user
//!   first, so that listeners are exact distinct counts without a hash set per group);
//! * every plan draws from one spilling memory pool of the configured size.
//!
//! Outputs (DATA.md): `daily_song_counts`, `daily_artist_counts`, `charts`, partitioned by date,
//! published together at the end of a successful run.

pub mod error;
pub mod topk;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray, BooleanArray, Decimal128Array, Int32Array, Int64Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use chrono::{Duration, NaiveDate};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use streampulse_core::config::{CommonArgs, CommonConfig};
use streampulse_core::csv::{CsvDecoder, CsvOptions};
use streampulse_core::kafka::{Destination, PublishArgs, RowMessages, publish_dataset};
use streampulse_core::location::{DataRoot, Partition};
use streampulse_core::output::{StagedPartition, write_partition};
use streampulse_core::rejects::RejectSink;
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::{
    CHARTS, DAILY_ARTIST_COUNTS, DAILY_SONG_COUNTS, PLAYS, STREAM_MIN_MS,
};
use streampulse_core::stream::{blocking_stream, one_shot_table, tee};
use streampulse_core::{engine, exit::EXIT_CODES_HELP};

pub use error::{Error, Result};

pub const PIPELINE: &str = "play-counts";

/// The columns this pipeline decodes, of the 15 in the plays export.
const COLUMNS: [&str; 6] = [
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

    /// An explicit input: the CSV export (*.csv) or a Parquet file or directory. Default: the
    /// `plays` partition under the data root, else `<root>/exports/plays-<date>.csv`.
    #[arg(long, env = "SP_INPUT")]
    pub input: Option<PathBuf>,

    /// Chart-eligible streams per user, song and day (the UK Official Charts rule is 10; 0 = no cap).
    #[arg(long, env = "SP_MAX_STREAMS_PER_USER_PER_DAY", default_value_t = 10)]
    pub max_streams_per_user_per_day: u32,

    /// Apply the same cap to the daily counts (off: counts report every stream).
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

    #[command(flatten)]
    pub kafka: PublishArgs,

    #[command(flatten)]
    pub common: CommonArgs,
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
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        if self.chart_size == 0 {
            return Err(Error::Config("--chart-size must be at least 1".into()));
        }
        Ok(Config {
            date: self.date,
            input: self.input.clone(),
            stream_cap: (self.max_streams_per_user_per_day > 0)
                .then_some(self.max_streams_per_user_per_day),
            cap_counts: self.cap_counts,
            chart_size: self.chart_size,
            chart_lookback_days: self.chart_lookback_days,
            kafka: self.kafka.destination(&self.charts_topic)?,
            common: self.common.validate()?,
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
    codes: std::collections::HashMap<String, i32>,
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
    Csv(PathBuf),
    Parquet(String),
}

async fn locate_input(cfg: &Config) -> Result<Source> {
    if let Some(p) = &cfg.input {
        let is_csv = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        return Ok(if is_csv {
            Source::Csv(p.clone())
        } else {
            Source::Parquet(p.display().to_string())
        });
    }
    let root = &cfg.common.data_root;
    let partition = Partition::date(cfg.date);
    if let Some(url) = root.date_partition("plays", cfg.date).await? {
        return Ok(Source::Parquet(url));
    }
    let export = format!("exports/plays-{}.csv", partition.value);
    match root.local_path(&export) {
        Some(p) if p.exists() => Ok(Source::Csv(p)),
        _ => Err(Error::Core(streampulse_core::Error::InputMissing(format!(
            "no plays for {}: neither {} nor {}/{export} exists (pass --input)",
            partition.value,
            root.partition_url("plays", &partition),
            root.display()
        )))),
    }
}

/// The input columns plus the packed per-user keys the aggregations group by.
fn prepared_schema(input: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<_> = input.fields().iter().cloned().collect();
    for name in ["song_user", "artist_user"] {
        fields.push(Arc::new(Field::new(name, PACKED_KEY, false)));
    }
    fields.push(Arc::new(Field::new("country_code", DataType::Int32, false)));
    Arc::new(Schema::new(fields))
}

/// Two int64 ids in one 128-bit value, exactly (`hi << 64 | lo as u64`), for any ids.
///
/// Why: grouping ~one row per play by (song, user) is the heart of the job. As one Decimal128
/// column DataFusion uses its primitive hash table and, when it spills, a primitive sort; as two
/// or three int64 columns it uses the row-wise multi-column path, which measured about twice as
/// slow and larger. The packed value is only ever hashed and compared, never printed.
fn pack(hi: &Int64Array, lo: &Int64Array) -> ArrayRef {
    let packed = hi
        .values()
        .iter()
        .zip(lo.values())
        .map(|(&h, &l)| ((h as i128) << 64) | (l as u64 as i128));
    Arc::new(Decimal128Array::from_iter_values(packed).with_data_type(PACKED_KEY))
}

const PACKED_KEY: DataType = DataType::Decimal128(38, 0);

/// Keeps the rows of the logical date, counts the others (late arrivals are normal; they belong
/// to their own day's run), and adds the packed keys.
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
    let id = |name: &str| -> std::result::Result<Int64Array, DataFusionError> {
        Ok(batch
            .column(schema.index_of(name)?)
            .as_primitive::<Int64Type>()
            .clone())
    };
    let (user, song, artist) = (id("user_id")?, id("song_id")?, id("artist_id")?);
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
    columns.push(pack(&song, &user));
    columns.push(pack(&artist, &user));
    columns.push(Arc::new(codes));
    Ok(RecordBatch::try_new(prepared_schema(&schema), columns)?)
}

/// The input as one stream of the projected columns, already limited to the logical date.
async fn open_input(
    cfg: &Config,
    ctx: &SessionContext,
    rejects: Arc<Mutex<RejectSink>>,
    stats: Arc<Mutex<InputStats>>,
) -> Result<(SchemaRef, SendableRecordBatchStream)> {
    let lo = cfg
        .date
        .and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp_millis());
    let hi = lo + 86_400_000;
    match locate_input(cfg).await? {
        Source::Csv(path) => {
            let threads = cfg.common.threads;
            // Smaller blocks under a small budget: in-flight blocks are memory outside the pool.
            let block_size = (cfg.common.memory_limit.0 / 64 / threads as u64)
                .clamp(256 << 10, 4 << 20) as usize;
            let decoder = CsvDecoder::open(
                &path,
                &PLAYS,
                &COLUMNS,
                CsvOptions {
                    block_size,
                    threads,
                },
            )?;
            let schema = prepared_schema(&decoder.schema());
            tracing::info!(input = %path.display(), block_size, "decoding CSV export");
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
                        prepare(&block.batch, lo, hi, &stats)
                    });
                    let failed = item.is_err();
                    if tx.blocking_send(item).is_err() || failed {
                        return;
                    }
                }
            });
            Ok((schema, stream))
        }
        Source::Parquet(url) => {
            tracing::info!(input = %url, "reading Parquet partition");
            let df = ctx
                .read_parquet(url.clone(), ParquetReadOptions::default())
                .await?
                .select_columns(&COLUMNS)?;
            let schema = prepared_schema(&Arc::new(df.schema().as_arrow().clone()));
            let inner = df.execute_stream().await?;
            if let Ok(mut s) = stats.lock() {
                s.bytes += parquet_bytes(&url);
            }
            let stats2 = stats.clone();
            let mapped = inner.map(move |b| {
                let b = b?;
                if let Ok(mut s) = stats2.lock() {
                    s.records += b.num_rows() as u64;
                }
                prepare(&b, lo, hi, &stats2)
            });
            Ok((
                schema.clone(),
                Box::pin(RecordBatchStreamAdapter::new(schema, mapped)),
            ))
        }
    }
}

fn parquet_bytes(url: &str) -> u64 {
    let path = std::path::Path::new(url.trim_end_matches('/'));
    if path.is_file() {
        return path.metadata().map_or(0, |m| m.len());
    }
    std::fs::read_dir(path)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The SQL of the three aggregations. `{cap}` is the chart cap, `{stream}` the stream predicate.
struct Queries {
    song: String,
    artist: String,
    country_top: String,
}

fn queries(cfg: &Config) -> Queries {
    let date = cfg.date.format("%Y-%m-%d");
    let is_stream = format!("CASE WHEN ms_played >= {STREAM_MIN_MS} THEN 1 ELSE 0 END");
    let capped = |col: &str| match cfg.stream_cap {
        Some(n) => format!("least({col}, {n})"),
        None => col.to_string(),
    };
    let counted = if cfg.cap_counts {
        capped("streams")
    } else {
        "streams".to_string()
    };
    // Phase 1 groups by user (a packed key, see `pack`) so that phase 2 counts listeners as rows:
    // exact distinct counts that spill like any aggregation. Song and artist ids ride along as
    // min(); a song's artist as min and max, so that a song with two artists is caught.
    let per_user = |table: &str, keys: &str, carried: &str| {
        format!(
            "SELECT {keys}, {carried}, count(*) AS plays, sum({is_stream}) AS streams, \
             sum(CAST(ms_played AS BIGINT)) AS ms_played FROM {table} GROUP BY {keys}"
        )
    };
    Queries {
        song: format!(
            "SELECT CAST('{date}' AS DATE) AS date, song_id, min(artist_id) AS artist_id, sum(plays) AS plays, \
             sum({counted}) AS streams, sum(CASE WHEN streams > 0 THEN 1 ELSE 0 END) AS listeners, \
             sum(ms_played) AS ms_played, sum({chart}) AS chart_streams, max(artist_max) AS artist_max \
             FROM ({inner}) GROUP BY song_id ORDER BY song_id",
            chart = capped("streams"),
            inner = per_user(
                "plays_song",
                "song_user",
                "min(song_id) AS song_id, min(artist_id) AS artist_id, max(artist_id) AS artist_max"
            ),
        ),
        artist: format!(
            "SELECT CAST('{date}' AS DATE) AS date, artist_id, sum(plays) AS plays, sum({counted}) AS streams, \
             sum(CASE WHEN streams > 0 THEN 1 ELSE 0 END) AS listeners, sum(ms_played) AS ms_played \
             FROM ({inner}) GROUP BY artist_id ORDER BY artist_id",
            inner = per_user("plays_artist", "artist_user", "min(artist_id) AS artist_id"),
        ),
        // Charts count streams only, so the country plan reads streams only: a quarter fewer rows
        // and two fewer accumulators in its largest hash table.
        country_top: format!(
            "SELECT country_code AS scope, song_id, min(artist_id) AS artist_id, sum({chart}) AS streams, \
               count(*) AS listeners \
             FROM (SELECT country_code, song_user, min(song_id) AS song_id, min(artist_id) AS artist_id, \
                     count(*) AS streams \
                   FROM plays_country WHERE ms_played >= {STREAM_MIN_MS} GROUP BY country_code, song_user) \
             GROUP BY country_code, song_id",
            chart = capped("streams"),
        ),
    }
}

/// Runs the pipeline for one date. Outputs are published only when everything succeeded.
pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let common = &cfg.common;
    let partition = Partition::date(cfg.date);
    // Outside the pool: decode blocks in flight, tee channels, three Parquet writers.
    // (The process itself, decode blocks in flight, tee channels and three Parquet writers; under a
    // small budget the blocks shrink with it, see open_input.)
    let outside = ((32 << 20) + common.threads as u64 * (12 << 20)).min(common.memory_limit.0 / 2);
    let pool = engine::pool_bytes(common.memory_limit.0, outside);
    let ctx = engine::session(common, pool)?;
    meter.engine = "datafusion".into();
    meter.threads = common.threads;
    meter.memory_limit_bytes = common.memory_limit.0;
    tracing::info!(pool_bytes = pool, threads = common.threads, "engine ready");

    let rejects = Arc::new(Mutex::new(RejectSink::new(
        &common.data_root,
        &common.spill_dir,
        PIPELINE,
        &partition,
    )));
    let stats = Arc::new(Mutex::new(InputStats::default()));
    let (schema, input) = open_input(cfg, &ctx, rejects.clone(), stats.clone()).await?;
    let mut branches = tee(input, 3, 2).into_iter();
    for name in ["plays_song", "plays_artist", "plays_country"] {
        let stream = branches
            .next()
            .ok_or_else(|| Error::Internal("tee lost a branch".into()))?;
        ctx.register_table(
            name,
            Arc::new(one_shot_table(schema.clone(), vec![stream])?),
        )?;
    }

    let q = queries(cfg);
    let scratch = ScratchDir(
        common
            .spill_dir
            .join(format!("sp-{PIPELINE}-{}", std::process::id())),
    );
    let scratch_root = DataRoot::Local(scratch.0.clone());
    let song_schema = song_scratch_schema();
    let (song_df, artist_df, country_df) = tokio::try_join!(
        ctx.sql(&q.song),
        ctx.sql(&q.artist),
        ctx.sql(&q.country_top)
    )?;
    let (song_stream, artist_stream, country_stream) = tokio::try_join!(
        song_df.execute_stream(),
        artist_df.execute_stream(),
        country_df.execute_stream()
    )?;
    let names_from = stats.clone();
    let country_names = move || {
        names_from
            .lock()
            .map(|s| s.countries.names.clone())
            .unwrap_or_default()
    };
    // The three plans consume the teed input together; none may wait for another.
    let (song_scratch, artists, country_top) = tokio::try_join!(
        write_partition(
            &scratch_root,
            &common.spill_dir,
            "song_agg",
            &partition,
            &song_schema,
            song_stream
        ),
        write_partition(
            &common.data_root,
            &common.spill_dir,
            "daily_artist_counts",
            &partition,
            &DAILY_ARTIST_COUNTS,
            artist_stream
        ),
        async {
            topk::top_per_scope(
                country_stream,
                cfg.chart_size as usize,
                Some(&country_names),
            )
            .await
            .map_err(into_core)
        },
    )?;
    let mut staged = vec![artists];

    // Input is fully consumed now: account for it and enforce the reject threshold before
    // anything is published.
    let sink = Arc::try_unwrap(rejects)
        .map_err(|_| Error::Internal("reject sink still shared".into()))?
        .into_inner()
        .map_err(|_| Error::Internal("reject sink poisoned".into()))?;
    let (records, bytes, before, after) = {
        let s = stats
            .lock()
            .map_err(|_| Error::Internal("stats poisoned".into()))?;
        (s.records, s.bytes, s.before_date, s.after_date)
    };
    meter.rows_in = records;
    meter.bytes_in = bytes;
    meter.rows_rejected = sink.count();
    meter.set("rows_before_date", before);
    meter.set("rows_after_date", after);
    let rejects_at = sink.location();
    let share_check = sink.check_share(records, common.max_reject_share);
    let rejected = sink.finish().await?;
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
    // On this and any later error, the staged partitions and the scratch directory clean up
    // after themselves when dropped.
    share_check?;

    let song_url = scratch_root.partition_url("song_agg", &partition);
    song_scratch.publish(&scratch_root).await?;
    let songs = ctx
        .read_parquet(song_url, ParquetReadOptions::default())
        .await?;
    ctx.register_table("song_agg", songs.into_view())?;
    // The contract: artist_id is the song's primary artist. A day that gives a song two artists
    // is a broken export; say which songs rather than count them under one of the two.
    let conflicts = ctx
        .sql("SELECT song_id, artist_id, artist_max FROM song_agg WHERE artist_id <> artist_max ORDER BY song_id LIMIT 5")
        .await?
        .collect()
        .await?;
    let conflicts: Vec<String> = conflicts
        .iter()
        .flat_map(|b| {
            let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
            let (s, a, m) = (col(0), col(1), col(2));
            (0..b.num_rows()).map(move |r| {
                format!(
                    "song {} by artists {} and {}",
                    s.value(r),
                    a.value(r),
                    m.value(r)
                )
            })
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(Error::Inconsistent(format!(
            "the day's plays give songs more than one artist_id (first: {})",
            conflicts.join("; ")
        )));
    }
    let song_counts = ctx
        .sql("SELECT date, song_id, artist_id, plays, streams, listeners, ms_played FROM song_agg ORDER BY song_id")
        .await?
        .execute_stream()
        .await?;
    staged.push(
        write_partition(
            &common.data_root,
            &common.spill_dir,
            "daily_song_counts",
            &partition,
            &DAILY_SONG_COUNTS,
            song_counts,
        )
        .await?,
    );
    let global = ctx
        .sql("SELECT 'global' AS scope, song_id, artist_id, chart_streams AS streams, listeners FROM song_agg")
        .await?
        .execute_stream()
        .await?;
    let global_top = topk::top_per_scope(global, cfg.chart_size as usize, None).await?;
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
    // Parquet outputs are published whatever happens to Kafka; a Kafka failure then fails the run.
    let published = match (&cfg.kafka, staged.iter().find(|s| s.dataset == "charts")) {
        (Some(dest), Some(charts)) => {
            // One message per chart entry, keyed by scope (`global` or a country code).
            let shape = RowMessages {
                key: "scope".into(),
                group: false,
                extra: vec![],
            };
            Some(publish_dataset(dest, PIPELINE, &charts.dir, &shape).await)
        }
        _ => None,
    };
    for s in staged {
        meter.rows_out += s.rows;
        meter.bytes_out += s.bytes;
        match s.dataset.as_str() {
            "daily_song_counts" => outcome.song_rows = s.rows,
            "daily_artist_counts" => outcome.artist_rows = s.rows,
            _ => outcome.chart_rows = s.rows,
        }
        outcome.outputs.push(s.publish(&common.data_root).await?);
    }
    meter.set("song_rows", outcome.song_rows);
    meter.set("artist_rows", outcome.artist_rows);
    meter.set("chart_rows", outcome.chart_rows);
    meter.set("pool_bytes", pool);
    if let Some(result) = published {
        let (messages, bytes) = result?;
        meter.set("kafka_messages", messages);
        meter.set("kafka_bytes", bytes);
        outcome.kafka_messages = Some(messages);
    }
    Ok(outcome)
}

/// The top-k runs inside a `try_join!` of core-error futures.
fn into_core(e: Error) -> streampulse_core::Error {
    match e {
        Error::Core(c) => c,
        other => streampulse_core::Error::Internal(other.to_string()),
    }
}

/// Intermediate files of one run, removed however the run ends.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn song_scratch_schema() -> SchemaRef {
    let mut fields: Vec<_> = DAILY_SONG_COUNTS.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        "chart_streams",
        DataType::Int64,
        false,
    )));
    fields.push(Arc::new(Field::new("artist_max", DataType::Int64, false)));
    Arc::new(Schema::new(fields))
}

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

    let first = cfg.date - Duration::days(cfg.chart_lookback_days as i64);
    let previous: Vec<String> = common
        .data_root
        .list_partitions("charts", "date")
        .await?
        .into_iter()
        .filter(|d| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok_and(|d| d < cfg.date && d >= first)
        })
        .map(|d| {
            common.data_root.partition_url(
                "charts",
                &Partition {
                    key: "date",
                    value: d,
                },
            )
        })
        .collect();
    if previous.is_empty() {
        ctx.register_table(
            "chart_history",
            Arc::new(MemTable::try_new(CHARTS.clone(), vec![vec![]])?),
        )?;
    } else {
        let df = ctx
            .read_parquet(previous, ParquetReadOptions::default())
            .await?;
        ctx.register_table("chart_history", df.into_view())?;
    }
    let date = cfg.date.format("%Y-%m-%d");
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
         SELECT CAST('{date}' AS DATE) AS date, r.scope, r.rank, r.song_id, r.artist_id, r.streams, \
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
