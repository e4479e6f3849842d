#!/usr/bin/python3
"""Mean next-token loss of a GGUF model computed by llama.cpp itself (libllama of the npm
package @node-llama-cpp/linux-x64, its prebuilt CPU build, through ctypes), over the windows
`knlp eval` scores: T tokens at 0, T, 2T, ... and one aligned to the end of the file whose
already-scored targets are skipped, so each of the N-1 targets counts once. Each window is
decoded from an empty KV cache (float32 keys and values, no flash attention: the file's own
precision) with the logits of every position read as raw floats; the loss is a float64
log-softmax over the model's vocabulary. Same figures as llama_eval.mjs (node-llama-cpp's
JavaScript API), about 50x faster: no per-position JavaScript maps.

  llama_eval.py LIBDIR MODEL.gguf VAL.bin T [TOKEN_BYTES]

LIBDIR: node-llama-cpp's bins/linux-x64 folder. TOKEN_BYTES: 2 (uint16, default) or 4.
Prints one JSON line: {"tokens": n, "val_loss": mean nats}.
"""
import ctypes
import json
import os
import struct
import sys


import numpy as np
from windows import eval_windows, scored_before  # scripts/ref/windows.py


class Batch(ctypes.Structure):  # struct llama_batch
    _fields_ = [("n_tokens", ctypes.c_int32), ("token", ctypes.POINTER(ctypes.c_int32)),
                ("embd", ctypes.POINTER(ctypes.c_float)), ("pos", ctypes.POINTER(ctypes.c_int32)),
                ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
                ("seq_id", ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))),
                ("logits", ctypes.POINTER(ctypes.c_int8))]


class Params(ctypes.Structure):  # llama_model_params / llama_context_params, generously sized
    _fields_ = [("b", ctypes.c_uint8 * 512)]


# Offsets in llama_context_params of node-llama-cpp 3.22.1's llama.cpp, checked against the
# defaults before use (a different build fails here instead of computing something else).
CTX = {"n_ctx": 0, "n_batch": 4, "n_ubatch": 8, "n_threads": 28, "n_threads_batch": 32, "flash_attn_type": 52,
       "type_k": 104, "type_v": 108}
DEFAULTS = {"n_ctx": 512, "n_batch": 2048, "n_ubatch": 512, "flash_attn_type": -1, "type_k": 1, "type_v": 1}


def main():
    libdir, model_path, val, T = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    width = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    for name in ("libggml-base.so", "libggml.v0.5.0.so"):
        ctypes.CDLL(os.path.join(libdir, name), mode=ctypes.RTLD_GLOBAL)
    g = ctypes.CDLL(os.path.join(libdir, "libggml.v0.5.0.so"))
    g.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    g.ggml_backend_load_all_from_path(libdir.encode())
    L = ctypes.CDLL(os.path.join(libdir, "libllama.v0.5.0.so"), mode=ctypes.RTLD_GLOBAL)
    L.llama_log_set.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    quiet = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda *a: None)
    L.llama_log_set(ctypes.cast(quiet, ctypes.c_void_p), None)
    L.llama_backend_init()
    L.llama_model_default_params.restype = Params
    L.llama_context_default_params.restype = Params
    L.llama_model_load_from_file.restype = ctypes.c_void_p
    L.llama_model_load_from_file.argtypes = [ctypes.c_char_p, Params]
    L.llama_init_from_model.restype = ctypes.c_void_p
    L.llama_init_from_model.argtypes = [ctypes.c_void_p, Params]
    L.llama_model_get_vocab.restype = ctypes.c_void_p
    L.llama_model_get_vocab.argtypes = [ctypes.c_void_p]
    L.llama_vocab_n_tokens.argtypes = [ctypes.c_void_p]
    L.llama_batch_init.restype = Batch
    L.llama_batch_init.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
    L.llama_batch_free.argtypes = [Batch]
    L.llama_decode.argtypes = [ctypes.c_void_p, Batch]
    L.llama_get_logits_ith.restype = ctypes.POINTER(ctypes.c_float)
    L.llama_get_logits_ith.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    L.llama_get_memory.restype = ctypes.c_void_p
    L.llama_get_memory.argtypes = [ctypes.c_void_p]
    L.llama_memory_clear.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    L.llama_free.argtypes = [ctypes.c_void_p]
    L.llama_model_free.argtypes = [ctypes.c_void_p]

    ids = np.fromfile(val, dtype=np.uint16 if width == 2 else np.uint32).astype(np.int64)
    T, starts, covered, tail = eval_windows(ids.size, T)

    model = L.llama_model_load_from_file(model_path.encode(), L.llama_model_default_params())
    if not model:
        raise SystemExit(f"llama.cpp could not load {model_path}")
    cp = L.llama_context_default_params()
    buf = bytearray(cp.b)
    for k, v in DEFAULTS.items():
        got = struct.unpack_from("<i", buf, CTX[k])[0]
        if got != v:
            raise SystemExit(f"llama_context_params layout differs from this script's ({k} = {got}, expected {v})")
    for k, v in {"n_ctx": 2 * T, "n_batch": T, "n_ubatch": T, "n_threads": 2, "n_threads_batch": 2,
                 "flash_attn_type": 0, "type_k": 0, "type_v": 0}.items():
        struct.pack_into("<i", buf, CTX[k], v)
    ctypes.memmove(ctypes.addressof(cp), bytes(buf), len(buf))
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise SystemExit("llama.cpp could not create a context")
    V = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    batch = L.llama_batch_init(T, 0, 1)
    total, count = 0.0, 0
    for w, s in enumerate(starts):
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        batch.n_tokens = T
        for t in range(T):
            batch.token[t] = int(ids[s + t])
            batch.pos[t] = t
            batch.n_seq_id[t] = 1
            batch.seq_id[t][0] = 0
            batch.logits[t] = 1
        if L.llama_decode(ctx, batch) != 0:
            raise SystemExit(f"llama_decode failed on the window at {s}")
        for t in range(T):
            if scored_before(s, t, covered, tail and w == len(starts) - 1):
                continue
            lg = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, t), shape=(V,)).astype(np.float64)
            m = lg.max()
            total += np.log(np.exp(lg - m).sum()) + m - lg[ids[s + t + 1]]
            count += 1
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    print(json.dumps({"tokens": count, "val_loss": total / count}))


if __name__ == "__main__":
    main()
