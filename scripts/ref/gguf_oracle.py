"""A `knlp export --format gguf` file read back by ggml's own GGUF parser (libggml-base.so,
see ggml_oracle.py): version, alignment, every metadata key knlp writes and its value, every
tensor's llama.cpp name, shape, type and offset, and its bytes, which must equal ggml's own
quantization (quantize_row_*_ref) of the checkpoint's float32 weights; dequantized by ggml,
each tensor must stay within its type's error of the original. Prints one line per failure
and a summary; exit 1 on any failure.
usage: gguf_oracle.py LIBGGML FILE.gguf CHECKPOINT_DIR [key=value ...]
  (key=value: expected metadata, e.g. gpt2.block_count=2 tokenizer.ggml.model=none)
"""
import ctypes
import json
import re
import struct
import sys

import numpy as np

GGML_TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 11: ("q3_k", 256, 110),
              12: ("q4_k", 256, 144), 13: ("q5_k", 256, 176), 14: ("q6_k", 256, 210)}
# Relative RMS error bound of each type on trained weights (loose: the tests check that the
# values are the right ones, not how good the quantizer is).
REL_ERR = {"f32": 0.0, "f16": 1e-3, "q8_0": 0.02, "q6_k": 0.05, "q5_k": 0.1, "q4_k": 0.2, "q4_0": 0.25, "q5_0": 0.15, "q5_1": 0.15,
           "q3_k": 0.4}


class InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], np.float32).reshape(v["shape"])
    return out


def knlp_name(gguf):
    inner = {"attn_norm.weight": "ln_1.weight", "attn_norm.bias": "ln_1.bias", "attn_qkv.weight": "attn.c_attn.weight",
             "attn_qkv.bias": "attn.c_attn.bias", "attn_output.weight": "attn.c_proj.weight",
             "attn_output.bias": "attn.c_proj.bias", "ffn_norm.weight": "ln_2.weight", "ffn_norm.bias": "ln_2.bias",
             "ffn_up.weight": "mlp.c_fc.weight", "ffn_up.bias": "mlp.c_fc.bias", "ffn_down.weight": "mlp.c_proj.weight",
             "ffn_down.bias": "mlp.c_proj.bias"}
    m = re.match(r"blk\.(\d+)\.(.*)", gguf)
    if m:
        return f"transformer.h.{m.group(1)}.{inner[m.group(2)]}"
    return {"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
            "output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias"}[gguf]


def main():
    lib, path, ckpt = sys.argv[1:4]
    want_kv = dict(a.split("=", 1) for a in sys.argv[4:])
    g = ctypes.CDLL(lib)
    g.gguf_init_from_file.restype = ctypes.c_void_p
    g.gguf_init_from_file.argtypes = [ctypes.c_char_p, InitParams]
    for f, r, a in [("gguf_get_version", ctypes.c_uint32, [ctypes.c_void_p]),
                    ("gguf_get_alignment", ctypes.c_size_t, [ctypes.c_void_p]),
                    ("gguf_get_data_offset", ctypes.c_size_t, [ctypes.c_void_p]),
                    ("gguf_get_n_kv", ctypes.c_int64, [ctypes.c_void_p]),
                    ("gguf_get_key", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_find_key", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
                    ("gguf_get_kv_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_arr_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_arr_str", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t]),
                    ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_val_f32", ctypes.c_float, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_val_str", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
                    ("gguf_get_tensor_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_tensor_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_tensor_offset", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                    ("gguf_get_tensor_size", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
                    ("ggml_get_tensor", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
                    ("ggml_nelements", ctypes.c_int64, [ctypes.c_void_p])]:
        getattr(g, f).restype = r
        getattr(g, f).argtypes = a
    ggml_ctx = ctypes.c_void_p()
    ctx = g.gguf_init_from_file(path.encode(), InitParams(True, ctypes.pointer(ggml_ctx)))
    fails = []
    if not ctx:
        print(f"FAIL ggml could not parse {path}")
        sys.exit(1)
    if g.gguf_get_version(ctx) != 3:
        fails.append(f"version {g.gguf_get_version(ctx)}")
    align = g.gguf_get_alignment(ctx)
    data_off = g.gguf_get_data_offset(ctx)
    if data_off % align:
        fails.append(f"data offset {data_off} not aligned to {align}")
    # Metadata.
    kv = {}
    for i in range(g.gguf_get_n_kv(ctx)):
        key = g.gguf_get_key(ctx, i).decode()
        t = g.gguf_get_kv_type(ctx, i)
        if t == 4:
            kv[key] = str(g.gguf_get_val_u32(ctx, i))
        elif t == 6:
            kv[key] = repr(g.gguf_get_val_f32(ctx, i))
        elif t == 8:
            kv[key] = g.gguf_get_val_str(ctx, i).decode()
        elif t == 9:
            kv[key] = f"array[{g.gguf_get_arr_n(ctx, i)}]"
            if g.gguf_get_arr_type(ctx, i) == 8 and g.gguf_get_arr_n(ctx, i):
                kv[key + "[0]"] = g.gguf_get_arr_str(ctx, i, 0).decode()
        else:
            kv[key] = f"type{t}"
    for k in ["general.architecture", "gpt2.context_length", "gpt2.embedding_length", "gpt2.feed_forward_length",
              "gpt2.block_count", "gpt2.attention.head_count", "gpt2.attention.layer_norm_epsilon",
              "tokenizer.ggml.model"]:
        if k not in kv:
            fails.append(f"metadata {k} missing")
    if kv.get("general.architecture") != "gpt2":
        fails.append(f"general.architecture = {kv.get('general.architecture')}")
    if abs(float(kv.get("gpt2.attention.layer_norm_epsilon", "0")) - 1e-5) > 1e-9:
        fails.append("gpt2.attention.layer_norm_epsilon is not 1e-5")
    for k, v in want_kv.items():
        if kv.get(k) != v:
            fails.append(f"metadata {k} = {kv.get(k)!r}, expected {v!r}")
    # Tensors against the checkpoint's weights.
    weights = read_safetensors(ckpt + "/model.safetensors")
    raw = open(path, "rb").read()
    n_layer = int(kv.get("gpt2.block_count", "0"))
    names = set()
    for i in range(g.gguf_get_n_tensors(ctx)):
        name = g.gguf_get_tensor_name(ctx, i).decode()
        names.add(name)
        t = g.gguf_get_tensor_type(ctx, i)
        off = g.gguf_get_tensor_offset(ctx, i)
        size = g.gguf_get_tensor_size(ctx, i)
        if t not in GGML_TYPES:
            fails.append(f"{name}: type {t}")
            continue
        tname, block, bbytes = GGML_TYPES[t]
        if off % align:
            fails.append(f"{name}: offset {off} not aligned")
        tp = g.ggml_get_tensor(ggml_ctx, name.encode())
        ne = np.ctypeslib.as_array(ctypes.cast(tp + 16, ctypes.POINTER(ctypes.c_int64)), (4,)).copy()
        if int(np.prod(ne)) != g.ggml_nelements(tp):
            fails.append(f"{name}: ggml_tensor layout not understood")
            continue
        src = weights.get(knlp_name(name))
        if src is None:  # a zero bias knlp adds for models without biases
            src = np.zeros(int(np.prod(ne)), np.float32)
        if name == "token_embd.weight":
            src = src[:int(ne[1])]
        shape = tuple(int(d) for d in ne[:src.ndim][::-1])
        if src.shape != shape:
            fails.append(f"{name}: shape {shape} (ggml ne {list(ne)}), checkpoint {src.shape}")
            continue
        x = np.ascontiguousarray(src, np.float32).reshape(-1)
        if size != x.size // block * bbytes:
            fails.append(f"{name}: {size} bytes for {x.size} {tname} values")
            continue
        got = np.frombuffer(raw[data_off + off:data_off + off + size], np.uint8)
        if tname == "f32":
            want = x.view(np.uint8)
        elif tname == "f16":
            want = x.astype(np.float16).view(np.uint8)
        else:
            want = np.zeros(size, np.uint8)
            getattr(g, f"quantize_row_{tname.replace('_k', '_K')}_ref")(
                x.ctypes.data_as(ctypes.c_void_p), want.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
        if not np.array_equal(got, want):
            fails.append(f"{name}: {tname} bytes differ from ggml's at {np.count_nonzero(got != want)} places")
        if tname not in ("f32", "f16"):
            y = np.zeros(x.size, np.float32)
            getattr(g, f"dequantize_row_{tname.replace('_k', '_K')}")(
                got.ctypes.data_as(ctypes.c_void_p), y.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) or 1.0
            err = float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2))) / rms
            if err > REL_ERR[tname]:
                fails.append(f"{name}: {tname} relative error {err:.4f} > {REL_ERR[tname]}")
    want_names = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"}
    for i in range(n_layer):
        for s in ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"]:
            want_names |= {f"blk.{i}.{s}.weight", f"blk.{i}.{s}.bias"}
    if names != want_names:
        fails.append(f"tensor names: missing {sorted(want_names - names)}, extra {sorted(names - want_names)}")
    for f in fails:
        print("FAIL", f)
    print(f"gguf oracle: {path}: {g.gguf_get_n_tensors(ctx)} tensors, {len(kv)} keys read by ggml, "
          f"{len(fails)} failures")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
