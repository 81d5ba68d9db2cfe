//! Integration tests of revenue on a hand-made month whose amounts are worked out by hand in
//! the comments (pro-rating, half-even rounding, largest remainders, free users, plays outside a
//! subscription, a market without streams). The generated-data comparison with DuckDB lives in
//! tests/e2e/revenue_vs_duckdb.py.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    AsArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Decimal128Type, Field, Int64Type, Schema, TimeUnit};
use clap::Parser;
use revenue::{Args, Outcome, run, subscription_revenue};
use streampulse_core::run_record::RunMeter;

fn write(path: &Path, batch: RecordBatch) {
    streampulse_testkit::files::write_parquet(path, &[batch]);
}

fn day(d: &str) -> i32 {
    let d = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    (d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// (subscription, user, country, currency, price in major units x 1e6, start, end)
type Sub = (
    i64,
    i64,
    &'static str,
    &'static str,
    i128,
    &'static str,
    Option<&'static str>,
);
/// (user, song, played_at, ms_played)
type Play = (i64, i64, &'static str, i32);

const SUBS: [Sub; 5] = [
    (1, 1, "US", "USD", 9_990_000, "2026-01-01", None), // whole month: 999 cents
    (2, 2, "US", "USD", 9_990_000, "2026-11-16", None), // 15 of 30 days: 499.5 -> 500 (half even)
    (
        3,
        3,
        "JP",
        "JPY",
        980_000_000,
        "2025-06-01",
        Some("2026-11-11"),
    ), // 10 days: 326.67 -> 327 yen
    (4, 4, "US", "USD", 0, "2026-01-01", None),         // free: its plays do not count
    (5, 5, "DE", "EUR", 10_990_000, "2026-01-01", None), // 1099 cents, no streams at all
];

const PLAYS: [Play; 9] = [
    (1, 10, "2026-11-05T10:00:00Z", 200_000),
    (1, 10, "2026-11-05T11:00:00Z", 31_000),
    (1, 20, "2026-11-05T12:00:00Z", 60_000),
    (1, 30, "2026-11-05T13:00:00Z", 29_999), // not a stream
    (2, 10, "2026-11-10T10:00:00Z", 60_000), // before user 2's subscription
    (2, 30, "2026-11-20T10:00:00Z", 60_000),
    (3, 30, "2026-11-05T10:00:00Z", 60_000),
    (3, 30, "2026-11-15T10:00:00Z", 60_000), // after user 3's subscription ended
    (4, 10, "2026-11-05T10:00:00Z", 60_000), // free user
];

fn month(root: &Path) {
    let subs = RecordBatch::try_new(
        streampulse_core::schema::SUBSCRIPTIONS.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(SUBS.iter().map(|s| s.0))),
            Arc::new(Int64Array::from_iter_values(SUBS.iter().map(|s| s.1))),
            Arc::new(StringArray::from_iter_values(
                SUBS.iter()
                    .map(|s| if s.4 == 0 { "free" } else { "premium" }),
            )),
            Arc::new(StringArray::from_iter_values(SUBS.iter().map(|s| s.2))),
            Arc::new(StringArray::from_iter_values(SUBS.iter().map(|s| s.3))),
            Arc::new(
                Decimal128Array::from_iter_values(SUBS.iter().map(|s| s.4))
                    .with_precision_and_scale(18, 6)
                    .unwrap(),
            ),
            Arc::new(Date32Array::from_iter_values(SUBS.iter().map(|s| day(s.5)))),
            Arc::new(Date32Array::from(
                SUBS.iter().map(|s| s.6.map(day)).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    write(
        &root.join("subscriptions/date=2026-11-30/part-0.parquet"),
        subs,
    );
    let songs = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("song_id", DataType::Int64, false),
            Field::new("artist_id", DataType::Int64, false),
            Field::new("label_id", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![10, 20, 30])),
            Arc::new(Int64Array::from(vec![1, 1, 2])),
            Arc::new(Int64Array::from(vec![100, 100, 200])),
        ],
    )
    .unwrap();
    write(&root.join("songs/date=2026-11-30/part-0.parquet"), songs);
    let mut by_day: BTreeMap<&str, Vec<&Play>> = BTreeMap::new();
    for p in &PLAYS {
        by_day.entry(&p.2[..10]).or_default().push(p);
    }
    for (d, plays) in by_day {
        let ts = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("user_id", DataType::Int64, false),
                Field::new("song_id", DataType::Int64, false),
                Field::new(
                    "played_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                Field::new("ms_played", DataType::Int32, false),
            ])),
            vec![
                Arc::new(Int64Array::from_iter_values(plays.iter().map(|p| p.0))),
                Arc::new(Int64Array::from_iter_values(plays.iter().map(|p| p.1))),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(plays.iter().map(|p| ts(p.2)))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int32Array::from_iter_values(plays.iter().map(|p| p.3))),
            ],
        )
        .unwrap();
        write(&root.join(format!("plays/date={d}/part-0.parquet")), batch);
    }
}

async fn attribute(root: &Path, model: &str) -> Outcome {
    attribute_with(root, model, &[]).await
}

async fn attribute_with(root: &Path, model: &str, extra: &[&str]) -> Outcome {
    let root = root.display().to_string();
    let mut argv = vec![
        "revenue",
        "--month",
        "2026-11",
        "--model",
        model,
        "--data-root",
        &root,
        "--threads",
        "2",
    ];
    argv.extend_from_slice(extra);
    let cfg = Args::try_parse_from(argv).unwrap().validate().unwrap();
    run(&cfg, &mut RunMeter::start("revenue", "2026-11"))
        .await
        .unwrap()
}

/// (country, key) -> (streams, amount in minor units) of a revenue_by_* output.
fn amounts(root: &Path, dataset: &str) -> BTreeMap<(String, i64), (i64, i128)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root.join(format!("{dataset}/month=2026-11"))).unwrap() {
        let file = std::fs::File::open(e.unwrap().path()).unwrap();
        for b in
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap()
        {
            let b = b.unwrap();
            let (country, currency) = (
                b["country"].as_string::<i32>(),
                b["currency"].as_string::<i32>(),
            );
            // The dataset's key (song_id, artist_id or label_id) is the one column before streams.
            let (key, streams) = (
                b.column(b.schema().index_of("streams").unwrap() - 1)
                    .as_primitive::<Int64Type>(),
                b["streams"].as_primitive::<Int64Type>(),
            );
            let amount = b["amount"].as_primitive::<Decimal128Type>();
            for i in 0..b.num_rows() {
                let unit = 10i128.pow(
                    6 - streampulse_core::money::minor_unit_digits(currency.value(i)).unwrap(),
                );
                out.insert(
                    (country.value(i).to_string(), key.value(i)),
                    (streams.value(i), amount.value(i) / unit),
                );
            }
        }
    }
    out
}

fn reconciliation(root: &Path) -> BTreeMap<String, [i128; 4]> {
    let mut out = BTreeMap::new();
    let file =
        std::fs::File::open(root.join("revenue_reconciliation/month=2026-11/part-0.parquet"))
            .unwrap();
    for b in parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap() {
        let b = b.unwrap();
        let (country, currency) = (
            b["country"].as_string::<i32>(),
            b["currency"].as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            let unit = 10i128
                .pow(6 - streampulse_core::money::minor_unit_digits(currency.value(i)).unwrap());
            let v = |c: &str| b[c].as_primitive::<Decimal128Type>().value(i) / unit;
            out.insert(
                country.value(i).to_string(),
                [
                    v("pool"),
                    v("attributed"),
                    v("unattributed"),
                    v("difference"),
                ],
            );
        }
    }
    out
}

fn key(c: &str, k: i64) -> (String, i64) {
    (c.to_string(), k)
}

#[test]
fn revenue_is_pro_rated_and_rounded_half_to_even() {
    let r = |price, cur, days| subscription_revenue(price, cur, days, 30).unwrap();
    assert_eq!(r(9_990_000, "USD", 30), 999);
    assert_eq!(r(9_990_000, "USD", 15), 500);
    assert_eq!(r(9_970_000, "USD", 15), 498); // 498.5 -> 498
    assert_eq!(r(980_000_000, "JPY", 10), 327);
    assert_eq!(r(980_000_000, "XPF", 10), 327, "zero decimals, like JPY");
    let unknown = subscription_revenue(9_990_000, "XAU", 30, 30).unwrap_err();
    assert_eq!(unknown.exit_code(), streampulse_core::ExitCode::DataErr);
    assert!(unknown.to_string().contains("\"XAU\""), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pro_rata_splits_each_market_pool_by_streams() {
    let dir = tempfile::tempdir().unwrap();
    month(dir.path());
    let o = attribute(dir.path(), "pro-rata").await;
    assert_eq!(o.markets, 3);
    // US pool 999 + 500 = 1499 over streams 10:2, 20:1, 30:1 -> floors 749, 374, 374 (1497);
    // the 2 cents left go to the largest remainders (3/4 each): songs 20 and 30.
    let songs = amounts(dir.path(), "revenue_by_song");
    assert_eq!(songs[&key("US", 10)], (2, 749));
    assert_eq!(songs[&key("US", 20)], (1, 375));
    assert_eq!(songs[&key("US", 30)], (1, 375));
    assert_eq!(songs[&key("JP", 30)], (1, 327));
    assert_eq!(songs.len(), 4);
    let artists = amounts(dir.path(), "revenue_by_artist");
    assert_eq!(artists[&key("US", 1)], (3, 1124));
    assert_eq!(artists[&key("US", 2)], (1, 375));
    let labels = amounts(dir.path(), "revenue_by_label");
    assert_eq!(labels[&key("JP", 200)], (1, 327));
    // DE has a pool and no streams: all of it unattributed. Every difference is 0.
    let rec = reconciliation(dir.path());
    assert_eq!(rec["US"], [1499, 1499, 0, 0]);
    assert_eq!(rec["JP"], [327, 327, 0, 0]);
    assert_eq!(rec["DE"], [1099, 0, 1099, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_centric_splits_each_subscription_over_its_songs() {
    let dir = tempfile::tempdir().unwrap();
    month(dir.path());
    attribute(dir.path(), "user-centric").await;
    // Subscription 1 (999): songs 10 x2, 20 x1 -> 666 + 333. Subscription 2 (500): song 30.
    let songs = amounts(dir.path(), "revenue_by_song");
    assert_eq!(songs[&key("US", 10)], (2, 666));
    assert_eq!(songs[&key("US", 20)], (1, 333));
    assert_eq!(songs[&key("US", 30)], (1, 500));
    assert_eq!(songs[&key("JP", 30)], (1, 327));
    let rec = reconciliation(dir.path());
    assert_eq!(rec["US"], [1499, 1499, 0, 0]);
    assert_eq!(rec["DE"], [1099, 0, 1099, 0]);
    // A rerun writes the same bytes.
    let path = dir
        .path()
        .join("revenue_by_song/month=2026-11/part-0.parquet");
    let before = std::fs::read(&path).unwrap();
    attribute(dir.path(), "user-centric").await;
    assert!(before == std::fs::read(&path).unwrap());
}

/// Every output file of the month, by path under the root, with its bytes.
fn outputs(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for dataset in [
        "revenue_by_song",
        "revenue_by_artist",
        "revenue_by_label",
        "revenue_reconciliation",
    ] {
        let dir = root.join(dataset).join("month=2026-11");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            files.insert(
                path.strip_prefix(root).unwrap().display().to_string(),
                std::fs::read(&path).unwrap(),
            );
        }
    }
    files
}

/// A generated month: three days of plays, and the subscriptions and catalog of the last day
/// (mid-month starts and ends, free users, several currencies).
fn generated_month(root: &Path) {
    use streampulse_testkit::{Dataset, GenConfig, generate};
    for day in [2, 14, 30] {
        let mut cfg = GenConfig::demo();
        cfg.date = chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap();
        cfg.plays = 40_000;
        cfg.users = 4_000;
        cfg.songs = 1_500;
        cfg.late_share = 0.0;
        cfg.datasets = if day == 30 {
            vec![
                Dataset::PlaysParquet,
                Dataset::Subscriptions,
                Dataset::Songs,
            ]
        } else {
            vec![Dataset::PlaysParquet]
        };
        generate(&cfg, root).unwrap();
    }
}

/// `--engine postgres` pushes the joins and aggregations down to PostgreSQL; its outputs must
/// be the same bytes as DataFusion's, for both models, on the hand-made and a generated month.
#[tokio::test]
async fn the_postgres_engine_gives_the_same_bytes_as_datafusion() {
    let Some(db) = streampulse_testkit::pg::database("revenue").await else {
        return;
    };
    let pg_args = ["--engine", "postgres", "--database-url", db.url.as_str()];
    for make in [month as fn(&Path), generated_month] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        make(a.path());
        make(b.path());
        // Plain, and artist-centric with thresholds this small month crosses.
        let ac = [
            "--artist-centric",
            "--artist-min-streams",
            "40",
            "--artist-min-listeners",
            "20",
            "--user-monthly-cap",
            "10",
        ];
        for (model, weighting) in [
            ("pro-rata", &[][..]),
            ("user-centric", &[][..]),
            ("pro-rata", &ac[..]),
            ("user-centric", &ac[..]),
        ] {
            let df = attribute_with(a.path(), model, weighting).await;
            let pg_flags: Vec<&str> = pg_args.iter().chain(weighting).copied().collect();
            let pg = attribute_with(b.path(), model, &pg_flags).await;
            assert_eq!(
                (df.pool_minor_units, df.attributed_minor_units, df.songs),
                (pg.pool_minor_units, pg.attributed_minor_units, pg.songs),
                "{model}"
            );
            assert!(df.songs > 0);
            let (x, y) = (outputs(a.path()), outputs(b.path()));
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            for (path, bytes) in &x {
                assert!(
                    bytes == &y[path],
                    "{model}: {path} differs between the engines"
                );
            }
        }
    }
    // The run's private schemas are gone.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'sp_revenue_%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, 0, "a run left its schema behind");
    db.drop().await;
}

#[tokio::test]
async fn the_postgres_engine_needs_a_database_url() {
    let err = Args::try_parse_from(["revenue", "--month", "2026-11", "--engine", "postgres"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(err.exit_code() as u8, 64, "{err}");
}

// ---- inputs other tools wrote -----------------------------------------------------------------

/// Rewrites every Parquet file under `dir` with `change` applied to its batches (the types
/// pandas, pyarrow, DuckDB or Spark write instead of ours).
fn rewrite(dir: &Path, change: &dyn Fn(RecordBatch) -> RecordBatch) {
    for entry in walk(dir) {
        let file = std::fs::File::open(&entry).unwrap();
        let batches: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1 << 16)
                .unwrap()
                .map(|b| change(b.unwrap()))
                .collect();
        std::fs::remove_file(&entry).unwrap();
        for b in batches {
            write(&entry, b);
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `batch` with column `name` replaced by `f(column)`.
fn replace(
    batch: &RecordBatch,
    name: &str,
    f: impl Fn(&arrow::array::ArrayRef) -> arrow::array::ArrayRef,
) -> RecordBatch {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = batch.columns().to_vec();
    let i = schema.index_of(name).unwrap();
    columns[i] = f(&columns[i]);
    fields[i] = Field::new(name, columns[i].data_type().clone(), true);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn cast(a: &arrow::array::ArrayRef, to: DataType) -> arrow::array::ArrayRef {
    arrow::compute::cast(a, &to).unwrap()
}

fn with_price(
    batch: &RecordBatch,
    f: impl Fn(i128) -> arrow::array::ArrayRef + Copy,
) -> RecordBatch {
    replace(batch, "monthly_price", move |a| {
        let raw = a.as_primitive::<Decimal128Type>();
        assert_eq!(raw.len(), SUBS.len());
        let arrays: Vec<arrow::array::ArrayRef> = raw.values().iter().map(|v| f(*v)).collect();
        let refs: Vec<&dyn arrow::array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
        arrow::compute::concat(&refs).unwrap()
    })
}

fn run_err(root: &Path) -> revenue::Error {
    let root = root.display().to_string();
    let cfg = Args::try_parse_from(["revenue", "--month", "2026-11", "--data-root", &root])
        .unwrap()
        .validate()
        .unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { run(&cfg, &mut RunMeter::start("revenue", "2026-11")).await })
        .unwrap_err()
}

/// The hand-made month written the way other tools write it gives the very same bytes: prices
/// as `decimal(18,2)`, `decimal(38,10)` and float64, dates as µs timestamps and `date64`, ids
/// as int32, `played_at` in µs (no zone) and ns (a zone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_in_other_writers_types_give_the_same_outputs() {
    let ours = tempfile::tempdir().unwrap();
    month(ours.path());
    attribute(ours.path(), "pro-rata").await;
    let expected = outputs(ours.path());

    type Variant = (&'static str, fn(i128) -> arrow::array::ArrayRef);
    let prices: [Variant; 3] = [
        ("decimal(18,2)", |v| {
            Arc::new(
                Decimal128Array::from(vec![v / 10_000])
                    .with_precision_and_scale(18, 2)
                    .unwrap(),
            )
        }),
        ("decimal(38,10)", |v| {
            Arc::new(
                Decimal128Array::from(vec![v * 10_000])
                    .with_precision_and_scale(38, 10)
                    .unwrap(),
            )
        }),
        ("float64", |v| {
            Arc::new(arrow::array::Float64Array::from(vec![v as f64 / 1e6]))
        }),
    ];
    for (i, (what, price)) in prices.into_iter().enumerate() {
        let theirs = tempfile::tempdir().unwrap();
        month(theirs.path());
        rewrite(&theirs.path().join("subscriptions"), &|b| {
            let b = with_price(&b, price);
            let b = replace(&b, "subscription_id", |a| cast(a, DataType::Int32));
            let b = replace(&b, "user_id", |a| cast(a, DataType::Int32));
            let b = replace(&b, "started_at", |a| {
                cast(a, DataType::Timestamp(TimeUnit::Microsecond, None))
            });
            replace(&b, "ended_at", |a| cast(a, DataType::Date64))
        });
        let unit = if i % 2 == 0 {
            TimeUnit::Microsecond
        } else {
            TimeUnit::Nanosecond
        };
        let zone = (i % 2 == 1).then(|| Arc::<str>::from("America/New_York"));
        rewrite(&theirs.path().join("plays"), &|b| {
            let b = replace(&b, "played_at", |a| {
                cast(a, DataType::Timestamp(unit, zone.clone()))
            });
            replace(&b, "user_id", |a| cast(a, DataType::Int32))
        });
        rewrite(&theirs.path().join("songs"), &|b| {
            replace(&b, "label_id", |a| cast(a, DataType::Int32))
        });
        attribute(theirs.path(), "pro-rata").await;
        assert!(
            expected == outputs(theirs.path()),
            "prices as {what}: outputs differ"
        );
    }
}

/// A price that the contract's `decimal(18,6)` cannot hold, or a start date with a time of day,
/// fails the run with 65 naming the column, and publishes nothing.
/// (what, how the subscriptions are rewritten, what the error says)
type BadInput = (&'static str, fn(&RecordBatch) -> RecordBatch, &'static str);

#[test]
fn inputs_that_do_not_convert_exactly_are_rejected_with_the_column() {
    let cases: [BadInput; 3] = [
        (
            "a price with 7 decimals",
            |b| {
                with_price(b, |v| {
                    Arc::new(
                        Decimal128Array::from(vec![v * 10_000 + 1])
                            .with_precision_and_scale(38, 10)
                            .unwrap(),
                    )
                })
            },
            "column monthly_price: found Decimal128(38, 10)",
        ),
        (
            "a float price that is no decimal",
            |b| {
                with_price(b, |_| {
                    Arc::new(arrow::array::Float64Array::from(vec![0.1 + 0.2]))
                })
            },
            "column monthly_price: found Float64",
        ),
        (
            "a start with a time of day",
            |b| {
                replace(b, "started_at", |a| {
                    let ms = cast(a, DataType::Date64);
                    let shifted: arrow::array::Date64Array = ms
                        .as_primitive::<arrow::datatypes::Date64Type>()
                        .iter()
                        .map(|v| v.map(|v| v + 3_600_000))
                        .collect();
                    Arc::new(shifted)
                })
            },
            "column started_at: found Date64",
        ),
    ];
    for (what, change, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        month(dir.path());
        rewrite(&dir.path().join("subscriptions"), &|b| change(&b));
        let err = run_err(dir.path());
        assert_eq!(
            err.exit_code(),
            streampulse_core::ExitCode::DataErr,
            "{what}: {err}"
        );
        assert!(err.to_string().contains(message), "{what}: {err}");
        assert!(
            err.to_string().contains("part-0.parquet"),
            "{what} names the file: {err}"
        );
        assert!(
            !dir.path().join("revenue_by_song").exists(),
            "{what}: nothing published"
        );
    }
}

/// The reconciliation is a check, not an identity: a split that loses a minor unit, or one that
/// hands out more than its streams claimed, is a difference and fails the run.
#[test]
fn a_split_that_does_not_add_up_fails_the_reconciliation() {
    let m = |c: &str, cur: &str| (c.to_string(), cur.to_string());
    let pools = BTreeMap::from([(m("US", "USD"), 1499), (m("DE", "EUR"), 1099)]);
    let claimed = BTreeMap::from([(m("US", "USD"), 1499)]);
    let good = BTreeMap::from([(m("US", "USD"), 1499)]);
    let rows = revenue::reconcile(&pools, &claimed, &good).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].pool,
            rows[0].attributed,
            rows[0].unattributed,
            rows[0].difference
        ),
        (1099, 0, 1099, 0)
    );
    assert_eq!(rows[1].difference, 0);
    for corrupt in [1498, 1500] {
        let bad = BTreeMap::from([(m("US", "USD"), corrupt)]);
        let err = revenue::reconcile(&pools, &claimed, &bad).unwrap_err();
        assert_eq!(err.exit_code(), streampulse_core::ExitCode::Internal);
        assert!(
            err.to_string().contains(&format!(
                "US/USD: pool 1499, attributed {corrupt}, unattributed 0, difference {}",
                1499 - corrupt
            )),
            "{err}"
        );
    }
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_revenue")),
        &[(
            "SP_DATABASE_URL",
            "postgres://streampulse:hunter2-never-printed@db/catalog",
        )],
    );
}

/// The artist-centric thresholds do something only with `--artist-centric`: alone they are a
/// usage error (64), not a silently ignored flag; a monthly cap of 0 is refused, not read as 1.
#[test]
fn the_artist_centric_thresholds_need_artist_centric() {
    let parse = |extra: &[&str]| {
        let mut argv = vec![
            "revenue",
            "--month",
            "2026-11",
            "--data-root",
            "/nonexistent",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    };
    for flag in [
        "--artist-min-streams",
        "--artist-min-listeners",
        "--user-monthly-cap",
    ] {
        let err = parse(&[flag, "5"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::MissingRequiredArgument,
            "{flag}: {err}"
        );
        let cfg = parse(&["--artist-centric", flag, "5"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(cfg.weighting.is_some(), "{flag}");
    }
    assert!(parse(&["--artist-centric", "--user-monthly-cap", "0"]).is_err());
    // The binary maps clap's errors to 64.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revenue"))
        .args(["--month", "2026-11", "--artist-min-streams", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
