//! `datagen`: writes every dataset of the data contract for one logical date, at any scale, from
//! a seed. A thin command-line shell over [`streampulse_testkit::generate`], plus a run record
//! (throughput) like every pipeline.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use streampulse_core::config::{CommonArgs, CommonConfig, TableFormat, TableFormatArgs};
use streampulse_core::exit::EXIT_CODES_HELP;
use streampulse_core::kafka::{PublishArgs, Publisher};
use streampulse_core::location::DataRoot;
use streampulse_core::run_record::RunMeter;
use streampulse_core::{Error, Result};
use streampulse_testkit::catalog::Catalog;
use streampulse_testkit::plays::{PlaysModel, PlaysSpec};
use streampulse_testkit::{Dataset, GenConfig, GenSummary};

pub const PIPELINE: &str = "datagen";

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Realistic synthetic StreamPulse data for one logical date", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The logical date to generate.
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: NaiveDate,

    /// Seed: the same seed, date and scale give the same bytes.
    #[arg(long, env = "SP_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Plays in the day (80000000 is StreamPulse's real volume, about 12 GB of CSV).
    #[arg(long, env = "SP_PLAYS", default_value_t = 1_000_000)]
    pub plays: u64,

    /// Distinct users.
    #[arg(long, env = "SP_USERS", default_value_t = 100_000)]
    pub users: u64,

    /// Songs in the catalog.
    #[arg(long, env = "SP_SONGS", default_value_t = 20_000)]
    pub songs: u64,

    /// Users enrolled in each experiment.
    #[arg(long, env = "SP_EXPERIMENT_USERS", default_value_t = 50_000)]
    pub experiment_users: u64,

    /// Share of malformed rows in the CSV export (wrong field count, bad ids, timestamps, ...).
    #[arg(long, env = "SP_BAD_ROWS", default_value_t = 0.0)]
    pub bad_rows: f64,

    /// Share of plays from the previous evening that arrive late in this day's export.
    #[arg(long, env = "SP_LATE_SHARE", default_value_t = 0.002)]
    pub late_share: f64,

    /// Datasets to write, comma separated: plays-csv, plays, songs, song_embeddings,
    /// user_features, subscriptions, experiments (default: all; with --to-kafka, all but the
    /// plays files).
    #[arg(long, env = "SP_DATASETS", value_delimiter = ',')]
    pub datasets: Vec<String>,

    /// Produce the day's plays to the Kafka topic --topic (one JSON event per play, key =
    /// user_id; --bad-rows makes malformed events) instead of writing the plays files. Needs
    /// --kafka-brokers.
    #[arg(long, env = "SP_TO_KAFKA")]
    pub to_kafka: bool,

    /// The topic --to-kafka produces to.
    #[arg(long, env = "SP_PLAYS_TOPIC", default_value = "plays")]
    pub topic: String,

    #[command(flatten)]
    pub kafka: PublishArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub output: TableFormatArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub gen_config: GenConfig,
    /// Brokers, topic and delivery timeout when the plays go to Kafka.
    pub to_kafka: Option<(String, String, Duration)>,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        let common = self.common.validate()?.writing(&self.output)?;
        for (name, v) in [
            ("--bad-rows", self.bad_rows),
            ("--late-share", self.late_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Config(format!(
                    "{name} must be within [0, 1], got {v}"
                )));
            }
        }
        if self.users == 0 || self.songs == 0 {
            return Err(Error::Config(
                "--users and --songs must be at least 1".into(),
            ));
        }
        let to_kafka = match (self.to_kafka, self.kafka.validate()?) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::Config("--to-kafka needs --kafka-brokers".into()));
            }
            (true, Some((brokers, timeout))) => Some((brokers, self.topic.clone(), timeout)),
        };
        let datasets = if self.datasets.is_empty() {
            Dataset::ALL
                .into_iter()
                .filter(|d| {
                    to_kafka.is_none() || !matches!(d, Dataset::PlaysCsv | Dataset::PlaysParquet)
                })
                .collect()
        } else {
            self.datasets
                .iter()
                .map(|d| {
                    Dataset::parse(d.trim())
                        .ok_or_else(|| Error::Config(format!("unknown dataset {d:?}")))
                })
                .collect::<Result<_>>()?
        };
        Ok(Config {
            gen_config: GenConfig {
                date: self.date,
                seed: self.seed,
                plays: self.plays,
                users: self.users,
                songs: self.songs,
                experiment_users: self.experiment_users,
                bad_rows: self.bad_rows,
                late_share: self.late_share,
                datasets,
            },
            to_kafka,
            common,
        })
    }
}

/// Generates the datasets; a progress bar shows on a terminal, never in JSON logs.
pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<GenSummary> {
    // An object-store root, or Delta tables, get a tree written locally first (under
    // --spill-dir), then published partition by partition (a commit each) and file by file.
    let (root, generated) = match &cfg.common.data_root {
        DataRoot::Local(root) if cfg.common.table_format == TableFormat::Parquet => {
            (root.clone(), None)
        }
        _ => {
            let dir = tempfile::Builder::new()
                .prefix("datagen-")
                .tempdir_in(&cfg.common.spill_dir)
                .map_err(|e| Error::io(&cfg.common.spill_dir, e))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let (gen_cfg, threads) = (cfg.gen_config.clone(), cfg.common.threads);
    let show_bar = cfg.common.log_format == streampulse_core::config::LogFormat::Text
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    meter.engine = "rayon".into();
    let summary = tokio::task::spawn_blocking(move || {
        let bar = indicatif::ProgressBar::new(gen_cfg.plays);
        if show_bar {
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {human_pos}/{human_len} plays ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;
        let out = pool.install(|| {
            streampulse_testkit::generate_with_progress(&gen_cfg, &root, &|n| bar.set_position(n))
        });
        bar.finish_and_clear();
        out
    })
    .await
    .map_err(|e| Error::Internal(format!("generator task failed: {e}")))??;
    meter.rows_out = summary.plays;
    meter.bytes_out = summary
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if let Some((brokers, topic, timeout)) = &cfg.to_kafka {
        let sent = produce_plays(cfg, brokers, topic, *timeout).await?;
        meter.rows_out += sent.plays;
        meter.set("kafka_messages", sent.plays);
        meter.set("kafka_bytes", sent.bytes);
        meter.set("kafka_seconds", sent.seconds);
        meter.set("bad_events", sent.bad);
        tracing::info!(
            topic = %topic,
            messages = sent.plays,
            mb = sent.bytes >> 20,
            seconds = format!("{:.1}", sent.seconds),
            "plays produced"
        );
    }
    meter.set("bad_rows", summary.bad_rows);
    meter.set("late_plays", summary.late_plays);
    meter.set("csv_bytes", summary.csv_bytes);
    match &generated {
        None => {
            for f in &summary.files {
                tracing::info!(file = %f.display(), "written");
            }
        }
        Some(dir) => {
            let urls = streampulse_core::commit::publish_tree(
                &cfg.common.data_root,
                cfg.common.table_format,
                dir.path(),
                &summary.files,
            )
            .await?;
            for url in urls {
                tracing::info!(url = %url, "published");
            }
        }
    }
    Ok(summary)
}

/// What `--to-kafka` produced.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    pub plays: u64,
    pub bytes: u64,
    pub bad: u64,
    pub seconds: f64,
}

/// One generated chunk as messages: payloads back to back, their ends, their keys.
struct EncodedChunk {
    payloads: Vec<u8>,
    ends: Vec<usize>,
    users: Vec<i64>,
    bad: u64,
}

/// Produces the day's plays (the same plays the files would hold, bad rows as malformed events)
/// to `topic`, keyed by user_id (decimal text). Chunks are generated on the rayon pool a few at a time while the
/// previous ones are sent, so memory stays at a few chunks whatever the day's size.
pub async fn produce_plays(
    cfg: &Config,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Produced> {
    use rayon::prelude::*;
    let started = std::time::Instant::now();
    let mut publisher = Publisher::connect(brokers, topic, PIPELINE, timeout).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<EncodedChunk>(4);
    let (gen_cfg, threads) = (cfg.gen_config.clone(), cfg.common.threads);
    let generator = tokio::task::spawn_blocking(move || -> Result<()> {
        let catalog = Arc::new(Catalog::generate(
            gen_cfg.seed,
            gen_cfg.songs as usize,
            gen_cfg.date,
        ));
        let model = PlaysModel::new(
            PlaysSpec {
                date: gen_cfg.date,
                seed: gen_cfg.seed,
                plays: gen_cfg.plays,
                users: gen_cfg.users,
                bad_rows: gen_cfg.bad_rows,
                late_share: gen_cfg.late_share,
            },
            catalog,
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;
        let chunks: Vec<usize> = (0..model.chunks()).collect();
        for window in chunks.chunks(threads.max(1)) {
            let encoded: Vec<EncodedChunk> = pool.install(|| {
                window
                    .par_iter()
                    .map(|&c| {
                        let chunk = model.chunk(c);
                        let mut out = EncodedChunk {
                            payloads: Vec::with_capacity(chunk.len() * 400),
                            ends: Vec::with_capacity(chunk.len()),
                            users: chunk.user_id.clone(),
                            bad: chunk.bad.iter().filter(|b| b.is_some()).count() as u64,
                        };
                        for i in 0..chunk.len() {
                            chunk.write_json_event(i, &mut out.payloads);
                            out.ends.push(out.payloads.len());
                        }
                        out
                    })
                    .collect()
            });
            for e in encoded {
                if tx.blocking_send(e).is_err() {
                    return Ok(()); // the sender failed; its error is the one reported
                }
            }
        }
        Ok(())
    });
    let mut bad = 0;
    let mut key = itoa::Buffer::new();
    while let Some(chunk) = rx.recv().await {
        bad += chunk.bad;
        let mut start = 0;
        for (end, user) in chunk.ends.iter().zip(&chunk.users) {
            publisher
                .send(key.format(*user).as_bytes(), &chunk.payloads[start..*end])
                .await?;
            start = *end;
        }
    }
    generator
        .await
        .map_err(|e| Error::Internal(format!("generator task failed: {e}")))??;
    let (plays, bytes) = publisher.finish().await?;
    Ok(Produced {
        plays,
        bytes,
        bad,
        seconds: started.elapsed().as_secs_f64(),
    })
}

streampulse_core::pipeline!(
    output = GenSummary,
    logical_date = |cfg| cfg.gen_config.date.format("%Y-%m-%d").to_string()
);
