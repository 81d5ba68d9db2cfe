#!/usr/bin/env python3
"""End-to-end check of the Kafka path: datagen --to-kafka -> play-ingest -> play-counts gives the
same counts as the CSV path (datagen's CSV export -> play-counts), on a real Kafka-protocol broker.

Runs against the broker of SP_KAFKA_BROKERS (scripts/with-broker.sh starts a private tansu for
it), produces one generated day
(with late plays from the day before and malformed events) to a fresh topic with 12 partitions,
ingests it in batch mode, runs play-counts on the ingested Parquet partition, and compares
daily_song_counts, daily_artist_counts and charts with those of play-counts on the same day's CSV
export, row for row (DuckDB reads both). Also checks the rejected events and the plays landing in
the partition of their own date.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import duckdb

DATE = "2026-11-26"
SCALE = ["--plays", "300000", "--users", "20000", "--songs", "5000", "--seed", "11"]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail and not ok else ''}", flush=True)


def run(cmd):
    p = subprocess.run(cmd, env=dict(os.environ, RUST_LOG="warn"), capture_output=True, text=True)
    if p.returncode != 0:
        print(" ".join(map(str, cmd)), p.stderr, sep="\n", file=sys.stderr)
    return p.returncode


def table(con, root, dataset):
    return con.execute(
        f"SELECT * FROM read_parquet('{root}/{dataset}/date={DATE}/*.parquet', hive_partitioning=false) "
        "ORDER BY ALL").fetchall()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, type=pathlib.Path)
    args = ap.parse_args()
    brokers = os.environ.get("SP_KAFKA_BROKERS")
    if not brokers:
        raise SystemExit("SP_KAFKA_BROKERS is not set: run under scripts/with-broker.sh (make test does)")
    b = args.bin_dir
    with tempfile.TemporaryDirectory() as tmp:
        csv_root, kafka_root = pathlib.Path(tmp, "csv"), pathlib.Path(tmp, "kafka")
        common = ["--date", DATE, "--late-share", "0.01", "--bad-rows", "0.0005", *SCALE]
        check("datagen writes the CSV export",
              run([b / "datagen", *common, "--data-root", csv_root, "--datasets", "plays-csv,songs"]) == 0)
        # A topic of 12 partitions, as shared/topics/topics.txt defines `plays`.
        check("datagen --to-kafka produces the same day",
              run([b / "datagen", *common, "--data-root", kafka_root, "--datasets", "songs",
                   "--to-kafka", "--kafka-brokers", brokers, "--topic", "plays"]) == 0)
        check("play-ingest --until-caught-up",
              run([b / "play-ingest", "--kafka-brokers", brokers, "--topic", "plays", "--group", "e2e",
                   "--until-caught-up", "--date", DATE, "--data-root", kafka_root]) == 0)
        con = duckdb.connect()
        files = list((kafka_root / "plays" / f"date={DATE}").glob("*.parquet"))
        check("one file per Kafka partition with plays", 1 <= len(files) <= 12, len(files))
        late = list((kafka_root / "plays").glob("date=2026-11-25/*.parquet"))
        check("late plays land in their own date's partition", len(late) > 0)
        rejects = [l for f in (kafka_root / "rejects" / "play-ingest").rglob("*.jsonl") for l in f.read_text().splitlines()]
        check("malformed events are in the rejects", len(rejects) > 0, len(rejects))

        check("play-counts on the CSV export",
              run([b / "play-counts", "--date", DATE, "--data-root", csv_root,
                   "--input", csv_root / "exports" / f"plays-{DATE}.csv"]) == 0)
        check("play-counts on the ingested partition",
              run([b / "play-counts", "--date", DATE, "--data-root", kafka_root]) == 0)
        ids_parquet = con.execute(
            f"SELECT count(*), count(DISTINCT play_id) FROM read_parquet('{kafka_root}/plays/date={DATE}/*.parquet')").fetchone()
        check("no play written twice", ids_parquet[0] == ids_parquet[1], ids_parquet)
        csv_rejected = con.execute(
            f"SELECT count(*) FROM read_json_auto('{csv_root}/rejects/play-counts/*/*.jsonl')").fetchone()[0] \
            if list((csv_root / "rejects" / "play-counts").rglob("*.jsonl")) else 0
        check("the same number of malformed plays on both paths", csv_rejected == len(rejects),
              f"csv {csv_rejected}, kafka {len(rejects)}")
        for dataset in ["daily_song_counts", "daily_artist_counts", "charts"]:
            a, k = table(con, csv_root, dataset), table(con, kafka_root, dataset)
            check(f"{dataset} equal on both paths ({len(a)} rows)", a == k and len(a) > 0,
                  f"{len(a)} vs {len(k)} rows")
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
