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

mod charts;
pub mod error;
mod input;
pub mod spark;
pub mod tally;
pub mod topk;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use streampulse_core::commit;
use streampulse_core::config::{BudgetArgs, CommonArgs, CommonConfig, RejectArgs, TableFormatArgs};
use streampulse_core::kafka::{Destination, PublishArgs, RowMessages, publish_dataset};
use streampulse_core::location::Partition;
use streampulse_core::output::write_partition;
use streampulse_core::rejects::{RejectSink, is_rejects};
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::{DAILY_ARTIST_COUNTS, DAILY_SONG_COUNTS};
use streampulse_core::stream::batch_stream;
use streampulse_core::{engine, exit::EXIT_CODES_HELP};
use streampulse_spark::{Engine, SparkArgs, SparkConfig};

use charts::charts_with_history;
pub use error::{Error, Result};
pub use input::CountryCodes;
use input::{Export, InputStats, Source, int_column, locate_input, open_input};
use tally::{Tally, TallyOptions};

pub const PIPELINE: &str = "play-counts";

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
            s.countries.names().to_vec(),
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

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.date.format("%Y-%m-%d").to_string()
);
