//! The reconciliation that fails a run whose splits lost or invented a minor unit.

use std::collections::BTreeMap;

use crate::*;

/// One market's reconciliation, in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub market: (String, String),
    pub pool: i128,
    pub attributed: i128,
    pub unattributed: i128,
    pub difference: i128,
}

/// Reconciles each market: `unattributed` is what no stream claimed (the pool of a market with
/// no streams, the revenue of subscribers who streamed nothing), found from the pools and the
/// claims alone; `attributed` is the sum of the songs' amounts. Their difference,
/// `pool - attributed - unattributed`, is then 0 only when the splits handed out exactly what the
/// streams claimed, so a split that loses or invents a minor unit fails the run (exit 70) before
/// anything is published.
pub fn reconcile(
    pools: &BTreeMap<Market, i128>,
    claimed: &Claimed,
    attributed: &BTreeMap<Market, i128>,
) -> Result<Vec<Reconciled>> {
    let mut markets: Vec<&Market> = pools
        .keys()
        .chain(claimed.keys())
        .chain(attributed.keys())
        .collect();
    markets.sort();
    markets.dedup();
    let mut rows = Vec::with_capacity(markets.len());
    let mut broken = Vec::new();
    for m in markets {
        let pool = pools.get(m).copied().unwrap_or(0);
        let claim = claimed.get(m).copied().unwrap_or(0);
        let attr = attributed.get(m).copied().unwrap_or(0);
        let unattributed = pool - claim;
        let difference = pool - attr - unattributed;
        if difference != 0 || unattributed < 0 {
            broken.push(format!(
                "{}/{}: pool {pool}, attributed {attr}, unattributed {unattributed}, difference {difference}",
                m.0, m.1
            ));
        }
        rows.push(Reconciled {
            market: m.clone(),
            pool,
            attributed: attr,
            unattributed,
            difference,
        });
    }
    if !broken.is_empty() {
        return Err(Error::Internal(format!(
            "the month does not reconcile (minor units): {}",
            broken.join("; ")
        )));
    }
    Ok(rows)
}
