#!/usr/bin/env bash
# Benchmark of play-ingest: a generated day of play events in a local Kafka-protocol broker
# (tansu, in memory), consumed to Parquet in batch mode.
#   BENCH_INGEST_PLAYS (default 10000000)  events in the topic
#   BENCH_RUNS         (default 3)         ingest runs (fresh group and output each); medians
# Writes bench/results/play_ingest.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
PY=$(scripts/python-env.sh)
exec scripts/with-broker.sh "$PY" bench/play_ingest.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --plays "${BENCH_INGEST_PLAYS:-10000000}" --runs "${BENCH_RUNS:-3}" \
  --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}/play_ingest" --out bench/results/play_ingest
