#!/usr/bin/env python3
"""Benchmark driver: revenue (pro-rata, DataFusion engine) against DuckDB (bench/duckdb_revenue.py)
and pandas (bench/pandas_revenue.py) on the same generated month, same thread count. Reports
medians of --runs runs and ratios against DuckDB measured in the same session, and checks that
all three agree to the cent."""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))
from measure import host, measure  # noqa: E402

MONTH = "2026-11"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--plays-per-day", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(a.work, f"rev-{a.plays_per_day}-{a.users}")
    first = date(2026, 11, 1)
    if not os.path.exists(os.path.join(data, "subscriptions")):
        print(f"generating 30 days x {a.plays_per_day:,} plays, {a.users:,} users ...", flush=True)
        for i in range(30):
            d = first + timedelta(days=i)
            sets = "plays" + (",songs,subscriptions" if i == 29 else "")
            subprocess.run([os.path.join(a.bin_dir, "datagen"), "--date", str(d), "--data-root", data, "--plays",
                            str(a.plays_per_day), "--users", str(a.users), "--songs", "50000", "--datasets", sets],
                           check=True, capture_output=True, env=dict(os.environ, RUST_LOG="warn"))
    size_gb = sum(f.stat().st_size for f in pathlib.Path(data).rglob("*.parquet")) / 1e9
    t = str(a.threads)
    env = dict(os.environ, RUST_LOG="warn", POLARS_MAX_THREADS=t, OMP_NUM_THREADS=t)
    py = sys.executable
    configs = {
        "revenue (DataFusion)": lambda out: [os.path.join(a.bin_dir, "revenue"), "--month", MONTH, "--data-root", data,
                                             "--threads", t, "--spill-dir", out],
        # The client's RSS only: PostgreSQL's own memory (shared_buffers, work_mem) is the server's.
        **({"revenue (PostgreSQL pushdown)": lambda out: [
            os.path.join(a.bin_dir, "revenue"), "--month", MONTH, "--data-root", data, "--threads", t,
            "--spill-dir", out, "--engine", "postgres", "--database-url", os.environ["DATABASE_URL"]]}
           if os.environ.get("DATABASE_URL") else {}),
        "DuckDB": lambda out: [py, os.path.join(here, "duckdb_revenue.py"), data, MONTH, "pro-rata", t,
                               os.path.join(out, "r.json")],
        "pandas": lambda out: [py, os.path.join(here, "pandas_revenue.py"), data, MONTH, os.path.join(out, "r.json")],
    }
    results = {}
    for name, cmd in configs.items():
        runs = []
        for i in range(a.runs):
            out = os.path.join(a.work, "out", f"rev-{name.split()[0]}-{i}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            runs.append(measure(cmd(out), env=env))
            print(f"{name} run {i + 1}: {runs[-1]['wall_s']:.2f} s, {runs[-1]['peak_rss_mb']:.0f} MB", flush=True)
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[name]["runs"] = runs
    # Agreement: the pipeline's song amounts against both references, to the minor unit.
    import duckdb
    from duckdb_revenue import digits
    ours = {}
    for c, cur, s, amount in duckdb.connect().execute(
            f"SELECT country, currency, song_id, CAST(amount AS VARCHAR) FROM "
            f"read_parquet('{data}/revenue_by_song/month={MONTH}/*.parquet')").fetchall():
        from decimal import Decimal
        ours[(c, cur, s)] = int(Decimal(amount) * 10 ** digits(cur))
    agree = {}
    for name in ["DuckDB", "pandas"]:
        ref = json.loads(pathlib.Path(a.work, "out", f"rev-{name}-0", "r.json").read_text())
        theirs = {(r[0], r[1], r[2]): r[-1] for r in ref["songs"]}
        agree[name] = theirs == ours
    duck = results["DuckDB"]
    lines = [
        f"# revenue benchmark ({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"Input: one month, 30 days x {a.plays_per_day:,} plays ({30 * a.plays_per_day / 1e6:.0f} M plays), "
        f"{a.users:,} users, {size_gb:.2f} GB of Parquet; pro-rata; {a.threads} threads; median of {a.runs} runs; "
        f"host {host()}.",
        "",
        "| implementation | wall s | CPU s | peak RSS MB | wall / DuckDB | RSS / DuckDB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['wall_s'] / duck['wall_s']:.2f} | {r['peak_rss_mb'] / duck['peak_rss_mb']:.2f} |")
    if "revenue (PostgreSQL pushdown)" in results:
        lines += ["", "The PostgreSQL row is the pipeline process alone (COPY load, then the joins and aggregations "
                      "run in the server, whose memory is not in the figure). Its outputs are the ones checked below; "
                      "the Rust tests check they are byte-identical to DataFusion's."]
    lines += ["", "Song amounts equal to the cent: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in agree.items()),
              ""]
    report = "\n".join(lines)
    print(report)
    pathlib.Path(a.out + ".md").write_text(report)
    pathlib.Path(a.out + ".json").write_text(json.dumps(
        {"plays": 30 * a.plays_per_day, "users": a.users, "input_gb": size_gb, "threads": a.threads, "runs": a.runs,
         "agree": agree, "results": results}, indent=2))
    sys.exit(0 if all(agree.values()) else 1)


if __name__ == "__main__":
    main()
