//! Inputs other tools wrote: columns cast to the data contract's types, exactly or not at all.
//!
//! Our generator writes every column in the contract's own type, but pandas, pyarrow, Polars,
//! DuckDB and Spark each have their habits: timestamps in µs or ns, with or without a time zone,
//! ids as int32, money as `decimal(18,2)` or `decimal(38,10)` or even a float, dates as
//! timestamps or `date64`, strings dictionary-encoded, embeddings as variable-size lists. A reader
//! that assumed our own types read garbage (a decimal's raw integer at the wrong scale is money
//! 10,000x off) or panicked on a downcast.
//!
//! The rule, one place for every reader: a value is converted when the contract's type holds it
//! exactly, and the run fails with exit 65 (the file, the column, the type found, the type
//! expected, the first value that does not fit) when it does not. The conversions:
//!
//! | contract type | accepted | exact when |
//! |---|---|---|
//! | integers | any integer type | the value is in range |
//! | `timestamp(ms, UTC)` | a timestamp in s, ms, µs or ns, any zone or none (none is UTC) | always: finer units are floored to the millisecond, the contract's precision |
//! | `date32` | `date64`; a timestamp of zone UTC or none | the value is a midnight (UTC) |
//! | `decimal(p, s)` | any decimal; an integer; a float | no digit is lost beyond `s` and the value has at most `p` digits; a float by its shortest round-trip decimal form (9.99 is 9.99) |
//! | `float64` | `float32` | always (widening) |
//! | strings | `utf8`, `large_utf8`, `utf8_view`; dictionary-encoded strings | always |
//! | `fixed_size_list<float32, N>` | a list or large list of float32 or float64 | every list has N values, and a float64 is a float32 |

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, FixedSizeListArray, Float32Array,
    GenericListArray, OffsetSizeTrait, TimestampMillisecondArray,
};
use arrow::datatypes::{
    DataType, Date64Type, Decimal128Type, Decimal256Type, Field, Float32Type, Float64Type, Schema,
    SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::rejects::Reject;
use crate::schema::Rule;
use crate::time::MS_PER_DAY;

/// Whether a column of type `found` is read as the contract's `expected` without any conversion
/// (the same type, or another layout of strings that every reader here takes as it is).
pub fn same_type(found: &DataType, expected: &DataType) -> bool {
    use DataType::*;
    match (found, expected) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Timestamp(fu, ftz), Timestamp(eu, etz)) => fu == eu && is_utc(ftz) == is_utc(etz),
        (FixedSizeList(f, n), FixedSizeList(e, m)) => n == m && f.data_type() == e.data_type(),
        _ => found == expected,
    }
}

fn is_utc(tz: &Option<Arc<str>>) -> bool {
    match tz.as_deref() {
        None => true,
        Some(z) => matches!(z, "UTC" | "utc" | "Z" | "+00:00" | "Etc/UTC" | "GMT"),
    }
}

/// Checks that every contract column named in `columns` is in `found` with a type that converts
/// to the contract's, and says whether any needs converting. `source` names the file or dataset.
pub fn check_columns(
    found: &Schema,
    contract: &Schema,
    columns: &[&str],
    source: &str,
) -> Result<bool> {
    let mut convert = false;
    for &name in columns {
        let expected = contract.field_with_name(name).map_err(|_| {
            Error::Internal(format!("{name} is not a column of the contract's schema"))
        })?;
        let field = found.field_with_name(name).map_err(|_| Error::InputType {
            file: source.to_string(),
            column: name.to_string(),
            found: "no such column".into(),
            expected: expected.data_type().to_string(),
            detail: format!(
                "the input's columns are {}",
                found
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        if !convertible(field.data_type(), expected.data_type()) {
            return Err(type_error(
                source,
                name,
                field.data_type(),
                expected.data_type(),
                "no exact conversion exists",
            ));
        }
        convert |= !same_type(field.data_type(), expected.data_type());
    }
    Ok(convert)
}

/// The schema of conformed batches: the contract's `columns` with the contract's types, in
/// `columns` order (nullable: the rules for null values are each reader's).
pub fn contract_schema(contract: &Schema, columns: &[&str]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|&name| {
            contract
                .field_with_name(name)
                .map(|f| Field::new(name, f.data_type().clone(), true))
                .map_err(|_| Error::Internal(format!("{name} is not a column of the contract")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether a conversion from `found` to `expected` exists at all (values may still not fit).
fn convertible(found: &DataType, expected: &DataType) -> bool {
    use DataType::*;
    if same_type(found, expected) {
        return true;
    }
    match expected {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => found.is_integer(),
        Timestamp(..) => matches!(found, Timestamp(..)),
        Date32 => matches!(found, Date64) || matches!(found, Timestamp(_, tz) if is_utc(tz)),
        Decimal128(..) => {
            matches!(found, Decimal128(..) | Decimal256(..) | Float32 | Float64)
                || found.is_integer()
        }
        Float64 => matches!(found, Float32),
        Utf8 | LargeUtf8 | Utf8View => {
            matches!(found, Dictionary(_, v) if matches!(**v, Utf8 | LargeUtf8 | Utf8View))
        }
        FixedSizeList(item, _) if item.data_type() == &Float32 => {
            matches!(found, List(f) | LargeList(f) | FixedSizeList(f, _)
                if matches!(f.data_type(), Float32 | Float64))
        }
        _ => false,
    }
}

fn type_error(
    source: &str,
    column: &str,
    found: &DataType,
    expected: &DataType,
    detail: impl Into<String>,
) -> Error {
    Error::InputType {
        file: source.to_string(),
        column: column.to_string(),
        found: found.to_string(),
        expected: expected.to_string(),
        detail: detail.into(),
    }
}

/// The columns `target` names, taken from `batch` and converted to their `target` types.
pub fn batch(batch: &RecordBatch, target: &SchemaRef, source: &str) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let array = batch
            .column_by_name(field.name())
            .ok_or_else(|| Error::InputType {
                file: source.to_string(),
                column: field.name().clone(),
                found: "no such column".into(),
                expected: field.data_type().to_string(),
                detail: "a file of the input lacks it".into(),
            })?;
        columns.push(column(array, field.data_type(), field.name(), source)?);
    }
    let options =
        arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &options,
    )?)
}

/// `array` (column `name` of `source`) as `expected`, exactly; see the module docs.
pub fn column(array: &ArrayRef, expected: &DataType, name: &str, source: &str) -> Result<ArrayRef> {
    use DataType::*;
    let found = array.data_type();
    if found == expected {
        return Ok(array.clone());
    }
    let fail = |detail: String| type_error(source, name, found, expected, detail);
    match expected {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 if found.is_integer() => {
            // Not the default (safe) cast: it turns a value that does not fit into a null.
            let options = arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            };
            arrow::compute::cast_with_options(array, expected, &options)
                .map_err(|e| fail(format!("a value is out of range: {e}")))
        }
        Timestamp(TimeUnit::Millisecond, tz) => {
            let ms = timestamp_millis(array).ok_or_else(|| fail("not a timestamp".into()))?;
            let ms = ms.map_err(|v| fail(format!("{v} is out of the millisecond range")))?;
            Ok(Arc::new(ms.with_timezone_opt(tz.clone())))
        }
        Date32 => {
            let ms = match found {
                Date64 => Ok(array.as_primitive::<Date64Type>().clone().reinterpret_ms()),
                Timestamp(..) => {
                    timestamp_millis(array).ok_or_else(|| fail("not a timestamp".into()))?
                }
                _ => return Err(fail("not a date".into())),
            }
            .map_err(|v| fail(format!("{v} is out of the millisecond range")))?;
            let mut days = Vec::with_capacity(ms.len());
            for (i, v) in ms.values().iter().enumerate() {
                if ms.is_valid(i) && v.rem_euclid(MS_PER_DAY) != 0 {
                    return Err(fail(format!(
                        "row {i} has a time of day ({} ms after midnight UTC): a date was expected",
                        v.rem_euclid(MS_PER_DAY)
                    )));
                }
                let d = i32::try_from(v.div_euclid(MS_PER_DAY))
                    .map_err(|_| fail(format!("row {i}: {v} ms is out of the date range")))?;
                days.push(d);
            }
            Ok(Arc::new(Date32Array::new(days.into(), ms.nulls().cloned())))
        }
        Decimal128(precision, scale) => decimal(array, *precision, *scale)
            .map_err(|(row, detail)| fail(format!("row {row}: {detail}"))),
        Float64 if matches!(found, Float32) => Ok(arrow::compute::cast(array, expected)?),
        Utf8 | LargeUtf8 | Utf8View => Ok(arrow::compute::cast(array, expected)?),
        FixedSizeList(item, n) => embeddings(array, item, *n).map_err(fail),
        _ => Err(fail("no exact conversion exists".into())),
    }
}

/// A timestamp array of any unit as milliseconds (floored), or `None` when it is not a
/// timestamp; `Err(v)` names a value that overflows.
fn timestamp_millis(
    array: &ArrayRef,
) -> Option<std::result::Result<TimestampMillisecondArray, i64>> {
    let DataType::Timestamp(unit, _) = array.data_type() else {
        return None;
    };
    let (values, factor): (&[i64], i64) = match unit {
        TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().values(), -1000),
        TimeUnit::Millisecond => (array.as_primitive::<TimestampMillisecondType>().values(), 1),
        TimeUnit::Microsecond => (
            array.as_primitive::<TimestampMicrosecondType>().values(),
            1000,
        ),
        TimeUnit::Nanosecond => (
            array.as_primitive::<TimestampNanosecondType>().values(),
            1_000_000,
        ),
    };
    let mut out = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        // A null slot may hold any value: it is no error.
        let ms = if array.is_null(i) {
            Some(0)
        } else if factor < 0 {
            v.checked_mul(-factor)
        } else {
            Some(v.div_euclid(factor))
        };
        match ms {
            Some(ms) => out.push(ms),
            None => return Some(Err(v)),
        }
    }
    Some(Ok(TimestampMillisecondArray::new(
        out.into(),
        array.nulls().cloned(),
    )))
}

trait ReinterpretMs {
    fn reinterpret_ms(self) -> TimestampMillisecondArray;
}

impl ReinterpretMs for arrow::array::Date64Array {
    fn reinterpret_ms(self) -> TimestampMillisecondArray {
        let (_, values, nulls) = self.into_parts();
        TimestampMillisecondArray::new(values, nulls)
    }
}

/// Any decimal, integer or float array as `Decimal128(precision, scale)`; `Err((row, why))`
/// for the first value that would lose a digit or not fit.
fn decimal(
    array: &ArrayRef,
    precision: u8,
    scale: i8,
) -> std::result::Result<ArrayRef, (usize, String)> {
    let limit = 10i128.pow(u32::from(precision));
    let scale = i32::from(scale);
    let mut out: Vec<i128> = Vec::with_capacity(array.len());
    let fits = |v: i128, row: usize| {
        if v.abs() >= limit {
            Err((row, format!("{v} does not fit {precision} digits")))
        } else {
            Ok(v)
        }
    };
    match array.data_type() {
        DataType::Decimal128(_, s) => {
            let a = array.as_primitive::<Decimal128Type>();
            for (row, &v) in a.values().iter().enumerate() {
                let v = if a.is_valid(row) {
                    rescale(v, i32::from(*s), scale).map_err(|e| (row, e))?
                } else {
                    0
                };
                out.push(fits(v, row)?);
            }
        }
        DataType::Decimal256(_, s) => {
            let a = array.as_primitive::<Decimal256Type>();
            for (row, v) in a.values().iter().enumerate() {
                let v = if a.is_valid(row) {
                    let narrow = v
                        .to_i128()
                        .ok_or_else(|| (row, format!("{v} does not fit {precision} digits")))?;
                    rescale(narrow, i32::from(*s), scale).map_err(|e| (row, e))?
                } else {
                    0
                };
                out.push(fits(v, row)?);
            }
        }
        DataType::Float64 | DataType::Float32 => {
            let values: Vec<Option<f64>> = match array.data_type() {
                DataType::Float64 => array.as_primitive::<Float64Type>().iter().collect(),
                _ => array
                    .as_primitive::<Float32Type>()
                    .iter()
                    // f32's own shortest form: 9.99f32 is 9.99, not 9.9899997711181640625.
                    .map(|v| v.map(|f| f.to_string().parse::<f64>().unwrap_or(f64::NAN)))
                    .collect(),
            };
            for (row, v) in values.into_iter().enumerate() {
                let v = match v {
                    Some(f) => parse_decimal(&f.to_string(), scale)
                        .map_err(|e| (row, format!("{f}: {e}")))?,
                    None => 0,
                };
                out.push(fits(v, row)?);
            }
        }
        t if t.is_integer() => {
            let a =
                arrow::compute::cast(array, &DataType::Int64).map_err(|e| (0, e.to_string()))?;
            let a = a.as_primitive::<arrow::datatypes::Int64Type>();
            for (row, &v) in a.values().iter().enumerate() {
                let v = if a.is_valid(row) {
                    rescale(i128::from(v), 0, scale).map_err(|e| (row, e))?
                } else {
                    0
                };
                out.push(fits(v, row)?);
            }
        }
        other => return Err((0, format!("{other} is not a number"))),
    }
    let array = Decimal128Array::new(out.into(), array.nulls().cloned())
        .with_precision_and_scale(precision, scale as i8)
        .map_err(|e| (0, e.to_string()))?;
    Ok(Arc::new(array))
}

/// `raw` at scale `from` as a raw value at scale `to`, when no digit is lost.
fn rescale(raw: i128, from: i32, to: i32) -> std::result::Result<i128, String> {
    if from <= to {
        10i128
            .checked_pow((to - from) as u32)
            .and_then(|m| raw.checked_mul(m))
            .ok_or_else(|| format!("{raw} (scale {from}) overflows at scale {to}"))
    } else {
        let d = 10i128
            .checked_pow((from - to) as u32)
            .ok_or_else(|| format!("scale {from} is out of range"))?;
        if raw % d != 0 {
            Err(format!(
                "{} has more than {to} decimal places",
                format_scaled(raw, from)
            ))
        } else {
            Ok(raw / d)
        }
    }
}

/// A raw decimal at `scale` as text (`-12.345000`), the inverse of [`parse_decimal`].
pub fn format_scaled(raw: i128, scale: i32) -> String {
    if scale <= 0 {
        return raw.to_string();
    }
    let digits = format!(
        "{:0>width$}",
        raw.unsigned_abs(),
        width = scale as usize + 1
    );
    let (int, frac) = digits.split_at(digits.len() - scale as usize);
    format!("{}{int}.{frac}", if raw < 0 { "-" } else { "" })
}

/// A decimal string (`-12.345`, `1e-3`, `7`) as a raw value at `scale`, when exact.
pub fn parse_decimal(s: &str, scale: i32) -> std::result::Result<i128, String> {
    let s = s.trim();
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (
            &s[..i],
            s[i + 1..]
                .parse::<i32>()
                .map_err(|_| format!("{s:?} is not a decimal number"))?,
        ),
        None => (s, 0),
    };
    let (negative, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a decimal number"));
    }
    let mut raw: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        raw = raw
            .checked_mul(10)
            .and_then(|r| r.checked_add(i128::from(b - b'0')))
            .ok_or_else(|| format!("{s:?} is too large"))?;
    }
    let value_scale =
        i32::try_from(frac.len()).map_err(|_| format!("{s:?} is too long"))? - exponent;
    let raw = rescale(raw, value_scale, scale)?;
    Ok(if negative { -raw } else { raw })
}

/// Embedding lists as `FixedSizeList<Float32, n>`.
fn embeddings(
    array: &ArrayRef,
    item: &Arc<Field>,
    n: i32,
) -> std::result::Result<ArrayRef, String> {
    let (offsets, values): (Vec<usize>, ArrayRef) = match array.data_type() {
        DataType::List(_) => list_parts(array.as_list::<i32>()),
        DataType::LargeList(_) => list_parts(array.as_list::<i64>()),
        DataType::FixedSizeList(_, m) => {
            let a = array.as_fixed_size_list();
            // A sliced fixed-size list slices its values too: rows start at 0.
            let m = *m as usize;
            ((0..=a.len()).map(|i| i * m).collect(), a.values().clone())
        }
        other => return Err(format!("{other} is not a list")),
    };
    let width = n as usize;
    for (row, w) in offsets.windows(2).enumerate() {
        if array.is_valid(row) && w[1] - w[0] != width {
            return Err(format!("row {row} has {} values, not {width}", w[1] - w[0]));
        }
    }
    if array.null_count() > 0 {
        return Err("a list is null".into());
    }
    let start = offsets.first().copied().unwrap_or(0);
    let values = values.slice(start, array.len() * width);
    let floats: Float32Array = match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().clone(),
        DataType::Float64 => {
            let f64s = values.as_primitive::<Float64Type>();
            let mut out = Vec::with_capacity(f64s.len());
            for (i, v) in f64s.iter().enumerate() {
                let v = v.ok_or_else(|| format!("value {i} of the lists is null"))?;
                let f = v as f32;
                if f64::from(f) != v && !v.is_nan() {
                    return Err(format!("{v} is not a float32 value"));
                }
                out.push(f);
            }
            Float32Array::from(out)
        }
        other => return Err(format!("list items are {other}, not floats")),
    };
    if floats.null_count() > 0 {
        return Err("a list holds a null value".into());
    }
    let item = Arc::new(Field::new(
        item.name(),
        DataType::Float32,
        item.is_nullable(),
    ));
    FixedSizeListArray::try_new(item, n, Arc::new(floats), None)
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| e.to_string())
}

fn list_parts<O: OffsetSizeTrait>(a: &GenericListArray<O>) -> (Vec<usize>, ArrayRef) {
    (
        a.value_offsets().iter().map(|o| o.as_usize()).collect(),
        a.values().clone(),
    )
}

/// The rows of a conformed `batch` that the contract accepts, and a reject for each other: a
/// null in a column the `contract` requires, or a value that breaks its column's [`Rule`]. Row
/// `i` of the batch is reported as row `first_row + i` of `source` (Parquet has no lines).
pub fn validate(
    batch: &RecordBatch,
    contract: &Schema,
    source: &str,
    first_row: u64,
) -> Result<(RecordBatch, Vec<Reject>)> {
    let n = batch.num_rows();
    let mut bad: Vec<Option<(String, &'static str)>> = vec![None; n];
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        let Ok(expected) = contract.field_with_name(field.name()) else {
            continue;
        };
        let mut mark = |i: usize, why: &'static str| {
            bad[i].get_or_insert_with(|| (field.name().clone(), why));
        };
        if !expected.is_nullable() && array.null_count() > 0 {
            for i in (0..n).filter(|&i| array.is_null(i)) {
                mark(i, "null in a required column");
            }
        }
        let Some(rule) = Rule::of(field.name()) else {
            continue;
        };
        match array.data_type() {
            DataType::Int32 | DataType::Int64 => {
                let ints = arrow::compute::cast(array, &DataType::Int64)?;
                let ints = ints.as_primitive::<arrow::datatypes::Int64Type>();
                for (i, v) in ints.iter().enumerate() {
                    if let Some(why) = v.and_then(|v| rule.check_int(v)) {
                        mark(i, why);
                    }
                }
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let strings = arrow::compute::cast(array, &DataType::Utf8)?;
                for (i, v) in strings.as_string::<i32>().iter().enumerate() {
                    if let Some(why) = v.and_then(|v| rule.check_str(v.as_bytes())) {
                        mark(i, why);
                    }
                }
            }
            _ => {}
        }
    }
    if bad.iter().all(Option::is_none) {
        return Ok((batch.clone(), Vec::new()));
    }
    let options = arrow::util::display::FormatOptions::default().with_null("null");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rejects = Vec::new();
    for (i, b) in bad.iter().enumerate() {
        if let Some((column, why)) = b {
            let row: serde_json::Map<String, serde_json::Value> = batch
                .schema()
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, fmt)| (f.name().clone(), fmt.value(i).to_string().into()))
                .collect();
            rejects.push(Reject {
                file: source.to_string(),
                line: first_row + i as u64,
                column: Some(column.clone()),
                reason: (*why).to_string(),
                raw: serde_json::Value::Object(row).to_string(),
            });
        }
    }
    let keep =
        arrow::array::BooleanArray::from(bad.iter().map(Option::is_none).collect::<Vec<_>>());
    Ok((arrow::compute::filter_record_batch(batch, &keep)?, rejects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date64Array, DictionaryArray, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
        TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{Int32Type, Int64Type};

    fn conv(array: ArrayRef, expected: &DataType) -> Result<ArrayRef> {
        column(&array, expected, "c", "f.parquet")
    }

    fn money(array: ArrayRef) -> Result<Vec<i128>> {
        let out = conv(array, &crate::schema::MONEY)?;
        Ok(out.as_primitive::<Decimal128Type>().values().to_vec())
    }

    #[test]
    fn decimals_are_rescaled_exactly() {
        let d = |v: Vec<i128>, p, s| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(p, s)
                    .unwrap(),
            )
        };
        assert_eq!(
            money(d(vec![999, 1199], 18, 2)).unwrap(),
            vec![9_990_000, 11_990_000]
        );
        assert_eq!(money(d(vec![999], 10, 2)).unwrap(), vec![9_990_000]);
        assert_eq!(
            money(d(vec![99_900_000_000], 38, 10)).unwrap(),
            vec![9_990_000]
        );
        let lossy = money(d(vec![99_900_000_001], 38, 10)).unwrap_err();
        assert!(
            lossy
                .to_string()
                .contains("9.9900000001 has more than 6 decimal places"),
            "{lossy}"
        );
        assert_eq!(lossy.exit_code(), crate::ExitCode::DataErr);
        assert!(
            money(d(vec![10i128.pow(20)], 38, 0)).is_err(),
            "does not fit 18 digits"
        );
    }

    #[test]
    fn floats_are_money_by_their_shortest_form() {
        let f: ArrayRef = Arc::new(Float64Array::from(vec![9.99, 11.99, 0.0, 1e3]));
        assert_eq!(
            money(f).unwrap(),
            vec![9_990_000, 11_990_000, 0, 1_000_000_000]
        );
        let inexact: ArrayRef = Arc::new(Float64Array::from(vec![0.1 + 0.2]));
        assert!(money(inexact).is_err());
        let nan: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN]));
        assert!(money(nan).is_err());
        let f32s: ArrayRef = Arc::new(Float32Array::from(vec![9.99f32]));
        assert_eq!(money(f32s).unwrap(), vec![9_990_000]);
    }

    #[test]
    fn timestamps_of_any_unit_become_utc_milliseconds() {
        let expected = crate::schema::PLAYS
            .field_with_name("played_at")
            .unwrap()
            .data_type()
            .clone();
        let t = 1_764_115_200_123i64; // 2025-11-26 00:00:00.123
        let us: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![t * 1000 + 999]));
        let ns: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![t * 1_000_000]).with_timezone("Europe/Paris"),
        );
        for a in [us, ns] {
            let out = conv(a, &expected).unwrap();
            assert_eq!(out.data_type(), &expected);
            assert_eq!(out.as_primitive::<TimestampMillisecondType>().value(0), t);
        }
        // Before 1970 floors towards the past, like every engine's date of a timestamp.
        let early: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![-1]));
        assert_eq!(
            conv(early, &expected)
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            -1
        );
    }

    #[test]
    fn dates_from_timestamps_and_date64_only_at_midnight() {
        let day = 20_418i64;
        let midnight: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
            Some(day * MS_PER_DAY * 1000),
            None,
        ]));
        let out = conv(midnight, &DataType::Date32).unwrap();
        assert_eq!(
            out.as_primitive::<arrow::datatypes::Date32Type>().value(0),
            day as i32
        );
        assert!(out.is_null(1));
        let d64: ArrayRef = Arc::new(Date64Array::from(vec![day * MS_PER_DAY]));
        assert_eq!(
            conv(d64, &DataType::Date32)
                .unwrap()
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(0),
            day as i32
        );
        let noon: ArrayRef = Arc::new(Date64Array::from(vec![day * MS_PER_DAY + 43_200_000]));
        assert!(
            conv(noon, &DataType::Date32)
                .unwrap_err()
                .to_string()
                .contains("time of day")
        );
    }

    #[test]
    fn integers_widen_and_overflow_is_an_error() {
        let i32s: ArrayRef = Arc::new(Int32Array::from(vec![1, -2]));
        assert_eq!(
            conv(i32s, &DataType::Int64)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values(),
            &[1, -2]
        );
        let big: ArrayRef = Arc::new(Int64Array::from(vec![i64::from(i32::MAX) + 1]));
        let e = conv(big, &DataType::Int32).unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::DataErr);
        assert!(
            e.to_string()
                .contains("f.parquet: column c: found Int64, expected Int32"),
            "{e}"
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec!["1"]));
        assert!(
            conv(s, &DataType::Int64).is_err(),
            "no string-to-number guessing"
        );
    }

    #[test]
    fn dictionary_strings_decode() {
        let d: DictionaryArray<Int32Type> = vec!["DE", "FR", "DE"].into_iter().collect();
        let out = conv(Arc::new(d), &DataType::Utf8).unwrap();
        assert_eq!(out.as_string::<i32>().value(2), "DE");
    }

    #[test]
    fn embeddings_from_lists_of_the_right_length() {
        let fsl =
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 2);
        let list = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
            Some(vec![Some(0.5), Some(1.0)]),
            Some(vec![Some(-2.0), Some(0.25)]),
        ]);
        let out = conv(Arc::new(list), &fsl).unwrap();
        let values = out
            .as_fixed_size_list()
            .values()
            .as_primitive::<Float32Type>()
            .values()
            .to_vec();
        assert_eq!(values, vec![0.5, 1.0, -2.0, 0.25]);
        let ragged =
            ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(vec![Some(1.0)])]);
        assert!(
            conv(Arc::new(ragged), &fsl)
                .unwrap_err()
                .to_string()
                .contains("1 values, not 2")
        );
        let not_f32 = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![Some(vec![
            Some(0.1),
            Some(0.2),
        ])]);
        assert!(conv(Arc::new(not_f32), &fsl).is_err());
    }

    #[test]
    fn schemas_name_the_missing_column_and_the_type_found() {
        let found = Schema::new(vec![Field::new("user_id", DataType::Utf8, false)]);
        let e =
            check_columns(&found, &crate::schema::PLAYS, &["user_id"], "p.parquet").unwrap_err();
        assert!(
            e.to_string()
                .contains("column user_id: found Utf8, expected Int64"),
            "{e}"
        );
        let e =
            check_columns(&found, &crate::schema::PLAYS, &["song_id"], "p.parquet").unwrap_err();
        assert!(
            e.to_string().contains("song_id: found no such column"),
            "{e}"
        );
        let views = Schema::new(vec![Field::new("session_id", DataType::Utf8View, false)]);
        assert!(!check_columns(&views, &crate::schema::PLAYS, &["session_id"], "p").unwrap());
        let micros = Schema::new(vec![Field::new(
            "played_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]);
        assert!(check_columns(&micros, &crate::schema::PLAYS, &["played_at"], "p").unwrap());
    }

    #[test]
    fn decimal_strings_parse_exactly() {
        assert_eq!(parse_decimal("9.99", 6), Ok(9_990_000));
        assert_eq!(parse_decimal("-1e-3", 6), Ok(-1000));
        assert_eq!(parse_decimal("1e20", 0), Ok(10i128.pow(20)));
        assert!(parse_decimal("0.0000001", 6).is_err());
        assert!(parse_decimal("1.2.3", 6).is_err());
        assert!(parse_decimal("", 6).is_err());
        assert!(parse_decimal("NaN", 6).is_err());
    }
}

#[cfg(test)]
mod validate_tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};

    #[test]
    fn nulls_and_rule_breakers_are_rejected_with_their_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, true),
            Field::new("ms_played", DataType::Int32, true),
            Field::new("country", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(3),
                    Some(4),
                    Some(5),
                ])),
                Arc::new(Int32Array::from(vec![10, 20, -1, 40, 50])),
                Arc::new(StringArray::from(vec!["US", "DE", "FR", "U\0S", "us"])),
            ],
        )
        .unwrap();
        let (good, rejects) = validate(&batch, &crate::schema::PLAYS, "p.parquet", 100).unwrap();
        assert_eq!(good.num_rows(), 1);
        let got: Vec<(u64, &str, &str)> = rejects
            .iter()
            .map(|r| (r.line, r.column.as_deref().unwrap(), r.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (101, "user_id", "null in a required column"),
                (102, "ms_played", "negative duration"),
                (
                    103,
                    "country",
                    "not an ISO 3166 alpha-2 country code (two capital letters)"
                ),
                (
                    104,
                    "country",
                    "not an ISO 3166 alpha-2 country code (two capital letters)"
                ),
            ]
        );
        assert!(
            rejects[0].raw.contains("\"user_id\":\"null\""),
            "{}",
            rejects[0].raw
        );
    }
}
