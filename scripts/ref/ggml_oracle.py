"""knlp's GGML quantizers against ggml itself (libggml-base.so from the npm package
@node-llama-cpp/linux-x64, fetched by scripts/deps.sh): for every block type and a set of
input distributions, knlp's blocks must equal ggml's quantize_row_*_ref byte for byte, and
knlp's dequantization must equal ggml's dequantize_row_* bit for bit.
usage: ggml_oracle.py KNLP LIBGGML WORKDIR
"""
import ctypes
import os
import subprocess
import sys

import numpy as np

TYPES = {"q8_0": (32, 34), "q4_0": (32, 18), "q5_0": (32, 22), "q5_1": (32, 24), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176),
         "q6_k": (256, 210)}


def inputs(rng):
    n = 256 * 24
    yield "normal", rng.standard_normal(n).astype(np.float32)
    yield "weights", (0.02 * rng.standard_normal(n)).astype(np.float32)
    yield "uniform_pos", rng.uniform(0, 3, n).astype(np.float32)
    yield "uniform_neg", rng.uniform(-5, -0.1, n).astype(np.float32)
    yield "heavy_tail", (rng.standard_t(2, n) * 0.1).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    x[::97] *= 40  # outliers
    yield "outliers", x
    x = np.zeros(n, np.float32)
    x[256:512] = 1.5  # a constant block
    x[600] = -2.0  # one non-zero
    x[1024:1280] = np.float32(1e-20)  # below the smallest scale
    yield "zeros_constants_tiny", x
    yield "ints", rng.integers(-8, 8, n).astype(np.float32)
    yield "huge", (rng.standard_normal(n) * 1e4).astype(np.float32)
    # 400 super-blocks, each at its own scale (log-uniform over 6 decades), skewed rows.
    m = 256 * 400
    scale = np.repeat(10.0 ** rng.uniform(-4, 2, m // 32), 32)
    yield "many_scales", (rng.standard_normal(m) * scale + 0.3 * scale).astype(np.float32)


def main():
    knlp, lib, work = sys.argv[1:4]
    g = ctypes.CDLL(lib)
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(7)
    # Blocks are independent: every distribution goes into one array, coded in one call.
    parts = list(inputs(rng))
    x = np.concatenate([p for _, p in parts])
    ends = np.cumsum([p.size for _, p in parts])
    n = x.size
    src = os.path.join(work, "x.f32")
    x.tofile(src)

    def where(elem):
        i = int(np.searchsorted(ends, elem, side="right"))
        return parts[i][0]

    failures, checks = 0, 0
    for t, (block, size) in TYPES.items():
        ref = np.zeros(n // block * size, np.uint8)
        getattr(g, f"quantize_row_{t.replace('_k', '_K')}_ref")(
            x.ctypes.data_as(ctypes.c_void_p), ref.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(n))
        out, back = (os.path.join(work, f"{t}.{s}") for s in ("bin", "dq"))
        subprocess.run([knlp, "quant", "encode", "--type", t, src, out], check=True)
        mine = np.fromfile(out, np.uint8)
        checks += 1
        if not np.array_equal(mine, ref):
            bad = np.nonzero(mine != ref)[0]
            blocks = sorted({int(b) // size for b in bad})
            print(f"FAIL {t}: {bad.size} of {ref.size} bytes differ in {len(blocks)} blocks, first block "
                  f"{blocks[0]} ({where(blocks[0] * block)}), offset {bad[0] % size}")
            failures += 1
        want = np.zeros(n, np.float32)
        getattr(g, f"dequantize_row_{t.replace('_k', '_K')}")(
            ref.ctypes.data_as(ctypes.c_void_p), want.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(n))
        ref.tofile(out)
        subprocess.run([knlp, "quant", "decode", "--type", t, out, back], check=True)
        got = np.fromfile(back, np.float32)
        checks += 1
        if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            bad = np.nonzero(got.view(np.uint32) != want.view(np.uint32))[0]
            print(f"FAIL {t}: dequantization differs at {bad.size} values, first {bad[0]} ({where(bad[0])}): "
                  f"{got[bad[0]]!r} vs {want[bad[0]]!r}")
            failures += 1
    print(f"ggml oracle: {checks - failures} of {checks} checks equal ({len(parts)} distributions, {n} values "
          f"per type)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
