"""Plain eager PyTorch GPT-2 training step: the baseline `make bench` compares knlp with.

Same model as knlp's (pre-LN, tied head, erf GELU, no dropout), same step (forward,
cross-entropy, backward, global-norm clip 1.0, torch.optim.AdamW), same shapes and thread
count, on Debian's python3-torch (the same libtorch 1.13). Prints one JSON line.
On a GPU (DEVICE cuda) it is what a PyTorch user would write there: fused causal attention
(F.scaled_dot_product_attention), bf16 autocast (DTYPE bf16), torch.optim.AdamW's default
multi-tensor update, all threads.
With COMPILE (`compile`), the model runs through torch.compile (PyTorch 2.0 or later), as
the original's GPT2_COMPILE presets train; its first steps (compilation) are left out.
usage: gpt2_eager.py L H C T B V STEPS [DEVICE [DTYPE [COMPILE]]]
Reports the mean (tokens_per_sec, step_ms) and the median (tokens_per_sec_median,
step_ms_median) of the timed steps; each step ends with loss.item(), a synchronisation.
KNLP_BENCH_THREADS=N: CPU threads (default 2; make bench takes the best of 1 and 2).
KNLP_PROFILE=FILE: also write a Chrome trace of 3 steps (after the warm-up) to FILE.
"""
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, c, h, t, fused=False):
        super().__init__()
        self.h, self.fused = h, fused
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)
        self.register_buffer("causal", torch.tril(torch.ones(t, t, dtype=torch.bool)))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.out(y.transpose(1, 2).reshape(b, t, c))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, c, h, t, fused=False):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = Attention(c, h, t, fused)
        self.up, self.down = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.down(F.gelu(self.up(self.n2(x))))


class GPT(nn.Module):
    def __init__(self, layers, heads, c, t, v, fused=False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(v, c), nn.Embedding(t, c)
        self.blocks = nn.ModuleList(Block(c, heads, t, fused) for _ in range(layers))
        self.norm = nn.LayerNorm(c)

    def forward(self, idx, tgt):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1), device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.norm(x) @ self.tok.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), tgt.view(-1))


def main():
    layers, heads, c, t, b, v, steps = map(int, sys.argv[1:8])
    dev = sys.argv[8] if len(sys.argv) > 8 else "cpu"
    bf16 = len(sys.argv) > 9 and sys.argv[9] == "bf16"
    compiled = len(sys.argv) > 10 and sys.argv[10] == "compile"
    if len(sys.argv) > 10 and not compiled:
        sys.exit(f"gpt2_eager.py: unknown option '{sys.argv[10]}' (expected compile)")
    if compiled and not hasattr(torch, "compile"):
        sys.exit(f"gpt2_eager.py: compile needs PyTorch 2.0 or later; this is {torch.__version__}")
    if dev == "cpu":
        torch.set_num_threads(int(os.environ.get("KNLP_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    model = GPT(layers, heads, c, t, v, fused=dev != "cpu").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    run = torch.compile(model) if compiled else model
    x = torch.randint(0, v, (b, t), device=dev)
    y = torch.randint(0, v, (b, t), device=dev)

    phases = [0.0] * 4  # KNLP_PHASE_TIMES=1: synchronised forward, backward, clip, update
    timed = os.environ.get("KNLP_PHASE_TIMES") and dev == "cuda"

    def mark(i, t):
        if not timed:
            return t
        torch.cuda.synchronize()
        now = time.perf_counter()
        if i >= 0:
            phases[i] += now - t
        return now

    def step():
        t = mark(-1, 0)
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=bf16):
            loss = run(x, y)
        t = mark(0, t)
        loss.backward()
        t = mark(1, t)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t = mark(2, t)
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark(3, t)
        return loss.item()

    t_warm = time.perf_counter()
    for _ in range(5 if compiled else 3):  # compilation happens in the first steps
        step()
    warm_s = time.perf_counter() - t_warm
    prof_path = os.environ.get("KNLP_PROFILE")  # a Chrome trace of 3 steps, like knlp's
    if prof_path:
        acts = [torch.profiler.ProfilerActivity.CPU]
        if dev == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            for _ in range(3):
                step()
            if dev == "cuda":
                torch.cuda.synchronize()
        prof.export_chrome_trace(prof_path)
    phases[:] = [0.0] * 4
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    dt = sum(times) / steps
    med = sorted(times)[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"impl": "pytorch-compile" if compiled else "pytorch-eager", "tokens_per_sec": b * t / dt,
           "step_ms": dt * 1e3, "tokens_per_sec_median": b * t / med, "step_ms_median": med * 1e3,
           "warmup_s": warm_s,
           "peak_rss_mb": rss, "torch": torch.__version__, "device": dev, "bf16": bf16,
           "threads": torch.get_num_threads(),
           "params": sum(p.numel() for p in model.parameters())}
    if timed:
        out["phase_ms"] = {k: 1e3 * v / steps for k, v in zip(("forward", "backward", "clip", "update"), phases)}
    if dev == "cuda":
        out["gpu"] = torch.cuda.get_device_name()
        out["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
