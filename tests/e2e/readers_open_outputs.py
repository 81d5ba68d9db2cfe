#!/usr/bin/env python3
"""End-to-end check that every dataset we write opens as a directory in the readers analysts use.

Generates three days in two months with datagen, runs play-counts (three days, so the charts read
their history), recommend (two days), revenue (two months) and ab-analytics, then opens every
dataset directory under the root, inputs and outputs, with:

  duckdb    read_parquet('<dir>/*/*.parquet', hive_partitioning = true)
  pandas    pd.read_parquet('<dir>')                       (pyarrow engine, numpy dtypes)
  pyarrow   pyarrow.dataset.dataset('<dir>', partitioning='hive')
  polars    pl.read_parquet('<dir>/**/*.parquet', hive_partitioning=True)
  spark     spark.read.parquet('<dir>')  on Apache Spark over Spark Connect (spark_read.py; the
            server of scripts/with-spark.sh, SP_SPARK_REMOTE_TEST, and its client's Python,
            SP_SPARK_CLIENT_PYTHON)

Every run record must say how many bytes it read and wrote. Each reader must give the rows of the files read one by one (no partition inference) with the partition
column added from the path: the same columns, the same rows, and for every column the file's
type (DuckDB, pyarrow and Polars; pandas' numpy dtypes turn a nullable int into a float, so its
rows are compared but its types are not). The partition column must not also be in the files (the
Hive convention: pandas and pyarrow refuse to merge a column found in both), and a dataset
directory must hold nothing but its partitions. Spark's types are compared by Spark's names
(it has one timestamp type, microseconds, for our milliseconds; `array<float>` for a fixed-size
list), and it must infer `date=` as a date.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import decimal
import json
import math
import pathlib
import os
import re
import subprocess
import tempfile

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from harness import check, finish, run

DAYS = ["2026-10-31", "2026-11-29", "2026-11-30"]


def value(v):
    """One cell as a comparable Python value, whichever reader produced it."""
    if v is None:
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # numpy scalars and arrays
        v = v.tolist()
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, decimal.Decimal):
        return str(v.normalize()) if v == v else None
    if isinstance(v, (list, tuple)):
        return tuple(value(x) for x in v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def rows_of(columns, data):
    """Sorted tuples of the named columns, from a {column: sequence} mapping."""
    return sorted(zip(*(list(map(value, data[c])) for c in columns)), key=repr)


def kind(t):
    """A reader-neutral name of a column type."""
    s = str(t).lower()
    if s.startswith(("decimal128(", "decimal(")):
        precision, scale = re.findall(r"\d+", s)[-2:]
        return f"decimal({precision},{scale})"
    if s in ("int64", "bigint", "i64"):
        return "int64"
    if s in ("int32", "integer", "i32"):
        return "int32"
    if s in ("float", "float32", "f32"):
        return "float32"
    if s in ("double", "float64", "f64"):
        return "float64"
    if s in ("bool", "boolean"):
        return "bool"
    if s in ("string", "large_string", "string_view", "varchar", "str", "utf8", "large_utf8"):
        return "string"
    if s.startswith("dictionary<values=string") or s == "categorical":
        return "string"
    if s in ("date32[day]", "date", "date32"):
        return "date"
    if s.startswith("timestamp[ms, tz=utc]") or s in ("timestamp with time zone",) \
            or s.startswith("datetime(time_unit='ms', time_zone='utc')"):
        return "timestamp_ms_utc"
    if s.startswith(("fixed_size_list<", "float[", "array(float32")):
        return "float32_list"
    return s


SPARK_KINDS = {"bigint": "int64", "int": "int32", "float": "float32", "double": "float64",
               "boolean": "bool", "string": "string", "date": "date",
               "timestamp": "timestamp_ms_utc", "array<float>": "float32_list"}


def spark_kind(t):
    """A Spark SQL type name as kind() names the others' (decimal(p,s) is the same in both)."""
    return SPARK_KINDS.get(t, t)


def spark_read(datasets, out):
    """Every dataset read by Spark (spark_read.py, in the Spark client's environment) into `out`."""
    remote, python = os.environ.get("SP_SPARK_REMOTE_TEST"), os.environ.get("SP_SPARK_CLIENT_PYTHON")
    if not remote or not python:
        check("Spark reader: a Spark Connect server to read with", False,
              "SP_SPARK_REMOTE_TEST / SP_SPARK_CLIENT_PYTHON unset: run under scripts/with-spark.sh (make test does)")
        return False
    out.mkdir()
    p = subprocess.run([python, pathlib.Path(__file__).with_name("spark_read.py"), "--remote", remote,
                        "--out", out, *datasets], capture_output=True, text=True)
    check("Spark reader: the Spark Connect client ran", p.returncode == 0, p.stderr[-2000:])
    return p.returncode == 0


def spark_of(directory, spark_dir):
    """(columns, types, data) of the dataset as Spark read it; raises with Spark's error."""
    error = spark_dir / f"{directory.name}.error"
    if error.exists():
        raise RuntimeError(error.read_text())
    with pa.OSFile(str(spark_dir / f"{directory.name}.arrow")) as f:
        t = pa.ipc.open_file(f).read_all()
    types = json.loads((spark_dir / f"{directory.name}.types.json").read_text())
    return (t.column_names, {c: spark_kind(types[c]) for c in t.column_names},
            {c: t.column(c).to_pylist() for c in t.column_names})


def partition_key(directory):
    keys = {p.name.split("=", 1)[0] for p in directory.iterdir() if p.is_dir() and "=" in p.name}
    return keys.pop() if len(keys) == 1 else None


def expected(directory, key):
    """Columns, types and rows of the files read one by one, the partition value from the path."""
    columns, types, data = None, None, {}
    for part in sorted(p for p in directory.iterdir() if p.is_dir()):
        pvalue = part.name.split("=", 1)[1]
        for f in sorted(part.glob("*.parquet")):
            t = pq.ParquetFile(f).read()
            if columns is None:
                columns = [key] + t.column_names
                types = {n: kind(t.schema.field(n).type) for n in t.column_names}
                data = {c: [] for c in columns}
            data[key] += [pvalue] * t.num_rows
            for n in t.column_names:
                data[n] += t.column(n).to_pylist()
    return columns, types, data


def by_reader(directory):
    """{reader: (columns, types or None, data)} of the dataset opened as a directory."""
    out = {}
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{directory}/*/*.parquet', hive_partitioning = true)")
    cols = rel.columns
    # Through Arrow: DuckDB's own Python conversion of TIMESTAMPTZ would need pytz.
    fetched = rel.arrow()
    fetched = fetched.read_all() if hasattr(fetched, "read_all") else fetched
    out["duckdb"] = (cols, dict(zip(cols, map(kind, rel.types))),
                     {c: fetched.column(i).to_pylist() for i, c in enumerate(cols)})
    df = pd.read_parquet(directory)
    out["pandas"] = (list(df.columns), None, {c: df[c].astype(object).tolist() for c in df.columns})
    t = pads.dataset(directory, format="parquet", partitioning="hive").to_table()
    out["pyarrow"] = (t.column_names, {f.name: kind(f.type) for f in t.schema},
                      {c: t.column(c).to_pylist() for c in t.column_names})
    p = pl.read_parquet(f"{directory}/**/*.parquet", hive_partitioning=True)
    out["polars"] = (p.columns, {c: kind(p.schema[c]) for c in p.columns},
                     {c: p[c].to_list() for c in p.columns})
    return out


def check_dataset(directory, spark_dir=None):
    name = directory.name
    key = partition_key(directory)
    stray = [p.name for p in directory.iterdir() if not (p.is_dir() and "=" in p.name)]
    check(f"{name}: nothing but partitions in the directory", not stray, str(stray))
    if key is None:
        check(f"{name}: one partition key", False, str(sorted(p.name for p in directory.iterdir())))
        return
    columns, types, want = expected(directory, key)
    check(f"{name}: the files do not repeat the partition column {key}", key not in types, str(columns))
    want_rows = rows_of(columns, want)
    try:
        readers = by_reader(directory)
    except Exception as e:  # a reader that cannot open the directory is the failure being tested
        check(f"{name}: every reader opens the directory", False, f"{type(e).__name__}: {e}")
        return
    if spark_dir is not None:
        try:
            readers["spark"] = spark_of(directory, spark_dir)
        except Exception as e:
            check(f"{name}: Spark opens the directory", False, f"{type(e).__name__}: {e}"[:600])
    for reader, (cols, got_types, data) in readers.items():
        check(f"{name}: {reader} sees the columns", sorted(cols) == sorted(columns),
              f"{sorted(cols)} != {sorted(columns)}")
        if sorted(cols) != sorted(columns):
            continue
        got = rows_of(columns, {c: [str(v) if c == key and v is not None else v for v in data[c]]
                                for c in columns})
        check(f"{name}: {reader} reads the same {len(want_rows)} rows", got == want_rows,
              f"{len(got)} rows; first difference: "
              f"{next(((a, b) for a, b in zip(got, want_rows) if a != b), None)}")
        if got_types is not None:
            wrong = {c: (got_types[c], t) for c, t in types.items() if got_types[c] != t}
            check(f"{name}: {reader} reads the file types", not wrong, str(wrong))
            if key == "date" and reader in ("duckdb", "polars", "spark"):
                check(f"{name}: {reader} reads date= as a date", got_types[key] == "date", got_types[key])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp, "root")
        common = ["--data-root", root, "--threads", "2"]
        # datagen alone in a root of its own: its run record's bytes out must be every byte it wrote.
        sizing = pathlib.Path(tmp, "datagen-only")
        check("datagen (alone)", run([b / "datagen", "--date", DAYS[0], "--plays", "5000", "--users", "500",
                                      "--songs", "300", "--experiment-users", "200",
                                      "--data-root", sizing, "--threads", "2"]) == 0)
        records = [json.loads(f.read_text()) for f in sizing.glob("runs/datagen/*.json")]
        written = sum(f.stat().st_size for f in sizing.rglob("*")
                      if f.is_file() and f.relative_to(sizing).parts[0] != "runs")
        check("datagen: the run record's bytes out are the bytes of every file it wrote",
              len(records) == 1 and records[0]["bytes_out"] == written,
              f"{[r['bytes_out'] for r in records]} != {written}")
        for day in DAYS:
            check(f"datagen {day}", run([b / "datagen", "--date", day, "--plays", "30000", "--users", "3000",
                                          "--songs", "1200", "--experiment-users", "1500",
                                          "--bad-rows", "0.001", *common]) == 0)
        for day in DAYS:
            check(f"play-counts {day}", run([b / "play-counts", "--date", day, "--chart-size", "50",
                                             "--max-reject-share", "0.01", *common]) == 0)
        for day in DAYS[1:]:
            check(f"recommend {day}", run([b / "recommend", "--date", day, "--k", "10", *common]) == 0)
        for month in ["2026-10", "2026-11"]:
            check(f"revenue {month}", run([b / "revenue", "--month", month, *common]) == 0)
        check("ab-analytics", run([b / "ab-analytics", "--date", DAYS[-1], *common]) == 0)

        # The audit sizes data by the run records: every run says what it read and wrote.
        for pipeline in ["play-counts", "recommend", "revenue", "ab-analytics"]:
            records = [json.loads(f.read_text()) for f in sorted(root.glob(f"runs/{pipeline}/*.json"))]
            check(f"{pipeline}: every run record has bytes in and out",
                  records and all(r["bytes_in"] > 0 and r["bytes_out"] > 0 for r in records),
                  str([(r["bytes_in"], r["bytes_out"]) for r in records]))
        skip = {"runs", "rejects", "exports", "_staging", "ab_reports"}
        datasets = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in skip)
        names = {p.name for p in datasets}
        outputs = {"daily_song_counts", "daily_artist_counts", "charts", "recommendations", "revenue_by_song",
                   "revenue_by_artist", "revenue_by_label", "revenue_reconciliation", "ab_results"}
        check("every output dataset was written", outputs <= names, str(sorted(outputs - names)))
        spark_dir = pathlib.Path(tmp, "spark-read")
        spark = spark_read(datasets, spark_dir)
        for directory in datasets:
            check_dataset(directory, spark_dir if spark else None)
    finish()


if __name__ == "__main__":
    main()
