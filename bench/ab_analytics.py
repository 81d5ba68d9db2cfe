#!/usr/bin/env python3
"""Benchmark driver: ab-analytics against the pandas + SciPy job it replaces (bench/pandas_ab.py),
on the same generated files: three experiments, --gb of Parquet in all. Reports medians of --runs
runs of each, the ratio measured in the same session, and checks that both agree (to 1e-9) and
that reruns of ab-analytics write the same bytes."""
import argparse
import hashlib
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(__file__))
from measure import host, measure  # noqa: E402

DATE = "2026-11-26"
# Parquet bytes per enrolled user (assignments + user_metrics), measured on datagen output (69.6 MB
# for 3 x 1 M users); used to size the day for --gb.
BYTES_PER_USER = 23.2


def input_bytes(root):
    return sum(f.stat().st_size for ds in ["assignments", "user_metrics", "experiments"]
               for f in pathlib.Path(root, ds, f"date={DATE}").glob("*.parquet"))


def digest(root):
    h = hashlib.sha256()
    for f in sorted(pathlib.Path(root).rglob("*")):
        if f.is_file() and ("ab_results" in f.parts or "ab_reports" in f.parts):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def agree(out, reference):
    worst = 0.0
    for exp, ref in reference.items():
        report = json.loads(pathlib.Path(out, "ab_reports", f"date={DATE}", f"{exp}.json").read_text())
        got = {(r["metric"], r["variant"], r["cuped"]): r for r in report["results"]}
        for want in ref["results"]:
            have = got[(want["metric"], want["variant"], want["cuped"])]
            for k in ["control_mean", "treatment_mean", "diff", "diff_ci_low", "diff_ci_high", "rel_lift",
                      "p_value", "p_holm", "p_bh"]:
                a, b = have[k], want[k]
                if a is None or b is None or math.isnan(b) or max(abs(a), abs(b)) < 1e-300:
                    continue
                worst = max(worst, abs(a - b) / max(abs(a), abs(b)))
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--gb", type=float, default=1.5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    per_experiment = int(a.gb * 1e9 / BYTES_PER_USER / 3)
    data = os.path.join(a.work, f"ab-{per_experiment}")
    if not os.path.exists(os.path.join(data, "user_metrics")):
        print(f"generating 3 experiments x {per_experiment:,} users ...", flush=True)
        gen = measure([os.path.join(a.bin_dir, "datagen"), "--date", DATE, "--data-root", data, "--datasets",
                       "experiments", "--users", str(per_experiment), "--experiment-users", str(per_experiment),
                       "--threads", str(a.threads)])
        print(f"datagen: {gen['wall_s']:.1f} s, peak RSS {gen['peak_rss_mb']:.0f} MB", flush=True)
    size_gb = input_bytes(data) / 1e9
    env = dict(os.environ, RUST_LOG="warn")
    # pandas first: each ab-analytics run starts from no outputs, and the last one's are checked.
    configs = {
        "pandas + SciPy": lambda out: [sys.executable, os.path.join(here, "pandas_ab.py"), data, DATE,
                                       os.path.join(out, "results.json")],
        "ab-analytics": lambda out: [os.path.join(a.bin_dir, "ab-analytics"), "--date", DATE, "--data-root", data,
                                     "--threads", str(a.threads), "--spill-dir", out],
    }
    results, digests = {}, set()
    for name, cmd in configs.items():
        runs = []
        for i in range(a.runs):
            out = os.path.join(a.work, "out", f"ab-{name.split()[0]}-{i}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            # ab-analytics writes under its data root: give each run a fresh copy of the outputs.
            for ds in ["ab_results", "ab_reports"]:
                shutil.rmtree(os.path.join(data, ds), ignore_errors=True)
            runs.append(measure(cmd(out), env=env))
            if name == "ab-analytics":
                digests.add(digest(data))
            print(f"{name} run {i + 1}: {runs[-1]['wall_s']:.2f} s, {runs[-1]['peak_rss_mb']:.0f} MB", flush=True)
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[name]["runs"] = runs
    reference = json.loads(pathlib.Path(a.work, "out", "ab-pandas-0", "results.json").read_text())
    worst = agree(data, reference)
    base = results["pandas + SciPy"]
    lines = [
        f"# ab-analytics benchmark ({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"Input: 3 experiments x {per_experiment:,} users, {size_gb:.2f} GB of Parquet (assignments + user_metrics); "
        f"{a.threads} threads; median of {a.runs} runs; host {host()}.",
        "",
        "| implementation | wall s | CPU s | peak RSS MB | wall / pandas | RSS / pandas |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['wall_s'] / base['wall_s']:.3f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.3f} |")
    same = len(digests) == 1
    lines += ["", f"Largest relative difference from pandas + SciPy over every statistic: {worst:.1e}",
              f"ab-analytics outputs identical across runs: {'yes' if same else 'NO'}", ""]
    report = "\n".join(lines)
    print(report)
    pathlib.Path(a.out + ".md").write_text(report)
    pathlib.Path(a.out + ".json").write_text(json.dumps(
        {"experiments": 3, "users_per_experiment": per_experiment, "input_gb": size_gb, "threads": a.threads,
         "runs": a.runs, "max_rel_diff": worst, "identical_outputs": same, "results": results}, indent=2))
    sys.exit(0 if same and worst < 1e-9 else 1)


if __name__ == "__main__":
    main()
