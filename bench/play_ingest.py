#!/usr/bin/env python3
"""play-ingest throughput: produce a generated day of plays to a topic of 12 partitions with
`datagen --to-kafka`, then consume it to Parquet with `play-ingest --until-caught-up` (one
instance, fresh group and output directory per run). Reports plays/s and MB/s of message
payload, CPU and peak RSS, and checks every good play landed exactly once."""
import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from measure import cpu_model, host, measure  # noqa: E402

DATE = "2026-11-26"


def latest_record(root, pipeline):
    runs = sorted((root / "runs" / pipeline).glob("*.json"))
    return json.loads(runs[-1].read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, type=Path)
    ap.add_argument("--plays", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    brokers = os.environ["SP_KAFKA_BROKERS"]
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    users = max(1000, a.plays // 40)
    gen_root = a.work / "gen"
    print(f"producing {a.plays:,} plays to {brokers} ...", flush=True)
    produce = measure([a.bin_dir / "datagen", "--date", DATE, "--plays", str(a.plays), "--users", str(users),
                       "--songs", "50000", "--bad-rows", "0.0001", "--datasets", "songs", "--to-kafka",
                       "--kafka-brokers", brokers, "--data-root", gen_root])
    gen = latest_record(gen_root, "datagen")["extra"]
    payload_mb = gen["kafka_bytes"] / 1e6
    print(f"  produced in {produce['wall_s']:.1f} s ({gen['kafka_messages'] / produce['wall_s']:,.0f} msg/s)", flush=True)

    runs = []
    for i in range(a.runs):
        root = a.work / f"ingest-{i}"
        m = measure([a.bin_dir / "play-ingest", "--kafka-brokers", brokers, "--group", f"bench-{i}-{time.time_ns()}",
                     "--until-caught-up", "--date", DATE, "--data-root", root])
        rec = latest_record(root, "play-ingest")
        m["consumed"] = rec["rows_in"]
        m["written"] = rec["rows_out"]
        m["rejected"] = rec["rows_rejected"]
        m["plays_per_s"] = rec["rows_in"] / m["wall_s"]
        m["mb_per_s"] = rec["bytes_in"] / 1e6 / m["wall_s"]
        m["parquet_mb"] = rec["bytes_out"] / 1e6
        con = duckdb.connect()
        total, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT play_id) FROM read_parquet('{root}/plays/*/*.parquet')").fetchone()
        m["exactly_once"] = total == distinct == rec["rows_out"] and rec["rows_in"] == a.plays
        runs.append(m)
        print(f"  run {i + 1}: {m['wall_s']:.1f} s, {m['plays_per_s']:,.0f} plays/s, {m['mb_per_s']:.1f} MB/s, "
              f"{m['peak_rss_mb']:.0f} MB, exactly once: {m['exactly_once']}", flush=True)
        shutil.rmtree(root)

    med = {k: statistics.median(r[k] for r in runs) for k in ["wall_s", "cpu_s", "peak_rss_mb", "plays_per_s", "mb_per_s", "parquet_mb"]}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "plays": a.plays, "payload_mb": payload_mb, "produce": produce,
        "produce_msgs_per_s": gen["kafka_messages"] / produce["wall_s"],
        "runs": runs, "median": med, "exactly_once": all(r["exactly_once"] for r in runs),
    }
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = f"""# play-ingest benchmark ({result['date']})

{a.plays:,} play events ({payload_mb:,.0f} MB of JSON payload, {users:,} users) in a topic of 12 partitions on a local tansu broker (in memory); one play-ingest instance, `--until-caught-up`, default flush settings; median of {a.runs} runs; host {host()} (broker, consumer and librdkafka share them).

| | wall s | CPU s | peak RSS MB | plays/s | MB/s | Parquet MB |
|---|---:|---:|---:|---:|---:|---:|
| play-ingest | {med['wall_s']:.1f} | {med['cpu_s']:.1f} | {med['peak_rss_mb']:.0f} | {med['plays_per_s']:,.0f} | {med['mb_per_s']:.1f} | {med['parquet_mb']:.0f} |

Producing the events (`datagen --to-kafka`, idempotent producer, lz4): {produce['wall_s']:.1f} s, {result['produce_msgs_per_s']:,.0f} messages/s.

Every good play written exactly once, malformed ones rejected: {'yes' if result['exactly_once'] else 'NO'}.
"""
    a.out.with_suffix(".md").write_text(md)
    print(md)
    sys.exit(0 if result["exactly_once"] else 1)


if __name__ == "__main__":
    main()
