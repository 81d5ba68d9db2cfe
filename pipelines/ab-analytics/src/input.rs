//! Finding and scanning the inputs: `assignments`, `user_metrics` and (optional) `experiments`
//! for the logical date, read through the embedded engine so local and object-store roots, one
//! file or a partition of many, all read the same way.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Float64Type};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, Expr, SessionContext, cast, col, lit};
use streampulse_core::engine;
use streampulse_core::schema::{ASSIGNMENTS, EXPERIMENTS, USER_METRICS};
use streampulse_core::stream::spawned;

use crate::Config;
use crate::error::{Error, Result};

/// Where each input of one run lives (a file or a directory of Parquet files).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub assignments: String,
    pub user_metrics: String,
    pub experiments: Option<String>,
}

/// The explicit paths if given, else the date's partitions under the data root.
pub async fn locate(cfg: &Config) -> Result<Inputs> {
    let root = &cfg.common.data_root;
    let required = async |explicit: &Option<std::path::PathBuf>, dataset: &str| {
        root.input_or_date_partition(explicit.as_deref(), dataset, cfg.date)
            .await
    };
    Ok(Inputs {
        assignments: required(&cfg.assignments, "assignments").await?,
        user_metrics: required(&cfg.user_metrics, "user_metrics").await?,
        experiments: match &cfg.experiments {
            Some(p) => Some(p.display().to_string()),
            None => root.date_partition("experiments", cfg.date).await?,
        },
    })
}

/// Opens `url` with only `columns` (expressions over the `required` columns, read in the
/// `contract`'s types whoever wrote the file: see `streampulse_core::conform`), restricted to
/// one experiment when `only` is set. A missing column is an input error naming the file.
async fn frame(
    ctx: &SessionContext,
    url: &str,
    contract: &SchemaRef,
    required: &[&str],
    columns: Vec<Expr>,
    only: Option<&str>,
) -> Result<DataFrame> {
    let df = engine::read_parquet(ctx, vec![url.to_string()], contract, required).await?;
    let df = match only {
        Some(id) => df.filter(col("experiment_id").eq(lit(id)))?,
        None => df,
    };
    Ok(df.select(columns)?)
}

fn sorted_by_key(df: DataFrame, sort: bool) -> Result<DataFrame> {
    Ok(if sort {
        df.sort(vec![
            col("experiment_id").sort(true, false),
            col("user_id").sort(true, false),
        ])?
    } else {
        df
    })
}

/// The assignment rows the join reads, in file order or sorted by (experiment, user).
pub async fn assignments(
    ctx: &SessionContext,
    url: &str,
    only: Option<&str>,
    sort: bool,
) -> Result<SendableRecordBatchStream> {
    let df = frame(
        ctx,
        url,
        &ASSIGNMENTS,
        &["experiment_id", "user_id", "variant"],
        vec![
            col("experiment_id"),
            cast(col("user_id"), DataType::Int64).alias("user_id"),
            col("variant"),
        ],
        only,
    )
    .await?;
    Ok(spawned(sorted_by_key(df, sort)?, 4))
}

/// The metric rows, with `sessions` as float64 like the other metrics.
pub async fn user_metrics(
    ctx: &SessionContext,
    url: &str,
    only: Option<&str>,
    sort: bool,
) -> Result<SendableRecordBatchStream> {
    let df = frame(
        ctx,
        url,
        &USER_METRICS,
        &[
            "experiment_id",
            "user_id",
            "minutes_listened",
            "sessions",
            "converted",
            "retained_d7",
            "pre_minutes_listened",
        ],
        vec![
            col("experiment_id"),
            cast(col("user_id"), DataType::Int64).alias("user_id"),
            cast(col("minutes_listened"), DataType::Float64).alias("minutes_listened"),
            cast(col("sessions"), DataType::Float64).alias("sessions"),
            col("converted"),
            col("retained_d7"),
            cast(col("pre_minutes_listened"), DataType::Float64).alias("pre_minutes_listened"),
        ],
        only,
    )
    .await?;
    Ok(spawned(sorted_by_key(df, sort)?, 4))
}

/// The continuous columns winsorization caps, for its percentile passes (any order).
pub async fn continuous_metrics(
    ctx: &SessionContext,
    url: &str,
    only: Option<&str>,
) -> Result<SendableRecordBatchStream> {
    let df = frame(
        ctx,
        url,
        &USER_METRICS,
        &[
            "experiment_id",
            "minutes_listened",
            "sessions",
            "pre_minutes_listened",
        ],
        vec![
            col("experiment_id"),
            cast(col("minutes_listened"), DataType::Float64).alias("minutes_listened"),
            cast(col("sessions"), DataType::Float64).alias("sessions"),
            cast(col("pre_minutes_listened"), DataType::Float64).alias("pre_minutes_listened"),
        ],
        only,
    )
    .await?;
    Ok(spawned(df, 4))
}

/// One configured variant of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantPlan {
    pub name: String,
    pub weight: f64,
    pub is_control: bool,
}

/// The `experiments` table: per experiment its variants, planned weights and control. Small, so
/// read whole; checked here so that a bad plan fails the run before the scan.
pub async fn experiment_plans(
    ctx: &SessionContext,
    url: &str,
    only: Option<&str>,
) -> Result<BTreeMap<String, Vec<VariantPlan>>> {
    let df = frame(
        ctx,
        url,
        &EXPERIMENTS,
        &["experiment_id", "variant", "weight", "is_control"],
        vec![
            col("experiment_id"),
            col("variant"),
            cast(col("weight"), DataType::Float64).alias("weight"),
            col("is_control"),
        ],
        only,
    )
    .await?;
    let mut plans: BTreeMap<String, Vec<VariantPlan>> = BTreeMap::new();
    let mut line = 0u64;
    for batch in df.collect().await? {
        let experiment = crate::columns::StrColumn::new(batch.column(0), "experiment_id")?;
        let variant = crate::columns::StrColumn::new(batch.column(1), "variant")?;
        let weight = batch.column(2).as_primitive::<Float64Type>();
        let control = batch.column(3).as_boolean();
        for i in 0..batch.num_rows() {
            line += 1;
            let bad = |column: &str, reason: String| {
                Error::Core(streampulse_core::Error::Input {
                    file: url.to_string(),
                    line,
                    column: column.to_string(),
                    reason,
                })
            };
            let (Some(e), Some(v)) = (experiment.get(i), variant.get(i)) else {
                return Err(bad("experiment_id", "null experiment or variant".into()));
            };
            let w = if weight.is_valid(i) {
                weight.value(i)
            } else {
                f64::NAN
            };
            if !(w.is_finite() && w > 0.0) {
                return Err(bad(
                    "weight",
                    format!("weight of {e}/{v} must be a positive number, got {w}"),
                ));
            }
            let variants = plans.entry(e.to_string()).or_default();
            if variants.iter().any(|p| p.name == v) {
                return Err(bad("variant", format!("{e}/{v} is listed twice")));
            }
            variants.push(VariantPlan {
                name: v.to_string(),
                weight: w,
                is_control: control.is_valid(i) && control.value(i),
            });
        }
    }
    for (e, variants) in &plans {
        let controls = variants.iter().filter(|v| v.is_control).count();
        if controls != 1 || variants.len() < 2 {
            return Err(Error::Inconsistent(format!(
                "{url}: experiment {e} needs exactly one control and at least one treatment, \
                 it has {controls} control(s) among {} variant(s)",
                variants.len()
            )));
        }
    }
    Ok(plans)
}
