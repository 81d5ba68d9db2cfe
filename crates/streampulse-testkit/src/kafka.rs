//! A private Kafka-protocol broker per test: tansu (scripts/tansu.sh fetches it; `make test` puts
//! its path in `SP_TANSU_BIN`), in memory, on a free port of 127.0.0.1. It starts in a fraction of
//! a second, so each test gets its own broker and nothing leaks between tests. Outside CI a missing
//! `SP_TANSU_BIN` skips the test with a note; with `CI` set it fails it.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub brokers: String,
    child: Child,
}

/// A running broker, or `None` (and a note) when no tansu binary is configured outside CI.
pub fn broker() -> Option<Broker> {
    let bin = match std::env::var("SP_TANSU_BIN") {
        Ok(b) if !b.is_empty() => b,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but SP_TANSU_BIN is not: run the tests through `make test`, which fetches the broker"
            );
            eprintln!(
                "skipping: SP_TANSU_BIN is not set (make test sets it from scripts/tansu.sh)"
            );
            return None;
        }
    };
    // A free port handed to the broker (a tiny race, fine for tests).
    let port = crate::free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the broker {bin}: {e}"));
    let brokers = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&brokers).is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not listen on {brokers} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Broker { brokers, child })
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A topic or group name no other test uses.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// Every message of `topic` from the beginning, as (key, JSON payload), read partition by
/// partition to the end (partition EOF: the broker's high watermark is not trusted).
pub fn consume_all(brokers: &str, topic: &str) -> Vec<(String, serde_json::Value)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("test-reader"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("a consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = metadata.topics()[0].partitions().len();
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = std::collections::HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions {
        assert!(
            Instant::now() < deadline,
            "{topic} not read to its end within 60 s"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("a JSON payload"),
            )),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Watches `topic` from another thread: at its first message (within 60 s), whether `dir` (a
/// partition) already holds a Parquet file. For "Parquet first, Kafka after": join the handle
/// after the run; `Some(true)` is the promise kept.
pub fn published_at_first_message(
    brokers: &str,
    topic: &str,
    dir: std::path::PathBuf,
) -> std::thread::JoinHandle<Option<bool>> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    std::thread::spawn(move || {
        at_first_message(&brokers, &topic, Duration::from_secs(60), || {
            std::fs::read_dir(&dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            })
        })
    })
}

/// Waits (up to `timeout`) for the first message of `topic`, which need not exist yet, and
/// returns what `on_first` says at that moment: for checking what a consumer finds in place
/// when a message reaches it. `None` when no message came.
pub fn at_first_message<T>(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    on_first: impl FnOnce() -> T,
) -> Option<T> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("first-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "200")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("a subscription");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // Errors before the topic exists (unknown topic) are expected: keep polling.
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
            return Some(on_first());
        }
    }
    None
}
