//! Integration tests of recommend, run in-process on generated vectors and plays. The large-scale
//! comparison with NumPy lives in tests/e2e/recommend_vs_numpy.py.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float32Type, Int32Type, Int64Type};
use clap::Parser;
use recommend::{Args, Outcome, Shard, run};
use streampulse_core::exit::ExitCode;
use streampulse_core::run_record::RunMeter;
use streampulse_testkit::{Dataset, GenConfig, generate};

const DATE: &str = "2026-11-26";

async fn recommend(root: &Path, extra: &[&str]) -> Result<Outcome, recommend::Error> {
    let mut argv: Vec<String> = [
        "recommend",
        "--date",
        DATE,
        "--data-root",
        &root.display().to_string(),
        "--threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cfg = Args::try_parse_from(argv).unwrap().validate().unwrap();
    let mut meter = RunMeter::start("recommend", DATE);
    run(&cfg, &mut meter).await
}

fn generated(root: &Path, users: u64, songs: u64, plays: u64) {
    let cfg = GenConfig {
        users,
        songs,
        plays,
        datasets: vec![
            Dataset::UserFeatures,
            Dataset::SongEmbeddings,
            Dataset::PlaysParquet,
        ],
        ..GenConfig::demo()
    };
    generate(&cfg, root).unwrap();
}

/// user -> [(rank, song, score)] from the output partition.
fn recommendations(root: &Path) -> BTreeMap<i64, Vec<(i32, i64, f32)>> {
    let mut out: BTreeMap<i64, Vec<(i32, i64, f32)>> = BTreeMap::new();
    for b in streampulse_testkit::files::read_parquet_dir(
        &root.join(format!("recommendations/date={DATE}")),
    ) {
        let (u, r, s, sc) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_primitive::<Int32Type>(),
            b.column(2).as_primitive::<Int64Type>(),
            b.column(3).as_primitive::<Float32Type>(),
        );
        for i in 0..b.num_rows() {
            out.entry(u.value(i))
                .or_default()
                .push((r.value(i), s.value(i), sc.value(i)));
        }
    }
    out
}

/// id -> vector of a vectors dataset.
fn vectors(root: &Path, dataset: &str) -> Vec<(i64, Vec<f32>)> {
    let mut out = Vec::new();
    for b in
        streampulse_testkit::files::read_parquet_dir(&root.join(format!("{dataset}/date={DATE}")))
    {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let list = b.column(1).as_fixed_size_list();
        for i in 0..b.num_rows() {
            let v = list.value(i);
            out.push((
                ids.value(i),
                v.as_primitive::<Float32Type>().values().to_vec(),
            ));
        }
    }
    out
}

/// The exact top `k` by a plain f64 loop: score desc, song id asc.
fn brute_force(
    user: &[f32],
    songs: &[(i64, Vec<f32>)],
    k: usize,
    skip: &HashSet<i64>,
) -> Vec<(i64, f64)> {
    let mut scored: Vec<(i64, f64)> = songs
        .iter()
        .filter(|(id, _)| !skip.contains(id))
        .map(|(id, v)| {
            (
                *id,
                user.iter().zip(v).map(|(a, b)| *a as f64 * *b as f64).sum(),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// Recall of `got` against the brute-force top K, allowing swaps at the K-th place within float
/// rounding (two songs whose scores differ by less than 1e-5 may trade places).
fn check_user(got: &[(i32, i64, f32)], want: &[(i64, f64)]) {
    assert_eq!(got.len(), want.len());
    let ranks: Vec<i32> = got.iter().map(|g| g.0).collect();
    assert_eq!(ranks, (1..=got.len() as i32).collect::<Vec<_>>());
    let kth = want.last().unwrap().1;
    let want_ids: HashSet<i64> = want.iter().map(|w| w.0).collect();
    for (rank, song, score) in got {
        let exact = want.iter().find(|w| w.0 == *song).map(|w| w.1);
        match exact {
            Some(s) => assert!(
                (*score as f64 - s).abs() < 1e-4,
                "rank {rank}: {score} vs {s}"
            ),
            None => assert!(
                (*score as f64 - kth).abs() < 1e-5,
                "song {song} is not in the top K"
            ),
        }
    }
    let missing = want
        .iter()
        .filter(|w| !got.iter().any(|g| g.1 == w.0))
        .count();
    assert!(
        missing <= 1 || want_ids.len() < want.len(),
        "{missing} missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_gets_the_exact_top_k() {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 3_000, 2_500, 1_000);
    let outcome = recommend(dir.path(), &["--k", "20", "--block-users", "100"])
        .await
        .unwrap();
    assert_eq!((outcome.users, outcome.rows), (3_000, 60_000));
    let got = recommendations(dir.path());
    let (users, songs) = (
        vectors(dir.path(), "user_features"),
        vectors(dir.path(), "song_embeddings"),
    );
    for (user, v) in users.iter().step_by(7) {
        check_user(&got[user], &brute_force(v, &songs, 20, &HashSet::new()));
    }
    // Users come out in input order, ranks 1..K within each.
    let order: Vec<i64> = got.keys().copied().collect();
    assert_eq!(order, users.iter().map(|u| u.0).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_together_equal_one_run_and_reruns_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 2_000, 1_000, 1_000);
    recommend(dir.path(), &["--k", "10"]).await.unwrap();
    let whole = recommendations(dir.path());
    let part = dir
        .path()
        .join(format!("recommendations/date={DATE}/part-0.parquet"));
    let bytes = std::fs::read(&part).unwrap();
    recommend(dir.path(), &["--k", "10"]).await.unwrap();
    assert!(
        bytes == std::fs::read(&part).unwrap(),
        "a rerun changed the bytes"
    );

    // The three shards at once, as Airflow's mapped tasks or an Indexed Job run them: each
    // commits its own files beside the others'.
    let shards = ["0/3", "1/3", "2/3"];
    let (a, b, c) = tokio::join!(
        recommend(dir.path(), &["--k", "10", "--shard", "0/3"]),
        recommend(dir.path(), &["--k", "10", "--shard", "1/3"]),
        recommend(dir.path(), &["--k", "10", "--shard", "2/3"]),
    );
    for (shard, o) in shards.iter().zip([a, b, c]) {
        let o = o.unwrap();
        assert!(
            o.users > 500 && o.users < 850,
            "shard {shard} has {} users",
            o.users
        );
    }
    let files: Vec<String> =
        std::fs::read_dir(dir.path().join(format!("recommendations/date={DATE}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(
        files.len(),
        3,
        "the unsharded file is replaced by the shards: {files:?}"
    );
    assert_eq!(recommendations(dir.path()), whole);
    assert!("3/3".parse::<Shard>().is_err() && "1/0".parse::<Shard>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recently_streamed_songs_are_excluded_and_k_is_still_met() {
    let dir = tempfile::tempdir().unwrap();
    // Few users and many plays: every user streamed dozens of songs today.
    generated(dir.path(), 200, 400, 40_000);
    let outcome = recommend(dir.path(), &["--k", "30", "--exclude-days", "7"])
        .await
        .unwrap();
    assert!(outcome.excluded_pairs > 1_000, "{outcome:?}");
    assert_eq!(outcome.rows, 200 * 30);

    // What each user streamed (30 s or more) on the date, straight from the plays partition.
    let mut streamed: BTreeMap<i64, HashSet<i64>> = BTreeMap::new();
    for b in
        streampulse_testkit::files::read_parquet_dir(&dir.path().join(format!("plays/date={DATE}")))
    {
        let schema = b.schema();
        let col = |n: &str| b.column(schema.index_of(n).unwrap()).clone();
        let (u, s, ms) = (col("user_id"), col("song_id"), col("ms_played"));
        let (u, s, ms) = (
            u.as_primitive::<Int64Type>(),
            s.as_primitive::<Int64Type>(),
            ms.as_primitive::<Int32Type>(),
        );
        for i in 0..b.num_rows() {
            if ms.value(i) >= 30_000 {
                streamed.entry(u.value(i)).or_default().insert(s.value(i));
            }
        }
    }
    let got = recommendations(dir.path());
    let (users, songs) = (
        vectors(dir.path(), "user_features"),
        vectors(dir.path(), "song_embeddings"),
    );
    for (user, v) in &users {
        let skip = streamed.get(user).cloned().unwrap_or_default();
        assert!(
            got[user].iter().all(|g| !skip.contains(&g.1)),
            "user {user} got a streamed song"
        );
        check_user(&got[user], &brute_force(v, &songs, 30, &skip));
    }
}

fn vector_batch(ids: Vec<Option<i64>>, values: Vec<f32>, dim: i32, name: &str) -> RecordBatch {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let list = FixedSizeListArray::new(
        item.clone(),
        dim,
        Arc::new(Float32Array::from(values)),
        None,
    );
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        Field::new(
            if name == "features" {
                "user_id"
            } else {
                "song_id"
            },
            DataType::Int64,
            true,
        ),
        Field::new(name, DataType::FixedSizeList(item, dim), true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(ids)), Arc::new(list)],
    )
    .unwrap()
}

/// The day's song embeddings and user features under `root`, one file each.
fn write_day(root: &Path, songs: &RecordBatch, users: &RecordBatch) {
    write(
        &root.join(format!("song_embeddings/date={DATE}/part-0.parquet")),
        songs,
    );
    write(
        &root.join(format!("user_features/date={DATE}/part-0.parquet")),
        users,
    );
}

fn write(path: &Path, batch: &RecordBatch) {
    streampulse_testkit::files::write_parquet(path, std::slice::from_ref(batch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_vectors_are_rejected_and_ties_go_to_the_smaller_song() {
    let dir = tempfile::tempdir().unwrap();
    // Songs 30, 10, 20 score the same for user 1; song 40 has a NaN component.
    let songs = vector_batch(
        vec![Some(30), Some(10), Some(20), Some(40)],
        vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, f32::NAN, 1.0],
        2,
        "embedding",
    );
    let users = vector_batch(
        vec![Some(1), None, Some(2)],
        vec![2.0, 5.0, 1.0, 1.0, -1.0, 0.0],
        2,
        "features",
    );
    write_day(dir.path(), &songs, &users);
    let err = recommend(dir.path(), &["--k", "2"]).await.unwrap_err();
    assert_eq!(
        err.exit_code(),
        ExitCode::DataErr,
        "2 of 7 rows rejected: {err}"
    );
    let outcome = recommend(dir.path(), &["--k", "2", "--max-reject-share", "0.5"])
        .await
        .unwrap();
    let rejects = std::fs::read_to_string(outcome.rejects.unwrap()).unwrap();
    assert!(rejects.contains("component not a finite number") && rejects.contains("null user_id"));
    let got = recommendations(dir.path());
    assert_eq!(got[&1], vec![(1, 10, 2.0), (2, 20, 2.0)]);
    assert_eq!(got[&2], vec![(1, 10, -1.0), (2, 20, -1.0)]);
    assert_eq!(got.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_users_with_exclusions_are_sorted_first_and_give_the_same_rows() {
    let sorted = tempfile::tempdir().unwrap();
    generated(sorted.path(), 1_000, 500, 20_000);
    recommend(sorted.path(), &["--k", "10", "--exclude-days", "1"])
        .await
        .unwrap();
    let want = recommendations(sorted.path());

    // The same users in reverse order (plays and songs as they were).
    let unsorted = tempfile::tempdir().unwrap();
    for dataset in ["song_embeddings", "plays"] {
        let from = sorted.path().join(format!("{dataset}/date={DATE}"));
        let to = unsorted.path().join(format!("{dataset}/date={DATE}"));
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    let mut users = streampulse_testkit::files::read_parquet_dir(
        &sorted.path().join(format!("user_features/date={DATE}")),
    );
    users.reverse();
    let users: Vec<RecordBatch> = users
        .iter()
        .map(|b| {
            let idx = arrow::array::UInt32Array::from_iter_values((0..b.num_rows() as u32).rev());
            arrow::compute::take_record_batch(b, &idx).unwrap()
        })
        .collect();
    let all = arrow::compute::concat_batches(&users[0].schema(), &users).unwrap();
    write(
        &unsorted
            .path()
            .join(format!("user_features/date={DATE}/part-0.parquet")),
        &all,
    );
    recommend(unsorted.path(), &["--k", "10", "--exclude-days", "1"])
        .await
        .unwrap();
    assert_eq!(recommendations(unsorted.path()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_given_twice_gets_one_list_and_the_repeat_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let songs = vector_batch(
        vec![Some(10), Some(20), Some(30)],
        vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        2,
        "embedding",
    );
    // User 7 twice, far apart and with other features the second time, in unsorted input and
    // with no exclusions (which used to skip the sort that makes repeats adjacent).
    let users = vector_batch(
        vec![Some(7), Some(3), Some(9), Some(1), Some(7)],
        vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 3.0],
        2,
        "features",
    );
    write_day(dir.path(), &songs, &users);
    let outcome = recommend(dir.path(), &["--k", "2", "--max-reject-share", "0.5"])
        .await
        .unwrap();
    let got = recommendations(dir.path());
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 3, 7, 9]);
    assert!(got.values().all(|list| list.len() == 2), "{got:?}");
    let rejects = std::fs::read_to_string(outcome.rejects.unwrap()).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert!(
        rejects.contains("user 7 has more than one feature row"),
        "{rejects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_users_list_goes_to_kafka_as_one_message_keyed_by_user() {
    let Some(b) = streampulse_testkit::kafka::broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 300, 200, 1_000);
    let topic = streampulse_testkit::kafka::unique("recommendations");
    // Parquet first, Kafka after: a consumer that receives the first list finds the day's
    // partition already published.
    let partition = dir.path().join(format!("recommendations/date={DATE}"));
    let watcher =
        streampulse_testkit::kafka::published_at_first_message(&b.brokers, &topic, partition);
    let out = recommend(
        dir.path(),
        &[
            "--k",
            "5",
            "--kafka-brokers",
            &b.brokers,
            "--recommendations-topic",
            &topic,
        ],
    )
    .await
    .unwrap();
    assert_eq!(out.kafka_messages, Some(out.users));
    assert_eq!(
        watcher.join().unwrap(),
        Some(true),
        "the first message came before its partition was published"
    );
    let want = recommendations(dir.path());
    let messages = streampulse_testkit::kafka::consume_all(&b.brokers, &topic);
    assert_eq!(messages.len(), want.len());
    for (key, m) in &messages {
        let user: i64 = key.parse().unwrap();
        assert_eq!(m["user_id"], user);
        assert_eq!(m["date"], DATE);
        let items = m["items"].as_array().unwrap();
        let got: Vec<(i64, i64)> = items
            .iter()
            .map(|i| (i["rank"].as_i64().unwrap(), i["song_id"].as_i64().unwrap()))
            .collect();
        let expected: Vec<(i64, i64)> = want[&user]
            .iter()
            .map(|(r, s, _)| (*r as i64, *s))
            .collect();
        assert_eq!(got, expected, "user {user}");
    }
}

/// The catalog is held whole: a budget below what it needs is refused with the figure (64), and
/// nothing is published; the same catalog under a budget that holds it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_below_the_catalog_is_refused_with_the_figure() {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 200, 20_000, 100); // 20,000 x 200 floats: 16 MB of vectors
    let err = recommend(dir.path(), &["--memory-limit", "32MiB"])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Usage, "{err}");
    let needed = recommend::vectors::catalog_bytes_needed(20_000, 200);
    assert!(needed > 32 << 20);
    assert!(
        err.to_string()
            .contains("--memory-limit 32MiB is below the")
            && err.to_string().contains("20000 songs x 200 dimensions"),
        "{err}"
    );
    assert!(!dir.path().join("recommendations").exists());
    recommend(dir.path(), &["--memory-limit", "256MiB"])
        .await
        .unwrap();
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_recommend")),
        &[],
    );
}
