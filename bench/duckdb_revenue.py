#!/usr/bin/env python3
"""Revenue attribution in DuckDB SQL plus a Python largest-remainder split: the benchmark's DuckDB
baseline and the independent reference of tests/e2e/revenue_vs_duckdb.py.

    duckdb_revenue.py DATA_ROOT YYYY-MM MODEL THREADS OUT.json
"""
import glob
import json
import os
import sys
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import duckdb

# ISO 4217 minor units other than 2 (the reference's own copy, written from the standard).
ZERO_DECIMALS = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                 "VND", "VUV", "XAF", "XOF", "XPF"}
THREE_DECIMALS = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
FOUR_DECIMALS = {"CLF", "UYW"}


def digits(currency):
    if currency in ZERO_DECIMALS:
        return 0
    return 3 if currency in THREE_DECIMALS else 4 if currency in FOUR_DECIMALS else 2


def split(pool, shares):
    """Largest remainder, ties to the smaller key: {key: amount}."""
    total = sum(w for _, w in shares)
    if total == 0:
        return {}
    out, rem = {}, []
    for k, w in shares:
        q, r = divmod(pool * w, total)
        out[k] = q
        rem.append((-r, k))
    for _, k in sorted(rem)[: pool - sum(out.values())]:
        out[k] += 1
    return out


def month_bounds(month):
    first = date.fromisoformat(f"{month}-01")
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first, nxt


def snapshot(root, dataset, last_day):
    dates = sorted(os.path.basename(p)[5:] for p in glob.glob(os.path.join(root, dataset, "date=*")))
    after = [d for d in dates if d >= last_day.isoformat()]
    return os.path.join(root, dataset, f"date={after[0] if after else dates[-1]}")


def attribute(root, month, model, threads=None, weighting=None):
    """(pools {market: minor}, {(market, song): (streams, minor)}).

    weighting = (min_streams, min_listeners, user_cap) applies the artist-centric rule: songs of
    artists with at least min_streams paid streams in the month from at least min_listeners
    users weigh 2x, and a user's streams weigh min(total, cap) / total each; the weight of a
    (subscription, song) is streams x boost x 1e6 x min(total, cap) // total."""
    first, nxt = month_bounds(month)
    days = (nxt - first).days
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    subs_dir = snapshot(root, "subscriptions", nxt - timedelta(days=1))
    con.execute(f"CREATE VIEW subs AS SELECT * FROM read_parquet('{subs_dir}/*.parquet')")
    parts = [os.path.join(root, "plays", f"date={first + timedelta(days=i)}")
             for i in range(days + 1) if os.path.exists(os.path.join(root, "plays", f"date={first + timedelta(days=i)}"))]
    plays = ", ".join(f"'{p}/*.parquet'" for p in parts)
    con.execute(f"CREATE VIEW plays AS SELECT user_id, song_id, played_at, ms_played FROM read_parquet([{plays}])")
    subs = con.execute(f"""
        SELECT subscription_id, country, currency, CAST(monthly_price AS VARCHAR), started_at, ended_at
        FROM subs WHERE monthly_price > 0 AND started_at < DATE '{nxt}'
          AND (ended_at IS NULL OR ended_at > DATE '{first}')""").fetchall()
    revenue, pools = {}, defaultdict(int)
    for sid, country, currency, price, start, end in subs:
        active = (min(end or nxt, nxt) - max(start, first)).days
        minor = (Decimal(price) * 10 ** digits(currency) * active / days).quantize(Decimal(1), ROUND_HALF_EVEN)
        revenue[sid] = int(minor)
        pools[(country, currency)] += int(minor)
    rows = con.execute(f"""
        SELECT s.subscription_id, s.country, s.currency, p.song_id, COUNT(*) AS streams, s.user_id
        FROM plays p JOIN subs s ON p.user_id = s.user_id
          AND CAST(p.played_at AS DATE) >= s.started_at
          AND (s.ended_at IS NULL OR CAST(p.played_at AS DATE) < s.ended_at)
        WHERE p.ms_played >= 30000 AND s.monthly_price > 0
          AND CAST(p.played_at AS DATE) >= DATE '{first}' AND CAST(p.played_at AS DATE) < DATE '{nxt}'
        GROUP BY ALL""").fetchall()
    weight = {}  # (subscription, song) -> weight
    if weighting:
        min_streams, min_listeners, cap = weighting
        songs_dir = snapshot(root, "songs", nxt - timedelta(days=1))
        artist = dict(con.execute(f"SELECT song_id, artist_id FROM read_parquet('{songs_dir}/*.parquet')").fetchall())
        total, a_streams, a_users = defaultdict(int), defaultdict(int), defaultdict(set)
        for _, _, _, song, n, user in rows:
            total[user] += n
            a_streams[artist.get(song)] += n
            a_users[artist.get(song)].add(user)
        boosted = {a for a in a_streams if a is not None and a_streams[a] >= min_streams
                   and len(a_users[a]) >= min_listeners}
        for sid, _, _, song, n, user in rows:
            boost = 2 if artist.get(song) in boosted else 1
            weight[(sid, song)] = n * boost * 1_000_000 * min(total[user], cap) // total[user]
    else:
        for sid, _, _, song, n, _ in rows:
            weight[(sid, song)] = n
    if model == "pro-rata":
        market_songs = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for sid, country, currency, song, n, _ in rows:
            market_songs[(country, currency)][song][0] += n
            market_songs[(country, currency)][song][1] += weight[(sid, song)]
        out = {}
        for m, songs in market_songs.items():
            for song, amount in split(pools[m], [(k, v[1]) for k, v in songs.items()]).items():
                out[(m, song)] = (songs[song][0], amount)
        return pools, out
    per_sub = defaultdict(dict)
    for sid, country, currency, song, n, _ in rows:
        per_sub[(sid, country, currency)][song] = n
    uc = defaultdict(lambda: [0, 0])
    for (sid, country, currency), songs in per_sub.items():
        shares = [(song, weight[(sid, song)]) for song in songs]
        for song, amount in split(revenue[sid], shares).items():
            uc[((country, currency), song)][0] += songs[song]
            uc[((country, currency), song)][1] += amount
    return pools, {k: tuple(v) for k, v in uc.items()}


def main():
    root, month, model, threads, out = sys.argv[1:6]
    pools, songs = attribute(root, month, model, threads)
    with open(out, "w") as f:
        json.dump({"pools": {"/".join(k): v for k, v in pools.items()},
                   "songs": [[m[0], m[1], s, n, a] for (m, s), (n, a) in sorted(songs.items())]}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
