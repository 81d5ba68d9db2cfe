#!/usr/bin/env python3
"""Benchmark driver: recommend against NumPy (blocked matmul + argpartition) and FAISS
(IndexFlatIP, exact search) on the same generated vectors, same thread count, plus the machine's
sgemm peak (NumPy's BLAS on a 4096^3 product) measured in the same session. Reports medians of
--runs runs, achieved GFLOP/s (2 x users x songs x dim over wall time) against the peak, and the
projection to 5 M users x 100 k songs on 16 cores."""
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
from measure import host, measure  # noqa: E402

DATE = "2026-11-26"
DIM = 200


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--songs", type=int, default=20_000)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(a.work, f"rec-{a.users}-{a.songs}")
    if not os.path.exists(os.path.join(data, "user_features")):
        print(f"generating {a.users:,} users x {a.songs:,} songs ...", flush=True)
        measure([os.path.join(a.bin_dir, "datagen"), "--date", DATE, "--data-root", data, "--users", str(a.users),
                 "--songs", str(a.songs), "--datasets", "user_features,song_embeddings"])
    t = str(a.threads)
    env = dict(os.environ, RUST_LOG="warn", OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t)
    py = sys.executable
    peak = float(subprocess.run([py, os.path.join(here, "sgemm_peak.py")], env=env, capture_output=True, text=True,
                                check=True).stdout)
    print(f"sgemm peak (NumPy BLAS, {a.threads} threads): {peak:.1f} GFLOP/s", flush=True)
    configs = {
        "recommend": lambda out: [os.path.join(a.bin_dir, "recommend"), "--date", DATE, "--data-root", data, "--k",
                                  str(a.k), "--threads", t, "--spill-dir", out],
        "NumPy (matmul + argpartition)": lambda out: [py, os.path.join(here, "numpy_recommend.py"), data, DATE,
                                                      str(a.k), os.path.join(out, "r.npz")],
        "FAISS IndexFlatIP": lambda out: [py, os.path.join(here, "faiss_recommend.py"), data, DATE, str(a.k), t,
                                          os.path.join(out, "r.npz")],
    }
    flops = 2.0 * a.users * a.songs * DIM
    results = {}
    for name, cmd in configs.items():
        runs = []
        for i in range(a.runs):
            out = os.path.join(a.work, "out", f"rec-{name.split()[0]}-{i}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            runs.append(measure(cmd(out), env=env))
            print(f"{name} run {i + 1}: {runs[-1]['wall_s']:.2f} s, {runs[-1]['peak_rss_mb']:.0f} MB", flush=True)
        r = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        r["gflops"] = flops / r["wall_s"] / 1e9
        r["runs"] = runs
        results[name] = r
    faiss_wall = results["FAISS IndexFlatIP"]["wall_s"]
    ours = results["recommend"]
    # 5 M users x 100 k songs on 16 cores, at this run's per-core rate (GEMM scales with cores).
    per_core = ours["gflops"] / a.threads
    projected_s = 2.0 * 5e6 * 1e5 * DIM / (per_core * 16 * 1e9)
    lines = [
        f"# recommend benchmark ({datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"Input: {a.users:,} users x {a.songs:,} songs x {DIM} dims, K = {a.k}; {a.threads} threads; median of "
        f"{a.runs} runs; host {host()}. Wall times include reading the Parquet "
        "inputs (and, for recommend, writing the output).",
        "",
        f"sgemm peak (NumPy BLAS, 4096^3, same threads): **{peak:.1f} GFLOP/s**",
        "",
        "| implementation | wall s | CPU s | peak RSS MB | GFLOP/s | % of sgemm peak | wall / FAISS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['gflops']:.1f} | "
                     f"{100 * r['gflops'] / peak:.0f}% | {r['wall_s'] / faiss_wall:.2f} |")
    lines += ["", f"Projected recommend time for 5 M users x 100 k songs on 16 cores at this per-core rate: "
              f"{projected_s / 60:.1f} min", ""]
    report = "\n".join(lines)
    print(report)
    pathlib.Path(a.out + ".md").write_text(report)
    pathlib.Path(a.out + ".json").write_text(json.dumps(
        {"users": a.users, "songs": a.songs, "dim": DIM, "k": a.k, "threads": a.threads, "runs": a.runs,
         "sgemm_peak_gflops": peak, "projected_5m_100k_16_cores_s": projected_s, "results": results}, indent=2))


if __name__ == "__main__":
    main()
