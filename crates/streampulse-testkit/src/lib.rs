//! Seeded generators of realistic StreamPulse data, at any scale, with bounded memory. The
//! `datagen` binary is a thin shell over [`generate`]; tests call it directly.
//!
//! ```no_run
//! use streampulse_testkit::{GenConfig, generate};
//! let cfg = GenConfig { plays: 100_000, bad_rows: 0.001, ..GenConfig::demo() };
//! let summary = generate(&cfg, std::path::Path::new("./data")).unwrap();
//! println!("{} plays, {} bad rows", summary.plays, summary.bad_rows);
//! ```

pub mod alias;
pub mod catalog;
pub mod cli;
pub mod dims;
pub mod files;
pub mod golden;
pub mod kafka;
pub mod others;
pub mod pg;
pub mod plays;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use streampulse_core::location::temp_sibling;
use streampulse_core::{Error, Result};

use crate::catalog::Catalog;
use crate::plays::{PlaysModel, PlaysSpec};

/// Which datasets to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dataset {
    PlaysCsv,
    PlaysParquet,
    Songs,
    SongEmbeddings,
    UserFeatures,
    Subscriptions,
    Experiments,
}

impl Dataset {
    pub const ALL: [Dataset; 7] = [
        Dataset::PlaysCsv,
        Dataset::PlaysParquet,
        Dataset::Songs,
        Dataset::SongEmbeddings,
        Dataset::UserFeatures,
        Dataset::Subscriptions,
        Dataset::Experiments,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "plays-csv" => Dataset::PlaysCsv,
            "plays" => Dataset::PlaysParquet,
            "songs" => Dataset::Songs,
            "song_embeddings" => Dataset::SongEmbeddings,
            "user_features" => Dataset::UserFeatures,
            "subscriptions" => Dataset::Subscriptions,
            "experiments" => Dataset::Experiments,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct GenConfig {
    pub date: NaiveDate,
    pub seed: u64,
    pub plays: u64,
    pub users: u64,
    pub songs: u64,
    /// Users enrolled in each experiment.
    pub experiment_users: u64,
    pub bad_rows: f64,
    pub late_share: f64,
    pub datasets: Vec<Dataset>,
}

impl GenConfig {
    /// A small day for demos and tests: 200 k plays, 20 k users, 5 k songs.
    pub fn demo() -> Self {
        GenConfig {
            date: NaiveDate::from_ymd_opt(2026, 11, 26).unwrap_or_default(),
            seed: 42,
            plays: 200_000,
            users: 20_000,
            songs: 5_000,
            experiment_users: 10_000,
            bad_rows: 0.0,
            late_share: 0.002,
            datasets: Dataset::ALL.to_vec(),
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GenSummary {
    pub plays: u64,
    pub bad_rows: u64,
    pub late_plays: u64,
    pub csv_bytes: u64,
    pub files: Vec<PathBuf>,
}

/// A local TCP port nobody listens on (the OS picked it free a moment ago): for a broker or
/// server a test starts, or for a test of what happens when nothing answers.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

/// The path of the CSV export of `date` under `root` (where play-counts looks without --input).
pub fn export_path(root: &Path, date: NaiveDate) -> PathBuf {
    root.join("exports")
        .join(format!("plays-{}.csv", date.format("%Y-%m-%d")))
}

fn partition_file(root: &Path, dataset: &str, date: NaiveDate) -> PathBuf {
    root.join(dataset)
        .join(format!("date={}", date.format("%Y-%m-%d")))
        .join("part-0.parquet")
}

/// Row groups of 1 M rows, or 64 k for rows of vectors (800 bytes each): a reader holds about a
/// row group of a column at a time, and should not need 800 MB for it.
fn parquet_props(schema: &arrow::datatypes::SchemaRef) -> WriterProperties {
    let wide = schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), arrow::datatypes::DataType::FixedSizeList(..)));
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(if wide { 1 << 16 } else { 1 << 20 }))
        .set_created_by("streampulse-datagen".into())
        .build()
}

/// A Parquet file written through a temporary sibling and renamed when complete.
struct AtomicParquet {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<std::fs::File>,
}

impl AtomicParquet {
    fn create(path: PathBuf, schema: arrow::datatypes::SchemaRef) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = temp_sibling(&path);
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicParquet {
            writer: ArrowWriter::try_new(file, schema.clone(), Some(parquet_props(&schema)))?,
            path,
            tmp,
        })
    }
    fn write(&mut self, b: &RecordBatch) -> Result<()> {
        Ok(self.writer.write(b)?)
    }
    fn finish(self) -> Result<PathBuf> {
        self.writer.close()?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }
}

/// One generated dataset's file, atomically and in the generator's properties (tests that need
/// a file as another tool writes it use [`files::write_parquet`]).
fn write_generated(
    path: PathBuf,
    schema: arrow::datatypes::SchemaRef,
    batches: impl IntoIterator<Item = RecordBatch>,
) -> Result<PathBuf> {
    let mut w = AtomicParquet::create(path, schema)?;
    for b in batches {
        w.write(&b)?;
    }
    w.finish()
}

/// Writes the configured datasets for `cfg.date` under `root` (a local directory), with
/// `progress` called after each chunk of plays with the plays written so far.
pub fn generate_with_progress(
    cfg: &GenConfig,
    root: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenSummary> {
    let mut summary = GenSummary::default();
    let catalog = Arc::new(Catalog::generate(cfg.seed, cfg.songs as usize, cfg.date));
    let model = PlaysModel::new(
        PlaysSpec {
            date: cfg.date,
            seed: cfg.seed,
            plays: cfg.plays,
            users: cfg.users,
            bad_rows: cfg.bad_rows,
            late_share: cfg.late_share,
        },
        catalog.clone(),
    );
    let want = |d: Dataset| cfg.datasets.contains(&d);

    if want(Dataset::PlaysCsv) || want(Dataset::PlaysParquet) {
        write_plays(
            &model,
            cfg,
            root,
            want(Dataset::PlaysCsv),
            want(Dataset::PlaysParquet),
            &mut summary,
            progress,
        )?;
    }
    if want(Dataset::Songs) {
        let schema = streampulse_core::schema::SONGS.clone();
        summary.files.push(write_generated(
            partition_file(root, "songs", cfg.date),
            schema,
            catalog.batches(64 * 1024),
        )?);
    }
    if want(Dataset::SongEmbeddings) {
        let schema = streampulse_core::schema::SONG_EMBEDDINGS.clone();
        let batches = others::song_embeddings(cfg.seed, &catalog, 8192);
        summary.files.push(write_generated(
            partition_file(root, "song_embeddings", cfg.date),
            schema,
            batches,
        )?);
    }
    if want(Dataset::UserFeatures) {
        let schema = streampulse_core::schema::USER_FEATURES.clone();
        let batches = others::user_features(cfg.seed, cfg.users, 8192);
        summary.files.push(write_generated(
            partition_file(root, "user_features", cfg.date),
            schema,
            batches,
        )?);
    }
    if want(Dataset::Subscriptions) {
        let batch = others::subscriptions(cfg.seed, cfg.users, cfg.date, |u| model.home_market(u));
        let schema = batch.schema();
        summary.files.push(write_generated(
            partition_file(root, "subscriptions", cfg.date),
            schema,
            [batch],
        )?);
    }
    if want(Dataset::Experiments) {
        let [e, a, m] = others::experiments(cfg.seed, cfg.users, cfg.experiment_users, cfg.date);
        for (name, b) in [("experiments", e), ("assignments", a), ("user_metrics", m)] {
            let schema = b.schema();
            summary.files.push(write_generated(
                partition_file(root, name, cfg.date),
                schema,
                [b],
            )?);
        }
    }
    Ok(summary)
}

/// [`generate_with_progress`] without a progress callback.
pub fn generate(cfg: &GenConfig, root: &Path) -> Result<GenSummary> {
    generate_with_progress(cfg, root, &|_| {})
}

/// Generates chunks in parallel, a window at a time, while one writer thread appends the previous
/// window to the CSV export and the Parquet partition: memory holds two windows, whatever the day.
fn write_plays(
    model: &PlaysModel,
    cfg: &GenConfig,
    root: &Path,
    csv: bool,
    parquet: bool,
    summary: &mut GenSummary,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let window = 4 * rayon::current_num_threads().max(1);
    let chunks = model.chunks();
    type Produced = (Vec<u8>, Option<arrow::error::Result<RecordBatch>>, u64, u64);
    let (tx, rx) = sync_channel::<Vec<Produced>>(1);
    let csv_path = export_path(root, cfg.date);
    let pq_path = partition_file(root, "plays", cfg.date);
    let day_start = cfg
        .date
        .and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp_millis());

    std::thread::scope(|scope| -> Result<()> {
        let writer = scope.spawn(|| -> Result<(u64, Vec<PathBuf>)> {
            let mut csv_out = match csv {
                true => {
                    let dir = csv_path.parent().unwrap_or(Path::new("."));
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                    let tmp = temp_sibling(&csv_path);
                    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
                    let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
                    w.write_all(streampulse_core::schema::PLAYS_COLUMNS.join(",").as_bytes())
                        .and_then(|_| w.write_all(b"\n"))
                        .map_err(|e| Error::io(&tmp, e))?;
                    Some((w, tmp))
                }
                false => None,
            };
            let mut pq_out = match parquet {
                true => Some(AtomicParquet::create(
                    pq_path.clone(),
                    streampulse_core::schema::PLAYS.clone(),
                )?),
                false => None,
            };
            let mut bytes = 0u64;
            let mut done = 0u64;
            for window in rx {
                for (text, batch, n, _) in window {
                    if let Some((w, tmp)) = csv_out.as_mut() {
                        w.write_all(&text).map_err(|e| Error::io(&*tmp, e))?;
                        bytes += text.len() as u64;
                    }
                    if let (Some(p), Some(b)) = (pq_out.as_mut(), batch) {
                        p.write(&b?)?;
                    }
                    done += n;
                }
                progress(done);
            }
            let mut files = Vec::new();
            if let Some((w, tmp)) = csv_out {
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io(&tmp, e.into_error()))?;
                f.sync_all().map_err(|e| Error::io(&tmp, e))?;
                std::fs::rename(&tmp, &csv_path).map_err(|e| Error::io(&csv_path, e))?;
                files.push(csv_path.clone());
            }
            if let Some(p) = pq_out {
                files.push(p.finish()?);
            }
            Ok((bytes, files))
        });

        for start in (0..chunks).step_by(window) {
            let end = (start + window).min(chunks);
            let produced: Vec<_> = (start..end)
                .into_par_iter()
                .map(|c| {
                    let chunk = model.chunk(c);
                    let mut text = Vec::new();
                    if csv {
                        text.reserve(chunk.len() * 160);
                        chunk.write_csv(&mut text);
                    }
                    let late = chunk.played_at.iter().filter(|&&t| t < day_start).count() as u64;
                    let bad = (chunk.len() - chunk.good_rows()) as u64;
                    // The export carries late plays of the evening before (as real exports do);
                    // the date's partition holds that date only, like play-ingest's.
                    let batch = parquet.then(|| {
                        let batch = chunk.to_batch();
                        let played_at = arrow::compute::cast(
                            batch.column_by_name("played_at").ok_or_else(|| {
                                arrow::error::ArrowError::SchemaError("no played_at".into())
                            })?,
                            &arrow::datatypes::DataType::Int64,
                        )?;
                        let in_day = arrow::compute::kernels::cmp::gt_eq(
                            &played_at,
                            &arrow::array::Int64Array::new_scalar(day_start),
                        )?;
                        arrow::compute::filter_record_batch(&batch, &in_day)
                    });
                    (text, batch, chunk.len() as u64, bad * (1 << 32) + late)
                })
                .collect();
            for (_, _, n, packed) in &produced {
                summary.plays += n;
                summary.bad_rows += packed >> 32;
                summary.late_plays += packed & 0xFFFF_FFFF;
            }
            if tx.send(produced).is_err() {
                break;
            }
        }
        drop(tx);
        let (bytes, files) = writer
            .join()
            .map_err(|_| Error::Internal("the plays writer panicked".into()))??;
        summary.csv_bytes = bytes;
        summary.files.extend(files);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_whatever_the_threads() {
        let cfg = GenConfig {
            plays: 150_000,
            bad_rows: 0.01,
            datasets: vec![Dataset::PlaysCsv],
            ..GenConfig::demo()
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let s1 = generate(&cfg, a.path()).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let s2 = pool.install(|| generate(&cfg, b.path())).unwrap();
        assert_eq!(s1.plays, 150_000);
        assert!(s1.bad_rows > 1000 && s1.bad_rows < 2000, "{}", s1.bad_rows);
        assert!(
            s1.late_plays > 100,
            "late arrivals cross the day boundary: {}",
            s1.late_plays
        );
        let read = |d: &Path| std::fs::read(export_path(d, cfg.date)).unwrap();
        assert_eq!(read(a.path()), read(b.path()));
        assert_eq!(s1.bad_rows, s2.bad_rows);
    }

    #[test]
    fn every_dataset_is_written() {
        let cfg = GenConfig {
            plays: 20_000,
            users: 2_000,
            songs: 500,
            experiment_users: 1_000,
            ..GenConfig::demo()
        };
        let dir = tempfile::tempdir().unwrap();
        let s = generate(&cfg, dir.path()).unwrap();
        assert_eq!(s.files.len(), 9, "{:?}", s.files);
        for f in &s.files {
            assert!(std::fs::metadata(f).unwrap().len() > 0, "{f:?}");
        }
    }
}
