#!/usr/bin/python3
"""Eager PyTorch reference of a Hugging Face Llama / Qwen2 / GPT-2 folder, written from the models'
definitions (GPT-2: pre-LayerNorm blocks, Conv1D weights stored [in, out], learned positions,
tied head, gelu_new or gelu) (RMSNorm, rotate-half rotary positions with the config's theta and scaling,
grouped-query attention by repeating kv heads, SwiGLU MLP, Qwen2's q/k/v biases) without
knlp's code and without transformers. Reads the safetensors by hand.

  llama_eager.py MODEL_DIR VAL_BIN CTX [TOKEN_BYTES] [--logits FILE]   -> {"val_loss": ..., "tokens": ...}
Windows as knlp eval scores them: 0, T, 2T, ... plus one aligned to the end, each target once.
--logits FILE: also write the first window's logits [CTX, vocab] as raw float32 (what
`knlp eval --logits` writes).

  llama_eager.py MODEL_DIR TRAIN_BIN SEQ TOKEN_BYTES --fisher CHUNKS
      -> {"mean_loss": ..., "means": {tensor: mean}, "seconds": ...}
The empirical Fisher diagonal as knlp fim score computes it (Llama / Qwen2 only): CHUNKS
windows of SEQ tokens evenly spaced over [0, N - SEQ - 1], each window's mean loss
backpropagated through plain autograd on float32 weights, every weight's squared gradient
summed and divided by CHUNKS; the mean of each tensor's diagonal.
"""
import json, math, os, struct, sys
import torch
from windows import eval_windows, scored_before  # scripts/ref/windows.py


model_dir, val, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
width = int(sys.argv[4]) if len(sys.argv) > 4 and not sys.argv[4].startswith("--") else 2
logits_out = sys.argv[sys.argv.index("--logits") + 1] if "--logits" in sys.argv else ""
cfg = json.load(open(os.path.join(model_dir, "config.json")))
DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}

def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(raw[8 + n + s:8 + n + e]), dtype=DT[v["dtype"]]).reshape(v["shape"])
        out[k] = t.float()
    return out

W = {}
idx = os.path.join(model_dir, "model.safetensors.index.json")
files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
for f in files:
    W.update(load(os.path.join(model_dir, f)))

gpt2 = cfg["architectures"][0] == "GPT2LMHeadModel"
if gpt2:
    W = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in W.items()}
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = cfg.get("activation_function", "gelu_new")

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, (C,), W[p + ".weight"], W[p + ".bias"], eps)

    def gelu(x):
        if act == "gelu":
            return torch.nn.functional.gelu(x)
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))

    def forward_gpt2(ids):
        B, T_ = ids.shape
        x = W["wte.weight"][ids] + W["wpe.weight"][:T_]
        mask = torch.full((T_, T_), float("-inf")).triu(1)
        D = C // H
        for i in range(L):
            p = f"h.{i}."
            qkv = ln(x, p + "ln_1") @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
            q, k, v = (t.view(B, T_, H, D).transpose(1, 2) for t in qkv.split(C, -1))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1)
            y = (att @ v).transpose(1, 2).reshape(B, T_, C)
            x = x + y @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
            h = gelu(ln(x, p + "ln_2") @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
            x = x + h @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
        return ln(x, "ln_f") @ W["wte.weight"].T
    cfg = dict(cfg, hidden_size=C, num_attention_heads=H, num_hidden_layers=L)

C, H = cfg["hidden_size"], cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads", H)
D = cfg.get("head_dim", C // H)
L, eps = cfg["num_hidden_layers"], cfg.get("rms_norm_eps", 1e-6)
theta = cfg.get("rope_theta", 10000.0)
qwen = cfg["architectures"][0] == "Qwen2ForCausalLM"
inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
rs = cfg.get("rope_scaling") or {}
kind = rs.get("rope_type", rs.get("type", "default"))
if kind == "linear":
    inv = inv / rs["factor"]
elif kind == "llama3":
    f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    wl = 2 * math.pi / inv
    new = []
    for w, i in zip(wl.tolist(), inv.tolist()):
        if w < old / hi:
            new.append(i)
        elif w > old / lo:
            new.append(i / f)
        else:
            sm = (old / w - lo) / (hi - lo)
            new.append((1 - sm) * i / f + sm * i)
    inv = torch.tensor(new, dtype=torch.float32)
head = W.get("lm_head.weight", W.get("model.embed_tokens.weight"))

def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

def rot(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)

def forward(ids):
    B, T_ = ids.shape
    x = W["model.embed_tokens.weight"][ids]
    fr = torch.outer(torch.arange(T_).float(), inv)
    emb = torch.cat([fr, fr], -1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T_, T_), float("-inf")).triu(1)
    for i in range(L):
        p = f"model.layers.{i}."
        h = rms(x, W[p + "input_layernorm.weight"])
        def proj(n, heads):
            y = h @ W[p + f"self_attn.{n}_proj.weight"].T
            if qwen:
                y = y + W[p + f"self_attn.{n}_proj.bias"]
            return y.view(B, T_, heads, D).transpose(1, 2)
        q, k, v = proj("q", H), proj("k", KV), proj("v", KV)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        rep = H // KV
        k = k[:, :, None].expand(B, KV, rep, T_, D).reshape(B, H, T_, D)
        v = v[:, :, None].expand(B, KV, rep, T_, D).reshape(B, H, T_, D)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1)
        y = (att @ v).transpose(1, 2).reshape(B, T_, H * D)
        x = x + y @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = torch.nn.functional.silu(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)
        x = x + g @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ head.T

fisher_chunks = int(sys.argv[sys.argv.index("--fisher") + 1]) if "--fisher" in sys.argv else 0
if fisher_chunks:
    import resource, time
    raw = open(val, "rb").read()
    data = torch.tensor(struct.unpack(f"<{len(raw) // width}{'H' if width == 2 else 'I'}", raw))
    N = len(data)
    last = N - T - 1
    starts = [last * i // (fisher_chunks - 1) for i in range(fisher_chunks)] if fisher_chunks > 1 else [0]
    for t in W.values():
        t.requires_grad_(True)
    acc = {k: torch.zeros_like(v) for k, v in W.items()}
    t0 = time.perf_counter()
    loss_sum = 0.0
    for s in starts:
        x, y = data[s:s + T].long()[None], data[s + 1:s + T + 1].long()
        lg = forward(x)
        loss = torch.nn.functional.cross_entropy(lg.view(-1, lg.shape[-1]), y, reduction="sum") / T
        loss_sum += loss.item()
        for t in W.values():
            t.grad = None
        loss.backward()
        with torch.no_grad():
            for k, t in W.items():
                if t.grad is not None:
                    acc[k] += t.grad * t.grad
    seconds = time.perf_counter() - t0
    print(json.dumps({"mean_loss": loss_sum / len(starts), "tokens": T * len(starts), "seconds": seconds,
                      "threads": torch.get_num_threads(),
                      "means": {k: (v / len(starts)).double().mean().item() for k, v in acc.items()},
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
    sys.exit(0)

raw = open(val, "rb").read()
data = list(struct.unpack(f"<{len(raw) // width}{'H' if width == 2 else 'I'}", raw))
T, starts, covered, tail = eval_windows(len(data), T)
total, count = 0.0, 0
import resource, time
t0 = time.perf_counter()
with torch.no_grad():
    for j, s in enumerate(starts):
        x = torch.tensor([data[s:s + T]])
        y = torch.tensor([data[s + 1:s + T + 1]])
        if tail and j == len(starts) - 1:
            for t in range(T):
                if scored_before(s, t, covered, True):
                    y[0, t] = -1
        lg = forward_gpt2(x) if gpt2 else forward(x)
        if j == 0 and logits_out:
            lg[0].float().contiguous().numpy().tofile(logits_out)
        total += torch.nn.functional.cross_entropy(lg.view(-1, lg.shape[-1]).double(), y.view(-1),
                                                   ignore_index=-1, reduction="sum").item()
        count += int((y >= 0).sum())
print(json.dumps({"val_loss": total / count, "tokens": count, "seconds": time.perf_counter() - t0,
                  "threads": torch.get_num_threads(),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
