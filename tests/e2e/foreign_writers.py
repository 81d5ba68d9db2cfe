#!/usr/bin/env python3
"""End-to-end check that the pipelines read Parquet inputs written by other tools.

datagen writes every input in the data contract's own types; analysts' and partners' tools do not.
This check generates one small world with datagen, then rewrites every Parquet input file the way
another writer would, and runs play-counts, recommend, revenue and ab-analytics on each copy. Every
output must be byte-identical to the run on datagen's own files (our writer is deterministic, so
the same rows give the same bytes):

  pyarrow-us     timestamps in µs without a zone, ids as int32, money as decimal(18,2), dates as
                 µs timestamps at midnight, embeddings as variable-size lists
  pyarrow-ns-tz  timestamps in ns with a zone, money as decimal(38,10), dates as date64
  pandas         DataFrame.to_parquet (its own timestamp unit, list embeddings, float64 money)
  polars         DataFrame.write_parquet (µs timestamps, large/view strings)
  duckdb         COPY ... TO 'x.parquet' (µs timestamps with zone, lists)

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import hashlib
import os
import pathlib
import shutil
import tempfile

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness import check, finish, run

DAY = "2026-11-30"
MONTH = "2026-11"
IDS = {"play_id", "user_id", "song_id", "artist_id", "album_id", "label_id", "subscription_id"}


def pyarrow_variant(table, unit, tz, money, dates):
    """The table with the types another pyarrow user would have written."""
    cols = []
    for field, col in zip(table.schema, table.columns):
        t = field.type
        if pa.types.is_timestamp(t):
            col = pc.cast(col, pa.timestamp(unit, tz=tz))
        elif field.name in IDS and pa.types.is_int64(t) and unit == "us":
            try:
                col = pc.cast(col, pa.int32())  # where the ids fit, as a small table's would
            except pa.ArrowInvalid:
                pass
        elif pa.types.is_decimal(t):
            col = pc.cast(col, money)
        elif pa.types.is_date32(t):
            col = pc.cast(col, dates) if dates == pa.date64() else pc.cast(pc.cast(col, pa.timestamp("s")), dates)
        elif pa.types.is_fixed_size_list(t):
            col = pc.cast(col, pa.list_(pa.float32()))
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def rewrite(path, writer):
    table = pq.read_table(path)
    os.remove(path)
    if writer == "pyarrow-us":
        pq.write_table(pyarrow_variant(table, "us", None, pa.decimal128(18, 2), pa.timestamp("us")), path)
    elif writer == "pyarrow-ns-tz":
        pq.write_table(pyarrow_variant(table, "ns", "Asia/Tokyo", pa.decimal128(38, 10), pa.date64()), path)
    elif writer == "pandas":
        df = table.to_pandas()
        for name in df.columns:
            if pa.types.is_decimal(table.schema.field(name).type):
                df[name] = df[name].astype("float64")  # what a pandas user gets from read_csv
        df.to_parquet(path, index=False)
    elif writer == "polars":
        pl.from_arrow(table).write_parquet(path)
    elif writer == "duckdb":
        con = duckdb.connect()
        con.register("t", table)
        con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    else:
        raise ValueError(writer)


def files(root, inputs):
    """path -> sha256 of every output file under root (not the inputs, run records or rejects)."""
    skip = {"runs", "rejects", "_staging", "exports", *inputs}
    out = {}
    for p in sorted(pathlib.Path(root).rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] not in skip:
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def pipelines(b, root):
    runs = [
        ["play-counts", "--date", DAY],
        ["recommend", "--date", DAY, "--k", "10"],
        ["revenue", "--month", MONTH],
        ["ab-analytics", "--date", DAY],
    ]
    return {cmd[0]: run([b / cmd[0], *cmd[1:], "--data-root", root, "--threads", "2"]) for cmd in runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    with tempfile.TemporaryDirectory() as tmp:
        ours = os.path.join(tmp, "ours")
        for day in ["2026-11-29", DAY]:
            ok = run([b / "datagen", "--date", day, "--data-root", ours, "--plays", "60000", "--users", "4000",
                      "--songs", "1500", "--experiment-users", "2000", "--threads", "2"]) == 0
            check(f"datagen {day}", ok)
        inputs = sorted(p.name for p in pathlib.Path(ours).iterdir() if p.is_dir() and p.name != "exports")
        codes = pipelines(b, ours)
        check("every pipeline runs on datagen's own files", all(c == 0 for c in codes.values()), str(codes))
        expected = files(ours, inputs)
        check("the runs wrote outputs", len(expected) >= 8, str(sorted(expected)))
        for writer in ["pyarrow-us", "pyarrow-ns-tz", "pandas", "polars", "duckdb"]:
            theirs = os.path.join(tmp, writer)
            os.makedirs(theirs)
            for name in inputs + ["exports"]:
                shutil.copytree(os.path.join(ours, name), os.path.join(theirs, name))
            for ds in inputs:
                for f in sorted(pathlib.Path(theirs, ds).rglob("*.parquet")):
                    rewrite(str(f), writer)
            codes = pipelines(b, theirs)
            check(f"{writer}: every pipeline runs", all(c == 0 for c in codes.values()), str(codes))
            got = files(theirs, inputs)
            differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
            check(f"{writer}: the same output bytes as on datagen's files", not differ, ", ".join(differ[:8]))
    finish()


if __name__ == "__main__":
    main()
