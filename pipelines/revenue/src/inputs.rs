//! Finding the month's inputs: the snapshots, the plays partitions, the catalog, and the
//! Spark session that reads them where they are.

use std::collections::HashMap;
use std::path::PathBuf;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use streampulse_core::location::Partition;
use streampulse_core::schema::{PLAYS, SONGS, SUBSCRIPTIONS};
use streampulse_spark::{Session, SparkConfig};

use crate::*;

/// The latest partition of `dataset` dated on or after `on_or_after`, else the latest before.
pub(crate) async fn snapshot(
    cfg: &Config,
    explicit: &Option<PathBuf>,
    dataset: &str,
    on_or_after: NaiveDate,
) -> Result<String> {
    if let Some(p) = explicit {
        return Ok(p.display().to_string());
    }
    let root = &cfg.common.data_root;
    let dates = root.list_partitions(dataset, "date").await?;
    let wanted = on_or_after.format("%Y-%m-%d").to_string();
    let pick = dates
        .iter()
        .filter(|d| **d >= wanted)
        .min()
        .or_else(|| dates.iter().max())
        .ok_or_else(|| {
            Error::Core(streampulse_core::Error::InputMissing(format!(
                "no {dataset} partition under {} (pass --{dataset})",
                root.display()
            )))
        })?;
    if *pick < wanted {
        tracing::warn!(dataset, partition = %pick, "no snapshot after the month's end: using an earlier one");
    }
    Ok(root.partition_url(
        dataset,
        &Partition {
            key: "date",
            value: pick.clone(),
        },
    ))
}

/// The plays partitions that can hold the month's streams: its days and the next day (late
/// arrivals of the last evening land in the next day's export).
pub(crate) async fn plays_partitions(cfg: &Config, month: &Month) -> Result<Vec<String>> {
    let root = &cfg.common.data_root;
    let present = root.list_partitions("plays", "date").await?;
    let mut urls = Vec::new();
    let mut missing = Vec::new();
    let mut d = month.first;
    while d <= month.next {
        let p = Partition::date(d);
        if present.contains(&p.value) {
            urls.push(root.partition_url("plays", &p));
        } else if d < month.next {
            missing.push(p.value);
        }
        d = d.succ_opt().unwrap_or(d);
    }
    if urls.is_empty() {
        return Err(Error::Core(streampulse_core::Error::InputMissing(format!(
            "no plays partition for {} under {}",
            month.label(),
            root.display()
        ))));
    }
    if !missing.is_empty() {
        tracing::warn!(days = missing.len(), first = %missing[0], "days of the month have no plays partition");
    }
    Ok(urls)
}

pub(crate) fn date_literal(d: NaiveDate) -> String {
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

/// song → (artist, label) from the catalog.
pub(crate) async fn catalog(sql: &Sql<'_>) -> Result<HashMap<i64, (i64, i64)>> {
    let mut out = HashMap::new();
    let columns = [
        ("song_id", DataType::Int64),
        ("artist_id", DataType::Int64),
        ("label_id", DataType::Int64),
    ];
    let mut stream = sql
        .stream(
            "SELECT song_id, artist_id, label_id FROM songs",
            schema(&columns),
        )
        .await?;
    while let Some(b) = stream.next().await.transpose()? {
        let (s, a, l) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            out.insert(s.value(i), (a.value(i), l.value(i)));
        }
    }
    Ok(out)
}

/// A Spark session whose views `subs`, `songs` and `plays` are the month's inputs, read by the
/// cluster where they are, each file with the contract's types (checked here first, by the
/// embedded reader's rules).
pub(crate) async fn spark_session(
    spark_cfg: &SparkConfig,
    ctx: &SessionContext,
    subs: &str,
    songs: &str,
    plays: &[String],
) -> Result<Session> {
    let session = Box::pin(Session::connect(spark_cfg)).await?;
    for (view, urls, contract, columns) in [
        (
            "subs",
            vec![subs.to_string()],
            &*SUBSCRIPTIONS,
            &SUBSCRIPTION_INPUT[..],
        ),
        (
            "songs",
            vec![songs.to_string()],
            &*SONGS,
            &["song_id", "artist_id", "label_id"][..],
        ),
        (
            "plays",
            plays.to_vec(),
            &*PLAYS,
            &["user_id", "song_id", "played_at", "ms_played"][..],
        ),
    ] {
        Box::pin(session.contract_view(spark_cfg, ctx, view, &urls, contract, columns)).await?;
    }
    Ok(session)
}
