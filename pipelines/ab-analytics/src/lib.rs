//! Pipeline E, `ab-analytics`: experiment statistics from `assignments` and `user_metrics`.
//!
//! For every experiment of the day (or one, `--experiment`): a sample-ratio-mismatch check
//! against the planned weights, and for every metric and treatment against control the means or
//! proportions, the difference and relative lift with confidence intervals, the p-value, CUPED
//! for `minutes_listened`, and Holm and Benjamini-Hochberg adjustments over the experiment's
//! family of comparisons. Optionally winsorized.
//!
//! How it is built:
//! * [`stats`]: every statistic from running sufficient statistics (n, Σy, Σy², Σx, Σx², Σxy),
//!   pinned by unit tests to values printed by SciPy and statsmodels;
//! * [`join`]: one streaming merge join of the two inputs on (experiment, user), folding rows
//!   into those sums as they pass, so memory holds two batches however many users there are;
//!   inputs that are not sorted are sorted by the engine first (spilling within the budget);
//! * [`winsor`]: exact percentile caps in bounded memory (histogram passes over the metrics);
//! * [`analysis`]: the sums of one experiment to the rows of `ab_results`;
//! * [`report`]: the JSON and self-contained HTML report.
//!
//! Outputs: `ab_results/experiment=<id>/` (Parquet, docs/data.md) and
//! `ab_reports/date=<D>/<id>.json` + `<id>.html`.

pub mod analysis;
pub mod columns;
pub mod error;
pub mod input;
pub mod join;
pub mod report;
pub mod stats;
pub mod winsor;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use streampulse_core::config::{BudgetArgs, CommonArgs, CommonConfig, RejectArgs, TableFormatArgs};
use streampulse_core::location::Partition;
use streampulse_core::output::{StagedPartition, write_partition};
use streampulse_core::rejects::{RejectSink, once_sorted};
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::AB_RESULTS;
use streampulse_core::{engine, exit::EXIT_CODES_HELP};

pub use error::{Error, Result};

use crate::analysis::ResultRow;
use crate::input::{Inputs, VariantPlan};
use crate::join::{ExperimentAcc, JoinOutcome};
use crate::report::ExperimentReport;
use crate::winsor::Caps;

pub const PIPELINE: &str = "ab-analytics";

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "A/B experiment statistics: SRM, lifts with CIs, CUPED, adjusted p-values", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The logical date: reads that date's `assignments`, `user_metrics` and `experiments`.
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: NaiveDate,

    /// Analyse only this experiment (default: every experiment in the inputs).
    #[arg(long, env = "SP_EXPERIMENT")]
    pub experiment: Option<String>,

    /// Confidence level of the intervals; `1 - confidence` is also the significance level of the
    /// Holm-adjusted p-values the report highlights.
    #[arg(long, env = "SP_CONFIDENCE", default_value_t = 0.95)]
    pub confidence: f64,

    /// Cap the continuous metrics (and the CUPED covariate) at this percentile of their values
    /// within each experiment, e.g. 99 (default: no capping).
    #[arg(long, env = "SP_WINSORIZE")]
    pub winsorize: Option<f64>,

    /// Flag a sample-ratio mismatch when the chi-square p-value is below this.
    #[arg(long, env = "SP_SRM_THRESHOLD", default_value_t = 0.001)]
    pub srm_threshold: f64,

    /// Explicit `assignments` input (Parquet file or directory). Default: the date's partition.
    #[arg(long, env = "SP_ASSIGNMENTS")]
    pub assignments: Option<PathBuf>,

    /// Explicit `user_metrics` input (Parquet file or directory). Default: the date's partition.
    #[arg(long, env = "SP_USER_METRICS")]
    pub user_metrics: Option<PathBuf>,

    /// Explicit `experiments` plan (Parquet). Default: the date's partition if there is one; without
    /// a plan, variants are weighted equally and the one named `control` is the control.
    #[arg(long, env = "SP_EXPERIMENTS")]
    pub experiments: Option<PathBuf>,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub output: TableFormatArgs,

    #[command(flatten)]
    pub budget: BudgetArgs,

    #[command(flatten)]
    pub rejects: RejectArgs,
}

/// The validated configuration of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub date: NaiveDate,
    pub experiment: Option<String>,
    pub confidence: f64,
    pub winsorize: Option<f64>,
    pub srm_threshold: f64,
    pub assignments: Option<PathBuf>,
    pub user_metrics: Option<PathBuf>,
    pub experiments: Option<PathBuf>,
    /// `--max-reject-share`.
    pub max_reject_share: f64,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        let open_unit = |name: &str, v: f64| {
            if v > 0.0 && v < 1.0 {
                Ok(v)
            } else {
                Err(Error::Config(format!(
                    "{name} must be within (0, 1), got {v}"
                )))
            }
        };
        if let Some(p) = self.winsorize
            && !(p > 0.0 && p < 100.0)
        {
            return Err(Error::Config(format!(
                "--winsorize is a percentile within (0, 100), got {p}"
            )));
        }
        Ok(Config {
            max_reject_share: self.rejects.validate()?,
            date: self.date,
            experiment: self.experiment.clone(),
            confidence: open_unit("--confidence", self.confidence)?,
            winsorize: self.winsorize,
            srm_threshold: open_unit("--srm-threshold", self.srm_threshold)?,
            assignments: self.assignments.clone(),
            user_metrics: self.user_metrics.clone(),
            experiments: self.experiments.clone(),
            common: self
                .common
                .validate_with(&self.budget)?
                .writing(&self.output)?,
        })
    }
}

/// One experiment's headline, for the XCom summary and the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExperimentOutcome {
    pub experiment_id: String,
    pub users: u64,
    pub srm_flagged: bool,
    /// `metric/variant` of the comparisons significant after Holm's adjustment.
    pub significant: Vec<String>,
}

/// What a successful run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub outputs: Vec<String>,
    pub reports: Vec<String>,
    pub rejects: Option<String>,
    pub experiments: Vec<ExperimentOutcome>,
}

/// One pass of the join, on the inputs as they are or sorted by the engine.
#[allow(clippy::too_many_arguments)]
async fn join_inputs(
    ctx: &SessionContext,
    inputs: &Inputs,
    only: Option<&str>,
    sort: bool,
    plans: &BTreeMap<String, Vec<VariantPlan>>,
    caps: &HashMap<String, Caps>,
    rejects: &mut RejectSink,
) -> Result<JoinOutcome> {
    let label = |url: &str| {
        if sort {
            format!("{url} (sorted by experiment_id, user_id)")
        } else {
            url.to_string()
        }
    };
    let (a, m) = tokio::try_join!(
        input::assignments(ctx, &inputs.assignments, only, sort),
        input::user_metrics(ctx, &inputs.user_metrics, only, sort),
    )?;
    join::run(
        (a, label(&inputs.assignments)),
        (m, label(&inputs.user_metrics)),
        plans,
        caps,
        rejects,
    )
    .await
}

/// Whether an experiment id can name its partition (`experiment=<id>`) and its report files
/// (`<id>.json`, `<id>.html`): ASCII letters, digits, `-`, `_` and `.`, starting with a letter or
/// a digit, at most [`MAX_ID_LEN`] characters. Every other character is one that some layer
/// rewrites: the object store percent-encodes `#`, `%`, `*`, `?`, `[`..., Spark and Hive escape
/// `:`, `=`, `'`..., a Delta log stores the value decoded, so the same id would name different
/// directories in the listing, the log and another engine's writer; a leading `.` hides a file.
/// Such an id fails the run (65, naming it) rather than publish a partition no reader finds.
fn check_id(id: &str) -> Result<()> {
    let bad = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    let starts = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if bad.is_some() || !starts || id.len() > MAX_ID_LEN {
        let why = match bad {
            Some(c) => format!("{c:?} is not allowed"),
            None if id.is_empty() => "it is empty".to_string(),
            None if !starts => "it must start with a letter or a digit".to_string(),
            None => format!("it is longer than {MAX_ID_LEN} characters"),
        };
        return Err(Error::Inconsistent(format!(
            "experiment id {id:?} cannot name a partition: {why} (ids are ASCII letters, digits, \
             '-', '_' and '.')"
        )));
    }
    Ok(())
}

/// The longest experiment id: `experiment=<id>` and `<id>.html` stay well inside a file name's
/// 255 bytes.
const MAX_ID_LEN: usize = 200;

/// A variant's statistics and its users without a usable metrics row.
type VariantWithMissing = (analysis::VariantStats, u64);

/// Puts one experiment's variants in report order (control first, then by name: not the plan's
/// row order, so that the same plan written differently gives the same bytes) and compares them.
fn analyse_experiment(
    cfg: &Config,
    exp: &ExperimentAcc,
) -> Result<(Vec<VariantWithMissing>, Vec<ResultRow>)> {
    let mut variants: Vec<&join::VariantAcc> = exp.variants.iter().collect();
    variants.sort_by(|a, b| {
        (!a.plan.is_control, &a.plan.name).cmp(&(!b.plan.is_control, &b.plan.name))
    });
    let names = || {
        variants
            .iter()
            .map(|v| v.plan.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !variants.first().is_some_and(|v| v.plan.is_control) {
        return Err(Error::Inconsistent(format!(
            "experiment {} has no plan in `experiments` and no variant named \"control\" \
             (variants: {}); add its plan",
            exp.id,
            names()
        )));
    }
    if variants.len() < 2 {
        return Err(Error::Inconsistent(format!(
            "experiment {} has no treatment variant (variants: {})",
            exp.id,
            names()
        )));
    }
    let stats: Vec<(analysis::VariantStats, u64)> = variants
        .iter()
        .map(|v| (v.stats(), v.missing_metrics))
        .collect();
    let plain: Vec<analysis::VariantStats> = stats.iter().map(|s| s.0.clone()).collect();
    let rows = analysis::analyse(&plain, cfg.confidence)
        .ok_or_else(|| Error::Internal(format!("experiment {} lost its control", exp.id)))?;
    Ok((stats, rows))
}

/// The rows of `ab_results` for one experiment, in the contract's column order.
fn results_batch(experiment_id: &str, rows: &[ResultRow]) -> Result<RecordBatch> {
    let float = |f: &dyn Fn(&ResultRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|_| experiment_id),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.metric))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.variant.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.comparison.n_control as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.comparison.n_treatment as i64),
        )),
        float(&|r| r.comparison.control_mean),
        float(&|r| r.comparison.treatment_mean),
        float(&|r| r.comparison.diff),
        float(&|r| r.comparison.diff_ci_low),
        float(&|r| r.comparison.diff_ci_high),
        float(&|r| r.comparison.rel_lift),
        float(&|r| r.comparison.rel_ci_low),
        float(&|r| r.comparison.rel_ci_high),
        float(&|r| r.comparison.p_value),
        float(&|r| r.p_holm),
        float(&|r| r.p_bh),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.cuped).collect::<Vec<_>>(),
        )),
        float(&|r| r.srm_p_value),
    ];
    Ok(RecordBatch::try_new(AB_RESULTS.clone(), columns)?)
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let common = &cfg.common;
    let day = Partition::date(cfg.date);
    let date = day.value.clone();
    // Outside the pool: two batches per input in flight and the join's accumulators.
    let pool = engine::pool_bytes(common.budget(), 64 << 20);
    let ctx = engine::session(common, pool)?;
    // One partition per scan: rows reach the join in file order, so inputs written sorted need
    // no sort. The two inputs still decode in parallel, each on its own task.
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .target_partitions = 1;
    meter.engine = "datafusion".into();

    let inputs = input::locate(cfg).await?;
    let only = cfg.experiment.as_deref();
    if let Some(id) = only {
        // The flag's value, not the input's: a usage error.
        check_id(id).map_err(|e| Error::Config(format!("--experiment: {e}")))?;
    }
    tracing::info!(?inputs, experiment = ?only, "inputs");
    let read: Vec<String> = [&inputs.assignments, &inputs.user_metrics]
        .into_iter()
        .chain(inputs.experiments.as_ref())
        .cloned()
        .collect();
    meter.bytes_in = engine::parquet_bytes(&ctx, &read).await?;
    let plans = match &inputs.experiments {
        Some(url) => input::experiment_plans(&ctx, url, only).await?,
        None => {
            tracing::info!("no experiments plan: variants weighted equally, `control` is control");
            BTreeMap::new()
        }
    };
    let caps = match cfg.winsorize {
        Some(p) => {
            winsor::caps(p, || {
                input::continuous_metrics(&ctx, &inputs.user_metrics, only)
            })
            .await?
        }
        None => HashMap::new(),
    };

    let mut rejects = RejectSink::new(&common.data_root, &common.spill_dir, PIPELINE, &day);
    let (joined, sorted) = once_sorted(&mut rejects, async |sorted, rejects: &mut RejectSink| {
        join_inputs(&ctx, &inputs, only, sorted, &plans, &caps, rejects).await
    })
    .await?;
    if sorted {
        meter.set("sorted_inputs", true);
    }
    let rows_in = joined.assignment_rows + joined.metric_rows;
    meter.rows_in = rows_in;
    let rejects_at = rejects.location();
    let rejected = rejects.count();
    meter.rows_rejected = rejected;
    // Published with the results, in the run's commit; alone if the input fails the run.
    let rejects = rejects.stage_checked(rows_in, cfg.max_reject_share).await?;
    if rejected > 0 {
        tracing::warn!(rejected, rejects = %rejects_at, "rows rejected");
    }

    let mut experiments = joined.experiments;
    experiments.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(id) = only
        && experiments.is_empty()
    {
        // The day's assignments are there, without this experiment: no retry will change that
        // (65), unlike a partition that has not arrived yet (66).
        let error = Error::Inconsistent(format!(
            "no assignments of experiment {id} in {}",
            inputs.assignments
        ));
        return Err(
            streampulse_core::commit::fail_with_rejects(&common.data_root, rejects, error).await,
        );
    }
    for id in plans.keys() {
        if !experiments.iter().any(|e| &e.id == id) {
            tracing::warn!(experiment = %id, "planned experiment has no assignments on this date");
        }
    }

    // Everything is computed before anything is published.
    let mut staged: Vec<StagedPartition> = Vec::new();
    let mut reports: Vec<ExperimentReport> = Vec::new();
    for exp in &experiments {
        check_id(&exp.id)?;
        let (variants, rows) = analyse_experiment(cfg, exp)?;
        let report = report::build(
            &exp.id,
            &date,
            cfg.confidence,
            exp.planned,
            cfg.winsorize.map(|p| (p, exp.caps)),
            cfg.srm_threshold,
            &variants,
            &rows,
        );
        let batch = results_batch(&exp.id, &rows)?;
        let stream = streampulse_core::stream::batch_stream(batch);
        staged.push(
            write_partition(
                &common.data_root,
                &common.spill_dir,
                "ab_results",
                &Partition {
                    key: "experiment",
                    value: exp.id.clone(),
                },
                &AB_RESULTS,
                stream,
            )
            .await?,
        );
        reports.push(report);
    }

    let mut outcome = Outcome {
        outputs: Vec::new(),
        reports: Vec::new(),
        rejects: (rejected > 0).then_some(rejects_at),
        experiments: Vec::new(),
    };
    for s in &staged {
        meter.rows_out += s.rows;
        meter.bytes_out += s.bytes;
    }
    staged.push(rejects);
    outcome.outputs =
        streampulse_core::commit::publish(&common.data_root, common.table_format, staged)
            .await?
            .into_iter()
            .filter(|p| !streampulse_core::rejects::is_rejects(&p.dataset))
            .map(|p| p.url.clone())
            .collect();
    for r in &reports {
        let base = format!("ab_reports/{}/{}", day.dir_name(), r.experiment_id);
        let json = report::json(r).map_err(streampulse_core::Error::from)?;
        outcome.reports.push(
            common
                .data_root
                .put_file(&format!("{base}.json"), &json)
                .await?,
        );
        outcome.reports.push(
            common
                .data_root
                .put_file(&format!("{base}.html"), report::html(r).as_bytes())
                .await?,
        );
        let users = r.variants.iter().map(|v| v.assigned).sum();
        let significant: Vec<String> = r
            .results
            .iter()
            .filter(|x| x.significant)
            .map(|x| {
                format!(
                    "{}/{}{}",
                    x.metric,
                    x.variant,
                    if x.cuped { " (cuped)" } else { "" }
                )
            })
            .collect();
        if r.srm.flagged {
            tracing::warn!(
                experiment = %r.experiment_id,
                srm_p_value = r.srm.p_value,
                "sample-ratio mismatch: the traffic split does not match the plan"
            );
        }
        tracing::info!(
            experiment = %r.experiment_id,
            users,
            srm_p_value = r.srm.p_value,
            significant = significant.join(", "),
            "analysed"
        );
        outcome.experiments.push(ExperimentOutcome {
            experiment_id: r.experiment_id.clone(),
            users,
            srm_flagged: r.srm.flagged,
            significant,
        });
    }
    meter.set("experiments", outcome.experiments.len());
    meter.set("pool_bytes", pool);
    Ok(outcome)
}

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.date.format("%Y-%m-%d").to_string()
);
