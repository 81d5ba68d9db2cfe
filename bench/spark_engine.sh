#!/usr/bin/env bash
# Benchmark of play-counts' Spark engine (bench/spark_engine.py), with Sail and Apache Spark
# started by scripts/with-spark.sh.
#   BENCH_PLAYS (default 2000000)  plays in the 1x day (the 4x day is measured too)
#   BENCH_RUNS  (default 3)        runs per configuration; the table reports medians
# Writes bench/results/spark_engine.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
SPARK_PY=$(scripts/python-env.sh tests/spark/requirements-spark.txt spark)
exec scripts/with-spark.sh "$SPARK_PY" bench/spark_engine.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --plays "${BENCH_PLAYS:-2000000}" --runs "${BENCH_RUNS:-3}" --spark-python "$SPARK_PY" \
  --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}" --out bench/results/spark_engine
