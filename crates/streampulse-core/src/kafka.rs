//! Kafka, the other way stages meet besides Parquet partitions (docs/architecture.md): the topic
//! definitions of `shared/topics/topics.txt`, the client settings every stage uses, topic
//! creation, and [`Publisher`], which sends a run's records and waits until the broker has every
//! one of them, so that a run never reports success with messages still in a buffer.
//!
//! Failures map to the documented exit codes: a broker that cannot be reached is 69
//! (unavailable), anything else the broker refuses mid-run is 75 (worth a retry).

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::error::{Error, Result};
use crate::exit::ExitCode;

/// `shared/topics/topics.txt`, compiled in so a container needs no files.
const TOPICS: &str = include_str!("../../../shared/topics/topics.txt");

/// One topic of the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// The column that keys its messages (`-` for none).
    pub key: String,
}

/// The topics of `shared/topics/topics.txt`.
pub fn topics() -> Vec<TopicSpec> {
    TOPICS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some(TopicSpec {
                name: words.next()?.to_string(),
                partitions: words.next()?.parse().ok()?,
                key: words.next()?.to_string(),
            })
        })
        .collect()
}

/// The definition of `name`, or a default of 1 partition for a topic the file does not know
/// (tests use a fresh topic name each).
pub fn topic_spec(name: &str) -> TopicSpec {
    topics()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or(TopicSpec {
            name: name.to_string(),
            partitions: 1,
            key: "-".into(),
        })
}

/// Kafka flags of a stage that publishes its outputs (clap, with the `SP_*` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Kafka bootstrap servers (host:port,...). When set, the run also publishes its outputs to
    /// Kafka; Parquet outputs are written either way.
    #[arg(long, env = "SP_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Seconds a message may wait for the broker before the run fails (exit 69 or 75).
    #[arg(long, env = "SP_KAFKA_TIMEOUT_S", default_value_t = 30.0)]
    pub kafka_timeout_s: f64,
}

impl PublishArgs {
    /// Where `topic` is published, when publishing is on.
    pub fn destination(&self, topic: &str) -> Result<Option<Destination>> {
        Ok(self.validate()?.map(|(brokers, timeout)| Destination {
            brokers,
            topic: topic.to_string(),
            timeout,
        }))
    }

    /// The brokers and the delivery timeout, when publishing is on.
    pub fn validate(&self) -> Result<Option<(String, Duration)>> {
        let Some(brokers) = self
            .kafka_brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
        else {
            return Ok(None);
        };
        let timeout = Duration::try_from_secs_f64(self.kafka_timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--kafka-timeout-s must be a positive number of seconds, got {}",
                    self.kafka_timeout_s
                ))
            })?;
        Ok(Some((brokers.trim().to_string(), timeout)))
    }
}

/// The settings every client of ours shares.
pub fn client_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        // librdkafka logs to stderr by default; its warnings reach us as errors anyway.
        .set("log_level", "3");
    c
}

/// Creates the topics that do not exist yet, with their partition counts from the topic
/// definitions. Replication 1 is the single-broker development setting; production topics are
/// created by the platform team with their own replication.
pub async fn ensure_topics(brokers: &str, names: &[&str], timeout: Duration) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, "streampulse-admin")
        .create()
        .map_err(|e| kafka_error(e, "creating the admin client"))?;
    let specs: Vec<TopicSpec> = names.iter().map(|n| topic_spec(n)).collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|t| NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| kafka_error(e, "creating topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka {
                    context: format!("creating topic {topic}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Wraps a client error with what we were doing.
pub fn kafka_error(source: KafkaError, context: impl Into<String>) -> Error {
    Error::Kafka {
        context: context.into(),
        source,
    }
}

/// The exit code of a Kafka failure: unreachable brokers are 69; records no retry can decode
/// (a codec this build lacks, a corrupt batch) are bad input, 65; a refused authorization or a
/// setting the broker rejects is the operator's to fix, 64; the rest 75.
pub fn exit_code(e: &KafkaError) -> ExitCode {
    use RDKafkaErrorCode::*;
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(
            AllBrokersDown
            | BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | OperationTimedOut
            | UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition,
        ) => ExitCode::Unavailable,
        Some(
            NotImplemented
            | BadCompression
            | BadMessage
            | InvalidMessage
            | InvalidRecord
            | UnsupportedCompressionType,
        ) => ExitCode::DataErr,
        Some(
            InvalidArgument
            | InvalidConfig
            | UnsupportedFeature
            | UnsupportedVersion
            | Authentication
            | SaslAuthenticationFailed
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed,
        ) => ExitCode::Usage,
        _ => ExitCode::TempFail,
    }
}

/// Deliveries awaited before more are queued: bounds the producer's memory whatever the volume.
const IN_FLIGHT: usize = 100_000;

/// Sends records to one topic and accounts for every delivery.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    in_flight: VecDeque<DeliveryFuture>,
    sent: u64,
    bytes: u64,
}

impl Publisher {
    /// An idempotent producer (acks from all in-sync replicas, no duplicates on retries) for
    /// `topic`, created on the broker when missing. `timeout` bounds how long a message may wait.
    pub async fn connect(
        brokers: &str,
        topic: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self> {
        ensure_topics(brokers, &[topic], timeout).await?;
        let producer: FutureProducer = client_config(brokers, client_id)
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
            .create()
            .map_err(|e| kafka_error(e, "creating the producer"))?;
        Ok(Publisher {
            producer,
            topic: topic.to_string(),
            in_flight: VecDeque::new(),
            sent: 0,
            bytes: 0,
        })
    }

    /// Queues one record; waits for the oldest deliveries when too many are in flight.
    pub async fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<()> {
        let mut record = FutureRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push_back(delivery);
                    self.sent += 1;
                    self.bytes += (key.len() + payload.len()) as u64;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's own queue is full: let deliveries drain, then retry.
                    record = back;
                    if !await_oldest(&mut self.in_flight, &self.topic).await? {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, _)) => return Err(kafka_error(e, format!("producing to {}", self.topic))),
            }
        }
        while self.in_flight.len() > IN_FLIGHT {
            await_oldest(&mut self.in_flight, &self.topic).await?;
        }
        Ok(())
    }

    /// Waits until the broker acknowledged every record sent; returns (messages, bytes).
    pub async fn finish(mut self) -> Result<(u64, u64)> {
        while await_oldest(&mut self.in_flight, &self.topic).await? {}
        self.producer
            .flush(Duration::from_secs(5))
            .map_err(|e| kafka_error(e, format!("flushing {}", self.topic)))?;
        Ok((self.sent, self.bytes))
    }
}

/// How the rows of a written dataset become messages.
#[derive(Debug, Clone)]
pub struct RowMessages {
    /// The column whose value (as text) keys each message.
    pub key: String,
    /// One message per run of consecutive rows with the same key, `{<key>: v, <extra>, "items":
    /// [the rows without the key]}` (a user's whole list); else one message per row.
    pub group: bool,
    /// Fields added to every message (the logical date, say).
    pub extra: Vec<(String, serde_json::Value)>,
}

/// Messages (key, payload) encoded from one batch, and the key of its last group, which may go
/// on in the next batch.
type Encoded = Vec<(Vec<u8>, Vec<u8>)>;

/// Sends every row of the Parquet files of a written partition directory as JSON messages (see
/// [`RowMessages`]), in file order. Files are read on a blocking thread, a few batches ahead of
/// the sends, so memory stays small whatever the partition's size.
pub async fn publish_parquet_dir(
    publisher: &mut Publisher,
    dir: &std::path::Path,
    prefix: Option<&str>,
    shape: &RowMessages,
) -> Result<()> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            p.extension().is_some_and(|x| x == "parquet")
                && !name.starts_with('.')
                && prefix.is_none_or(|pre| name.starts_with(pre))
        })
        .collect();
    files.sort();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Encoded>(4);
    let shape = shape.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut group = GroupEncoder::new(&shape);
        for path in files {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let batches =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
                    .with_batch_size(8192)
                    .build()?;
            for batch in batches {
                let out = group.encode(&batch?)?;
                if !out.is_empty() && tx.blocking_send(out).is_err() {
                    return Ok(()); // the sender stopped; its error is the one reported
                }
            }
        }
        let last = group.finish();
        if !last.is_empty() {
            let _ = tx.blocking_send(last);
        }
        Ok(())
    });
    while let Some(messages) = rx.recv().await {
        for (key, payload) in messages {
            publisher.send(&key, &payload).await?;
        }
    }
    reader
        .await
        .map_err(|e| Error::Internal(format!("reading {} for Kafka: {e}", dir.display())))?
}

/// Waits for the oldest delivery in flight; false when none is.
async fn await_oldest(in_flight: &mut VecDeque<DeliveryFuture>, topic: &str) -> Result<bool> {
    let Some(delivery) = in_flight.pop_front() else {
        return Ok(false);
    };
    match delivery.await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err((e, _))) => Err(kafka_error(e, format!("delivering to {topic}"))),
        Err(_) => Err(Error::Internal(format!(
            "the producer of {topic} dropped a delivery report"
        ))),
    }
}

/// Where and how a run publishes one of its outputs to Kafka (`--kafka-brokers` given).
#[derive(Debug, Clone)]
pub struct Destination {
    pub brokers: String,
    pub topic: String,
    pub timeout: Duration,
}

/// Connects, sends every row of a written partition directory ([`publish_parquet_dir`]) and
/// waits for the broker's acknowledgements; returns (messages, bytes).
/// `prefix`, when given, limits the files to those whose names start with it (one shard's files
/// in a partition that holds every shard's).
pub async fn publish_dataset(
    dest: &Destination,
    client_id: &str,
    dir: &std::path::Path,
    prefix: Option<&str>,
    shape: &RowMessages,
) -> Result<(u64, u64)> {
    let mut publisher =
        Publisher::connect(&dest.brokers, &dest.topic, client_id, dest.timeout).await?;
    publish_parquet_dir(&mut publisher, dir, prefix, shape).await?;
    let (messages, bytes) = publisher.finish().await?;
    tracing::info!(topic = %dest.topic, messages, bytes, "published to Kafka");
    Ok((messages, bytes))
}

/// Encodes rows as JSON objects, grouping consecutive rows by key when asked.
struct GroupEncoder<'a> {
    shape: &'a RowMessages,
    /// The open group: its key text and the items written so far.
    open: Option<(String, Vec<u8>)>,
}

impl<'a> GroupEncoder<'a> {
    fn new(shape: &'a RowMessages) -> Self {
        GroupEncoder { shape, open: None }
    }

    fn encode(&mut self, batch: &arrow::record_batch::RecordBatch) -> Result<Encoded> {
        use arrow::util::display::{ArrayFormatter, FormatOptions};
        let schema = batch.schema();
        let key_idx = schema.index_of(&self.shape.key)?;
        let opts = FormatOptions::default();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = Encoded::new();
        for row in 0..batch.num_rows() {
            let key = formatters[key_idx].value(row).to_string();
            let mut obj = Vec::with_capacity(128);
            obj.push(b'{');
            let mut first = true;
            for (c, field) in schema.fields().iter().enumerate() {
                if self.shape.group && c == key_idx {
                    continue;
                }
                if !first {
                    obj.push(b',');
                }
                first = false;
                json_string(&mut obj, field.name());
                obj.push(b':');
                json_value(&mut obj, batch.column(c).as_ref(), &formatters[c], row);
            }
            if !self.shape.group {
                self.write_extra(&mut obj, first);
                obj.push(b'}');
                out.push((key.into_bytes(), obj));
                continue;
            }
            obj.push(b'}');
            match &mut self.open {
                Some((open_key, items)) if *open_key == key => {
                    items.push(b',');
                    items.extend_from_slice(&obj);
                }
                _ => {
                    if let Some(done) = self.close() {
                        out.push(done);
                    }
                    self.open = Some((key, obj));
                }
            }
        }
        Ok(out)
    }

    fn write_extra(&self, obj: &mut Vec<u8>, mut first: bool) {
        for (name, value) in &self.shape.extra {
            if !first {
                obj.push(b',');
            }
            first = false;
            json_string(obj, name);
            obj.push(b':');
            obj.extend_from_slice(value.to_string().as_bytes());
        }
    }

    /// The message of the open group, if any.
    fn close(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (key, items) = self.open.take()?;
        let mut msg = Vec::with_capacity(items.len() + 64);
        msg.push(b'{');
        json_string(&mut msg, &self.shape.key);
        msg.push(b':');
        // Keys are ids or codes: numbers stay numbers.
        if key.parse::<i64>().is_ok() {
            msg.extend_from_slice(key.as_bytes());
        } else {
            json_string(&mut msg, &key);
        }
        self.write_extra(&mut msg, false);
        msg.extend_from_slice(b",\"items\":[");
        msg.extend_from_slice(&items);
        msg.extend_from_slice(b"]}");
        Some((key.into_bytes(), msg))
    }

    fn finish(mut self) -> Encoded {
        self.close().into_iter().collect()
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping, without an intermediate String.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// One cell as JSON: numbers and booleans as such, text escaped, NaN and nulls as null, and
/// anything else (dates, timestamps, decimals) as its display text.
fn json_value(
    out: &mut Vec<u8>,
    col: &dyn arrow::array::Array,
    fmt: &arrow::util::display::ArrayFormatter<'_>,
    row: usize,
) {
    use arrow::datatypes::DataType::*;
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    let text = fmt.value(row).to_string();
    match col.data_type() {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Boolean => {
            out.extend_from_slice(text.as_bytes())
        }
        Float16 | Float32 | Float64 => {
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                out.extend_from_slice(text.as_bytes())
            } else {
                out.extend_from_slice(b"null")
            }
        }
        _ => json_string(out, &text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_file_defines_the_platform_topics() {
        let names: Vec<String> = topics().into_iter().map(|t| t.name).collect();
        for want in ["plays", "charts.daily", "recommendations", "songs.changed"] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert_eq!(topic_spec("plays").key, "user_id");
        assert!(topic_spec("plays").partitions > 1);
        assert_eq!(topic_spec("a-test-topic").partitions, 1);
    }

    #[test]
    fn kafka_failures_map_to_who_must_act() {
        use RDKafkaErrorCode::*;
        let consume = |c| exit_code(&KafkaError::MessageConsumption(c));
        // Records no retry decodes: the data's owner must act.
        for c in [
            NotImplemented,
            BadCompression,
            InvalidMessage,
            InvalidRecord,
        ] {
            assert_eq!(consume(c), ExitCode::DataErr, "{c:?}");
        }
        // Refused by the broker: the operator's to fix.
        for c in [
            TopicAuthorizationFailed,
            GroupAuthorizationFailed,
            SaslAuthenticationFailed,
        ] {
            assert_eq!(consume(c), ExitCode::Usage, "{c:?}");
        }
        assert_eq!(
            exit_code(&KafkaError::Global(AllBrokersDown)),
            ExitCode::Unavailable
        );
        assert_eq!(
            exit_code(&KafkaError::Global(OperationTimedOut)),
            ExitCode::Unavailable
        );
        assert_eq!(consume(NotCoordinator), ExitCode::TempFail);
    }

    #[test]
    fn publishing_is_off_without_brokers_and_needs_a_positive_timeout() {
        let args = |brokers: Option<&str>, t: f64| PublishArgs {
            kafka_brokers: brokers.map(String::from),
            kafka_timeout_s: t,
        };
        assert!(args(None, 30.0).validate().unwrap().is_none());
        assert!(args(Some(" "), 30.0).validate().unwrap().is_none());
        let (b, t) = args(Some("127.0.0.1:9092"), 2.5)
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(
            (b.as_str(), t),
            ("127.0.0.1:9092", Duration::from_millis(2500))
        );
        assert!(args(Some("127.0.0.1:9092"), 0.0).validate().is_err());
        assert!(args(Some("127.0.0.1:9092"), -1.0).validate().is_err());
    }

    fn recommendations() -> arrow::record_batch::RecordBatch {
        use arrow::array::{Float32Array, Int32Array, Int64Array, StringArray};
        use std::sync::Arc;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("user_id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("rank", arrow::datatypes::DataType::Int32, false),
            arrow::datatypes::Field::new("score", arrow::datatypes::DataType::Float32, true),
            arrow::datatypes::Field::new("why", arrow::datatypes::DataType::Utf8, true),
        ]));
        arrow::record_batch::RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 7, 9])),
                Arc::new(Int32Array::from(vec![1, 2, 1])),
                Arc::new(Float32Array::from(vec![Some(0.5), Some(f32::NAN), None])),
                Arc::new(StringArray::from(vec![Some("a \"b\""), None, Some("c")])),
            ],
        )
        .unwrap()
    }

    fn as_json(messages: &Encoded) -> Vec<(String, serde_json::Value)> {
        messages
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).unwrap(),
                    serde_json::from_slice(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn rows_become_one_json_message_each() {
        let shape = RowMessages {
            key: "user_id".into(),
            group: false,
            extra: vec![("date".into(), "2026-11-26".into())],
        };
        let mut enc = GroupEncoder::new(&shape);
        let got = as_json(&enc.encode(&recommendations()).unwrap());
        assert!(enc.finish().is_empty());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "7");
        assert_eq!(
            got[0].1,
            serde_json::json!({"user_id": 7, "rank": 1, "score": 0.5, "why": "a \"b\"", "date": "2026-11-26"})
        );
        assert_eq!(
            got[1].1["score"],
            serde_json::Value::Null,
            "NaN is not JSON"
        );
        assert_eq!(got[2].1["why"], "c");
    }

    #[test]
    fn grouped_rows_make_one_message_per_key_across_batches() {
        let shape = RowMessages {
            key: "user_id".into(),
            group: true,
            extra: vec![],
        };
        let mut enc = GroupEncoder::new(&shape);
        let batch = recommendations();
        let mut all = enc.encode(&batch.slice(0, 1)).unwrap();
        all.extend(enc.encode(&batch.slice(1, 2)).unwrap());
        all.extend(enc.finish());
        let got = as_json(&all);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "7");
        assert_eq!(got[0].1["user_id"], 7);
        assert_eq!(got[0].1["items"].as_array().unwrap().len(), 2);
        assert_eq!(got[0].1["items"][1]["rank"], 2);
        assert!(got[0].1["items"][0].get("user_id").is_none());
        assert_eq!(got[1].1["items"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn unreachable_brokers_are_unavailable_and_the_rest_worth_a_retry() {
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(exit_code(&timed_out), ExitCode::Unavailable);
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(exit_code(&full), ExitCode::TempFail);
    }
}
