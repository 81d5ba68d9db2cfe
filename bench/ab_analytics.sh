#!/usr/bin/env bash
# Benchmark of ab-analytics against the pandas + SciPy job it replaces, on the same files.
#   BENCH_AB_GB (default 1.5)   Parquet input size (3 experiments, assignments + user_metrics)
#   BENCH_RUNS  (default 3)     runs per implementation; the table reports medians
#   BENCH_THREADS (default: all cores)
# Writes bench/results/ab_analytics.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
PY=$(scripts/python-env.sh)
exec "$PY" bench/ab_analytics.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --gb "${BENCH_AB_GB:-1.5}" --runs "${BENCH_RUNS:-3}" --threads "${BENCH_THREADS:-$(nproc)}" \
  --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}" --out bench/results/ab_analytics
