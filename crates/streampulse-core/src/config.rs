//! Command-line conventions shared by every pipeline (README.md, "Conventions shared by all pipelines").
//!
//! Each pipeline flattens [`CommonArgs`] into its own clap `Args`, then turns the whole into a
//! validated config before doing any work. Every flag has an `SP_*` environment fallback because
//! compose and Airflow configure containers through the environment.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::NaiveDate;
use clap::{Args, ValueEnum};

use crate::error::{Error, Result};
use crate::location::DataRoot;

/// Flags every pipeline takes. The budget and the reject threshold are in [`BudgetArgs`] and
/// [`RejectArgs`], which only the pipelines that honour them flatten: no binary offers a flag
/// that does nothing.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Where datasets live: a local path or an object-store URL (s3://bucket/prefix).
    #[arg(long, env = "SP_DATA_ROOT", default_value = "./data")]
    pub data_root: String,

    /// CPU parallelism (default: all cores).
    #[arg(long, env = "SP_THREADS")]
    pub threads: Option<usize>,

    /// Directory for spill and staging files (default: <system temp dir>).
    #[arg(long, env = "SP_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Also write a small run summary to Airflow's XCom file.
    #[arg(long, env = "SP_XCOM")]
    pub xcom: bool,

    /// Where --xcom writes (Airflow's KubernetesPodOperator/DockerOperator convention).
    #[arg(
        long,
        env = "SP_XCOM_PATH",
        default_value = "/airflow/xcom/return.json",
        hide = true
    )]
    pub xcom_path: PathBuf,
}

/// The memory budget, for the pipelines whose engines spill to stay under it.
#[derive(Debug, Clone, Args)]
pub struct BudgetArgs {
    /// Memory budget of the run (e.g. 512MiB, 2GiB). Stages spill to disk to stay under it.
    #[arg(long, env = "SP_MEMORY_LIMIT", default_value = "2GiB")]
    pub memory_limit: ByteSize,
}

impl BudgetArgs {
    pub fn validate(&self) -> Result<ByteSize> {
        if self.memory_limit.0 < 16 << 20 {
            return Err(Error::Config(format!(
                "--memory-limit {} is below the 16MiB minimum",
                self.memory_limit
            )));
        }
        Ok(self.memory_limit)
    }
}

/// The reject threshold, for the pipelines that reject bad input rows.
#[derive(Debug, Clone, Args)]
pub struct RejectArgs {
    /// Share of bad input rows tolerated before the run fails with exit code 65.
    #[arg(long, env = "SP_MAX_REJECT_SHARE", default_value_t = 0.001)]
    pub max_reject_share: f64,
}

impl RejectArgs {
    pub fn validate(&self) -> Result<f64> {
        if !(0.0..=1.0).contains(&self.max_reject_share) {
            return Err(Error::Config(format!(
                "--max-reject-share must be within [0, 1], got {}",
                self.max_reject_share
            )));
        }
        Ok(self.max_reject_share)
    }
}

/// How the datasets a pipeline writes are stored, for the pipelines that write datasets.
#[derive(Debug, Clone, Args)]
pub struct TableFormatArgs {
    /// Table format of the datasets this run writes: `parquet` (Hive-partitioned Parquet files)
    /// or `delta` (Delta Lake tables, each partition replaced in one commit). Inputs are read as
    /// what they are: a dataset with a `_delta_log/` is read through its log either way.
    #[arg(long, env = "SP_TABLE_FORMAT", value_enum, default_value_t = TableFormat::Parquet)]
    pub table_format: TableFormat,
}

/// A dataset's storage (docs/architecture.md, "Table formats").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Hive-partitioned Parquet: published by renames on a local root, behind commit markers on
    /// an object store.
    #[default]
    Parquet,
    /// A Delta Lake table per dataset (the `delta` cargo feature, on by default).
    Delta,
}

impl TableFormatArgs {
    pub fn validate(&self) -> Result<TableFormat> {
        if self.table_format == TableFormat::Delta && !cfg!(feature = "delta") {
            return Err(Error::Config(
                "--table-format delta: this build has no Delta Lake support (the core's `delta` \
                 feature is off)"
                    .into(),
            ));
        }
        Ok(self.table_format)
    }
}

/// The validated form of [`CommonArgs`], with the budget when the pipeline takes one.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub data_root: DataRoot,
    /// `--memory-limit` of a pipeline that flattens [`BudgetArgs`]; `None` for the others.
    pub memory_limit: Option<ByteSize>,
    pub threads: usize,
    /// This run's own spill directory, under `--spill-dir` (see [`crate::commit::spill_area`]).
    pub spill_dir: PathBuf,
    /// `--spill-dir` itself, where the spill of dead runs is swept.
    pub spill_root: PathBuf,
    pub log_format: LogFormat,
    pub xcom_path: Option<PathBuf>,
    /// `--table-format` of a pipeline that writes datasets; plain Parquet for the others.
    pub table_format: TableFormat,
}

impl CommonConfig {
    /// The config of a pipeline that writes datasets: in the table format `format` asks for.
    pub fn writing(mut self, format: &TableFormatArgs) -> Result<Self> {
        self.table_format = format.validate()?;
        Ok(self)
    }

    /// The budget of a pipeline that takes `--memory-limit`; 0 (no budget) otherwise.
    pub fn budget(&self) -> u64 {
        self.memory_limit.map_or(0, |b| b.0)
    }
}

impl CommonArgs {
    pub fn validate(&self) -> Result<CommonConfig> {
        let threads = match self.threads {
            Some(0) => return Err(Error::Config("--threads must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let spill_root = self.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(CommonConfig {
            data_root: DataRoot::parse(&self.data_root)?,
            memory_limit: None,
            threads,
            spill_dir: crate::commit::spill_area(&spill_root)?,
            spill_root,
            log_format: self.log_format,
            xcom_path: self.xcom.then(|| self.xcom_path.clone()),
            table_format: TableFormat::Parquet,
        })
    }

    /// [`CommonArgs::validate`] for a pipeline that also takes the budget.
    pub fn validate_with(&self, budget: &BudgetArgs) -> Result<CommonConfig> {
        let mut cfg = self.validate()?;
        cfg.memory_limit = Some(budget.validate()?);
        Ok(cfg)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (terminals).
    Text,
    /// One JSON object per line (containers, log shippers).
    Json,
}

/// A size in bytes, parsed from `512MiB`, `2GiB`, `1.5GB`, `300000` ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("not a size: {s:?} (try 512MiB or 2GiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        Ok(ByteSize((value * mult as f64).round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of((size / 1024).max(1)) {
                let v = self.0 as f64 / size as f64;
                return if v.fract() == 0.0 {
                    write!(f, "{v:.0}{name}")
                } else {
                    write!(f, "{v:.2}{name}")
                };
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Parses a `YYYY-MM-DD` logical date (clap `value_parser`).
pub fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a YYYY-MM-DD date: {e}"))
}

/// A value that must never reach a log: Debug and Display print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T: FromStr> FromStr for Secret<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        s.parse().map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_binary_and_decimal_units() {
        assert_eq!("2GiB".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert_eq!("1.5GB".parse::<ByteSize>().unwrap().0, 1_500_000_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(256 << 20).to_string(), "256MiB");
    }

    #[test]
    fn secrets_never_print() {
        let s: Secret<String> = "postgres://u:pw@h/db".parse().unwrap();
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "postgres://u:pw@h/db");
    }

    #[test]
    fn dates_must_be_iso() {
        assert!(parse_date("2026-11-26").is_ok());
        assert!(parse_date("26/11/2026").is_err());
    }
}
