#!/usr/bin/env python3
"""Top-K recommendations with FAISS exact inner-product search (IndexFlatIP): the benchmark's
reference for a tuned BLAS-backed implementation.

    faiss_recommend.py DATA_ROOT DATE K THREADS OUT.npz
"""
import sys

import faiss
import numpy as np

from numpy_recommend import load


def main():
    root, date, k, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    faiss.omp_set_num_threads(threads)
    user_ids, users = load(root, "user_features", date, "user_id", "features")
    song_ids, songs = load(root, "song_embeddings", date, "song_id", "embedding")
    index = faiss.IndexFlatIP(songs.shape[1])
    index.add(songs)
    scores, idx = index.search(users, k)
    np.savez(out, users=user_ids, songs=song_ids[idx], scores=scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
