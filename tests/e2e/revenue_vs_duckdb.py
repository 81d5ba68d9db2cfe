#!/usr/bin/env python3
"""End-to-end check of revenue against an independent DuckDB + Python computation.

Generates several days of one month with datagen (subscriptions that start, end, or churn and
come back inside the month, free plans, users with no plays, a dozen currencies including JPY),
runs revenue with both models, and recomputes everything with DuckDB SQL (pro-rated revenue with
Python's Decimal half-even rounding, streams joined with the subscription active on the play's
day) and a Python largest-remainder split. Every amount must be equal to the minor unit, and
every market must reconcile to 0.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import duckdb

MONTH = "2026-11"
DAYS = [date(2026, 11, d) for d in (3, 14, 30)]
FIRST, NEXT, MONTH_DAYS = date(2026, 11, 1), date(2026, 12, 1), 30
ZERO_DECIMALS = {"JPY", "KRW", "CLP", "VND", "ISK", "UGX", "PYG", "XAF", "XOF"}
THREE_DECIMALS = {"BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD"}

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def digits(currency):
    return 0 if currency in ZERO_DECIMALS else 3 if currency in THREE_DECIMALS else 2


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], env=dict(os.environ, RUST_LOG="warn"), capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    return p.returncode


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


def reference(root):
    con = duckdb.connect()
    subs_dir = os.path.join(root, "subscriptions", f"date={DAYS[-1]}")
    con.execute(f"CREATE TABLE subs AS SELECT * FROM read_parquet('{subs_dir}/*.parquet')")
    plays = ", ".join(f"'{root}/plays/date={d}/*.parquet'" for d in DAYS)
    con.execute(f"CREATE TABLE plays AS SELECT user_id, song_id, played_at, ms_played FROM read_parquet([{plays}])")
    subs = con.execute(f"""
        SELECT subscription_id, user_id, country, currency, CAST(monthly_price AS VARCHAR), started_at, ended_at
        FROM subs WHERE monthly_price > 0 AND started_at < DATE '{NEXT}'
          AND (ended_at IS NULL OR ended_at > DATE '{FIRST}')""").fetchall()
    revenue = {}
    pools = defaultdict(int)
    for sid, _, country, currency, price, start, end in subs:
        active = (min(end or NEXT, NEXT) - max(start, FIRST)).days
        minor = (Decimal(price) * 10 ** digits(currency) * active / MONTH_DAYS).quantize(Decimal(1), ROUND_HALF_EVEN)
        revenue[sid] = int(minor)
        pools[(country, currency)] += int(minor)
    rows = con.execute(f"""
        SELECT s.subscription_id, s.country, s.currency, p.song_id, COUNT(*) AS streams
        FROM plays p JOIN subs s ON p.user_id = s.user_id
          AND CAST(p.played_at AS DATE) >= s.started_at
          AND (s.ended_at IS NULL OR CAST(p.played_at AS DATE) < s.ended_at)
        WHERE p.ms_played >= 30000 AND s.monthly_price > 0
          AND CAST(p.played_at AS DATE) >= DATE '{FIRST}' AND CAST(p.played_at AS DATE) < DATE '{NEXT}'
        GROUP BY ALL""").fetchall()
    models = {}
    # pro-rata
    market_songs = defaultdict(lambda: defaultdict(int))
    for _, country, currency, song, n in rows:
        market_songs[(country, currency)][song] += n
    pr = {}
    for m, songs in market_songs.items():
        for song, amount in split(pools[m], list(songs.items())).items():
            pr[(m, song)] = (songs[song], amount)
    models["pro-rata"] = pr
    # user-centric
    per_sub = defaultdict(dict)
    for sid, country, currency, song, n in rows:
        per_sub[(sid, country, currency)][song] = n
    uc = defaultdict(lambda: [0, 0])
    for (sid, country, currency), songs in per_sub.items():
        for song, amount in split(revenue[sid], list(songs.items())).items():
            uc[((country, currency), song)][0] += songs[song]
            uc[((country, currency), song)][1] += amount
    models["user-centric"] = {k: tuple(v) for k, v in uc.items()}
    return pools, models


def output(root):
    con = duckdb.connect()
    got = {}
    for country, currency, song, streams, amount in con.execute(
            f"SELECT country, currency, song_id, streams, CAST(amount AS VARCHAR) FROM "
            f"read_parquet('{root}/revenue_by_song/month={MONTH}/*.parquet')").fetchall():
        got[((country, currency), song)] = (streams, int(Decimal(amount) * 10 ** digits(currency)))
    rec = {}
    for country, currency, *money in con.execute(
            f"SELECT country, currency, CAST(pool AS VARCHAR), CAST(attributed AS VARCHAR), "
            f"CAST(unattributed AS VARCHAR), CAST(difference AS VARCHAR) FROM "
            f"read_parquet('{root}/revenue_reconciliation/month={MONTH}/*.parquet')").fetchall():
        rec[(country, currency)] = [int(Decimal(x) * 10 ** digits(currency)) for x in money]
    return got, rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "d")
        for d in DAYS:
            ok = run([b / "datagen", "--date", d, "--data-root", root, "--users", "30000", "--songs", "3000",
                      "--plays", "150000", "--datasets", "plays,songs,subscriptions"]) == 0
            check(f"datagen {d}", ok)
        pools, models = reference(root)
        check(f"reference: {len(pools)} markets, {len(models['pro-rata'])} (market, song) pairs", len(pools) > 5)
        for model, want in models.items():
            check(f"revenue --model {model} runs", run([b / "revenue", "--month", MONTH, "--model", model,
                                                       "--data-root", root]) == 0)
            got, rec = output(root)
            diff = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
            check(f"{model}: every (market, song) amount and stream count equals DuckDB's ({len(want)} rows)",
                  not diff, f"{len(diff)} differ, e.g. {[(k, got.get(k), want.get(k)) for k in diff[:3]]}")
            check(f"{model}: pools equal DuckDB's, every market reconciles to 0",
                  {m: r[0] for m, r in rec.items()} == dict(pools) and all(r[3] == 0 for r in rec.values()))
            attributed = defaultdict(int)
            for (m, _), (_, amount) in want.items():
                attributed[m] += amount
            check(f"{model}: attributed and unattributed per market",
                  all(rec[m][1] == attributed[m] and rec[m][2] == pools[m] - attributed[m] for m in pools))
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
