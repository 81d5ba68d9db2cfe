//! [`Publisher`]: sends a run's records and waits until the broker has every one of them, and
//! the publishing of a written dataset's rows as JSON messages.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::args::Destination;
use super::client::{client_config, ensure_topics, kafka_error};
use super::json::{Encoded, GroupEncoder};
use crate::error::{Error, Result};

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
