//! Input handling: the exact day boundary, rejects, counts of a small day, and failures.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use streampulse_core::exit::ExitCode;
use streampulse_core::rejects::Reject;

use crate::{HEADER, play, read, run_day};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_is_midnight_to_midnight_utc_and_bad_rows_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut day = String::new();
    day += &play(1, 1, 5, "2026-11-25T23:59:59.999Z", 40_000, "US"); // yesterday: not counted
    day += &play(2, 1, 5, "2026-11-26T00:00:00.000Z", 40_000, "US"); // first ms of the day
    day += &play(3, 2, 5, "2026-11-26T23:59:59.999Z", 29_999, "US"); // last ms; a skip
    day += &play(4, 3, 5, "2026-11-27T00:00:00.000Z", 40_000, "US"); // tomorrow: not counted
    day += "5,x,s,5,50,1,2026-11-26T01:00:00Z,1000,2000,ios,US,radio,false,false,1\n"; // line 6
    day += "6,7,s,5,50\n"; // line 7
    day += &play(7, 4, 5, "2026-11-26T25:00:00.000Z", 40_000, "US"); // line 8
    day += &play(8, 2, 5, "2026-11-26T10:00:00.000+02:00", 30_000, "US"); // an offset: 08:00Z, counts
    let outcome = run_day(root, "2026-11-26", &day, &["--max-reject-share", "0.5"])
        .await
        .unwrap();
    assert_eq!((outcome.song_rows, outcome.artist_rows), (1, 1));

    let b = &read(root, "daily_song_counts", "2026-11-26")[0];
    let col = |name: &str| b[name].as_primitive::<Int64Type>().value(0);
    assert_eq!(
        (
            col("song_id"),
            col("artist_id"),
            col("plays"),
            col("streams"),
            col("listeners"),
            col("ms_played")
        ),
        (5, 50, 3, 2, 2, 40_000 + 29_999 + 30_000)
    );

    let rejects =
        std::fs::read_to_string(root.join("rejects/play-counts/date=2026-11-26/rejects.jsonl"))
            .unwrap();
    let rejects: Vec<Reject> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.line, r.column.as_deref()))
        .collect();
    assert_eq!(
        got,
        [(6, Some("user_id")), (7, None), (8, Some("played_at"))]
    );
    assert!(rejects[0].file.ends_with("plays-2026-11-26.csv"));
    assert_eq!(rejects[1].raw, "6,7,s,5,50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_reject_share_the_run_fails_with_65_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut day = play(1, 1, 5, "2026-11-26T10:00:00.000Z", 40_000, "US");
    day += "2,oops,s,5,50,1,2026-11-26T01:00:00Z,1000,2000,ios,US,radio,false,false,1\n";
    let err = run_day(root, "2026-11-26", &day, &[]).await.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::DataErr, "{err}");
    assert!(err.to_string().contains("rejects.jsonl"), "{err}");
    assert!(!root.join("daily_song_counts").exists());
    assert!(
        root.join("rejects/play-counts/date=2026-11-26/rejects.jsonl")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_is_exit_66_and_a_bad_header_65() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = <play_counts::Args as clap::Parser>::try_parse_from([
        "play-counts",
        "--date",
        "2026-11-26",
        "--data-root",
        tmp.path().to_str().unwrap(),
    ])
    .unwrap()
    .validate()
    .unwrap();
    let mut meter = streampulse_core::run_record::RunMeter::start("play-counts", "2026-11-26");
    let err = play_counts::run(&cfg, &mut meter).await.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::NoInput, "{err}");
    assert!(err.to_string().contains("no plays for 2026-11-26"), "{err}");

    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "play_id,user_id\n1,2\n").unwrap();
    let input = format!("--input={}", bad.display());
    let cfg = <play_counts::Args as clap::Parser>::try_parse_from([
        "play-counts",
        "--date",
        "2026-11-26",
        "--data-root",
        tmp.path().to_str().unwrap(),
        &input,
    ])
    .unwrap()
    .validate()
    .unwrap();
    let err = play_counts::run(&cfg, &mut meter).await.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::DataErr);
    assert!(err.to_string().contains("bad.csv:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_song_with_two_artists_in_one_day_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut day = play(1, 1, 5, "2026-11-26T10:00:00.000Z", 40_000, "US");
    // Same song 5, but artist 99 instead of 50: the export contradicts itself.
    day += "2,2,s,5,99,1,2026-11-26T11:00:00.000Z,40000,200000,ios,US,radio,false,false,1\n";
    let err = run_day(tmp.path(), "2026-11-26", &day, &[])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::DataErr, "{err}");
    assert!(
        err.to_string().contains("song 5 by artists 50 and 99"),
        "{err}"
    );
    assert!(!tmp.path().join("daily_song_counts").exists());
}

fn cfg_for(root: &std::path::Path, extra: &[&str]) -> play_counts::Config {
    let mut argv = vec![
        "play-counts".to_string(),
        "--date".into(),
        "2026-11-26".into(),
        "--data-root".into(),
        root.display().to_string(),
        "--threads".into(),
        "2".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    <play_counts::Args as clap::Parser>::try_parse_from(argv)
        .unwrap()
        .validate()
        .unwrap()
}

/// play-counts for 2026-11-26 on the data root `root` (its own input), which must succeed.
async fn run_root(root: &std::path::Path, extra: &[&str]) -> play_counts::Outcome {
    let mut meter = streampulse_core::run_record::RunMeter::start("play-counts", "2026-11-26");
    play_counts::run(&cfg_for(root, extra), &mut meter)
        .await
        .unwrap()
}

/// Plays of the one song counted on 2026-11-26.
fn plays_of_the_song(root: &std::path::Path) -> i64 {
    let b = &read(root, "daily_song_counts", "2026-11-26")[0];
    b["plays"].as_primitive::<Int64Type>().value(0)
}

/// The export of the day under the data root, gzip-compressed, and an empty plays partition
/// directory (a writer that died before its first file): the export is found and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_export_is_read_and_an_empty_partition_does_not_hide_it() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let mut day = HEADER.to_string();
    day += &play(1, 1, 5, "2026-11-26T10:00:00.000Z", 40_000, "US");
    day += &play(2, 2, 5, "2026-11-26T11:00:00.000Z", 40_000, "US");
    std::fs::create_dir_all(tmp.path().join("exports")).unwrap();
    std::fs::create_dir_all(tmp.path().join("plays/date=2026-11-26")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(tmp.path().join("exports/plays-2026-11-26.csv.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(day.as_bytes()).unwrap();
    gz.finish().unwrap();
    let outcome = run_root(tmp.path(), &[]).await;
    assert_eq!(outcome.song_rows, 1);
    assert_eq!(plays_of_the_song(tmp.path()), 2, "two plays");
}

/// A Parquet plays partition written by another tool (µs timestamps, int32 ids) with rows that
/// break the contract: each bad row goes to the rejects with its reason, the rest is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_in_a_parquet_partition_are_rejected_not_counted() {
    use arrow::array::{Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let noon = 1_795_694_400_000_000i64; // 2026-11-26T12:00:00Z in µs
    let schema = Arc::new(Schema::new(vec![
        Field::new("play_id", DataType::Int32, true),
        Field::new("user_id", DataType::Int32, true),
        Field::new("song_id", DataType::Int32, true),
        Field::new("artist_id", DataType::Int32, true),
        Field::new(
            "played_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("ms_played", DataType::Int32, true),
        Field::new("country", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int32Array::from(vec![11, 12, 13, 14, 15])),
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(Int32Array::from(vec![5, 5, 5, 5, 5])),
            Arc::new(Int32Array::from(vec![50, 50, 50, 50, 50])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(noon),
                None,
                Some(noon),
                Some(noon),
                Some(noon + 1),
            ])),
            Arc::new(Int32Array::from(vec![40_000, 40_000, -3, 40_000, 40_000])),
            Arc::new(StringArray::from(vec!["US", "US", "US", "U\0S", "US"])),
        ],
    )
    .unwrap();
    streampulse_testkit::files::write_parquet(
        &tmp.path().join("plays/date=2026-11-26/part-0.parquet"),
        &[batch],
    );
    let outcome = run_root(tmp.path(), &["--max-reject-share", "0.9"]).await;
    assert_eq!(outcome.song_rows, 1);
    assert_eq!(plays_of_the_song(tmp.path()), 2, "users 1 and 5 only");
    let rejects = std::fs::read_to_string(
        tmp.path()
            .join("rejects/play-counts/date=2026-11-26/rejects.jsonl"),
    )
    .unwrap();
    let rejects: Vec<Reject> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.line, r.column.as_deref().unwrap(), r.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "played_at", "null in a required column"),
            (2, "ms_played", "negative duration"),
            (
                3,
                "country",
                "not an ISO 3166 alpha-2 country code (two capital letters)"
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_sent_twice_is_counted_once_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut day = String::new();
    day += &play(1, 7, 5, "2026-11-26T10:00:00.000Z", 40_000, "US");
    day += &play(2, 7, 5, "2026-11-26T11:00:00.000Z", 40_000, "US");
    // The export repeats play 1 (same row), and play 2 with another duration: one play each.
    day += &play(1, 7, 5, "2026-11-26T10:00:00.000Z", 40_000, "US");
    day += &play(2, 7, 5, "2026-11-26T11:00:00.000Z", 50_000, "US");
    // Another user's play 1 is another play.
    day += &play(1, 8, 5, "2026-11-26T10:00:00.000Z", 10_000, "US");
    let input = root.join("plays-2026-11-26.csv");
    std::fs::write(&input, format!("{HEADER}{day}")).unwrap();
    let mut meter = streampulse_core::run_record::RunMeter::start("play-counts", "2026-11-26");
    let cfg = cfg_for(root, &["--input", &input.display().to_string()]);
    play_counts::run(&cfg, &mut meter).await.unwrap();
    assert_eq!(meter.extra["duplicate_plays"], 2);
    let b = &read(root, "daily_song_counts", "2026-11-26")[0];
    let col = |name: &str| b[name].as_primitive::<Int64Type>().value(0);
    // Plays 1 and 2 of user 7 (the 40 s copy of play 2 kept) and play 1 of user 8.
    assert_eq!(
        (
            col("plays"),
            col("streams"),
            col("listeners"),
            col("ms_played")
        ),
        (3, 2, 1, 40_000 + 40_000 + 10_000)
    );
}
