//! The output datasets' rows (`revenue_by_*`), staged for the run's commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use streampulse_core::location::Partition;
use streampulse_core::money::MONEY_SCALE;
use streampulse_core::output::{StagedPartition, write_partition};

use crate::*;

pub(crate) fn money_array(values: Vec<i128>) -> Result<Decimal128Array> {
    Ok(Decimal128Array::from(values).with_precision_and_scale(18, MONEY_SCALE as i8)?)
}

/// Rows of a `revenue_by_*` dataset from per-(market, key) totals, sorted by market then key.
pub(crate) fn by_key(
    schema: &SchemaRef,
    totals: &BTreeMap<(Market, i64), (i64, i128)>,
) -> Result<RecordBatch> {
    let n = totals.len();
    let (mut country, mut currency, mut key, mut streams, mut amount) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (((c, cur), k), (s, a)) in totals {
        country.push(c.as_str());
        currency.push(cur.as_str());
        key.push(*k);
        streams.push(*s);
        amount.push(decimal(*a, cur)?);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(country)),
            Arc::new(StringArray::from(currency)),
            Arc::new(Int64Array::from(key)),
            Arc::new(Int64Array::from(streams)),
            Arc::new(money_array(amount)?),
        ],
    )?)
}

pub(crate) async fn stage(
    cfg: &Config,
    dataset: &str,
    partition: &Partition,
    schema: &SchemaRef,
    batch: RecordBatch,
) -> Result<StagedPartition> {
    let stream = streampulse_core::stream::batch_stream(batch);
    Ok(write_partition(
        &cfg.common.data_root,
        &cfg.common.spill_dir,
        dataset,
        partition,
        schema,
        stream,
    )
    .await?)
}
