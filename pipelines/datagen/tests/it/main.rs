//! Integration tests of datagen: the command line, and the generator's determinism through the
//! binary (the same seed gives the same bytes).

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        std::path::Path::new(env!("CARGO_BIN_EXE_datagen")),
        &[],
    );
}

fn files(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(
        dir: &std::path::Path,
        root: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.starts_with("runs") {
                continue; // run records carry timings
            } else if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn datagen(root: &std::path::Path, seed: &str) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_datagen"))
        .args([
            "--date",
            "2026-11-26",
            "--seed",
            seed,
            "--plays",
            "3000",
            "--users",
            "300",
        ])
        .args([
            "--songs",
            "200",
            "--experiment-users",
            "100",
            "--bad-rows",
            "0.01",
            "--threads",
            "2",
        ])
        .arg("--data-root")
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The same seed gives the same bytes in every dataset; another seed, other data.
#[test]
fn a_seed_gives_the_same_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    datagen(a.path(), "7");
    datagen(b.path(), "7");
    datagen(c.path(), "8");
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert!(
        fa.len() >= 7,
        "every dataset is written: {:?}",
        fa.keys().collect::<Vec<_>>()
    );
    assert!(fa == fb, "same seed, same bytes");
    let export = "exports/plays-2026-11-26.csv";
    assert!(fa[export] != fc[export], "another seed, another day");
}

/// The export of day D carries late plays of the evening before, as real exports do; the plays
/// partition `date=D` holds plays of D only (as play-ingest files them): a reader of the
/// partition never counts yesterday's plays.
#[test]
fn the_plays_partition_holds_its_day_only() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMillisecondType;
    let root = tempfile::tempdir().unwrap();
    datagen(root.path(), "7");
    let export = std::fs::read_to_string(root.path().join("exports/plays-2026-11-26.csv")).unwrap();
    let late = export.matches(",2026-11-25T").count();
    assert!(late > 0, "the export carries late plays");

    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    let start = day
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let end = start + 86_400_000;
    let (mut rows, mut outside) = (0usize, 0usize);
    let dir = root.path().join("plays/date=2026-11-26");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let played_at = batch
                .column_by_name("played_at")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>();
            rows += played_at.len() - played_at.null_count();
            outside += played_at
                .iter()
                .flatten()
                .filter(|&t| t < start || t >= end)
                .count();
        }
    }
    assert!(rows > 0);
    assert_eq!(outside, 0, "{outside} of {rows} plays outside 2026-11-26");
}
