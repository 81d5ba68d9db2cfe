#!/usr/bin/env bash
# Benchmark of revenue against DuckDB and pandas on one generated month.
#   BENCH_REV_PLAYS_PER_DAY (default 1000000), BENCH_REV_USERS (default 200000), BENCH_RUNS (default 3),
#   BENCH_THREADS (default: all cores). Writes bench/results/revenue.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
PY=$(scripts/python-env.sh)
# revenue --engine postgres runs against this server (found or started by the script).
export DATABASE_URL="$(scripts/postgres.sh)"
exec "$PY" bench/revenue.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --plays-per-day "${BENCH_REV_PLAYS_PER_DAY:-1000000}" --users "${BENCH_REV_USERS:-200000}" \
  --runs "${BENCH_RUNS:-3}" --threads "${BENCH_THREADS:-$(nproc)}" \
  --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}" --out bench/results/revenue
