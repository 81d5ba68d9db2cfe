#!/usr/bin/env python3
"""play-ingest against a producer we did not write: confluent-kafka (its own librdkafka build,
from PyPI) produces the same generated day once per codec Kafka defines (none, gzip, snappy, lz4,
zstd), with played_at half as epoch milliseconds and half as text, and a few malformed events;
play-ingest ingests each topic in batch mode. Every play must come out exactly once, equal to what
was produced (DuckDB compares the rows), the malformed ones in the rejects, and the run exit 0.

Before play-ingest's librdkafka had zstd, the zstd topic made it log "Decompression (codec 0x4)
... Not implemented" and retry for ever.

Runs against the broker of SP_KAFKA_BROKERS (scripts/with-broker.sh starts a private tansu).
"""
import argparse
import datetime
import json
import os
import pathlib
import tempfile

import duckdb
import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from harness import check, finish, run

DATE = "2026-11-26"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
MALFORMED = [b"{not json", b'{"play_id": "x"}', b"\xff\xfe"]


def events(plays):
    """The plays as JSON events, played_at alternately as epoch ms and as the export's text."""
    out = []
    for i, row in enumerate(plays.to_pylist()):
        ts = row["played_at"].replace(tzinfo=datetime.timezone.utc)
        if i % 2:
            row["played_at"] = int(ts.timestamp() * 1000)
        else:
            row["played_at"] = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        out.append((str(row["user_id"]).encode(), json.dumps(row).encode()))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, type=pathlib.Path)
    args = ap.parse_args()
    brokers = os.environ.get("SP_KAFKA_BROKERS")
    if not brokers:
        raise SystemExit("SP_KAFKA_BROKERS is not set: run under scripts/with-broker.sh (make test does)")
    b = args.bin_dir
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp, "source")
        check("datagen writes the day's plays",
              run([b / "datagen", "--date", DATE, "--data-root", src, "--datasets", "plays",
                   "--plays", "20000", "--users", "3000", "--songs", "800", "--late-share", "0",
                   "--seed", "5"]) == 0)
        source_dir = src / "plays" / f"date={DATE}"
        plays = pq.ParquetDataset(source_dir).read()
        messages = events(plays)
        admin = AdminClient({"bootstrap.servers": brokers})
        for codec in CODECS:
            topic = f"plays-{codec}"
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
            producer = Producer({"bootstrap.servers": brokers, "compression.type": codec,
                                 "linger.ms": 20, "batch.num.messages": 5000, "acks": "all"})
            failures = []
            for key, value in messages + [(b"0", m) for m in MALFORMED]:
                producer.produce(topic, value=value, key=key,
                                 on_delivery=lambda err, _m: err and failures.append(err))
                producer.poll(0)
            left = producer.flush(60)
            check(f"{codec}: confluent-kafka delivered {len(messages) + len(MALFORMED)} events",
                  left == 0 and not failures, f"{left} undelivered, {failures[:3]}")

            root = pathlib.Path(tmp, codec)
            code = run([b / "play-ingest", "--kafka-brokers", brokers, "--topic", topic,
                        "--group", f"e2e-{codec}", "--until-caught-up", "--date", DATE,
                        "--data-root", root, "--kafka-timeout-s", "20"])
            check(f"{codec}: play-ingest --until-caught-up exits 0", code == 0, f"exit {code}")
            out_dir = root / "plays" / f"date={DATE}"
            if not list(out_dir.glob("*.parquet")):
                check(f"{codec}: plays written", False, f"nothing under {out_dir}")
                continue
            con = duckdb.connect()
            src_rel = f"read_parquet('{source_dir}/*.parquet', hive_partitioning = false)"
            out_rel = f"read_parquet('{out_dir}/*.parquet', hive_partitioning = false)"
            n_out, distinct = con.execute(f"SELECT count(*), count(DISTINCT play_id) FROM {out_rel}").fetchone()
            check(f"{codec}: every play once ({n_out} of {plays.num_rows})",
                  n_out == plays.num_rows == distinct, f"{n_out} rows, {distinct} ids")
            missing = con.execute(f"SELECT count(*) FROM (SELECT * FROM {src_rel} EXCEPT ALL SELECT * FROM {out_rel})").fetchone()[0]
            extra = con.execute(f"SELECT count(*) FROM (SELECT * FROM {out_rel} EXCEPT ALL SELECT * FROM {src_rel})").fetchone()[0]
            check(f"{codec}: the rows equal what was produced, column for column", missing == 0 and extra == 0,
                  f"{missing} missing, {extra} not produced")
            rejects = [l for f in (root / "rejects" / "play-ingest").rglob("*.jsonl") for l in f.read_text().splitlines()]
            check(f"{codec}: the malformed events are in the rejects", len(rejects) == len(MALFORMED), len(rejects))
            # The run record sizes the job for the audit: every event consumed, every payload
            # byte (as produced, before the codec), every Parquet byte written.
            records = [json.loads(f.read_text()) for f in (root / "runs" / "play-ingest").glob("*.json")]
            want = {"rows_in": len(messages) + len(MALFORMED), "rows_out": plays.num_rows,
                    "rows_rejected": len(MALFORMED),
                    "bytes_in": sum(len(v) for _, v in messages) + sum(len(m) for m in MALFORMED),
                    "bytes_out": sum(f.stat().st_size for f in (root / "plays").rglob("*.parquet"))}
            got = {k: records[0][k] for k in want} if len(records) == 1 else records
            check(f"{codec}: the run record counts rows and bytes in and out exactly", got == want,
                  f"{got} != {want}")
    finish()


if __name__ == "__main__":
    main()
