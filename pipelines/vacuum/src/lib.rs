//! `vacuum`: the maintenance a data root of Delta tables needs (`--table-format delta`). Each
//! publish replaces a partition by a commit that removes its old files from the table but not
//! from storage (readers of older versions, time travel, still need them), and a run that dies
//! before its commit leaves uploads that no commit names. `vacuum` deletes, in every Delta table
//! of the root (or the `--dataset`s named), the files that no version younger than
//! `--retention-hours` needs: the removed files, and the files no commit names. Versions older
//! than the retention can no longer be read afterwards.
//!
//! Schedule it daily or weekly, after the nightly runs (the DAG's `vacuum` task); the retention
//! must be longer than the longest read of the tables (default: Delta's own 7 days). Small files
//! (play-ingest's flushes) are not compacted here: the next full publish of a partition
//! replaces them, and compaction is left to the table's readers' engines (Spark's `OPTIMIZE`).

use streampulse_core::config::{CommonArgs, CommonConfig};
use streampulse_core::exit::EXIT_CODES_HELP;
use streampulse_core::run_record::RunMeter;

pub const PIPELINE: &str = "vacuum";

pub use streampulse_core::error::PipelineError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The shortest retention without `--force`: longer than any writer takes from putting its
/// files into a table to committing them (seconds: the files are put, then committed at once).
pub const MIN_RETENTION_HOURS: u64 = 1;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Deletes the files of the data root's Delta tables that no recent version needs", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// Keep every file a version younger than this needs (hours). Readers of older versions
    /// (time travel, a long query started before) lose their files.
    #[arg(long, env = "SP_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u64,

    /// The datasets to vacuum (default: every Delta table directly under the data root).
    #[arg(long = "dataset", env = "SP_DATASETS", value_delimiter = ',')]
    pub datasets: Vec<String>,

    /// Count what would be deleted, delete nothing.
    #[arg(long, env = "SP_DRY_RUN")]
    pub dry_run: bool,

    /// Allow a retention below 1 hour. A file no commit names yet may be a running writer's,
    /// put into the table moments before its commit: vacuumed, that commit names a file that is
    /// gone and the table fails every read. Use it only when nothing writes to the root.
    #[arg(long, env = "SP_FORCE")]
    pub force: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub retention: std::time::Duration,
    pub datasets: Vec<String>,
    pub dry_run: bool,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        if self
            .datasets
            .iter()
            .any(|d| d.is_empty() || d.contains(".."))
        {
            return Err(Error::Config(format!(
                "--dataset {:?}: a dataset is a directory name under the data root",
                self.datasets
            )));
        }
        if self.retention_hours < MIN_RETENTION_HOURS && !self.force {
            return Err(Error::Config(format!(
                "--retention-hours {}: below {MIN_RETENTION_HOURS} hour it can delete the files \
                 of a commit being made (a writer's uploads, not yet named by the log); give \
                 --force if nothing writes to {}",
                self.retention_hours, self.common.data_root
            )));
        }
        Ok(Config {
            retention: std::time::Duration::from_secs(self.retention_hours * 3600),
            datasets: self.datasets.clone(),
            dry_run: self.dry_run,
            common: self.common.validate()?,
        })
    }
}

/// What a run did, per table.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub dry_run: bool,
    pub tables: Vec<streampulse_core::commit::delta::Vacuumed>,
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let root = &cfg.common.data_root;
    let datasets = if cfg.datasets.is_empty() {
        let mut tables = Vec::new();
        for dir in root.list_dirs("").await? {
            if root.is_delta_table(&dir).await? {
                tables.push(dir);
            }
        }
        tables
    } else {
        for d in &cfg.datasets {
            if !root.is_delta_table(d).await? {
                return Err(Error::Config(format!(
                    "--dataset {d}: {} holds no Delta table",
                    root.display()
                )));
            }
        }
        cfg.datasets.clone()
    };
    let mut tables = Vec::with_capacity(datasets.len());
    for dataset in &datasets {
        let Some(done) =
            streampulse_core::commit::delta::vacuum(root, dataset, cfg.retention, cfg.dry_run)
                .await?
        else {
            continue;
        };
        tracing::info!(
            table = %done.table,
            files = done.files_deleted,
            dry_run = cfg.dry_run,
            "vacuumed"
        );
        meter.rows_out += done.files_deleted as u64;
        tables.push(done);
    }
    meter.set("tables", tables.len() as u64);
    Ok(Outcome {
        dry_run: cfg.dry_run,
        tables,
    })
}

// Not a job of one logical date: its run records are named "latest".
streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |_cfg| String::from("latest")
);
