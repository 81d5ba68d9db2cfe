#!/usr/bin/env python3
"""Pro-rata revenue attribution the pandas way (the job revenue replaces): read the month's plays,
merge with subscriptions, filter the active ones, group, split. Exact money with Python ints.

    pandas_revenue.py DATA_ROOT YYYY-MM OUT.json
"""
import json
import os
import sys
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd

from duckdb_revenue import digits, month_bounds, snapshot, split


def main():
    root, month, out = sys.argv[1:4]
    first, nxt = month_bounds(month)
    days = (nxt - first).days
    subs = pd.read_parquet(snapshot(root, "subscriptions", nxt - timedelta(days=1)))
    subs = subs[(subs.monthly_price > 0) & (subs.started_at < nxt)
                & (subs.ended_at.isna() | (subs.ended_at > first))]
    pools = {}
    for row in subs.itertuples():
        active = (min(row.ended_at if pd.notna(row.ended_at) else nxt, nxt) - max(row.started_at, first)).days
        minor = int((Decimal(row.monthly_price) * 10 ** digits(row.currency) * active / days)
                    .quantize(Decimal(1), ROUND_HALF_EVEN))
        pools[(row.country, row.currency)] = pools.get((row.country, row.currency), 0) + minor
    frames = []
    for i in range(days + 1):
        d = os.path.join(root, "plays", f"date={first + timedelta(days=i)}")
        if os.path.exists(d):
            frames.append(pd.read_parquet(d, columns=["user_id", "song_id", "played_at", "ms_played"]))
    plays = pd.concat(frames, ignore_index=True)
    plays["d"] = plays.played_at.dt.tz_convert("UTC").dt.date
    plays = plays[(plays.ms_played >= 30000) & (plays.d >= first) & (plays.d < nxt)]
    m = plays.merge(subs[["user_id", "country", "currency", "started_at", "ended_at"]], on="user_id")
    m = m[(m.d >= m.started_at) & (m.ended_at.isna() | (m.d < m.ended_at))]
    counts = m.groupby(["country", "currency", "song_id"]).size()
    result = []
    for (country, currency), g in counts.groupby(level=[0, 1]):
        shares = [(song, int(n)) for (_, _, song), n in g.items()]
        for song, amount in split(pools[(country, currency)], shares).items():
            result.append([country, currency, int(song), amount])
    with open(out, "w") as f:
        json.dump({"pools": {"/".join(k): v for k, v in pools.items()}, "songs": result}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
