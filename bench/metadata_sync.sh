#!/usr/bin/env bash
# Benchmark of metadata-sync against the partner's published limits, on a local metadata-api
# that behaves like the partner (300 ms latency, 50 requests/s with 429 + Retry-After).
#   BENCH_SYNC_SONGS (default 5000)  changed songs to sync (a full sync of a catalog that size)
#   BENCH_FAULTY_SONGS (default 2000) songs for the faulty partner (8 % 5xx, 1 % hang 15 s)
#   BENCH_SEQ_SONGS  (default 200)   songs for the sequential client, projected to BENCH_SYNC_SONGS
#   BENCH_RUNS       (default 3)     runs; the table reports medians
# Writes bench/results/metadata_sync.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streampulse/target}"
PY=$(scripts/python-env.sh)
exec "$PY" bench/metadata_sync.py --bin-dir "$CARGO_TARGET_DIR/release" \
  --songs "${BENCH_SYNC_SONGS:-5000}" --faulty-songs "${BENCH_FAULTY_SONGS:-2000}" --seq-songs "${BENCH_SEQ_SONGS:-200}" \
  --runs "${BENCH_RUNS:-3}" --work "${BENCH_WORK:-$HOME/.cache/streampulse/bench}/metadata_sync" \
  --out bench/results/metadata_sync
