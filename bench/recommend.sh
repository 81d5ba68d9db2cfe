#!/usr/bin/env bash
# Benchmark of recommend against NumPy and FAISS on the same generated vectors.
#   BENCH_REC_USERS (default 200000), BENCH_REC_SONGS (default 20000), BENCH_RUNS (default 3),
#   BENCH_THREADS (default: all cores). Writes bench/results/recommend.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
PY=$(scripts/python-env.sh)
exec "$PY" bench/recommend.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --users "${BENCH_REC_USERS:-200000}" --songs "${BENCH_REC_SONGS:-20000}" --runs "${BENCH_RUNS:-3}" \
  --threads "${BENCH_THREADS:-$(nproc)}" --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}" \
  --out bench/results/recommend
