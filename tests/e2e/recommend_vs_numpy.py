#!/usr/bin/env python3
"""End-to-end check of recommend against an independent NumPy computation.

Generates users, songs and a day of plays with datagen, runs recommend (whole, in three shards,
and with recently streamed songs excluded) and compares with bench/numpy_recommend.py: every
user's K songs equal NumPy's (recall@K = 1.0, where only an exact float tie at the K-th place
may swap a song) and every score within 1e-4; the three shards together equal the whole run.

Prints one line per check and a closing "N passed, M failed" line; exits 1 on any failure.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
from numpy_recommend import load, top_k  # noqa: E402

DATE = "2026-11-26"
K = 50
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], env=dict(os.environ, RUST_LOG="warn"), capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    return p.returncode


def output(root):
    t = pq.read_table(os.path.join(root, "recommendations", f"date={DATE}"))
    t = t.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    return t.column("user_id").to_numpy(), t.column("song_id").to_numpy(), t.column("score").to_numpy()


def compare(label, root, user_ids, ref_songs, ref_scores):
    users, songs, scores = output(root)
    n = len(user_ids)
    ok_shape = len(users) == n * K and np.array_equal(users.reshape(n, K)[:, 0], np.sort(user_ids))
    check(f"{label}: {n} users x {K} rows", ok_shape, f"{len(users)} rows")
    if not ok_shape:
        return
    order = np.argsort(user_ids)
    ref_songs, ref_scores = ref_songs[order], ref_scores[order]
    songs, scores = songs.reshape(n, K), scores.reshape(n, K)
    same = (songs == ref_songs).all(axis=1)
    # A differing row is fine only where NumPy's K-th score ties (to float rounding) with ours.
    tie_only = [u for u in np.nonzero(~same)[0]
                if np.abs(np.sort(scores[u]) - np.sort(ref_scores[u])).max() < 1e-5
                and len(set(songs[u]) ^ set(ref_songs[u])) <= 2]
    recall = np.mean([len(set(songs[u]) & set(ref_songs[u])) / K for u in range(n)])
    check(f"{label}: same songs in the same order (recall@K {recall:.6f}; {len(tie_only)} float ties)",
          (~same).sum() == len(tie_only), f"{(~same).sum() - len(tie_only)} users differ")
    err = np.abs(scores.astype(np.float64) - ref_scores.astype(np.float64)).max()
    check(f"{label}: scores within 1e-4 (max diff {err:.2e})", err < 1e-4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    b = pathlib.Path(ap.parse_args().bin_dir)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "d")
        check("datagen", run([b / "datagen", "--date", DATE, "--data-root", root, "--users", "20000", "--songs", "6000",
                              "--plays", "400000", "--datasets", "user_features,song_embeddings,plays"]) == 0)
        user_ids, users = load(root, "user_features", DATE, "user_id", "features")
        song_ids, songs = load(root, "song_embeddings", DATE, "song_id", "embedding")
        ref_songs, ref_scores = top_k(users, songs, song_ids, K)

        check("recommend runs", run([b / "recommend", "--date", DATE, "--data-root", root, "--k", K]) == 0)
        compare("whole", root, user_ids, ref_songs, ref_scores)
        whole = output(root)
        for i in range(3):
            check(f"shard {i}/3 runs", run([b / "recommend", "--date", DATE, "--data-root", root, "--k", K,
                                            "--shard", f"{i}/3"]) == 0)
        sharded = output(root)
        check("three shards together equal the whole run",
              all(np.array_equal(x, y) for x, y in zip(whole, sharded)))

        # Exclusions: the songs each user streamed (>= 30 s) on the date, from the raw plays.
        plays = pq.read_table(os.path.join(root, "plays", f"date={DATE}"),
                              columns=["user_id", "song_id", "ms_played"]).to_pandas()
        plays = plays[plays.ms_played >= 30000]
        row_of = {u: i for i, u in enumerate(user_ids)}
        index_of = {s: i for i, s in enumerate(np.sort(song_ids))}
        exclude = {row_of[u]: np.array([index_of[s] for s in g.song_id.unique() if s in index_of])
                   for u, g in plays.groupby("user_id") if u in row_of}
        ex_songs, ex_scores = top_k(users, songs, song_ids, K, exclude=exclude)
        check("recommend --exclude-days 1 runs", run([b / "recommend", "--date", DATE, "--data-root", root, "--k", K,
                                                      "--exclude-days", "1"]) == 0)
        compare("excluding streamed songs", root, user_ids, ex_songs, ex_scores)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
