#!/usr/bin/env python3
"""Spark as a reader of our datasets: opens each dataset directory with `spark.read.parquet(dir)`
(or, with `--format delta`, `spark.read.format("delta").load(dir)`)
over Spark Connect (partition discovery and type inference as Spark does them) and writes what
Spark read as an Arrow IPC file `<out>/<name>.arrow`, with Spark's own type names in
`<out>/<name>.types.json`, for readers_open_outputs.py to compare with the other readers.

Runs in the environment that has the Spark Connect client (the Sail venv of tests/spark/; the
suite's own venv does not carry pyspark): readers_open_outputs.py calls it with
SP_SPARK_CLIENT_PYTHON.
    spark_read.py --remote sc://127.0.0.1:PORT --out DIR DATASET_DIR...
"""
import argparse
import json
import pathlib
import sys

import pyarrow as pa
from pyspark.sql import SparkSession


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--remote", required=True)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    # `delta`: each directory is a Delta table (spark.read.format("delta"), delta_tables.py).
    ap.add_argument("--format", default="parquet", choices=["parquet", "delta"])
    ap.add_argument("datasets", nargs="+", type=pathlib.Path)
    args = ap.parse_args()
    spark = SparkSession.builder.remote(args.remote).getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    for directory in args.datasets:
        try:
            df = (spark.read.parquet(str(directory)) if args.format == "parquet"
                  else spark.read.format("delta").load(str(directory)))
            table = df.toArrow()
            with pa.OSFile(str(args.out / f"{directory.name}.arrow"), "wb") as f:
                with pa.ipc.new_file(f, table.schema) as w:
                    w.write_table(table)
            types = {field.name: field.dataType.simpleString() for field in df.schema.fields}
            (args.out / f"{directory.name}.types.json").write_text(json.dumps(types))
        except Exception as e:  # reported per dataset, as the other readers' failures are
            (args.out / f"{directory.name}.error").write_text(f"{type(e).__name__}: {e}")
    spark.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
