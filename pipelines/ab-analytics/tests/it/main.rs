//! Integration tests of ab-analytics, run in-process: generated experiments (whose planted
//! effects and sample-ratio mismatch are known) and small hand-written inputs with every kind of
//! bad row. The statistics themselves are checked against SciPy and statsmodels by
//! tests/e2e/ab_vs_scipy.py.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ab_analytics::{Args, Outcome, run};
use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use clap::Parser;
use streampulse_core::exit::ExitCode;
use streampulse_core::run_record::RunMeter;
use streampulse_testkit::files::{read_parquet_dir, write_parquet};
use streampulse_testkit::{Dataset, GenConfig, generate};

const DATE: &str = "2026-11-26";

async fn analyse(root: &Path, extra: &[&str]) -> Result<Outcome, ab_analytics::Error> {
    let mut argv: Vec<String> = [
        "ab-analytics",
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
    let mut meter = RunMeter::start("ab-analytics", DATE);
    run(&cfg, &mut meter).await
}

/// Generated experiments: `users` in the population, `per_experiment` in each experiment. When
/// `per_experiment` divides `users` with room to spare the inputs come out sorted by user.
fn generated(root: &Path, users: u64, per_experiment: u64) {
    let cfg = GenConfig {
        users,
        experiment_users: per_experiment,
        datasets: vec![Dataset::Experiments],
        ..GenConfig::demo()
    };
    generate(&cfg, root).unwrap();
}

fn report(root: &Path, experiment: &str) -> serde_json::Value {
    let path = root.join(format!("ab_reports/date={DATE}/{experiment}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn result<'a>(
    r: &'a serde_json::Value,
    metric: &str,
    variant: &str,
    cuped: bool,
) -> &'a serde_json::Value {
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["metric"] == metric && x["variant"] == variant && x["cuped"] == cuped)
        .unwrap_or_else(|| panic!("no result {metric}/{variant}/{cuped}"))
}

fn files_under(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["ab_results", "ab_reports"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((
                        p.strip_prefix(root).unwrap().to_path_buf(),
                        std::fs::read(&p).unwrap(),
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_experiments_give_every_comparison_and_find_the_planted_effects() {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 200_000, 40_000);
    let outcome = analyse(dir.path(), &[]).await.unwrap();
    assert_eq!(outcome.experiments.len(), 3);
    assert!(outcome.rejects.is_none());

    // One row per metric x treatment plus a CUPED row per treatment, in the contract schema.
    for (exp, treatments) in [
        ("exp-home-feed", 1),
        ("exp-onboarding", 2),
        ("exp-autoplay", 1),
    ] {
        let batches = read_parquet_dir(&dir.path().join(format!("ab_results/experiment={exp}")));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, treatments * 5, "{exp}");
        assert_eq!(batches[0].schema(), *streampulse_core::schema::AB_RESULTS);
        let html = std::fs::read_to_string(
            dir.path()
                .join(format!("ab_reports/date={DATE}/{exp}.html")),
        )
        .unwrap();
        assert!(html.contains("<svg") && html.contains(exp) && html.ends_with("</html>\n"));
    }

    // exp-autoplay was generated with a 2-point traffic skew: the SRM check must catch it, and
    // only it.
    for e in &outcome.experiments {
        assert_eq!(e.srm_flagged, e.experiment_id == "exp-autoplay", "{e:?}");
        assert_eq!(e.users, 40_000);
    }
    // exp-home-feed plants +3 % minutes. CUPED (pre-period minutes explain most of the variance)
    // finds it with a much narrower interval than the raw comparison.
    let r = report(dir.path(), "exp-home-feed");
    let raw = result(&r, "minutes_listened", "treatment", false);
    let cuped = result(&r, "minutes_listened", "treatment", true);
    let width = |x: &serde_json::Value| {
        x["rel_ci_high"].as_f64().unwrap() - x["rel_ci_low"].as_f64().unwrap()
    };
    assert!(width(cuped) < 0.6 * width(raw), "{cuped} vs {raw}");
    assert!(cuped["significant"].as_bool().unwrap());
    let lift = cuped["rel_lift"].as_f64().unwrap();
    assert!((0.015..0.045).contains(&lift), "lift {lift}");
    // The family is 4 comparisons: Holm multiplies the smallest p-value by 4 at most.
    let p = raw["p_value"].as_f64().unwrap();
    let p_holm = raw["p_holm"].as_f64().unwrap();
    assert!(p_holm >= p && p_holm <= (4.0 * p).min(1.0) + 1e-15);
    assert_eq!(r["variants"][0]["variant"], "control");
    assert_eq!(r["variants"][0]["planned_share"], 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_inputs_are_sorted_and_give_identical_results() {
    let sorted = tempfile::tempdir().unwrap();
    generated(sorted.path(), 200_000, 40_000);
    // The same rows in a scrambled order (reversed batches, rows reversed within).
    let unsorted = tempfile::tempdir().unwrap();
    for dataset in ["assignments", "user_metrics", "experiments"] {
        let part = format!("{dataset}/date={DATE}");
        let mut batches = read_parquet_dir(&sorted.path().join(&part));
        batches.reverse();
        let reversed: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let idx =
                    arrow::array::UInt32Array::from_iter_values((0..b.num_rows() as u32).rev());
                arrow::compute::take_record_batch(b, &idx).unwrap()
            })
            .collect();
        write_parquet(
            &unsorted.path().join(&part).join("part-0.parquet"),
            &reversed,
        );
    }
    analyse(sorted.path(), &[]).await.unwrap();
    analyse(unsorted.path(), &[]).await.unwrap();
    let (a, b) = (files_under(sorted.path()), files_under(unsorted.path()));
    assert_eq!(a.len(), 9);
    for ((pa, ba), (pb, bb)) in a.iter().zip(&b) {
        assert_eq!(pa, pb);
        assert!(ba == bb, "{} differs", pa.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_writes_the_same_bytes_and_one_experiment_can_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 60_000, 20_000);
    analyse(dir.path(), &["--winsorize", "99"]).await.unwrap();
    let first = files_under(dir.path());
    analyse(dir.path(), &["--winsorize", "99"]).await.unwrap();
    assert_eq!(first, files_under(dir.path()));

    let one = analyse(
        dir.path(),
        &["--winsorize", "99", "--experiment", "exp-onboarding"],
    )
    .await
    .unwrap();
    assert_eq!(one.experiments.len(), 1);
    assert_eq!(
        first,
        files_under(dir.path()),
        "the other experiments' outputs stay"
    );
    let missing = analyse(dir.path(), &["--experiment", "exp-nope"])
        .await
        .unwrap_err();
    assert_eq!(missing.exit_code(), ExitCode::DataErr);
}

// ---- hand-written inputs ----------------------------------------------------------------------

fn nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

type Assignment<'a> = (&'a str, Option<i64>, Option<&'a str>);
type Metrics<'a> = (&'a str, i64, Option<f64>, i32, Option<bool>);

fn hand_written(root: &Path, assignments: &[Assignment], metrics: &[Metrics], plan: bool) {
    let a_schema = nullable(&streampulse_core::schema::ASSIGNMENTS);
    let a = RecordBatch::try_new(
        a_schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                assignments.iter().map(|r| r.0),
            )),
            Arc::new(Int64Array::from(
                assignments.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                assignments.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMillisecondArray::from(vec![0; assignments.len()]).with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    write_parquet(
        &root.join(format!("assignments/date={DATE}/part-0.parquet")),
        &[a],
    );
    let m_schema = nullable(&streampulse_core::schema::USER_METRICS);
    let m = RecordBatch::try_new(
        m_schema,
        vec![
            Arc::new(StringArray::from_iter_values(metrics.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(metrics.iter().map(|r| r.1))),
            Arc::new(Float64Array::from(
                metrics.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(Int32Array::from_iter_values(metrics.iter().map(|r| r.3))),
            Arc::new(BooleanArray::from(
                metrics.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from_iter(
                metrics.iter().map(|r| Some(r.1 % 2 == 0)),
            )),
            Arc::new(Float64Array::from_iter_values(
                metrics.iter().map(|r| r.1 as f64),
            )),
        ],
    )
    .unwrap();
    write_parquet(
        &root.join(format!("user_metrics/date={DATE}/part-0.parquet")),
        &[m],
    );
    if plan {
        let e = RecordBatch::try_new(
            streampulse_core::schema::EXPERIMENTS.clone(),
            vec![
                Arc::new(StringArray::from(vec!["exp", "exp"])),
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Float64Array::from(vec![0.5, 0.5])),
                Arc::new(BooleanArray::from(vec![true, false])),
                Arc::new(arrow::array::Date32Array::from(vec![20_000, 20_000])),
                Arc::new(arrow::array::Date32Array::from(vec![20_100, 20_100])),
            ],
        )
        .unwrap();
        write_parquet(
            &root.join(format!("experiments/date={DATE}/part-0.parquet")),
            &[e],
        );
    }
}

/// 40 users in `a` (control) and `b`, minutes = user id, all clean.
fn clean_rows() -> (Vec<Assignment<'static>>, Vec<Metrics<'static>>) {
    let a = (1..=40)
        .map(|u| ("exp", Some(u), Some(if u % 2 == 0 { "a" } else { "b" })))
        .collect();
    let m = (1..=40)
        .map(|u| ("exp", u, Some(u as f64), (u % 5) as i32, Some(u % 3 == 0)))
        .collect();
    (a, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_rejected_with_file_row_column_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut m) = clean_rows();
    a.insert(10, ("exp", Some(10), Some("b"))); // user 10 assigned twice
    a.push(("exp", Some(41), Some("c"))); // not in the plan
    a.push(("exp", Some(42), None)); // null variant
    a.push(("exp", Some(43), Some("a"))); // assigned, metrics unusable below
    a.push(("exp", Some(44), Some("b"))); // assigned, no metrics at all
    m.push(("exp", 43, Some(f64::NAN), 1, Some(true)));
    m.push(("exp", 45, Some(3.0), 1, Some(true))); // metrics without assignment
    m.push(("exp", 46, Some(3.0), 1, None)); // no assignment either (and a null)
    hand_written(dir.path(), &a, &m, true);

    // Six bad rows out of 88: over the default share, the run fails and publishes nothing.
    let err = analyse(dir.path(), &[]).await.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::DataErr, "{err}");
    assert!(!dir.path().join("ab_results").exists());

    let outcome = analyse(dir.path(), &["--max-reject-share", "0.5"])
        .await
        .unwrap();
    let rejects_path = outcome.rejects.expect("rejects written");
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(&rejects_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<(String, String)> = rejects
        .iter()
        .map(|r| {
            (
                r["column"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has =
        |column: &str, text: &str| reasons.iter().any(|(c, r)| c == column && r.contains(text));
    assert_eq!(rejects.len(), 6, "{reasons:?}");
    assert!(has("user_id", "assigned twice"), "{reasons:?}");
    assert!(has("variant", "\"c\" is not in the plan"));
    assert!(has("variant", "null variant"));
    assert!(has("minutes_listened", "not a finite number"));
    assert!(has(
        "user_id",
        "user 45 has metrics but no valid assignment"
    ));
    assert!(has(
        "user_id",
        "user 46 has metrics but no valid assignment"
    ));
    // Rows are named by input and row index, with the row itself.
    let twice = rejects
        .iter()
        .find(|r| r["reason"].as_str().unwrap().contains("twice"))
        .unwrap();
    assert!(
        twice["file"]
            .as_str()
            .unwrap()
            .contains("assignments/date=")
    );
    assert_eq!(twice["line"], 10, "row index in the file, from 0");
    assert!(twice["raw"].as_str().unwrap().contains("\"user_id\":10"));

    // Users 43 and 44 count for the sample-ratio check but have no usable metrics.
    let r = report(dir.path(), "exp");
    let a = &r["variants"][0];
    assert_eq!(
        (a["variant"].as_str(), a["assigned"].as_u64()),
        (Some("a"), Some(21))
    );
    assert_eq!(a["missing_metrics"], 1);
    assert_eq!(r["variants"][1]["missing_metrics"], 1);
    let minutes = result(&r, "minutes_listened", "b", false);
    assert_eq!(
        (
            minutes["n_control"].as_u64(),
            minutes["n_treatment"].as_u64()
        ),
        (Some(20), Some(20))
    );
    // Control = even users 2..40: mean 21; treatment = odd users 1..39: mean 20.
    assert_eq!(minutes["control_mean"], 21.0);
    assert_eq!(minutes["treatment_mean"], 20.0);
}

/// An experiment id that a layer between us and the reader would rewrite (the object store
/// percent-encodes `#`, `%`, `*`; Hive escapes `:`, `=`; a leading `.` hides a file) fails the
/// run with 65 naming it, and nothing is published; the same id given to `--experiment` is a
/// usage error (64). Ids of letters, digits, `-`, `_` and `.` run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_id_no_partition_can_hold_is_refused() {
    let (a, m) = clean_rows();
    let with_id = |id: &'static str| {
        let a: Vec<Assignment> = a
            .iter()
            .map(|r| (id, r.1, r.2.map(|v| if v == "a" { "control" } else { "b" })))
            .collect();
        let m: Vec<Metrics> = m.iter().map(|r| (id, r.1, r.2, r.3, r.4)).collect();
        (a, m)
    };
    for id in [
        "exp#2", "50%-off", "a*b", "time:10", "k=v", ".hidden", "new feed",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (a, m) = with_id(id);
        hand_written(dir.path(), &a, &m, false);
        let err = analyse(dir.path(), &[]).await.unwrap_err();
        assert_eq!(err.exit_code(), ExitCode::DataErr, "{id:?}: {err}");
        assert!(
            err.to_string().contains(&format!("{id:?}")),
            "{id:?}: {err}"
        );
        assert!(!dir.path().join("ab_results").exists(), "{id:?}");
        assert!(!dir.path().join("ab_reports").exists(), "{id:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, m) = with_id("Exp_2026.11-b");
    hand_written(dir.path(), &a, &m, false);
    analyse(dir.path(), &[]).await.unwrap();
    assert!(
        dir.path()
            .join("ab_results/experiment=Exp_2026.11-b")
            .is_dir()
    );
    let err = analyse(dir.path(), &["--experiment", "exp#2"])
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::Usage, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_plan_control_is_the_variant_named_control() {
    let dir = tempfile::tempdir().unwrap();
    let (a, m) = clean_rows();
    hand_written(dir.path(), &a, &m, false);
    let err = analyse(dir.path(), &[]).await.unwrap_err();
    assert_eq!(err.exit_code(), ExitCode::DataErr);
    assert!(
        err.to_string().contains("no variant named \"control\""),
        "{err}"
    );

    let a: Vec<Assignment> = a
        .iter()
        .map(|r| {
            (
                r.0,
                r.1,
                r.2.map(|v| if v == "a" { "control" } else { "z" }),
            )
        })
        .collect();
    hand_written(dir.path(), &a, &m, false);
    analyse(dir.path(), &[]).await.unwrap();
    let r = report(dir.path(), "exp");
    assert_eq!(r["planned"], false);
    assert_eq!(r["variants"][0]["variant"], "control");
    assert_eq!(r["variants"][1]["planned_share"], 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winsorization_caps_at_the_numpy_percentile() {
    let dir = tempfile::tempdir().unwrap();
    let (a, m) = clean_rows();
    hand_written(dir.path(), &a, &m, true);
    analyse(dir.path(), &["--winsorize", "90"]).await.unwrap();
    let r = report(dir.path(), "exp");
    // np.percentile(np.arange(1, 41), 90) == 36.1; sessions are u % 5: 0..4, p90 = 4.
    assert!(
        (r["caps"]["minutes_listened"].as_f64().unwrap() - 36.1).abs() < 1e-12,
        "{}",
        r["caps"]
    );
    assert_eq!(r["caps"]["sessions"], 4.0);
    // Control: even users 2..40, the values above 36.1 (38, 40) become 36.1.
    let control = result(&r, "minutes_listened", "b", false)["control_mean"]
        .as_f64()
        .unwrap();
    let expected = ((2..=36).step_by(2).sum::<i32>() as f64 + 2.0 * 36.1) / 20.0;
    assert!(
        (control - expected).abs() < 1e-12,
        "{control} vs {expected}"
    );
    // The Parquet results carry the same numbers.
    let batches = read_parquet_dir(&dir.path().join("ab_results/experiment=exp"));
    let means = batches[0]
        .column_by_name("control_mean")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(means.value(0), control);
    assert_eq!(
        batches[0].column_by_name("cuped").unwrap().data_type(),
        &DataType::Boolean
    );
    assert!(!batches[0].column_by_name("p_bh").unwrap().is_null(0));
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_ab-analytics")),
        &[],
    );
}
