#!/usr/bin/env bash
# Benchmark of play-counts against DuckDB and Polars on the same generated day.
#   BENCH_PLAYS (default 20000000)  plays in the day (80000000 = StreamPulse's real day, ~12 GB)
#   BENCH_RUNS  (default 3)         runs per configuration; the table reports medians
#   BENCH_THREADS (default: all cores)
#   BENCH_BEFORE_BIN              an earlier play-counts binary, measured in the same run (its
#                                 outputs must be byte-identical too); BENCH_BEFORE_LABEL names it
# Writes bench/results/play_counts.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
PY=$(scripts/python-env.sh)
exec "$PY" bench/play_counts.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --plays "${BENCH_PLAYS:-20000000}" --runs "${BENCH_RUNS:-3}" --threads "${BENCH_THREADS:-$(nproc)}" \
  --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}" --out bench/results/play_counts \
  ${BENCH_BEFORE_BIN:+--before-bin "$BENCH_BEFORE_BIN" --before-label "${BENCH_BEFORE_LABEL:-before}"}
