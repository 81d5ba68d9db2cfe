#!/usr/bin/env python3
"""The machine's single-precision GEMM peak as NumPy's BLAS reaches it: the best of several
4096^3 float32 products, in GFLOP/s. Prints one number."""
import sys
import time

import numpy as np

n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b  # warm-up: thread pool, page faults
times = []
for _ in range(5):
    t0 = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t0)
print(f"{2 * n ** 3 / min(times) / 1e9:.1f}")
