"""Independent eager-PyTorch references for knlp's attention variants and true Fisher.

Written from the original's formulas (shared spec: GPT-2 / MLA / KVSplice / RA / SDPA
gate; the Fisher tools), not from knlp's C++, and run on Debian's python3-torch:

  weights CKPT SEED            replace CKPT/model.safetensors (a knlp checkpoint folder) by
                               weights drawn here from numpy's seeded generator, so the
                               reference does not depend on libtorch's initialisation
  tokens FILE N SEED           N byte-level token ids (uint16) a repetitive text would give
  forward CKPT VAL.bin         {"tokens", "val_loss"} over knlp eval's windows (T-token windows
                               at 0, T, 2T, ... plus one aligned to the end whose already-
                               scored targets are skipped)
  fisher CKPT DATA.bin FISHER  compare knlp's fisher.safetensors (empirical and true) with
                               the Fisher computed here: the same windows, the true Fisher's
                               labels drawn by inverse CDF from this model's softmax with the
                               documented splitmix64 stream (fim/fisher.h); prints the worst
                               relative error per kind, exit 1 above 1e-4
  golden OUT.json              the checked-in goldens of tests/test_reference.sh (see there)

The model: pre-LN GPT-2 blocks, learned positions added at the input, tied head, erf GELU,
LayerNorm eps 1e-5; the variant and shapes come from the checkpoint's state.json config.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from windows import eval_windows, scored_before  # scripts/ref/windows.py

torch.set_num_threads(1)
MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------- checkpoint files

def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], np.float32).reshape(v["shape"]).copy()
    return header, out


def write_safetensors(path, header, tensors):
    hdr, blobs, off = {}, [], 0
    if "__metadata__" in header:
        hdr["__metadata__"] = header["__metadata__"]
    for k in tensors:
        b = np.ascontiguousarray(tensors[k], np.float32).tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_config(ckpt):
    cfg = {}
    for line in json.load(open(os.path.join(ckpt, "state.json")))["config"].splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line[7:].split("=", 1)
            cfg[k] = v.strip('"')
    attn = [k[len("GPT2_ATTN_"):] for k, v in cfg.items() if k.startswith("GPT2_ATTN_") and v == "y"]
    return {
        "L": int(cfg["GPT2_N_LAYER"]), "H": int(cfg["GPT2_N_HEAD"]), "C": int(cfg["GPT2_N_EMBD"]),
        "T": int(cfg["GPT2_BLOCK_SIZE"]), "variant": attn[0].lower() if attn else "vanilla",
        "latent": int(cfg.get("GPT2_MLA_D_LATENT", "256")), "splice": int(cfg.get("GPT2_KVSPLICE_DIM", "128")),
        "ra_layers": int(cfg.get("GPT2_RA_LAYERS", "3")), "ra_heads": int(cfg.get("GPT2_RA_HEADS", "1")),
    }


def cmd_weights(ckpt, seed):
    path = os.path.join(ckpt, "model.safetensors")
    header, old = read_safetensors(path)
    r = np.random.default_rng(int(seed))
    new = {}
    for name in sorted(old):
        shape = old[name].shape
        leaf = name.rsplit(".", 1)[-1]
        module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
        if name.endswith("ra_rho"):
            v = np.full(shape, 0.8)
        elif module.startswith("ln"):
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * r.standard_normal(shape)
        elif name.endswith("wte.weight") or name.endswith("wpe.weight"):
            v = 0.3 * r.standard_normal(shape)
        elif leaf == "weight":
            v = r.standard_normal(shape) / math.sqrt(shape[1])
        else:
            v = 0.1 * r.standard_normal(shape)
        new[name] = v.astype(np.float32)
    write_safetensors(path, header, {k: new[k] for k in old})


def cmd_tokens(path, n, seed):
    r = np.random.default_rng(int(seed))
    words = [b"the page ", b"a buffer ", b"locks ", b"frees ", b"the task ", b"wakes ", b"memory. "]
    out = bytearray()
    while len(out) < int(n):
        out += words[r.integers(len(words))]
    np.frombuffer(bytes(out[:int(n)]), np.uint8).astype(np.uint16).tofile(path)


# ----------------------------------------------------------------- the model

class Model:
    def __init__(self, ckpt):
        self.c = checkpoint_config(ckpt)
        _, w = read_safetensors(os.path.join(ckpt, "model.safetensors"))
        self.w = {k: torch.from_numpy(v).requires_grad_(True) for k, v in w.items()}
        c = self.c
        n = c["ra_layers"]
        self.ra = set(range(c["L"] // 2 - n // 2, c["L"] // 2 - n // 2 + n)) if c["variant"] in ("ra", "ra_gate") else set()
        self.gate = c["variant"] in ("sdpa_gate", "ra_gate")

    def p(self, name):
        return self.w[name]

    def linear(self, x, prefix, bias=True):
        y = x @ self.p(prefix + ".weight").T
        b = self.w.get(prefix + ".bias")
        return y + b if b is not None else y

    def ln(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.p(prefix + ".weight"), self.w.get(prefix + ".bias"), 1e-5)

    @staticmethod
    def causal(q, k, v):
        # softmax(q k^T / sqrt(d)) over j <= i, then the values
        t = q.shape[-2]
        s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        return s.softmax(-1) @ v

    @staticmethod
    def rope(x):
        # rotate-half, base 10000, over the whole last dimension; positions 0..T-1
        t, d = x.shape[-2], x.shape[-1]
        inv = 10000.0 ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2.0 / d)
        ang = torch.outer(torch.arange(t, dtype=torch.float64), inv)
        ang = torch.cat([ang, ang], 1).float()
        x1, x2 = x[..., :d // 2], x[..., d // 2:]
        return x * ang.cos() + torch.cat([-x2, x1], -1) * ang.sin()

    def standard(self, x, pre, layer):
        t, C = x.shape
        H = self.c["H"]
        D = C // H
        q, k, v = self.linear(x, pre + "c_attn").split(C, -1)
        q, k, v = (z.view(t, H, D).transpose(0, 1) for z in (q, k, v))
        y = self.causal(q, k, v).transpose(0, 1).reshape(t, C)
        if self.gate:  # y_base <- y_base * sigmoid(W_g x + b_g)
            y = y * torch.sigmoid(self.linear(x, pre + "gate"))
        if layer in self.ra:
            n = self.c["ra_heads"]
            # the last n heads with queries and keys swapped: score(i, j) = k_i . q_j, j <= i
            yr = self.causal(k[H - n:], q[H - n:], v[H - n:]).transpose(0, 1).reshape(t, n * D)
            y = y + torch.tanh(self.p(pre + "ra_rho")) * self.ln(self.linear(yr, pre + "ra_proj"), pre + "ln_ra")
        return self.linear(y, pre + "c_proj")

    def mla(self, x, pre):
        t, C = x.shape
        H = self.c["H"]
        D = C // H
        q = self.rope(self.linear(x, pre + "q_proj").view(t, H, D).transpose(0, 1))
        latent = self.linear(x, pre + "kv_down")  # c = x W_dkv + b_dkv, the cached values
        k, v = self.linear(latent, pre + "kv_up").split(C, -1)
        k = self.rope(k.view(t, H, D).transpose(0, 1))
        v = v.view(t, H, D).transpose(0, 1)
        return self.linear(self.causal(q, k, v).transpose(0, 1).reshape(t, C), pre + "c_proj")

    def kvsplice(self, x, pre):
        W = self.c["splice"]
        A = self.p(pre + "kv_down.weight")  # [latent, C]: c = x A (no bias)
        s = self.ln(self.linear(x @ A.T, pre + "splice"), pre + "ln_splice")  # cached, width W
        q = self.rope(self.linear(s, pre + "q_proj")[None])
        k, v = self.linear(s, pre + "kv_up").split(W, -1)
        a = self.causal(q, self.rope(k[None]), v[None])[0]  # one head, scale 1/sqrt(W)
        z = self.linear(a, pre + "c2l")
        return z @ A + self.linear(z, pre + "res")  # decoder tied to the encoder + residual map

    def kind(self, layer):
        v = self.c["variant"]
        if v == "mla":
            return "mla"
        if v == "kvsplice":
            return "kvsplice"
        if v == "hybrid":
            raise SystemExit("variants_eager: hybrid placement is not modelled here")
        return "standard"

    def logits(self, idx):
        t = idx.shape[0]
        h = self.p("transformer.wte.weight")[idx] + self.p("transformer.wpe.weight")[:t]
        for i in range(self.c["L"]):
            pre = f"transformer.h.{i}."
            x = self.ln(h, pre + "ln_1")
            kind = self.kind(i)
            a = pre + "attn."
            h = h + (self.mla(x, a) if kind == "mla" else self.kvsplice(x, a) if kind == "kvsplice" else self.standard(x, a, i))
            x = self.ln(h, pre + "ln_2")
            h = h + self.linear(F.gelu(self.linear(x, pre + "mlp.c_fc")), pre + "mlp.c_proj")
        return self.ln(h, "transformer.ln_f") @ self.p("transformer.wte.weight").T


def cmd_forward(ckpt, val):
    m = Model(ckpt)
    ids = torch.from_numpy(np.fromfile(val, np.uint16).astype(np.int64))
    t, starts, covered, tail = eval_windows(len(ids), m.c["T"])
    total, count = 0.0, 0
    with torch.no_grad():
        for s in starts:
            loss = F.cross_entropy(m.logits(ids[s:s + t]).double(), ids[s + 1:s + t + 1], reduction="none")
            for j in range(t):
                if scored_before(s, j, covered, tail and s == starts[-1]):
                    continue
                total += loss[j].item()
                count += 1
    return {"tokens": count, "val_loss": total / count}


# ----------------------------------------------------------------- Fisher

def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def cmd_fisher(ckpt, data, fisher_path):
    header, got = read_safetensors(fisher_path)
    meta = header["__metadata__"]
    chunks, seq, seed = int(meta["chunks"]), int(meta["seq"]), int(meta["seed"])
    m = Model(ckpt)
    ids = torch.from_numpy(np.fromfile(data, np.uint16).astype(np.int64))
    # chunks windows of seq (+1) tokens, evenly spaced and not overlapping
    last = len(ids) - seq - 1
    starts = [0] if chunks == 1 else [last * i // (chunks - 1) for i in range(chunks)]
    state = (seed * 0x9E3779B97F4A7C15 + 0xF15E) & MASK64
    names = list(m.w)
    emp = {k: torch.zeros_like(v) for k, v in m.w.items()}
    tru = {k: torch.zeros_like(v) for k, v in m.w.items()}
    for s in starts:
        logits = m.logits(ids[s:s + seq])
        g = torch.autograd.grad(F.cross_entropy(logits, ids[s + 1:s + seq + 1]), [m.w[k] for k in names], retain_graph=True)
        for k, gk in zip(names, g):
            emp[k] += gk * gk
        p = torch.softmax(logits.detach().double(), -1)
        labels = []
        for row in p:
            state, z = splitmix64(state)
            u = (z >> 11) * (1.0 / 9007199254740992.0)
            c = torch.cumsum(row, 0)
            k = int(torch.searchsorted(c, torch.tensor([u], dtype=torch.float64), right=True)[0])
            labels.append(min(k, len(row) - 1))
        g = torch.autograd.grad(F.cross_entropy(logits, torch.tensor(labels)), [m.w[k] for k in names])
        for k, gk in zip(names, g):
            tru[k] += gk * gk
    worst = {}
    for kind, ref in (("empirical", emp), ("true", tru)):
        w = 0.0
        for k in names:
            a = torch.from_numpy(got[kind + "." + k])
            b = ref[k] / chunks
            scale = b.abs().max().item()
            w = max(w, (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item())
        worst[kind] = w
    # The draws matter: the true Fisher differs from the empirical one.
    gap = max((torch.from_numpy(got["true." + k]) - torch.from_numpy(got["empirical." + k])).abs().max().item()
              / max(torch.from_numpy(got["empirical." + k]).abs().max().item(), 1e-30) for k in names)
    print(json.dumps({"worst_relative_error": worst, "true_vs_empirical": gap}))
    if max(worst.values()) > 1e-4 or gap < 1e-2:
        sys.exit(1)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "weights":
        cmd_weights(*args)
    elif cmd == "tokens":
        cmd_tokens(*args)
    elif cmd == "forward":
        print(json.dumps(cmd_forward(*args)))
    elif cmd == "fisher":
        cmd_fisher(*args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
