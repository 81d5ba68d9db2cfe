//! The two allocators (pro-rata per market, user-centric per subscription): exact splits by the
//! largest remainder, ties to the smaller song id.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Int64Type};
use futures::StreamExt;
use streampulse_core::money::allocate;
use streampulse_core::progress::Progress;

use crate::*;

/// Attributed amounts and streams per (market, song).
pub(crate) type SongTotals = BTreeMap<(Market, i64), (i64, i128)>;

/// Per market, the revenue that streams claimed: the whole pool of a market with streams
/// (pro-rata), or the revenue of the subscriptions whose users streamed (user-centric). What the
/// splits hand out must add up to it; the rest of the pool is unattributed.
pub(crate) type Claimed = BTreeMap<Market, i128>;

/// Pro-rata: per market, the pool over the market's songs by streams.
pub(crate) async fn pro_rata(
    sql: &Sql<'_>,
    month: &Month,
    pools: &BTreeMap<Market, i128>,
    weighting: Option<ArtistCentric>,
) -> Result<(SongTotals, Claimed)> {
    let columns = [
        SUBSCRIPTION_COLUMNS[1].clone(),
        SUBSCRIPTION_COLUMNS[2].clone(),
        ("song_id", DataType::Int64),
        ("streams", DataType::Int64),
        ("weight", DataType::Int64),
    ];
    let mut stream = sql
        .stream(
            &streams_sql(sql, month, &["country", "currency"], weighting),
            schema(&columns),
        )
        .await?;
    let mut totals = SongTotals::new();
    let mut market: Option<Market> = None;
    // (song, weight) for the split, and the song's streams beside it.
    let mut songs: Vec<(i64, u64)> = Vec::new();
    let mut streams_of: Vec<i64> = Vec::new();
    let mut claimed = Claimed::new();
    let mut flush = |market: &Option<Market>,
                     songs: &mut Vec<(i64, u64)>,
                     streams_of: &mut Vec<i64>,
                     totals: &mut SongTotals| {
        if let Some(m) = market {
            let pool = pools.get(m).copied().unwrap_or(0);
            claimed.insert(m.clone(), pool);
            for ((&(song, _), &streams), amount) in songs
                .iter()
                .zip(streams_of.iter())
                .zip(allocate(pool, songs))
            {
                totals.insert((m.clone(), song), (streams, amount));
            }
        }
        songs.clear();
        streams_of.clear();
    };
    let watch = Progress::start("market-song rows", None);
    while let Some(b) = stream.next().await.transpose()? {
        watch.add(b.num_rows() as u64, 0);
        let (country, currency) = (
            b.column(0).as_string_view_or_utf8()?,
            b.column(1).as_string_view_or_utf8()?,
        );
        let song = b.column(2).as_primitive::<Int64Type>();
        let streams = b.column(3).as_primitive::<Int64Type>();
        let weight = b.column(4).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let m = (country[i].clone(), currency[i].clone());
            if market.as_ref() != Some(&m) {
                flush(&market, &mut songs, &mut streams_of, &mut totals);
                market = Some(m);
            }
            songs.push((song.value(i), weight.value(i) as u64));
            streams_of.push(streams.value(i));
        }
    }
    flush(&market, &mut songs, &mut streams_of, &mut totals);
    Ok((totals, claimed))
}

/// User-centric: each subscription's revenue over its user's songs by streams.
pub(crate) async fn user_centric(
    sql: &Sql<'_>,
    month: &Month,
    weighting: Option<ArtistCentric>,
) -> Result<(SongTotals, Claimed)> {
    let group: Vec<&str> = SUBSCRIPTION_COLUMNS.iter().map(|c| c.0).collect();
    let mut columns = SUBSCRIPTION_COLUMNS.to_vec();
    columns.extend([
        ("song_id", DataType::Int64),
        ("streams", DataType::Int64),
        ("weight", DataType::Int64),
    ]);
    let mut stream = sql
        .stream(
            &streams_sql(sql, month, &group, weighting),
            schema(&columns),
        )
        .await?;
    let mut totals = SongTotals::new();
    // The subscription being split: (id, market, revenue), its songs' weights and streams.
    let mut current: Option<(i64, Market, i128)> = None;
    let mut songs: Vec<(i64, u64)> = Vec::new();
    let mut streams_of: Vec<i64> = Vec::new();
    let mut claimed = Claimed::new();
    let mut flush = |current: &Option<(i64, Market, i128)>,
                     songs: &mut Vec<(i64, u64)>,
                     streams_of: &mut Vec<i64>,
                     totals: &mut SongTotals| {
        if let Some((_, m, revenue)) = current {
            *claimed.entry(m.clone()).or_default() += *revenue;
            for ((&(song, _), &streams), amount) in songs
                .iter()
                .zip(streams_of.iter())
                .zip(allocate(*revenue, songs))
            {
                let e = totals.entry((m.clone(), song)).or_default();
                e.0 += streams;
                e.1 += amount;
            }
        }
        songs.clear();
        streams_of.clear();
    };
    let watch = Progress::start("subscription-song rows", None);
    while let Some(b) = stream.next().await.transpose()? {
        watch.add(b.num_rows() as u64, 0);
        let id = b.column(0).as_primitive::<Int64Type>();
        let (country, currency) = (
            b.column(1).as_string_view_or_utf8()?,
            b.column(2).as_string_view_or_utf8()?,
        );
        let price = b.column(3).as_primitive::<Decimal128Type>();
        let start = b.column(4).as_primitive::<Date32Type>();
        let end = b.column(5).as_primitive::<Date32Type>();
        let song = b.column(6).as_primitive::<Int64Type>();
        let streams = b.column(7).as_primitive::<Int64Type>();
        let weight = b.column(8).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if current.as_ref().map(|c| c.0) != Some(id.value(i)) {
                flush(&current, &mut songs, &mut streams_of, &mut totals);
                let days = month.active_days(start.value(i), end.is_valid(i).then(|| end.value(i)));
                let revenue =
                    subscription_revenue(price.value(i), &currency[i], days, month.days())?;
                current = Some((
                    id.value(i),
                    (country[i].clone(), currency[i].clone()),
                    revenue,
                ));
            }
            songs.push((song.value(i), weight.value(i) as u64));
            streams_of.push(streams.value(i));
        }
    }
    flush(&current, &mut songs, &mut streams_of, &mut totals);
    Ok((totals, claimed))
}

/// Pools, song amounts and the catalog, from whichever engine.
pub(crate) async fn attribute(
    sql: &Sql<'_>,
    model: Model,
    weighting: Option<ArtistCentric>,
    month: &Month,
) -> Result<Attribution> {
    let pools = pools(sql, month).await?;
    let (by_song, claimed) = match model {
        Model::ProRata => pro_rata(sql, month, &pools, weighting).await?,
        Model::UserCentric => user_centric(sql, month, weighting).await?,
    };
    let catalog = catalog(sql).await?;
    Ok(Attribution {
        pools,
        claimed,
        by_song,
        catalog,
    })
}

/// What the engine's part of a run found: pools, what streams claimed, the song amounts and the
/// catalog.
pub(crate) struct Attribution {
    pub(crate) pools: BTreeMap<Market, i128>,
    pub(crate) claimed: Claimed,
    pub(crate) by_song: SongTotals,
    pub(crate) catalog: HashMap<i64, (i64, i64)>,
}
