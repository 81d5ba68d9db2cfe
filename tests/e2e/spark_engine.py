"""play-counts on Spark (`--engine spark`) gives the embedded engine's outputs, on two real Spark
Connect servers: Sail and Apache Spark with two executor processes (scripts/with-spark.sh starts
both and names them in SP_SAIL_REMOTE and SP_SPARK_REMOTE_TEST).

The day is datagen's, with what a real partition also holds added by another writer (pyarrow):
a file with int32 ids and microsecond timestamps, rows that break the contract (nulls, a negative
duration, malformed countries, one with a NUL byte), plays sent twice (identical and conflicting
copies, and a play_id reused by another user) and late plays. Two days run, so the second day's
charts have movement, peaks and re-entries from the first.

revenue then runs the month (pro-rata, user-centric, and user-centric with artist-centric
weighting, whose integer weights Spark must divide as integers) on each engine.

Checked for each engine: play-counts' three output datasets and revenue's four byte for byte, the run record's counts (rows in,
rejected, before and after the date, duplicates), the rejects (reason, column and raw row; the
cluster gives no line numbers), and the failures: a server that does not answer (69, naming the
endpoint, not the token), a CSV export (64: only the embedded engine reads it).
"""
import argparse
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from harness import check, finish, free_port, run, wait_for_port

DAYS = ["2026-11-29", "2026-11-30"]


def add_foreign_rows(root, day):
    """Writes a second file into the day's plays partition, as another tool would."""
    part = pathlib.Path(root, "plays", f"date={day}")
    first = sorted(part.glob("*.parquet"))[0]
    t = pq.read_table(first)
    n = t.num_rows
    rows = t.slice(0, 400).to_pylist()
    extra = []
    # Copies: identical re-sends, and a conflicting one (same play_id and user, another song and
    # a shorter play: the shorter one is kept).
    for r in rows[:50]:
        extra.append(dict(r))
    for r in rows[50:60]:
        c = dict(r)
        c["song_id"] = rows[0]["song_id"]
        c["artist_id"] = rows[0]["artist_id"]
        c["ms_played"] = max(0, r["ms_played"] - 1)
        extra.append(c)
    # Another user reusing a play_id: another play.
    c = dict(rows[70])
    c["user_id"] = c["user_id"] + 1_000_000
    extra.append(c)
    # Bad rows: each breaks one rule.
    bad = [("ms_played", -5), ("country", "gb"), ("country", "G\x00"), ("country", None), ("user_id", None),
           ("played_at", None)]
    for (col, value), r in zip(bad, rows[100:]):
        c = dict(r)
        c["play_id"] = 10_000_000 + len(extra)
        c[col] = value
        extra.append(c)
    # Plays of the evening before and of the next morning: counted, left to their own day.
    for i, r in enumerate(rows[200:220]):
        c = dict(r)
        c["play_id"] = 20_000_000 + len(extra)
        c["played_at"] = datetime.datetime.fromisoformat(day + "T00:00:00+00:00") + datetime.timedelta(
            hours=-1 if i % 2 else 24, milliseconds=i)
        extra.append(c)
    # Another writer's types: int32 ids, microsecond timestamps without a zone.
    schema = pa.schema([
        (f.name, pa.int32() if f.name in ("user_id", "song_id", "artist_id", "album_id") else
         pa.timestamp("us") if f.name == "played_at" else f.type)
        for f in t.schema
    ])
    for r in extra:
        if r["played_at"] is not None:
            r["played_at"] = r["played_at"].replace(tzinfo=None)
    nullable = pa.schema([pa.field(f.name, f.type, nullable=True) for f in schema])
    pq.write_table(pa.Table.from_pylist(extra, schema=nullable), part / "part-foreign.parquet")
    return n, len(extra)


def outputs(root, day):
    got = {}
    for ds in ["daily_song_counts", "daily_artist_counts", "charts"]:
        for f in sorted(pathlib.Path(root, ds, f"date={day}").glob("*.parquet")):
            got[f"{ds}/{f.name}"] = f.read_bytes()
    return got


def revenue_outputs(root, month):
    got = {}
    for ds in ["revenue_by_song", "revenue_by_artist", "revenue_by_label", "revenue_reconciliation"]:
        for f in sorted(pathlib.Path(root, ds, f"month={month}").glob("*.parquet")):
            got[f"{ds}/{f.name}"] = f.read_bytes()
    return got


def last_record(root):
    recs = sorted(pathlib.Path(root, "runs").rglob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(recs[-1].read_text()) if recs else {}


def counts(rec):
    extra = rec.get("extra", rec)
    return {k: rec.get(k, extra.get(k)) for k in
            ["rows_in", "rows_rejected", "rows_out", "rows_before_date", "rows_after_date", "duplicate_plays",
             "song_rows", "artist_rows", "chart_rows"]}


def rejects(root, day):
    out = []
    for f in sorted(pathlib.Path(root, "rejects", "play-counts").rglob(f"date={day}/*.jsonl")):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            out.append((r.get("column"), r.get("reason"), r.get("raw")))
    return sorted(out, key=json.dumps)


def token_check(b, base, tmp):
    """An Apache Spark Connect server that checks a token: the wrong one exits 69, the right one 0."""
    home, port = os.environ["SP_SPARK_HOME"], free_port()
    env = dict(os.environ, SPARK_HOME=home, SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=tmp,
               SPARK_CONNECT_AUTHENTICATE_TOKEN="the-right-token")
    server = subprocess.Popen(
        [os.path.join(home, "bin", "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
         "--master", "local[1]", "--driver-memory", "512m", "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false", "spark-internal"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, 120)
        root = os.path.join(tmp, "token")
        shutil.copytree(base, root)
        remote = f"sc://127.0.0.1:{port}/;token="
        p = subprocess.run([str(b / "play-counts"), "--date", DAYS[0], "--data-root", root, "--engine", "spark",
                            "--max-reject-share", "0.01", "--spark-remote", remote + "wr0ng-s3cr3t"],
                           capture_output=True, text=True)
        check("a refused token exits 69", p.returncode == 69, f"{p.returncode}: {p.stderr[-500:]}")
        check("and says the server refused the credentials, naming it",
              "authentication" in p.stderr and f"127.0.0.1:{port}" in p.stderr, p.stderr[-500:])
        check("but not the token", "wr0ng-s3cr3t" not in p.stderr, p.stderr[-500:])
        check("nothing published", not pathlib.Path(root, "daily_song_counts", f"date={DAYS[0]}").exists())
        code = run([b / "play-counts", "--date", DAYS[0], "--data-root", root, "--engine", "spark",
                    "--max-reject-share", "0.01", "--spark-remote", remote + "the-right-token"])
        check("the right token runs (exit 0)", code == 0, str(code))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def during_summary(b, root, remote, delay, act):
    """Runs play-counts on `remote` and, `delay` s after the cluster starts the day's summary
    query, calls `act(process)`; returns (whether the query was seen, exit code, the log)."""
    p = subprocess.Popen([str(b / "play-counts"), "--date", DAYS[1], "--data-root", root, "--engine", "spark",
                          "--spark-remote", remote], stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, RUST_LOG="info,streampulse_spark=debug"))
    seen, lines = False, []
    for line in p.stderr:
        lines.append(line)
        if "spark: executing" in line and "count(*) AS records" in line:
            seen = True
            time.sleep(delay)
            act(p)
            break
    rest = p.communicate(timeout=120)[1]
    return seen, p.returncode, "".join(lines) + rest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    engines = {"sail": os.environ["SP_SAIL_REMOTE"], "spark": os.environ["SP_SPARK_REMOTE_TEST"]}
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        for day in DAYS:
            ok = run([b / "datagen", "--date", day, "--data-root", base, "--plays", "40000", "--users", "3000",
                      "--songs", "1200", "--late-share", "0.01", "--datasets", "plays,songs,subscriptions", "--threads", "2"]) == 0
            check(f"datagen {day}", ok)
            add_foreign_rows(base, day)
        roots = {}
        for name in ["embedded", *engines]:
            roots[name] = os.path.join(tmp, name)
            shutil.copytree(base, roots[name])
        want = {}
        for day in DAYS:
            for name, root in roots.items():
                flags = [] if name == "embedded" else ["--engine", "spark", "--spark-remote", engines[name]]
                started = time.monotonic()
                code = run([b / "play-counts", "--date", day, "--data-root", root, "--threads", "2",
                            "--max-reject-share", "0.01", *flags])
                check(f"{name} {day}: play-counts exits 0", code == 0, str(code))
                rec = last_record(root)
                got = (outputs(root, day), counts(rec), rejects(root, day))
                if name == "embedded":
                    want[day] = got
                    check(f"embedded {day}: the day has rejects, duplicates and late plays",
                          got[1]["rows_rejected"] >= 6 and got[1]["duplicate_plays"] >= 60
                          and got[1]["rows_before_date"] > 0, str(got[1]))
                    continue
                check(f"{name} {day}: run record says engine spark", rec.get("engine") == "spark", rec.get("engine"))
                check(f"{name} {day}: the same counts in the run record", got[1] == want[day][1],
                      f"{got[1]} != {want[day][1]}")
                differ = sorted(k for k in got[0].keys() | want[day][0].keys() if got[0].get(k) != want[day][0].get(k))
                check(f"{name} {day}: byte-identical outputs ({len(got[0])} files)", not differ and got[0],
                      ", ".join(differ))
                check(f"{name} {day}: the same rejects ({len(got[2])})", got[2] == want[day][2],
                      f"{got[2][:3]} != {want[day][2][:3]}")
                print(f"  {name} {day}: {time.monotonic() - started:.1f} s")
        # revenue for the month, each model, on each engine: the same bytes to the cent.
        month = DAYS[0][:7]
        for model in [["--model", "pro-rata"], ["--model", "user-centric"],
                      ["--model", "user-centric", "--artist-centric", "--artist-min-streams", "20",
                       "--artist-min-listeners", "5", "--user-monthly-cap", "8"]]:
            label = " ".join(model[1:3] if len(model) > 2 else model[1:]) + (" artist-centric" if len(model) > 2 else "")
            want = None
            for name, root in roots.items():
                flags = [] if name == "embedded" else ["--engine", "spark", "--spark-remote", engines[name]]
                started = time.monotonic()
                code = run([b / "revenue", "--month", month, "--data-root", root, "--threads", "2", *model, *flags])
                check(f"{name} revenue {label}: exits 0", code == 0, str(code))
                got = revenue_outputs(root, month)
                engine = last_record(root).get("engine")
                check(f"{name} revenue {label}: run record says engine {'spark' if flags else 'datafusion'}",
                      engine == ("spark" if flags else "datafusion"), engine)
                if want is None:
                    want = got
                    check(f"embedded revenue {label}: four datasets written", len(got) >= 4, str(sorted(got)))
                    continue
                differ = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
                check(f"{name} revenue {label}: byte-identical outputs ({len(got)} files)", not differ and got,
                      ", ".join(differ))
                print(f"  {name} revenue {label}: {time.monotonic() - started:.1f} s")
        # The audit sizes a cluster from the Spark runs' records (their executor cores measured
        # by the run itself): local-cluster[2,1,1024] has 2.
        for name in engines:
            out = os.path.join(tmp, f"audit-{name}")
            code = run([b / "audit", "--data-root", roots[name], "--out-dir", out])
            check(f"{name}: audit exits 0", code == 0, str(code))
            if code != 0:
                continue
            doc = json.loads(pathlib.Path(out, "audit.json").read_text())
            clusters = {c["pipeline"]: c for c in doc.get("clusters", [])}
            check(f"{name}: the audit sizes a cluster for play-counts and revenue",
                  {"play-counts", "revenue"} <= clusters.keys(), str(sorted(clusters)))
            machine = {p["pipeline"] for p in doc["pipelines"]}
            check(f"{name}: Spark runs are not projected as the machine's",
                  "play-counts" not in machine and "revenue" not in machine, str(sorted(machine)))
            for pipeline, c in clusters.items():
                years = [y["year"] for y in c["projections"]]
                needed = [y["cores_needed"] for y in c["projections"]]
                check(f"{name} audit {pipeline}: years 0-5, executor cores for each",
                      years == list(range(6)) and all(isinstance(n, int) and n >= 1 for n in needed), str(needed))
                # Sail, one process, runs a range as a single partition.
                want_cores = 2 if name == "spark" else 1
                check(f"{name} audit {pipeline}: measured on {want_cores} executor cores",
                      c["cores_measured"] == want_cores, str(c["cores_measured"]))
            md = pathlib.Path(out, "audit.md").read_text()
            check(f"{name}: the Markdown report has the cluster section", "## On a Spark cluster" in md)
        # A server that does not answer: 69, naming the endpoint, never the token.
        root = roots["sail"]
        p = subprocess.run(
            [str(b / "play-counts"), "--date", DAYS[1], "--data-root", root, "--engine", "spark",
             "--spark-remote", "sc://127.0.0.1:9/;token=s3cr3t"], capture_output=True, text=True)
        check("an unreachable server exits 69", p.returncode == 69, f"{p.returncode}: {p.stderr[-500:]}")
        check("and names the endpoint", "127.0.0.1:9" in p.stderr, p.stderr[-500:])
        check("but not the token", "s3cr3t" not in p.stderr, p.stderr[-500:])
        # A server that refuses the token: 69, naming the endpoint, never the token. Apache
        # Spark checks SPARK_CONNECT_AUTHENTICATE_TOKEN (the shared test server cannot: PySpark
        # sends a token only over TLS), so this is a server of its own.
        token_check(b, base, tmp)
        # SIGTERM while the cluster counts: the run stops (75), interrupts its query on the
        # server, and publishes nothing.
        big = os.path.join(tmp, "big")
        run([b / "datagen", "--date", DAYS[1], "--data-root", big, "--plays", "3000000", "--users", "200000",
             "--songs", "20000", "--datasets", "plays", "--threads", "2"])
        seen, code, log = during_summary(b, big, engines["spark"], 1.0, lambda p: p.send_signal(signal.SIGTERM))
        check("SIGTERM during the cluster's query: exit 75", seen and code == 75, f"seen={seen} code={code}: {log[-800:]}")
        check("the query was interrupted on the server", "query interrupted" in log, log[-800:])
        check("nothing published", not pathlib.Path(big, "daily_song_counts", f"date={DAYS[1]}").exists())
        # The server gone in the middle of the job: a session lost is temporary (75), nothing
        # is published. A Sail server of this check's own, stopped while it counts.
        port = free_port()
        sail = subprocess.Popen([os.environ["SP_SAIL_BIN"], "spark", "server", "--ip", "127.0.0.1", "--port",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            seen, code, log = during_summary(b, big, f"sc://127.0.0.1:{port}", 0.3, lambda p: sail.kill())
        finally:
            sail.kill()
            sail.wait()
        check("the server stopped mid-job: exit 75 (a lost session, retried by the scheduler)",
              seen and code == 75, f"seen={seen} code={code}: {log[-800:]}")
        check("and nothing published", not pathlib.Path(big, "daily_song_counts", f"date={DAYS[1]}").exists())
        # Nanosecond timestamps (pandas' default): Sail reads them and gives the embedded
        # engine's outputs; Apache Spark's reader refuses them, which is the input's problem (65).
        ns = os.path.join(tmp, "ns")
        run([b / "datagen", "--date", DAYS[1], "--data-root", ns, "--plays", "5000", "--users", "300",
             "--songs", "100", "--datasets", "plays"])
        for f in pathlib.Path(ns, "plays").rglob("*.parquet"):
            t = pq.read_table(f)
            i = t.schema.get_field_index("played_at")
            pq.write_table(t.set_column(i, "played_at", t.column(i).cast(pa.timestamp("ns", tz="UTC"))), f)
        ns_roots = {name: os.path.join(tmp, f"ns-{name}") for name in ["embedded", "sail", "spark"]}
        for name, root in ns_roots.items():
            shutil.copytree(ns, root)
        codes = {name: run([b / "play-counts", "--date", DAYS[1], "--data-root", root,
                            *([] if name == "embedded" else ["--engine", "spark", "--spark-remote", engines[name]])])
                 for name, root in ns_roots.items()}
        check("nanosecond timestamps: embedded and Sail count the day alike",
              codes["embedded"] == 0 and codes["sail"] == 0
              and outputs(ns_roots["sail"], DAYS[1]) == outputs(ns_roots["embedded"], DAYS[1]), str(codes))
        check("nanosecond timestamps on Apache Spark: input rejected (65), not an internal error",
              codes["spark"] == 65, str(codes))
        # The CSV export is the embedded engine's only.
        csv_root = os.path.join(tmp, "csv")
        run([b / "datagen", "--date", DAYS[1], "--data-root", csv_root, "--plays", "2000", "--users", "100",
             "--songs", "50", "--datasets", "plays-csv"])
        code = run([b / "play-counts", "--date", DAYS[1], "--data-root", csv_root, "--engine", "spark",
                    "--spark-remote", engines["sail"]])
        check("a CSV export on --engine spark is a usage error (64)", code == 64, str(code))
    finish()


if __name__ == "__main__":
    main()
