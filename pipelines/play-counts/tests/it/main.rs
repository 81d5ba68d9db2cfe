//! Integration tests of play-counts, run in-process on small hand-written days whose right
//! answers are known by construction. (The large-scale comparison with DuckDB lives in
//! tests/e2e/play_counts_vs_duckdb.py.)

mod charts;
mod inputs;
mod kafka;

use std::path::Path;

use arrow::record_batch::RecordBatch;
use clap::Parser;
use play_counts::{Args, Outcome, run};
use streampulse_core::run_record::RunMeter;

pub const HEADER: &str = "play_id,user_id,session_id,song_id,artist_id,album_id,played_at,ms_played,track_ms,platform,country,source,shuffle,offline,client_version\n";

/// One CSV line: `user` plays `song` (artist = song * 10) at `ts` for `ms` milliseconds in `country`.
pub fn play(id: u64, user: i64, song: i64, ts: &str, ms: i32, country: &str) -> String {
    format!(
        "{id},{user},s{user},{song},{},1,{ts},{ms},200000,ios,{country},playlist,false,false,8.9.1\n",
        song * 10
    )
}

/// `n` distinct users (from `first_user`) each streaming `song` once on `date` in `country`.
pub fn listeners(
    lines: &mut String,
    date: &str,
    song: i64,
    first_user: i64,
    n: i64,
    country: &str,
) {
    for u in first_user..first_user + n {
        lines.push_str(&play(
            lines.len() as u64,
            u,
            song,
            &format!("{date}T12:00:00.000Z"),
            40_000,
            country,
        ));
    }
}

pub async fn run_day(
    root: &Path,
    date: &str,
    csv_body: &str,
    extra: &[&str],
) -> Result<Outcome, play_counts::Error> {
    let input = root.join(format!("plays-{date}.csv"));
    std::fs::write(&input, format!("{HEADER}{csv_body}")).unwrap();
    let mut argv = vec![
        "play-counts".to_string(),
        "--date".into(),
        date.into(),
        "--data-root".into(),
        root.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--threads".into(),
        "2".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cfg = Args::try_parse_from(argv).unwrap().validate().unwrap();
    let mut meter = RunMeter::start("play-counts", date);
    run(&cfg, &mut meter).await
}

pub fn read(root: &Path, dataset: &str, date: &str) -> Vec<RecordBatch> {
    let dir = root.join(dataset).join(format!("date={date}"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1 << 20).unwrap();
        out.extend(reader.map(|b| b.unwrap()));
    }
    out
}

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        Path::new(env!("CARGO_BIN_EXE_play-counts")),
        &[],
    );
}
