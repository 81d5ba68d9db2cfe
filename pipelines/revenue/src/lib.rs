//! Pipeline D, `revenue`: one month's subscription revenue attributed to songs, artists and
//! labels, to the minor unit, by the rules of docs/data.md.
//!
//! * Subscription revenue of the month: `monthly_price x active_days / days_in_month`, rounded
//!   half to even to the currency's minor unit ([`streampulse_core::money`]).
//! * A stream (a play of 30 s or more, on a UTC date of the month) belongs to the market
//!   (country, currency) of the user's paid subscription active that day; other plays do not
//!   count.
//! * `pro-rata`: per market, the pool (Σ revenue) is split over songs by their streams;
//!   `user-centric`: each subscription's revenue is split over the songs its user streamed while
//!   it was active; both by the largest-remainder method with ties to the smaller song id, so
//!   every split adds up exactly.
//!
//! The engine (DataFusion, memory-bounded, spilling) does the heavy part: streams per (user,
//! song, day), joined with the subscriptions active that day, aggregated per (subscription, song)
//! or (market, song). The splits then stream through in Rust, in integers. Memory holds the
//! catalog's song → artist, label map and one amount per (market, song).
//!
//! The parts: `args` (the command line), `month` (the calendar and a subscription's revenue),
//! `inputs` (the snapshots, plays partitions, catalog and the Spark session), `sql` (the pools
//! and streams queries), `split` (the two allocators), `reconcile` and `staging` (the output
//! rows); [`run`] here drives them on the chosen engine.

pub mod error;
pub mod postgres;

mod args;
mod inputs;
mod month;
mod reconcile;
mod split;
mod sql;
mod staging;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use streampulse_core::config::Secret;
use streampulse_core::engine;
use streampulse_core::location::Partition;
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::{
    PLAYS, REVENUE_BY_ARTIST, REVENUE_BY_LABEL, REVENUE_BY_SONG, REVENUE_RECONCILIATION, SONGS,
    SUBSCRIPTIONS,
};

pub use args::*;
pub use error::{Error, Result};
use inputs::*;
pub use month::*;
pub use reconcile::*;
use split::*;
pub use sql::*;
use staging::*;

pub const PIPELINE: &str = "revenue";

/// What a successful run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub outputs: Vec<String>,
    pub markets: usize,
    pub songs: usize,
    /// Σ over markets of the pool and of what was attributed, in minor units (mixed currencies:
    /// a checksum, not an amount).
    pub pool_minor_units: i128,
    pub attributed_minor_units: i128,
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let common = &cfg.common;
    let month = Month::new(cfg.month);
    let label = month.label();
    let pool_bytes = engine::pool_bytes(common.budget(), 128 << 20);
    let ctx = engine::session(common, pool_bytes)?;
    meter.engine = "datafusion".into();

    let last_day = month.next.pred_opt().unwrap_or(month.first);
    let plays = plays_partitions(cfg, &month).await?;
    let subs = snapshot(cfg, &cfg.subscriptions, "subscriptions", last_day).await?;
    let songs = snapshot(cfg, &cfg.songs, "songs", last_day).await?;
    tracing::info!(month = %label, plays = plays.len(), %subs, %songs, "inputs");
    meter.bytes_in = engine::parquet_bytes(&ctx, &[subs.clone(), songs.clone()]).await?
        + engine::parquet_bytes(&ctx, &plays).await?;
    // Each input in the contract's types whoever wrote it: a `decimal(18,2)` price read as our
    // scale-6 raw integer would make every pool 10,000x too small.
    let subs_df = engine::read_parquet(
        &ctx,
        vec![subs.clone()],
        &SUBSCRIPTIONS,
        &SUBSCRIPTION_INPUT,
    )
    .await?;
    ctx.register_table("subs", subs_df.into_view())?;
    let songs_df = engine::read_parquet(
        &ctx,
        vec![songs.clone()],
        &SONGS,
        &["song_id", "artist_id", "label_id"],
    )
    .await?;
    ctx.register_table("songs", songs_df.into_view())?;
    let plays_df = engine::read_parquet(
        &ctx,
        plays.clone(),
        &PLAYS,
        &["user_id", "song_id", "played_at", "ms_played"],
    )
    .await?;
    ctx.register_table("plays", plays_df.into_view())?;

    // Rows in = the plays read (from the Parquet footers: no scan).
    let counted = ctx
        .sql("SELECT COUNT(*) FROM plays")
        .await?
        .collect()
        .await?;
    meter.rows_in = counted
        .first()
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0) as u64)
        .unwrap_or(0);
    let spark = match (&cfg.engine, &cfg.spark) {
        (EngineKind::Spark, Some(spark_cfg)) => {
            let session = Box::pin(spark_session(spark_cfg, &ctx, &subs, &songs, &plays)).await?;
            meter.engine = "spark".into();
            Box::pin(session.describe()).await.record(meter);
            Some(session)
        }
        (EngineKind::Spark, None) => {
            return Err(Error::Config("--engine spark needs --spark-remote".into()));
        }
        _ => None,
    };
    let pg = match cfg.engine {
        EngineKind::Datafusion | EngineKind::Spark => None,
        EngineKind::Postgres => {
            let url = cfg
                .database_url
                .as_ref()
                .map(Secret::expose)
                .ok_or_else(|| Error::Config("--engine postgres needs --database-url".into()))?;
            let pg = Box::pin(postgres::PgEngine::connect(url, common.threads as u32 + 2)).await?;
            meter.engine = "postgres".into();
            let load = std::time::Instant::now();
            // Boxed: the load's state machine would otherwise sit inside every caller's future.
            let loaded = Box::pin(pg.load(
                &ctx,
                &month.first.format("%Y-%m-%d").to_string(),
                &month.next.format("%Y-%m-%d").to_string(),
            ))
            .await;
            let loaded = match loaded {
                Ok(n) => n,
                Err(e) => {
                    pg.close().await;
                    return Err(e);
                }
            };
            meter.set("postgres_rows_loaded", loaded);
            meter.set("postgres_load_seconds", load.elapsed().as_secs_f64());
            Some(pg)
        }
    };
    let sql = match (&pg, &spark) {
        (Some(pg), _) => Sql::Postgres(pg),
        (None, Some(session)) => Sql::Spark(session),
        (None, None) => Sql::DataFusion(&ctx),
    };
    let attributed = Box::pin(attribute(&sql, cfg.model, cfg.weighting, &month)).await;
    if let Some(pg) = pg {
        pg.close().await;
    }
    let Attribution {
        pools,
        claimed,
        by_song,
        catalog,
    } = attributed?;

    // Artists and labels: sums of their songs. A song missing from the catalog fails the run:
    // its money would have no owner.
    let mut by_artist = BTreeMap::new();
    let mut by_label = BTreeMap::new();
    let mut attributed: BTreeMap<Market, i128> = BTreeMap::new();
    for ((market, song), (streams, amount)) in &by_song {
        let (artist, label_id) = catalog.get(song).copied().ok_or_else(|| {
            Error::Inconsistent(format!(
                "song {song} has streams but is not in the catalog {songs}"
            ))
        })?;
        for (map, key) in [(&mut by_artist, artist), (&mut by_label, label_id)] {
            let e: &mut (i64, i128) = map.entry((market.clone(), key)).or_default();
            e.0 += streams;
            e.1 += amount;
        }
        *attributed.entry(market.clone()).or_default() += amount;
    }
    let reconciled = reconcile(&pools, &claimed, &attributed)?;
    let markets = reconciled.len();
    let (mut r_country, mut r_currency, mut r_pool, mut r_attr, mut r_un, mut r_diff) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in &reconciled {
        let cur = &r.market.1;
        r_country.push(r.market.0.as_str());
        r_currency.push(cur.as_str());
        r_pool.push(decimal(r.pool, cur)?);
        r_attr.push(decimal(r.attributed, cur)?);
        r_un.push(decimal(r.unattributed, cur)?);
        r_diff.push(decimal(r.difference, cur)?);
    }
    let reconciliation = RecordBatch::try_new(
        REVENUE_RECONCILIATION.clone(),
        vec![
            Arc::new(StringArray::from(r_country)),
            Arc::new(StringArray::from(r_currency)),
            Arc::new(money_array(r_pool)?),
            Arc::new(money_array(r_attr)?),
            Arc::new(money_array(r_un)?),
            Arc::new(money_array(r_diff)?),
        ],
    )?;

    let partition = Partition {
        key: "month",
        value: label.clone(),
    };
    let staged = vec![
        stage(
            cfg,
            "revenue_by_song",
            &partition,
            &REVENUE_BY_SONG,
            by_key(&REVENUE_BY_SONG, &by_song)?,
        )
        .await?,
        stage(
            cfg,
            "revenue_by_artist",
            &partition,
            &REVENUE_BY_ARTIST,
            by_key(&REVENUE_BY_ARTIST, &by_artist)?,
        )
        .await?,
        stage(
            cfg,
            "revenue_by_label",
            &partition,
            &REVENUE_BY_LABEL,
            by_key(&REVENUE_BY_LABEL, &by_label)?,
        )
        .await?,
        stage(
            cfg,
            "revenue_reconciliation",
            &partition,
            &REVENUE_RECONCILIATION,
            reconciliation,
        )
        .await?,
    ];
    for s in &staged {
        meter.rows_out += s.rows;
        meter.bytes_out += s.bytes;
    }
    // The four datasets appear together: a reader never sees new songs with an old
    // reconciliation.
    let outputs = streampulse_core::commit::publish(&common.data_root, common.table_format, staged)
        .await?
        .into_iter()
        .map(|p| p.url.clone())
        .collect();
    let pool_total: i128 = pools.values().sum();
    let attributed_total: i128 = attributed.values().sum();
    meter.set("markets", markets);
    meter.set("model", format!("{:?}", cfg.model));
    meter.set("artist_centric", cfg.weighting.is_some());
    tracing::info!(markets, songs = by_song.len(), "attributed");
    Ok(Outcome {
        outputs,
        markets,
        songs: by_song.len(),
        pool_minor_units: pool_total,
        attributed_minor_units: attributed_total,
    })
}

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.month.format("%Y-%m").to_string()
);
