"""ggml's reference quantize / dequantize throughput (quantize_row_*_ref, dequantize_row_*
of libggml-base.so, one thread, MB/s of float32, best of 3), the baseline `make bench`
prints knlp's coders against. Same data shape as `knlp_bench quant`. Prints one JSON line.
usage: ggml_speed.py LIBGGML
"""
import ctypes
import json
import sys
import time

import numpy as np

TYPES = {"q8_0": (32, 34), "q4_0": (32, 18), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176),
         "q6_k": (256, 210)}


def main():
    g = ctypes.CDLL(sys.argv[1])
    n = 1 << 22
    x = (np.random.default_rng(0).standard_normal(n) * 0.02).astype(np.float32)
    y = np.zeros(n, np.float32)
    out = {}
    for t, (block, size) in TYPES.items():
        b = np.zeros(n // block * size, np.uint8)
        q_fn = getattr(g, f"quantize_row_{t.replace('_k', '_K')}_ref")
        d_fn = getattr(g, f"dequantize_row_{t.replace('_k', '_K')}")
        q = d = 1e30
        for _ in range(3):
            t0 = time.perf_counter()
            q_fn(x.ctypes.data_as(ctypes.c_void_p), b.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(n))
            q = min(q, time.perf_counter() - t0)
            t0 = time.perf_counter()
            d_fn(b.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(n))
            d = min(d, time.perf_counter() - t0)
        out[t] = {"quantize_mb_s": 4 * n / q / 1e6, "dequantize_mb_s": 4 * n / d / 1e6}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
