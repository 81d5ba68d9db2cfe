#!/usr/bin/env python3
"""End-to-end check of play-counts against an independent DuckDB computation.

Generates three consecutive days with datagen (bad rows, late arrivals, travelling users), runs
play-counts on each CSV export, and recomputes everything in DuckDB from the raw CSV with its own
parsing (all_varchar + TRY_CAST), its own distinct counts and a Python model of chart history.
Then checks: counts and charts equal row for row, the same number of rejected rows, the Parquet
input path giving the same counts as the CSV path, a rerun giving the same bytes, and a run under
a tiny memory budget giving identical results.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from datetime import date, timedelta

import duckdb

CAP = 10
CHART_SIZE = 50
DATES = [date(2026, 11, 24) + timedelta(days=i) for i in range(3)]

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def run(cmd, **kw):
    env = dict(os.environ, RUST_LOG="warn")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    return p.returncode


def reference_day(con, csv, d):
    """Counts of one day computed from the raw CSV, independently of the pipeline."""
    lo, hi = d.isoformat(), (d + timedelta(days=1)).isoformat()
    con.execute(f"""
        CREATE OR REPLACE TABLE raw AS
        SELECT * FROM read_csv('{csv}', header=true, all_varchar=true, ignore_errors=true,
                               delim=',', quote='"', null_padding=false)""")
    con.execute("""
        CREATE OR REPLACE TABLE typed AS SELECT
            TRY_CAST(user_id AS BIGINT) AS u, TRY_CAST(song_id AS BIGINT) AS s,
            TRY_CAST(artist_id AS BIGINT) AS a, TRY_CAST(played_at AS TIMESTAMPTZ) AS t,
            TRY_CAST(ms_played AS INTEGER) AS ms, country AS c
        FROM raw""")
    valid = "u IS NOT NULL AND s IS NOT NULL AND a IS NOT NULL AND t IS NOT NULL AND ms IS NOT NULL AND c IS NOT NULL"
    n_lines = sum(1 for _ in open(csv, "rb")) - 1
    n_valid = con.execute(f"SELECT count(*) FROM typed WHERE {valid}").fetchone()[0]
    con.execute(f"""CREATE OR REPLACE TABLE p AS SELECT * FROM typed
                    WHERE {valid} AND t >= TIMESTAMPTZ '{lo} 00:00:00+00' AND t < TIMESTAMPTZ '{hi} 00:00:00+00'""")
    songs = con.execute("""
        SELECT s, a, count(*), count(*) FILTER (WHERE ms >= 30000),
               count(DISTINCT u) FILTER (WHERE ms >= 30000), sum(ms)::BIGINT
        FROM p GROUP BY s, a ORDER BY s, a""").fetchall()
    artists = con.execute("""
        SELECT a, count(*), count(*) FILTER (WHERE ms >= 30000),
               count(DISTINCT u) FILTER (WHERE ms >= 30000), sum(ms)::BIGINT
        FROM p GROUP BY a ORDER BY a""").fetchall()
    # Chart candidates per scope: capped streams and listeners.
    scoped = con.execute(f"""
        WITH per_user AS (
            SELECT c, s, a, u, count(*) FILTER (WHERE ms >= 30000) AS n FROM p GROUP BY ALL),
        -- The cap is per user, song and day, across countries.
        per_song_user AS (SELECT s, a, u, sum(n) AS n FROM per_user GROUP BY ALL),
        g AS (SELECT 'global' AS scope, s, a, sum(least(n, {CAP})) AS st,
                     count(DISTINCT u) FILTER (WHERE n > 0) AS li FROM per_song_user GROUP BY s, a),
        cc AS (SELECT c AS scope, s, a, sum(least(n, {CAP})) AS st,
                      count(*) FILTER (WHERE n > 0) AS li FROM per_user GROUP BY c, s, a)
        SELECT * FROM g WHERE st > 0 UNION ALL SELECT * FROM cc WHERE st > 0""").fetchall()
    return songs, artists, scoped, n_lines - n_valid


def reference_charts(scoped, d, history):
    """Top CHART_SIZE per scope with movement, peak, days on chart, new and re-entry flags."""
    by_scope = {}
    for scope, s, a, st, li in scoped:
        by_scope.setdefault(scope, []).append((-st, -li, s, a, st))
    rows = []
    yesterday = d - timedelta(days=1)
    for scope in sorted(by_scope, key=lambda x: (x != "global", x)):
        for rank, (_, _, s, a, st) in enumerate(sorted(by_scope[scope])[:CHART_SIZE], start=1):
            last = history.get((scope, s))
            prev = last[1] if last and last[0] == yesterday else None
            peak = min(rank, last[2]) if last else rank
            days = (last[3] if last else 0) + 1
            rows.append((d, scope, rank, s, a, st, prev, None if prev is None else prev - rank,
                         peak, days, last is None, bool(last and last[0] < yesterday)))
    for r in rows:
        history[(r[1], r[3])] = (d, r[2], r[8], r[9])
    return rows


def outputs(con, root, d):
    part = f"date={d.isoformat()}"
    q = lambda ds, cols, order: con.execute(
        f"SELECT {cols} FROM read_parquet('{root}/{ds}/{part}/*.parquet', hive_partitioning = true) "
        f"ORDER BY {order}").fetchall()
    songs = q("daily_song_counts", "song_id, artist_id, plays, streams, listeners, ms_played", "song_id, artist_id")
    artists = q("daily_artist_counts", "artist_id, plays, streams, listeners, ms_played", "artist_id")
    charts = q("charts", "date, scope, rank, song_id, artist_id, streams, prev_rank, movement, peak_rank, "
               "days_on_chart, is_new, is_reentry", "scope != 'global', scope, rank")
    return songs, artists, charts


def digest(root, d):
    h = hashlib.sha256()
    for ds in ["daily_song_counts", "daily_artist_counts", "charts"]:
        for f in sorted(pathlib.Path(root, ds, f"date={d.isoformat()}").glob("*.parquet")):
            h.update(f.read_bytes())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--plays", type=int, default=300_000)
    args = ap.parse_args()
    datagen = os.path.join(args.bin_dir, "datagen")
    pc = os.path.join(args.bin_dir, "play-counts")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            checks(tmp, datagen, pc, con, args)
        except Exception as e:  # a crash is a failed check, reported like the others
            check("the check ran to the end", False, repr(e))
    passed, failed = sum(results), len(results) - sum(results)
    print(f"e2e: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def checks(tmp, datagen, pc, con, args):
    if True:
        root = os.path.join(tmp, "data")
        history = {}
        common = ["--data-root", root, "--chart-size", str(CHART_SIZE), "--max-streams-per-user-per-day", str(CAP),
                  "--max-reject-share", "0.01"]
        for d in DATES:
            rc = run([datagen, "--date", d.isoformat(), "--data-root", root, "--plays", str(args.plays),
                      "--users", "30000", "--songs", "3000", "--bad-rows", "0.002", "--late-share", "0.01",
                      "--datasets", "plays-csv,plays"])
            check(f"datagen {d}", rc == 0)
            csv = os.path.join(root, "exports", f"plays-{d.isoformat()}.csv")
            rc = run([pc, "--date", d.isoformat(), "--input", csv, *common])
            check(f"play-counts {d} exits 0", rc == 0, f"exit {rc}")
            if rc != 0:
                break
            songs, artists, scoped, rejected = reference_day(con, csv, d)
            expected_charts = reference_charts(scoped, d, history)
            got_songs, got_artists, got_charts = outputs(con, root, d)
            check(f"{d} song counts = DuckDB ({len(songs)} songs)", got_songs == songs,
                  f"{len(got_songs)} vs {len(songs)} rows; first diff {next((a, b) for a, b in zip(got_songs, songs) if a != b) if got_songs != songs and len(got_songs) == len(songs) else ''}")
            check(f"{d} artist counts = DuckDB ({len(artists)} artists)", got_artists == artists)
            check(f"{d} charts = reference ({len(expected_charts)} rows)", got_charts == expected_charts,
                  next((f"{a} != {b}" for a, b in zip(got_charts, expected_charts) if a != b), f"{len(got_charts)} vs {len(expected_charts)} rows"))
            rej_file = pathlib.Path(root, "rejects", "play-counts", f"date={d.isoformat()}", "rejects.jsonl")
            got_rej = [json.loads(line) for line in rej_file.read_text().splitlines()] if rej_file.exists() else []
            check(f"{d} rejects = DuckDB's invalid rows ({rejected})", len(got_rej) == rejected and rejected > 0,
                  f"{len(got_rej)} vs {rejected}")
            check(f"{d} every reject names file, line, reason",
                  all(r["file"] == csv and r["line"] >= 2 and r["reason"] and r["raw"] for r in got_rej))

        d = DATES[-1]
        before = digest(root, d)
        run([pc, "--date", d.isoformat(), "--input", os.path.join(root, "exports", f"plays-{d.isoformat()}.csv"), *common])
        check("a rerun gives the same bytes", digest(root, d) == before)

        charts_seen = {c for (_, _, _, _, _, _, _, _, _, _, new, reentry) in outputs(con, root, d)[2] for c in [(new, reentry)]}
        check("the history exercises new and carried-over songs", (True, False) in charts_seen and (False, False) in charts_seen)

        small = os.path.join(tmp, "small")
        os.makedirs(small)
        csv = os.path.join(root, "exports", f"plays-{d.isoformat()}.csv")
        for prev in DATES[:-1]:
            # Same history: copy earlier charts so movement is comparable.
            src = pathlib.Path(root, "charts", f"date={prev.isoformat()}")
            dst = pathlib.Path(small, "charts", f"date={prev.isoformat()}")
            dst.mkdir(parents=True)
            for f in src.glob("*.parquet"):
                (dst / f.name).write_bytes(f.read_bytes())
        rc = run([pc, "--date", d.isoformat(), "--input", csv, "--data-root", small, "--memory-limit", "64MiB",
                  "--chart-size", str(CHART_SIZE), "--max-streams-per-user-per-day", str(CAP),
                  "--max-reject-share", "0.01"])
        check("a 64MiB budget completes", rc == 0, f"exit {rc}")
        check("a 64MiB budget gives identical bytes", digest(small, d) == before)

        pq = os.path.join(tmp, "pq")
        rc = run([pc, "--date", d.isoformat(), "--data-root", pq, "--input",
                  os.path.join(root, "plays", f"date={d.isoformat()}"), "--chart-size", str(CHART_SIZE)])
        # (Parquet partitions hold only well-formed rows: nothing to reject.)
        check("Parquet input exits 0", rc == 0, f"exit {rc}")
        check("Parquet input gives the CSV path's counts", outputs(con, pq, d)[:2] == outputs(con, root, d)[:2])

        strict = os.path.join(tmp, "strict")
        rc = run([pc, "--date", d.isoformat(), "--input", csv, "--data-root", strict, "--max-reject-share", "0.0001"])
        check("too many rejects exits 65", rc == 65, f"exit {rc}")
        check("a failed run publishes no outputs", not pathlib.Path(strict, "daily_song_counts").exists())
        check("a failed run still keeps its rejects",
              pathlib.Path(strict, "rejects", "play-counts", f"date={d.isoformat()}", "rejects.jsonl").exists())


if __name__ == "__main__":
    main()
