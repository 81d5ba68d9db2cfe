//! Pipeline B, `recommend`: the top K songs of every user by dot product of the user's features
//! with the song embeddings, optionally without the songs the user streamed recently.
//!
//! How it is built:
//! * [`vectors`]: the catalog is loaded once (sorted by song id); users stream from Parquet;
//! * [`score`]: blocks of users are scored against tiles of the catalog by a packed GEMM kernel
//!   and fed straight into per-user top-K selectors ([`topk`]), blocks in parallel on every core;
//! * [`exclude`]: recently streamed songs, deduplicated and sorted by the engine (spilling within
//!   the budget) and merged with the users as they stream;
//! * `--shard I/N`: a deterministic hash of the user id picks the users of shard I, so N runs
//!   together write exactly the rows of one unsharded run.
//!
//! Memory: the catalog (songs x dim x 4 bytes) plus, per thread in flight, one block of users
//! and one tile of scores; independent of the number of users.

pub mod error;
pub mod exclude;
pub mod score;
pub mod topk;
pub mod vectors;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Float32Array, Int32Array, Int64Array, RecordBatch};
use chrono::NaiveDate;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use futures::StreamExt;
use rayon::prelude::*;
use streampulse_core::config::{BudgetArgs, CommonArgs, CommonConfig, RejectArgs, TableFormatArgs};
use streampulse_core::kafka::{Destination, PublishArgs, RowMessages, publish_dataset};
use streampulse_core::location::Partition;
use streampulse_core::output::write_partition;
use streampulse_core::rejects::{RejectSink, once_sorted};
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::RECOMMENDATIONS;
use streampulse_core::{engine, exit::EXIT_CODES_HELP};

pub use error::{Error, Result};

use crate::exclude::Exclusions;
use crate::vectors::{Block, Catalog};

pub const PIPELINE: &str = "recommend";

/// `I/N`: this run scores shard I (from 0) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Shard::parse(s, std::env::var("JOB_COMPLETION_INDEX").ok().as_deref())
    }
}

impl Shard {
    /// `I/N`, or `auto/N` where I is `completion_index`: the `JOB_COMPLETION_INDEX` that
    /// Kubernetes gives each pod of an Indexed Job, so one manifest runs every shard.
    pub fn parse(s: &str, completion_index: Option<&str>) -> std::result::Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected I/N or auto/N, got {s:?}"))?;
        let i = match i.trim() {
            "auto" => completion_index.ok_or_else(|| {
                format!("--shard {s}: JOB_COMPLETION_INDEX is not set (auto/N is for Kubernetes Indexed Jobs)")
            })?,
            i => i,
        };
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("bad shard index {i:?}"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad shard count {n:?}"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }

    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether `user` belongs to this shard: SplitMix64 of the id, so consecutive ids spread
    /// evenly and every run, on any machine, agrees.
    pub fn contains(&self, user: i64) -> bool {
        if self.count == 1 {
            return true;
        }
        let mut z = (user as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        z % self.count as u64 == self.index as u64
    }
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Top-K song recommendations per user by dot product", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The logical date: reads that date's `user_features` and `song_embeddings`.
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: NaiveDate,

    /// Songs per user.
    #[arg(long, env = "SP_K", default_value_t = 50)]
    pub k: u32,

    /// Do not recommend songs the user streamed in the last N days (the date included), read
    /// from the `plays` partitions (0 = no exclusions).
    #[arg(long, env = "SP_EXCLUDE_DAYS", default_value_t = 0)]
    pub exclude_days: u32,

    /// Score only shard I of N (from 0): for Airflow task mapping; `auto/N` takes I from
    /// JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's pod index).
    #[arg(long, env = "SP_SHARD", default_value = "0/1")]
    pub shard: Shard,

    /// Users per block (per GEMM call). Default: 256.
    #[arg(long, env = "SP_BLOCK_USERS", default_value_t = 256)]
    pub block_users: usize,

    /// Explicit `user_features` input (Parquet file or directory).
    #[arg(long, env = "SP_USER_FEATURES")]
    pub user_features: Option<PathBuf>,

    /// Explicit `song_embeddings` input (Parquet file or directory).
    #[arg(long, env = "SP_SONG_EMBEDDINGS")]
    pub song_embeddings: Option<PathBuf>,

    /// With --kafka-brokers, each user's list also goes to this topic: one message per user,
    /// keyed by user_id.
    #[arg(
        long,
        env = "SP_RECOMMENDATIONS_TOPIC",
        default_value = "recommendations"
    )]
    pub recommendations_topic: String,

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

#[derive(Debug, Clone)]
pub struct Config {
    pub date: NaiveDate,
    pub k: usize,
    pub exclude_days: u32,
    pub shard: Shard,
    pub block_users: usize,
    pub user_features: Option<PathBuf>,
    pub song_embeddings: Option<PathBuf>,
    /// Where the lists are also published, with --kafka-brokers.
    pub kafka: Option<Destination>,
    /// `--max-reject-share`.
    pub max_reject_share: f64,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        if self.k == 0 {
            return Err(Error::Config("--k must be at least 1".into()));
        }
        if !(1..=65_536).contains(&self.block_users) {
            return Err(Error::Config(
                "--block-users must be within 1..=65536".into(),
            ));
        }
        Ok(Config {
            max_reject_share: self.rejects.validate()?,
            date: self.date,
            k: self.k as usize,
            exclude_days: self.exclude_days,
            shard: self.shard,
            block_users: self.block_users,
            user_features: self.user_features.clone(),
            song_embeddings: self.song_embeddings.clone(),
            kafka: self.kafka.destination(&self.recommendations_topic)?,
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
    /// User lists published to Kafka (with --kafka-brokers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_messages: Option<u64>,
    pub rejects: Option<String>,
    pub users: u64,
    pub songs: u64,
    pub rows: u64,
    pub excluded_pairs: u64,
    pub gflops: f64,
}

/// Blocks scored per parallel round: enough to keep every thread busy, few enough that memory
/// stays a handful of blocks.
fn blocks_per_round(threads: usize) -> usize {
    2 * threads.max(1)
}

/// The output rows of scored blocks.
fn to_batch(
    blocks: &[Block],
    tops: &[Vec<Vec<topk::Candidate>>],
    catalog: &Catalog,
) -> Result<RecordBatch> {
    let rows: usize = tops.iter().flatten().map(Vec::len).sum();
    let (mut user, mut rank, mut song, mut score) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for (block, top) in blocks.iter().zip(tops) {
        for (&u, best) in block.users.iter().zip(top) {
            for (r, c) in best.iter().enumerate() {
                user.push(u);
                rank.push(r as i32 + 1);
                song.push(catalog.ids[c.song as usize]);
                score.push(c.score);
            }
        }
    }
    Ok(RecordBatch::try_new(
        RECOMMENDATIONS.clone(),
        vec![
            Arc::new(Int64Array::from(user)),
            Arc::new(Int32Array::from(rank)),
            Arc::new(Int64Array::from(song)),
            Arc::new(Float32Array::from(score)),
        ],
    )?)
}

/// Counters of the scoring loop.
#[derive(Debug, Default)]
struct Counters {
    users_read: u64,
    users: u64,
    rows: u64,
    excluded: u64,
    score_seconds: f64,
}

/// Streams the users, scores them in parallel rounds and sends the output batches. A user's
/// second feature row is rejected. Returns `Err(NotSorted)` when the users are not ascending.
#[allow(clippy::too_many_arguments)]
async fn score_users(
    cfg: &Config,
    users_url: &str,
    mut users: SendableRecordBatchStream,
    dim: usize,
    catalog: &Arc<Catalog>,
    mut exclusions: Option<Exclusions>,
    pool: &rayon::ThreadPool,
    rejects: &mut RejectSink,
    out: &tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>,
) -> Result<Counters> {
    let mut progress = Counters::default();
    let watch = streampulse_core::progress::Progress::start("users", None);
    let mut last_user: Option<i64> = None;
    let mut round: Vec<Block> = Vec::new();
    let mut block = Block::default();
    let per_round = blocks_per_round(cfg.common.threads);
    let mut done = false;
    while !done {
        match users.next().await.transpose()? {
            Some(batch) => {
                let first_line = progress.users_read;
                progress.users_read += batch.num_rows() as u64;
                watch.add(batch.num_rows() as u64, 0);
                for (row, user, vector) in
                    vectors::usable_users(&batch, dim, users_url, first_line, rejects)?
                {
                    if let Some(last) = last_user {
                        if user == last {
                            rejects.push(&streampulse_core::rejects::Reject {
                                file: users_url.to_string(),
                                line: first_line + row as u64,
                                column: Some("user_id".into()),
                                reason: format!("user {user} has more than one feature row"),
                                raw: format!("{{\"user_id\":{user}}}"),
                            })?;
                            continue;
                        }
                        // Out of order: a repeat of this user may be anywhere, and the
                        // exclusions are merged in user order; start again on sorted input,
                        // where a repeat is the row just before.
                        if user < last {
                            return Err(Error::NotSorted {
                                input: users_url.to_string(),
                                key: "user_id",
                                line: first_line + row as u64,
                            });
                        }
                    }
                    last_user = Some(user);
                    if !cfg.shard.contains(user) {
                        continue;
                    }
                    let excluded = match exclusions.as_mut() {
                        Some(x) => x.take(user, catalog).await?,
                        None => Vec::new(),
                    };
                    block.users.push(user);
                    block.vectors.extend_from_slice(vector);
                    block.excluded.push(excluded);
                    if block.len() == cfg.block_users {
                        round.push(std::mem::take(&mut block));
                    }
                }
            }
            None => {
                done = true;
                if !block.is_empty() {
                    round.push(std::mem::take(&mut block));
                }
            }
        }
        if round.len() >= per_round || (done && !round.is_empty()) {
            let blocks = std::mem::take(&mut round);
            let (catalog_ref, k) = (catalog.clone(), cfg.k);
            let started = std::time::Instant::now();
            let (blocks, tops) = tokio::task::block_in_place(|| {
                let tops: Vec<_> = pool.install(|| {
                    blocks
                        .par_iter()
                        .map(|b| score::score_block(b, &catalog_ref, k))
                        .collect()
                });
                (blocks, tops)
            });
            progress.score_seconds += started.elapsed().as_secs_f64();
            progress.users += blocks.iter().map(|b| b.len() as u64).sum::<u64>();
            progress.excluded += blocks
                .iter()
                .flat_map(|b| &b.excluded)
                .map(|e| e.len() as u64)
                .sum::<u64>();
            let batch = to_batch(&blocks, &tops, catalog)?;
            progress.rows += batch.num_rows() as u64;
            if out.send(Ok(batch)).await.is_err() {
                return Err(Error::Internal("the output writer stopped".into()));
            }
        }
    }
    watch.finish();
    Ok(progress)
}

/// The name of this run's output files in the date partition.
fn shard_prefix(shard: Shard) -> String {
    format!("shard-{:05}-of-{:05}-", shard.index, shard.count)
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let common = &cfg.common;
    let day = Partition::date(cfg.date);
    // Outside the pool: the catalog, the blocks in flight and the writer.
    let pool_bytes = engine::pool_bytes(common.budget(), 256 << 20);
    let ctx = engine::session(common, pool_bytes)?;
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .target_partitions = 1;
    meter.engine = "gemm".into();
    let threads = rayon::ThreadPoolBuilder::new()
        .num_threads(common.threads)
        .thread_name(|i| format!("recommend-score-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;

    let root = &common.data_root;
    let songs_url = root
        .input_or_date_partition(cfg.song_embeddings.as_deref(), "song_embeddings", cfg.date)
        .await?;
    let users_url = root
        .input_or_date_partition(cfg.user_features.as_deref(), "user_features", cfg.date)
        .await?;
    // Shards run at once: each keeps its rejects in a file of its own.
    let rejects_name = match cfg.shard {
        Shard::ALL => "rejects.jsonl".to_string(),
        shard => format!(
            "rejects-{}.jsonl",
            shard_prefix(shard).trim_end_matches('-')
        ),
    };
    let mut rejects = RejectSink::named(
        &common.data_root,
        &common.spill_dir,
        PIPELINE,
        &day,
        &rejects_name,
    );
    let catalog =
        Arc::new(vectors::catalog(&ctx, &songs_url, common.budget(), &mut rejects).await?);
    let songs_rejected = rejects.count();
    tracing::info!(songs = catalog.len(), dim = catalog.dim, "catalog loaded");
    if catalog.is_empty() {
        return Err(Error::Core(streampulse_core::Error::InputMissing(format!(
            "{songs_url} holds no usable song"
        ))));
    }
    let plays = if cfg.exclude_days > 0 {
        let partitions = exclude::window(&common.data_root, cfg.date, cfg.exclude_days).await?;
        if partitions.is_empty() {
            tracing::warn!(
                days = cfg.exclude_days,
                "no plays partitions in the exclusion window"
            );
        }
        partitions
    } else {
        Vec::new()
    };

    let ((progress, staged), _) =
        once_sorted(&mut rejects, async |sort, rejects: &mut RejectSink| {
            let (dim, users) = vectors::users(&ctx, &users_url, sort).await?;
            if dim != catalog.dim {
                return Err(Error::Inconsistent(format!(
                    "users have {dim} features but songs have {} dimensions",
                    catalog.dim
                )));
            }
            let exclusions = if plays.is_empty() {
                None
            } else {
                Some(Exclusions::open(&ctx, plays.clone()).await?)
            };
            let builder = RecordBatchReceiverStream::builder(RECOMMENDATIONS.clone(), 2);
            let tx = builder.tx();
            let output = builder.build();
            let writer = write_partition(
                &common.data_root,
                &common.spill_dir,
                "recommendations",
                &day,
                &RECOMMENDATIONS,
                output,
            );
            let scoring = async {
                let r = score_users(
                    cfg, &users_url, users, dim, &catalog, exclusions, &threads, rejects, &tx,
                )
                .await;
                drop(tx);
                r
            };
            let (scored, written) = tokio::join!(scoring, writer);
            // A pass abandoned for unsorted users drops its staged partition with it.
            Ok((scored?, written?))
        })
        .await?;
    let users_in = progress.users_read;
    let rejects_at = rejects.location();
    let rejected = rejects.count();
    // Published with the recommendations, in the run's commit; alone if the input fails the run.
    let rejects = rejects
        .stage_checked(
            users_in + catalog.len() as u64 + songs_rejected,
            cfg.max_reject_share,
        )
        .await?;

    let flops = 2.0 * progress.users as f64 * catalog.len() as f64 * catalog.dim as f64;
    let gflops = flops / progress.score_seconds.max(1e-9) / 1e9;
    meter.rows_in = users_in + catalog.len() as u64;
    meter.rows_out = staged.rows;
    meter.rows_rejected = rejected;
    meter.bytes_in = engine::parquet_bytes(&ctx, &[songs_url.clone(), users_url.clone()]).await?
        + engine::parquet_bytes(&ctx, &plays).await?;
    meter.bytes_out = staged.bytes;
    meter.set("users_scored", progress.users);
    meter.set("songs", catalog.len() as u64);
    meter.set("excluded_pairs", progress.excluded);
    meter.set("score_seconds", progress.score_seconds);
    meter.set("gflops", gflops);
    meter.set("shard", format!("{}/{}", cfg.shard.index, cfg.shard.count));
    tracing::info!(
        users = progress.users,
        songs = catalog.len(),
        score_s = format!("{:.2}", progress.score_seconds),
        gflops = format!("{gflops:.1}"),
        "scored"
    );

    let staged = if cfg.shard == Shard::ALL {
        staged
    } else {
        // Each shard adds its own files to the date's partition: rename the staged parts, then
        // publish them beside the other shards', dropping files of another layout.
        let prefix = shard_prefix(cfg.shard);
        let count = cfg.shard.count;
        for entry in std::fs::read_dir(&staged.dir)
            .map_err(|e| streampulse_core::Error::io(&staged.dir, e))?
        {
            let entry = entry.map_err(|e| streampulse_core::Error::io(&staged.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let to = staged.dir.join(format!("{prefix}{name}"));
            std::fs::rename(entry.path(), &to).map_err(|e| streampulse_core::Error::io(&to, e))?;
        }
        let own_layout = format!("-of-{count:05}-");
        staged.beside(prefix.clone(), move |name| {
            name.starts_with(&prefix) || !name.contains(&own_layout)
        })
    };
    let published = streampulse_core::commit::publish(
        &common.data_root,
        common.table_format,
        vec![staged, rejects],
    )
    .await?;
    let outputs: Vec<String> = published
        .iter()
        .filter(|p| !streampulse_core::rejects::is_rejects(&p.dataset))
        .map(|p| p.url.clone())
        .collect();
    // Kafka hears of the recommendations once they are in place; a Kafka failure then fails the
    // run, with the Parquet outputs published.
    let sent = match (&cfg.kafka, published.first()) {
        (Some(dest), Some(recs)) => {
            let shape = RowMessages {
                key: "user_id".into(),
                group: true,
                extra: vec![("date".into(), cfg.date.to_string().into())],
            };
            let mine = (cfg.shard != Shard::ALL).then(|| shard_prefix(cfg.shard));
            Some(publish_dataset(dest, PIPELINE, &recs.dir, mine.as_deref(), &shape).await)
        }
        _ => None,
    };
    let kafka_messages = match sent {
        Some(result) => {
            let (messages, bytes) = result?;
            meter.set("kafka_messages", messages);
            meter.set("kafka_bytes", bytes);
            Some(messages)
        }
        None => None,
    };
    Ok(Outcome {
        outputs,
        kafka_messages,
        rejects: (rejected > 0).then_some(rejects_at),
        users: progress.users,
        songs: catalog.len() as u64,
        rows: progress.rows,
        excluded_pairs: progress.excluded,
        gflops,
    })
}

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.date.format("%Y-%m-%d").to_string()
);

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_parse_explicitly_or_from_the_job_completion_index() {
        assert_eq!(Shard::parse("2/4", None), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(
            Shard::parse("auto/4", Some("3")),
            Ok(Shard { index: 3, count: 4 })
        );
        assert!(
            Shard::parse("auto/4", None)
                .unwrap_err()
                .contains("JOB_COMPLETION_INDEX")
        );
        assert!(
            Shard::parse("auto/4", Some("4")).is_err(),
            "index past the count"
        );
        assert!(Shard::parse("auto/4", Some("x")).is_err());
        assert!(Shard::parse("4", None).is_err());
    }
}
