//! Typed views of the input batches the pipeline reads row by row.
//!
//! Parquet strings arrive as `Utf8View` (DataFusion's default for Parquet), `Utf8` or `LargeUtf8`
//! depending on the writer and the settings; the join reads all three without copying.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, LargeStringArray,
    StringArray, StringViewArray,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};

/// A string column of any of Arrow's string layouts.
#[derive(Debug, Clone)]
pub enum StrColumn {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
}

impl StrColumn {
    pub fn new(array: &ArrayRef, column: &str) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Utf8 => StrColumn::Utf8(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 => StrColumn::Large(array.as_string::<i64>().clone()),
            DataType::Utf8View => StrColumn::View(array.as_string_view().clone()),
            other => return Err(type_error(column, "a string", other)),
        })
    }

    /// The value at `i`, `None` when null.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&str> {
        match self {
            StrColumn::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

fn type_error(column: &str, expected: &str, found: &DataType) -> Error {
    Error::Inconsistent(format!(
        "column {column} should be {expected}, the input has {found}"
    ))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Inconsistent(format!("column {name} is missing")))
}

fn int64(batch: &RecordBatch, name: &str) -> Result<Int64Array> {
    let a = column(batch, name)?;
    match a.data_type() {
        DataType::Int64 => Ok(a.as_primitive::<Int64Type>().clone()),
        other => Err(type_error(name, "int64", other)),
    }
}

fn float64(batch: &RecordBatch, name: &str) -> Result<Float64Array> {
    let a = column(batch, name)?;
    match a.data_type() {
        DataType::Float64 => Ok(a.as_primitive::<Float64Type>().clone()),
        other => Err(type_error(name, "float64", other)),
    }
}

fn boolean(batch: &RecordBatch, name: &str) -> Result<BooleanArray> {
    let a = column(batch, name)?;
    match a.data_type() {
        DataType::Boolean => Ok(a.as_boolean().clone()),
        other => Err(type_error(name, "boolean", other)),
    }
}

/// The columns of `assignments` the join reads.
#[derive(Debug, Clone)]
pub struct AssignmentRows {
    pub experiment: StrColumn,
    pub user: Int64Array,
    pub variant: StrColumn,
}

impl AssignmentRows {
    pub fn new(batch: &RecordBatch) -> Result<Self> {
        Ok(AssignmentRows {
            experiment: StrColumn::new(column(batch, "experiment_id")?, "experiment_id")?,
            user: int64(batch, "user_id")?,
            variant: StrColumn::new(column(batch, "variant")?, "variant")?,
        })
    }

    #[inline]
    pub fn key(&self, i: usize) -> Option<(&str, i64)> {
        Some((
            self.experiment.get(i)?,
            self.user.is_valid(i).then(|| self.user.value(i))?,
        ))
    }

    /// The row as JSON, for the rejects file.
    pub fn raw(&self, i: usize) -> String {
        serde_json::json!({
            "experiment_id": self.experiment.get(i),
            "user_id": self.user.is_valid(i).then(|| self.user.value(i)),
            "variant": self.variant.get(i),
        })
        .to_string()
    }
}

/// The columns of `user_metrics` the pipeline reads (sessions already cast to float64 by the
/// scan, so every metric is read the same way).
#[derive(Debug, Clone)]
pub struct MetricRows {
    pub experiment: StrColumn,
    pub user: Int64Array,
    pub minutes_listened: Float64Array,
    pub sessions: Float64Array,
    pub converted: BooleanArray,
    pub retained_d7: BooleanArray,
    pub pre_minutes_listened: Float64Array,
}

/// The metric columns in the order of [`crate::analysis::METRICS`], then the covariate.
pub const METRIC_COLUMNS: [&str; 5] = [
    "minutes_listened",
    "sessions",
    "converted",
    "retained_d7",
    "pre_minutes_listened",
];

/// Why a metrics row cannot be used: the column and the reason.
pub type Invalid = (&'static str, &'static str);

impl MetricRows {
    pub fn new(batch: &RecordBatch) -> Result<Self> {
        Ok(MetricRows {
            experiment: StrColumn::new(column(batch, "experiment_id")?, "experiment_id")?,
            user: int64(batch, "user_id")?,
            minutes_listened: float64(batch, "minutes_listened")?,
            sessions: float64(batch, "sessions")?,
            converted: boolean(batch, "converted")?,
            retained_d7: boolean(batch, "retained_d7")?,
            pre_minutes_listened: float64(batch, "pre_minutes_listened")?,
        })
    }

    #[inline]
    pub fn key(&self, i: usize) -> Option<(&str, i64)> {
        Some((
            self.experiment.get(i)?,
            self.user.is_valid(i).then(|| self.user.value(i))?,
        ))
    }

    /// The row's values `[minutes, sessions, converted, retained, pre_minutes]` as numbers, or
    /// the first column that makes the row unusable.
    #[inline]
    pub fn values(&self, i: usize) -> std::result::Result<[f64; 5], Invalid> {
        let amount = |a: &Float64Array, name: &'static str| {
            if a.is_null(i) {
                return Err((name, "null"));
            }
            let v = a.value(i);
            if !v.is_finite() {
                Err((name, "not a finite number"))
            } else if v < 0.0 {
                Err((name, "negative"))
            } else {
                Ok(v)
            }
        };
        let flag = |a: &BooleanArray, name: &'static str| {
            if a.is_null(i) {
                Err((name, "null"))
            } else {
                Ok(f64::from(u8::from(a.value(i))))
            }
        };
        Ok([
            amount(&self.minutes_listened, "minutes_listened")?,
            amount(&self.sessions, "sessions")?,
            flag(&self.converted, "converted")?,
            flag(&self.retained_d7, "retained_d7")?,
            amount(&self.pre_minutes_listened, "pre_minutes_listened")?,
        ])
    }

    pub fn raw(&self, i: usize) -> String {
        let f = |a: &Float64Array| a.is_valid(i).then(|| a.value(i));
        let b = |a: &BooleanArray| a.is_valid(i).then(|| a.value(i));
        serde_json::json!({
            "experiment_id": self.experiment.get(i),
            "user_id": self.user.is_valid(i).then(|| self.user.value(i)),
            "minutes_listened": f(&self.minutes_listened),
            "sessions": f(&self.sessions),
            "converted": b(&self.converted),
            "retained_d7": b(&self.retained_d7),
            "pre_minutes_listened": f(&self.pre_minutes_listened),
        })
        .to_string()
    }
}
