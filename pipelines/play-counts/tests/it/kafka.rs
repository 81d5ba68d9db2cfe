//! Charts published to Kafka (`--kafka-brokers`), against a private tansu broker.

use streampulse_core::exit::ExitCode;
use streampulse_testkit::kafka::{broker, consume_all, published_at_first_message, unique};

use crate::{listeners, read, run_day};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_go_to_kafka_one_message_per_entry_keyed_by_scope() {
    let Some(b) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("charts");
    let mut lines = String::new();
    listeners(&mut lines, "2026-11-26", 1, 0, 5, "GB");
    listeners(&mut lines, "2026-11-26", 2, 100, 3, "US");
    let out = run_day(
        dir.path(),
        "2026-11-26",
        &lines,
        &["--kafka-brokers", &b.brokers, "--charts-topic", &topic],
    )
    .await
    .unwrap();
    assert_eq!(out.kafka_messages, Some(out.chart_rows));
    let messages = consume_all(&b.brokers, &topic);
    assert_eq!(messages.len() as u64, out.chart_rows);
    let mut global: Vec<_> = messages.iter().filter(|(k, _)| k == "global").collect();
    global.sort_by_key(|(_, m)| m["rank"].as_i64());
    assert_eq!(global.len(), 2);
    let top = &global[0].1;
    assert_eq!(top["scope"], "global");
    assert_eq!(top["date"], "2026-11-26");
    assert_eq!(
        (top["rank"].as_i64(), top["song_id"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(top["streams"], 5);
    assert_eq!(top["prev_rank"], serde_json::Value::Null);
    assert_eq!(top["is_new"], true);
    assert_eq!(messages.iter().filter(|(k, _)| k == "GB").count(), 1);
    assert_eq!(messages.iter().filter(|(k, _)| k == "US").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_the_run_after_the_parquet_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = streampulse_testkit::free_port();
    let brokers = format!("127.0.0.1:{port}");
    let mut lines = String::new();
    listeners(&mut lines, "2026-11-26", 1, 0, 5, "GB");
    let err = run_day(
        dir.path(),
        "2026-11-26",
        &lines,
        &["--kafka-brokers", &brokers, "--kafka-timeout-s", "2"],
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Unavailable, "{err}");
    assert!(!read(dir.path(), "charts", "2026-11-26").is_empty());
    assert!(!read(dir.path(), "daily_song_counts", "2026-11-26").is_empty());
}

/// Parquet first, Kafka after: a consumer that receives the first chart message finds the day's
/// charts partition already published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_partition_is_in_place_when_the_first_message_arrives() {
    let Some(b) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("charts");
    let charts = dir.path().join("charts/date=2026-11-26");
    let watcher = published_at_first_message(&b.brokers, &topic, charts);
    let mut lines = String::new();
    listeners(&mut lines, "2026-11-26", 1, 0, 5, "GB");
    run_day(
        dir.path(),
        "2026-11-26",
        &lines,
        &["--kafka-brokers", &b.brokers, "--charts-topic", &topic],
    )
    .await
    .unwrap();
    assert_eq!(
        watcher.join().unwrap(),
        Some(true),
        "the first message came before its partition was published"
    );
}
