#!/usr/bin/env python3
"""Top-K recommendations the NumPy way (the seed's "vectorise" advice): blocked matrix product,
`argpartition` for the K best of each row, then a sort of those K. Ties order by the smaller song
id, as in recommend. Both the benchmark's NumPy baseline and the e2e check's reference.

    numpy_recommend.py DATA_ROOT DATE K OUT.npz [--block 4096]
"""
import argparse
import os
import sys

import numpy as np
import pyarrow.parquet as pq


def load(root, dataset, date, id_col, vec_col):
    t = pq.read_table(os.path.join(root, dataset, f"date={date}"), columns=[id_col, vec_col])
    ids = t.column(id_col).to_numpy()
    dim = t.schema.field(vec_col).type.list_size
    flat = t.column(vec_col).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, np.ascontiguousarray(flat.reshape(len(ids), dim), dtype=np.float32)


def top_k(users, songs, song_ids, k, block=4096, exclude=None):
    """(indices into song_ids, scores) of the best k songs per user. `exclude` maps a user's row
    to an array of song indices to leave out."""
    order = np.argsort(song_ids, kind="stable")  # so that index order is song id order
    songs, song_ids = songs[order], song_ids[order]
    n = len(users)
    best = np.empty((n, k), dtype=np.int64)
    best_scores = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, block):
        s = users[lo:lo + block] @ songs.T
        if exclude is not None:
            for r in range(s.shape[0]):
                ex = exclude.get(lo + r)
                if ex is not None and len(ex):
                    s[r, ex] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        sc = np.take_along_axis(s, part, axis=1)
        # Best first; equal scores by the smaller song id. (An exact tie at the K-th place with a
        # song outside the partition is resolved arbitrarily: the checks allow for it.)
        o = np.lexsort((part, -sc), axis=1)
        best[lo:lo + len(s)] = np.take_along_axis(part, o, axis=1)
        best_scores[lo:lo + len(s)] = np.take_along_axis(sc, o, axis=1)
    return song_ids[best], best_scores


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("date")
    ap.add_argument("k", type=int)
    ap.add_argument("out")
    ap.add_argument("--block", type=int, default=4096)
    a = ap.parse_args()
    user_ids, users = load(a.root, "user_features", a.date, "user_id", "features")
    song_ids, songs = load(a.root, "song_embeddings", a.date, "song_id", "embedding")
    ids, scores = top_k(users, songs, song_ids, a.k, a.block)
    np.savez(a.out, users=user_ids, songs=ids, scores=scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
