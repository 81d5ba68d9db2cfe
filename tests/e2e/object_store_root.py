#!/usr/bin/env python3
"""End-to-end check of an object-store data root against a real S3 API (moto's server, on
127.0.0.1, from PyPI: `moto[server]`, a maintained S3 implementation that installs from PyPI).

datagen writes a day into the bucket, play-ingest consumes a topic into it and metadata-sync
publishes its catalog snapshot there (the same bytes as on a local root). One generated world is uploaded to `s3://streampulse/root`; play-counts (from the CSV export,
streamed from the store, and from the Parquet partition) and revenue run against the bucket and
must publish the same bytes as the same runs on a local root, with their rejects and run
records in the bucket; a rerun commits anew (one marker, a new commit id, the old files gone), and
the uploads of a run that died before its commit marker are not read; recommend (whole, then two
shards side by side, then whole again) and ab-analytics publish the same bytes as locally; audit
reads those run records and writes its report to the bucket. A wrong secret key exits 69 naming
the bucket, never the key; a run with no credentials (and the instance metadata service
disabled) fails at once with 64.

The bucket is read as docs/architecture.md tells a reader to read an object-store root (commit
markers), by code written here from that rule, not ours.

Every client here gets explicit test credentials and AWS_EC2_METADATA_DISABLED=true: nothing
asks a cloud metadata address.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import boto3
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness import moto_server

DAY = "2026-11-30"
BUCKET = "streampulse"
KEY_ID, SECRET = None, None  # the moto user's key, made in main()
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def env(endpoint, secret=None, keys=True):
    e = dict(os.environ, RUST_LOG="warn", AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1",
             AWS_ALLOW_HTTP="true", AWS_EC2_METADATA_DISABLED="true")
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        e.pop(k, None)
    if keys:
        e.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=secret or SECRET)
    return e


def run(cmd, e):
    p = subprocess.run([str(c) for c in cmd], env=e, capture_output=True, text=True, timeout=300)
    if p.returncode not in (0,):
        print(f"{cmd[0]} exited {p.returncode}:\n{p.stderr[-2000:]}", file=sys.stderr)
    return p


def upload(s3, local_root, names, prefix):
    for name in names:
        for f in sorted(pathlib.Path(local_root, name).rglob("*")):
            if f.is_file():
                s3.upload_file(str(f), BUCKET, f"{prefix}/{f.relative_to(local_root)}")


def raw_objects(s3, prefix, under):
    """key (relative to prefix) -> bytes, for every object under prefix/under."""
    raw = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/{under}"):
        for o in page.get("Contents", []):
            raw[o["Key"][len(prefix) + 1:]] = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
    return raw


def stored(s3, prefix, under):
    """key (relative to prefix) -> bytes, for the committed objects under prefix/under, read as our
    readers read them (written here from the rule in docs/architecture.md, not from our code): in a
    directory with commit markers (`_committed-<writer>.json`), the Parquet files the markers name,
    by the name the run gave them, and the other files under their own names; elsewhere every
    object."""
    raw = raw_objects(s3, prefix, under)
    markers = {k: json.loads(v) for k, v in raw.items()
               if k.rsplit("/", 1)[-1].startswith("_committed-") and k.endswith(".json")}
    marked_dirs = {k.rsplit("/", 1)[0] for k in markers}
    out = {}
    for k, m in markers.items():
        d = k.rsplit("/", 1)[0]
        for f in m["files"]:
            out[f"{d}/{f['name']}"] = raw[f"{d}/{f['object']}"]
    for k, v in raw.items():
        d, name = k.rsplit("/", 1)
        if d not in marked_dirs or not (name.endswith(".parquet") or name.startswith("_committed-")):
            out[k] = v
    return out


def local(root, under):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(pathlib.Path(root, under).rglob("*"))
            if p.is_file()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    # moto checks credentials (and signatures) once its first few unauthenticated actions, the
    # set-up below, are spent: a user, its policy, its key and the bucket.
    server, endpoint = moto_server(env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4"))
    try:
        setup = dict(endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
                     region_name="us-east-1")
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="pipelines")
        iam.put_user_policy(UserName="pipelines", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="pipelines")["AccessKey"]
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        global KEY_ID, SECRET
        KEY_ID, SECRET = key["AccessKeyId"], key["SecretAccessKey"]
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                          region_name="us-east-1")
        with tempfile.TemporaryDirectory() as tmp:
            gen = os.path.join(tmp, "gen")
            for day in ["2026-11-29", DAY]:
                r = run([b / "datagen", "--date", day, "--data-root", gen, "--plays", "30000", "--users", "3000",
                         "--songs", "1000", "--bad-rows", "0.001", "--datasets", "plays-csv,plays,songs,subscriptions"
                         + (",user_features,song_embeddings,experiments" if day == DAY else ""),
                         "--experiment-users", "2000"],
                        dict(os.environ, RUST_LOG="warn"))
                check(f"datagen {day}", r.returncode == 0)
            e = env(endpoint)

            # datagen writes a day into the bucket: the same bytes as on a local root, each
            # partition committed behind its marker, the export under its own name.
            small = ["--date", DAY, "--plays", "5000", "--users", "500", "--songs", "200", "--bad-rows", "0.001",
                     "--datasets", "plays-csv,plays,songs,subscriptions"]
            one = os.path.join(tmp, "one-day")
            ok = run([b / "datagen", *small, "--data-root", one], e).returncode == 0
            r = run([b / "datagen", *small, "--data-root", f"s3://{BUCKET}/gen"], e)
            got = {k: v for k, v in stored(s3, "gen", "").items() if not k.startswith("runs/")}
            want = {k: v for k, v in local(one, "").items() if not k.startswith("runs/")}
            check("datagen on s3://: the same files and bytes as on a local root",
                  ok and r.returncode == 0 and got == want and len(got) >= 4,
                  f"exit {r.returncode}: {sorted(got)} vs {sorted(want)}; {r.stderr[-300:]}")
            check("datagen's run record is in the bucket", any(k.startswith("runs/datagen/") for k in stored(s3, "gen", "runs/")))

            # play-ingest consumes a topic into the bucket: the same plays files as into a local root.
            brokers = os.environ.get("SP_KAFKA_BROKERS")
            check("a Kafka broker to ingest from (make test runs this under scripts/with-broker.sh)", bool(brokers))
            if brokers:
                kafka_gen = os.path.join(tmp, "kafka-gen")
                r = run([b / "datagen", *small[:-1], "songs", "--data-root", kafka_gen, "--to-kafka",
                         "--kafka-brokers", brokers, "--topic", "plays-s3"], e)
                check("datagen --to-kafka", r.returncode == 0, r.stderr[-300:])
                ingested = os.path.join(tmp, "ingested")
                codes = [run([b / "play-ingest", "--kafka-brokers", brokers, "--topic", "plays-s3", "--group", group,
                              "--until-caught-up", "--date", DAY, "--data-root", root], e).returncode
                         for group, root in [("to-s3", f"s3://{BUCKET}/ingested"), ("to-local", ingested)]]
                got, want = stored(s3, "ingested", "plays/"), local(ingested, "plays")
                check("play-ingest on s3://: the same plays files as on a local root",
                      codes == [0, 0] and got == want and len(got) > 0, f"exits {codes}: {sorted(got)} vs {sorted(want)}")
                got, want = stored(s3, "ingested", "rejects/"), local(ingested, "rejects")
                check("its rejects are in the bucket, the same as locally", got == want and len(got) > 0,
                      f"{sorted(got)} vs {sorted(want)}")

            # metadata-sync: the partner's catalog (a local metadata-api serving the generated
            # songs) synced into a fresh catalog database, its snapshot published to the bucket:
            # the same bytes as the same sync on a local root.
            synced = os.path.join(tmp, "synced")
            codes = []
            for n, root in enumerate([f"s3://{BUCKET}/synced", synced]):
                p = subprocess.run(["scripts/with-metadata-api.sh", str(b), os.path.join(one, "songs", f"date={DAY}"),
                                    "--token", "e2e-token", "--", b / "metadata-sync", "--date", DAY,
                                    "--data-root", root, "--api-token", "e2e-token", "--rate", "2000", "--burst", "50",
                                    "--database-url", f"sqlite://{tmp}/catalog-{n}.db"],
                                   env=e, capture_output=True, text=True, timeout=300,
                                   cwd=pathlib.Path(__file__).resolve().parents[2])
                codes.append(p.returncode)
                if p.returncode:
                    print(p.stderr[-2000:], file=sys.stderr)
            got, want = stored(s3, "synced", f"songs/date={DAY}/"), local(synced, f"songs/date={DAY}")
            check("metadata-sync on s3://: the same snapshot bytes as on a local root",
                  codes == [0, 0] and got == want and len(got) > 0, f"exits {codes}: {sorted(got)} vs {sorted(want)}")
            check("its snapshot is committed behind a marker",
                  any("/_committed-" in k for k in raw_objects(s3, "synced", f"songs/date={DAY}/")))

            # The CSV export, read from the store.
            upload(s3, gen, ["exports"], "csv")
            r = run([b / "play-counts", "--date", DAY, "--data-root", f"s3://{BUCKET}/csv", "--max-reject-share", "0.01"],
                    e)
            check("play-counts on s3:// from the CSV export", r.returncode == 0, r.stderr[-300:])
            ref = os.path.join(tmp, "ref-csv")
            os.makedirs(ref)
            os.symlink(os.path.join(gen, "exports"), os.path.join(ref, "exports"))
            r = run([b / "play-counts", "--date", DAY, "--data-root", ref, "--max-reject-share", "0.01"], e)
            check("play-counts on the local root from the same export", r.returncode == 0)
            for ds in ["daily_song_counts", "daily_artist_counts", "charts"]:
                got, want = stored(s3, "csv", f"{ds}/date={DAY}/"), local(ref, f"{ds}/date={DAY}")
                check(f"{ds}: the same bytes in the bucket as on the local root", got == want and len(got) > 0,
                      f"{sorted(got)} vs {sorted(want)}")
            def rows(files):
                """The rejects without their `file` (an s3:// URL on one side, a path on the other)."""
                return sorted((r["line"], r["column"], r["reason"], r["raw"]) for body in files.values()
                              for r in map(json.loads, body.decode().splitlines()))
            rej = stored(s3, "csv", "rejects/play-counts/")
            check("the rejects are in the bucket, the same as locally",
                  bool(rej) and rows(rej) == rows(local(ref, "rejects/play-counts")), str(sorted(rej)))
            check("the run record is in the bucket", any(k.startswith("runs/play-counts/") for k in stored(s3, "csv", "runs/")))

            # The Parquet partitions and revenue's month.
            upload(s3, gen, ["plays", "songs", "subscriptions"], "pq")
            r = run([b / "play-counts", "--date", DAY, "--data-root", f"s3://{BUCKET}/pq"], e)
            check("play-counts on s3:// from the Parquet partition", r.returncode == 0, r.stderr[-300:])
            r2 = run([b / "play-counts", "--date", DAY, "--data-root", gen], e)
            check("play-counts on the local Parquet partition", r2.returncode == 0)
            got, want = stored(s3, "pq", f"charts/date={DAY}/"), local(gen, f"charts/date={DAY}")
            check("charts from the Parquet partition: the same bytes", got == want and len(got) > 0)
            r = run([b / "revenue", "--month", "2026-11", "--data-root", f"s3://{BUCKET}/pq"], e)
            check("revenue on s3://", r.returncode == 0, r.stderr[-300:])
            r2 = run([b / "revenue", "--month", "2026-11", "--data-root", gen], e)
            check("revenue on the local root", r2.returncode == 0)
            for ds in ["revenue_by_song", "revenue_reconciliation"]:
                got, want = stored(s3, "pq", f"{ds}/month=2026-11/"), local(gen, f"{ds}/month=2026-11")
                check(f"{ds}: the same bytes in the bucket", got == want and len(got) > 0)

            # A rerun commits anew: one marker, with a new commit id, naming only the new files.
            def markers(under):
                return {k: json.loads(v) for k, v in raw_objects(s3, "pq", under).items()
                        if k.rsplit("/", 1)[-1].startswith("_committed-")}
            charts = local(gen, f"charts/date={DAY}")
            first = markers(f"charts/date={DAY}/")
            r = run([b / "play-counts", "--date", DAY, "--data-root", f"s3://{BUCKET}/pq"], e)
            again = markers(f"charts/date={DAY}/")
            objects = raw_objects(s3, "pq", f"charts/date={DAY}/")
            check("a rerun leaves one marker with a new commit and only the files it names",
                  r.returncode == 0 and len(first) == 1 and len(again) == 1
                  and list(first.values())[0]["commit"] != list(again.values())[0]["commit"]
                  and len(objects) == 1 + len(list(again.values())[0]["files"]),
                  f"{sorted(objects)}")
            check("the rerun publishes the same bytes", stored(s3, "pq", f"charts/date={DAY}/") == charts)

            # The uploads of a run that died before its marker (a stray `*.sp<digits>.parquet`) in
            # an input partition are not read: the same counts as without them.
            # Its plays are new (other play ids): read, they would change the counts.
            plays = {k: v for k, v in raw_objects(s3, "pq", f"plays/date={DAY}/").items() if k.endswith(".parquet")}
            name, body = sorted(plays.items())[0]
            table = pq.read_table(io.BytesIO(body))
            table = table.set_column(table.schema.get_field_index("play_id"), "play_id",
                                     pc.add(table.column("play_id"), 10**12))
            out = io.BytesIO()
            pq.write_table(table, out)
            s3.put_object(Bucket=BUCKET, Key=f"pq/{name[:-len('.parquet')]}.sp20261130120000000123.parquet",
                          Body=out.getvalue())
            r = run([b / "play-counts", "--date", DAY, "--data-root", f"s3://{BUCKET}/pq"], e)
            check("a dead commit's upload in the plays partition changes nothing",
                  r.returncode == 0 and stored(s3, "pq", f"charts/date={DAY}/") == charts, r.stderr[-300:])

            # recommend, whole and as two shards side by side (one marker each), and ab-analytics.
            upload(s3, gen, ["user_features", "song_embeddings", "assignments", "user_metrics", "experiments"], "pq")
            sharded_bytes = {}
            for label, shards in [("whole", [None]), ("two shards", ["0/2", "1/2"]), ("whole again", [None])]:
                ok = True
                for shard in shards:
                    extra = ["--shard", shard] if shard else []
                    for root in [f"s3://{BUCKET}/pq", gen]:
                        r = run([b / "recommend", "--date", DAY, "--data-root", root, "--k", "10"] + extra, e)
                        ok = ok and r.returncode == 0
                got, want = stored(s3, "pq", f"recommendations/date={DAY}/"), local(gen, f"recommendations/date={DAY}")
                n = len(markers(f"recommendations/date={DAY}/"))
                check(f"recommend {label} on s3://: the same bytes as locally, {len(shards)} marker(s)",
                      ok and got == want and len(got) >= len(shards) and n == len(shards),
                      f"{n} markers, {sorted(got)} vs {sorted(want)}")
                sharded_bytes[label] = want
            check("the whole run after the shards replaced them", sharded_bytes["whole"] == sharded_bytes["whole again"])
            ok = all(run([b / "ab-analytics", "--date", DAY, "--data-root", root], e).returncode == 0
                     for root in [f"s3://{BUCKET}/pq", gen])
            got, want = stored(s3, "pq", "ab_results/"), local(gen, "ab_results")
            check("ab-analytics on s3://: the same ab_results bytes as locally", ok and got == want and len(got) > 0,
                  f"{sorted(got)} vs {sorted(want)}")
            reports = stored(s3, "pq", f"ab_reports/date={DAY}/")
            check("its reports are in the bucket", sorted(reports) == sorted(local(gen, f"ab_reports/date={DAY}"))
                  and len(reports) > 0, str(sorted(reports)))

            # The capacity audit reads the run records in the bucket and writes its report there.
            r = run([b / "audit", "--data-root", f"s3://{BUCKET}/pq"], e)
            check("audit on s3:// reads the bucket's run records", r.returncode == 0, r.stderr[-300:])
            report = stored(s3, "pq", "reports/audit/")
            check("the audit report is in the bucket and covers play-counts and revenue",
                  b"play-counts" in report.get("reports/audit/audit.md", b"")
                  and b"revenue" in report.get("reports/audit/audit.md", b""), str(sorted(report)))

            # Credentials.
            r = run([b / "play-counts", "--date", DAY, "--data-root", f"s3://{BUCKET}/pq"], env(endpoint, "wrong"))
            check("a wrong secret key exits 69", r.returncode == 69, f"exit {r.returncode}")
            check("its message names the bucket and not the key", BUCKET in r.stderr and "wrong" not in r.stderr
                  and SECRET not in r.stderr, r.stderr[-300:])
            started = time.time()
            r = run([b / "play-counts", "--date", DAY, "--data-root", f"s3://{BUCKET}/pq"], env(endpoint, keys=False))
            check("no credentials: exit 64 at once, with a clear message",
                  r.returncode == 64 and "no S3 credentials" in r.stderr and time.time() - started < 10,
                  f"exit {r.returncode}: {r.stderr[-300:]}")
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
