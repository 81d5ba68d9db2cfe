//! Integration tests of vacuum on Delta tables published by the core's commit, as every pipeline
//! publishes with `--table-format delta`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Parser;
use streampulse_core::commit;
use streampulse_core::config::TableFormat;
use streampulse_core::location::{DataRoot, Partition};
use streampulse_core::output::StagedPartition;
use streampulse_core::run_record::RunMeter;
use vacuum::{Args, run};

const DAY: &str = "2026-11-26";

fn write_parquet(path: &Path, rows: i64) {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from_iter_values(0..rows))],
    )
    .unwrap();
    streampulse_testkit::files::write_parquet(path, &[batch]);
}

async fn publish(root: &DataRoot, scratch: &Path, dataset: &str, rows: i64) {
    let dir = scratch.join(format!("{dataset}-{rows}"));
    std::fs::create_dir_all(&dir).unwrap();
    write_parquet(&dir.join("part-0.parquet"), rows);
    let partition = Partition::parse(&format!("date={DAY}")).unwrap();
    let staged = StagedPartition::from_dir(dataset, partition, dir).unwrap();
    commit::publish(root, TableFormat::Delta, vec![staged])
        .await
        .unwrap();
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

async fn vacuum(root: &Path, extra: &[&str]) -> Result<vacuum::Outcome, vacuum::Error> {
    let mut argv = vec!["vacuum", "--data-root", root.to_str().unwrap()];
    argv.extend_from_slice(extra);
    let cfg = Args::parse_from(argv).validate()?;
    run(&cfg, &mut RunMeter::start("vacuum", "latest")).await
}

#[tokio::test]
async fn vacuum_removes_what_no_recent_version_needs_and_nothing_younger() {
    let tmp = tempfile::tempdir().unwrap();
    let (root_dir, scratch) = (tmp.path().join("root"), tmp.path().join("scratch"));
    let root = DataRoot::parse(root_dir.to_str().unwrap()).unwrap();
    for rows in [3, 4] {
        publish(&root, &scratch, "daily_song_counts", rows).await;
    }
    publish(&root, &scratch, "charts", 5).await;
    // A plain dataset beside the tables is no table: left alone.
    std::fs::create_dir_all(root_dir.join("exports")).unwrap();
    std::fs::write(root_dir.join("exports/plays.csv"), "x").unwrap();
    // A run that died after its upload, before its commit.
    let part = root_dir.join(format!("daily_song_counts/date={DAY}"));
    write_parquet(
        &part.join("part-0.sp20261126000000000000001000001.parquet"),
        9,
    );
    assert_eq!(files(&part), 3);

    // The default retention (7 days) keeps everything this young.
    let kept = vacuum(&root_dir, &[]).await.unwrap();
    assert_eq!(
        kept.tables.len(),
        2,
        "both tables, not the exports: {kept:?}"
    );
    assert!(kept.tables.iter().all(|t| t.files_deleted == 0), "{kept:?}");
    assert_eq!(files(&part), 3);

    let dry = vacuum(
        &root_dir,
        &[
            "--retention-hours",
            "0",
            "--force",
            "--dry-run",
            "--dataset",
            "daily_song_counts",
        ],
    )
    .await
    .unwrap();
    assert_eq!(dry.tables.len(), 1);
    assert_eq!(dry.tables[0].files_deleted, 2, "{dry:?}");
    assert_eq!(files(&part), 3, "a dry run deletes nothing");

    // Below an hour a writer's files put moments before its commit could go: refused (64)
    // unless forced, and nothing deleted.
    let err = usage_error(vacuum(&root_dir, &["--retention-hours", "0"]).await);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(files(&part), 3);

    let done = vacuum(&root_dir, &["--retention-hours", "0", "--force"])
        .await
        .unwrap();
    let deleted: usize = done.tables.iter().map(|t| t.files_deleted).sum();
    assert_eq!(
        deleted, 2,
        "the replaced file and the dead upload: {done:?}"
    );
    assert_eq!(files(&part), 1, "the committed file stays");
    assert!(root_dir.join("exports/plays.csv").exists());

    usage_error(vacuum(&root_dir, &["--dataset", "exports"]).await);
}

/// The error of a run that must fail with a usage error (64), as text.
fn usage_error(run: Result<vacuum::Outcome, vacuum::Error>) -> String {
    let err = run.unwrap_err();
    assert_eq!(
        streampulse_core::runner::ExitStatus::exit_code(&err),
        streampulse_core::exit::ExitCode::Usage,
        "{err}"
    );
    err.to_string()
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_vacuum")),
        &[],
    );
}

/// The binary's exit codes: 0 on a root with no table (nothing to do), 64 for a dataset that is
/// no table and for a bad flag.
#[test]
fn the_binary_exits_by_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("plain/date=2026-11-26")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vacuum"))
            .args(["--data-root", tmp.path().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(run(&[]).status.code(), Some(0), "no table: nothing to do");
    assert_eq!(run(&["--dataset", "plain"]).status.code(), Some(64));
    assert_eq!(run(&["--retention-hours", "x"]).status.code(), Some(64));
}
