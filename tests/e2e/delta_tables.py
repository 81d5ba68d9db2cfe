#!/usr/bin/env python3
"""End-to-end check of `--table-format delta`: every batch pipeline's datasets as Delta Lake
tables, read by readers we did not write, on a local root and on a real S3 API.

One generated world (two days) is written twice: as plain Parquet and, by datagen
`--table-format delta`, as Delta tables. play-counts (both days, reading its plays from the Delta
table), recommend, revenue and ab-analytics run on each root; then:

  * every Delta table holds, partition for partition, the same data files (byte for byte) as the
    plain root, and nothing else is active;
  * each table is read with identical rows by delta-rs's Python package (`deltalake`, a release
    other than the crate we build with), pandas (through it), Polars (`read_delta`), DuckDB's own
    `delta` extension (`delta_scan`, from PyPI's duckdb-extension-delta) and, where
    scripts/with-spark.sh runs one, Sail over Spark Connect (`spark.read.format("delta")`);
  * a rerun of a day is one more commit per table, with the same rows (idempotent), and the
    table's history says WRITE;
  * a plain-Parquet run into a Delta root is refused (64), and changes nothing;
  * play-counts killed (SIGKILL, strace's fault injection) at its first data-file link, at the
    link of each table's commit and at its first rename after them leaves every table at its old
    version or its new one (the one being committed old), readable by every reader; a rerun
    then commits the new rows; `vacuum --retention-hours 0` deletes what no version
    needs (the dead runs' uploads, the replaced files) and the tables read the same after it;
  * on S3 (moto's server on 127.0.0.1): datagen and play-counts in Delta format into a bucket
    give the same rows as locally, read by `deltalake` and DuckDB from the bucket; two recommend
    shards committing at once to one table both land (S3 conditional writes).

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import datetime
import glob
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from harness import moto_server, strace

DAYS = ["2026-11-25", "2026-11-26"]
DAY = DAYS[-1]
MONTH = "2026-11"
INPUTS = ["plays", "songs", "subscriptions", "user_features", "song_embeddings", "experiments"]
# Each pipeline's datasets (the rejects are JSON lines: never a table).
OUTPUTS = {
    "play-counts": ["daily_song_counts", "daily_artist_counts", "charts"],
    "recommend": ["recommendations"],
    "revenue": ["revenue_by_song", "revenue_by_artist", "revenue_by_label", "revenue_reconciliation"],
    "ab-analytics": ["ab_results"],
}
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + str(detail)[:1500] if detail and not ok else ''}", flush=True)


def run(cmd, env=None, timeout=600):
    p = subprocess.run([str(c) for c in cmd], env=env or dict(os.environ, RUST_LOG="warn"), capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        print(f"{pathlib.Path(str(cmd[0])).name} exited {p.returncode}:\n{p.stderr[-2000:]}", file=sys.stderr)
    return p


def sha(b):
    return hashlib.sha256(b).hexdigest()


def plain_partitions(root, dataset):
    """partition dir name -> sorted sha256 of its Parquet files, for a plain root."""
    out = {}
    for d in sorted(pathlib.Path(root, dataset).glob("*=*")):
        out[d.name] = sorted(sha(f.read_bytes()) for f in d.glob("*.parquet"))
    return out


def delta_partitions(path, storage=None):
    """partition dir name -> sorted sha256 of the active files, as the table's log names them."""
    t = DeltaTable(path, storage_options=storage)
    out = {}
    actions = pa.table(t.get_add_actions(flatten=True)).to_pydict()
    for rel in actions["path"]:
        d = rel.split("/")[0]
        if storage:
            data = read_object(path, rel, storage)
        else:
            data = pathlib.Path(path, rel).read_bytes()
        out.setdefault(d, []).append(sha(data))
    return {k: sorted(v) for k, v in out.items()}


def read_object(table, rel, storage):
    import boto3
    bucket, _, prefix = table[len("s3://"):].partition("/")
    s3 = boto3.client("s3", endpoint_url=storage["AWS_ENDPOINT_URL"], aws_access_key_id=storage["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=storage["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    return s3.get_object(Bucket=bucket, Key=f"{prefix}/{rel}")["Body"].read()


def canonical(table, drop=()):
    """A table as sorted rows of strings (order and the reader's integer widths aside), columns by name."""
    cols = sorted(c for c in table.column_names if c not in drop)
    rows = list(zip(*[[None if v is None else str(v) for v in table.column(c).to_pylist()] for c in cols]))
    return cols, sorted(rows, key=lambda r: tuple("" if v is None else v for v in r))


def as_arrow(df):
    return pa.Table.from_pandas(df, preserve_index=False)


def delta_rows(path, storage=None):
    t = DeltaTable(path, storage_options=storage).to_pyarrow_table()
    return canonical(t)


def plain_rows(root, dataset, key):
    """A plain dataset's rows with its partition column from the path, as a Hive reader sees them."""
    parts = []
    for d in sorted(pathlib.Path(root, dataset).glob(f"{key}=*")):
        files = sorted(d.glob("*.parquet"))
        if not files:
            continue
        t = pa.concat_tables([pq.read_table(f) for f in files])
        value = d.name.split("=", 1)[1]
        parts.append(t.append_column(key, pa.array([value] * t.num_rows)))
    return canonical(pa.concat_tables(parts, promote_options="default")) if parts else ([], [])


def partition_key(dataset):
    return {"revenue_by_song": "month", "revenue_by_artist": "month", "revenue_by_label": "month",
            "revenue_reconciliation": "month", "ab_results": "experiment"}.get(dataset, "date")


def duckdb_connection():
    """DuckDB with its `delta` and `httpfs` extensions, loaded from their PyPI packages (DuckDB's
    extension repository is not reachable from here)."""
    import duckdb_extension_delta
    import duckdb_extension_httpfs
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    for pkg, name in [(duckdb_extension_httpfs, "httpfs"), (duckdb_extension_delta, "delta")]:
        ext = glob.glob(os.path.join(os.path.dirname(pkg.__file__), "extensions", "*", f"{name}.duckdb_extension"))
        con.execute(f"LOAD '{ext[0]}'")
    return con


def sail_read(tables, out):
    """Each table read by Sail (`spark.read.format("delta")`) into `out`, when one runs."""
    remote, python = os.environ.get("SP_SAIL_REMOTE"), os.environ.get("SP_SPARK_CLIENT_PYTHON")
    if not remote or not python:
        return None
    subprocess.run([python, pathlib.Path(__file__).with_name("spark_read.py"), "--remote", remote, "--format",
                    "delta", "--out", out, *tables], check=False, capture_output=True, text=True, timeout=600)
    return out


def readers_agree(label, root, datasets, con, sail_dir=None):
    """Every reader reads every table of `root` as deltalake does."""
    for ds in datasets:
        path = str(pathlib.Path(root, ds))
        want = delta_rows(path)
        got = {
            # Arrow-backed dtypes, as pandas users read nullable integers (numpy's would be floats).
            "pandas": canonical(as_arrow(DeltaTable(path).to_pandas(types_mapper=pd.ArrowDtype))),
            "polars": canonical(pl.read_delta(path).to_arrow()),
            "duckdb": canonical(con.execute(f"SELECT * FROM delta_scan('{path}')").to_arrow_table()),
        }
        if sail_dir is not None:
            f = pathlib.Path(sail_dir, f"{ds}.arrow")
            if f.exists():
                got["sail"] = canonical(pa.ipc.open_file(str(f)).read_all())
            else:
                err = pathlib.Path(sail_dir, f"{ds}.error")
                got["sail"] = ("error", err.read_text()[:500] if err.exists() else "no output")
        bad = {}
        for reader, rows in got.items():
            if rows != want:
                bad[reader] = rows if rows and rows[0] == "error" else (rows[0], len(rows[1]), want[0], len(want[1]))
        check(f"{label}: {ds} read alike by deltalake, {', '.join(got)} ({len(want[1])} rows)",
              not bad and len(want[1]) > 0, bad)


def state(root, datasets):
    """dataset -> (version, rows) of each table, as deltalake reads them; None when unreadable."""
    out = {}
    for ds in datasets:
        try:
            out[ds] = delta_rows(str(pathlib.Path(root, ds)))
        except Exception as e:  # noqa: BLE001 - a table no reader can open is the failure tested
            out[ds] = ("unreadable", str(e))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    con = duckdb_connection()
    with tempfile.TemporaryDirectory() as tmp:
        plain, delta = os.path.join(tmp, "plain"), os.path.join(tmp, "delta")
        gen_args = ["--plays", "20000", "--users", "2000", "--songs", "800", "--bad-rows", "0.001",
                    "--experiment-users", "1500"]
        for day in DAYS:
            datasets = "plays-csv,plays,songs,subscriptions" + (",user_features,song_embeddings,experiments"
                                                                if day == DAY else "")
            for root, fmt in [(plain, "parquet"), (delta, "delta")]:
                r = run([b / "datagen", "--date", day, "--data-root", root, *gen_args, "--datasets", datasets,
                         "--table-format", fmt])
                check(f"datagen {day} --table-format {fmt}", r.returncode == 0, r.stderr[-500:])

        # datagen's tables: the same files as the plain root's, and only those; a file with a
        # type Delta lacks (millisecond timestamps: plays' played_at; fixed-size lists: the
        # embeddings) is stored with Delta's (microseconds; a list): the same rows.
        for ds in INPUTS:
            want, got = plain_partitions(plain, ds), delta_partitions(os.path.join(delta, ds))
            first = next(pathlib.Path(plain, ds).rglob("*.parquet"))
            converted = {f.name: f.type for f in pq.read_schema(first)
                         if (pa.types.is_timestamp(f.type) and f.type.unit in ("s", "ms"))
                         or pa.types.is_fixed_size_list(f.type)}
            if converted:
                stored = {f.name: f.type for f in pq.read_schema(next(
                    p for p in pathlib.Path(delta, ds).rglob("*.parquet") if "_delta_log" not in str(p)))
                    if f.name in converted}
                as_delta = all((pa.types.is_timestamp(t) and t.unit == "us") or pa.types.is_list(t)
                               for t in stored.values())
                check(f"datagen's {ds} table: the plain root's rows, {sorted(converted)} in Delta's types",
                      sorted(got) == sorted(want) and as_delta and len(stored) == len(converted)
                      and plain_rows(plain, ds, partition_key(ds)) == delta_rows(os.path.join(delta, ds)),
                      f"{stored} from {converted}")
            else:
                check(f"datagen's {ds} table: the plain root's files, byte for byte, partition for partition",
                      want == got and len(want) > 0, f"{sorted(want)} vs {sorted(got)}")
        check("the CSV export is a plain file beside the tables",
              pathlib.Path(delta, "exports", f"plays-{DAY}.csv").read_bytes()
              == pathlib.Path(plain, "exports", f"plays-{DAY}.csv").read_bytes())

        def pipelines(root, fmt, env=None):
            codes = {}
            for day in DAYS:
                codes[f"play-counts {day}"] = run([b / "play-counts", "--date", day, "--data-root", root,
                                                   "--table-format", fmt, "--max-reject-share", "0.01"],
                                                  env).returncode
            codes["recommend"] = run([b / "recommend", "--date", DAY, "--data-root", root, "--k", "10",
                                      "--table-format", fmt], env).returncode
            codes["revenue"] = run([b / "revenue", "--month", MONTH, "--data-root", root, "--table-format", fmt],
                                   env).returncode
            codes["ab-analytics"] = run([b / "ab-analytics", "--date", DAY, "--data-root", root,
                                         "--table-format", fmt], env).returncode
            return codes

        for root, fmt in [(plain, "parquet"), (delta, "delta")]:
            codes = pipelines(root, fmt)
            check(f"every batch pipeline runs with --table-format {fmt}", all(c == 0 for c in codes.values()), codes)

        outputs = [ds for dss in OUTPUTS.values() for ds in dss]
        for ds in outputs:
            want, got = plain_partitions(plain, ds), delta_partitions(os.path.join(delta, ds))
            check(f"{ds}: the Delta table's active files are the plain run's, byte for byte",
                  want == got and len(want) > 0, f"{ {k: len(v) for k, v in want.items()} } vs "
                                                 f"{ {k: len(v) for k, v in got.items()} }")
            check(f"{ds}: the same rows as the plain dataset read by a Hive reader",
                  plain_rows(plain, ds, partition_key(ds)) == delta_rows(os.path.join(delta, ds)))
        types = {ds: DeltaTable(os.path.join(delta, ds)).to_pyarrow_table().schema.field(partition_key(ds)).type
                 for ds in ["charts", "revenue_by_song", "ab_results"]}
        check("the partition column is typed: date for date=, string for month= and experiment=",
              pa.types.is_date32(types["charts"]) and all(pa.types.is_string(t) or pa.types.is_large_string(t)
                                                          for t in [types["revenue_by_song"], types["ab_results"]]),
              types)

        sail_dir = os.path.join(tmp, "sail")
        os.makedirs(sail_dir)
        sail = sail_read([str(pathlib.Path(delta, ds)) for ds in INPUTS + outputs], sail_dir)
        readers_agree("local", delta, INPUTS + outputs, con, sail)
        if sail is None:
            print("note: no Sail server (run under scripts/with-spark.sh for the Spark reader)")

        # A Delta table we did not write, as an input: the day's plays written by delta-rs's
        # Python writer (its own file names, microsecond timestamps, no stats of ours), the
        # songs as plain Parquet beside it. play-counts reads it through the log and counts
        # what the plain run counted.
        from deltalake import write_deltalake
        foreign = os.path.join(tmp, "foreign")
        plays = pa.concat_tables([pq.read_table(f) for f in
                                  sorted(pathlib.Path(plain, "plays", f"date={DAY}").glob("*.parquet"))])
        plays = plays.append_column("date", pa.array([datetime.date.fromisoformat(DAY)] * plays.num_rows))
        write_deltalake(os.path.join(foreign, "plays"), plays, partition_by=["date"])
        shutil.copytree(os.path.join(plain, "songs"), os.path.join(foreign, "songs"))
        r = run([b / "play-counts", "--date", DAY, "--data-root", foreign, "--table-format", "delta",
                 "--max-reject-share", "0.01"])
        check("play-counts reads plays from a Delta table delta-rs's Python writer made: the plain run's counts",
              r.returncode == 0 and all(delta_rows(os.path.join(foreign, ds)) == canonical(pa.concat_tables(
                  [pq.read_table(f) for f in sorted(pathlib.Path(plain, ds, f"date={DAY}").glob("*.parquet"))]
              ).append_column("date", pa.array([datetime.date.fromisoformat(DAY)] * sum(
                  pq.read_metadata(f).num_rows for f in pathlib.Path(plain, ds, f"date={DAY}").glob("*.parquet")))))
                  for ds in ["daily_song_counts", "daily_artist_counts"]), r.stderr[-500:])

        # A rerun: one more commit per table, the same rows.
        before = {ds: DeltaTable(os.path.join(delta, ds)).version() for ds in OUTPUTS["play-counts"]}
        rows = state(delta, OUTPUTS["play-counts"])
        r = run([b / "play-counts", "--date", DAY, "--data-root", delta, "--table-format", "delta",
                 "--max-reject-share", "0.01"])
        after = {ds: DeltaTable(os.path.join(delta, ds)).version() for ds in OUTPUTS["play-counts"]}
        ops = {ds: DeltaTable(os.path.join(delta, ds)).history(1)[0]["operation"] for ds in after}
        check("a rerun is one more commit per table, a WRITE, with the same rows",
              r.returncode == 0 and all(after[d] == before[d] + 1 for d in after)
              and state(delta, OUTPUTS["play-counts"]) == rows and set(ops.values()) == {"WRITE"},
              f"{before} -> {after}, {ops}")

        # A plain run into the Delta root: refused, nothing changed.
        r = run([b / "play-counts", "--date", DAY, "--data-root", delta, "--max-reject-share", "0.01"])
        check("a plain-Parquet run into a Delta table exits 64 and changes nothing",
              r.returncode == 64 and "--table-format delta" in r.stderr
              and {ds: DeltaTable(os.path.join(delta, ds)).version() for ds in after} == after, r.stderr[-300:])

        kills(b, tmp, delta, con)
        on_s3(b, tmp, plain, delta)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


def kills(b, tmp, delta, con):
    """play-counts killed at the steps of a publish into Delta tables."""
    st = strace()
    check("strace, for the kill points", st is not None)
    if st is None:
        return
    datasets = OUTPUTS["play-counts"]
    base = os.path.join(tmp, "kill-base")
    shutil.copytree(delta, base)
    # The new outputs differ from the old: the same day generated from another seed.
    newgen = os.path.join(tmp, "kill-gen")
    r = run([b / "datagen", "--date", DAY, "--data-root", newgen, "--seed", "2", "--plays", "20000", "--users",
             "2000", "--songs", "800", "--bad-rows", "0.001", "--datasets", "plays-csv"])
    check("datagen: the day's export from another seed", r.returncode == 0, r.stderr[-300:])
    export = os.path.join(newgen, "exports", f"plays-{DAY}.csv")

    def play_counts(root, prefix=()):
        return run([*prefix, b / "play-counts", "--date", DAY, "--data-root", root, "--input", export,
                    "--table-format", "delta", "--max-reject-share", "1", "--threads", "2",
                    "--spill-dir", os.path.join(tmp, "spill")])

    old = state(base, datasets)
    ref = os.path.join(tmp, "kill-ref")
    shutil.copytree(base, ref)
    check("the new outputs are published", play_counts(ref).returncode == 0)
    new = state(ref, datasets)
    check("old and new differ in every table", all(old[d] != new[d] for d in datasets))
    check("the rejects of the export's bad rows stay JSON lines, not a table",
          not pathlib.Path(ref, "rejects", "play-counts", "_delta_log").exists()
          and any(pathlib.Path(ref, "rejects", "play-counts").rglob("*.jsonl")))
    # The kill points: the run's first link (a data file into the first table), the link that
    # commits each table (its next log entry: `-P` makes strace act on that path alone), and the
    # first rename after the tables (the rejects' commit, the run record). strace counts calls
    # per thread, so only "the first" and a path pick one point for sure.
    calls = "link,linkat,rename,renameat,renameat2"
    points = [("the first data file's link", "linkat,link", None, None)]
    for ds in datasets:
        entry = f"{DeltaTable(os.path.join(base, ds)).version() + 1:020}.json"
        points.append((f"{ds}'s commit", calls, ds, entry))
    points.append(("the first rename", "rename,renameat,renameat2", None, None))
    last = None
    for n, (label, inject, ds, entry) in enumerate(points):
        root = os.path.join(tmp, f"kill-{n}")
        shutil.copytree(base, root)
        path = ["-P", os.path.join(root, ds, "_delta_log", entry)] if entry else []
        r = play_counts(root, [st, "-f", "-qq", "-o", os.devnull, *path, "-e", f"trace={inject}",
                               "-e", f"inject={inject}:signal=KILL:when=1"])
        now = state(root, datasets)
        whole = all(now[d] in (old[d], new[d]) for d in datasets)
        before_commit = ds is None or now[ds] == old[ds]
        check(f"kill at {label}: every table reads old or new{', ' + ds + ' old' if ds else ''}",
              r.returncode == -9 and whole and before_commit,
              f"exit {r.returncode}: {[d for d in datasets if now[d] not in (old[d], new[d])]}")
        r = play_counts(root)
        check(f"kill at {label}: a rerun commits the new rows",
              r.returncode == 0 and state(root, datasets) == new)
        last = root
    # vacuum after the dead runs: what no version needs goes; the tables read the same.
    root = last
    files = lambda: sum(1 for _ in pathlib.Path(root).rglob("*.parquet") if "_delta_log" not in str(_))  # noqa: E731
    before = files()
    active = sum(len(DeltaTable(os.path.join(root, ds)).file_uris()) for ds in os.listdir(root)
                 if pathlib.Path(root, ds, "_delta_log").exists())
    r = run([b / "vacuum", "--data-root", root, "--retention-hours", "0", "--force"])
    check("vacuum --retention-hours 0 leaves exactly the active files, and every table reads the same",
          r.returncode == 0 and files() == active < before and state(root, datasets) == new,
          f"exit {r.returncode}: {before} -> {files()} files, {active} active")
    readers_agree("after kills and vacuum", root, datasets, con)


def on_s3(b, tmp, plain, delta):
    """Delta tables in a bucket of a real S3 API (moto), read back by other clients."""
    import boto3
    server, endpoint = moto_server()
    port = endpoint.rsplit(":", 1)[1]
    try:
        creds = dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="lake")
        e = dict(os.environ, RUST_LOG="warn", AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1",
                 AWS_ALLOW_HTTP="true", AWS_EC2_METADATA_DISABLED="true", **creds)
        e.pop("AWS_SESSION_TOKEN", None)
        e.pop("AWS_PROFILE", None)
        storage = dict(AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true", **creds)
        root = "s3://lake/root"
        ok = True
        for day in DAYS:
            datasets = "plays-csv,plays,songs,subscriptions" + (",user_features,song_embeddings" if day == DAY else "")
            r = run([b / "datagen", "--date", day, "--data-root", root, "--plays", "20000", "--users", "2000",
                     "--songs", "800", "--bad-rows", "0.001", "--experiment-users", "1500", "--datasets", datasets,
                     "--table-format", "delta"], e)
            ok &= r.returncode == 0
            r = run([b / "play-counts", "--date", day, "--data-root", root, "--table-format", "delta",
                     "--max-reject-share", "0.01"], e)
            ok &= r.returncode == 0
        check("datagen and play-counts in Delta format on s3://", ok)
        for ds in ["plays", "songs"] + OUTPUTS["play-counts"]:
            got = delta_partitions(f"{root}/{ds}", storage)
            want = delta_partitions(os.path.join(delta, ds))
            # The local root's play-counts tables were rewritten by the kill test's rerun with
            # the same rows; compare rows there, files for the inputs.
            if ds in OUTPUTS["play-counts"]:
                check(f"s3 {ds}: the same rows as the local Delta root, read by deltalake from the bucket",
                      delta_rows(f"{root}/{ds}", storage) == delta_rows(os.path.join(delta, ds)))
            else:
                check(f"s3 {ds}: the same files as the local Delta root", got == want and len(got) > 0)
        # Two shards commit to one table at once: both land (conditional writes on the log).
        procs = [subprocess.Popen([str(b / "recommend"), "--date", DAY, "--data-root", root, "--k", "10",
                                   "--table-format", "delta", "--shard", s], env=e, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for s in ["0/2", "1/2"]]
        codes = [p.wait(timeout=600) for p in procs]
        errs = [p.stderr.read()[-500:] for p in procs]
        t = DeltaTable(f"{root}/recommendations", storage_options=storage)
        got = canonical(t.to_pyarrow_table())
        want = delta_rows(os.path.join(delta, "recommendations"))
        check("two recommend shards committing at once on s3:// both land: the whole run's rows",
              codes == [0, 0] and got == want and len(got[1]) > 0, f"{codes} {errs} {len(got[1])} vs {len(want[1])}")
        con = duckdb_connection()
        con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
                    f"ENDPOINT '127.0.0.1:{port}', URL_STYLE 'path', USE_SSL false)")
        try:
            n = con.execute(f"SELECT count(*) FROM delta_scan('{root}/daily_song_counts')").fetchone()[0]
            want_n = len(delta_rows(os.path.join(delta, "daily_song_counts"))[1])
            check("DuckDB's delta_scan reads the table from the bucket", n == want_n, f"{n} vs {want_n}")
        except duckdb.Error as err:
            check("DuckDB's delta_scan reads the table from the bucket", False, str(err)[:500])
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
