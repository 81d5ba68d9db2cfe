//! The consumer loop: decode, hold, write, commit.
//!
//! Records are held per (Kafka partition, date) in Arrow builders. A flush (every
//! `--flush-rows` records, every `--flush-interval-s`, on catching up and on SIGTERM) writes one
//! Parquet file per (partition, date) with records, then the rejects, and only then commits the
//! offsets: a crash at any point loses nothing, because the uncommitted records come again.
//! What comes again and is already in a file is recognised by the file names (see the crate
//! docs) and by the play_ids already written for the date, so it is not written twice.
//!
//! On a rebalance, the records held for revoked partitions are dropped unwritten: their new
//! owner reads them again from the last commit.
//!
//! A batch run (`--until-caught-up`) always ends: an error that retrying does not cure (a batch
//! it cannot decompress or decode, a refused authorization) fails it after
//! [`PERMANENT_ATTEMPTS`] tries; a broker that fails (librdkafka reports transport errors) and
//! sends nothing since (no record, no end of partition, no group assignment) for
//! `--kafka-timeout-s` fails it with 69; SIGTERM before it has caught up
//! writes and commits what it read, then exits 75 so the scheduler runs it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use streampulse_core::exit::ExitCode;
use streampulse_core::kafka::{client_config, ensure_topics, kafka_error};
use streampulse_core::location::DataRoot;
use streampulse_core::location::Partition;
use streampulse_core::output::writer_properties;
use streampulse_core::progress::Progress;
use streampulse_core::rejects::{Reject, RejectSink};
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::PLAYS;

use crate::event::{PlaysBuilder, decode};
use crate::{Config, Error, PIPELINE, Result};

/// What a run did, for the run record and the XCom summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestSummary {
    /// Messages read, whatever became of them.
    pub consumed: u64,
    /// Plays written to Parquet.
    pub written: u64,
    pub rejected: u64,
    /// Messages read again after a restart or rebalance that a file already held.
    pub replayed_skipped: u64,
    /// Plays whose play_id was already written for their date.
    pub duplicates_skipped: u64,
    pub files: u64,
    /// The dates that received plays.
    pub dates: Vec<String>,
    /// True when the run stopped because every assigned partition was consumed to its end.
    pub caught_up: bool,
}

/// The same consumer error this many times in a row, with no record read between, ends the run:
/// librdkafka fetches the same offsets again after each, so more tries change nothing.
pub const PERMANENT_ATTEMPTS: u32 = 5;

/// Counts the permanent errors met since the last record read.
#[derive(Debug, Default)]
struct Retries {
    attempts: u32,
}

impl Retries {
    /// Records an error; true when it is permanent and has now been met often enough to stop.
    /// Permanent means what the core classifies as not worth a retry: bad input (a batch this
    /// build cannot decompress or decode) or the operator's to fix (a refused authorization).
    /// Transport errors are not: librdkafka reconnects.
    fn exhausted(&mut self, error: &KafkaError) -> bool {
        match streampulse_core::error::kafka_exit_code(error) {
            ExitCode::DataErr | ExitCode::Usage => {
                self.attempts += 1;
                self.attempts >= PERMANENT_ATTEMPTS
            }
            _ => false,
        }
    }

    fn progress(&mut self) {
        self.attempts = 0;
    }
}

/// Collects the partitions a rebalance takes away, for the loop to drop what it holds of them,
/// and what a stalled batch run reports: the rebalances seen and the broker's last error.
struct IngestContext {
    topic: String,
    revoked: Arc<Mutex<Vec<i32>>>,
    rebalances: Arc<AtomicU64>,
    /// The broker's last error and when it came.
    last_error: Arc<Mutex<Option<(KafkaError, Instant)>>>,
}

impl ClientContext for IngestContext {
    /// librdkafka reports partition EOF (which we asked for) through the global error callback
    /// as well; it is not an error. Real errors are retried by librdkafka, so they warn.
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::warn!(%error, reason, "librdkafka");
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((error, Instant::now()));
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
                revoked.extend(
                    tpl.elements()
                        .iter()
                        .filter(|e| e.topic() == self.topic)
                        .map(|e| e.partition()),
                );
            }
            Rebalance::Assign(tpl) => {
                // An empty assignment counts too: the group answered.
                self.rebalances.fetch_add(1, Ordering::Relaxed);
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// What is known and held for one date of one partition.
struct DateState {
    /// The highest offset whose record (of this date) is in a file already; -1 for none.
    watermark: i64,
    /// play_ids of this date written or held, for this partition.
    seen: HashSet<i64>,
    rows: PlaysBuilder,
    first_offset: i64,
}

#[derive(Default)]
struct PartitionState {
    /// The offset after the last record read: what a commit stores.
    next_offset: Option<i64>,
    /// Reached the end of the partition at least once since it was assigned.
    eof: bool,
    dates: BTreeMap<i32, DateState>,
    /// Malformed messages held: (day of the message timestamp, reject).
    rejects: Vec<(i32, Reject)>,
    first_reject_offset: i64,
    max_day: i32,
}

struct Ingest<'a> {
    cfg: &'a Config,
    root: DataRoot,
    states: HashMap<i32, PartitionState>,
    held: usize,
    summary: IngestSummary,
    bytes_in: u64,
    bytes_out: u64,
    dates: std::collections::BTreeSet<i32>,
    /// Messages and payload bytes consumed, for the person or log watching.
    progress: Progress,
}

fn date_of(day: i32) -> NaiveDate {
    streampulse_core::time::from_date32(day).unwrap_or_default()
}

/// `part-<topic>-p<P>-<first>-<upto>.parquet`; fixed widths keep listings in offset order.
fn file_name(topic: &str, partition: i32, first: i64, upto: i64, ext: &str) -> String {
    format!("part-{topic}-p{partition:04}-{first:012}-{upto:012}.{ext}")
}

/// The `upto` offset of one of our file names for `partition`, else None.
fn parse_upto(name: &str, topic: &str, partition: i32) -> Option<i64> {
    let rest = name
        .strip_prefix(&format!("part-{topic}-p{partition:04}-"))?
        .strip_suffix(".parquet")?;
    let (_first, upto) = rest.split_once('-')?;
    upto.parse().ok()
}

impl Ingest<'_> {
    /// The state of (partition, day), built from the files of earlier runs on first use.
    async fn date_state(&mut self, partition: i32, day: i32) -> Result<&mut DateState> {
        let st = self.states.entry(partition).or_default();
        st.max_day = st.max_day.max(day);
        if !st.dates.contains_key(&day) {
            let dir = format!("plays/date={}", date_of(day).format("%Y-%m-%d"));
            let mut watermark = -1;
            let mut seen = HashSet::new();
            for name in self.root.list_files(&dir).await? {
                let Some(upto) = parse_upto(&name, &self.cfg.topic, partition) else {
                    continue;
                };
                watermark = watermark.max(upto);
                let bytes =
                    bytes::Bytes::from(self.root.read_file(&format!("{dir}/{name}")).await?);
                let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .map_err(streampulse_core::Error::from)?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
                for batch in builder
                    .with_projection(mask)
                    .build()
                    .map_err(streampulse_core::Error::from)?
                {
                    let batch = batch?;
                    let ids = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .ok_or_else(|| {
                            Error::Inconsistent(format!("{dir}/{name}: play_id is not int64"))
                        })?;
                    seen.extend(ids.values().iter().copied());
                }
            }
            if watermark >= 0 {
                tracing::info!(partition, date = %date_of(day), watermark, plays = seen.len(), "resuming after earlier files");
            }
            let st = self.states.entry(partition).or_default();
            st.dates.insert(
                day,
                DateState {
                    watermark,
                    seen,
                    rows: PlaysBuilder::default(),
                    first_offset: -1,
                },
            );
        }
        let st = self.states.entry(partition).or_default();
        Ok(st.dates.get_mut(&day).expect("inserted above"))
    }

    async fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
        ts_ms: Option<i64>,
    ) -> Result<()> {
        self.summary.consumed += 1;
        let st = self.states.entry(partition).or_default();
        st.next_offset = Some(offset + 1);
        let payload = payload.unwrap_or_default();
        self.bytes_in += payload.len() as u64;
        self.progress.add(1, payload.len() as u64);
        match decode(payload) {
            Ok(event) => {
                let day = event.day();
                let ds = self.date_state(partition, day).await?;
                if offset <= ds.watermark {
                    self.summary.replayed_skipped += 1;
                } else if !ds.seen.insert(event.play_id()) {
                    self.summary.duplicates_skipped += 1;
                } else {
                    if ds.rows.is_empty() {
                        ds.first_offset = offset;
                    }
                    ds.rows.push(&event);
                    self.held += 1;
                    self.dates.insert(day);
                }
            }
            Err(rejection) => {
                let day = ts_ms.map_or_else(
                    || streampulse_core::time::date32(self.cfg.date),
                    streampulse_core::time::day_of_ms,
                );
                if st.rejects.is_empty() {
                    st.first_reject_offset = offset;
                }
                st.rejects.push((
                    day,
                    Reject {
                        file: format!("kafka:{}/{partition}", self.cfg.topic),
                        line: offset as u64,
                        column: rejection.column,
                        reason: rejection.reason,
                        raw: String::from_utf8_lossy(payload).into_owned(),
                    },
                ));
                self.summary.rejected += 1;
                self.held += 1;
            }
        }
        Ok(())
    }

    /// Drops what is held for partitions a rebalance took away.
    fn drop_revoked(&mut self, revoked: &Mutex<Vec<i32>>) {
        let parts: Vec<i32> =
            std::mem::take(&mut *revoked.lock().unwrap_or_else(|p| p.into_inner()));
        for p in parts {
            if let Some(st) = self.states.remove(&p) {
                let held: usize =
                    st.dates.values().map(|d| d.rows.len()).sum::<usize>() + st.rejects.len();
                self.held = self.held.saturating_sub(held);
                if held > 0 {
                    tracing::info!(
                        partition = p,
                        held,
                        "partition revoked: its new owner reads the held records again"
                    );
                }
            }
        }
    }

    /// Writes every held record, then commits the offsets read.
    async fn flush(&mut self, consumer: &StreamConsumer<IngestContext>) -> Result<()> {
        let topic = self.cfg.topic.clone();
        let mut commits = TopicPartitionList::new();
        let mut partitions: Vec<i32> = self.states.keys().copied().collect();
        partitions.sort_unstable();
        for p in partitions {
            let Some(st) = self.states.get_mut(&p) else {
                continue;
            };
            let Some(next) = st.next_offset else { continue };
            let upto = next - 1;
            for (&day, ds) in st.dates.iter_mut().filter(|(_, d)| !d.rows.is_empty()) {
                let batch = ds.rows.finish()?;
                let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 4);
                let mut writer =
                    ArrowWriter::try_new(&mut buf, PLAYS.clone(), Some(writer_properties()))
                        .map_err(streampulse_core::Error::from)?;
                writer
                    .write(&batch)
                    .map_err(streampulse_core::Error::from)?;
                writer.close().map_err(streampulse_core::Error::from)?;
                let rel = format!(
                    "plays/date={}/{}",
                    date_of(day).format("%Y-%m-%d"),
                    file_name(&topic, p, ds.first_offset, upto, "parquet")
                );
                self.root.put_file(&rel, &buf).await?;
                ds.watermark = upto;
                self.summary.files += 1;
                self.summary.written += batch.num_rows() as u64;
                self.bytes_out += buf.len() as u64;
                tracing::debug!(file = %rel, rows = batch.num_rows(), "written");
            }
            if !st.rejects.is_empty() {
                // The core's sink, one file per flush and date: named after the offsets like
                // the Parquet files, so a replayed flush replaces its own file.
                let name = file_name(&topic, p, st.first_reject_offset, upto, "jsonl")
                    .replacen("part-", "rejects-", 1);
                let mut by_day: BTreeMap<i32, RejectSink> = BTreeMap::new();
                for (day, r) in st.rejects.drain(..) {
                    by_day
                        .entry(day)
                        .or_insert_with(|| {
                            RejectSink::named(
                                &self.root,
                                &self.cfg.common.spill_dir,
                                PIPELINE,
                                &Partition::date(date_of(day)),
                                &name,
                            )
                        })
                        .push(&r)?;
                }
                for sink in by_day.into_values() {
                    sink.finish().await?;
                }
            }
            commits
                .add_partition_offset(&topic, p, Offset::Offset(next))
                .map_err(|e| kafka_error(e, "preparing the commit"))?;
            // Dates two days behind the newest are closed; a late play reloads its date.
            let horizon = st.max_day - 1;
            st.dates
                .retain(|&day, d| day >= horizon || !d.rows.is_empty());
        }
        self.held = 0;
        if commits.count() > 0 {
            consumer
                .commit(&commits, CommitMode::Sync)
                .map_err(|e| kafka_error(e, "committing offsets"))?;
        }
        Ok(())
    }

    /// Every assigned partition of our topic has been read to its end since it was assigned.
    fn caught_up(&self, consumer: &StreamConsumer<IngestContext>) -> Result<bool> {
        let assignment = consumer
            .assignment()
            .map_err(|e| kafka_error(e, "reading the assignment"))?;
        let mine: Vec<i32> = assignment
            .elements()
            .iter()
            .filter(|e| e.topic() == self.cfg.topic)
            .map(|e| e.partition())
            .collect();
        Ok(!mine.is_empty()
            && mine
                .iter()
                .all(|p| self.states.get(p).is_some_and(|s| s.eof)))
    }
}

/// Consumes until caught up (`--until-caught-up`) or until `stop` flips (SIGTERM), writing and
/// committing as it goes; then checks the share of malformed events.
pub async fn run(
    cfg: &Config,
    meter: &mut RunMeter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<IngestSummary> {
    meter.engine = "rdkafka".into();
    // play-ingest writes plain Parquet files, one per flush: into a Delta table they would be
    // files no commit names, which every Delta reader ignores.
    if cfg.common.data_root.is_delta_table("plays").await? {
        return Err(Error::Config(format!(
            "plays in {} is a Delta table: play-ingest writes plain Parquet; ingest into a root \
             of plain Parquet (--table-format delta is not offered here yet)",
            cfg.common.data_root.display()
        )));
    }
    ensure_topics(&cfg.brokers, &[&cfg.topic], cfg.kafka_timeout).await?;
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let rebalances = Arc::new(AtomicU64::new(0));
    let last_error = Arc::new(Mutex::new(None));
    let context = IngestContext {
        topic: cfg.topic.clone(),
        revoked: revoked.clone(),
        rebalances: rebalances.clone(),
        last_error: last_error.clone(),
    };
    let heartbeat = (cfg.session_timeout_ms / 6).clamp(100, 3000);
    let consumer: StreamConsumer<IngestContext> = client_config(&cfg.brokers, PIPELINE)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", heartbeat.to_string())
        .create_with_context(context)
        .map_err(|e| kafka_error(e, "creating the consumer"))?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(|e| kafka_error(e, format!("subscribing to {}", cfg.topic)))?;
    tracing::info!(topic = %cfg.topic, group = %cfg.group, until_caught_up = cfg.until_caught_up, "consuming");

    let mut ing = Ingest {
        cfg,
        root: cfg.common.data_root.clone(),
        states: HashMap::new(),
        held: 0,
        summary: IngestSummary::default(),
        bytes_in: 0,
        progress: Progress::start("messages", None),
        bytes_out: 0,
        dates: Default::default(),
    };
    let mut tick = tokio::time::interval(cfg.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let started = Instant::now();
    let session = Duration::from_millis(cfg.session_timeout_ms.into());
    // A member that died before this one joined keeps its partitions until its session expires;
    // the rebalance that follows hands them over. A batch run stays at least two session
    // timeouts, so it cannot finish with an orphaned partition nobody read.
    let settle = 2 * session;
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let mut last_assigned = Instant::now();
    // The last sign of life from the broker: a record, an end of partition, a rebalance, or the
    // end of one of our own writes (which may take long on an object store).
    let mut last_progress = Instant::now();
    // Since when the broker has been failing with nothing from it since: a group join that
    // takes long (a rebalance waits for slow members) is not a failure, an error is.
    let mut failing_since: Option<Instant> = None;
    let mut seen_rebalances = 0;
    let mut retries = Retries::default();
    let mut interrupted = false;
    loop {
        tokio::select! {
            msg = consumer.recv() => {
                ing.drop_revoked(&revoked);
                match msg {
                    Ok(m) => {
                        last_progress = Instant::now();
                        retries.progress();
                        let ts = m.timestamp().to_millis();
                        ing.handle(m.partition(), m.offset(), m.payload(), ts).await?;
                        if ing.held >= cfg.flush_rows {
                            ing.flush(&consumer).await?;
                            last_progress = Instant::now();
                        }
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        last_progress = Instant::now();
                        ing.states.entry(p).or_default().eof = true;
                    }
                    Err(e) => {
                        // librdkafka retries transport errors itself; a fatal error ends the run,
                        // and so does one that fetching again cannot cure, once it is certain.
                        if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                            return Err(kafka_error(e, "consuming").into());
                        }
                        if retries.exhausted(&e) {
                            return Err(kafka_error(
                                e,
                                format!(
                                    "consuming {} ({PERMANENT_ATTEMPTS} attempts failed the same way; \
                                     nothing after the last commit was written)",
                                    cfg.topic
                                ),
                            )
                            .into());
                        }
                        tracing::warn!(error = %e, "consumer error (retrying)");
                    }
                }
            }
            _ = check.tick(), if cfg.until_caught_up => {
                ing.drop_revoked(&revoked);
                let now_rebalances = rebalances.load(Ordering::Relaxed);
                if now_rebalances != seen_rebalances {
                    seen_rebalances = now_rebalances;
                    last_progress = Instant::now();
                }
                let assigned = consumer.assignment().map(|a| a.count() > 0).unwrap_or(false);
                if assigned {
                    last_assigned = Instant::now();
                }
                let caught_up = ing.caught_up(&consumer)?;
                // The group answered, with nothing for this instance to read (more instances
                // than partitions).
                let idle = !assigned && seen_rebalances > 0;
                if started.elapsed() >= settle {
                    if caught_up {
                        ing.summary.caught_up = true;
                        break;
                    }
                    if idle && last_assigned.elapsed() >= settle {
                        tracing::info!("no partition assigned to this instance; nothing to ingest");
                        break;
                    }
                }
                let error = last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .filter(|(_, at)| *at > last_progress);
                failing_since = match (&error, failing_since) {
                    (None, _) => None,
                    (Some(_), Some(since)) if since > last_progress => Some(since),
                    (Some((_, at)), _) => Some(*at),
                };
                // Waiting only for the settle time is not a stall.
                if let (Some((error, _)), Some(since)) = (error, failing_since)
                    && !caught_up
                    && !idle
                    && since.elapsed() >= cfg.kafka_timeout
                {
                    // Failing for that long with nothing from the broker: a batch run fails
                    // rather than wait for ever (what was written before stays committed).
                    ing.drop_revoked(&revoked);
                    return Err(kafka_error(
                        error,
                        format!(
                            "the broker failing, with no record, end of partition or group assignment \
                             from it, for {:.0} s before {} was read to its end",
                            cfg.kafka_timeout.as_secs_f64(),
                            cfg.topic
                        ),
                    )
                    .into());
                }
            }
            _ = tick.tick() => {
                ing.drop_revoked(&revoked);
                ing.flush(&consumer).await?;
                last_progress = Instant::now();
            }
            _ = stop.changed() => {
                tracing::info!("stopping: writing what is held and committing");
                interrupted = cfg.until_caught_up;
                break;
            }
        }
    }
    ing.drop_revoked(&revoked);
    ing.flush(&consumer).await?;
    ing.progress.finish();
    consumer.unsubscribe();

    let mut summary = ing.summary.clone();
    summary.dates = ing
        .dates
        .iter()
        .map(|&d| date_of(d).format("%Y-%m-%d").to_string())
        .collect();
    meter.rows_in = summary.consumed;
    meter.rows_out = summary.written;
    meter.rows_rejected = summary.rejected;
    meter.bytes_in = ing.bytes_in;
    meter.bytes_out = ing.bytes_out;
    meter.set("replayed_skipped", summary.replayed_skipped);
    meter.set("duplicates_skipped", summary.duplicates_skipped);
    meter.set("files", summary.files);
    meter.set("dates", summary.dates.clone());
    meter.set(
        "plays_per_second",
        summary.consumed as f64 / started.elapsed().as_secs_f64().max(1e-9),
    );
    tracing::info!(?summary, "ingest finished");
    if interrupted {
        // A batch run stands for "the topic up to now is in Parquet": stopped short of that, it
        // must not report success, or the day's counts would run on part of the day.
        return Err(Error::Interrupted(format!(
            "stopped by a signal before every partition of {} was read to its end; the {} plays read \
             are written and committed, a rerun of the same group goes on from there",
            cfg.topic, summary.written
        )));
    }
    let max = cfg.max_reject_share;
    if summary.rejected as f64 > max * summary.consumed as f64 {
        return Err(streampulse_core::Error::TooManyRejects {
            rejected: summary.rejected,
            rows: summary.consumed,
            max_share: max,
            rejects_path: format!("{}/rejects/{PIPELINE}/", ing.root.display()),
        }
        .into());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_partition_and_the_last_offset() {
        let n = file_name("plays", 3, 120, 4567, "parquet");
        assert_eq!(n, "part-plays-p0003-000000000120-000000004567.parquet");
        assert_eq!(parse_upto(&n, "plays", 3), Some(4567));
        assert_eq!(parse_upto(&n, "plays", 4), None);
        assert_eq!(parse_upto(&n, "plays.v2", 3), None);
        assert_eq!(parse_upto("part-0.parquet", "plays", 0), None);
    }

    #[test]
    fn an_error_no_fetch_cures_ends_the_run_after_bounded_attempts() {
        let codec = KafkaError::MessageConsumption(RDKafkaErrorCode::NotImplemented);
        let mut r = Retries::default();
        for _ in 1..PERMANENT_ATTEMPTS {
            assert!(!r.exhausted(&codec));
        }
        assert!(r.exhausted(&codec));
        // A record read in between starts the count again.
        let mut r = Retries::default();
        for _ in 0..3 * PERMANENT_ATTEMPTS {
            assert!(!r.exhausted(&codec));
            r.progress();
        }
        // Transport trouble is librdkafka's to retry, however long it lasts.
        let transport = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        let mut r = Retries::default();
        assert!((0..100).all(|_| !r.exhausted(&transport)));
        let denied = KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed);
        let mut r = Retries::default();
        assert!((0..PERMANENT_ATTEMPTS).any(|_| r.exhausted(&denied)));
    }

    #[test]
    fn days_map_to_dates() {
        assert_eq!(date_of(0).to_string(), "1970-01-01");
        let d = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        assert_eq!(date_of(streampulse_core::time::date32(d)), d);
    }
}
