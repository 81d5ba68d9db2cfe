//! `audit`: the capacity report, from measurements. Reads the run records every pipeline writes
//! (`<root>/runs/<pipeline>/*.json`), and per pipeline reports its bottleneck, data size, runtime
//! and peak memory, projects them at `--growth` a year for `--years` years against a target
//! machine and batch window, and grades the risk.
//!
//! Projections come from the runs themselves, and the report says how each was made:
//!
//! * the **baseline** is the largest successful run measured (production or calibration) at the
//!   highest thread count measured, and the report names it; a baseline under a million rows is
//!   flagged, since the projection then starts from a demo's size, not production's;
//! * with runs at two or more input sizes (at the baseline's threads), runtime and peak memory
//!   are fitted by least squares against rows in (R² and the largest error are reported); with a
//!   single size, runtime is scaled in proportion to the input and memory held at its measured
//!   peak (these pipelines bound memory by `--memory-limit`);
//! * the **band** around each projection is the fit's largest relative error (at least 10 %),
//!   doubled and warned about when the fit is poor (R² under 0.9 or an error over 25 %), and 50 %
//!   from a single size;
//! * **core scaling** is measured, not assumed: runs of the same input at different thread counts
//!   (`--calibrate` reruns its largest scale on one thread) give Amdahl's parallel fraction `p`,
//!   and the target's cores speed the work up by `((1-p) + p/n) / ((1-p) + p/cores)`. Without
//!   such a pair the report assumes no gain beyond the threads measured, and says so;
//! * the **recommendation** follows from the projection: stay, bound memory, add shards
//!   (recommend), optimise the serial share, or scale out.
//!
//! Runs on the Spark engine (`engine = spark` in the record) are audited apart, as a **cluster**
//! ([`audit_cluster`]): their wall fitted against rows in as a fixed cost (session, planning,
//! scheduling) plus a per-row cost on the executor cores the run had (`cluster_cores`), and the
//! executor cores that keep each year's projected day inside the window, assuming the per-row
//! part divides over executor cores (Spark's aggregations are partitioned; the report says so).

pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;

use streampulse_core::config::{ByteSize, CommonArgs, CommonConfig};
use streampulse_core::exit::EXIT_CODES_HELP;
use streampulse_core::location::DataRoot;
use streampulse_core::run_record::{RunMeter, RunRecord};

pub const PIPELINE: &str = "audit";

pub use streampulse_core::error::PipelineError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn parse_hours(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('h')
        .parse()
        .map_err(|_| format!("expected hours like 6h, got {s:?}"))?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err("the window must be positive".into())
    }
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Capacity report from the pipelines' run records", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// Yearly growth of the data.
    #[arg(long, env = "SP_GROWTH", default_value_t = 0.30)]
    pub growth: f64,

    /// Years to project.
    #[arg(long, env = "SP_YEARS", default_value_t = 5)]
    pub years: u32,

    /// Memory of the machine the pipelines must fit on.
    #[arg(long, env = "SP_MACHINE_MEMORY", default_value = "64GiB")]
    pub machine_memory: ByteSize,

    /// Cores of that machine.
    #[arg(long, env = "SP_MACHINE_CORES", default_value_t = 16)]
    pub machine_cores: usize,

    /// The nightly batch window, in hours.
    #[arg(long, env = "SP_BATCH_WINDOW", default_value = "6h", value_parser = parse_hours)]
    pub batch_window: f64,

    /// First measure: generate data at several scales with datagen, run every batch pipeline on
    /// each (the binaries beside this one), and fit the projections on those runs too. The
    /// calibration data and its run records stay under `<data root>/calibration/`.
    #[arg(long, env = "SP_CALIBRATE")]
    pub calibrate: bool,

    /// Plays of the smallest calibration day; users, songs and experiment sizes follow.
    #[arg(long, env = "SP_CALIBRATE_PLAYS", default_value_t = 1_000_000)]
    pub calibrate_plays: u64,

    /// Multiples of `--calibrate-plays` to measure.
    #[arg(
        long,
        env = "SP_CALIBRATE_SCALES",
        value_delimiter = ',',
        default_value = "1,2,4"
    )]
    pub calibrate_scales: Vec<u64>,

    /// Where the report goes (default: `<data root>/reports/audit/`).
    #[arg(long, env = "SP_AUDIT_OUT")]
    pub out_dir: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub calibrate: Option<(u64, Vec<u64>)>,
    pub growth: f64,
    pub years: u32,
    pub machine: Machine,
    pub out_dir: Option<PathBuf>,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        if !(0.0..=10.0).contains(&self.growth) || self.years == 0 || self.machine_cores == 0 {
            return Err(Error::Config(
                "--growth must be within [0, 10], --years and --machine-cores at least 1".into(),
            ));
        }
        if self.calibrate && (self.calibrate_scales.is_empty() || self.calibrate_plays == 0) {
            return Err(Error::Config(
                "--calibrate needs --calibrate-plays and scales".into(),
            ));
        }
        Ok(Config {
            calibrate: self
                .calibrate
                .then(|| (self.calibrate_plays, self.calibrate_scales.clone())),
            growth: self.growth,
            years: self.years,
            machine: Machine {
                memory_bytes: self.machine_memory.0,
                cores: self.machine_cores,
                window_seconds: self.batch_window * 3600.0,
            },
            out_dir: self.out_dir.clone(),
            common: self.common.validate()?,
        })
    }
}

/// The machine and window the pipelines must fit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Machine {
    pub memory_bytes: u64,
    pub cores: usize,
    pub window_seconds: f64,
}

/// `y = intercept + slope x`, least squares.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fit {
    pub intercept: f64,
    pub slope: f64,
    /// Coefficient of determination (1 = the points lie on the line).
    pub r2: f64,
    /// Largest relative error of the fit on the points it was fitted to.
    pub max_rel_error: f64,
    pub points: usize,
}

impl Fit {
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// Least-squares line through `points`; `None` with fewer than two distinct x.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if points.len() < 2 || sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let sse: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let max_rel_error = points
        .iter()
        .map(|p| ((intercept + slope * p.0 - p.1) / p.1.abs().max(1e-12)).abs())
        .fold(0.0, f64::max);
    Some(Fit {
        intercept,
        slope,
        r2: if syy > 0.0 { 1.0 - sse / syy } else { 1.0 },
        max_rel_error,
        points: points.len(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Risk {
    Low,
    High,
    Critical,
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Risk::Low => "LOW",
            Risk::High => "HIGH",
            Risk::Critical => "CRITICAL",
        })
    }
}

/// One year of a projection.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Projection {
    pub year: u32,
    pub rows_in: f64,
    /// On the target machine (scaled from the measured threads to its cores by the measured
    /// parallel fraction, if any), with the band the fit's error allows.
    pub runtime_seconds: f64,
    pub runtime_low: f64,
    pub runtime_high: f64,
    pub peak_memory_bytes: f64,
    pub memory_low: f64,
    pub memory_high: f64,
}

/// Amdahl's law measured from two runs of the same input at different thread counts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scaling {
    /// The share of the work that runs in parallel, in [0, 1].
    pub parallel_fraction: f64,
    /// The thread counts and walls it was measured from.
    pub threads: (usize, usize),
    pub walls: (f64, f64),
}

impl Scaling {
    /// The parallel fraction from wall `ta` on `na` threads and `tb` on `nb` (`na` < `nb`).
    pub fn measure(na: usize, ta: f64, nb: usize, tb: f64) -> Option<Scaling> {
        if na >= nb || ta <= 0.0 || tb <= 0.0 {
            return None;
        }
        // T(n) = T1 ((1 - p) + p / n), so r = T(na) / T(nb) gives p.
        let (r, na_f, nb_f) = (ta / tb, na as f64, nb as f64);
        let denominator = r - 1.0 - r / nb_f + 1.0 / na_f;
        let p = if denominator.abs() < 1e-12 {
            0.0
        } else {
            (r - 1.0) / denominator
        };
        Some(Scaling {
            parallel_fraction: p.clamp(0.0, 1.0),
            threads: (na, nb),
            walls: (ta, tb),
        })
    }

    /// How much faster `to` threads run than `from`.
    pub fn speedup(&self, from: usize, to: usize) -> f64 {
        let p = self.parallel_fraction;
        let t = |n: usize| (1.0 - p) + p / n.max(1) as f64;
        t(from) / t(to)
    }
}

/// Where a projection says the pipeline should go.
pub fn recommendation(
    pipeline: &str,
    projections: &[Projection],
    machine: &Machine,
    scaling: Option<&Scaling>,
) -> String {
    let last = projections.last();
    let memory_over = projections
        .iter()
        .any(|p| p.memory_high > machine.memory_bytes as f64);
    let window_over = last.is_some_and(|p| p.runtime_high > machine.window_seconds);
    let near = last.is_some_and(|p| {
        p.runtime_high > 0.75 * machine.window_seconds
            || p.memory_high > 0.75 * machine.memory_bytes as f64
    });
    let need = last.map_or(1.0, |p| (p.runtime_high / machine.window_seconds).ceil());
    match (memory_over, window_over) {
        (true, _) => {
            "bound memory: a --memory-limit under the machine's RAM (the engine spills)".to_string()
        }
        (false, true) if pipeline == "recommend" => {
            format!("add shards: {need:.0} or more (--shard I/N, users split without a shuffle)")
        }
        (false, true) if scaling.is_some_and(|s| s.parallel_fraction < 0.8) => format!(
            "optimise: {:.0} % of the work is serial, so more cores help little",
            100.0 * (1.0 - scaling.map_or(0.0, |s| s.parallel_fraction))
        ),
        (false, true) => format!(
            "scale out: about {need:.0}x this machine by the last year (a cluster engine such as Spark)"
        ),
        (false, false) if near => "stay, and watch: within 75 % of a limit".to_string(),
        (false, false) => "stay".to_string(),
    }
}

/// The audit of one pipeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineAudit {
    pub pipeline: String,
    pub runs: usize,
    /// The run the projection starts from: the largest measured (see the crate docs).
    pub latest: RunRecord,
    /// Where the baseline run comes from: `production` or `calibration`.
    pub baseline_source: &'static str,
    pub bottleneck: &'static str,
    pub cpu_utilisation: f64,
    pub time_fit: Option<Fit>,
    pub memory_fit: Option<Fit>,
    pub scaling: Option<Scaling>,
    /// How the projection was made, in words.
    pub method: String,
    /// Caveats a planner must read: a poor fit, a small baseline, scaling assumed.
    pub warnings: Vec<String>,
    pub projections: Vec<Projection>,
    pub risk: Risk,
    pub recommendation: String,
    /// When the pipeline first exceeds the machine's memory or the window, or that it never
    /// does within the horizon.
    pub verdict: String,
}

/// What the run was waiting for: memory when its peak is over half the host's RAM, CPU when its
/// threads were busy most of the time, else I/O (reading, writing, waiting on services).
pub fn bottleneck(r: &RunRecord) -> (&'static str, f64) {
    let threads = r.threads.max(1).min(r.host_cores.max(1)) as f64;
    let utilisation = r.cpu_seconds / (r.wall_seconds.max(1e-9) * threads);
    let memory_share = r.peak_rss_bytes as f64 / r.host_memory_bytes.max(1) as f64;
    let b = if memory_share > 0.5 {
        "memory"
    } else if utilisation >= 0.6 {
        "CPU"
    } else {
        "I/O"
    };
    (b, utilisation)
}

/// The size of a run's data: rows in, or rows out for a generator (which reads nothing).
pub fn data_size(r: &RunRecord) -> f64 {
    if r.rows_in > 0 {
        r.rows_in as f64
    } else {
        r.rows_out as f64
    }
}

/// Runs under this many rows make a baseline that the report flags.
const SMALL_BASELINE_ROWS: f64 = 1e6;

/// A fit is poor below this R² or above this largest relative error.
const POOR_R2: f64 = 0.9;
const POOR_ERROR: f64 = 0.25;

/// The band's half-width around a projection, as a share of it: the fit's largest error (at
/// least 10 %), doubled with a warning when the fit is poor, 50 % without a fit.
fn band(f: Option<&Fit>, what: &str, warnings: &mut Vec<String>) -> f64 {
    match f {
        Some(f) if f.r2 < POOR_R2 || f.max_rel_error > POOR_ERROR => {
            warnings.push(format!(
                "the {what} fit is poor (R² {:.2}, largest error {:.0} %): the band is doubled",
                f.r2,
                100.0 * f.max_rel_error
            ));
            2.0 * f.max_rel_error.max(0.1)
        }
        Some(f) => f.max_rel_error.max(0.1),
        None => 0.5,
    }
}

/// True for the runs of a cluster engine, which [`audit_cluster`] audits apart.
pub fn on_cluster(r: &RunRecord) -> bool {
    r.engine == "spark"
}

/// One year of a cluster projection.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ClusterProjection {
    pub year: u32,
    pub rows_in: f64,
    /// On the executor cores measured, with the band.
    pub runtime_seconds: f64,
    pub runtime_high: f64,
    /// Executor cores that keep the band's upper edge inside the window; `None` when the fixed
    /// cost alone does not fit.
    pub cores_needed: Option<u64>,
}

/// A pipeline's runs on the Spark engine, projected onto a cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterAudit {
    pub pipeline: String,
    pub runs: usize,
    /// The executor cores of the runs fitted.
    pub cores_measured: u64,
    pub spark_version: String,
    /// The largest run fitted.
    pub latest: RunRecord,
    pub time_fit: Option<Fit>,
    /// Seconds a run pays whatever its size: the fit's intercept (0 from one size).
    pub fixed_seconds: f64,
    pub method: String,
    pub warnings: Vec<String>,
    pub projections: Vec<ClusterProjection>,
    pub recommendation: String,
}

/// "1 executor core", "4 executor cores".
pub fn executor_cores(n: u64) -> String {
    format!("{n} executor core{}", if n == 1 { "" } else { "s" })
}

/// Executor cores that run `variable` seconds of per-row work (measured on `measured` cores)
/// plus `fixed` seconds inside `window`.
pub fn cores_needed(measured: u64, fixed: f64, variable: f64, window: f64) -> Option<u64> {
    let room = window - fixed;
    if room <= 0.0 {
        return None;
    }
    Some(((measured as f64 * variable.max(0.0) / room).ceil() as u64).max(1))
}

/// Audits a pipeline's successful Spark runs (any order): `None` without one that recorded its
/// cluster's cores.
pub fn audit_cluster(
    name: &str,
    runs: &[RunRecord],
    window_seconds: f64,
    growth: f64,
    years: u32,
) -> Option<ClusterAudit> {
    let cores_of = |r: &RunRecord| {
        r.extra
            .get(streampulse_core::run_record::CLUSTER_CORES)
            .and_then(|v| v.as_u64())
            .filter(|&c| c > 0)
    };
    let ok: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.exit_code == 0 && on_cluster(r) && cores_of(r).is_some())
        .collect();
    let version_of = |r: &RunRecord| {
        r.extra
            .get("spark_version")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string()
    };
    // The cluster of the largest run (its cores and Spark version); runs on other clusters are
    // left out of the fit.
    let latest = (*ok
        .iter()
        .max_by(|a, b| data_size(a).total_cmp(&data_size(b)))?)
    .clone();
    let cores = cores_of(&latest)?;
    let spark_version = version_of(&latest);
    let same: Vec<&RunRecord> = ok
        .into_iter()
        .filter(|r| cores_of(r) == Some(cores) && version_of(r) == spark_version)
        .collect();
    let points: Vec<(f64, f64)> = same
        .iter()
        .map(|r| (data_size(r), r.wall_seconds))
        .collect();
    let base_rows = data_size(&latest);
    // Sizes this close cannot separate the fixed cost from the per-row cost.
    let smallest = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let time_fit = fit(&points).filter(|f| f.slope > 0.0 && base_rows >= 1.5 * smallest);
    let mut warnings = Vec::new();
    if base_rows < SMALL_BASELINE_ROWS {
        warnings.push(format!(
            "the cluster baseline is a small run ({base_rows:.0} rows): its fixed cost dominates, \
             so the per-row cost is uncertain"
        ));
    }
    let time_band = band(time_fit.as_ref(), "cluster runtime", &mut warnings);
    let (fixed, per_row) = match &time_fit {
        Some(f) => (f.intercept.max(0.0), f.slope),
        None => {
            warnings.push(
                "one input size on the cluster (or sizes within 1.5x): runtime scaled in proportion to the input with no \
                 fixed cost, a ±50 % band; run it at more sizes to fit"
                    .to_string(),
            );
            (0.0, latest.wall_seconds / base_rows.max(1.0))
        }
    };
    warnings.push(format!(
        "executor scaling assumed, not measured: the per-row part divides over executor cores \
         (measured on {cores}); shuffles and skew make it less than linear"
    ));
    let projections: Vec<ClusterProjection> = (0..=years)
        .map(|y| {
            let rows = base_rows * (1.0 + growth).powi(y as i32);
            let runtime = fixed + per_row * rows;
            let high = runtime * (1.0 + time_band);
            ClusterProjection {
                year: y,
                rows_in: rows,
                runtime_seconds: runtime,
                runtime_high: high,
                cores_needed: cores_needed(cores, fixed, high - fixed, window_seconds),
            }
        })
        .collect();
    let most = projections.iter().map(|p| p.cores_needed).max().flatten();
    let recommendation = match projections.iter().find(|p| p.cores_needed.is_none()) {
        Some(p) => format!(
            "the fixed cost alone ({fixed:.0} s) misses the window from year {}",
            p.year
        ),
        None => format!(
            "{} keep year {years} inside the window (measured on {cores})",
            executor_cores(most.unwrap_or(1))
        ),
    };
    let method = match &time_fit {
        Some(f) => format!(
            "fitted on {} Spark runs on {cores} executor cores: {fixed:.1} s fixed + {:.3} µs per \
             row (R² {:.3}, largest error {:.0} %)",
            f.points,
            per_row * 1e6,
            f.r2,
            100.0 * f.max_rel_error
        ),
        None => format!(
            "one Spark run on {cores} executor cores: {:.3} µs per row",
            per_row * 1e6
        ),
    };
    Some(ClusterAudit {
        pipeline: name.to_string(),
        runs: same.len(),
        cores_measured: cores,
        spark_version,
        latest,
        time_fit,
        fixed_seconds: fixed,
        method,
        warnings,
        projections,
        recommendation,
    })
}

/// Audits one pipeline from its successful runs (any order).
pub fn audit_pipeline(
    name: &str,
    runs: &[RunRecord],
    calibration: &[RunRecord],
    machine: &Machine,
    growth: f64,
    years: u32,
) -> Option<PipelineAudit> {
    // The machine's projection is from runs on the machine: a cluster's are audited apart.
    let mut ok: Vec<(&RunRecord, &'static str)> = runs
        .iter()
        .filter(|r| r.exit_code == 0 && !on_cluster(r))
        .map(|r| (r, "production"))
        .chain(
            calibration
                .iter()
                .filter(|r| r.exit_code == 0 && !on_cluster(r))
                .map(|r| (r, "calibration")),
        )
        .collect();
    ok.sort_by(|a, b| (&a.0.started_at, &a.0.run_id).cmp(&(&b.0.started_at, &b.0.run_id)));
    // The baseline: the largest run at the most threads measured (the latest of equals).
    let threads = ok.iter().map(|(r, _)| r.threads).max()?;
    let (baseline, baseline_source) = ok
        .iter()
        .filter(|(r, _)| r.threads == threads)
        .max_by(|a, b| data_size(a.0).total_cmp(&data_size(b.0)))
        .map(|(r, s)| ((*r).clone(), *s))?;
    let at_threads: Vec<&RunRecord> = ok
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| r.threads == threads)
        .collect();
    let scaling = measured_scaling(&ok.iter().map(|(r, _)| *r).collect::<Vec<_>>());
    let (bottleneck, utilisation) = bottleneck(&baseline);
    let time_points: Vec<(f64, f64)> = at_threads
        .iter()
        .map(|r| (data_size(r), r.wall_seconds))
        .collect();
    let mem_points: Vec<(f64, f64)> = at_threads
        .iter()
        .map(|r| (data_size(r), r.peak_rss_bytes as f64))
        .collect();
    let (time_fit, memory_fit) = (fit(&time_points), fit(&mem_points));
    let base_rows = data_size(&baseline);
    let speedup = scaling.map_or(1.0, |s| s.speedup(threads, machine.cores));
    let mut warnings = Vec::new();
    if base_rows < SMALL_BASELINE_ROWS {
        warnings.push(format!(
            "the baseline is a small {baseline_source} run ({base_rows:.0} rows): the projection \
             starts from that size, and production's is likely far larger; audit production runs \
             (or calibrate with more --calibrate-plays)"
        ));
    }
    let time_band = band(time_fit.as_ref(), "runtime", &mut warnings);
    let memory_band = band(memory_fit.as_ref(), "memory", &mut warnings);
    let scaling_words = match &scaling {
        Some(s) => format!(
            "cores: measured {:.0} % parallel ({} vs {} threads), so {} cores run {:.2}x faster \
             than {threads}",
            100.0 * s.parallel_fraction,
            s.threads.0,
            s.threads.1,
            machine.cores,
            speedup
        ),
        None => {
            warnings.push(format!(
                "core scaling not measured: the projection assumes no gain beyond the {threads} \
                 threads measured (run --calibrate for an Amdahl fit)"
            ));
            format!("cores: not measured, no gain assumed beyond {threads} threads")
        }
    };
    let sizes = match (&time_fit, &memory_fit) {
        (Some(t), Some(m)) => format!(
            "fitted on {} runs at different input sizes{}: runtime R² {:.3} (largest error {:.0} %), \
             memory R² {:.3} (largest error {:.0} %)",
            t.points,
            if calibration.is_empty() {
                ""
            } else {
                ", calibration included"
            },
            t.r2,
            100.0 * t.max_rel_error,
            m.r2,
            100.0 * m.max_rel_error
        ),
        _ => "one input size measured: runtime scaled with the input, memory held at its measured \
              peak (bounded by --memory-limit), a ±50 % band; run at more scales to fit"
            .to_string(),
    };
    let method = format!(
        "{sizes}; {scaling_words}; baseline: the largest run, {} rows ({} bytes in) of {} ({baseline_source})",
        base_rows, baseline.bytes_in, baseline.logical_date
    );
    let at = |rows: f64| -> (f64, f64) {
        let wall = match &time_fit {
            Some(f) => f.at(rows).max(0.0),
            None => baseline.wall_seconds * rows / base_rows.max(1.0),
        };
        let memory = match &memory_fit {
            Some(f) => f.at(rows).max(0.0),
            None => baseline.peak_rss_bytes as f64,
        };
        (wall / speedup, memory)
    };
    let projections: Vec<Projection> = (0..=years)
        .map(|y| {
            let rows = base_rows * (1.0 + growth).powi(y as i32);
            let (runtime_seconds, peak_memory_bytes) = at(rows);
            Projection {
                year: y,
                rows_in: rows,
                runtime_seconds,
                runtime_low: runtime_seconds * (1.0 - time_band).max(0.0),
                runtime_high: runtime_seconds * (1.0 + time_band),
                peak_memory_bytes,
                memory_low: peak_memory_bytes * (1.0 - memory_band).max(0.0),
                memory_high: peak_memory_bytes * (1.0 + memory_band),
            }
        })
        .collect();
    let exceeds = |p: &Projection| {
        p.peak_memory_bytes > machine.memory_bytes as f64
            || p.runtime_seconds > machine.window_seconds
    };
    let first_over = projections.iter().find(|p| exceeds(p));
    let near = projections.iter().take(2).any(|p| {
        p.peak_memory_bytes > 0.75 * machine.memory_bytes as f64
            || p.runtime_seconds > 0.75 * machine.window_seconds
    });
    // The band's upper edge past a limit is a risk too, not a pass.
    let band_over = projections.iter().find(|p| {
        p.memory_high > machine.memory_bytes as f64 || p.runtime_high > machine.window_seconds
    });
    let risk = match first_over {
        Some(p) if p.year <= 1 => Risk::Critical,
        Some(_) => Risk::High,
        None if near || band_over.is_some() => Risk::High,
        None => Risk::Low,
    };
    let verdict = match (first_over, band_over) {
        (Some(p), _) => {
            let what = if p.peak_memory_bytes > machine.memory_bytes as f64 {
                "exceeds the machine's memory"
            } else {
                "misses the batch window"
            };
            if p.year == 0 {
                format!("{what} today")
            } else {
                format!("{what} in year {}", p.year)
            }
        }
        (None, Some(p)) => format!(
            "fits for all {years} years, but the band's upper edge crosses a limit in year {}",
            p.year
        ),
        (None, None) => format!("fits the machine and the window for all {years} years"),
    };
    let recommendation = recommendation(name, &projections, machine, scaling.as_ref());
    Some(PipelineAudit {
        pipeline: name.to_string(),
        runs: ok.len(),
        latest: baseline,
        baseline_source,
        bottleneck,
        cpu_utilisation: utilisation,
        time_fit,
        memory_fit,
        scaling,
        method,
        warnings,
        projections,
        risk,
        recommendation,
        verdict,
    })
}

/// Amdahl's parallel fraction from the largest input measured at two thread counts (the
/// fewest and the most threads run on it).
fn measured_scaling(runs: &[&RunRecord]) -> Option<Scaling> {
    let mut by_size: BTreeMap<u64, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        by_size.entry(data_size(r) as u64).or_default().push(r);
    }
    by_size.into_values().rev().find_map(|same| {
        let few = same.iter().min_by_key(|r| r.threads)?;
        let many = same.iter().max_by_key(|r| r.threads)?;
        Scaling::measure(
            few.threads,
            few.wall_seconds,
            many.threads,
            many.wall_seconds,
        )
    })
}

/// Every run record under `<root>/<under>runs/` (a local root or an object store), by pipeline;
/// unreadable files are skipped, logged.
pub async fn read_runs(root: &DataRoot, under: &str) -> Result<BTreeMap<String, Vec<RunRecord>>> {
    let mut out: BTreeMap<String, Vec<RunRecord>> = BTreeMap::new();
    let dir = format!("{under}runs");
    let pipelines = root.list_dirs(&dir).await?;
    if pipelines.is_empty() {
        return Err(Error::Core(streampulse_core::Error::InputMissing(format!(
            "no run records under {}/{dir}",
            root.display().trim_end_matches('/')
        ))));
    }
    for name in pipelines.into_iter().filter(|n| n != PIPELINE) {
        for file in root.list_files(&format!("{dir}/{name}")).await? {
            if !file.ends_with(".json") {
                continue;
            }
            let rel = format!("{dir}/{name}/{file}");
            match root
                .read_file(&rel)
                .await
                .map(|b| serde_json::from_slice::<RunRecord>(&b))
            {
                Ok(Ok(r)) => out.entry(name.clone()).or_default().push(r),
                _ => tracing::warn!(file = %rel, "not a run record, skipped"),
            }
        }
    }
    Ok(out)
}

/// The calibration date: any fixed date works, the data is generated for it.
const CALIBRATION_DATE: &str = "2026-11-26";

/// Runs datagen and every batch pipeline at each scale, all writing their run records under
/// `<root>/calibration/runs/`. The binaries are the ones installed beside this one.
fn calibrate(
    root: &std::path::Path,
    common: &CommonConfig,
    plays: u64,
    scales: &[u64],
) -> Result<()> {
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .ok_or_else(|| Error::Config("cannot locate the pipeline binaries".into()))?;
    let calibration = root.join("calibration");
    let threads = common.threads.to_string();
    for &scale in scales {
        let n = plays * scale;
        let data = calibration.join(format!("scale-{scale}"));
        let data_arg = data.display().to_string();
        let mut steps: Vec<(&str, Vec<String>)> = vec![(
            "datagen",
            vec![
                "--plays".into(),
                n.to_string(),
                "--users".into(),
                (n / 10).max(1000).to_string(),
                "--songs".into(),
                (n / 200).max(1000).to_string(),
                "--experiment-users".into(),
                (n / 4).max(1000).to_string(),
            ],
        )];
        for p in ["play-counts", "recommend", "ab-analytics"] {
            steps.push((p, vec![]));
        }
        steps.push((
            "revenue",
            vec!["--month".into(), CALIBRATION_DATE[..7].into()],
        ));
        // Amdahl needs the same input on fewer threads: the largest scale runs again on one
        // (datagen too: it writes the same bytes again).
        let mut passes = vec![threads.clone()];
        if Some(&scale) == scales.iter().max() && common.threads > 1 {
            passes.push("1".to_string());
        }
        for pass_threads in &passes {
            for (binary, extra) in &steps {
                let mut cmd = std::process::Command::new(bin_dir.join(binary));
                if *binary != "revenue" {
                    cmd.args(["--date", CALIBRATION_DATE]);
                }
                cmd.args(extra)
                    .args(["--data-root", &data_arg, "--threads", pass_threads])
                    .arg("--spill-dir")
                    .arg(&common.spill_dir)
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null());
                tracing::info!(binary, scale, plays = n, threads = %pass_threads, "calibration run");
                let status = cmd
                    .status()
                    .map_err(|e| streampulse_core::Error::io(bin_dir.join(binary), e))?;
                if !status.success() {
                    return Err(Error::Core(streampulse_core::Error::Internal(format!(
                        "calibration: {binary} at scale {scale} on {pass_threads} threads exited \
                         with {status}"
                    ))));
                }
            }
        }
        // Gather this scale's run records with the others.
        let from = data.join("runs");
        for entry in std::fs::read_dir(&from)
            .map_err(|e| streampulse_core::Error::io(&from, e))?
            .flatten()
        {
            let to = calibration.join("runs").join(entry.file_name());
            std::fs::create_dir_all(&to).map_err(|e| streampulse_core::Error::io(&to, e))?;
            for f in std::fs::read_dir(entry.path())
                .map_err(|e| streampulse_core::Error::io(entry.path(), e))?
                .flatten()
            {
                std::fs::rename(f.path(), to.join(f.file_name()))
                    .map_err(|e| streampulse_core::Error::io(f.path(), e))?;
            }
        }
        // The generated data is only needed for the runs.
        std::fs::remove_dir_all(&data).map_err(|e| streampulse_core::Error::io(&data, e))?;
    }
    Ok(())
}

/// What a run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub outputs: Vec<String>,
    pub pipelines: Vec<(String, Risk)>,
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let root = &cfg.common.data_root;
    if let Some((plays, scales)) = &cfg.calibrate {
        let DataRoot::Local(local) = root else {
            return Err(Error::Config(
                "--calibrate runs the pipelines on generated data: it needs a local --data-root"
                    .into(),
            ));
        };
        calibrate(local, &cfg.common, *plays, scales)?;
    }
    let runs = match read_runs(root, "").await {
        Ok(r) => r,
        Err(_) if cfg.calibrate.is_some() => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let calibration = read_runs(root, "calibration/").await.unwrap_or_default();
    let names: std::collections::BTreeSet<&String> =
        runs.keys().chain(calibration.keys()).collect();
    let none = Vec::new();
    let audits: Vec<PipelineAudit> = names
        .into_iter()
        .filter_map(|name| {
            audit_pipeline(
                name,
                runs.get(name).unwrap_or(&none),
                calibration.get(name).unwrap_or(&none),
                &cfg.machine,
                cfg.growth,
                cfg.years,
            )
        })
        .collect();
    let clusters: Vec<ClusterAudit> = runs
        .iter()
        .filter_map(|(name, r)| {
            audit_cluster(name, r, cfg.machine.window_seconds, cfg.growth, cfg.years)
        })
        .collect();
    meter.rows_in = runs.values().map(|r| r.len() as u64).sum();
    meter.rows_out = audits.len() as u64;
    meter.engine = "none".into();
    let doc = report::Document {
        growth: cfg.growth,
        years: cfg.years,
        machine: cfg.machine,
        pipelines: audits,
        clusters,
    };
    let mut outputs = Vec::new();
    for (name, bytes) in [
        ("audit.md", report::markdown(&doc).into_bytes()),
        ("audit.html", report::html(&doc).into_bytes()),
        (
            "audit.json",
            report::json(&doc).map_err(streampulse_core::Error::from)?,
        ),
    ] {
        // --out-dir is a local directory; by default the report goes beside the data, wherever
        // the data root is.
        outputs.push(match &cfg.out_dir {
            Some(dir) => {
                let path = dir.join(name);
                streampulse_core::location::write_atomic(&path, &bytes)?;
                path.display().to_string()
            }
            None => {
                root.put_file(&format!("reports/audit/{name}"), &bytes)
                    .await?
            }
        });
    }
    print!("{}", report::markdown(&doc));
    Ok(Outcome {
        outputs,
        pipelines: doc
            .pipelines
            .iter()
            .map(|p| (p.pipeline.clone(), p.risk))
            .collect(),
    })
}

// Not a job of one logical date: its run records are named "latest".
streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |_cfg| String::from("latest")
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amdahl_recovers_the_parallel_fraction() {
        // p = 0.9: T(1) = 1, T(2) = 0.1 + 0.45 = 0.55, T(16) = 0.1 + 0.05625.
        let s = Scaling::measure(1, 1.0, 2, 0.55).unwrap();
        assert!((s.parallel_fraction - 0.9).abs() < 1e-9, "{s:?}");
        assert!((s.speedup(1, 16) - 1.0 / 0.15625).abs() < 1e-9);
        assert!((s.speedup(2, 16) - 0.55 / 0.15625).abs() < 1e-9);
        // Slower on more threads: nothing runs in parallel.
        assert_eq!(
            Scaling::measure(1, 1.0, 2, 1.2).unwrap().parallel_fraction,
            0.0
        );
        assert!(Scaling::measure(2, 1.0, 2, 1.0).is_none());
    }

    /// A fit that explains the runs gets a band of its largest error (at least 10 %) and no
    /// warning; a poor one (R² under 0.9, or an error over 25 %) a doubled band and a warning
    /// that says why; no fit at all ±50 %.
    #[test]
    fn a_poor_fit_widens_the_band_and_says_so() {
        let good = fit(&[(1.0, 2.0), (2.0, 4.1), (4.0, 7.9)]).unwrap();
        let mut warnings = Vec::new();
        let b = band(Some(&good), "runtime", &mut warnings);
        assert!((b - good.max_rel_error.max(0.1)).abs() < 1e-12, "{good:?}");
        assert!(warnings.is_empty(), "{warnings:?}");

        let scattered = fit(&[(1.0, 1.0), (2.0, 5.0), (3.0, 2.0), (4.0, 8.0)]).unwrap();
        assert!(scattered.r2 < POOR_R2, "{scattered:?}");
        let b = band(Some(&scattered), "runtime", &mut warnings);
        assert!((b - 2.0 * scattered.max_rel_error.max(0.1)).abs() < 1e-12);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("runtime fit is poor") && warnings[0].contains("doubled"),
            "{warnings:?}"
        );

        // A line through the points but one far off in relative terms: R² high, error large.
        let skewed = Fit {
            intercept: 0.0,
            slope: 1.0,
            r2: 0.99,
            max_rel_error: 0.4,
            points: 3,
        };
        assert!((band(Some(&skewed), "memory", &mut warnings) - 0.8).abs() < 1e-12);
        assert!(warnings[1].contains("memory fit is poor"), "{warnings:?}");
        assert_eq!(band(None, "runtime", &mut warnings), 0.5);
        assert_eq!(warnings.len(), 2);
    }

    fn spark_run(rows: u64, wall: f64, cores: u64) -> RunRecord {
        let mut meter = RunMeter::start("play-counts", "2026-11-26");
        meter.engine = "spark".into();
        meter.rows_in = rows;
        meter.set(streampulse_core::run_record::CLUSTER_CORES, cores);
        meter.set("spark_version", "4.3.0");
        let mut r = meter.finish(0, None);
        r.wall_seconds = wall;
        r
    }

    #[test]
    fn a_cluster_is_sized_from_its_fixed_and_per_row_cost() {
        // 20 s fixed + 2 µs a row on 2 cores: 1 M rows 22 s, 4 M rows 28 s.
        let runs = [
            spark_run(1_000_000, 22.0, 2),
            spark_run(4_000_000, 28.0, 2),
            // Another cluster's run is left out of the fit.
            spark_run(2_000_000, 99.0, 8),
        ];
        let window = 100.0;
        let a = audit_cluster("play-counts", &runs, window, 1.0, 3).unwrap();
        assert_eq!((a.cores_measured, a.runs), (2, 2));
        assert!((a.fixed_seconds - 20.0).abs() < 1e-6, "{a:?}");
        assert_eq!(a.spark_version, "4.3.0");
        // Year 3: 32 M rows, 20 s + 64 s on 2 cores; the band's edge (+10 %) leaves 72.4 s of
        // per-row work for 80 s of room: 2 cores.
        let y3 = a.projections[3];
        assert!((y3.rows_in - 32e6).abs() < 1.0);
        assert!((y3.runtime_seconds - 84.0).abs() < 1e-6, "{y3:?}");
        let high = 84.0 * 1.1;
        assert_eq!(
            y3.cores_needed,
            Some((2.0 * (high - 20.0) / 80.0_f64).ceil() as u64)
        );
        assert!(
            a.recommendation.contains("executor cores"),
            "{}",
            a.recommendation
        );
        // Machine runs are not the cluster's, and a run without its cores says nothing.
        let mut embedded = spark_run(1_000_000, 1.0, 2);
        embedded.engine = "datafusion".into();
        let mut unknown = spark_run(1_000_000, 1.0, 2);
        unknown.extra.clear();
        assert!(
            audit_cluster("play-counts", &[embedded.clone(), unknown], window, 0.3, 5).is_none()
        );
        let m = Machine {
            memory_bytes: 1 << 36,
            cores: 16,
            window_seconds: window,
        };
        assert!(audit_pipeline("play-counts", &runs, &[], &m, 0.3, 5).is_none());
        assert!(audit_pipeline("play-counts", &[embedded], &[], &m, 0.3, 5).is_some());
    }

    #[test]
    fn cores_scale_the_per_row_part_only() {
        assert_eq!(cores_needed(2, 20.0, 160.0, 100.0), Some(4));
        assert_eq!(cores_needed(2, 20.0, 1.0, 100.0), Some(1));
        assert_eq!(cores_needed(2, 120.0, 1.0, 100.0), None);
    }

    #[test]
    fn the_fit_recovers_a_line_and_reports_its_quality() {
        let f = fit(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 1.0).abs() < 1e-12);
        assert!((f.r2 - 1.0).abs() < 1e-12 && f.max_rel_error < 1e-12);
        assert!(fit(&[(1.0, 3.0), (1.0, 4.0)]).is_none());
    }
}
