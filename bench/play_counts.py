#!/usr/bin/env python3
"""Benchmark driver: play-counts (default budget and --memory-limit 256MiB) against DuckDB and
Polars on one generated day, same thread count. Reports medians of --runs runs and ratios
against DuckDB measured in the same run, and checks that the 256 MiB run wrote the same bytes."""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(__file__))
from measure import digest, host, measure  # noqa: E402

DATE = "2026-11-26"



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--plays", type=int, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--before-bin", help="an earlier play-counts binary to measure in the same run (before/after)")
    ap.add_argument("--before-label", default="before")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(a.work, f"data-{a.plays}")
    csv = os.path.join(data, "exports", f"plays-{DATE}.csv")
    if not os.path.exists(csv):
        users, songs = max(a.plays // 16, 1000), max(a.plays // 200, 1000)
        print(f"generating {a.plays} plays ({users} users, {songs} songs) ...", flush=True)
        gen = measure([os.path.join(a.bin_dir, "datagen"), "--date", DATE, "--data-root", data, "--plays", str(a.plays),
                       "--users", str(users), "--songs", str(songs), "--bad-rows", "0.0005", "--datasets", "plays-csv",
                       "--threads", str(a.threads)])
        print(f"datagen: {gen['wall_s']:.1f} s, {a.plays / gen['wall_s'] / 1e6:.2f} M plays/s, "
              f"peak RSS {gen['peak_rss_mb']:.0f} MB", flush=True)
    size_mb = os.path.getsize(csv) / 1e6
    py = sys.executable
    pc = os.path.join(a.bin_dir, "play-counts")
    env = dict(os.environ, RUST_LOG="warn")
    configs = {
        "play-counts (default 2GiB)": lambda out: [pc, "--date", DATE, "--input", csv, "--data-root", out,
                                                  "--threads", str(a.threads)],
        "play-counts (--memory-limit 256MiB)": lambda out: [pc, "--date", DATE, "--input", csv, "--data-root", out,
                                                           "--threads", str(a.threads), "--memory-limit", "256MiB"],
    }
    if a.before_bin:
        configs[f"play-counts {a.before_label} (default 2GiB)"] = lambda out: [
            a.before_bin, "--date", DATE, "--input", csv, "--data-root", out, "--threads", str(a.threads)]
    configs |= {
        "duckdb": lambda out: [py, os.path.join(here, "duckdb_play_counts.py"), csv, DATE, out, str(a.threads)],
        "polars": lambda out: [py, os.path.join(here, "polars_play_counts.py"), csv, DATE, out],
    }
    results, digests = {}, {}
    for name, cmd in configs.items():
        runs = []
        for i in range(a.runs):
            out = os.path.join(a.work, "out", "".join(c if c.isalnum() else "-" for c in name) + str(i))
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            env_run = dict(env, POLARS_MAX_THREADS=str(a.threads))
            runs.append(measure(cmd(out), env=env_run))
            if name.startswith("play-counts"):
                digests.setdefault(name, set()).add(digest(out, DATE))
            print(f"{name} run {i + 1}: {runs[-1]['wall_s']:.2f} s, {runs[-1]['peak_rss_mb']:.0f} MB", flush=True)
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[name]["runs"] = runs
    same = len(set().union(*digests.values())) == 1
    duck = results["duckdb"]
    lines = [
        f"# play-counts benchmark ({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"Input: {a.plays:,} plays, {size_mb:,.0f} MB CSV; {a.threads} threads; median of {a.runs} runs; "
        f"host {host()}.",
        "",
        "| engine | wall s | CPU s | peak RSS MB | wall / DuckDB | RSS / DuckDB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['wall_s'] / duck['wall_s']:.2f} | {r['peak_rss_mb'] / duck['peak_rss_mb']:.2f} |")
    lines += ["", f"play-counts outputs identical across runs and budgets: {'yes' if same else 'NO'}", ""]
    report = "\n".join(lines)
    print(report)
    pathlib.Path(a.out + ".md").write_text(report)
    pathlib.Path(a.out + ".json").write_text(json.dumps(
        {"plays": a.plays, "csv_mb": size_mb, "threads": a.threads, "runs": a.runs, "identical_outputs": same,
         "results": results}, indent=2))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
