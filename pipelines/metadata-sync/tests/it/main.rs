//! Integration tests of metadata-sync against our metadata-api server, started in-process on a
//! free port, and a real catalog database: SQLite always, PostgreSQL from `DATABASE_URL` (set by
//! `make test`, which starts a server if needed; with `CI` set a missing server fails the test).

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clap::Parser;
use metadata_api::{Behaviour, RetryAfterFormat, serve};
use metadata_sync::db::CatalogDb;
use metadata_sync::{Args, Outcome, run};
use streampulse_core::run_record::RunMeter;
use streampulse_core::songs::{self, SongRecord};
use streampulse_testkit::catalog::Catalog;
use streampulse_testkit::pg;
use tokio::process::Command;

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

fn catalog(n: usize, seed: u64) -> Vec<SongRecord> {
    Catalog::generate(seed, n, date())
        .batches(4096)
        .iter()
        .flat_map(|b| songs::from_batch(b, "generated").unwrap())
        .collect()
}

/// A fast, well-behaved partner (tests that want faults say so).
fn calm() -> Behaviour {
    Behaviour {
        latency: Duration::from_millis(1),
        rate: 0.0,
        token: Some("s3cret".parse().unwrap()),
        ..Behaviour::default()
    }
}

/// A fast partner that fails `fault_rate` of the requests with 5xx and lets `hang_rate` of them
/// hang for `hang`.
fn faulty(fault_rate: f64, hang_rate: f64, hang: Duration) -> Behaviour {
    Behaviour {
        latency: Duration::from_millis(2),
        fault_rate,
        timeout_rate: hang_rate,
        hang,
        ..calm()
    }
}

struct Api {
    server: metadata_api::Server,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start(songs: Vec<SongRecord>, behaviour: Behaviour) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve(listener, songs, behaviour, async {
            let _ = stopped.await;
        })
        .unwrap();
        Api {
            server,
            stop: Some(stop),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server.task).await;
    }
}

/// The command line of a test run: fast defaults, then `extra` (whose flags replace defaults).
fn args(root: &Path, api: &str, db: &str, extra: &[&str]) -> Vec<String> {
    let defaults = [
        "metadata-sync",
        "--date",
        "2026-11-26",
        "--data-root",
        root.to_str().unwrap(),
        "--api-url",
        api,
        "--api-token",
        "s3cret",
        "--database-url",
        db,
        "--rate",
        "2000",
        "--burst",
        "50",
        "--backoff-ms",
        "20",
        "--page-size",
        "100",
        "--batch-size",
        "64",
    ];
    let mut v = vec!["metadata-sync".to_string()];
    for pair in defaults[1..].chunks(2) {
        if !extra.contains(&pair[0]) {
            v.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

async fn sync(root: &Path, api: &str, db: &str, extra: &[&str]) -> metadata_sync::Result<Outcome> {
    sync_metered(root, api, db, extra).await.0
}

/// [`sync`], with the run's meter.
async fn sync_metered(
    root: &Path,
    api: &str,
    db: &str,
    extra: &[&str],
) -> (metadata_sync::Result<Outcome>, RunMeter) {
    let cfg = match Args::try_parse_from(args(root, api, db, extra))
        .unwrap()
        .validate()
    {
        Ok(cfg) => cfg,
        Err(e) => return (Err(e), RunMeter::start("metadata-sync", "2026-11-26")),
    };
    let mut meter = RunMeter::start("metadata-sync", "2026-11-26");
    let out = Box::pin(run(&cfg, &mut meter)).await;
    if out.is_ok() {
        // Every run reads the feed at least once: its input is the bodies it received (the
        // run record's bytes in, which the audit sizes the job by).
        assert!(meter.bytes_in > 0, "bytes in: {}", meter.bytes_in);
    }
    (out, meter)
}

fn by_id(mut songs: Vec<SongRecord>) -> Vec<SongRecord> {
    songs.sort_by_key(|s| s.song_id);
    songs
}

async fn assert_catalog_equals(db_url: &str, expected: &[SongRecord]) {
    let db = CatalogDb::connect(db_url).await.unwrap();
    let got = db.all_songs().await.unwrap();
    let want = by_id(expected.to_vec());
    assert_eq!(got.len(), want.len(), "catalog size");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("catalog.sqlite").display())
}

/// Full sync, snapshot, nothing to do on a rerun, then an incremental sync of a changed catalog.
async fn full_then_incremental(db_url: &str) {
    let root = tempfile::tempdir().unwrap();
    let first = catalog(700, 1);
    let api = Api::start(first.clone(), calm()).await;
    // No second copies: a copy the client drops would be a body the partner counted and we
    // never read.
    let (out, meter) = sync_metered(root.path(), &api.server.url, db_url, &["--no-hedge"]).await;
    let out = out.unwrap();
    assert_eq!(
        (out.sync.listed, out.sync.fetched, out.sync.changed),
        (700, 700, 700)
    );
    // The run record sizes the job by what crossed the wire and what was written: the bodies
    // the partner served, to the byte, and the snapshot's file.
    assert_eq!(meter.bytes_in, api.server.stats.snapshot().body_bytes);
    let snapshot_file = root.path().join("songs/date=2026-11-26/part-0.parquet");
    assert_eq!(
        meter.bytes_out,
        std::fs::metadata(&snapshot_file).unwrap().len()
    );
    assert_eq!(out.catalog_songs, 700);
    assert!(out.sync.transactions >= 700 / 64);
    assert_catalog_equals(db_url, &first).await;
    let snapshot = songs::read_parquet(&root.path().join("songs/date=2026-11-26")).unwrap();
    assert_eq!(
        snapshot,
        by_id(first.clone()),
        "the snapshot is the catalog, by id"
    );
    let bytes = std::fs::read(root.path().join("songs/date=2026-11-26/part-0.parquet")).unwrap();

    // Nothing changed: the cursor is at the end of the feed.
    let again = sync(root.path(), &api.server.url, db_url, &[])
        .await
        .unwrap();
    assert_eq!((again.sync.listed, again.sync.changed), (0, 0));
    let bytes_again =
        std::fs::read(root.path().join("songs/date=2026-11-26/part-0.parquet")).unwrap();
    assert_eq!(bytes, bytes_again, "a rerun writes the same snapshot bytes");

    // A full resync asks for everything but writes nothing: every tag is current.
    let full = sync(root.path(), &api.server.url, db_url, &["--full"])
        .await
        .unwrap();
    assert_eq!(
        (full.sync.listed, full.sync.not_modified, full.sync.changed),
        (700, 700, 0)
    );
    api.stop().await;

    // The partner changes 50 songs (later updated_at) and adds 30.
    let mut second = first.clone();
    let latest = first.iter().map(|s| s.updated_at).max().unwrap();
    for (i, s) in second.iter_mut().enumerate().filter(|(i, _)| i % 14 == 0) {
        s.title = format!("{} (remastered)", s.title);
        s.updated_at = latest + chrono::Duration::seconds(i as i64 + 1);
    }
    let mut extra = catalog(730, 2).split_off(700);
    for s in &mut extra {
        s.updated_at = latest + chrono::Duration::hours(1);
    }
    second.extend(extra);
    let api = Api::start(second.clone(), calm()).await;
    let inc = sync(root.path(), &api.server.url, db_url, &[])
        .await
        .unwrap();
    assert_eq!(
        (inc.sync.listed, inc.sync.changed),
        (80, 80),
        "{:?}",
        inc.sync
    );
    assert_catalog_equals(db_url, &second).await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_then_incremental() {
    let dir = tempfile::tempdir().unwrap();
    full_then_incremental(&sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_full_then_incremental() {
    let Some(db) = pg::database("full_incr").await else {
        return;
    };
    full_then_incremental(&db.url).await;
    db.drop().await;
}

/// A partner where 2 % of requests hang far past our timeout: each hung request is beaten by
/// its second copy instead of waiting the timeout out, and the catalog is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_is_hedged_not_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let songs = catalog(500, 5);
    let api = Api::start(songs.clone(), faulty(0.0, 0.02, Duration::from_secs(120))).await;
    let (out, meter) = sync_metered(
        dir.path(),
        &api.server.url,
        &db,
        &["--timeout-s", "4", "--concurrency", "16"],
    )
    .await;
    assert_eq!(out.unwrap().sync.changed, 500);
    assert_catalog_equals(&db, &songs).await;
    let hung = api.server.stats.snapshot().hung;
    let client = &meter.extra["api"];
    let (won, timeouts) = (
        client["hedges_won"].as_u64().unwrap(),
        client["timeouts"].as_u64().unwrap(),
    );
    assert!(
        hung >= 3,
        "the partner hung too few requests to tell: {hung}"
    );
    // Without hedging every hung request times out; with it, only one whose copy hung too.
    assert!(
        won >= 1 && timeouts * 2 < hung,
        "hung {hung}, hedges won {won}, timeouts {timeouts}"
    );
    api.stop().await;
}

/// 10 % faults and some hanging requests; the sync is killed (SIGKILL) once it has committed
/// something, then rerun: the catalog ends exactly equal to the API's.
async fn faults_and_a_kill_lose_nothing(db_url: &str) {
    let root = tempfile::tempdir().unwrap();
    let songs = catalog(1500, 3);
    let api = Api::start(songs.clone(), faulty(0.10, 0.01, Duration::from_secs(3))).await;
    let bin = env!("CARGO_BIN_EXE_metadata-sync");
    let argv = args(
        root.path(),
        &api.server.url,
        db_url,
        &["--timeout-s", "0.5", "--concurrency", "8", "--rate", "400"],
    );
    // Migrate before the child starts, so the two do not race to create the tables.
    let db = CatalogDb::connect(db_url).await.unwrap();
    let mut child = Command::new(bin).args(&argv[1..]).spawn().unwrap();
    // Kill once the first transactions are in, well before the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = db.count().await.unwrap();
        if n >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sync committed nothing in 60 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let partial = db.count().await.unwrap();
    assert!(
        partial < 1500,
        "killed too late to prove anything: {partial}"
    );
    let status = Command::new(bin).args(&argv[1..]).status().await.unwrap();
    assert!(status.success(), "the rerun failed: {status}");
    assert_catalog_equals(db_url, &songs).await;
    let stats = api.server.stats.snapshot();
    assert!(stats.faults > 50, "faults were injected: {stats:?}");
    assert!(stats.hung > 0, "some requests hung: {stats:?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_faults_and_a_kill_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    faults_and_a_kill_lose_nothing(&sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_faults_and_a_kill_lose_nothing() {
    let Some(db) = pg::database("kill").await else {
        return;
    };
    faults_and_a_kill_lose_nothing(&db.url).await;
    db.drop().await;
}

/// A client that asks faster than the partner allows is throttled, waits as told (`Retry-After:
/// 0` included) instead of spinning, and still finishes.
async fn throttled(format: RetryAfterFormat) {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let songs = catalog(300, 4);
    let api = Api::start(
        songs.clone(),
        Behaviour {
            latency: Duration::from_millis(2),
            rate: 100.0,
            burst: 10.0,
            retry_after: format,
            token: Some("s3cret".parse().unwrap()),
            ..Behaviour::default()
        },
    )
    .await;
    let db = sqlite_url(dir.path());
    let out = sync(
        root.path(),
        &api.server.url,
        &db,
        &["--rate", "400", "--burst", "40"],
    )
    .await
    .unwrap();
    assert_eq!(out.sync.changed, 300);
    assert_catalog_equals(&db, &songs).await;
    let stats = api.server.stats.snapshot();
    assert!(
        stats.rate_limited > 0,
        "the client was throttled: {stats:?}"
    );
    // 303 useful requests; spinning on 429 would make thousands.
    assert!(stats.requests < 900, "the client spun on 429: {stats:?}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_with_retry_after_seconds() {
    throttled(RetryAfterFormat::Seconds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_with_retry_after_http_dates() {
    throttled(RetryAfterFormat::HttpDate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_with_a_usage_exit_and_commits_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(catalog(50, 5), calm()).await;
    let db = sqlite_url(dir.path());
    let mut argv = args(root.path(), &api.server.url, &db, &[]);
    let token = argv.iter().position(|a| a == "s3cret").unwrap();
    argv[token] = "wrong".into();
    let err = Box::pin(run(
        &Args::try_parse_from(argv).unwrap().validate().unwrap(),
        &mut RunMeter::start("metadata-sync", "2026-11-26"),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code() as u8, 64, "{err}");
    assert_eq!(
        CatalogDb::connect(&db)
            .await
            .unwrap()
            .count()
            .await
            .unwrap(),
        0
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_keeps_failing_exhausts_the_error_budget_and_keeps_committed_work() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(
        catalog(400, 6),
        Behaviour {
            fault_rate: 0.6,
            ..calm()
        },
    )
    .await;
    let db = sqlite_url(dir.path());
    let err = sync(
        root.path(),
        &api.server.url,
        &db,
        &["--error-budget", "0.3"],
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code() as u8, 75, "{err}");
    assert!(err.to_string().contains("error budget"), "{err}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_unavailable() {
    let root = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let port = streampulse_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let err = sync(
        root.path(),
        &url,
        &sqlite_url(dir.path()),
        &["--max-attempts", "2"],
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code() as u8, 69, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_songs_go_to_kafka_keyed_by_song_id() {
    let Some(b) = streampulse_testkit::kafka::broker() else {
        return;
    };
    let topic = streampulse_testkit::kafka::unique("songs-changed");
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let kafka = [
        "--kafka-brokers",
        &b.brokers,
        "--songs-changed-topic",
        &topic,
    ];
    let first = catalog(120, 5);
    let api = Api::start(first.clone(), calm()).await;
    // The snapshot first, Kafka after: a consumer that hears of the first change finds the
    // day's snapshot already published.
    let snapshot = dir.path().join("songs/date=2026-11-26");
    let watcher =
        streampulse_testkit::kafka::published_at_first_message(&b.brokers, &topic, snapshot);
    let out = sync(dir.path(), &api.server.url, &db, &kafka)
        .await
        .unwrap();
    assert_eq!(out.sync.changed, 120);
    assert_eq!(
        watcher.join().unwrap(),
        Some(true),
        "the first message came before the snapshot was published"
    );
    api.stop().await;
    let read = |messages: Vec<(String, serde_json::Value)>| -> Vec<SongRecord> {
        messages
            .into_iter()
            .map(|(key, m)| {
                let song: SongRecord = serde_json::from_value(m).unwrap();
                assert_eq!(key, song.song_id.to_string());
                song
            })
            .collect()
    };
    let published = read(streampulse_testkit::kafka::consume_all(&b.brokers, &topic));
    assert_eq!(by_id(published), by_id(first.clone()));

    // Ten songs change: only they are published again.
    let mut second = first.clone();
    let latest = first.iter().map(|s| s.updated_at).max().unwrap();
    for s in second.iter_mut().take(10) {
        s.title = format!("{} (live)", s.title);
        s.updated_at = latest + chrono::Duration::seconds(1);
    }
    let api = Api::start(second.clone(), calm()).await;
    let inc = sync(dir.path(), &api.server.url, &db, &kafka)
        .await
        .unwrap();
    assert_eq!(inc.sync.changed, 10);
    api.stop().await;
    let all = read(streampulse_testkit::kafka::consume_all(&b.brokers, &topic));
    assert_eq!(all.len(), 130);
    let changed: Vec<SongRecord> = all
        .into_iter()
        .filter(|s| s.title.ends_with("(live)"))
        .collect();
    assert_eq!(by_id(changed), by_id(second[..10].to_vec()));
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_metadata-sync")),
        &[
            ("SP_API_TOKEN", "tok-3f9a1c-never-printed"),
            (
                "SP_DATABASE_URL",
                "postgres://streampulse:hunter2-never-printed@db/catalog",
            ),
        ],
    );
}
