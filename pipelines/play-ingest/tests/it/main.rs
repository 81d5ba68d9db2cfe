//! Integration tests of play-ingest: the real binary against a real Kafka-protocol broker (tansu,
//! one per test, from `SP_TANSU_BIN`; `make test` sets it, and with `CI` set a missing broker
//! fails the test), with plays produced by the data generator.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use streampulse_core::kafka::{Publisher, client_config};
use streampulse_testkit::catalog::Catalog;
use streampulse_testkit::kafka::{Broker, broker, unique};
use streampulse_testkit::plays::{PlaysModel, PlaysSpec};

const BIN: &str = env!("CARGO_BIN_EXE_play-ingest");

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

async fn create_topic(b: &Broker, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client_config(&b.brokers, "test-admin").create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    r[0].as_ref().unwrap();
}

/// What was produced: the good play_ids (by date) and the number of malformed events.
struct Produced {
    good: BTreeMap<String, HashSet<i64>>,
    bad: u64,
}

/// Produces a generated day of plays as JSON events keyed by user_id, `copies` times each.
async fn produce(b: &Broker, topic: &str, plays: u64, bad_rows: f64, copies: usize) -> Produced {
    let catalog = std::sync::Arc::new(Catalog::generate(7, 2000, date()));
    let model = PlaysModel::new(
        PlaysSpec {
            date: date(),
            seed: 7,
            plays,
            users: 5000,
            bad_rows,
            late_share: 0.01,
        },
        catalog,
    );
    let mut p = Publisher::connect(&b.brokers, topic, "test", Duration::from_secs(30))
        .await
        .unwrap();
    let mut out = Produced {
        good: BTreeMap::new(),
        bad: 0,
    };
    let mut buf = Vec::new();
    for c in 0..model.chunks() {
        let chunk = model.chunk(c);
        for i in 0..chunk.len() {
            buf.clear();
            chunk.write_json_event(i, &mut buf);
            for _ in 0..copies {
                p.send(chunk.user_id[i].to_string().as_bytes(), &buf)
                    .await
                    .unwrap();
            }
            if chunk.bad[i].is_some() {
                out.bad += copies as u64;
            } else {
                let day = chrono::DateTime::from_timestamp_millis(chunk.played_at[i])
                    .unwrap()
                    .date_naive()
                    .to_string();
                out.good.entry(day).or_default().insert(chunk.play_id[i]);
            }
        }
    }
    p.finish().await.unwrap();
    out
}

fn ingest(b: &Broker, root: &Path, topic: &str, group: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--kafka-brokers",
        &b.brokers,
        "--topic",
        topic,
        "--group",
        group,
    ])
    .arg("--data-root")
    .arg(root)
    .args(["--date", "2026-11-26", "--threads", "1"])
    .args(extra)
    .env_remove("SP_KAFKA_BROKERS")
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn finish(child: Child, what: &str) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), format!("{what}:\n{log}"))
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(dates) = std::fs::read_dir(root.join("plays")) else {
        return files;
    };
    for d in dates.flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && !name.starts_with('.') {
                files.push(f.path());
            }
        }
    }
    files.sort();
    files
}

/// play_ids per date partition, each id as often as it was written.
fn written(root: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for f in parquet_files(root) {
        let date = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("date=")
            .to_string();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.schema(), streampulse_core::schema::PLAYS.clone());
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            assert_eq!(ids.null_count(), 0);
            out.entry(date.clone())
                .or_default()
                .extend(ids.values().iter());
        }
    }
    out
}

/// Every good play written once, in the partition of its own date; nothing else.
fn assert_exactly_once(root: &Path, produced: &Produced) {
    let got = written(root);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        produced.good.keys().collect::<Vec<_>>(),
        "dates"
    );
    for (date, ids) in &got {
        let distinct: HashSet<i64> = ids.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "{date}: a play was written twice"
        );
        assert_eq!(
            &distinct, &produced.good[date],
            "{date}: plays lost or invented"
        );
    }
}

fn rejects(root: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(dates) = std::fs::read_dir(root.join("rejects/play-ingest")) else {
        return out;
    };
    for d in dates.flatten() {
        let date = d.file_name().into_string().unwrap();
        assert!(date.starts_with("date=20"), "{date}");
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            // Every pipeline's layout: rejects[-<part>].jsonl in the date's directory.
            let name = f.file_name().into_string().unwrap();
            assert!(
                name.starts_with("rejects-") && name.contains("-p0") && name.ends_with(".jsonl"),
                "{date}/{name}"
            );
            let text = std::fs::read_to_string(f.path()).unwrap();
            out.extend(text.lines().map(|l| serde_json::from_str(l).unwrap()));
        }
    }
    out
}

fn run_record(root: &Path) -> serde_json::Value {
    let dir = root.join("runs/play-ingest");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    serde_json::from_str(&std::fs::read_to_string(files.last().unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_writes_every_play_once_and_rejects_the_malformed_ones() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 3).await;
    let produced = produce(&b, &topic, 20_000, 0.01, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let child = ingest(
        &b,
        root,
        &topic,
        &unique("g"),
        &["--until-caught-up", "--max-reject-share", "0.05"],
    )
    .spawn()
    .unwrap();
    let (code, log) = finish(child, "ingest");
    assert_eq!(code, 0, "{log}");
    assert_exactly_once(root, &produced);
    let rejects = rejects(root);
    assert_eq!(rejects.len() as u64, produced.bad, "{log}");
    for r in &rejects {
        assert!(
            r["file"]
                .as_str()
                .unwrap()
                .starts_with(&format!("kafka:{topic}/"))
        );
        assert!(r["line"].as_u64().is_some(), "the offset");
        assert!(!r["reason"].as_str().unwrap().is_empty());
        assert!(!r["raw"].as_str().unwrap().is_empty());
    }
    assert!(
        rejects.iter().any(|r| r["column"] == "play_id"),
        "a named column"
    );
    let rec = run_record(root);
    assert_eq!(rec["exit_code"], 0);
    assert_eq!(rec["rows_rejected"].as_u64().unwrap(), produced.bad);
    let good: u64 = produced.good.values().map(|s| s.len() as u64).sum();
    assert_eq!(rec["rows_out"].as_u64().unwrap(), good);

    // A rerun of the same group has nothing new; a new group reads it all again and skips it.
    let (code, log) = finish(
        ingest(
            &b,
            root,
            &topic,
            &unique("g2"),
            &["--until-caught-up", "--max-reject-share", "0.05"],
        )
        .spawn()
        .unwrap(),
        "second group",
    );
    assert_eq!(code, 0, "{log}");
    assert_exactly_once(root, &produced);
    assert_eq!(
        run_record(root)["extra"]["replayed_skipped"]
            .as_u64()
            .unwrap(),
        good,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_sent_twice_is_written_once() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 2).await;
    let produced = produce(&b, &topic, 5_000, 0.0, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = finish(
        ingest(
            &b,
            dir.path(),
            &topic,
            &unique("g"),
            &["--until-caught-up", "--flush-rows", "1000"],
        )
        .spawn()
        .unwrap(),
        "ingest",
    );
    assert_eq!(code, 0, "{log}");
    assert_exactly_once(dir.path(), &produced);
    assert_eq!(
        run_record(dir.path())["extra"]["duplicates_skipped"]
            .as_u64()
            .unwrap(),
        5_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_malformed_events_fail_the_run_with_65_after_writing_the_rest() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 1).await;
    let produced = produce(&b, &topic, 2_000, 0.2, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = finish(
        ingest(&b, dir.path(), &topic, &unique("g"), &["--until-caught-up"])
            .spawn()
            .unwrap(),
        "ingest",
    );
    assert_eq!(code, 65, "{log}");
    assert!(
        log.contains("rejects/play-ingest"),
        "the log names the rejects: {log}"
    );
    assert_exactly_once(dir.path(), &produced);
    assert_eq!(rejects(dir.path()).len() as u64, produced.bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_the_topic_and_a_killed_one_loses_and_duplicates_nothing() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 4).await;
    let produced = produce(&b, &topic, 200_000, 0.0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let group = unique("g");
    let args = ["--until-caught-up", "--flush-rows", "2000"];
    let mut a = ingest(&b, root, &topic, &group, &args).spawn().unwrap();
    let other = ingest(&b, root, &topic, &group, &args).spawn().unwrap();

    // Kill the first consumer with SIGKILL as soon as files are landing: mid-run, no clean-up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while parquet_files(root).len() < 3 {
        assert!(Instant::now() < deadline, "no files within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        a.try_wait().unwrap().is_none(),
        "the first consumer finished before the kill"
    );
    a.kill().unwrap();
    let _ = a.wait();
    let written_at_kill: usize = written(root).values().map(Vec::len).sum();
    let total: usize = produced.good.values().map(HashSet::len).sum();
    assert!(
        written_at_kill < total,
        "the kill came after everything was written"
    );

    let restarted = ingest(&b, root, &topic, &group, &args).spawn().unwrap();
    let (code, log_other) = finish(other, "second consumer");
    assert_eq!(code, 0, "{log_other}");
    let (code, log_restarted) = finish(restarted, "restarted consumer");
    assert_eq!(code, 0, "{log_restarted}");
    assert!(log_other.contains("partitions assigned"), "{log_other}");
    assert_exactly_once(root, &produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_continuous_mode_writes_and_commits_what_was_read() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 2).await;
    let produced = produce(&b, &topic, 30_000, 0.0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let group = unique("g");
    // Continuous, with writes far apart: only the shutdown writes.
    let child = ingest(&b, root, &topic, &group, &["--flush-interval-s", "600"])
        .spawn()
        .unwrap();
    // Time to join the group (about half the session timeout) and read the topic.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        parquet_files(root).is_empty(),
        "nothing is written before the signal"
    );
    kill_term(&child);
    let (code, log) = finish(child, "continuous consumer");
    assert_eq!(code, 0, "{log}");
    assert!(!parquet_files(root).is_empty(), "{log}");
    // Whatever it had not read yet, a batch run of the same group picks up: once.
    let (code, log) = finish(
        ingest(&b, root, &topic, &group, &["--until-caught-up"])
            .spawn()
            .unwrap(),
        "batch run",
    );
    assert_eq!(code, 0, "{log}");
    assert_exactly_once(root, &produced);
}

/// Reads the child's log until a line contains `needle`; gives the log so far and the rest of
/// the lines, for the caller to drain.
fn log_until(
    child: &mut Child,
    needle: &str,
) -> (
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    (log, lines)
}

fn kill_term(child: &Child) {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_before_a_batch_run_caught_up_exits_75_and_the_rerun_goes_on() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 2).await;
    let produced = produce(&b, &topic, 20_000, 0.0, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let group = unique("g");
    // A batch run stays two session timeouts (12 s) at least: a signal as soon as it has its
    // partitions is always before it has caught up.
    let mut child = ingest(&b, root, &topic, &group, &["--until-caught-up"])
        .spawn()
        .unwrap();
    let (mut log, lines) = log_until(&mut child, "partitions assigned");
    kill_term(&child);
    log.extend(lines.map(|l| l.unwrap() + "\n"));
    let code = child.wait().unwrap().code();
    assert_eq!(
        code,
        Some(75),
        "a batch run stopped short must not report success\n{log}"
    );
    assert!(
        log.contains("stopped by a signal before every partition"),
        "{log}"
    );
    let (code, log) = finish(
        ingest(&b, root, &topic, &group, &["--until-caught-up"])
            .spawn()
            .unwrap(),
        "rerun",
    );
    assert_eq!(code, 0, "{log}");
    assert_exactly_once(root, &produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_lost_before_the_group_answers_fails_a_batch_run_with_69() {
    let Some(b) = broker() else { return };
    let topic = unique("plays");
    create_topic(&b, &topic, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = ingest(
        &b,
        dir.path(),
        &topic,
        &unique("g"),
        &["--until-caught-up", "--kafka-timeout-s", "4"],
    )
    .spawn()
    .unwrap();
    // Subscribed, not yet in the group (a join takes seconds): the broker goes away. Before,
    // the run waited out its settle time and exited 0 with "nothing to ingest".
    let (mut log, lines) = log_until(&mut child, "consuming");
    drop(b);
    log.extend(lines.map(|l| l.unwrap() + "\n"));
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(69), "{log}");
    assert!(log.contains("the broker failing, with no record"), "{log}");
    assert!(parquet_files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let port = streampulse_testkit::free_port();
    let out = Command::new(BIN)
        .args([
            "--kafka-brokers",
            &format!("127.0.0.1:{port}"),
            "--until-caught-up",
        ])
        .args(["--kafka-timeout-s", "2"])
        .arg("--data-root")
        .arg(dir.path())
        .env_remove("SP_KAFKA_BROKERS")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{log}");
    assert!(log.contains("kafka"), "{log}");
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_play-ingest")),
        &[],
    );
}
