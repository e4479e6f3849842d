#!/usr/bin/python3
"""llama.cpp's own quantizer (llama_model_quantize of libllama in the npm package
@node-llama-cpp/linux-x64, through ctypes) as the reference of knlp's llama.cpp mixes:
quantizes IN.gguf (an f32 export) to REF.gguf in a mix, then reads REF.gguf and knlp's
KNLP.gguf with ggml's own GGUF parser and compares every tensor's type and bytes. Tensors
named with --except (knlp's upgrades) must differ from the mix and be in the type given.
Prints a JSON summary; exit 1 when anything else differs.

  llama_quantize.py LIBDIR IN.gguf REF.gguf MIX KNLP.gguf [--except TYPE NAME,NAME...]
"""
import collections
import ctypes
import json
import os
import sys

FTYPES = {"q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17}
NAMES = {0: "f32", 1: "f16", 2: "q4_0", 6: "q5_0", 7: "q5_1", 8: "q8_0", 11: "q3_k", 12: "q4_k", 13: "q5_k",
         14: "q6_k"}


class InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


class Params(ctypes.Structure):  # llama_model_quantize_params, generously sized; the leading
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32),  # fields are stable
                ("rest", ctypes.c_uint8 * 248)]


def tensors(g, path):
    ctx = g.gguf_init_from_file(path.encode(), InitParams(True, None))
    if not ctx:
        raise SystemExit(f"ggml could not parse {path}")
    base = g.gguf_get_data_offset(ctx)
    out = {}
    with open(path, "rb") as f:
        for i in range(g.gguf_get_n_tensors(ctx)):
            name = g.gguf_get_tensor_name(ctx, i).decode()
            f.seek(base + g.gguf_get_tensor_offset(ctx, i))
            out[name] = (NAMES.get(g.gguf_get_tensor_type(ctx, i), "?"), f.read(g.gguf_get_tensor_size(ctx, i)))
    return out


def main():
    libdir, src, ref, mix, mine = sys.argv[1:6]
    upgrade, upgraded = None, set()
    if "--except" in sys.argv:
        k = sys.argv.index("--except")
        upgrade, upgraded = sys.argv[k + 1], set(filter(None, sys.argv[k + 2].split(",")))
    for name in ("libggml-base.so", "libggml.v0.5.0.so"):
        ctypes.CDLL(os.path.join(libdir, name), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(os.path.join(libdir, "libllama.v0.5.0.so"), mode=ctypes.RTLD_GLOBAL)
    lib.llama_backend_init()
    lib.llama_model_quantize_default_params.restype = Params
    p = lib.llama_model_quantize_default_params()
    p.nthread = 1
    p.ftype = FTYPES[mix]
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Params)]
    if lib.llama_model_quantize(src.encode(), ref.encode(), ctypes.byref(p)) != 0:
        raise SystemExit("llama_model_quantize failed")

    g = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    g.gguf_init_from_file.restype = ctypes.c_void_p
    g.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    for f, r, a in [("gguf_get_data_offset", ctypes.c_size_t, [ctypes.c_void_p]),
                    ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
                    ("gguf_get_tensor_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_tensor_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_tensor_offset", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_tensor_size", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64])]:
        getattr(g, f).restype = r
        getattr(g, f).argtypes = a
    a, b = tensors(g, ref), tensors(g, mine)
    bad = []
    if sorted(a) != sorted(b):
        bad.append(f"tensor names differ: {sorted(set(a) ^ set(b))}")
    same = 0
    for name in sorted(set(a) & set(b)):
        (ta, da), (tb, db) = a[name], b[name]
        if name in upgraded:
            if tb != upgrade or ta == tb:
                bad.append(f"{name}: knlp {tb}, llama.cpp's mix {ta}; expected an upgrade to {upgrade}")
        elif ta != tb:
            bad.append(f"{name}: llama.cpp {ta}, knlp {tb}")
        elif da != db:
            bad.append(f"{name}: {ta} bytes differ")
        else:
            same += 1
    print(json.dumps({"mix": mix, "tensors": len(a), "identical": same, "upgraded": sorted(upgraded),
                      "types": collections.Counter(t for t, _ in a.values()), "failures": bad}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
