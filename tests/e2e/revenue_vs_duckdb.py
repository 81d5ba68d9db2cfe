#!/usr/bin/env python3
"""End-to-end check of revenue against an independent DuckDB + Python computation.

Generates several days of one month with datagen (subscriptions that start, end, or churn and
come back inside the month, free plans, users with no plays, a dozen currencies including JPY),
runs revenue with both models, and recomputes everything with bench/duckdb_revenue.py: DuckDB SQL
(pro-rated revenue with Python's Decimal half-even rounding, streams joined with the subscription
active on the play's day) and a Python largest-remainder split. Every amount must be equal to the minor unit, and
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
from decimal import Decimal

import duckdb

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
from duckdb_revenue import attribute, digits  # noqa: E402

MONTH = "2026-11"
DAYS = [date(2026, 11, d) for d in (3, 14, 30)]

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], env=dict(os.environ, RUST_LOG="warn"), capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    return p.returncode


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
        # Artist-centric thresholds scaled to this small month, so that some artists are boosted
        # and some are not, and some users pass the monthly cap.
        ac = (300, 100, 20)
        ac_flags = ["--artist-centric", "--artist-min-streams", str(ac[0]), "--artist-min-listeners", str(ac[1]),
                    "--user-monthly-cap", str(ac[2])]
        models = {}
        for model in ["pro-rata", "user-centric"]:
            pools, models[model] = attribute(root, MONTH, model)
            _, models[model + " artist-centric"] = attribute(root, MONTH, model, weighting=ac)
        check(f"reference: {len(pools)} markets, {len(models['pro-rata'])} (market, song) pairs", len(pools) > 5)
        check("artist-centric weighting changes some amounts",
              models["pro-rata"] != models["pro-rata artist-centric"]
              and models["user-centric"] != models["user-centric artist-centric"])
        # Both engines: embedded DataFusion, and PostgreSQL pushdown when make test gave us a server.
        engines = [("datafusion", [])]
        if os.environ.get("DATABASE_URL"):
            engines.append(("postgres", ["--engine", "postgres", "--database-url", os.environ["DATABASE_URL"]]))
        elif os.environ.get("CI"):
            check("DATABASE_URL is set under CI (make test sets it)", False)
        for engine, flags in engines:
            for model, want in models.items():
                name = f"{model} on {engine}"
                extra = ac_flags if model.endswith("artist-centric") else []
                check(f"revenue --model {model} --engine {engine} runs",
                      run([b / "revenue", "--month", MONTH, "--model", model.split()[0], "--data-root", root,
                           *flags, *extra]) == 0)
                got, rec = output(root)
                diff = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
                check(f"{name}: every (market, song) amount and stream count equals DuckDB's ({len(want)} rows)",
                      not diff, f"{len(diff)} differ, e.g. {[(k, got.get(k), want.get(k)) for k in diff[:3]]}")
                check(f"{name}: pools equal DuckDB's, every market reconciles to 0",
                      {m: r[0] for m, r in rec.items()} == dict(pools) and all(r[3] == 0 for r in rec.values()))
                attributed = defaultdict(int)
                for (m, _), (_, amount) in want.items():
                    attributed[m] += amount
                check(f"{name}: attributed and unattributed per market",
                      all(rec[m][1] == attributed[m] and rec[m][2] == pools[m] - attributed[m] for m in pools))
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
