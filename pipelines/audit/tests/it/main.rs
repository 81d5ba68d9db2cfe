//! Integration tests of audit on hand-written run records whose projections are known.

use std::path::Path;

use audit::{Args, Risk, run};
use clap::Parser;
use streampulse_core::run_record::RunMeter;

const GIB: u64 = 1 << 30;

#[allow(clippy::too_many_arguments)]
fn record(
    root: &Path,
    pipeline: &str,
    n: usize,
    rows: u64,
    wall: f64,
    cpu: f64,
    rss: u64,
    threads: usize,
) {
    let r = serde_json::json!({
        "pipeline": pipeline, "run_id": format!("r{n}"), "logical_date": "2026-11-26", "status": "succeeded",
        "exit_code": 0, "started_at": format!("2026-11-2{n}T00:00:00Z"), "rows_in": rows, "rows_out": 1,
        "rows_rejected": 0, "bytes_in": 0, "bytes_out": 0, "wall_seconds": wall, "cpu_seconds": cpu,
        "peak_rss_bytes": rss, "engine": "datafusion", "threads": threads, "memory_limit_bytes": 0,
        "host_cores": 16, "host_memory_bytes": 64 * GIB,
    });
    let dir = root.join("runs").join(pipeline);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("2026-11-26-r{n}.json")), r.to_string()).unwrap();
}

#[tokio::test]
async fn projections_fit_the_runs_and_grade_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Linear in the input, memory bounded: fits everywhere for 5 years.
    for (n, rows) in [(1, 1_000_000u64), (2, 2_000_000), (3, 4_000_000)] {
        record(
            root,
            "steady",
            n,
            rows,
            10.0 * rows as f64 / 1e6,
            8.0 * rows as f64 / 1e6,
            GIB,
            16,
        );
    }
    // 50 GiB today: over 75 % of 64 GiB, so HIGH although it still fits.
    record(root, "hungry", 1, 1_000_000, 60.0, 30.0, 50 * GIB, 16);
    // CPU-bound, 5 h on 8 threads and 10 h on 4: all parallel, so 2.5 h on 16 cores, x1.3 a
    // year: past 6 h in year 4.
    record(
        root,
        "slow",
        1,
        1_000_000,
        5.0 * 3600.0,
        5.0 * 3600.0 * 7.5,
        4 * GIB,
        8,
    );
    record(
        root,
        "slow",
        2,
        1_000_000,
        10.0 * 3600.0,
        10.0 * 3600.0 * 3.8,
        4 * GIB,
        4,
    );
    // A demo-sized run, measured on one thread count only.
    record(root, "demo", 1, 200_000, 2.0, 3.0, GIB / 4, 2);
    // Over the machine's memory today.
    record(root, "doomed", 1, 1_000_000, 60.0, 60.0, 70 * GIB, 16);
    let argv = ["audit", "--data-root", &root.display().to_string()];
    let cfg = Args::try_parse_from(argv).unwrap().validate().unwrap();
    let outcome = run(&cfg, &mut RunMeter::start("audit", "latest"))
        .await
        .unwrap();
    let risk: std::collections::BTreeMap<String, Risk> = outcome.pipelines.into_iter().collect();
    assert_eq!(risk["steady"], Risk::Low);
    assert_eq!(risk["hungry"], Risk::High);
    assert_eq!(risk["slow"], Risk::High);
    assert_eq!(risk["doomed"], Risk::Critical);
    assert_eq!(risk["demo"], Risk::Low);

    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("reports/audit/audit.json")).unwrap())
            .unwrap();
    let pipeline = |name: &str| {
        doc["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pipeline"] == name)
            .unwrap()
            .clone()
    };
    let steady = pipeline("steady");
    assert!((steady["time_fit"]["slope"].as_f64().unwrap() - 1e-5).abs() < 1e-12);
    assert!((steady["time_fit"]["r2"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(steady["bottleneck"], "I/O");
    assert_eq!(steady["recommendation"], "stay");
    let slow = pipeline("slow");
    assert_eq!(slow["bottleneck"], "CPU");
    assert_eq!(slow["verdict"], "misses the batch window in year 4");
    assert!((slow["scaling"]["parallel_fraction"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    // Year 5: 2.5 h x 1.3^5 = 9.3 h, its band (one size: +50 %) 13.9 h: 3 windows of 6 h.
    assert_eq!(
        slow["recommendation"],
        "scale out: about 3x this machine by the last year (a cluster engine such as Spark)"
    );
    let year5 = &slow["projections"][5];
    let central = year5["runtime_seconds"].as_f64().unwrap();
    assert!(
        (central - 2.5 * 3600.0 * 1.3f64.powi(5)).abs() < 1.0,
        "{year5}"
    );
    assert!((year5["runtime_high"].as_f64().unwrap() - 1.5 * central).abs() < 1.0);
    let demo = pipeline("demo");
    let warnings = demo["warnings"].to_string();
    assert!(
        warnings.contains("small production run") && warnings.contains("core scaling not measured"),
        "{warnings}"
    );
    assert!(
        pipeline("doomed")["recommendation"]
            .as_str()
            .unwrap()
            .starts_with("bound memory")
    );
    assert_eq!(
        pipeline("doomed")["verdict"],
        "exceeds the machine's memory today"
    );
    let html = std::fs::read_to_string(root.join("reports/audit/audit.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("CRITICAL"));
    let md = std::fs::read_to_string(root.join("reports/audit/audit.md")).unwrap();
    assert!(md.contains("| slow | CPU"));
    assert!(md.contains("recommendation") && md.contains("Read before planning"));
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_audit")),
        &[],
    );
}
